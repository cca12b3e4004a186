"""Base of the widget's panels that run one long job at a time in a worker
(propagation, automatic segmentation): start, cancel, button states, the job's row
(message + its one Cancel button) below the widget's scroll area.

A job is a generator function ``job(cancel)`` run in the widget's worker owner: it
yields Progress, checks the ``threading.Event`` ``cancel`` between steps, does all its
reading and planning of label writes in the worker, and returns an :class:`Outcome`
that the GUI thread applies (one ``data_setitem`` of the changed pixels).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass

from qtpy.QtWidgets import QPushButton

from ..session.commit import LabelWrite


@dataclass(frozen=True)
class Outcome:
    """What a job's worker hands to the GUI thread.

    plan: the label write (None: nothing to write); message: a problem found in the
    worker (no write); cancelled: the user cancelled (a plan may still hold the part
    done, when asked to keep it); found: objects the job produced (before existing
    labels were taken into account); record: the provenance of the write
    (``session.provenance``; None: recorded as a manual edit, e.g. a propagation
    cancelled half-way).
    """

    plan: LabelWrite | None = None
    message: str = ""
    cancelled: bool = False
    found: int = 0
    record: Callable | None = None


def cancellable(gen: Generator, cancel: threading.Event) -> Generator:
    """Re-yield ``gen`` until ``cancel`` is set; returns (its value or None, cancelled).
    ``gen`` is closed either way."""
    try:
        while True:
            if cancel.is_set():
                return None, True
            p = next(gen)
            yield p
    except StopIteration as stop:
        return stop.value, False
    finally:
        gen.close()


class JobPanel:
    """Mixin for a QWidget panel (a tab) of :class:`SamWidget` (``self.widget``).

    ``what`` names the job in messages; ``run_buttons`` are disabled while it runs and
    the Cancel button of its job row enabled. ``self.worker`` is the running worker or
    None; ``self.cancel_event`` the running job's cancel flag.
    """

    what = "job"
    title = "job"
    run_buttons: tuple[QPushButton, ...] = ()

    def _init_job(self, widget) -> None:
        self.widget = widget
        self.worker = None
        self.cancel_event: threading.Event | None = None
        self.row = widget.job_row(self.title, self.cancel)
        self.cancel_button = self.row.cancel_button

    def _launch(self, job: Callable, on_result: Callable[[Outcome], None], *, total: int):
        """Run the generator function ``job(cancel)`` in the widget's workers; its
        progress (``total`` steps) goes to the job row."""
        w = self.widget
        self.cancel_event = cancel = threading.Event()
        self.worker = w.run_job(
            job,
            cancel,
            on_result=on_result,
            on_yield=lambda p: self.row.progress(p.done, p.message),
            done=self._finished,
        )
        self._set_running(True, total)
        return self.worker

    def cancel(self) -> None:
        """Ask the running job to stop after its current step."""
        if self.worker is not None and self.cancel_event is not None:
            self.cancel_event.set()
            self.widget.set_status(f"cancelling {self.what} …")

    def _ready(self):
        """(image layer, session) to start a job; ValueError when there is no model or
        a job of this panel is still running."""
        w = self.widget
        image, session = w.image_layer, w.session
        if session is None or image is None:
            raise ValueError("load a model first")
        if self.worker is not None:
            raise ValueError(f"a {self.what} is already running")
        return image, session

    def _labels_gone(self, labels) -> bool:
        """True (with a message) when the target labels layer was removed meanwhile."""
        if labels in self.widget.viewer.layers:
            return False
        self.widget.set_status(
            f"{self.what}: the labels layer {labels.name!r} was removed; result dropped",
            notify=True,
        )
        return True

    def _finished(self) -> None:
        self.worker = self.cancel_event = None
        self._set_running(False)

    def _set_running(self, running: bool, total: int = 0) -> None:
        for b in self.run_buttons:
            b.setEnabled(not running)
        self.row.running(running, total)
