"""docs/usage.md's "Python API" block, run as written against a checkpoint trained here."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PLACEHOLDER = '"runs/<run>/checkpoints/last.ckpt"'


def usage_api_block() -> str:
    """The fenced python block right under docs/usage.md's "## Python API" heading."""
    usage = (ROOT / "docs" / "usage.md").read_text()
    match = re.search(r"^## Python API\n+```python\n(.*?)^```", usage, re.MULTILINE | re.DOTALL)
    assert match, "docs/usage.md has no ```python block under ## Python API"
    return match.group(1)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    base = tmp_path_factory.mktemp("api")
    env = {**os.environ, "MINARI_DATASETS_PATH": str(base / "minari"),
           "MEANFLOW_QL_COLLECT_EPISODES": "8", "MEANFLOW_QL_REF_EPISODES": "2"}
    result = subprocess.run([sys.executable, str(ROOT / "main.py"), "train", "--max-updates", "5",
                             "--val-every-updates", "5", "--batch-size", "16",
                             "--actor-hidden-dim", "16", "--critic-hidden-dim", "16",
                             "--skip-online-eval"], cwd=base, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return next((base / "runs").glob("*/checkpoints/last.ckpt")), env


def test_usage_python_api_runs(checkpoint, monkeypatch, capsys):
    path, env = checkpoint
    monkeypatch.setenv("MINARI_DATASETS_PATH", env["MINARI_DATASETS_PATH"])
    block = usage_api_block()
    assert block.count(PLACEHOLDER) == 1 and len(block.splitlines()) <= 12
    namespace = {}
    exec(compile(block.replace(PLACEHOLDER, repr(str(path))), "docs/usage.md", "exec"), namespace)
    summary, policy = namespace["summary"], namespace["policy"]
    assert summary["episodes"] == 5 and len(summary["returns"]) == 5
    assert -200 < summary["return_mean"] < 0 and summary["checkpoint"] == str(path)
    assert namespace["reward"] < 0 and namespace["obs"].shape == (23,)
    assert policy.model.cfg.max_updates == 5                  # the checkpoint trained here
    printed = capsys.readouterr().out
    assert f"{summary['return_mean']} {summary['normalized_score_mean']}" in printed
    assert path.with_name("last.online-test.json").is_file()
