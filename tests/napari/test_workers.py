"""The widget's worker owner: results of an older generation are dropped, generator
workers stop on invalidation, shutdown waits only for its own workers, and worker
threads (and the torch threads they start) run below the GUI thread's priority."""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest

from napari_sam._napari.workers import WORKER_NICE, WorkerOwner

pytestmark = pytest.mark.gui


def nice_of_this_thread() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_workers_run_below_the_gui_threads_priority(qtbot):
    """Linux: a worker thread's nice value is WORKER_NICE (threads it starts — torch's
    OpenMP team — inherit it at creation); the GUI thread keeps its own."""
    owner = WorkerOwner(on_error=lambda e: None)
    got = []

    def job():
        return nice_of_this_thread()

    def gen_job():
        yield
        return nice_of_this_thread()

    for fn in (job, gen_job):
        owner.start(fn, on_result=got.append)
    qtbot.waitUntil(lambda: len(got) == 2, timeout=30000)
    gui = nice_of_this_thread()
    if sys.platform.startswith("linux"):
        assert gui < WORKER_NICE and got == [WORKER_NICE, WORKER_NICE]
    else:  # nothing changes elsewhere
        assert got == [gui, gui]


def test_old_generation_results_are_dropped_and_generators_stop(qtbot):
    owner = WorkerOwner(on_error=lambda e: None)
    results, steps = [], []
    release = threading.Event()

    def slow():
        release.wait(10)
        return "old"

    def ticking():
        for i in range(1000):
            steps.append(i)
            time.sleep(0.01)
            yield i

    owner.start(slow, on_result=results.append)
    gen_worker = owner.start(ticking, on_result=results.append)
    qtbot.waitUntil(lambda: len(steps) > 2, timeout=10000)
    owner.invalidate()  # e.g. the user chose another image
    release.set()
    qtbot.waitUntil(lambda: not owner.running, timeout=10000)
    qtbot.wait(50)
    assert results == [] and gen_worker.abort_requested and len(steps) < 1000
    owner.start(lambda: "new", on_result=results.append)
    qtbot.waitUntil(lambda: results == ["new"], timeout=10000)


def test_shutdown_waits_only_for_its_own_workers(qtbot):
    from napari.qt.threading import create_worker

    ours, other = WorkerOwner(on_error=lambda e: None), WorkerOwner(on_error=lambda e: None)
    stop = threading.Event()

    def forever():
        while not stop.is_set():
            time.sleep(0.01)
            yield

    mine = ours.start(forever)
    theirs = other.start(forever)
    plugin = create_worker(forever, _start_thread=True)  # another plugin's worker
    qtbot.waitUntil(lambda: mine.is_running and theirs.is_running, timeout=10000)
    left = ours.shutdown(timeout_s=5)
    try:
        assert left == [] and mine.abort_requested
        assert not theirs.abort_requested and not plugin.abort_requested
        assert theirs.is_running and plugin.is_running
    finally:
        stop.set()
        qtbot.waitUntil(lambda: not other.running and not plugin.is_running, timeout=10000)
