"""Issue #16: loggers (TensorBoard, CSV, W&B's missing-package message), a rendered episode in the
TensorBoard log, progress lines instead of a bar when the output is a file, narrow warning
filters."""

import csv
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from config import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
UPDATES, EVERY = 60, 20
TRAIN = ["train", "--max-updates", str(UPDATES), "--val-every-updates", "30", "--batch-size", "32",
         "--actor-hidden-dim", "32", "--critic-hidden-dim", "32", "--progress-every", str(EVERY),
         "--logger", "tensorboard,csv", "--eval-every", "1", "--eval-episodes", "1"]


def run(args, env, cwd):
    """`python main.py <args>` with stdout and stderr captured (not a terminal), as bytes."""
    result = subprocess.run([sys.executable, str(ROOT / "main.py"), *args], cwd=cwd, env=env,
                            capture_output=True, timeout=600)
    return result.returncode, result.stdout.decode(), result.stderr.decode()


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """A tiny run with its output going to files: TensorBoard and CSV, online evaluation on."""
    base = tmp_path_factory.mktemp("logs")
    env = {**os.environ, "MINARI_DATASETS_PATH": str(base / "minari"),
           "MEANFLOW_QL_COLLECT_EPISODES": "16", "MEANFLOW_QL_REF_EPISODES": "4"}
    env.pop("MUJOCO_GL", None)                       # main.py's own default must cover GLFW
    code, out, err = run(TRAIN, env, base)
    assert code == 0, err
    (run_dir,) = (base / "runs").iterdir()
    return {"env": env, "cwd": base, "run": run_dir, "out": out, "err": err}


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def test_output_to_a_file_is_lines_not_a_bar(logged):
    out, err = logged["out"], logged["err"]
    assert "\r" not in out and "\r" not in err       # no carriage-return progress records
    progress = re.findall(r"^update (\d+)/(\d+), loss/actor \S+, loss/critic \S+, "
                          r"[\d.]+ updates/s$", out, re.MULTILINE)
    assert progress == [(str(n), str(UPDATES)) for n in range(EVERY, UPDATES + 1, EVERY)]
    assert len(re.findall(r"^validation at update \d+: val/loss ", out, re.MULTILINE)) == 2
    # The stack's noise stays out of the console.
    for noise in ("LeafSpec", "precision lowered", "GLFWError", "DISPLAY", "Tip:"):
        assert noise not in err, err
    assert f"{logged['run'].name}/csv/metrics.csv" in out          # where the logs are


def test_csv_log_holds_training_validation_and_evaluation(logged):
    rows = read_csv(logged["run"] / "csv" / "metrics.csv")
    keys = set(rows[0])
    for key in ("critic/td_loss", "critic/cql_penalty", "actor/meanflow_loss", "loss/actor",
                "loss/critic", "val/loss", "eval/return", "test/return_mean",
                "test/normalized_score_mean", "step"):
        assert key in keys, f"{key} missing from {sorted(keys)}"
    assert sum(row["val/loss"] != "" for row in rows) == 2
    # The online evaluation after training: one row, at the final update.
    (final,) = [row for row in rows if row["test/return_mean"] != ""]
    assert int(final["step"]) == UPDATES and -200 < float(final["test/return_mean"]) < 0
    # TensorBoard got the same figures.
    events = EventAccumulator(str(logged["run"] / "tensorboard"))
    events.Reload()
    assert {"critic/td_loss", "val/loss", "test/return_mean"} <= set(events.Tags()["scalars"])


def test_rendered_episode_is_in_the_tensorboard_log(logged, tmp_path):
    import imageio.v3 as iio

    events = EventAccumulator(str(logged["run"] / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    (image,) = events.Images("test/episode")
    assert image.step == UPDATES and (image.width, image.height) == (480, 480)
    frames = iio.imread(image.encoded_image_string, extension=".gif")
    assert frames.shape == (101, 480, 480, 3) and frames.std() > 0   # a whole, moving episode

    # eval_online.py --video: into the file and, a second time, into the run's log.
    video = tmp_path / "episode.gif"
    result = subprocess.run([sys.executable, str(ROOT / "eval_online.py"), "--checkpoint",
                             str(logged["run"] / "checkpoints" / "last.ckpt"), "--episodes", "1",
                             "--video", str(video)], cwd=logged["cwd"], env=logged["env"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert iio.imread(video).shape[0] == 101
    events = EventAccumulator(str(logged["run"] / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert len(events.Images("test/episode")) == 2


def test_resume_keeps_the_csv_rows(logged, tmp_path):
    run_dir = shutil.copytree(logged["run"], tmp_path / logged["run"].name)
    before = read_csv(run_dir / "csv" / "metrics.csv")
    code, out, err = run(["train", "--resume", str(run_dir), "--max-updates", "80",
                          "--skip-online-eval"], logged["env"], tmp_path)
    assert code == 0, err
    after = read_csv(run_dir / "csv" / "metrics.csv")
    steps = [int(row["step"]) for row in after]
    assert [int(row["step"]) for row in before] == steps[:len(before)]
    assert max(steps) > UPDATES and "update 80/80" in out


def test_wandb_missing_says_how_to_install(tmp_path, monkeypatch, capsys):
    import main

    monkeypatch.setitem(sys.modules, "wandb", None)     # as if not installed: import fails
    monkeypatch.chdir(tmp_path)
    code = main.main(["train", "--logger", "tensorboard,wandb", "--dataset", "nobody/none-v0"])
    err = capsys.readouterr().err
    assert code == 2 and "pip install wandb" in err
    assert not (tmp_path / "runs").exists()           # refused before anything ran


def test_logger_setting_is_validated():
    assert TrainConfig(logger="csv, tensorboard").loggers == ["csv", "tensorboard"]
    for bad in ("tensorbord", "csv,csv", ",", "csv,mlflow"):
        with pytest.raises(ValueError, match="logger must be"):
            TrainConfig(logger=bad)


def test_warning_filters_are_narrow():
    import gymnasium as gym
    from lightning.pytorch.utilities._pytree import _tree_flatten

    import logs

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logs.quiet_warnings()
        _tree_flatten(1)                                  # Lightning's LeafSpec use
        gym.spaces.Box(np.zeros(2), np.ones(2), dtype=np.float32)    # float64 bounds
        warnings.warn("a project warning", UserWarning)
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated", FutureWarning)
    messages = [str(w.message) for w in caught]
    # The same texts from another module still show: filtered by message *and* module.
    assert messages == ["a project warning", "`isinstance(treespec, LeafSpec)` is deprecated"]
