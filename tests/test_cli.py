"""The command line as a user runs it: a real local Pusher dataset, train, test, evaluate."""

import json
import os
import time
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from in_process import run_here
from test_faults import run

ROOT = Path(__file__).resolve().parent.parent


def float_after(text: str, label: str) -> float:
    line = next(line for line in text.splitlines() if label in line)
    return float(line.split(label)[1].split()[0])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`python main.py train` with no --dataset on an empty store: builds the default, trains."""
    base = tmp_path_factory.mktemp("cli")
    env = {**os.environ, "MINARI_DATASETS_PATH": str(base / "minari"),
           "MEANFLOW_QL_COLLECT_EPISODES": "16", "MEANFLOW_QL_REF_EPISODES": "4"}
    code, out, err = run([str(ROOT / "main.py"), "train", "--epochs", "2", "--batch-size", "64",
                          "--actor-hidden-dim", "64", "--critic-hidden-dim", "64"], env, base)
    assert code == 0, err
    runs = list((base / "runs").iterdir())
    assert len(runs) == 1
    return {"env": env, "cwd": base, "run": runs[0], "out": out}


def test_train_builds_the_default_dataset_and_writes_a_run(trained):
    run_dir, out = trained["run"], trained["out"]
    assert "is not on disk yet; building it now" in out
    assert run_dir.name.startswith("local-pusher-expert-v0_seed0_")
    assert (Path(trained["env"]["MINARI_DATASETS_PATH"]) / "local/pusher/expert-v0/data").is_dir()
    config = json.loads((run_dir / "config.json").read_text())
    assert config["num_epochs"] == 2 and config["batch_size"] == 64
    assert config["dataset"] == "local/pusher/expert-v0"
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert "Best checkpoint" in out and str(run_dir / "checkpoints" / "best.ckpt") in out
    # Q learning: the run's result is the final checkpoint, evaluated online (validation seeds).
    assert "The run's result: last.ckpt" in out
    assert "Online evaluation of last.ckpt" in out and "normalised score:" in out
    online = json.loads((run_dir / "checkpoints" / "last.online-validation.json").read_text())
    assert online["seed"] == 2_000_000 and "success_rate" in online
    assert not list((run_dir / "checkpoints").glob("best.online*.json"))
    assert not (run_dir / "checkpoints" / "last.online-test.json").exists()   # test seeds: by `test`

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    for tag in ("critic/td_loss", "critic/cql_penalty", "critic/q_data", "critic/mc_return",
                "actor/meanflow_loss", "actor/q_term", "actor/action_mse", "val/loss",
                "val/one_vs_multi_step_gap", "val/q_data", "val/mc_return"):
        assert tag in scalars, f"{tag} missing from {sorted(scalars)}"
    assert len(events.Scalars("val/loss")) == 2          # one validation per epoch


def test_test_then_eval_online_give_the_same_figures(trained):
    env, cwd = trained["env"], trained["cwd"]
    code, out, err = run([str(ROOT / "main.py"), "test", "--episodes", "2"], env, cwd)
    assert code == 0, err
    best = trained["run"] / "checkpoints" / "last.ckpt"
    assert (f"Using the result checkpoint of the newest run: runs/{trained['run'].name}"
            f"/checkpoints/last.ckpt") in out
    offline = json.loads(best.with_name("last.test.json").read_text())
    assert offline["action_mse"] == pytest.approx(float_after(out, "(raw units):"), rel=1e-4)
    assert offline["episodes"] >= 1 and offline["action_mse"] > 0
    online = json.loads(best.with_name("last.online-test.json").read_text())
    assert online["episodes"] == 2 and len(online["returns"]) == 2 and online["seed"] == 3_000_000
    assert online["return_mean"] == pytest.approx(float_after(out, "return:"), abs=1e-3)
    assert -200 < online["return_mean"] < 0 and "normalized_score_mean" in online

    # The same checkpoint through eval_online.py, twice, and with two environments at once.
    code, out2, err = run([str(ROOT / "eval_online.py"), "--checkpoint", str(best),
                           "--episodes", "2"], env, cwd)
    assert code == 0, err
    again = json.loads(best.with_name("last.online-test.json").read_text())
    assert again["returns"] == online["returns"]
    code, out3, err = run([str(ROOT / "eval_online.py"), "--checkpoint", str(best),
                           "--episodes", "2", "--num-envs", "2"], env, cwd)
    assert code == 0, err
    parallel = json.loads(best.with_name("last.online-test.json").read_text())
    assert parallel["returns"] == pytest.approx(online["returns"], abs=1e-6)

    events = EventAccumulator(str(trained["run"] / "tensorboard"))
    events.Reload()
    assert "test/return_mean" in events.Tags()["scalars"]


def test_zero_action_baseline_is_scored_like_a_checkpoint(trained, tmp_path):
    """`eval_online.py --baseline zero`: every action 0 on the dataset's env and test seeds, the
    same summary as a checkpoint's; Pusher with zero torque ends well above random (-148)."""
    env, cwd = trained["env"], trained["cwd"]
    out_file = tmp_path / "zero.json"
    code, out, err = run([str(ROOT / "eval_online.py"), "--baseline", "zero", "--dataset",
                          "local/pusher/expert-v0", "--episodes", "2", "--out", str(out_file)],
                         env, cwd)
    assert code == 0, err
    zero = json.loads(out_file.read_text())
    assert zero["checkpoint"] == "baseline:zero" and zero["env"] == "Pusher-v5"
    assert zero["seed"] == 3_000_000 and len(zero["returns"]) == 2
    assert zero["return_mean"] == pytest.approx(float_after(out, "return:"), abs=1e-3)
    assert -80 < zero["return_mean"] < -30 and "normalized_score_mean" in zero
    assert zero["success_rate"] == 0.0       # zero torque never pushes the object to the goal
    code, _, err = run_here([str(ROOT / "eval_online.py"), "--baseline", "random",
                             "--dataset", "local/pusher/expert-v0"], env, cwd)
    assert code == 2 and "zero" in err and "Traceback" not in err


def test_video_decodes_to_frames(trained, tmp_path):
    import imageio.v3 as iio

    best = trained["run"] / "checkpoints" / "best.ckpt"
    video = tmp_path / "episode.gif"
    code, out, err = run([str(ROOT / "eval_online.py"), "--checkpoint", str(best),
                          "--episodes", "1", "--video", str(video)], trained["env"],
                         trained["cwd"])
    assert code == 0, err
    frames = iio.imread(video)
    assert frames.shape[0] == 101 and frames.shape[1:3] == (480, 480)
    assert frames.std() > 0                                # not a blank picture


def expect_usage_error(args, env, cwd, *phrases, runner=run_here):
    """The call exits with code 2 and one message holding each phrase, no traceback. The
    default runner calls the script in this process; `runner=run` starts a real one."""
    start = time.monotonic()
    code, out, err = runner(args, env, cwd)
    assert code == 2, (out, err)
    assert "Traceback" not in err
    for phrase in phrases:
        assert phrase in err, err
    return time.monotonic() - start


def test_bad_input_gets_one_clear_message(trained, tmp_path):
    env, cwd = trained["env"], trained["cwd"]
    main, evaluate = str(ROOT / "main.py"), str(ROOT / "eval_online.py")
    best = str(trained["run"] / "checkpoints" / "best.ckpt")
    before = sorted(p.name for p in (cwd / "runs").iterdir())
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint at all")
    cases = [
        ([main, "train", "--dataset", "nobody/nothing/here-v0"],
         ["nobody/nothing/here-v0", "not on disk"]),
        ([main, "train", "--dataset", "local/pusher/nonsense-v0"],
         ["local/pusher/expert-v0"]),                        # lists what it can build
        ([main, "test", "--checkpoint", str(tmp_path / "missing.ckpt")], ["does not exist"]),
        ([main, "train", "--batch-size", "many"], ["invalid int value"]),
        ([main, "train", "--obs-horizon", "0"], ["obs_horizon"]),
        ([main, "train", "--action-horizon", "6", "--pred-horizon", "5"],
         ["action_horizon (6) cannot exceed pred_horizon (5)"]),
        ([main, "train", "--gamma", "1.5"], ["gamma"]),
        ([main, "test", "--checkpoint", str(garbage)], ["cannot be loaded"]),
        ([evaluate, "--checkpoint", best, "--episodes", "0"], ["--episodes"]),
        ([evaluate, "--checkpoint", best, "--action-horizon", "9"], ["pred_horizon"]),
        ([evaluate, "--checkpoint", best, "--env", "NoSuchEnv-v9"], ["NoSuchEnv-v9"]),
    ]
    # The first as a real process (its exit code and stderr as a shell sees them), the rest in
    # this one: each subprocess spends seconds importing torch before it can fail.
    seconds = expect_usage_error(cases[0][0], env, cwd, *cases[0][1], runner=run)
    assert seconds < 45                                   # no minute-long download retries
    for args, phrases in cases[1:]:
        expect_usage_error(args, env, cwd, *phrases)
    # Failed runs leave no run directory behind and touch nothing already written.
    assert sorted(p.name for p in (cwd / "runs").iterdir()) == before


def test_checkpoint_for_other_shapes_is_refused(trained, toy_dataset, tmp_path):
    """A checkpoint trained on the toy dataset (2-d observations) tested on Pusher (23-d)."""
    env = {**trained["env"], "MINARI_DATASETS_PATH": os.environ["MINARI_DATASETS_PATH"]}
    code, out, err = run([str(ROOT / "main.py"), "train", "--dataset", "toy/known/values-v0",
                          "--epochs", "1", "--batch-size", "4", "--output-dir",
                          str(tmp_path / "runs")], env, tmp_path)
    assert code == 0, err
    toy_checkpoint = next((tmp_path / "runs").glob("*/checkpoints/best.ckpt"))
    # The Pusher dataset lives in the module's store: copy its path in for this call.
    pusher_env = {**trained["env"]}
    expect_usage_error([str(ROOT / "main.py"), "test", "--dataset", "local/pusher/expert-v0",
                        "--checkpoint", str(toy_checkpoint)], pusher_env, tmp_path,
                       "observations of size 2", "--dataset toy/known/values-v0")
    expect_usage_error([str(ROOT / "eval_online.py"), "--checkpoint", str(toy_checkpoint),
                        "--env", "Pusher-v5"], env, tmp_path, "observations Box of 2 values",
                       "23 observation values")


def test_every_help_page_prints(tmp_path):
    for args in (["main.py", "train", "--help"], ["main.py", "test", "--help"],
                 ["main.py", "collect", "--help"], ["eval_online.py", "--help"]):
        code, out, err = run([str(ROOT / args[0]), *args[1:]], os.environ, tmp_path)
        assert code == 0, err
        assert "usage:" in out
    code, out, err = run([str(ROOT / "main.py"), "train", "--help"], os.environ, tmp_path)
    for flag in ("--epochs", "--batch-size", "--learning-rate", "--mixed-precision",
                 "--dataset", "--checkpoint", "--skip-online-eval", "--cql-alpha",
                 "--pred-horizon", "--resume"):
        assert flag in out
