"""Project-level checks that run in the suite: ruff lint and the layer contracts."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str) -> str:
    exe = Path(sys.executable).with_name(name)
    found = str(exe) if exe.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed (pip install -e '.[testing]')")
    return found


def test_ruff_lint_clean():
    r = subprocess.run(
        [_tool("ruff"), "check", "src", "tests", "benchmarks"],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_import_layers_hold():
    """model < engine < store/training < cli/_napari; napari/Qt only in _napari;
    the official packages only in tests (contracts in pyproject.toml)."""
    r = subprocess.run(
        [_tool("lint-imports"), "--config", "pyproject.toml"],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "broken" not in r.stdout.split("Contracts:")[-1].lower() or "0 broken" in r.stdout


def test_import_napari_sam_is_light():
    """Importing the package (napari's plugin discovery does) must not import torch."""
    code = "import sys, napari_sam; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_source_files_stay_small():
    big = [
        (p.relative_to(ROOT), n)
        for p in (ROOT / "src").rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 450
    ]
    assert not big, f"split these modules: {big}"
