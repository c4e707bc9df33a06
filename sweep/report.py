"""A sweep's report, from its trials' trial.json alone: results.md, results.json, curves.png.

Per dataset and setting, over the trials that are done (one run each): the mean ± std of the
runs' scores, and the interquartile mean (IQM) with a 95% stratified bootstrap interval as
rliable defines it for papers (Agarwal et al. 2021; stats.py): over a runs x tasks matrix whose
entries are each run's mean score over its evaluation episodes, runs resampled within each task.
Per setting, with several datasets, one aggregate row over all of them (the tasks), on the
seeds done on all of them, when every dataset's score is the normalised one (returns of
different tasks do not add up). A run's score is its mean normalised score (x 100) over the
evaluation episodes where the dataset stores reference scores, else its mean return.

The learning curves: per dataset, the validation figure each setting's runs logged at each
validation (the online score with --eval-every, else the validation loss), mean over seeds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from runs import write_json_atomic
from stats import iqm, stratified_bootstrap_ci
from sweep.trials import all_records

FORMAT = 1
CURVE_METRICS = ("eval/normalized_score", "eval/return", "val/loss")


def cell(scores: np.ndarray) -> dict:
    """Mean, std (ddof 0), IQM and its 95% interval of a runs x tasks matrix of run scores."""
    low, high = stratified_bootstrap_ci(scores)
    return {"runs": int(scores.shape[0]), "mean": float(np.mean(scores)),
            "std": float(np.std(scores.mean(axis=1))), "iqm": float(iqm(scores)),
            "iqm_ci": [low, high]}


def build_results(spec: dict, records: list[dict]) -> dict:
    """results.json's content: one row per dataset and setting, one aggregate row per setting,
    and every trial's status."""
    done = {(r["dataset"], r["setting"], r["seed"]): r for r in records
            if r["status"] == "done" and r.get("evaluation")}
    rows, aggregate = [], []
    for setting in spec["settings"]:
        per_dataset = {}
        for dataset in spec["datasets"]:
            runs = [done[(dataset, setting, s)] for s in spec["seeds"]
                    if (dataset, setting, s) in done]
            row = {"dataset": dataset, "setting": setting, "seeds": [r["seed"] for r in runs]}
            if runs:
                scores = np.array([[r["evaluation"]["score"]] for r in runs])
                success = [r["evaluation"]["success_rate"] for r in runs
                           if "success_rate" in r["evaluation"]]
                row.update(cell(scores), score_kind=runs[0]["evaluation"]["score_kind"],
                           success_rate=float(np.mean(success)) if success else None,
                           updates=sorted({r["updates"] for r in runs}),
                           minutes_per_run=float(np.mean([r["wall_seconds"] for r in runs]) / 60))
                per_dataset[dataset] = {r["seed"]: r for r in runs}
            rows.append(row)
        seeds = [s for s in spec["seeds"]
                 if all(s in per_dataset.get(d, {}) for d in spec["datasets"])]
        kinds = {per_dataset[d][s]["evaluation"]["score_kind"]
                 for d in spec["datasets"] for s in seeds}
        if len(spec["datasets"]) > 1 and seeds and kinds == {"normalised score"}:
            matrix = np.array([[per_dataset[d][s]["evaluation"]["score"]
                                for d in spec["datasets"]] for s in seeds])   # (runs, tasks)
            aggregate.append({"setting": setting, "tasks": len(spec["datasets"]),
                              "seeds": seeds, "score_kind": kinds.pop(), **cell(matrix)})
    keys = ("trial", "status", "attempts", "updates", "wall_seconds", "message")
    trials = [{k: r.get(k) for k in keys} | {"score": (r.get("evaluation") or {}).get("score")}
              for r in records]
    return {"format": FORMAT, "sweep": spec["name"], "evaluate": spec["evaluate"],
            "rows": rows, "aggregate": aggregate, "trials": trials}


def interval(row: dict) -> str:
    return f"{row['iqm']:.1f} [{row['iqm_ci'][0]:.1f}, {row['iqm_ci'][1]:.1f}]"


def render(results: dict) -> str:
    """results.md: the table, what its figures mean, and every trial not done."""
    evaluate = results["evaluate"]
    lines = [f"# Sweep {results['sweep']}", "",
             "| dataset | setting | score | runs | mean ± std | IQM [95% CI] | success rate | "
             "updates | minutes per run |", "|---|---|---|---|---|---|---|---|---|"]
    for row in results["rows"]:
        if not row["seeds"]:
            lines.append(f"| {row['dataset']} | {row['setting']} | — | 0 | — | — | — | — "
                         f"| — |")
            continue
        success = "—" if row["success_rate"] is None else f"{100 * row['success_rate']:.0f}%"
        updates = "–".join(str(u) for u in (row["updates"][0], row["updates"][-1])) \
            if len(row["updates"]) > 1 else str(row["updates"][0])
        lines.append(f"| {row['dataset']} | {row['setting']} | {row['score_kind']} | "
                     f"{row['runs']} | {row['mean']:.1f} ± {row['std']:.1f} | {interval(row)} | "
                     f"{success} | {updates} | {row['minutes_per_run']:.1f} |")
    for row in results["aggregate"]:
        lines.append(f"| all {row['tasks']} datasets | {row['setting']} | {row['score_kind']} | "
                     f"{row['runs']} x {row['tasks']} | {row['mean']:.1f} | {interval(row)} | — "
                     f"| — | — |")
    lines += ["", f"Each run (one training seed) is scored by its mean over {evaluate['episodes']} "
              f"online episodes on the {evaluate['seeds']} seeds: the normalised score "
              f"(minari.get_normalized_score x 100) where the dataset stores reference scores, "
              f"else the return. Mean ± std: over runs. IQM [95% CI]: the interquartile mean of "
              f"the runs x tasks matrix of run scores with a 95% stratified bootstrap interval "
              f"(runs resampled within each task; rliable's definition, stats.py); a dataset's "
              f"row is one task, an `all datasets` row takes every dataset as a task, over the "
              f"seeds done on all of them. Minutes: wall clock per run, all attempts."]
    unfinished = [t for t in results["trials"] if t["status"] != "done"]
    if unfinished:
        lines += ["", "Trials not done:", ""]
        lines += [f"- {t['trial']}: {t['status']}" + (f" ({t['message']})" if t["message"] else "")
                  for t in unfinished]
    return "\n".join(lines) + "\n"


def curves_figure(spec: dict, records: list[dict], path: Path) -> bool:
    """curves.png: per dataset, each setting's mean validation figure against updates; False
    when no run logged a validation."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drawn = False
    fig, axes = plt.subplots(1, len(spec["datasets"]), squeeze=False,
                             figsize=(5 * len(spec["datasets"]), 3.5))
    for ax, dataset in zip(axes[0], spec["datasets"]):
        for setting in spec["settings"]:
            runs = [r.get("validations") or [] for r in records
                    if r["dataset"] == dataset and r["setting"] == setting]
            runs = [v for v in runs if v]
            metric = next((m for m in CURVE_METRICS if any(m in p for v in runs for p in v)),
                          None)
            if metric is None:
                continue
            points = {}
            for validations in runs:
                for point in validations:
                    if point.get(metric) is not None:
                        points.setdefault(point["updates"], []).append(point[metric])
            common = sorted(u for u, values in points.items() if len(values) == len(runs))
            if common:
                ax.plot(common, [np.mean(points[u]) for u in common], marker="o", markersize=3,
                        label=f"{setting} ({len(runs)} runs)")
                ax.set_ylabel(metric)
                drawn = True
        ax.set_title(dataset, fontsize=9)
        ax.set_xlabel("updates")
        if ax.lines:
            ax.legend(fontsize=8)
    fig.tight_layout()
    if drawn:
        fig.savefig(path, dpi=100)
    plt.close(fig)
    return drawn


def write_report(folder: Path) -> str:
    """Write results.md, results.json and curves.png into the sweep's folder; returns the table."""
    import yaml

    spec = yaml.safe_load((folder / "spec.yaml").read_text())
    records = all_records(folder)
    results = build_results(spec, records)
    write_json_atomic(folder / "results.json", results)
    table = render(results)
    temporary = folder / ".results.md.tmp"
    temporary.write_text(table)
    temporary.replace(folder / "results.md")
    if curves_figure(spec, records, folder / ".curves.png"):
        (folder / ".curves.png").replace(folder / "curves.png")
        table += f"\nLearning curves: {folder / 'curves.png'}\n"
    return table


def main(folder: str) -> int:
    """`python -m sweep.report OUTPUT/<name>`: the report of a sweep's folder."""
    print(write_report(Path(folder)), end="")
    return 0


if __name__ == "__main__":
    import sys
    sys.exit(main(sys.argv[1]))
