"""Issue #29: faults of whole kinds, met through the CLI: checkpoints that cannot be written,
run settings Lightning rejects, checkpoints of other versions, environments that do not fit the
policy, figures that are not current, precision-proof statistics, moved run directories, Ctrl-C
while collecting, values beyond float32."""

import os
import signal
import subprocess
import sys
import time

import gymnasium as gym
import minari
import numpy as np

from in_process import run_here
from test_faults import MAIN, episode, write_dataset


def test_values_beyond_float32_are_refused_as_such(minari_path, tmp_path):
    space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float64)
    obs = [np.zeros(2)] * 3 + [np.array([1e39, 0.0])]
    write_dataset("toy/huge/obs-v0", [episode(3, [np.zeros(2)] * 4), episode(3, obs)], space,
                  gym.spaces.Box(-1, 1, (2,), np.float32))
    code, out, err = run_here([MAIN, "train", "--dataset", "toy/huge/obs-v0", "--output-dir",
                               str(tmp_path / "runs")], dict(os.environ), tmp_path)
    assert code == 2 and "Traceback" not in err
    assert "exceed float32's range" in err and "1e+39" in err and "observations" in err
    assert "NaN" not in err
    assert not (tmp_path / "runs").exists()


def test_ctrl_c_while_collecting_ends_in_one_line(minari_path, tmp_path):
    env = {**os.environ, "MEANFLOW_QL_REF_EPISODES": "1"}
    process = subprocess.Popen([sys.executable, MAIN, "collect", "--dataset",
                                "local/pusher/expert-v0", "--episodes", "100000"], cwd=tmp_path,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # The progress bar (on stderr, a file here) shows that episodes are being collected.
    seen = ""
    while "collect local/pusher/expert-v0" not in seen:
        seen += process.stderr.read(1)
        assert process.poll() is None, seen
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    (line,) = [line for line in out.splitlines() if line.strip()]
    assert line.startswith("Interrupted by SIGINT while building local/pusher/expert-v0: "
                           "nothing was written")
    assert not minari_path.joinpath("local").exists() or not any(
        minari_path.joinpath("local").rglob("data"))
