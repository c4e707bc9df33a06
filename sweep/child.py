"""One attempt of a sweep trial, in its own process: `python -m sweep.child TRIAL_DIR`.

An ordinary `main.py train` run into TRIAL_DIR/run (new, or resumed from its last.ckpt when an
earlier attempt left one), then the online evaluation the spec names on the result checkpoint.
It writes TRIAL_DIR/outcome.json (the updates it started from and reached, its exit code, the
evaluation summary with per-episode scores) and exits with train's code: 0 done, 1 a non-finite
loss or a crash, 2 a usage error, 130/143 stopped by SIGINT/SIGTERM after saving last.ckpt.
The Ray task (`sweep.engine.run_trial`) turns that into trial.json.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path


def saved_updates(checkpoint: Path) -> int | None:
    """Updates a checkpoint holds (its num_updates buffer), None when it cannot be read."""
    import torch

    try:
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
        return int(saved["state_dict"]["num_updates"])
    except Exception:  # noqa: BLE001 - a missing or cut file: no updates to report
        return None


def scored(summary: dict, dataset_id: str) -> dict:
    """The evaluation summary a trial records: seeds, returns, per-episode scores (normalised x
    100 where the dataset stores reference scores, else the returns) and their mean."""
    import minari
    import numpy as np

    from dataset import load_dataset
    from runs import seeds_name

    dataset = load_dataset(dataset_id)
    returns = np.asarray(summary["returns"], dtype=np.float64)
    normalised = dataset.storage.metadata.get("ref_min_score") is not None
    scores = minari.get_normalized_score(dataset, returns) * 100 if normalised else returns
    out = {"seeds": seeds_name(summary["seed"]), "first_seed": summary["seed"],
           "episodes": len(returns), "returns": [float(r) for r in returns],
           "score_kind": "normalised score" if normalised else "return",
           "episode_scores": [float(s) for s in scores], "score": float(np.mean(scores)),
           "return_mean": summary["return_mean"]}
    if "success_rate" in summary:
        out["success_rate"] = summary["success_rate"]
    return out


def command_line(argv: list[str]) -> int:
    """`python main.py ARGV`, run in this process as the command line runs it (its `__main__`
    block), so the sweep uses `train` as a user does; returns its exit code."""
    import runpy

    script = Path(__file__).resolve().parent.parent / "main.py"
    saved, sys.argv = sys.argv, [str(script), *argv]
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        sys.argv = saved
    return 0


def attempt(folder: Path) -> int:
    """Train (or resume) and evaluate the trial in `folder`; returns the exit code."""
    import eval_online
    from config import TEST_SEED, TrainConfig, UsageError
    from runs import result_checkpoint, write_json_atomic

    record = json.loads((folder / "trial.json").read_text())
    run_dir = folder / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    outcome = {"resumed_from_updates": None, "updates": None, "evaluation": None}
    if last.is_file():
        outcome["resumed_from_updates"] = outcome["updates"] = saved_updates(last)
        argv = ["train", "--resume", str(run_dir), "--skip-online-eval"]
    else:
        if run_dir.exists():
            # An attempt stopped before its first checkpoint: nothing in it to continue.
            shutil.rmtree(run_dir)
        argv = ["train", "--config", str(folder / "config.json"), "--run-dir", str(run_dir),
                "--skip-online-eval"]
    # Written now and again at the end: a process killed in between still says where it began.
    write_json_atomic(folder / "outcome.json", outcome)
    print(f"sweep attempt: python main.py {' '.join(argv)}", flush=True)
    code = command_line(argv)
    outcome["updates"] = saved_updates(last) if last.is_file() else None
    evaluate = record["evaluate"]
    if code == 0 and evaluate["episodes"] > 0:
        cfg = TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
        result = result_checkpoint(cfg, run_dir / "checkpoints")
        seed = TEST_SEED if evaluate["seeds"] == "test" else eval_online.validation_seed(cfg.seed)
        try:
            summary = eval_online.evaluate_checkpoint(
                result, episodes=evaluate["episodes"], seed=seed, num_envs=evaluate["num_envs"],
                log_to_tensorboard=True, progress=False)
            outcome["evaluation"] = {"checkpoint": result.name, **scored(summary, cfg.dataset)}
        except UsageError as err:
            print(f"error: {err}", file=sys.stderr, flush=True)
            code = 2
    outcome["exit_code"] = code
    write_json_atomic(folder / "outcome.json", outcome)
    return code


if __name__ == "__main__":
    import os
    os.environ.setdefault("MUJOCO_GL", "egl")
    sys.exit(attempt(Path(sys.argv[1])))
