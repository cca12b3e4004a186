"""The widget's own napari workers: start, drop stale results, cancel, wait on close.

Every worker is started through :meth:`WorkerOwner.start`, which tags it with the
owner's *generation*. The generation changes whenever the widget's session stops being
valid (another image, channel axis or model; the widget closes): the callbacks of older
workers are then dropped (never a preview, label write or status from a previous
image), and generator workers are asked to quit. Closing waits — a bounded time — only
for this owner's workers, never for other plugins' (napari's
``WorkerBase.await_workers`` would quit every worker of the process).

The workers run in the owner's own thread pool, at a lower CPU priority than the GUI
thread (Linux: ``nice`` +:data:`WORKER_NICE` for those threads and the torch threads
they start): on a machine with few cores the encoder's threads otherwise take the
cores from the event loop and the canvas drawing (measured in
``benchmarks/gui_latency.py``, docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import inspect
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from napari.qt.threading import create_worker
from qtpy.QtCore import Qt, QThread, QThreadPool

WORKER_NICE = 10  # Linux: worker threads' nice value (0 = the GUI thread's)
MIN_THREADS = 4  # so previews are not queued behind two long jobs


def lower_thread_priority() -> None:
    """Linux: raise this thread's nice value to WORKER_NICE (threads it starts, e.g.
    torch's OpenMP team, inherit it). Elsewhere, or when not permitted: nothing."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        tid = threading.get_native_id()
        if os.getpriority(os.PRIO_PROCESS, tid) < WORKER_NICE:
            os.setpriority(os.PRIO_PROCESS, tid, WORKER_NICE)


def _at_low_priority(fn: Callable) -> Callable:
    """``fn`` (function or generator function) that first lowers its thread's priority
    (a generator's body runs in the worker thread, from its first step)."""
    if inspect.isgeneratorfunction(fn):

        def gen(*args: Any, **kwargs: Any):
            lower_thread_priority()
            return (yield from fn(*args, **kwargs))

        return gen

    def call(*args: Any, **kwargs: Any):
        lower_thread_priority()
        return fn(*args, **kwargs)

    return call


@dataclass
class _Entry:
    generation: int
    stopped: threading.Event = field(default_factory=threading.Event)


class WorkerOwner:
    """Workers of one widget. ``on_error(exc)`` receives the errors of current workers.

    The owner holds no reference to the widget's Qt object: callbacks are checked
    against :attr:`alive` and the generation first, so a result that arrives after the
    widget was closed (or deleted by Qt) is dropped without touching it.
    """

    def __init__(self, on_error: Callable[[Exception], None]) -> None:
        self.generation = 0
        self.alive = True
        self._on_error = on_error
        self._workers: dict[Any, _Entry] = {}
        self.pool = QThreadPool()
        self.pool.setMaxThreadCount(max(MIN_THREADS, QThread.idealThreadCount()))

    def current(self, generation: int) -> bool:
        """True when a worker of ``generation`` may still act on the widget."""
        return self.alive and generation == self.generation

    @property
    def running(self) -> list:
        """This owner's workers that have not finished yet."""
        return [w for w, e in self._workers.items() if not e.stopped.is_set()]

    def start(
        self,
        fn: Callable,
        *args: Any,
        on_result: Callable[[Any], None] | None = None,
        on_yield: Callable[[Any], None] | None = None,
        on_abort: Callable[[], None] | None = None,
        on_error: Callable[[Exception], None] | None = None,
        done: Callable[[], None] | None = None,
        progress: dict | None = None,
        guard: bool = True,
        **kwargs: Any,
    ):
        """Run ``fn(*args, **kwargs)`` (a function or a generator function) in a napari
        worker. on_result / on_yield / on_abort / on_error run only while the worker's
        generation is current; ``done`` runs when it finishes, unless the widget is gone
        (it resets buttons: it must not depend on the session). progress: napari
        progress-bar options. guard=False: the callbacks run in any generation (not
        after the widget closed)."""
        gen = self.generation
        entry = _Entry(gen)

        def guarded(cb: Callable | None) -> Callable | None:
            if cb is None:
                return None

            def call(*a: Any) -> None:
                if self.current(gen) or (self.alive and not guard):
                    cb(*a)

            return call

        worker = create_worker(
            _at_low_priority(fn),
            *args,
            **kwargs,
            _progress=progress,
            _start_thread=False,
            _ignore_errors=True,  # errors go to our own handler (connected below)
        )
        # set in the worker thread itself, so closing can wait without an event loop
        worker.finished.connect(entry.stopped.set, Qt.ConnectionType.DirectConnection)
        for signal, cb in (
            (worker.returned, guarded(on_result)),
            (getattr(worker, "yielded", None), guarded(on_yield)),
            (getattr(worker, "aborted", None), guarded(on_abort)),
            (worker.errored, guarded(on_error or self._on_error)),
        ):
            if signal is not None and cb is not None:
                signal.connect(cb)

        def finished() -> None:
            self._workers.pop(worker, None)
            if self.alive and done is not None:
                done()

        worker.finished.connect(finished)
        self._workers[worker] = entry
        self.pool.start(worker)  # our own pool (napari's worker.start uses the global one)
        return worker

    def invalidate(self) -> None:
        """A new generation: results of the running workers are dropped from now on and
        generator workers stop at their next step."""
        self.generation += 1
        for worker in list(self._workers):
            worker.quit()
            # napari relays every worker error to its notifications: not for dropped ones
            with contextlib.suppress(TypeError, RuntimeError, AttributeError):
                worker.errored.disconnect(worker._relay_error)

    def shutdown(self, timeout_s: float) -> list:
        """Drop every result, ask every worker to quit and wait up to ``timeout_s`` for
        them (a step that cannot be interrupted — one encoder run — finishes in the
        background, its result dropped). Returns the workers still running."""
        self.alive = False
        self.invalidate()
        self.pool.clear()  # queued workers never start
        for worker, entry in list(self._workers.items()):
            if not worker.is_running:
                entry.stopped.set()
        deadline = time.monotonic() + timeout_s
        for entry in list(self._workers.values()):
            entry.stopped.wait(max(0.0, deadline - time.monotonic()))
        return self.running
