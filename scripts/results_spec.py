"""The sweep spec scripts/results.sh runs: scripts/results.yaml, with its environment variables
applied (the interface results.sh had before it ran on `sweep`).

    python scripts/results_spec.py OUT         # writes OUT/specs/<name>.yaml, prints its path

SEEDS="0 1", DATASETS="id id", METHODS="meanflow_ql meanflow_bc", EPISODES=20, TAG (methods
become meanflow_ql-TAG), EXTRA (train flags for every method, e.g. "--num-updates 20000"),
VALIDATION_ONLY=1 (evaluate on the validation seeds instead of the test seeds). The sweep is
named `table` when nothing is changed, else `table-<hash of the spec>`, so the same call resumes
the same sweep and another call (another subset of datasets, say) adds a sweep beside it in OUT,
all of which scripts/results_table.py reads.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))      # run as a script: main.py lies in the repository's root
BASE = ROOT / "scripts" / "results.yaml"


def extra_settings(extra: str) -> dict:
    """Training settings from `train` flags, parsed by main.py's own parser."""
    import main

    args = main.build_parser().parse_args(["train", *shlex.split(extra)])
    return main.typed_settings(args)


def spec_from_environment(env: dict) -> dict:
    spec = yaml.safe_load(BASE.read_text())
    changed = False
    if env.get("SEEDS"):
        spec["seeds"], changed = [int(s) for s in env["SEEDS"].split()], True
    if env.get("DATASETS"):
        spec["datasets"], changed = env["DATASETS"].split(), True
    if env.get("EPISODES"):
        spec["evaluate"]["episodes"], changed = int(env["EPISODES"]), True
    if env.get("VALIDATION_ONLY"):
        spec["evaluate"]["seeds"], changed = "validation", True
    methods = env.get("METHODS", "").split() or list(spec["settings"])
    extra = extra_settings(env["EXTRA"]) if env.get("EXTRA") else {}
    tag = env.get("TAG", "")
    settings = {f"{m}-{tag}" if tag else m: {**spec["settings"][m], **extra} for m in methods}
    if settings != spec["settings"]:
        spec["settings"], changed = settings, True
    if changed:
        digest = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:8]
        spec["name"] = f"{spec['name']}-{digest}"
    return spec


def main(out: str) -> int:
    spec = spec_from_environment(dict(os.environ))
    path = Path(out) / "specs" / f"{spec['name']}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "results"))
