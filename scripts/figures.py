"""Draw every learning curve under results/ as a PNG under docs/figures/, one command:

    python scripts/figures.py

A learning-curve file is a results/**/results.json with "format": "curve": per method, per
training seed, the success rate at each update count. The figure has one line per method (the
mean over the seeds measured at that point, each seed's points faint beside it); reference
methods (another codebase's figures measured on this machine) are drawn as crosses without a
line. results/curves/<name>/results.json becomes docs/figures/<name>.png.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")           # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def curve_files(root: Path = ROOT) -> list[Path]:
    """The learning-curve files under root/results, sorted."""
    return sorted(p for p in (root / "results").glob("**/results.json")
                  if json.loads(p.read_text()).get("format") == "curve")


def mean_line(seeds: dict) -> tuple[list[int], list[float]]:
    """Update counts and the mean success (%) over the seeds measured there."""
    points = sorted({int(u) for values in seeds.values() for u in values})
    means = [100 * np.mean([v[str(u)] for v in seeds.values() if str(u) in v]) for u in points]
    return points, means


def seed_count(seeds: dict) -> str:
    """How many seeds the line averages: "2 seeds", or "1-2 seeds per point" where some points
    have fewer seeds than others (a seed whose curve stopped early)."""
    points = {u for values in seeds.values() for u in values}
    counts = {sum(u in values for values in seeds.values()) for u in points} or {len(seeds)}
    low, high = min(counts), max(counts)
    if low != high:
        return f"{low}-{high} seeds per point"
    return f"{high} seed{'s' if high > 1 else ''}"


def draw(curve: dict, path: Path) -> None:
    """One figure: success rate (%) against updates, a line per method."""
    # Many lines, or long labels: the legend goes below the axes, where it hides no line.
    many = len(curve["methods"]) > 6
    below = many or max(len(m["label"]) for m in curve["methods"]) > 60
    fig, ax = plt.subplots(figsize=(9, 8) if many else (9, 6) if below else (7, 4), dpi=120)
    if many:
        ax.set_prop_cycle(color=plt.get_cmap("tab20").colors)
    for i, method in enumerate(curve["methods"]):
        colour = plt.get_cmap("tab20")(i % 20) if many else f"C{i}"
        x, y = mean_line(method["seeds"])
        name = f"{method['label'].replace('`', '')} ({seed_count(method['seeds'])})"
        if many:
            name = method["label"].replace("`", "")
        if method.get("reference"):
            ax.plot(x, y, "x", color="black", markersize=9, mew=2, label=name)
            continue
        ax.plot(x, y, "-o" if len(x) > 1 else "s", color=colour, label=name, markersize=4)
        for values in method["seeds"].values():
            ax.plot([int(u) for u in values], [100 * v for v in values.values()], ".",
                    color=colour, alpha=0.35)
    ax.set_xlabel("updates")
    ax.set_ylabel("success rate (%)")
    ax.set_ylim(-3, 103)
    ax.set_title(curve["title"], fontsize=10)
    ax.grid(alpha=0.3)
    if below:
        ax.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=1)
    else:
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    # No timestamp in the PNG's metadata, so an unchanged curve redraws to the same file.
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


def main(root: Path = ROOT) -> int:
    files = curve_files(root)
    if not files:
        print(f"no learning-curve files (format 'curve') under {root / 'results'}")
        return 1
    for source in files:
        target = root / "docs" / "figures" / f"{source.parent.name}.png"
        draw(json.loads(source.read_text()), target)
        print(f"{source.relative_to(root)} -> {target.relative_to(root)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
