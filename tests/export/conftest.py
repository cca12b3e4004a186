"""Shared data of the export tests."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam.export import Calibration

from export_data import SCALE, TRANSLATE


@pytest.fixture
def labels3d() -> np.ndarray:
    """(6, 40, 52) uint32 label volume: four boxes (one with an id above 2**31)."""
    lab = np.zeros((6, 40, 52), np.uint32)
    lab[1:4, 5:20, 6:30] = 1
    lab[0:6, 22:38, 30:50] = 2
    lab[2, 0:3, 0:3] = 17
    lab[4:6, 1:12, 35:51] = 3_000_000_000
    return lab


@pytest.fixture
def cal3d() -> Calibration:
    return Calibration.create(3, SCALE, TRANSLATE, ["micrometer"] * 3)
