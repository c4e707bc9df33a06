"""A sweep's layout on disk, which scripts may rely on:

    OUTPUT/<name>/spec.yaml                      the spec as run (defaults filled in)
    OUTPUT/<name>/trials/<dataset-slug>_<setting>_seed<S>/
        trial.json                               the trial's record (below), written atomically
        config.json                              its full training settings (train --config)
        run/                                     its run directory (train --run-dir)
        attempts.log                             what each attempt printed
    OUTPUT/<name>/results.md, results.json, curves.png     the report (--report)

trial.json: trial, dataset, setting, seed, config (the full settings), evaluate (what the
evaluation after training runs), status (pending, running, done, failed), attempts (how many
started), exit_codes (one per finished attempt), history (one entry per attempt: node, worker
and trial process ids, start and end, exit code, the updates it started from and reached,
wall seconds), wall_seconds (all attempts), updates (reached), message (why it failed or
stopped), run_dir, evaluation (the summary: seeds, first seed, episodes, returns, per-episode
scores, score, success rate), validations (the run's validation records, for learning curves).
"""

from __future__ import annotations

import json
from pathlib import Path

from runs import write_json_atomic

STATUSES = ("pending", "running", "done", "failed")
TRIAL_FILE = "trial.json"


def sweep_dir(output_dir: str | Path, name: str) -> Path:
    return Path(output_dir).expanduser().resolve() / name


def trial_dir(sweep: Path, trial_id: str) -> Path:
    return sweep / "trials" / trial_id


def read_trial(folder: Path) -> dict | None:
    """A trial's record, or None when it has none yet."""
    path = Path(folder) / TRIAL_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def write_trial(folder: Path, record: dict) -> None:
    write_json_atomic(Path(folder) / TRIAL_FILE, record)


def new_record(trial, evaluate: dict) -> dict:
    """The record of a trial that has not started."""
    return {"trial": trial.id, "dataset": trial.dataset, "setting": trial.setting,
            "seed": trial.seed, "config": trial.config, "evaluate": evaluate,
            "status": "pending", "attempts": 0, "exit_codes": [], "history": [],
            "wall_seconds": 0.0, "updates": 0, "message": None, "run_dir": "run",
            "evaluation": None, "validations": []}


def all_records(sweep: Path) -> list[dict]:
    """Every trial record under the sweep's folder, by trial id."""
    folders = sorted((sweep / "trials").glob("*/")) if (sweep / "trials").is_dir() else []
    return [r for r in (read_trial(f) for f in folders) if r is not None]
