"""Collect the runs of scripts/results.sh into a Markdown table, JSON and a score plot.

    python scripts/results_table.py results
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

METHODS = {"meanflow_ql": "MeanFlow-QL (defaults)",
           "meanflow_bc": "MeanFlow BC (--actor-q-weight 0 --cql-alpha 0)"}
LOG_NAME = re.compile(r"(?P<quality>\w+)_(?P<method>meanflow_\w\w)_seed(?P<seed>\d+)\.log")


def dataset_average(quality: str) -> float:
    """The dataset's own mean normalised return."""
    import minari
    dataset = minari.load_dataset(f"local/pusher/{quality}-v0")
    returns = np.array([ep.rewards.sum() for ep in dataset.iterate_episodes()])
    return float(minari.get_normalized_score(dataset, returns).mean() * 100)


def read_run(log: Path) -> dict | None:
    text = log.read_text()
    run_dir = re.search(r"^Run directory: (\S+)", text, re.M)
    wall = re.search(r"^wall_seconds (\d+)", text, re.M)
    updates = re.search(r"Finished after (\d+) updates", text)
    if not (run_dir and wall and updates):
        return None
    checkpoints = Path(run_dir.group(1)) / "checkpoints"
    scores = {}
    for which in ("best", "last"):
        path = checkpoints / f"{which}.online.json"
        if path.is_file():
            scores[which] = json.loads(path.read_text())["normalized_score_mean"]
    return {"run_dir": run_dir.group(1), "wall_seconds": int(wall.group(1)),
            "updates": int(updates.group(1)), **scores}


def curve(run_dir: str) -> tuple[list, list]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(Path(run_dir) / "tensorboard"))
    events.Reload()
    if "eval/normalized_score" not in events.Tags()["scalars"]:
        return [], []
    points = sorted({e.step: e.value for e in events.Scalars("eval/normalized_score")}.items())
    return [p[0] for p in points], [p[1] for p in points]


def fmt(values: list) -> str:
    """Mean and standard deviation over seeds (the value alone for a single seed)."""
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{np.mean(values):.1f} ± {np.std(values):.1f}"


def targets(runs: dict, qualities: list) -> list[str]:
    """The issue's targets, each with the measured figure and met / MISSED."""
    out = []
    verdict = lambda ok: "met" if ok else "**MISSED**"
    for quality in qualities:
        ql, bc = runs.get((quality, "meanflow_ql"), []), runs.get((quality, "meanflow_bc"), [])
        for which, name in (("last", "final"), ("best", "best-checkpoint")):
            ql_mean = np.mean([r[which] for r in ql if which in r]) if ql else float("nan")
            line = f"- {quality}, {name}: MeanFlow-QL {ql_mean:.1f} (target >= 95: " \
                   f"{verdict(ql_mean >= 95)})"
            if quality != "expert" and bc:
                gap = ql_mean - np.mean([r[which] for r in bc if which in r])
                line += f", {gap:.1f} above BC (target >= 15: {verdict(gap >= 15)})"
            out.append(line)
    minutes = [r["wall_seconds"] / 60 for rows in runs.values() for r in rows]
    if minutes:
        out.append(f"- longest training run: {max(minutes):.1f} minutes (target <= 15: "
                   f"{verdict(max(minutes) <= 15)})")
    return out


def main(out: str) -> int:
    out_dir = Path(out)
    runs = defaultdict(list)
    for log in sorted((out_dir / "logs").glob("*.log")):
        match = LOG_NAME.fullmatch(log.name)
        run = read_run(log) if match else None
        if run:
            runs[(match["quality"], match["method"])].append({"seed": int(match["seed"]), **run})
    qualities = sorted({q for q, _ in runs}, key=["expert", "medium", "mixed"].index)
    lines = ["| dataset | method | seeds | final score | best-checkpoint score | "
             "minutes per run (mean / max) | updates |", "|---|---|---|---|---|---|---|"]
    summary = {}
    for quality in qualities:
        for method, label in METHODS.items():
            rows = runs.get((quality, method), [])
            if not rows:
                continue
            last = [r["last"] for r in rows if "last" in r]
            best = [r["best"] for r in rows if "best" in r]
            minutes = [r["wall_seconds"] / 60 for r in rows]
            lines.append(f"| {quality} | {label} | {len(rows)} | {fmt(last)} | {fmt(best)} | "
                         f"{np.mean(minutes):.1f} / {max(minutes):.1f} | "
                         f"{int(np.mean([r['updates'] for r in rows]))} |")
            summary[f"{quality}/{method}"] = rows
        average = dataset_average(quality)
        summary[f"{quality}/dataset_average"] = average
        lines.append(f"| {quality} | the dataset's own episodes | — | {average:.1f} | — | — | — |")
    lines += ["", *targets(runs, qualities)]
    (out_dir / "results.md").write_text("\n".join(lines) + "\n")
    (out_dir / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    print("\n".join(lines))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
        return 0
    fig, axes = plt.subplots(1, len(qualities), figsize=(5 * len(qualities), 4), squeeze=False)
    for ax, quality in zip(axes[0], qualities):
        for method, colour in (("meanflow_ql", "tab:blue"), ("meanflow_bc", "tab:orange")):
            for i, run in enumerate(runs.get((quality, method), [])):
                steps, scores = curve(run["run_dir"])
                ax.plot(steps, scores, color=colour, alpha=0.8,
                        label=METHODS[method].split(" (")[0] if i == 0 else None)
        ax.set(title=f"local/pusher/{quality}-v0", xlabel="training updates",
               ylabel="normalised score (5 episodes)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "score_vs_updates.png", dpi=100)
    print(f"Wrote {out_dir / 'results.md'} and {out_dir / 'score_vs_updates.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "results"))
