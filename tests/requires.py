"""Test dependencies that must be present in CI: ``require`` instead of
``pytest.importorskip``.

Locally a missing optional test dependency (the official ``segment_anything`` /
``mobile_sam`` oracles, ``cv2``, ``timm``, napari, ``distributed``, pytest-qt) skips the
tests that need it. In CI (environment variable ``CI`` set, as GitHub Actions and most CI
services do) it fails them instead, and :func:`fail_on_skips` (called from
``tests/conftest.py``) fails the session when anything at all was skipped: a green CI
run means that the oracle and GUI tests ran.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Any

import pytest


def in_ci() -> bool:
    """True when the environment variable ``CI`` is set (and not ``0`` / ``false``)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require(module: str, reason: str | None = None) -> ModuleType:
    """Import ``module`` for a test: skip when it is missing, but fail under CI."""
    if not in_ci():
        return pytest.importorskip(module, reason=reason)
    try:
        return importlib.import_module(module)
    except ImportError as err:
        why = f" ({reason})" if reason else ""
        pytest.fail(
            f"CI: the test dependency {module!r} is missing{why}: {err}. Install the "
            "'testing' extra (pip install -e .[testing]); in CI nothing may be skipped.",
            pytrace=False,
        )


def fail_on_skips(session: Any) -> None:
    """``pytest_sessionfinish`` body: under CI, a session with skipped tests fails."""
    if not in_ci():
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if not skipped:
        return
    lines = [f"CI: {len(skipped)} test(s) skipped; in CI nothing may be skipped:"]
    for rep in skipped[:20]:
        where = rep.nodeid or (rep.fspath if hasattr(rep, "fspath") else "?")
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else rep.longrepr
        lines.append(f"  {where}: {reason}")
    if reporter is not None:
        reporter.write_line("")
        for line in lines:
            reporter.write_line(line, red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
