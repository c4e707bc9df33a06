"""Resume (issue #15): every setting that may change on resume takes effect, and a run resumes
only on the data it trained on."""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import main
from in_process import run_here
from test_faults import MAIN, SMALL, pusher, run, updates_in, windows_in  # noqa: F401

EVAL = str(Path(MAIN).with_name("eval_online.py"))


@pytest.fixture(scope="module")
def first_run(pusher, tmp_path_factory):
    """One epoch on the tiny Pusher dataset, no early stopping; tests resume copies of it."""
    out_dir = tmp_path_factory.mktemp("resume") / "runs"
    code, out, err = run([MAIN, "train", "--epochs", "1", "--patience", "0", "--output-dir",
                          str(out_dir), *SMALL], pusher["env"], pusher["cwd"])
    assert code == 0, err
    return {"run": next(out_dir.iterdir()), "batches": windows_in(out) // 64}


def copy_of(first_run, tmp_path):
    return shutil.copytree(first_run["run"], tmp_path / "runs" / first_run["run"].name)


def resume(pusher, run_dir, *flags):
    return run([MAIN, "train", "--resume", str(run_dir), *flags, "--skip-online-eval"],
               pusher["env"], pusher["cwd"])


def saved_updates(run_dir) -> int:
    return int(torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
               ["state_dict"]["num_updates"])


def test_resume_with_another_patience_uses_it(pusher, tmp_path):
    # A learning rate of 1e-30 leaves the weights as they are, so the validation loss never
    # improves after the first validation: patience p stops the run after p + 1 validations.
    # Pure behaviour cloning: early stopping on the validation loss applies to it (issue #14).
    code, out, err = run([MAIN, "train", "--learning-rate", "1e-30", "--learning-rate-schedule",
                          "constant", "--patience", "1", "--epochs", "1", "--output-dir",
                          str(tmp_path / "runs"), "--actor-q-weight", "0", "--cql-alpha", "0",
                          *SMALL], pusher["env"], pusher["cwd"])
    assert code == 0, err
    batches = windows_in(out) // 64
    run_dir = next((tmp_path / "runs").iterdir())
    code, out, err = resume(pusher, run_dir, "--patience", "3", "--epochs", "10")
    assert code == 0, err
    # The saved patience 1 would have stopped after the second validation (2 epochs).
    assert updates_in(out) == 4 * batches
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"]
    early = next(v for k, v in state.items() if k.startswith("EarlyStopping"))
    assert early["patience"] == 3 and early["wait_count"] == 3


def test_resume_ends_at_the_new_update_budget(pusher, first_run, tmp_path):
    batches = first_run["batches"]
    # The first run's budget was one epoch: more updates need more epochs, capped by the
    # new --max-updates.
    for name, flags, expected in (("more-updates", ["--epochs", "5", "--max-updates",
                                                    str(batches + 5)], batches + 5),
                                  ("more-epochs", ["--epochs", "2"], 2 * batches),
                                  ("fewer-updates", ["--max-updates", "3"], batches)):
        run_dir = shutil.copytree(first_run["run"], tmp_path / name / first_run["run"].name)
        # --output-dir naming the run's own folder is accepted.
        code, out, err = resume(pusher, run_dir, *flags, "--output-dir", str(run_dir.parent))
        assert code == 0, (name, err)
        assert updates_in(out) == expected, name
        assert saved_updates(run_dir) == expected, name


def test_resume_refuses_another_output_dir(pusher, first_run, tmp_path):
    run_dir = copy_of(first_run, tmp_path)
    before = (run_dir / "checkpoints" / "last.ckpt").read_bytes()
    code, out, err = run_here([MAIN, "train", "--resume", str(run_dir), "--output-dir",
                               str(tmp_path / "elsewhere")], pusher["env"], pusher["cwd"])
    assert code == 2 and "Traceback" not in err
    assert "--output-dir" in err and "continues in its own directory" in err
    assert not (tmp_path / "elsewhere").exists()
    assert (run_dir / "checkpoints" / "last.ckpt").read_bytes() == before


def test_resume_validates_at_the_new_interval(pusher, first_run, tmp_path):
    run_dir = copy_of(first_run, tmp_path)
    code, out, err = resume(pusher, run_dir, "--epochs", "3", "--val-every-n-epochs", "2")
    assert code == 0, err
    assert updates_in(out) == 3 * first_run["batches"]
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    # One validation in the first run, then only after epoch 2 of epochs 2 and 3.
    assert len(events.Scalars("val/loss")) == 2


def test_resume_takes_a_new_budget_unit_validation_interval_loggers_and_progress(
        pusher, first_run, tmp_path):
    """From an epoch budget to an update budget, validating every 2 updates, with a CSV log
    added and a progress line every 2 updates (output to a file: lines, not a bar)."""
    run_dir = copy_of(first_run, tmp_path)
    batches = first_run["batches"]
    code, out, err = resume(pusher, run_dir, "--epochs", "0", "--max-updates", str(batches + 4),
                            "--val-every-updates", "2", "--logger", "tensorboard,csv",
                            "--progress-every", "2")
    assert code == 0, err
    assert updates_in(out) == batches + 4
    progress = [line for line in out.splitlines() if line.startswith("update ")]
    # A line at every multiple of 2, and one at the last update.
    expected = sorted({u for u in range(batches + 1, batches + 5) if u % 2 == 0} | {batches + 4})
    assert [int(line.split()[1].split("/")[0]) for line in progress] == expected
    validated = [int(line.split()[3].rstrip(":")) for line in out.splitlines()
                 if line.startswith("validation at update")]
    assert len(validated) >= 2 and all(u % 2 == 0 or u == batches + 4 for u in validated), out
    metrics = (run_dir / "csv" / "metrics.csv").read_text()
    assert "val/loss" in metrics.splitlines()[0]


def test_resume_turns_on_online_evaluation_with_its_episodes(pusher, first_run, tmp_path):
    run_dir = copy_of(first_run, tmp_path)
    code, out, err = resume(pusher, run_dir, "--epochs", "2", "--eval-every", "1",
                            "--eval-episodes", "2")
    assert code == 0, err
    assert "Best checkpoint (eval/normalized_score" in out          # chosen by the score now
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    logged = events.Scalars("eval/return")
    assert len(logged) == 1
    # The evaluation ran after the last update: the same two episodes from last.ckpt agree.
    last = run_dir / "checkpoints" / "last.ckpt"
    # Training-time evaluation runs on validation seeds (2,000,000 + 1000 x seed).
    code, out, err = run([EVAL, "--checkpoint", str(last), "--episodes", "2", "--seed",
                          "2000000"], pusher["env"], pusher["cwd"])
    assert code == 0, err
    returns = json.loads(last.with_name("last.online-validation.json").read_text())["returns"]
    assert logged[0].value == pytest.approx(sum(returns) / 2, abs=1e-3)
    assert logged[0].value != pytest.approx(returns[0], abs=1e-3)   # not a single episode


def test_resume_in_another_precision(pusher, first_run, tmp_path):
    run_dir = copy_of(first_run, tmp_path)
    code, out, err = resume(pusher, run_dir, "--epochs", "2", "--mixed-precision", "64-true")
    assert code == 0, err
    assert updates_in(out) == 2 * first_run["batches"]
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert state["actor.net.0.weight"].dtype == torch.float64


def test_resume_builds_the_trainer_and_loaders_it_is_given(pusher, first_run, tmp_path,
                                                           monkeypatch):
    """The running settings a CPU-only test cannot run (several nodes) or time (workers):
    the resumed run's Trainer and DataLoader as `main.py train --resume` builds them."""
    from lightning.pytorch.accelerators import CPUAccelerator
    from lightning.pytorch.strategies import DDPStrategy

    monkeypatch.setenv("MINARI_DATASETS_PATH", pusher["env"]["MINARI_DATASETS_PATH"])
    run_dir = copy_of(first_run, tmp_path)
    parser = main.build_parser()
    args = parser.parse_args(["train", "--resume", str(run_dir), "--devices", "2", "--strategy",
                              "ddp", "--accelerator", "cpu", "--num-nodes", "2",
                              "--num-workers", "1"])
    prepared = main.prepare_run(main.config_from_args(args, parser), args.resume,
                                main.typed_settings(args))
    trainer = prepared.trainer
    assert prepared.run_dir == run_dir.resolve()
    assert trainer.num_devices == 2 and trainer.num_nodes == 2 and trainer.world_size == 4
    assert isinstance(trainer.strategy, DDPStrategy)
    assert isinstance(trainer.accelerator, CPUAccelerator)
    assert prepared.data.train_dataloader().num_workers == 1
    # What the saved run said before: one process, no workers.
    saved = json.loads((run_dir / "config.json").read_text())
    assert (saved["devices"], saved["strategy"], saved["num_nodes"], saved["num_workers"]) \
        == ("auto", "auto", 1, 0)


def test_every_resumable_setting_has_a_test():
    tested = {"patience", "max_updates", "num_epochs", "output_dir", "val_every_n_epochs",
              "eval_every", "eval_episodes", "mixed_precision", "devices", "strategy",
              "accelerator", "num_nodes", "num_workers", "val_every_updates", "logger",
              "progress_every",
              "compile"}                     # tests/test_compile.py
    assert set(main.RESUMABLE) == tested


def test_resume_on_rebuilt_data_is_refused(tmp_path):
    env = {**os.environ, "MINARI_DATASETS_PATH": str(tmp_path / "minari"),
           "MEANFLOW_QL_REF_EPISODES": "2"}
    collect = [MAIN, "collect", "--dataset", "local/pusher/expert-v0", "--no-progress"]

    def build(*flags):
        code, out, err = run([*collect, *flags], env, tmp_path)
        assert code == 0, err

    build("--episodes", "8")
    code, out, err = run([MAIN, "train", "--max-updates", "2", "--output-dir",
                          str(tmp_path / "runs"), *SMALL], env, tmp_path)
    assert code == 0, err
    run_dir = next((tmp_path / "runs").iterdir())
    last = run_dir / "checkpoints" / "last.ckpt"
    before = last.read_bytes()

    build("--episodes", "6", "--overwrite")            # fewer episodes under the same id
    code, out, err = run_here([MAIN, "train", "--resume", str(run_dir), "--max-updates", "4"],
                              env, tmp_path)
    assert code == 2 and "Traceback" not in err, err
    assert "episodes 8 then, 6 now" in err and "steps 800 then, 600 now" in err
    build("--episodes", "8", "--seed", "1", "--overwrite")   # same size, other episodes
    code, out, err = run_here([MAIN, "train", "--resume", str(run_dir), "--max-updates", "4"],
                              env, tmp_path)
    assert code == 2 and "Traceback" not in err, err
    assert "fingerprint" in err and "episodes 8 then" not in err
    assert last.read_bytes() == before                 # the run is untouched

    build("--episodes", "8", "--overwrite")            # rebuilt as it was: resumes
    code, out, err = run([MAIN, "train", "--resume", str(run_dir), "--max-updates", "4",
                          "--skip-online-eval"], env, tmp_path)
    assert code == 0, err
    assert updates_in(out) == 4
