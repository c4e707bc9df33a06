"""The layout's promise: every module imports alone, and imports point one way."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Each module may import only the project modules listed for it (the README's Layout section).
ALLOWED = {
    "config": set(),
    "dataset": {"config"},
    "meanflow_ql": {"config", "dataset"},
    "policy": {"config", "dataset", "meanflow_ql"},
    "logs": {"config"},
    "checkpoints": {"config"},
    "stats": set(),
    # Run bookkeeping: resuming reads a checkpoint's settings through policy (a lazy import).
    "runs": {"config", "policy"},
    "eval_online": {"config", "dataset", "meanflow_ql", "policy", "logs", "builders", "runs"},
    "builders": {"builders"},
    "collect": {"config", "builders"},
    "main": {"config", "dataset", "meanflow_ql", "policy", "eval_online", "collect", "logs",
             "builders", "checkpoints", "runs", "sweep"},
    # Beside main, not under it: a trial runs main.py's command line as a script (runpy).
    "sweep": {"config", "dataset", "collect", "logs", "eval_online", "runs", "stats", "sweep"},
}


def project_imports(path: Path) -> set[str]:
    """Top-level project modules a file imports (anywhere in it, lazy imports included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names & (set(ALLOWED) | {"main"})


@pytest.mark.parametrize("module", sorted(ALLOWED))
def test_imports_point_one_way(module):
    files = [ROOT / f"{module}.py"] if (ROOT / f"{module}.py").exists() \
        else sorted((ROOT / module).glob("*.py"))
    for path in files:
        assert project_imports(path) <= ALLOWED[module], (path.name, project_imports(path))


@pytest.mark.parametrize("module", sorted(ALLOWED) + ["builders.pusher", "builders.pendulum"])
def test_each_module_imports_alone_without_main(module):
    code = f"import sys, {module}; assert 'main' not in sys.modules or '{module}' == 'main'"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr
