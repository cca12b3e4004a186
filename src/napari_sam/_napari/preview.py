"""Prompts → preview, the interactive part of :class:`SamWidget`: prompts on the current
slice are read on the GUI thread (cheap), the slice's embedding is computed (store →
encoder) and the mask decoded in the widget's workers; the newest request wins, and a
result for another slice, session or image is dropped.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..session.preview import Preview, is_refinement, prompt_key
from ..session.tiled import TileError
from . import adapters
from .constants import POSITIVE_FEATURE, PREVIEW_CONTOUR


class PreviewMixin:
    """Part of :class:`SamWidget` (its session, layers, workers and status)."""

    def _toggle_polarity(self) -> None:
        if self.points is None:
            return
        positive = not bool(self.points.feature_defaults[POSITIVE_FEATURE].iloc[0])
        self.points.feature_defaults = {POSITIVE_FEATURE: positive}
        self.set_status("next clicks: " + ("positive" if positive else "negative"))

    def clear_prompts(self) -> None:
        """Discard prompts and preview (layers already empty are left alone)."""
        if self.points is not None and len(self.points.data):
            self.points.data = np.zeros((0, self.points.ndim))
        if self.boxes is not None and len(self.boxes.data):
            self.boxes.data = []
        self._show_preview(None)

    def _on_slice_change(self, event=None) -> None:
        """dims event: no layer work here, only timers."""
        self._slice_timer.start()
        self.schedule_preview()

    def _drop_stale_preview(self) -> None:
        try:
            index = self.current_slice().index if self.image_layer is not None else None
        except ValueError:
            index = None
        if self.preview is not None and self.preview.index != index:
            self._show_preview(None)
        self.show_tiles()  # the tiles of the slice shown now

    def schedule_preview(self, event=None) -> None:
        """Debounce prompt / slice changes; the newest request wins."""
        if not self._released:
            self._timer.start()

    def update_preview(self) -> None:
        """Read prompts on the current slice (GUI thread, cheap), then decode in a worker."""
        image, session = self.image_layer, self.session
        if session is None or image is None or self.points is None:
            return
        try:
            ctx = self.current_slice()
        except ValueError as err:
            self.set_status(str(err))
            return
        prompts = adapters.prompts_on_slice(self.points, self.boxes, image, ctx)
        self._hint = prompts.ignored_message()
        pts, lab = prompts.points, prompts.labels
        box = prompts.boxes[-1] if len(prompts.boxes) else None
        if len(pts) == 0 and box is None:
            self._show_preview(None)
            if self._hint:
                self.set_status(self._hint)
            return
        if len(pts) and not lab.any() and box is None:
            self._show_preview(None)
            self.set_status("only negative clicks on this slice: add a positive one or a box")
            return
        if session.grid is not None:
            self._update_tiled_preview(ctx.index, pts, lab, box)
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
            kwargs["chain"] = prev.chain
        self.workers.start(
            _with_outline, session.predict, ctx.index, emb, pts, lab, box, request,
            on_result=self._on_preview, **kwargs,
        )  # fmt: skip

    def _update_tiled_preview(self, index, pts, lab, box) -> None:
        """A tiled slice: the session picks the tile (cheap); when its embedding is in
        RAM the preview is decoded in a worker, else the tile is embedded first
        (:meth:`~napari_sam._napari.tiles.TilesMixin.request_tile`)."""
        session = self.session
        prev = self.preview if self.preview is not None and self.preview.index == index else None
        try:
            tile = session.tile_for(pts, lab, box, prev)
        except TileError as err:
            self._show_preview(None)
            self.set_status(str(err))
            return
        if session.cached_tile(index, tile) is None:
            self.request_tile(index, tile)
            return
        request = next(self._requests)
        self._latest = request
        self.workers.start(
            _with_outline, session.prompt, index, pts, lab, box, request, previous=prev,
            on_result=self._on_preview,
        )  # fmt: skip

    def _request_embedding(self, index: tuple[int, ...], prefetch: bool = False) -> None:
        """Encode a slice in a worker (store → encoder); the current slice first, then
        (optionally) its neighbours along the last slice axis, one at a time."""
        session = self.session
        if index in self._embedding_jobs or session is None:
            return
        self._embedding_jobs.add(index)
        jobs, generation = self._embedding_jobs, self.workers.generation
        if not prefetch:
            self.set_status(f"encoding slice {index} …")

        def done(index=index):
            if self.workers.generation == generation:
                jobs.discard(index)

        def ready(_emb, index=index):
            done()
            if index in session.stale:
                self.set_status(
                    f"slice {index}: the store holds an embedding of other image data; "
                    "this slice is encoded into RAM only (the store is unchanged)"
                )
            elif not prefetch:
                self.set_status(f"slice {index} encoded")
            if not prefetch:
                self.schedule_preview()
            self._prefetch_next(index)

        self.workers.start(session.embedding, index, on_result=ready, done=done)

    def _prefetch_next(self, index: tuple[int, ...]) -> None:
        session = self.session
        if not self.prefetch_check.isChecked() or not index or self._embedding_jobs:
            return
        if session is None:
            return
        size = session.image.shape[len(index) - 1]
        for step in (1, -1):
            z = index[-1] + step
            cand = (*index[:-1], z)
            if 0 <= z < size and session.cached(cand) is None:
                self._request_embedding(cand, prefetch=True)
                return

    def _on_preview(self, preview: Preview) -> None:
        if preview.request != self._latest:
            return  # a newer request is on its way; drop this stale one
        if self.session is None or self.image_layer is None:
            return
        try:
            ctx = self.current_slice()
        except ValueError:
            return
        if ctx.index != preview.index:
            return
        self._show_preview(preview)
        hint = f" ({self._hint})" if self._hint else ""
        where = "" if preview.tile is None else f" on tile {preview.tile}"
        self.set_status(
            f"preview{where}: {int(preview.local.sum())} px, predicted IoU "
            f"{preview.score:.2f}{hint}"
        )

    def _show_preview(self, preview: Preview | None) -> None:
        self.preview = preview
        if preview is None:
            self.layers.show(None)
        else:
            shown = preview.outline if preview.outline is not None else preview.local
            self.layers.show(shown, preview.origin)



def outline(mask: np.ndarray, width: int = PREVIEW_CONTOUR) -> np.ndarray:
    """The pixels of ``mask`` (h, w) bool within ``width`` pixels of its edge (the
    window's border counts as an edge): the preview is drawn as this outline."""
    from scipy import ndimage

    inner = ndimage.binary_erosion(mask, iterations=width, border_value=0)
    return mask & ~inner


def _with_outline(predict, *args, **kwargs) -> Preview:
    """Worker: the session's preview with its outline (computed here, not on the GUI
    thread, which only copies it into the preview layer)."""
    preview = predict(*args, **kwargs)
    return dataclasses.replace(preview, outline=outline(preview.local))
