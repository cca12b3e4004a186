"""Automatic mask generation ("segment everything"): the 2D generator (:mod:`.generator`),
its per-mask steps in napari order (:mod:`.masks`), results and records
(:mod:`.result`), and volumes linked in z (:mod:`.volume`)."""

from __future__ import annotations

from .generator import AutomaticMaskGenerator
from .masks import CompactMask
from .result import AmgResult, ObjectRecord
from .volume import (
    DEFAULT_LINK_IOU,
    DEMO_MIN_SLICES,
    DEMO_PARAMS,
    PANEL_PARAMS,
    VolumeAmg,
    amg_volume,
    drop_short,
    link_pair,
    link_slices,
)

__all__ = [
    "DEFAULT_LINK_IOU",
    "DEMO_MIN_SLICES",
    "DEMO_PARAMS",
    "PANEL_PARAMS",
    "AmgResult",
    "AutomaticMaskGenerator",
    "CompactMask",
    "ObjectRecord",
    "VolumeAmg",
    "amg_volume",
    "drop_short",
    "link_pair",
    "link_slices",
]
