"""Base of the widget's panels that run one long job at a time in a worker
(propagation, automatic segmentation): start, cancel, button states."""

from __future__ import annotations

from collections.abc import Callable

from qtpy.QtWidgets import QHBoxLayout, QPushButton


class JobPanel:
    """Mixin for a QGroupBox panel of :class:`SamWidget` (``self.widget``).

    ``what`` names the job in messages; ``run_buttons`` are disabled while it runs and
    ``cancel_button`` enabled. ``self.worker`` is the running worker or None.
    """

    what = "job"
    run_buttons: tuple[QPushButton, ...] = ()

    def _init_job(self, widget) -> None:
        self.widget = widget
        self.worker = None
        self.cancel_button = QPushButton("Cancel", clicked=self.cancel, enabled=False)

    def _button_row(self) -> QHBoxLayout:
        """The run buttons and Cancel, side by side."""
        row = QHBoxLayout()
        for b in (*self.run_buttons, self.cancel_button):
            row.addWidget(b)
        return row

    def _launch(
        self,
        job: Callable,
        on_result: Callable,
        *,
        total: int,
        desc: str,
        verb: str,
        on_abort: Callable[[], None],
    ):
        """Run the generator function ``job`` in the widget's worker launcher with a
        progress bar; its yields go to the status line as ``"<verb>: <message>"``."""
        w = self.widget
        self.worker = w._start(
            job,
            on_result,
            progress={"total": total, "desc": desc},
            on_yield=lambda p: w.set_status(f"{verb}: {p.message}"),
            on_abort=on_abort,
            done=self._finished,
        )
        self._set_running(True)
        return self.worker

    def cancel(self) -> None:
        if self.worker is not None:
            self.worker.quit()
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

    def _finished(self) -> None:
        self.worker = None
        self._set_running(False)

    def _set_running(self, running: bool) -> None:
        for b in self.run_buttons:
            b.setEnabled(not running)
        self.cancel_button.setEnabled(running)
