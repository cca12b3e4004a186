"""The napari-sam dock widget: click / box prompts → live mask preview → commit to a
Labels layer (undoable). Every expensive step (model loading, image encoder, decoder,
precompute, propagation, automatic masks) runs in a napari ``thread_worker`` owned by
this widget; the GUI thread only reads prompts and writes labels. Closing the dock
(its [x]) releases the widget: its workers are cancelled, its key bindings and layers
removed."""

from __future__ import annotations

import contextlib
import itertools
import threading

import numpy as np
from napari.layers import Labels
from qtpy.QtCore import QEvent, QTimer

from ..session import Preview, SegmentationSession
from ..session.provenance import prompted
from . import adapters, commit
from .binding import BindingMixin
from .constants import (
    CLOSE_WAIT_S,
    KEY_CLEAR,
    KEY_COMMIT,
    KEY_REDO,
    KEY_TOGGLE_POLARITY,
    KEY_UNDO,
    POSITIVE_FEATURE,
    PREVIEW_DEBOUNCE_MS,
)
from .controls import NEW_LABELS, ControlsBase
from .own_layers import OwnLayers
from .preview import PreviewMixin
from .recording import Recorder
from .tiles import TilesMixin
from .workers import WorkerOwner


class SamWidget(PreviewMixin, TilesMixin, BindingMixin, ControlsBase):
    """Dock widget. ``napari_viewer`` is injected by napari."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.model = None
        self._model_key: tuple | None = None
        self.session: SegmentationSession | None = None
        self._binding: tuple | None = None  # (image layer, channel axis, its data)
        self._opening = False
        self._labels_for: dict[tuple, Labels] = {}
        self._last_labels: Labels | None = None
        self.preview: Preview | None = None
        self._hint = ""
        self._requests = itertools.count(1)
        self._latest = 0
        self._embedding_jobs: set[tuple[int, ...]] = set()
        self._tile_jobs: set[tuple[int, ...]] = set()  # (slice…, tile row, tile col)
        self._tile_prefetch_stop: threading.Event | None = None
        self._precompute_worker = None
        self._precompute_cancel: threading.Event | None = None
        self._precompute_what = "slices"
        self._released = self._docked = False
        self.workers = WorkerOwner(self._on_error)
        self.recorder = Recorder()  # provenance of the labels layers written
        workers = self.workers
        self.destroyed.connect(lambda *_: setattr(workers, "alive", False))
        self.layers = OwnLayers(
            napari_viewer,
            {
                KEY_COMMIT: self.commit,
                KEY_CLEAR: self.clear_prompts,
                KEY_TOGGLE_POLARITY: self._toggle_polarity,
                KEY_UNDO: self.undo_commit,
                KEY_REDO: self.redo_commit,
            },
            self.schedule_preview,
        )
        self._timer = QTimer(self, singleShot=True, interval=PREVIEW_DEBOUNCE_MS)
        self._timer.timeout.connect(self.update_preview)
        self._sync_timer = QTimer(self, singleShot=True, interval=0)
        self._sync_timer.timeout.connect(self._sync)
        self._slice_timer = QTimer(self, singleShot=True, interval=0)
        self._slice_timer.timeout.connect(self._drop_stale_preview)
        self._build_ui()
        from .amg_panel import AmgPanel
        from .propagate_panel import PropagatePanel

        self.propagate_panel = PropagatePanel(self)
        self.add_tab(self.propagate_panel, "Propagate")
        self.amg_panel = AmgPanel(self)
        self.add_tab(self.amg_panel, "Automatic")
        from .export_panel import ExportPanel

        self.export_panel = ExportPanel(self)
        self.add_tab(self.export_panel, "Export")
        self.image_combo.currentTextChanged.connect(self._on_choice_changed)
        self.channel_combo.currentTextChanged.connect(self._on_choice_changed)
        self.tiling_combo.currentTextChanged.connect(self._on_tiling_changed)
        self.viewer.layers.events.inserted.connect(self._refresh_layer_lists)
        self.viewer.layers.events.removed.connect(self._refresh_layer_lists)
        self.viewer.dims.events.current_step.connect(self._on_slice_change)
        self._refresh_layer_lists()

    # ------------------------------------------------------------------ layers
    @property
    def points(self):
        return self.layers.points

    @property
    def boxes(self):
        return self.layers.boxes

    @property
    def preview_layer(self):
        return self.layers.preview

    @property
    def image_layer(self):
        """The layer being segmented (the session's), else the one chosen in the combo."""
        if self._binding is not None and self._binding[0] in self.viewer.layers:
            return self._binding[0]
        return self._chosen()[0]

    @property
    def channel_axis(self) -> int | None:
        return self._binding[1] if self._binding is not None else self._chosen()[1]

    # ------------------------------------------------------- interface for the panels
    # The tabs (automatic masks, propagation, export) use only these and the public
    # attributes above (session, preview, points, target_labels, set_status, ...).
    def current_slice(self) -> adapters.SliceContext:
        """The slice of the image shown now (ValueError when the view cannot be
        segmented: 3D display, transposed axes)."""
        return adapters.current_slice(self.viewer, self.image_layer, self.channel_axis)

    def prompts_in_image_coords(self) -> tuple[np.ndarray, np.ndarray]:
        """Every point of the points layer (all slices) in image data coordinates
        (N, image ndim) and its polarity (N,) bool (True = positive)."""
        pts = self.points
        if pts is None or len(pts.data) == 0:
            return np.zeros((0, adapters.spatial_ndim(self.image_layer))), np.zeros(0, bool)
        coords = adapters.to_image_data(pts, self.image_layer, np.asarray(pts.data))
        return coords, np.asarray(pts.features[POSITIVE_FEATURE], bool)

    def overwrite_existing(self) -> bool:
        """The widget's one "overwrite existing objects" setting."""
        return self.overwrite_check.isChecked()

    def run_job(self, fn, *args, **kwargs):
        """Run ``fn(*args)`` (a function or generator function) in the widget's workers:
        dropped when the session changes, cancelled when the widget closes (keyword
        arguments as :meth:`WorkerOwner.start`: on_result, on_yield, done, ...)."""
        return self.workers.start(fn, *args, **kwargs)

    # ------------------------------------------------------------------ status
    def set_status(self, text: str, notify: bool = False) -> None:
        """The panel's status line and napari's status bar; ``notify``: also a napari
        notification (completions, problems that stop an action — not previews)."""
        super().set_status(text)
        with contextlib.suppress(RuntimeError, AttributeError):
            self.viewer.status = text
        if notify:
            from napari.utils.notifications import show_info

            show_info(f"napari-sam: {text}")

    def _on_error(self, err: Exception) -> None:
        """Worker errors become a status message (napari also shows a notification)."""
        self.set_status(f"Error: {err}")

    # -------------------------------------------------------------------- commit
    def target_labels(self) -> Labels:
        """The chosen labels layer (checked against the image), or a new one."""
        image = self.image_layer
        name = self.labels_combo.currentText()
        if name == NEW_LABELS or name not in self.viewer.layers:
            layer = commit.add_labels_layer(self.viewer, image, self.channel_axis)
            self.labels_combo.setCurrentText(layer.name)
            if self.points is not None:
                self.viewer.layers.selection.active = self.points
        else:
            layer = self.viewer.layers[name]
            commit.check_compatible(layer, image, self.channel_axis)
        self._remember_labels(layer)
        self._last_labels = layer
        if self.session is not None:
            self.recorder.attach(layer, self.session, bool(image.rgb), self.channel_axis)
        return layer

    def sync_provenance(self, labels: Labels) -> None:
        """Bring ``labels.metadata[PROVENANCE_KEY]`` in step with its undo history."""
        self.recorder.sync(labels)

    def commit(self) -> int | None:
        """Write the preview as a new object (next free id), one undo step; clear prompts."""
        if self.preview is None or self.session is None:
            self.set_status("nothing to commit: add a click or a box first")
            return None
        try:
            ctx = self.current_slice()
        except ValueError as err:
            self.set_status(str(err))
            return None
        if ctx.index != self.preview.index:
            self.set_status("the preview belongs to another slice; not committed")
            return None
        try:
            labels = self.target_labels()
        except ValueError as err:
            self.set_status(str(err))
            return None
        overwrite = self.overwrite_existing()
        p = self.preview
        with self.recorder.expect(labels, prompted(p, overwrite), self.session):
            label_id = commit.commit_slice_mask(labels, p.local, ctx, overwrite, p.origin)
        self.clear_prompts()
        self.set_status(
            f"committed object {label_id} (Ctrl+Z undoes it)"
            if label_id
            else "nothing new: area already labelled"
        )
        return label_id

    def chosen_labels(self) -> Labels | None:
        """The labels layer chosen in the combo, else the last one written, else None
        (never creates one)."""
        name = self.labels_combo.currentText()
        if name != NEW_LABELS and name in self.viewer.layers:
            return self.viewer.layers[name]
        last = self._last_labels
        return last if last is not None and last in self.viewer.layers else None

    def undo_commit(self) -> None:
        """Undo the last change of the target labels layer (a commit, a propagation, an
        automatic segmentation — one step each), wherever the user is."""
        labels = self.chosen_labels()
        if labels is None or not labels._undo_history:
            self.set_status("nothing to undo")
            return
        labels.undo()
        self.recorder.sync(labels)
        self.set_status(f"undone (labels {labels.name!r}); Ctrl+Shift+Z redoes it")

    def redo_commit(self) -> None:
        labels = self.chosen_labels()
        if labels is None or not labels._redo_history:
            self.set_status("nothing to redo")
            return
        labels.redo()
        self.recorder.sync(labels)
        self.set_status(f"redone (labels {labels.name!r})")

    # ----------------------------------------------------------------- precompute
    def precompute(self) -> None:
        """Embeddings of every slice into the store, with napari progress and cancel."""
        session = self.session
        if session is None:
            self.set_status("load a model first")
            return
        nd = adapters.spatial_ndim(self.image_layer)
        keys = session.region_keys(np.ndindex(*session.image.shape[: nd - 2]))
        what = "tiles" if session.grid is not None else "slices"
        cancel = self._precompute_cancel = threading.Event()

        def job():  # counts the missing slices only (those already complete are done)
            done = total = already = 0
            for step, p in enumerate(session.precompute(keys)):
                if step == 0:
                    already = p.done
                done, total = p.done - already, p.total - already
                yield done, total
                if cancel.is_set():
                    return done, total, True
            return done, total, False

        self._precompute_what = what
        row = self.precompute_row
        self._precompute_worker = self.workers.start(
            job,
            on_result=self._precomputed,
            on_yield=self._precompute_progress,
            done=self._precompute_finished,
        )
        self.precompute_button.setEnabled(False)
        row.running(True, len(keys))

    def _precompute_progress(self, p: tuple[int, int]) -> None:
        done, total = p
        self.precompute_row.bar.setMaximum(max(total, 1))
        self.precompute_row.progress(done, f"{done}/{total} missing {self._precompute_what}")

    def cancel_precompute(self) -> None:
        if self._precompute_cancel is not None and self._precompute_worker is not None:
            self._precompute_cancel.set()
            self.set_status("cancelling … (slices already written stay valid)")

    def _precomputed(self, result: tuple[int, int, bool]) -> None:
        done, total, cancelled = result
        what = self._precompute_what
        if cancelled:
            self.set_status(
                f"precompute cancelled: {done}/{total} missing {what} stored (they stay valid)",
                notify=True,
            )
        else:
            self.set_status(f"precomputed {done}/{total} missing {what}", notify=True)

    def _precompute_finished(self) -> None:
        self._precompute_worker = self._precompute_cancel = None
        self.precompute_button.setEnabled(True)
        self.precompute_row.running(False)

    # -------------------------------------------------------------------- closing
    def event(self, ev) -> bool:
        """napari's dock [x] removes this widget from its dock (``setParent(None)``,
        ``remove_dock_widget``) without closing it: that is when we release."""
        if ev.type() == QEvent.Type.ParentChange and not self._released:
            if self.parent() is not None:
                self._docked = True
            elif self._docked:
                self.release()
        return super().event(ev)

    def closeEvent(self, event) -> None:
        self.release()
        super().closeEvent(event)

    def release(self) -> None:
        """Cancel this widget's workers (waiting at most CLOSE_WAIT_S for them; results
        that arrive later are dropped), remove its layers and key bindings, disconnect
        from the viewer. Idempotent."""
        if self._released:
            return
        self._released = True
        for timer in (self._timer, self._sync_timer, self._slice_timer):
            timer.stop()
        for cancel in (self._precompute_cancel, self._tile_prefetch_stop, *self._job_cancels()):
            if cancel is not None:
                cancel.set()
        self.workers.shutdown(CLOSE_WAIT_S)
        self.session = self.preview = None
        for signal, slot in (
            (self.viewer.dims.events.current_step, self._on_slice_change),
            (self.viewer.layers.events.inserted, self._refresh_layer_lists),
            (self.viewer.layers.events.removed, self._refresh_layer_lists),
        ):
            with contextlib.suppress(TypeError, ValueError, RuntimeError):
                signal.disconnect(slot)
        self.recorder.release()
        with contextlib.suppress(RuntimeError, KeyError, ValueError):
            self.layers.release()

    def _job_cancels(self) -> list:
        return [
            p.cancel_event for p in (self.propagate_panel, self.amg_panel, self.export_panel)
        ]
