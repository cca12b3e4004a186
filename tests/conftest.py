"""Shared fixtures: tiny random SAM models that run in milliseconds on a CPU."""

from __future__ import annotations

import pytest
import torch

# Importing torch._dynamo (which meta-device construction in some tests does) loads
# triton's bundled LLVM; loaded after Qt/Mesa's llvmpipe it segfaults. Load it first.
import torch._dynamo

from napari_sam.engine.loader import SamModel
from napari_sam.model.build import SamConfig

from requires import fail_on_skips
from tiny import TINY, make_tiny


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under CI (``$CI`` set) any skipped test fails the run (tests/requires.py)."""
    fail_on_skips(session)


@pytest.fixture
def tiny_config() -> SamConfig:
    return TINY


@pytest.fixture
def tiny_model() -> SamModel:
    """A tiny random-weight SAM (64² input, 8×8 token grid), fp32 on CPU."""
    return make_tiny(0)


@pytest.fixture
def tiny_checkpoint(tmp_path, tiny_model):
    """The tiny model saved in napari-sam's checkpoint format (config + state dict)."""
    path = tmp_path / "tiny.pt"
    torch.save({"config": TINY.to_dict(), "model": tiny_model.sam.state_dict()}, path)
    return path


@pytest.fixture
def force_cpu_class(monkeypatch):
    """force_cpu_class(name): this process believes its CPU is of class ``name``
    (``NAPARI_SAM_CPU_CLASS``; the detection cache is cleared before and after)."""
    from napari_sam.engine import cpu

    def force(name: str) -> None:
        monkeypatch.setenv(cpu.OVERRIDE_ENV, name)
        cpu.cpu_info.cache_clear()

    yield force
    monkeypatch.delenv(cpu.OVERRIDE_ENV, raising=False)
    cpu.cpu_info.cache_clear()
