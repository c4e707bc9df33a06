"""Paths with `~` and spaces, as a shell passes them when quoted (issue #15)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from test_faults import MAIN, SMALL, run, updates_in

ROOT = Path(MAIN).parent


def test_tilde_and_spaces_in_every_path(tmp_path):
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    # HOME points at a temporary folder, so nothing lands in the real home.
    env = {**os.environ, "HOME": str(home), "MINARI_DATASETS_PATH": "~/mq-minari",
           "MEANFLOW_QL_COLLECT_EPISODES": "8", "MEANFLOW_QL_REF_EPISODES": "2",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    code, out, err = run([MAIN, "train", "--output-dir", "~/mq runs", "--max-updates", "2",
                          *SMALL], env, work)
    assert code == 0, err
    assert "Traceback" not in err
    assert not (work / "~").exists()
    assert (home / "mq-minari" / "local" / "pusher" / "expert-v0" / "data").is_dir()
    runs = list((home / "mq runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "checkpoints" / "best.ckpt").is_file()
    assert json.loads((runs[0] / "config.json").read_text())["output_dir"] == "~/mq runs"

    # The printed command pastes back into a shell as it is (run from the repository, where
    # `python main.py` is).
    test_it = next(line for line in out.splitlines() if line.startswith("Test it: "))
    command = test_it.removeprefix("Test it: ")
    assert f"'{runs[0] / 'checkpoints' / 'last.ckpt'}'" in command      # Q learning's result
    result = subprocess.run(["bash", "-c", command], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "action MSE (raw units)" in result.stdout and "normalised score:" in result.stdout
    assert (runs[0] / "checkpoints" / "last.test.json").is_file()
    assert (runs[0] / "checkpoints" / "last.online-test.json").is_file()

    # --resume, eval_online.py's --checkpoint and --video, and main.py test's --output-dir.
    tilde_run = "~/mq runs/" + runs[0].name
    code, out, err = run([MAIN, "train", "--resume", tilde_run, "--max-updates", "3",
                          "--skip-online-eval"], env, work)
    assert code == 0, err
    assert updates_in(out) == 3
    (runs[0] / "checkpoints" / "last.online-test.json").unlink()      # written again below
    code, out, err = run([str(ROOT / "eval_online.py"), "--checkpoint",
                          tilde_run + "/checkpoints/last.ckpt", "--episodes", "1", "--video",
                          "~/episode.gif"], env, work)
    assert code == 0, err
    assert (runs[0] / "checkpoints" / "last.online-test.json").is_file()
    assert (home / "episode.gif").stat().st_size > 0
    code, out, err = run([MAIN, "test", "--output-dir", "~/mq runs", "--skip-online-eval"],
                         env, work)
    assert code == 0, err
    assert re.search(r"Using the result checkpoint of the newest run: .*mq runs", out)
    assert not (work / "~").exists() and not (ROOT / "~").exists()
