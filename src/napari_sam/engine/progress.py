"""Progress of long work, shared by every generator in napari-sam (precompute, automatic
masks, propagation, replay): the widget runs them in its workers (a job row per job),
the command line under one tqdm bar (``napari_sam.cli.progress.drive``). The only place
:class:`Progress` is defined."""

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


def whole_steps(gen: Generator[Progress, None, T]) -> Generator[Progress, None, T]:
    """Re-yield a Progress generator only when ``done`` grows, one Progress per unit
    (a progress bar advances one step per yield); returns its value; closing closes
    ``gen``."""
    last = 0
    try:
        while True:
            p = next(gen)
            for d in range(last + 1, p.done + 1):
                yield Progress(d, p.total, p.message)
            last = max(last, p.done)
    except StopIteration as stop:
        return stop.value
    finally:
        gen.close()


def within_step(
    gen: Generator[Progress, None, T], done: int, total: int, label: str
) -> Generator[Progress, None, T]:
    """Run ``gen`` as step ``done + 1`` of ``total`` of an outer job: each of its
    Progress is re-yielded as ``Progress(done, total, f"{label}: {message}")``; returns
    its value; closing closes ``gen``."""
    try:
        while True:
            p = next(gen)
            yield Progress(done, total, f"{label}: {p.message}")
    except StopIteration as stop:
        return stop.value
    finally:
        gen.close()
