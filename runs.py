"""Run bookkeeping shared by `train` and `sweep`: where a run lives, what it records beside its
checkpoints, and how its result files are named.

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
