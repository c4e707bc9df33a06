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
import pytest

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


TOY = ["--dataset", "toy/known/values-v0", "--batch-size", "4", "--actor-hidden-dim", "16",
       "--critic-hidden-dim", "16", "--skip-online-eval"]


def run(args, env, cwd, timeout=600):
    """`python <args>` in a subprocess: (exit code, stdout, stderr)."""
    result = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=timeout)
    return result.returncode, result.stdout, result.stderr


def read_csv(path):
    import csv
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def test_every_printed_and_logged_figure_is_the_current_updates(toy_dataset, tmp_path):
    code, out, err = run([MAIN, "train", *TOY, "--num-updates", "25", "--val-every-updates",
                          "10", "--progress-every", "5", "--logger", "csv",
                          "--output-dir", str(tmp_path / "runs")], dict(os.environ), tmp_path)
    assert code == 0, err
    lines = [line.split(", ") for line in out.splitlines() if line.startswith("update ")]
    assert [line[0] for line in lines] == [f"update {n}/25" for n in (5, 10, 15, 20, 25)]
    actor = [float(line[1].split()[1]) for line in lines]
    assert len(set(actor)) == 5                   # five updates, five different losses
    rows = read_csv(next((tmp_path / "runs").glob("*/csv/metrics.csv")))
    training = {int(row["step"]): row for row in rows if row["loss/actor"]}
    # Written at the update they belong to (updates 1 and 25), each once.
    assert sorted(training) == [1, 25] and all(float(training[s]["updates"]) == s
                                               for s in training)
    assert float(training[25]["loss/actor"]) == pytest.approx(actor[-1], abs=1e-4)
    validated = [int(row["step"]) for row in rows if row["val/loss"]]
    assert validated == [10, 20, 25]
    assert [line.split(":")[0] for line in out.splitlines() if line.startswith("validation")] \
        == [f"validation at update {n}" for n in validated]
