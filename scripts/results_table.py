"""Collect the runs of scripts/results.sh into one Markdown table and a JSON file, and redraw
the tables of README.md and docs/ from the results files.

    python scripts/results_table.py [OUT]          # OUT defaults to results
    python scripts/results_table.py --docs         # redraw the docs' generated blocks

--docs rewrites every block between `<!-- generated: KIND FILE... -->` and
`<!-- end generated -->` in README.md and docs/*.md from the results files it names (paths from
the repository's root): `table` (the full table; several files merge per dataset), `headline`
(one row per dataset: final score or success rate of each method) or `curve` (a learning curve).
Besides the results.json this script writes ("format": 2), two kinds of results file are read:
"recorded" (rows copied from an earlier table whose run files were not kept, with their
commands) and "curve" (success rate per method, seed and update count; scripts/figures.py draws
them).

Reads what scripts/results.sh writes under OUT: the sweep's trials (OUT/<name>/trials/*/
trial.json, `python main.py sweep scripts/results.yaml --output-dir OUT`; the method is the
trial's setting, meanflow_ql or meanflow_bc), and, from before the sweep, runs of the old loop:

- logs/<slug>_<method>_seed<S>.log (slug: the dataset id with "/" as "-"; method: meanflow_ql or
  meanflow_bc, with "-<tag>" for a tagged variant), each naming its run directory and ending
  with "wall_seconds N"; the run's checkpoints/last.online-test.json is its final checkpoint on
  the test seeds (checkpoints/last.online-validation.json, the same on validation seeds, is kept
  in the JSON but not tabulated; last.online.json and last.validation.json, as older runs named
  them, are read too);
- baselines/<slug>_zero.json: the zero-action policy on the same test seeds;
- the Minari dataset itself (its id is in the JSONs' "dataset"), for its own episodes.

A dataset whose metadata holds ref_min_score/ref_max_score is scored by the normalised score
(minari.get_normalized_score x 100), any other by the undiscounted return; the table's "score"
column says which. Per row: the mean ± std (numpy's, ddof 0) over seeds of each run's mean score
on the test episodes; the interquartile mean of every (seed, episode) score with a 95%
stratified bootstrap interval (stats.py: runs x episodes, each episode, seeded alike for every
run, one stratum); the success rate when the evaluation measured one (Pusher: the object ends
within 0.1 of the goal); minutes per run (wall clock) and training updates. The zero-action
baseline and the dataset's own episodes are one set of episodes each: their interval resamples
episodes. Then the checks issue #14 asks for, each met or **MISSED**.

Writes OUT/results.md, OUT/results.json (every seed's figures and per-episode scores) and prints
the table. Without logs, the table is rebuilt from OUT/results.json alone, identically.

Runs that evaluated online during training (--eval-every, as the OGBench runs do) also give a
table of the success rate against updates, read from their logs' validation lines.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from pathlib import Path

import numpy as np

# Run as `python scripts/results_table.py`, the script's folder is on the path, not the
# repository's root where stats.py and builders/ lie.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from stats import iqm, stratified_bootstrap_ci  # noqa: E402

FORMAT = 2                                    # results.json layout; 1 was the per-quality one
RECORDED = "recorded"     # rows copied from an earlier table whose run files were not kept
CURVE = "curve"           # a learning curve: success rate per checkpoint, per method and seed
METHODS = {"meanflow_ql": "MeanFlow-QL (defaults)",
           "meanflow_bc": "MeanFlow BC (--actor-q-weight 0 --cql-alpha 0 --consistency-weight 0 "
                          "--learning-rate 0.0003 --learning-rate-floor 0)"}
# A results file may name its methods itself ("labels": {"meanflow_ql": ...}): rows measured with
# an earlier version's defaults say so instead of claiming today's.
SHORT = {"meanflow_ql": "MeanFlow-QL", "meanflow_bc": "MeanFlow BC"}
LOG_NAME = re.compile(
    r"(?P<slug>.+?)_(?P<method>meanflow_(?:ql|bc)(?:-.+)?)_seed(?P<seed>\d+)\.log")
NORMALISED, RETURN = "normalised score", "return"


# --- collecting: logs, JSONs and datasets -> one JSON-able dict -------------------------------

@functools.lru_cache(maxsize=None)
def minari_dataset(dataset_id: str):
    import minari
    return minari.load_dataset(dataset_id)


def has_reference_scores(dataset_id: str) -> bool:
    return minari_dataset(dataset_id).storage.metadata.get("ref_min_score") is not None


def scores_of(dataset_id: str, returns) -> list[float]:
    """Per-episode scores: normalised (x 100) where the dataset has reference scores, else the
    returns themselves."""
    returns = np.asarray(returns, dtype=np.float64)
    if has_reference_scores(dataset_id):
        import minari
        returns = minari.get_normalized_score(minari_dataset(dataset_id), returns) * 100
    return [float(s) for s in returns]


def evaluation(summary: dict) -> dict:
    """The figures the table needs from an eval_online.py summary."""
    out = {"eval_seed": summary.get("seed"), "episodes": len(summary["returns"]),
           "return_mean": summary["return_mean"],
           "episode_scores": scores_of(summary["dataset"], summary["returns"])}
    out["score"] = float(np.mean(out["episode_scores"]))
    if summary.get("success_rate") is not None:
        out["success_rate"] = summary["success_rate"]
    return out


def first_file(folder: Path, *names: str) -> Path:
    """The first of `names` in `folder` that exists, else the first name."""
    return next((folder / n for n in names if (folder / n).is_file()), folder / names[0])


def read_run(log: Path) -> tuple[dict | None, str]:
    """A finished run's figures, or None and why not."""
    text = log.read_text()
    run_dir = re.search(r"^Run directory: (.+?)(?: \(resumed.*)?$", text, re.M)
    wall = re.search(r"^wall_seconds (\d+)", text, re.M)
    updates = re.search(r"Finished after (\d+) updates", text)
    if not (run_dir and wall and updates):
        return None, "unfinished (no run directory, 'Finished after' or wall_seconds line)"
    checkpoints = Path(run_dir.group(1).strip()) / "checkpoints"
    # Named by their seeds; runs evaluated before that wrote last.online.json (test seeds) and
    # scripts/results.sh renamed the validation-seed one last.validation.json.
    test = first_file(checkpoints, "last.online-test.json", "last.online.json")
    if not test.is_file():
        return None, f"no test-seed evaluation {test}"
    summary = json.loads(test.read_text())
    run = {"run_dir": run_dir.group(1).strip(), "wall_seconds": int(wall.group(1)),
           "updates": int(updates.group(1)), "dataset": summary["dataset"],
           **evaluation(summary)}
    # With --eval-every: the online evaluations during training, on validation seeds.
    curve = [{"updates": int(m["updates"]), "success_rate": float(m["success"])} for m in
             re.finditer(r"^validation at update (?P<updates>\d+): .*eval/success_rate "
                         r"(?P<success>[\d.]+)", text, re.M)]
    if curve:
        run["curve"] = curve
    validation = first_file(checkpoints, "last.online-validation.json", "last.validation.json")
    if validation.is_file():
        summary = json.loads(validation.read_text())
        run["validation"] = {k: v for k, v in evaluation(summary).items() if k != "episode_scores"}
    return run, ""


def dataset_episodes(dataset_id: str) -> dict:
    """The dataset's own episodes: returns, scores and the success fraction (Pusher: the object
    ends within 0.1 of the goal; OGBench single task: the episode reaches a success state)."""
    from builders.ogbench import reaches_success
    dataset = minari_dataset(dataset_id)
    returns, finals, reached = [], [], []
    for episode in dataset.iterate_episodes():
        returns.append(float(np.sum(episode.rewards)))
        finals.append(np.asarray(episode.observations[-1]))
        if (success := reaches_success(episode.infos)) is not None:     # OGBench single task
            reached.append(success)
    out = {"episodes": len(returns), "return_mean": float(np.mean(returns)),
           "episode_scores": scores_of(dataset_id, returns)}
    out["score"] = float(np.mean(out["episode_scores"]))
    env_id = getattr(dataset.env_spec, "id", None) or ""
    if env_id.startswith("Pusher-"):
        from builders.pusher import success_fraction
        out["success_rate"] = success_fraction(np.stack(finals))
    elif reached:
        out["success_rate"] = float(np.mean(reached))
    return out


def sweep_runs(out_dir: Path) -> list[tuple[str, dict]]:
    """(method, run) of every done trial of the sweeps under out_dir (OUT/<name>/trials/*/
    trial.json, as `python main.py sweep scripts/results.yaml --output-dir OUT` writes them):
    the method is the trial's setting."""
    found = []
    for path in sorted(out_dir.glob("*/trials/*/trial.json")):
        trial = json.loads(path.read_text())
        evaluated = trial.get("evaluation")
        if trial["status"] != "done" or not evaluated or evaluated["seeds"] != "test":
            print(f"skipped {path}: {trial['status']}, no test-seed evaluation")
            continue
        summary = {"dataset": trial["dataset"], "seed": evaluated["first_seed"],
                   "returns": evaluated["returns"], "return_mean": evaluated["return_mean"],
                   **({"success_rate": evaluated["success_rate"]}
                      if "success_rate" in evaluated else {})}
        run = {"seed": trial["seed"], "trial": str(path), "run_dir": str(path.parent / "run"),
               "wall_seconds": round(trial["wall_seconds"]), "updates": trial["updates"],
               "dataset": trial["dataset"], **evaluation(summary)}
        curve = [{"updates": v["updates"], "success_rate": v["eval/success_rate"]}
                 for v in trial.get("validations", []) if v.get("eval/success_rate") is not None]
        if curve:
            run["curve"] = curve
        found.append((trial["setting"], run))
    return found


def collect(out_dir: Path) -> dict:
    """Every finished run (from results.sh's logs or a sweep's trials), baseline and dataset
    under out_dir, as results.json holds them."""
    runs: dict[str, dict[str, list]] = {}
    for method, run in sweep_runs(out_dir):
        runs.setdefault(run.pop("dataset"), {}).setdefault(method, []).append(run)
    for log in sorted((out_dir / "logs").glob("*.log")):
        match = LOG_NAME.fullmatch(log.name)
        if not match:
            print(f"skipped {log}: not named <slug>_<method>_seed<S>.log")
            continue
        run, why = read_run(log)
        if run is None:
            print(f"skipped {log}: {why}")
            continue
        run = {"seed": int(match["seed"]), "log": str(log), **run}
        runs.setdefault(run.pop("dataset"), {}).setdefault(match["method"], []).append(run)
    baselines = {}
    for path in sorted((out_dir / "baselines").glob("*_zero.json")):
        summary = json.loads(path.read_text())
        if summary.get("dataset") in runs:
            baselines[summary["dataset"]] = {"file": str(path), **evaluation(summary)}
    datasets = {}
    for dataset_id in sorted(runs):
        datasets[dataset_id] = {
            "score": NORMALISED if has_reference_scores(dataset_id) else RETURN,
            "runs": {m: sorted(runs[dataset_id][m], key=lambda run: run["seed"])
                     for m in sorted(runs[dataset_id], key=method_order)},
            "zero_action": baselines.get(dataset_id),
            "dataset_episodes": dataset_episodes(dataset_id)}
    return {"format": FORMAT, "datasets": datasets}


# --- the table, from that dict alone -----------------------------------------------------------

def method_order(method: str) -> tuple:
    base, _, tag = method.partition("-")
    return (bool(tag), list(METHODS).index(base), tag)


def label(method: str, labels: dict | None = None) -> str:
    """A method's row label: the results file's own `labels` entry, else METHODS; variants
    (meanflow_ql-<tag>) as `MeanFlow-QL, variant <tag>`."""
    base, _, tag = method.partition("-")
    if tag:
        return f"{SHORT[base]}, variant `{tag}`"
    return (labels or {}).get(base, METHODS[base])


def mean_std(values: list) -> str:
    """Mean ± std over seeds (the value alone for a single seed)."""
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{np.mean(values):.1f} ± {np.std(values):.1f}"


def iqm_ci(per_run: list[list[float]]) -> tuple[str, bool]:
    """IQM [95% CI] of a runs x episodes matrix, episodes as strata; one run: its episodes
    resampled. Unequal episode counts are pooled into one stratum (second value True)."""
    if len(per_run) == 1:
        scores, pooled = np.asarray(per_run[0]), False          # 1-D: episodes resampled
    elif len({len(s) for s in per_run}) == 1:
        scores, pooled = np.asarray(per_run), False
    else:
        scores, pooled = np.concatenate(per_run)[:, None], True
    low, high = stratified_bootstrap_ci(scores)
    return f"{iqm(scores):.1f} [{low:.1f}, {high:.1f}]" + (" †" if pooled else ""), pooled


def percent(values: list) -> str:
    return f"{100 * np.mean(values):.0f}%" if values else "—"


def run_figures(runs: list[dict], intervals: bool = True) -> dict:
    """A method's row over its runs; intervals=False leaves the IQM cell empty (50,000 bootstrap
    replicates per cell are the slow part, and the headline shows no interval)."""
    cell, pooled = iqm_ci([r["episode_scores"] for r in runs]) if intervals else ("", False)
    minutes = [r["wall_seconds"] / 60 for r in runs]
    updates = sorted({r["updates"] for r in runs})
    return {"final": float(np.mean([r["score"] for r in runs])), "pooled": pooled, "row": [
        str(len(runs)), mean_std([r["score"] for r in runs]), cell,
        percent([r["success_rate"] for r in runs if "success_rate" in r]),
        f"{np.mean(minutes):.1f} / {max(minutes):.1f}",
        str(updates[0]) if len(updates) == 1 else f"{updates[0]}–{updates[-1]}"]}


def episodes_row(figures: dict, intervals: bool = True) -> list[str]:
    cell, _ = iqm_ci([figures["episode_scores"]]) if intervals else ("", False)
    success = [figures["success_rate"]] if "success_rate" in figures else []
    return ["—", f"{figures['score']:.1f}", cell, percent(success), "—", "—"]


def checks(results: dict) -> list[str]:
    """The check on every dataset: MeanFlow-QL's final score at least MeanFlow BC's."""
    lines = []
    for dataset_id, data in results["datasets"].items():
        ql, bc = data["runs"].get("meanflow_ql"), data["runs"].get("meanflow_bc")
        name = f"- {dataset_id}: MeanFlow-QL final >= MeanFlow BC final ({data['score']})"
        if not (ql and bc):
            lines.append(f"{name}: cannot tell, no {'MeanFlow-QL' if not ql else 'MeanFlow BC'} "
                         f"runs")
            continue
        ql_final = np.mean([r["score"] for r in ql])
        bc_final = np.mean([r["score"] for r in bc])
        verdict = "met" if ql_final >= bc_final else "**MISSED**"
        lines.append(f"{name}: {ql_final:.1f} vs {bc_final:.1f}: {verdict}")
    return lines


def curves(results: dict) -> list[str]:
    """Success rate against updates, from runs that evaluated during training (--eval-every):
    one row per dataset and method, mean over seeds at each evaluation all its seeds reached."""
    rows, points = [], set()
    for dataset_id, data in results["datasets"].items():
        for method, runs in data["runs"].items():
            if not all("curve" in run for run in runs):
                continue
            by_updates = {}
            for run in runs:
                for point in run["curve"]:
                    by_updates.setdefault(point["updates"], []).append(point["success_rate"])
            common = {u: v for u, v in by_updates.items() if len(v) == len(runs)}
            points |= set(common)
            rows.append((dataset_id, method, len(runs), common))
    if not rows:
        return []
    columns = sorted(points)
    lines = ["", "Success rate during training (online evaluations on validation seeds, mean over "
             "seeds; --eval-every):", "",
             "| dataset | method | seeds | " + " | ".join(f"{u:,}" for u in columns) + " |",
             "|---|---|---|" + "---|" * len(columns)]
    for dataset_id, method, seeds, common in rows:
        cells = [f"{100 * np.mean(common[u]):.0f}%" if u in common else "—" for u in columns]
        lines.append(f"| {dataset_id} | {label(method, results.get('labels'))} | {seeds} | "
                     + " | ".join(cells) + " |")
    return lines


HEADER = ["| dataset | score | method | seeds | final score | IQM [95% CI] | success rate | "
          "minutes per run (mean / max) | updates |", "|---|---|---|---|---|---|---|---|---|"]
NOTES = ("Score: the normalised score (minari.get_normalized_score x 100: 0 = the dataset's "
         "ref_min_score, 100 = its ref_max_score) where the dataset stores reference scores, else "
         "the undiscounted return. Final score: mean ± std over training seeds of each run's mean "
         "score over its final checkpoint's test episodes. IQM [95% CI]: interquartile mean of "
         "every (seed, episode) score, with a 95% stratified bootstrap interval resampling seeds "
         "within each episode (stats.py); for the zero-action baseline and the dataset's own "
         "episodes (one set of episodes each) the interval resamples episodes. Success rate: mean "
         "over seeds, where the evaluation measures one (Pusher: object within 0.1 of the goal in "
         "x-y at the episode's end). Minutes: wall clock per training run, two runs sharing the "
         "machine.")


def dataset_rows(dataset_id: str, sources: list[dict],
                 intervals: bool = True) -> tuple[list[list[str]], bool]:
    """One dataset's rows from several results files: measured runs (format 2), then rows
    recorded from earlier tables ("recorded" files), then the baselines of the first file that
    has them."""
    rows, baselines, any_pooled = [], [], False
    for results in sources:
        data = results["datasets"].get(dataset_id)
        if data is None:
            continue
        if results.get("format") == RECORDED:
            rows += [[row["method"], row["seeds"], row["final"], row["iqm_ci"],
                      row["success_rate"], row["minutes"], row["updates"]] for row in data["rows"]]
            continue
        for method, runs in data["runs"].items():
            figures = run_figures(runs, intervals)
            any_pooled |= figures["pooled"]
            rows.append([label(method, results.get("labels")), *figures["row"]])
        if not baselines:
            if data["zero_action"] is not None:
                baselines.append(["zero action (baseline)",
                                  *episodes_row(data["zero_action"], intervals)])
            baselines.append(["the dataset's own episodes",
                              *episodes_row(data["dataset_episodes"], intervals)])
    return rows + baselines, any_pooled


def table(sources: list[dict]) -> tuple[list[str], bool]:
    """The results table of one or several results files (rows of a dataset kept together)."""
    lines, any_pooled = list(HEADER), False
    order = [d for results in sources for d in results["datasets"]]
    for dataset_id in dict.fromkeys(order):
        score = next(r["datasets"][dataset_id]["score"] for r in sources
                     if dataset_id in r["datasets"])
        rows, pooled = dataset_rows(dataset_id, sources)
        any_pooled |= pooled
        lines += [f"| {dataset_id} | {score} | " + " | ".join(row) + " |" for row in rows]
    if any_pooled:
        lines += ["", "† seeds evaluated on different numbers of episodes: all scores pooled "
                  "into one stratum."]
    return lines, any_pooled


def render(results: dict, checks_too: bool = True) -> str:
    """results.md: the table, what its columns mean, success against updates, the checks."""
    lines, _ = table([results])
    lines += ["", NOTES]
    lines += curves(results)
    if checks_too:
        lines += ["", "Checks (MeanFlow-QL's final score at least MeanFlow BC's):", "",
                  *checks(results)]
    return "\n".join(lines) + "\n"


# --- headline and learning-curve tables, and the generated blocks of the docs --------------------

HEADLINE_COLUMNS = ("MeanFlow-QL (", "MeanFlow BC (", "zero action (baseline)",
                    "the dataset's own episodes")


def headline(sources: list[dict]) -> list[str]:
    """One row per dataset: the final score (the success rate where the score is a return and
    success is measured) of MeanFlow-QL's defaults, MeanFlow BC, the zero action and the data."""
    lines = ["| dataset | figure | MeanFlow-QL | MeanFlow BC | zero action | the dataset's "
             "episodes |", "|---|---|---|---|---|---|"]
    order = [d for results in sources for d in results["datasets"]]
    for dataset_id in dict.fromkeys(order):
        rows, _ = dataset_rows(dataset_id, sources, intervals=False)
        # Each column's first row whose label starts with the column's prefix: a method's
        # label is its short name and its settings in brackets, whatever file it came from.
        first = {prefix: next((row for row in rows if row[0].startswith(prefix)), None)
                 for prefix in HEADLINE_COLUMNS}
        score = next(r["datasets"][dataset_id]["score"] for r in sources
                     if dataset_id in r["datasets"])
        success = score == RETURN and first[HEADLINE_COLUMNS[0]][4] != "—"
        column, figure = (4, "success rate") if success else (2, score)
        cells = [row[column].split(" ±")[0] if row else "—" for row in first.values()]
        lines.append(f"| {dataset_id} | {figure} | " + " | ".join(cells) + " |")
    return lines


def curve_table(curve: dict) -> list[str]:
    """A learning-curve file as a table: one row per method and seed (no seed column when every
    method has one seed), one column per point, and the methods' notes where they have them."""
    points = sorted({int(u) for m in curve["methods"] for s in m["seeds"].values() for u in s})
    seeded = any(len(m["seeds"]) > 1 for m in curve["methods"])
    notes = any("note" in m for m in curve["methods"])
    header = [curve.get("method_header", "method")] + (["seed"] if seeded else []) + [f"{u / 1000:g}k" for u in points] + (
        [curve.get("note_header", "notes")] if notes else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method in curve["methods"]:
        for seed, values in method["seeds"].items():
            cells = [method["label"]] + ([seed] if seeded else []) + [
                f"{100 * values[str(u)]:.0f}%" if str(u) in values else "—" for u in points] + (
                [method.get("note", "")] if notes else [])
            lines.append("| " + " | ".join(cells) + " |")
    return lines


BLOCK = re.compile(r"(<!-- generated: (?P<kind>table|headline|curve) (?P<files>[^>]+?) -->\n)"
                   r"(?P<body>.*?)(<!-- end generated -->)", re.S)


def fill_blocks(text: str, root: Path) -> str:
    """The text with every generated block redrawn from the results files it names:

        <!-- generated: table results/results.json [more files] -->
        ...
        <!-- end generated -->

    kinds: table (the full table), headline (one row per dataset), curve (a learning curve)."""
    def redraw(match: re.Match) -> str:
        sources = [json.loads((root / name).read_text()) for name in match["files"].split()]
        if match["kind"] == "curve":
            lines = curve_table(sources[0])
        elif match["kind"] == "headline":
            lines = headline(sources)
        else:
            lines, _ = table(sources)
        return match.group(1) + "\n".join(lines) + "\n" + match.group(5)
    return BLOCK.sub(redraw, text)


def fill_docs(root: Path) -> list[Path]:
    """Redraw the generated blocks of README.md and docs/*.md in place; the files changed."""
    changed = []
    for path in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        text = path.read_text()
        if (new := fill_blocks(text, root)) != text:
            path.write_text(new)
            changed.append(path)
    return changed


def saved_labels(path: Path) -> dict | None:
    """The "labels" of an earlier results.json at `path`; None when there is none or the file
    cannot be read as one (it is then rewritten from the runs, with a warning)."""
    if not path.is_file():
        return None
    try:
        labels = json.loads(path.read_text()).get("labels")
    except (ValueError, AttributeError):
        print(f"warning: {path} is not a results file; it is rewritten from the runs")
        return None
    return labels if isinstance(labels, dict) else None


def main(out: str = "results") -> int:
    out_dir = Path(out)
    has_runs = (out_dir / "logs").is_dir() or any(out_dir.glob("*/trials/*/trial.json"))
    results = collect(out_dir) if has_runs else {"datasets": {}}
    saved = out_dir / "results.json"
    if not results["datasets"]:
        if not saved.is_file():
            print(f"No finished runs in {out_dir / 'logs'} nor a {saved}.")
            return 1
        results = json.loads(saved.read_text())
        if results.get("format") != FORMAT:
            print(f"{saved} was written by an earlier version of this script (another layout); "
                  f"rerun scripts/results.sh to rebuild it.")
            return 1
        print(f"No finished runs in {out_dir / 'logs'}: rebuilding the table from {saved}")
    else:
        # The labels a results file was given by hand outlive a fresh collection of its runs.
        if labels := saved_labels(saved):
            results["labels"] = labels
            print(f"Kept the method labels of {saved}: {labels}")
        saved.write_text(json.dumps(results, indent=2) + "\n")
    table = render(results)
    (out_dir / "results.md").write_text(table)
    print(table, end="")
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--docs"]:
        ROOT = Path(__file__).resolve().parent.parent
        print("\n".join(f"redrew {p.relative_to(ROOT)}" for p in fill_docs(ROOT)) or "up to date")
        sys.exit(0)
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "results"))
