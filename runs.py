"""Run bookkeeping shared by `train` and `sweep`: where a run lives, how it is resumed, the
record of its data, what it records beside its checkpoints, and how its result files are named.

    runs/<dataset-slug>_seed<S>_<time>/      a new run (`train`), or the directory --run-dir names
        config.json                          the run's settings
        validations.jsonl                    one line per validation: updates and the figures
        checkpoints/last.ckpt, best.ckpt
        checkpoints/<stem>.online-<seeds>.json   an online evaluation, named by its seeds

Files other programs read (a sweep's trial.json, results) are written atomically
(`write_json_atomic`), so a reader never sees half a file, even when the writer is killed.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import time
from pathlib import Path

from config import TEST_SEED, VALIDATION_SEED, TrainConfig, UsageError


# --- where runs live ---------------------------------------------------------------------------

def dataset_slug(dataset_id: str) -> str:
    """A dataset id as one path component: local/pusher/expert-v0 -> local-pusher-expert-v0."""
    return dataset_id.replace("/", "-")


def new_run_dir(cfg: TrainConfig) -> Path:
    """A fresh `<output_dir>/<dataset-slug>_seed<S>_<time>` that does not exist yet."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(cfg.output_dir).expanduser() / f"{dataset_slug(cfg.dataset)}_seed{cfg.seed}_{stamp}"
    run_dir, n = base, 1
    while run_dir.exists():
        run_dir, n = base.with_name(f"{base.name}-{n}"), n + 1
    return run_dir


def check_named_run_dir(path: str | Path) -> Path:
    """The directory `train --run-dir` names, refused when it already holds a run (resuming
    that one is `--resume`) or is a file. Nothing is created here."""
    run_dir = Path(path).expanduser()
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"--run-dir {path} is a file, not a directory. Name a directory (it is "
                         f"created when missing).")
    if (run_dir / "config.json").exists() or (run_dir / "checkpoints").exists():
        raise UsageError(f"--run-dir {path} already holds a run. Continue it with `python main.py "
                         f"train --resume {path}`, or name another directory.")
    return run_dir


# --- files a run writes ------------------------------------------------------------------------

def write_json_atomic(path: Path, data) -> None:
    """Write `data` as JSON to `path` through a temporary file in the same folder and a rename,
    so the file is always either the old one or the new one, whole."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "w", encoding="utf-8") as file:
        file.write(json.dumps(data, indent=2, allow_nan=True) + "\n")
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def seeds_name(seed: int) -> str:
    """Which protocol an online evaluation's first seed belongs to: `validation` (training-time
    evaluation and tuning, VALIDATION_SEED and up), `test` (reported figures, TEST_SEED and up),
    else `seed<S>`."""
    if seed >= TEST_SEED:
        return "test"
    if seed >= VALIDATION_SEED:
        return "validation"
    return f"seed{seed}"


def online_result_path(checkpoint: Path, seed: int) -> Path:
    """Where an online evaluation of `checkpoint` from episode seed `seed` is saved, named by its
    seeds so that validation-seed and test-seed figures never overwrite each other:
    checkpoints/last.online-validation.json, last.online-test.json."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(f"{checkpoint.stem}.online-{seeds_name(seed)}.json")


VALIDATIONS = "validations.jsonl"


def read_validations(run_dir: Path) -> list[dict]:
    """The run's validations (`validation_record_callback`), one dict per validation, in order;
    a validation repeated after a resume replaces the interrupted attempt's record."""
    path = Path(run_dir) / VALIDATIONS
    if not path.is_file():
        return []
    by_updates = {}
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:             # a line cut short by a kill
            continue
        by_updates[record["updates"]] = record
    return [by_updates[u] for u in sorted(by_updates)]


def validation_record_callback(run_dir: Path):
    """A Lightning callback appending, after every validation, one JSON line to
    run_dir/validations.jsonl: {"updates": N, "val/loss": ..., "eval/return": ..., ...} (every
    scalar of that validation). The learning curves of a sweep's report read it."""
    import lightning as L

    class ValidationRecord(L.Callback):
        def on_validation_end(self, trainer, pl_module) -> None:
            if trainer.sanity_checking or not trainer.is_global_zero:
                return
            record = {"updates": int(pl_module.num_updates)}
            for key, value in trainer.callback_metrics.items():
                if key.startswith(("val/", "eval/")):
                    value = float(value)
                    record[key] = value if math.isfinite(value) else None
            with open(Path(run_dir) / VALIDATIONS, "a", encoding="utf-8") as file:
                file.write(json.dumps(record) + "\n")

    return ValidationRecord()


def forget_validations_after(run_dir: Path, checkpoint: Path) -> None:
    """Drop the validation records an interrupted run wrote after the checkpoint it resumes
    from: the resumed run validates those updates again."""
    import torch

    path = run_dir / VALIDATIONS
    if not path.is_file():
        return
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    updates = int(saved["state_dict"]["num_updates"]) if "state_dict" in saved else None
    if updates is None:
        return
    kept = [r for r in read_validations(run_dir) if r["updates"] <= updates]
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")      # one per DDP process
    temporary.write_text("".join(json.dumps(r) + "\n" for r in kept))
    os.replace(temporary, path)


# --- resuming -----------------------------------------------------------------------------------

RESUMABLE = ("num_epochs", "max_updates", "patience", "devices", "accelerator", "strategy",
             "num_workers", "mixed_precision", "output_dir", "val_every_n_epochs", "eval_every",
             "val_every_updates", "num_nodes",
             "eval_episodes", "logger", "progress_every", "compile")


def resume_point(path: str) -> tuple[Path, Path]:
    """(checkpoint, run directory) from `--resume` given a checkpoint or a run directory."""
    given = Path(path).expanduser()
    checkpoint = given / "checkpoints" / "last.ckpt" if given.is_dir() else given
    if not checkpoint.is_file():
        raise UsageError(f"Nothing to resume at {path}: {checkpoint} does not exist. Pass a run "
                         "directory (runs/<run>) or one of its checkpoints.")
    return checkpoint, checkpoint.resolve().parent.parent


def resumed_config(checkpoint: Path, typed: dict, run_dir: Path) -> TrainConfig:
    """The checkpoint's config; flags typed beside --resume may change only how it runs."""
    from policy import load_checkpoint

    saved = load_checkpoint(checkpoint).cfg
    changed = sorted(k for k, v in typed.items() if k not in RESUMABLE and v != getattr(saved, k))
    if changed:
        raise UsageError(f"--resume continues the saved run with its own settings; these flags "
                         f"would change it: {', '.join('--' + k.replace('_', '-') for k in changed)}. "
                         f"Drop them, or start a new run without --resume. Settings that may "
                         f"change on resume: {', '.join(RESUMABLE)}.")
    # A resumed run continues in its own directory: --output-dir may only name where it is.
    if "output_dir" in typed and Path(typed["output_dir"]).expanduser().resolve() != run_dir.parent:
        raise UsageError(f"--output-dir {typed['output_dir']} differs from where the resumed run "
                         f"lives ({run_dir.parent}); a resumed run continues in its own directory "
                         f"{run_dir}. Drop --output-dir, or copy the run directory there and "
                         f"resume the copy.")
    values = saved.to_dict()
    values.update({k: v for k, v in typed.items() if k in RESUMABLE})
    values["output_dir"] = str(run_dir.parent)
    return TrainConfig.from_dict(values)


# The record of the data a run trains on, written into every checkpoint under this key and
# compared when the run is resumed.
DATA_RECORD_KEY = "meanflow_ql_data"


def data_record(data) -> dict:
    """Which data a MinariDataModule serves: dataset id, episode and step counts, and a
    fingerprint (sha256 of the windowed tensors and the normaliser statistics, which the data
    alone determines once the split settings are fixed; about 20 ms for 100k steps)."""
    import hashlib

    digest = hashlib.sha256()
    for part in (data.train_set, data.val_set):
        if part is None:
            continue
        for tensor in (part.obs, part.actions, part.index["chunk_reward"], part.index["terminal"],
                       part.index["valid_steps"]):
            digest.update(tensor.contiguous().numpy())
    for normalizer in (data.obs_normalizer, data.action_normalizer):
        for tensor in normalizer.state_dict().values():
            digest.update(tensor.contiguous().numpy())
    steps = sum(len(part.actions) for part in (data.train_set, data.val_set) if part is not None)
    return {"dataset": data.minari_dataset.spec.dataset_id,
            "episodes": len(data.train_ids) + len(data.val_ids), "steps": steps,
            "fingerprint": digest.hexdigest()[:16]}


def check_same_data(checkpoint: Path, record: dict) -> None:
    """Refuse to resume a run on data other than it trained on (a dataset rebuilt since)."""
    import torch

    saved = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    saved = saved.get(DATA_RECORD_KEY) if isinstance(saved, dict) else None
    if not saved:                       # written before runs recorded their data
        return
    differs = [f"{key} {saved.get(key)} then, {record[key]} now" for key in record
               if saved.get(key) != record[key]]
    if differs:
        raise UsageError(
            f"{checkpoint} was trained on other data than {record['dataset']} holds now "
            f"({'; '.join(differs)}): the dataset was rebuilt or replaced since. Resuming would "
            f"continue training on different data. Restore the dataset the run trained on (a "
            f"local one is rebuilt identically by `python main.py collect --dataset "
            f"{record['dataset']} --overwrite` with the --episodes and --seed it was built "
            f"with), or start a new run without --resume.")


def data_record_callback(record: dict):
    """A callback writing `record` into every checkpoint, under DATA_RECORD_KEY."""
    import lightning as L

    class DataRecord(L.Callback):
        def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
            checkpoint[DATA_RECORD_KEY] = record

    return DataRecord()


# --- results ------------------------------------------------------------------------------------

def log_place(logger: str, run_dir: Path) -> str:
    """Where one logger's records of a run are, as a user would open them (shell-quoted)."""
    quoted = shlex.quote(str(run_dir))
    return {"tensorboard": f"tensorboard --logdir {shlex.quote(str(run_dir / 'tensorboard'))}",
            "csv": shlex.quote(str(run_dir / "csv" / "metrics.csv")),
            "wandb": f"W&B project meanflow-ql ({quoted}/wandb when offline)"}[logger]


RESULT_REASON = {"last.ckpt": "Q learning: the final policy, as FQL and CORL report it",
                 "best.ckpt": "behaviour cloning: the lowest validation loss"}


def result_checkpoint(cfg: TrainConfig, checkpoints: Path) -> Path:
    """The checkpoint `train` evaluates and `test` uses by default: the final one when the run
    learns Q values (its validation loss is a behaviour-cloning metric that does not rank RL
    policies); for pure behaviour cloning, the one with the lowest validation loss."""
    best = checkpoints / "best.ckpt"
    if cfg.learns_q or not best.is_file():
        return checkpoints / "last.ckpt"
    return best


def newest_checkpoint(output_dir: str, dataset_id: str) -> Path:
    """The result checkpoint (`result_checkpoint`) of the newest finished run on a dataset."""
    runs = [p for p in Path(output_dir).expanduser().glob(f"{dataset_slug(dataset_id)}_seed*_*")
            if (p / "checkpoints" / "last.ckpt").is_file() and (p / "config.json").is_file()]
    if not runs:
        raise UsageError(f"No trained run on {dataset_id} under {output_dir}/ (looked for "
                         f"{dataset_slug(dataset_id)}_seed*/checkpoints/last.ckpt). Train one with "
                         f"`python main.py train --dataset {dataset_id}` or pass --checkpoint PATH.")
    newest = max(runs, key=lambda p: (p.name.split("_")[-1], p.stat().st_mtime))
    cfg = TrainConfig.from_dict(json.loads((newest / "config.json").read_text()))
    return result_checkpoint(cfg, newest / "checkpoints")
