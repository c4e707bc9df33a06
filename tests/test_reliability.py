"""Issue #29: faults of whole kinds, met through the CLI: checkpoints that cannot be written,
run settings Lightning rejects, checkpoints of other versions, environments that do not fit the
policy, figures that are not current, precision-proof statistics, moved run directories, Ctrl-C
while collecting, values beyond float32."""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import minari
import numpy as np
import pytest
import torch

import collect
import tests.toy_envs  # noqa: F401 - registers PointToy-v0
from in_process import run_here
from meanflow_ql import CHECKPOINT_FORMAT, FORMAT_KEY
from test_environments import EVAL, TINY, random_actions, rollouts
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
    # SIGINT back to its default in the child: a suite started in the background (`cmd &`)
    # inherits SIGINT ignored, and Python then never raises KeyboardInterrupt.
    process = subprocess.Popen([sys.executable, MAIN, "collect", "--dataset",
                                "local/pusher/expert-v0", "--episodes", "100000"], cwd=tmp_path,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
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


def run(args, env, cwd, timeout=600):
    """`python <args>` in a subprocess: (exit code, stdout, stderr)."""
    result = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=timeout)
    return result.returncode, result.stdout, result.stderr


def read_csv(path):
    import csv
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


@pytest.fixture(scope="module")
def point(tmp_path_factory):
    """A run trained for 25 updates on rollouts of PointToy-v0 (observations a Box of 4 values,
    actions Box(-1, 1, (2,))), its environment recorded in the dataset; a progress line every
    5 updates, a validation every 10, an online evaluation every second validation, a CSV
    log."""
    base = tmp_path_factory.mktemp("point")
    env = {**os.environ, "MINARI_DATASETS_PATH": str(base / "minari")}
    with collect.datasets_root(env["MINARI_DATASETS_PATH"]):
        toy = gym.make("PointToy-v0")
        minari.create_dataset_from_buffers("toy/point/random-v0", rollouts(toy, 6, 0,
                                                                           random_actions),
                                           env=toy, algorithm_name="random")
    code, out, err = run([MAIN, "train", "--dataset", "toy/point/random-v0", "--max-updates",
                          "25", "--val-every-updates", "10", "--progress-every", "5",
                          "--eval-every", "2", "--eval-episodes", "1",
                          "--logger", "csv", "--skip-online-eval", *TINY,
                          "--output-dir", str(base / "runs")], env, base)
    assert code == 0, err
    (run_dir,) = (base / "runs").iterdir()
    return {"env": env, "cwd": base, "run": run_dir, "out": out}


def test_every_printed_and_logged_figure_is_the_current_updates(point):
    out = point["out"]
    lines = [line.split(", ") for line in out.splitlines() if line.startswith("update ")]
    assert [line[0] for line in lines] == [f"update {n}/25" for n in (5, 10, 15, 20, 25)]
    actor = [float(line[1].split()[1]) for line in lines]
    assert len(set(actor)) == 5                   # five updates, five different losses
    rows = read_csv(point["run"] / "csv" / "metrics.csv")
    training = {int(row["step"]): row for row in rows if row["loss/actor"]}
    # Written at the update they belong to (updates 1 and 25), each once.
    assert sorted(training) == [1, 25] and all(float(training[s]["updates"]) == s
                                               for s in training)
    assert float(training[25]["loss/actor"]) == pytest.approx(actor[-1], abs=1e-4)
    validated = [int(row["step"]) for row in rows if row["val/loss"]]
    assert validated == [10, 20, 25]
    lines = [line for line in out.splitlines() if line.startswith("validation")]
    assert [line.split(":")[0] for line in lines] == [f"validation at update {n}"
                                                      for n in validated]
    # Rollouts at the first and third validation; the second shows the first's, dated.
    assert [int(row["step"]) for row in rows if row["eval/return"]] == [10, 25]
    assert [line.endswith("(eval/ figures rolled out at update 10)") for line in lines] \
        == [False, True, False] and all("eval/return" in line for line in lines)


def copy_run(point, to):
    return Path(shutil.copytree(point["run"], to / point["run"].name))


def rewrite(path, change) -> None:
    saved = torch.load(path, map_location="cpu", weights_only=True)
    change(saved)
    torch.save(saved, path)


def test_checkpoints_of_older_formats_load_newer_ones_are_refused(point, tmp_path):
    env, cwd = point["env"], point["cwd"]
    old_run = copy_run(point, tmp_path / "old")
    last = old_run / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)[FORMAT_KEY] == CHECKPOINT_FORMAT

    def older(saved):            # format 1: no format recorded, one hyperparameter fewer
        del saved[FORMAT_KEY], saved["hyper_parameters"]["obs_keys"]
    rewrite(last, older)
    code, out, err = run_here([MAIN, "test", "--checkpoint", str(last), "--episodes", "2"], env,
                              cwd)
    assert code == 0, err
    assert "action MSE (raw units)" in out and "over 2 episodes" in out
    code, out, err = run_here([EVAL, "--checkpoint", str(last), "--episodes", "1"], env, cwd)
    assert code == 0, err
    code, out, err = run([MAIN, "train", "--resume", str(old_run), "--max-updates", "27",
                          "--skip-online-eval"], env, cwd)
    assert code == 0, err
    assert "Finished after 27 updates" in out
    resumed = torch.load(last, weights_only=True)               # now in this format
    assert resumed[FORMAT_KEY] == CHECKPOINT_FORMAT
    assert resumed["hyper_parameters"]["obs_keys"] == [""]

    for name, change in (("newer", lambda s: s.update({FORMAT_KEY: CHECKPOINT_FORMAT + 1})),
                         ("unknown", lambda s: s["hyper_parameters"].update(action_kind="Box"))):
        run_dir = copy_run(point, tmp_path / name)
        last = run_dir / "checkpoints" / "last.ckpt"
        before = last.read_bytes()
        rewrite(last, change)
        for args in ([MAIN, "test", "--checkpoint", str(last)], [EVAL, "--checkpoint", str(last)],
                     [MAIN, "train", "--resume", str(run_dir)]):
            code, out, err = run_here(args, env, cwd)
            assert code == 2 and "Traceback" not in err, err
            assert f"reads checkpoint formats 1 to {CHECKPOINT_FORMAT}" in err
            assert (f"records checkpoint format {CHECKPOINT_FORMAT + 1}" if name == "newer"
                    else "does not take (action_kind)") in err
        assert last.read_bytes() != before and len(list(run_dir.rglob("*.ckpt"))) == 2


def test_an_environment_that_does_not_fit_the_policy_is_refused_naming_both(point, tmp_path):
    env, last = point["env"], point["run"] / "checkpoints" / "last.ckpt"
    trained = "action space Box(-1.0, 1.0, (2,), float32)"
    for other, theirs in (("CartPole-v1", "action space Discrete(2)"),   # 4 values, flat 2
                          ("tests.toy_envs:NestedToy-v0", "observation space Dict("),
                          ("tests.toy_envs:PointToyWide-v0", "Box(-2.0, 2.0, (2,), float32)")):
        code, out, err = run_here([EVAL, "--checkpoint", str(last), "--env", other,
                                   "--episodes", "1"], env, tmp_path)
        assert code == 2 and "Traceback" not in err, err
        assert f"Environment {other} does not fit" in err and trained in err and theirs in err
    # The zero baseline on a dataset of discrete actions.
    with collect.datasets_root(env["MINARI_DATASETS_PATH"]):
        cartpole = gym.make("CartPole-v1")
        minari.create_dataset_from_buffers(
            "toy/cartpole/random-v0", rollouts(cartpole, 2, 0, lambda obs, rng: rng.integers(2)),
            env=cartpole, algorithm_name="random")
    code, out, err = run_here([EVAL, "--baseline", "zero", "--dataset", "toy/cartpole/random-v0",
                               "--episodes", "1"], env, tmp_path)
    assert code == 2 and "Traceback" not in err, err
    assert "continuous (Box) action space" in err and "Discrete(2)" in err
    # And a continuous one in an environment of other spaces.
    code, out, err = run_here([EVAL, "--baseline", "zero", "--dataset", "toy/point/random-v0",
                               "--env", "tests.toy_envs:NestedToy-v0", "--episodes", "1"], env,
                              tmp_path)
    assert code == 2 and "does not fit dataset toy/point/random-v0" in err and "Dict(" in err


def ckpt_files(run_dir):
    return sorted(p.name for p in (run_dir / "checkpoints").iterdir())


def test_a_checkpoint_that_cannot_be_written_keeps_the_last_good_one(point, tmp_path):
    run_dir = copy_run(point, tmp_path)
    before = {name: (run_dir / "checkpoints" / name).read_bytes()
              for name in ("best.ckpt", "last.ckpt")}
    # A file-size limit below a checkpoint's size: the disk "fills" while one is written.
    blocks = len(before["last.ckpt"]) // 1024 - 2
    code, out, err = run(["-c", f"import subprocess, sys; sys.exit(subprocess.call(['bash', "
                          f"'-c', 'ulimit -f {blocks}; exec {sys.executable} {MAIN} train "
                          f"--resume {run_dir} --max-updates 30']))"], point["env"], point["cwd"])
    assert code == 2 and "Traceback" not in err, err
    assert f"Checkpoint {run_dir / 'checkpoints'}/" in err and "could not be written" in err
    assert "ulimit -f" in err and "is kept unchanged" in err
    assert f"--resume {run_dir}" in err
    assert "Finished" not in out and "Saved" not in out
    # Nothing lost, nothing half-written left behind.
    assert ckpt_files(run_dir) == ["best.ckpt", "last.ckpt"]
    assert all((run_dir / "checkpoints" / n).read_bytes() == b for n, b in before.items())


def test_an_output_dir_that_refuses_writes_is_refused_before_training(point, tmp_path):
    env, cwd = point["env"], point["cwd"]
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    for output_dir in (a_file, a_file / "runs"):
        code, out, err = run_here([MAIN, "train", "--dataset", "toy/point/random-v0",
                                   "--output-dir", str(output_dir)], env, cwd)
        assert code == 2 and "Traceback" not in err, err
        assert f"{a_file} is a file, not a folder" in err
    assert a_file.read_text() == "not a folder"
    # A folder where no file over 1 KiB can be written (config.json is 2.5 KiB): no run directory left.
    code, out, err = run(["-c", f"import subprocess, sys; sys.exit(subprocess.call(['bash', "
                          f"'-c', 'ulimit -f 1; exec {sys.executable} {MAIN} train --dataset "
                          f"toy/point/random-v0 --output-dir {tmp_path / 'runs'}']))"], env, cwd)
    assert code == 2 and "Traceback" not in err, err
    assert "cannot be written" in err and "ulimit -f" in err and "nothing was left there" in err
    assert not (tmp_path / "runs").exists()


def test_run_settings_lightning_rejects_end_before_a_run_directory(point, tmp_path):
    env, cwd, runs = point["env"], point["cwd"], tmp_path / "runs"
    refused = [(["--strategy", "ddp_spawn", "--devices", "2"], "--strategy ddp_spawn is not"),
               (["--strategy", "bogus"], "--strategy bogus is not"),
               (["--accelerator", "cpu", "--devices", "0"], "Lightning cannot run these")]
    if not torch.cuda.is_available():
        refused.append((["--accelerator", "gpu"], "no usable GPU"))
    for flags, message in refused:
        code, out, err = run_here([MAIN, "train", "--dataset", "toy/point/random-v0",
                                   "--output-dir", str(runs), *flags], env, cwd)
        assert code == 2 and "Traceback" not in err and message in err, (flags, err)
        assert len(err.strip().splitlines()) == 1
        assert not runs.exists()


def test_a_moved_run_directory_resumes_into_its_own_checkpoints(point, tmp_path):
    moved = shutil.move(str(copy_run(point, tmp_path / "before")), tmp_path / "after")
    moved = Path(moved).resolve()
    code, out, err = run([MAIN, "train", "--resume", str(moved), "--max-updates", "30",
                          "--val-every-updates", "2", "--skip-online-eval"], point["env"],
                         point["cwd"])
    assert code == 0, err
    assert ckpt_files(moved) == ["best.ckpt", "last.ckpt"]         # no best-v1, last-v1
    assert "Best checkpoint (eval/return " in out and f"): {moved}/checkpoints/best.ckpt" in out
    assert f"Last checkpoint: {moved}/checkpoints/last.ckpt" in out
    assert str(point["run"].parent) not in out
    saved = torch.load(moved / "checkpoints" / "last.ckpt", weights_only=False)
    assert int(saved["state_dict"]["num_updates"]) == 30
    (state,) = [v for k, v in saved["callbacks"].items() if k.startswith("ModelCheckpoint")]
    assert state["dirpath"] == str((moved / "checkpoints").resolve())
    assert state["best_model_path"] == str((moved / "checkpoints" / "best.ckpt").resolve())
