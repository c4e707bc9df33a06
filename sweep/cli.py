"""`python main.py sweep SPEC [options]`: run, resume, list or report a sweep (docs/sweeps.md)."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from config import UsageError
from sweep.spec import differences, load_spec
from sweep.trials import new_record, read_trial, sweep_dir, trial_dir, write_trial

DEFAULT_OUTPUT = "runs/sweeps"


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("spec", metavar="SPEC",
                        help="the sweep's YAML file, or a sweep's folder (OUTPUT/<name>, with "
                             "--report or --dry-run)")
    parser.add_argument("--output-dir", default=DEFAULT_OUTPUT,
                        help=f"where sweeps live: OUTPUT/<name>/ (default {DEFAULT_OUTPUT}); on a "
                             f"cluster, a folder every node shares")
    parser.add_argument("--address", help="a running Ray cluster (`ray start --head` prints it; "
                        "default RAY_ADDRESS, else a local cluster started and stopped here)")
    parser.add_argument("--cpus-per-trial", type=float, default=1.0,
                        help="CPUs Ray reserves for each trial, which also sets its torch "
                             "threads (default 1)")
    parser.add_argument("--gpus-per-trial", type=float, default=0.0,
                        help="GPUs Ray reserves for each trial; a fraction lets several trials "
                             "share one GPU (default 0)")
    parser.add_argument("--max-retries", type=int, default=3,
                        help="times Ray retries a trial whose worker or process was lost "
                             "(default 3); failed trials are not retried")
    parser.add_argument("--retry-failed", action="store_true",
                        help="run failed trials again (a rerun skips them otherwise)")
    parser.add_argument("--force-new", action="store_true",
                        help="start the sweep afresh when SPEC changed since it began: the old "
                             "folder is moved to OUTPUT/<name>.replaced-<time>")
    parser.add_argument("--dry-run", action="store_true",
                        help="list the trials and what each has done; run nothing")
    parser.add_argument("--report", action="store_true",
                        help="write results.md, results.json and curves.png from the trials "
                             "done; run nothing")
    return parser


def spec_and_folder(args) -> tuple:
    """(Spec, sweep folder), from a SPEC file or a sweep's folder."""
    given = Path(args.spec).expanduser()
    if given.is_dir():
        if not (given / "spec.yaml").is_file():
            raise UsageError(f"{given} is a folder without a spec.yaml: pass a sweep's SPEC file "
                             f"or its folder OUTPUT/<name>.")
        spec = load_spec(given / "spec.yaml")
        return spec, given.resolve()
    spec = load_spec(given)
    return spec, sweep_dir(args.output_dir, spec.name)


def check_unchanged(spec, folder: Path, force_new: bool) -> None:
    """Refuse a SPEC that differs from the one the sweep in `folder` began with."""
    import yaml

    saved = folder / "spec.yaml"
    if not saved.is_file() or force_new:
        return
    changed = differences(yaml.safe_load(saved.read_text()), spec.canonical())
    if changed:
        raise UsageError(f"Sweep {spec.name} in {folder} was started with another spec: "
                         f"{'; '.join(changed)}. A rerun continues the same sweep: restore the "
                         f"spec, give the new one another name, or pass --force-new to start "
                         f"afresh (the old folder is kept, renamed).")


def dry_run(spec, folder: Path) -> int:
    trials = spec.trials()
    print(f"Sweep {spec.name}: {len(trials)} trials in {folder / 'trials'}")
    for trial in trials:
        record = read_trial(trial_dir(folder, trial.id))
        state = "new" if record is None else record["status"]
        if record and record["attempts"]:
            state += f", {record['attempts']} attempts, {record['updates']} updates"
        print(f"  {trial.id}: {state}")
    return 0


def prepare(spec, folder: Path, retry_failed: bool) -> list[Path]:
    """Write spec.yaml and each trial's folder, config.json and trial.json (kept when present);
    returns the folders of the trials to run."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "spec.yaml").is_file():
        (folder / "spec.yaml").write_text(yaml.safe_dump(spec.canonical(), sort_keys=False))
    to_run = []
    for trial in spec.trials():
        place = trial_dir(folder, trial.id)
        place.mkdir(parents=True, exist_ok=True)
        record = read_trial(place)
        if record is None:
            record = new_record(trial, spec.evaluate)
            (place / "config.json").write_text(
                json.dumps({**trial.config, "output_dir": str(place)}, indent=2) + "\n")
            write_trial(place, record)
        if record["status"] == "done" or (record["status"] == "failed" and not retry_failed):
            continue
        to_run.append(place)
    return to_run


def print_trial(record: dict) -> None:
    line = f"{record['status']:>7} {record['trial']}: {record['updates']} updates"
    evaluation = record.get("evaluation")
    if evaluation:
        line += f", {evaluation['score_kind']} {evaluation['score']:.2f}"
    if record.get("message"):
        line += f" ({' '.join(record['message'].split())[:300]})"
    print(line, flush=True)


def run(args, spec, folder: Path) -> int:
    if args.cpus_per_trial <= 0 or args.gpus_per_trial < 0 or args.max_retries < 0:
        raise UsageError(f"--cpus-per-trial must be positive, --gpus-per-trial and --max-retries "
                         f"at least 0 (got {args.cpus_per_trial:g}, {args.gpus_per_trial:g}, "
                         f"{args.max_retries}).")
    try:
        import ray  # noqa: F401
    except ImportError:
        raise UsageError("`sweep` runs on Ray, which is not installed: `pip install -r "
                         "requirements-sweep.txt`.") from None
    from sweep import engine
    from sweep.spec import check_datasets

    check_datasets(spec)
    if args.force_new and folder.exists():
        aside = folder.with_name(f"{folder.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
        folder.rename(aside)
        print(f"--force-new: the earlier sweep's folder is now {aside}")
    new = not folder.exists()
    to_run = prepare(spec, folder, args.retry_failed)
    total = len(spec.trials())
    if not to_run:
        print(f"Sweep {spec.name}: all {total} trials are done or failed; nothing to run "
              f"(--retry-failed reruns failed ones). Folder: {folder}")
        return finish(args, spec, folder, {"stopped": None})
    where = engine.connect(args.address)
    import ray
    try:
        try:
            engine.check_nodes(folder)
        except UsageError:
            if new:
                shutil.rmtree(folder)
            raise
        print(f"Sweep {spec.name}: {total} trials, {total - len(to_run)} done or failed before, "
              f"{len(to_run)} to run on {where}, {args.cpus_per_trial:g} CPUs and "
              f"{args.gpus_per_trial:g} GPUs per trial. Folder: {folder}", flush=True)
        outcome = engine.run_sweep(to_run, args.cpus_per_trial, args.gpus_per_trial,
                                   args.max_retries, print_trial)
    finally:
        ray.shutdown()
    return finish(args, spec, folder, outcome)


def finish(args, spec, folder: Path, outcome: dict) -> int:
    """Print the sweep's state and report; the exit code: 0 all done, 1 some failed or not
    finished, 130/143 stopped by SIGINT/SIGTERM."""
    from sweep.report import write_report

    total = len(spec.trials())
    records = [read_trial(trial_dir(folder, t.id)) for t in spec.trials()]
    counts = {s: sum(r["status"] == s for r in records) for s in ("done", "failed", "pending",
                                                                  "running")}
    print(f"Sweep {spec.name}: {counts['done']} done, {counts['failed']} failed, "
          f"{counts['pending'] + counts['running']} not finished, of {total}.")
    if counts["done"]:
        print(write_report(folder), end="")
    rerun = f"python main.py sweep {args.spec}" + \
        (f" --output-dir {args.output_dir}" if args.output_dir != DEFAULT_OUTPUT else "")
    if outcome["stopped"]:
        print(f"Stopped by {outcome['stopped']}. Resume: {rerun}")
        return 130 if outcome["stopped"] == "SIGINT" else 143
    if counts["failed"]:
        print(f"Failed trials keep their message in trial.json and attempts.log; after fixing "
              f"the cause, rerun them with: {rerun} --retry-failed")
        return 1
    return 0 if counts["done"] == total else 1


def main(argv: list[str], prog: str = "main.py sweep") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    try:
        spec, folder = spec_and_folder(args)
        if args.report:
            if not (folder / "spec.yaml").is_file():
                raise UsageError(f"No sweep {spec.name} in {folder.parent} to report on: run "
                                 f"it first (python main.py sweep {args.spec}).")
            from sweep.report import write_report
            print(write_report(folder), end="")
            return 0
        check_unchanged(spec, folder, args.force_new)
        if args.dry_run:
            return dry_run(spec, folder)
        return run(args, spec, folder)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
