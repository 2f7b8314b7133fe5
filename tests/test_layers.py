"""The layering of docs/architecture.md holds: `lint-imports` keeps the [tool.importlinter] contracts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).parent / "lint-imports"


def lint(source_root: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports with the project's contracts, on the `tunelab` package found under `source_root`."""
    env = {**os.environ, "PYTHONPATH": str(source_root)}
    return subprocess.run([str(LINT), "--config", str(ROOT / "pyproject.toml"), "--no-cache"], cwd=source_root,
                          env=env, capture_output=True, text=True, timeout=300)


def test_imports_keep_the_layers_and_have_no_cycles() -> None:
    result = lint(ROOT / "src")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "2 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(("module", "line", "broken"), [
    # an upward import: the config layer reaching into the engine
    ("config/__init__.py", "import tunelab.engine.loop", "tunelab is layered"),
    # a cycle inside one package: workspace/verify.py importing registry.py, which imports verify.py
    ("workspace/verify.py", "import tunelab.workspace.registry", "no import cycles"),
])
def test_an_upward_import_or_a_cycle_breaks_the_build(tmp_path: Path, module: str, line: str, broken: str) -> None:
    copy = tmp_path / "src" / "tunelab"
    shutil.copytree(ROOT / "src" / "tunelab", copy, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    target = copy / module
    target.write_text(target.read_text() + f"\n{line}  # added by the test\n")
    result = lint(tmp_path / "src")
    assert result.returncode == 1, result.stdout[-3000:]
    assert f"{broken}" in result.stdout.split("Broken contracts")[-1]
