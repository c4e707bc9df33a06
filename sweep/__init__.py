"""Sweeps: datasets x settings x seeds as Ray tasks, resumable, with one results table.

    python main.py sweep SPEC.yaml [--address ADDR] [--dry-run] [--report]

- `spec`: the SPEC file, checked with `--config`'s validation; the trials it names.
- `trials`: the fixed layout on disk and each trial's `trial.json`.
- `engine`: the Ray driver and the Ray task that runs one trial attempt.
- `child`: the process one attempt runs in: `main.py train`, then the online evaluation.
- `report`: results.md, results.json and curves.png from the trials' `trial.json`.
- `cli`: the command line.

docs/sweeps.md is the user's guide.
"""
