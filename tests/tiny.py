"""The tiny random-weight SAM used by unit tests (64² input, 8×8 token grid):
milliseconds per slice on a CPU."""

from __future__ import annotations

import torch

from napari_sam.engine.loader import SamModel, wrap_model
from napari_sam.model.build import TINY_CONFIG, build_sam

TINY = TINY_CONFIG  # defined once, in napari_sam.model.build


def make_tiny(seed: int = 0, precision: str = "fp32") -> SamModel:
    """A fresh tiny model with seeded random weights on the CPU."""
    torch.manual_seed(seed)
    return wrap_model(build_sam(TINY), TINY, "tiny", "cpu", precision)
