"""The layering of docs/ARCHITECTURE.md and the lint, checked on every ``make test``.

``lint-imports`` checks the contracts in ``pyproject.toml`` (layers, no cycles, no torch in the
core or the suite schema); ``ruff`` checks style and import order. Each test also proves its
checker can fail, on a small package built for the purpose, so a broken configuration cannot
pass silently.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _tool(name: str) -> str:
    path = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[dev]')")
    return path


def test_import_contracts_hold():
    r = subprocess.run([_tool("lint-imports"), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "BROKEN" not in r.stdout and "KEPT" in r.stdout


def test_import_linter_flags_a_layer_violation(tmp_path):
    pkg = tmp_path / "layered"
    for sub in ("top", "bottom"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "bottom" / "mod.py").write_text("import layered.top\n")  # upward: must be caught
    (tmp_path / ".importlinter").write_text(
        "[importlinter]\nroot_package = layered\n\n[importlinter:contract:1]\nname = layers\n"
        "type = layers\nlayers =\n    layered.top\n    layered.bottom\n")
    r = subprocess.run([_tool("lint-imports"), "--no-cache"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=120, env={"PYTHONPATH": str(tmp_path), "PATH": str(Path(sys.executable).parent)})
    assert r.returncode != 0 and "layered.bottom.mod -> layered.top" in r.stdout


def test_ruff_is_clean():
    r = subprocess.run([_tool("ruff"), "check", "qdqbench", "tests", "benchmarks"], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:]


def test_ruff_flags_unsorted_imports(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import sys\nimport os\n\nprint(os, sys)\n")
    r = subprocess.run([_tool("ruff"), "check", "--config", str(REPO / "pyproject.toml"), str(bad)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "I001" in r.stdout
