"""Progress of long work, shared by every generator in napari-sam (precompute, automatic
masks, propagation): the widget wraps them in napari workers, the CLI in tqdm."""

from __future__ import annotations

from collections.abc import Generator
from typing import NamedTuple, TypeVar

T = TypeVar("T")


class Progress(NamedTuple):
    """``done`` of ``total`` work units (slices, point batches, ...), and what is going on."""

    done: int
    total: int
    message: str = ""


def run_to_end(gen: Generator[Progress, None, T]) -> T:
    """Exhaust a progress generator and return its return value."""
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value
