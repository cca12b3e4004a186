"""tests/requires.py: under CI a missing test dependency or any skipped test fails the run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CONFTEST = """
from requires import fail_on_skips

def pytest_sessionfinish(session, exitstatus):
    fail_on_skips(session)
"""

SKIPPING = """
import pytest

def test_runs():
    pass

@pytest.mark.skip(reason="not here")
def test_skipped():
    pass
"""

REQUIRING = """
from requires import require

def test_needs_a_missing_oracle():
    require("napari_sam_no_such_module")
"""


def _pytest(tmp_path: Path, ci: str | None, name: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # no napari / Qt plugins: a plain run
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path / name)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )


def _project(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_skipping.py").write_text(SKIPPING)
    (tmp_path / "test_requiring.py").write_text(REQUIRING)


def test_skips_are_fine_locally_and_fail_the_run_in_ci(tmp_path):
    _project(tmp_path)
    local = _pytest(tmp_path, None, "test_skipping.py")
    assert local.returncode == 0 and "1 passed, 1 skipped" in local.stdout, local.stdout
    ci = _pytest(tmp_path, "true", "test_skipping.py")
    assert ci.returncode == 1, ci.stdout
    assert "1 test(s) skipped; in CI nothing may be skipped" in ci.stdout
    assert "test_skipping.py::test_skipped: Skipped: not here" in ci.stdout
    off = _pytest(tmp_path, "false", "test_skipping.py")
    assert off.returncode == 0, off.stdout


def test_missing_dependency_skips_locally_and_fails_in_ci(tmp_path):
    _project(tmp_path)
    local = _pytest(tmp_path, None, "test_requiring.py")
    assert local.returncode == 0 and "1 skipped" in local.stdout, local.stdout
    ci = _pytest(tmp_path, "1", "test_requiring.py")
    assert ci.returncode == 1 and "1 failed" in ci.stdout, ci.stdout
    assert "CI: the test dependency 'napari_sam_no_such_module' is missing" in ci.stdout
