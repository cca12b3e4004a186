"""Propagation of objects through a volume (:mod:`.propagator`), prompting each slice
from the previous slice's mask (:mod:`.prompts`)."""

from __future__ import annotations

from .prompts import MODES
from .propagator import ALL_OBJECTS, DEFAULT_MODE, Propagator, Stop, propagate

__all__ = ["ALL_OBJECTS", "DEFAULT_MODE", "MODES", "Propagator", "Stop", "propagate"]
