"""The napari-sam dock widget: click / box prompts → live mask preview → commit to a
Labels layer (undoable). Every expensive step (model loading, image encoder, decoder,
precompute) runs in a napari ``thread_worker``; the GUI thread only reads prompts and
writes labels."""

from __future__ import annotations

import contextlib
import itertools

import numpy as np
from napari.layers import Image, Labels
from napari.qt.threading import WorkerBase, create_worker
from qtpy.QtCore import QTimer

from . import adapters, commit
from .constants import (
    KEY_CLEAR,
    KEY_COMMIT,
    KEY_TOGGLE_POLARITY,
    POSITIVE_FEATURE,
    PREVIEW_COLOR,
    PREVIEW_DEBOUNCE_MS,
    PREVIEW_LAYER,
)
from .controls import NEW_LABELS, ControlsBase
from .session import Preview, SegmentationSession, is_refinement, prompt_key


class SamWidget(ControlsBase):
    """Dock widget. ``napari_viewer`` is injected by napari."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session: SegmentationSession | None = None
        self._layer: Image | None = None  # the image layer the session belongs to
        self.points = self.boxes = self.preview_layer = None
        self.preview: Preview | None = None
        self._requests = itertools.count(1)
        self._latest = 0
        self._embedding_jobs: set[tuple[int, ...]] = set()
        self._workers: set = set()
        self._precompute_worker = None
        self._timer = QTimer(self, singleShot=True, interval=PREVIEW_DEBOUNCE_MS)
        self._timer.timeout.connect(self.update_preview)
        self._build_ui()
        from .propagate_panel import PropagatePanel

        self.propagate_panel = PropagatePanel(self)
        self.layout().insertWidget(self.layout().count() - 1, self.propagate_panel)
        from .amg_panel import AmgPanel

        AmgPanel.add_to(self)  # sets self.amg_panel
        self.viewer.layers.events.inserted.connect(self._refresh_layer_lists)
        self.viewer.layers.events.removed.connect(self._refresh_layer_lists)
        self.viewer.dims.events.current_step.connect(self._on_slice_change)
        self._refresh_layer_lists()

    def _on_layers_changed(self) -> None:
        if self._layer is not None and self._layer not in self.viewer.layers:
            self.session, self._layer = None, None
            self._show_preview(None)
            self.set_status("the image layer was removed: choose an image and load again")

    @property
    def image_layer(self) -> Image | None:
        """The layer being segmented (the session's), else the one chosen in the combo."""
        if self._layer is not None and self._layer in self.viewer.layers:
            return self._layer
        name = self.image_combo.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    @property
    def channel_axis(self) -> int | None:
        return None if self.channel_combo.currentText() == "none" else 0

    def _ctx(self) -> adapters.SliceContext:
        return adapters.current_slice(self.viewer, self.image_layer, self.channel_axis)

    # ---------------------------------------------------------------- model + store
    def load_model(self) -> None:
        """Load the chosen model in a worker, then open the embedding store."""
        image = self.image_layer
        if image is None:
            self.set_status("Add an image layer first.")
            return
        if image.multiscale:
            self.set_status("Multiscale images are not supported yet; open level 0.")
            return
        if min(adapters.spatial_shape(image)) < 2:
            self.set_status(f"image {image.name!r} is too small to segment (needs ≥ 2×2 pixels)")
            return
        if self.channel_axis is not None and adapters.spatial_ndim(image) < 3:
            self.set_status("a channel axis needs an image with at least 3 axes")
            return
        name = self.model_combo.currentText()
        ckpt = self.checkpoint_edit.text().strip() or None
        device, precision = self.device_combo.currentText(), self.precision_combo.currentText()
        store = None if self.ram_only.isChecked() else (self.store_edit.text().strip() or "")

        def job():
            from ..engine.loader import load_model

            model = load_model(name, checkpoint=ckpt, device=device, precision=precision)
            path = store
            if path == "":
                from ..store import default_store_path

                src = image.source.path or f"layer-{image.name}-{id(image.data)}"
                path = default_store_path(src, model.name, precision=model.precision)
            return SegmentationSession(model, image.data, bool(image.rgb), path)

        self.load_button.setEnabled(False)
        self.set_status(f"Loading {name} …")
        self._start(
            job,
            lambda s: self._on_session(s, image, registry=ckpt is None),
            done=lambda: self.load_button.setEnabled(True),
        )

    def _on_session(
        self, session: SegmentationSession, image: Image, registry: bool = True
    ) -> None:
        """registry: the model came from the registry (not a checkpoint file)."""
        if image not in self.viewer.layers:
            self.set_status(f"image layer {image.name!r} was removed while loading; load again")
            return
        self.session, self._layer = session, image
        self._ensure_prompt_layers()
        m = session.model
        where = session.store.path if session.store is not None else "RAM"
        self.set_status(f"{m.name} on {m.device} ({m.precision}); embeddings: {where}")
        self.amg_panel.model_loaded(m.name if registry else None)
        self.schedule_preview()

    def _on_error(self, err: Exception) -> None:
        """Worker errors become a status message (never re-raised in the GUI thread)."""
        self.set_status(f"Error: {err}")

    def _start(
        self,
        fn,
        on_result,
        *args,
        done=None,
        progress=None,
        on_yield=None,
        on_abort=None,
        **kwargs,
    ):
        """Run ``fn(*args, **kwargs)`` (function or generator) in a napari worker: errors
        go to the status line, the worker is registered so closing the widget awaits it.
        progress: napari progress-bar options; on_yield / on_abort: generator signals."""
        worker = create_worker(
            fn,
            *args,
            **kwargs,
            _progress=progress,
            _connect={"errored": self._on_error},
            _start_thread=False,
        )
        worker.returned.connect(on_result)
        if on_yield is not None:
            worker.yielded.connect(on_yield)
        if on_abort is not None:
            worker.aborted.connect(on_abort)
        self._workers.add(worker)
        worker.finished.connect(lambda: self._workers.discard(worker))
        if done is not None:
            worker.finished.connect(done)
        worker.start()
        return worker

    # ------------------------------------------------------------------- prompts
    def _ensure_prompt_layers(self) -> None:
        image = self.image_layer
        if self.points is None or self.points not in self.viewer.layers:
            self.points = adapters.add_points_layer(self.viewer, image)
            self.points.events.data.connect(self.schedule_preview)
            self.points.bind_key(KEY_TOGGLE_POLARITY, self._toggle_polarity, overwrite=True)
        if self.boxes is None or self.boxes not in self.viewer.layers:
            self.boxes = adapters.add_boxes_layer(self.viewer, image)
            self.boxes.events.data.connect(self.schedule_preview)
            self.boxes.mode = "add_rectangle"
        for layer in (self.points, self.boxes):
            layer.bind_key(KEY_COMMIT, lambda _l: self.commit(), overwrite=True)
            layer.bind_key(KEY_CLEAR, lambda _l: self.clear_prompts(), overwrite=True)
        self.viewer.layers.selection.active = self.points

    def _toggle_polarity(self, layer=None) -> None:
        positive = not bool(self.points.feature_defaults[POSITIVE_FEATURE].iloc[0])
        self.points.feature_defaults = {POSITIVE_FEATURE: positive}
        self.set_status("next clicks: " + ("positive" if positive else "negative"))

    def clear_prompts(self) -> None:
        """Discard prompts and preview."""
        if self.points is not None:
            self.points.data = np.zeros((0, self.points.ndim))
        if self.boxes is not None:
            self.boxes.data = []
        self._show_preview(None)

    def _on_slice_change(self, event=None) -> None:
        self._show_preview(None)
        self.schedule_preview()

    def schedule_preview(self, event=None) -> None:
        """Debounce prompt / slice changes; the newest request wins."""
        self._timer.start()

    def update_preview(self) -> None:
        """Read prompts on the current slice (GUI thread, cheap), then decode in a worker."""
        image, session = self.image_layer, self.session
        if session is None or image is None or self.points is None:
            return
        try:
            ctx = self._ctx()
        except ValueError as err:
            self.set_status(str(err))
            return
        pts, lab = adapters.points_on_slice(self.points, image, ctx)
        boxes = adapters.boxes_on_slice(self.boxes, image, ctx)
        if len(pts) == 0 and len(boxes) == 0:
            self._show_preview(None)
            return
        box = adapters.clip_box(boxes[-1], ctx.shape) if len(boxes) else None
        if len(pts) and not lab.any() and box is None:
            self._show_preview(None)
            self.set_status("only negative clicks on this slice: add a positive one or a box")
            return
        emb = session.cached(ctx.index)
        if emb is None:
            self._request_embedding(ctx.index)
            return
        request = next(self._requests)
        self._latest = request
        prev = self.preview
        kwargs = {}
        if (
            prev is not None
            and prev.index == ctx.index
            and prev.logits is not None
            and is_refinement(prev.prompts, prompt_key(pts, lab, box))
        ):
            kwargs["mask_input"] = prev.logits  # correction click: refine the last mask
        self._start(
            session.predict, self._on_preview, ctx.index, emb, pts, lab, box, request, **kwargs
        )

    def _request_embedding(self, index: tuple[int, ...], prefetch: bool = False) -> None:
        """Encode a slice in a worker (store → encoder); the current slice first, then
        (optionally) its neighbours along the last slice axis, one at a time."""
        if index in self._embedding_jobs or self.session is None:
            return
        self._embedding_jobs.add(index)
        if not prefetch:
            self.set_status(f"encoding slice {index} …")

        def done(_=None, index=index):
            self._embedding_jobs.discard(index)

        def ready(_emb, index=index):
            done()
            if not prefetch:
                self.set_status(f"slice {index} encoded")
                self.schedule_preview()
            self._prefetch_next(index)

        self._start(self.session.embedding, ready, index, done=done)

    def _prefetch_next(self, index: tuple[int, ...]) -> None:
        if not self.prefetch_check.isChecked() or not index or self._embedding_jobs:
            return
        size = self.image_layer.data.shape[len(index) - 1]
        for step in (1, -1):
            z = index[-1] + step
            cand = (*index[:-1], z)
            if 0 <= z < size and self.session.cached(cand) is None:
                self._request_embedding(cand, prefetch=True)
                return

    def _on_preview(self, preview: Preview) -> None:
        if preview.request != self._latest:
            return  # a newer request is on its way; drop this stale one
        if self.session is None or self.image_layer is None:
            return
        try:
            ctx = self._ctx()
        except ValueError:
            return
        if ctx.index != preview.index:
            return
        self._show_preview(preview)
        self.set_status(f"preview: {int(preview.mask.sum())} px, predicted IoU {preview.score:.2f}")

    def _show_preview(self, preview: Preview | None) -> None:
        self.preview = preview
        image = self.image_layer
        if image is None:
            return
        h, w = adapters.spatial_shape(image)
        data = np.zeros((h, w), np.uint8) if preview is None else preview.mask.astype(np.uint8)
        if self.preview_layer is None or self.preview_layer not in self.viewer.layers:
            from napari.utils import DirectLabelColormap

            self.preview_layer = self.viewer.add_labels(
                data,
                name=PREVIEW_LAYER,
                scale=image.scale[-2:],
                translate=image.translate[-2:],
                opacity=0.5,
                colormap=DirectLabelColormap(color_dict={None: "transparent", 1: PREVIEW_COLOR}),
            )
            if self.points is not None:
                self.viewer.layers.selection.active = self.points
        else:
            self.preview_layer.data = data

    # -------------------------------------------------------------------- commit
    def target_labels(self) -> Labels:
        image = self.image_layer
        name = self.labels_combo.currentText()
        if name == NEW_LABELS or name not in self.viewer.layers:
            layer = commit.add_labels_layer(self.viewer, image, self.channel_axis)
            self.labels_combo.setCurrentText(layer.name)
            if self.points is not None:
                self.viewer.layers.selection.active = self.points
            return layer
        layer = self.viewer.layers[name]
        commit.check_compatible(layer, image, self.channel_axis)
        return layer

    def commit(self) -> int | None:
        """Write the preview as a new object (next free id), one undo step; clear prompts."""
        if self.preview is None:
            self.set_status("nothing to commit: add a click or a box first")
            return None
        try:
            ctx = self._ctx()
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
        label_id = commit.commit_slice_mask(
            labels, self.preview.mask, ctx, overwrite=self.overwrite_check.isChecked()
        )
        self.clear_prompts()
        self.set_status(
            f"committed object {label_id}" if label_id else "nothing new: area already labelled"
        )
        return label_id

    # ----------------------------------------------------------------- precompute
    def precompute(self) -> None:
        """Embeddings of every slice into the store, with napari progress and cancel."""
        image, session = self.image_layer, self.session
        if session is None:
            self.set_status("load a model first")
            return
        nd = adapters.spatial_ndim(image)
        indices = list(np.ndindex(*image.data.shape[: nd - 2]))

        def job():
            yield from session.precompute(indices)

        self._precompute_worker = self._start(
            job,
            lambda _=None: None,
            progress={"total": len(indices), "desc": "SAM embeddings"},
            on_yield=lambda p: self.set_status(f"precomputed {p[0]}/{p[1]} slices"),
            done=self._precompute_finished,
        )
        self.precompute_button.setEnabled(False)
        self.cancel_button.setEnabled(True)

    def cancel_precompute(self) -> None:
        if self._precompute_worker is not None:
            self._precompute_worker.quit()
            self.set_status("cancelling … (slices already written stay valid)")

    def _precompute_finished(self) -> None:
        self._precompute_worker = None
        self.precompute_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    # -------------------------------------------------------------------- closing
    def closeEvent(self, event) -> None:
        self.release()
        super().closeEvent(event)

    def release(self) -> None:
        """Unbind our keys, stop prefetching and wait for running workers (called when
        the widget closes)."""
        self._closing = True
        self.prefetch_check.setChecked(False)
        for layer in (self.points, self.boxes):
            if layer is None:
                continue
            for key in (KEY_COMMIT, KEY_CLEAR, KEY_TOGGLE_POLARITY):
                with contextlib.suppress(KeyError, ValueError):
                    layer.bind_key(key, None)
        self.cancel_precompute()
        self._timer.stop()
        for worker in list(self._workers):
            worker.quit()
        WorkerBase.await_workers(msecs=30000)
        self.viewer.dims.events.current_step.disconnect(self._on_slice_change)
        self.viewer.layers.events.inserted.disconnect(self._refresh_layer_lists)
        self.viewer.layers.events.removed.disconnect(self._refresh_layer_lists)
