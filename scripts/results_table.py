"""Collect the runs of scripts/results.sh into a Markdown table, JSON and a score plot.

    python scripts/results_table.py results

Each score cell gives the mean ± std over seeds of the runs' mean normalised scores, and beside
it the interquartile mean of every (seed, episode) normalised score with a 95% stratified
bootstrap interval over seeds (rliable's IQM, see stats.py). The per-episode scores come from the
"returns" each run's checkpoints/{best,last}.online.json holds (eval_online.py writes them), so
the IQM needs the run directories named in the logs. Without logs (only a results.json written
earlier, as in the repository's results/), the table is rebuilt from that file: the IQM column
then shows only what it holds (— for runs summarised before per-episode scores were kept), and
the plot, which reads the runs' TensorBoard logs, is left as it was.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

# Run as `python scripts/results_table.py`, the script's folder is on the path, not the
# repository's root where stats.py lies.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from stats import iqm, stratified_bootstrap_ci  # noqa: E402

METHODS = {"meanflow_ql": "MeanFlow-QL (defaults)",
           "meanflow_bc": "MeanFlow BC (--actor-q-weight 0 --cql-alpha 0)"}
LOG_NAME = re.compile(r"(?P<quality>\w+)_(?P<method>meanflow_\w\w)_seed(?P<seed>\d+)\.log")


def dataset_average(quality: str) -> float:
    """The dataset's own mean normalised return."""
    import minari
    dataset = minari.load_dataset(f"local/pusher/{quality}-v0")
    returns = np.array([ep.rewards.sum() for ep in dataset.iterate_episodes()])
    return float(minari.get_normalized_score(dataset, returns).mean() * 100)


@functools.lru_cache(maxsize=None)
def minari_dataset(dataset_id: str):
    import minari
    return minari.load_dataset(dataset_id)


def episode_scores(online: dict) -> list[float] | None:
    """Per-episode normalised scores (x 100) of an `*.online.json`, None when it cannot say."""
    if "returns" not in online or "normalized_score_mean" not in online:
        return None
    import minari
    returns = np.asarray(online["returns"], dtype=np.float64)
    scores = minari.get_normalized_score(minari_dataset(online["dataset"]), returns) * 100
    return [float(s) for s in scores]


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
            online = json.loads(path.read_text())
            scores[which] = online["normalized_score_mean"]
            per_episode = episode_scores(online)
            if per_episode is not None:
                scores[f"{which}_episodes"] = per_episode
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


def fmt_iqm(rows: list, which: str) -> str:
    """IQM [95% CI] of every (seed, episode) score of `which` checkpoint; — without them."""
    per_seed = [r[f"{which}_episodes"] for r in rows if f"{which}_episodes" in r]
    if not per_seed:
        return "—"
    if len({len(s) for s in per_seed}) == 1:
        scores = np.array(per_seed)            # (seeds, episodes): episode j is one stratum
    else:                                      # unequal episode counts: one stratum of all
        scores = np.concatenate(per_seed)[:, None]
    low, high = stratified_bootstrap_ci(scores)
    text = f"{iqm(scores):.1f} [{low:.1f}, {high:.1f}]"
    return text if len(per_seed) == len(rows) else f"{text} ({len(per_seed)} seeds)"


def read_runs(out_dir: Path) -> tuple[dict, dict]:
    """Runs by (quality, method) and dataset averages by quality, from the logs or else from the
    results.json an earlier call wrote."""
    runs, averages = defaultdict(list), {}
    for log in sorted((out_dir / "logs").glob("*.log")):
        match = LOG_NAME.fullmatch(log.name)
        run = read_run(log) if match else None
        if run:
            runs[(match["quality"], match["method"])].append({"seed": int(match["seed"]), **run})
    if runs or not (out_dir / "results.json").is_file():
        return runs, averages
    print(f"No logs in {out_dir / 'logs'}: rebuilding the table from {out_dir / 'results.json'}")
    for key, value in json.loads((out_dir / "results.json").read_text()).items():
        quality, _, method = key.partition("/")
        if method in METHODS:
            runs[(quality, method)] = value
        elif method == "dataset_average":
            averages[quality] = value
    return runs, averages


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
    runs, averages = read_runs(out_dir)
    if not runs:
        print(f"No runs found in {out_dir / 'logs'} nor {out_dir / 'results.json'}.")
        return 1
    qualities = sorted({q for q, _ in runs}, key=["expert", "medium", "mixed"].index)
    lines = ["| dataset | method | seeds | final score | final IQM [95% CI] | "
             "best-checkpoint score | best-checkpoint IQM [95% CI] | "
             "minutes per run (mean / max) | updates |", "|---|---|---|---|---|---|---|---|---|"]
    summary = {}
    for quality in qualities:
        for method, label in METHODS.items():
            rows = runs.get((quality, method), [])
            if not rows:
                continue
            last = [r["last"] for r in rows if "last" in r]
            best = [r["best"] for r in rows if "best" in r]
            minutes = [r["wall_seconds"] / 60 for r in rows]
            lines.append(f"| {quality} | {label} | {len(rows)} | {fmt(last)} | "
                         f"{fmt_iqm(rows, 'last')} | {fmt(best)} | {fmt_iqm(rows, 'best')} | "
                         f"{np.mean(minutes):.1f} / {max(minutes):.1f} | "
                         f"{int(np.mean([r['updates'] for r in rows]))} |")
            summary[f"{quality}/{method}"] = rows
        average = averages[quality] if quality in averages else dataset_average(quality)
        summary[f"{quality}/dataset_average"] = average
        lines.append(f"| {quality} | the dataset's own episodes | — | {average:.1f} | — | — | — "
                     f"| — | — |")
    lines += ["", "Scores: mean ± std over seeds of each run's mean normalised score; IQM [95% CI]: "
              "interquartile mean of every (seed, episode) normalised score, with a 95% "
              "stratified bootstrap interval resampling seeds within each episode (stats.py)."]
    if any(f"{which}_episodes" not in r for rows in runs.values() for r in rows
           for which in ("last", "best") if which in r):
        lines += ["", "An IQM shows — (or counts fewer seeds) where a run's per-episode scores are "
                  "missing: run this script where the run directories its logs name are on disk "
                  "(their checkpoints/*.online.json hold each episode's return)."]
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
    if not any(Path(r["run_dir"]).is_dir() for rows in runs.values() for r in rows):
        print(f"Wrote {out_dir / 'results.md'}; the run directories are not on disk, so "
              f"{out_dir / 'score_vs_updates.png'} is left as it was.")
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
