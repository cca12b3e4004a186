"""The one progress bar of the command line: every long command (``embed``, ``amg``,
``propagate``, ``replay``, ``train``) runs its generator of
:class:`~napari_sam.engine.progress.Progress` (done, total, message) through
:func:`drive`, which shows a tqdm bar on stderr and closes the generator on every exit
(an error, Ctrl-C: the work stops cleanly, what was written stays complete)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Generator
from typing import Any


def drive(
    steps: Generator[Any, None, Any],
    desc: str,
    unit: str,
    *,
    quiet: bool = False,
    on_step: Callable[[Any, Any], None] | None = None,
    **bar_options: Any,
) -> Any:
    """Run ``steps`` to the end under a tqdm bar (none when ``quiet``); returns the
    generator's return value. Each step is a (done, total, ...) tuple; ``on_step(step,
    bar)`` runs after the bar moved (e.g. metrics as the bar's postfix)."""
    from tqdm import tqdm

    bar = tqdm(unit=unit, file=sys.stderr, disable=quiet, desc=desc, **bar_options)
    try:
        while True:
            step = next(steps)
            done, total = step[0], step[1]
            if bar.total != total:
                bar.total = total
            bar.update(done - bar.n)
            if on_step is not None:
                on_step(step, bar)
    except StopIteration as stop:
        return stop.value
    finally:
        steps.close()
        bar.close()
