"""Tiled slices in the widget (docs/tiling.md): a slice larger than the model input is
answered tile by tile, with no setting to touch (the session is opened with
``tiling="auto"``).

A prompt needs one tile's embedding (the session chooses it); that tile is embedded
first in a worker, with the status line saying so and its outline drawn in amber in
the "SAM tiles" layer; the preview follows. Then its neighbours are embedded in the
background — those in view first, at most :data:`NEIGHBOUR_TILES` — so the next click
nearby is answered at once; a click on another tile stops that prefetch after the tile
being embedded. Tiles whose embeddings are in RAM are outlined in grey-blue.
"""

from __future__ import annotations

import threading

import numpy as np

from . import adapters
from .constants import NEIGHBOUR_TILES


class TilesMixin:
    """Part of :class:`SamWidget` (its session, layers, workers and status)."""

    _tile_jobs: set
    _tile_prefetch_stop: threading.Event | None

    # ------------------------------------------------------------------ requests
    def request_tile(self, index: tuple[int, ...], tile: tuple[int, int]) -> None:
        """Embed one tile of slice ``index`` in a worker (store → encoder), then update
        the preview and embed its neighbours. A running neighbour prefetch is stopped
        (after its current tile) so the tile under the new prompt comes first."""
        session = self.session
        key = (*index, *tile)
        if session is None or key in self._tile_jobs:
            return
        self._stop_tile_prefetch()
        self._tile_jobs.add(key)
        jobs, generation = self._tile_jobs, self.workers.generation
        grid = session.grid
        self.set_status(
            f"embedding tile {tile} of {grid.shape[0]} × {grid.shape[1]} "
            f"({grid.tile[0]} × {grid.tile[1]} px + halo {grid.halo[0]} px)"
            + (f" of slice {index}" if index else "")
            + " …"
        )

        def done():
            if self.workers.generation == generation:
                jobs.discard(key)
                self.show_tiles()

        def ready(_emb):
            done()
            if key in session.stale:
                self.set_status(
                    f"tile {tile}: the store holds an embedding of other image data; "
                    "it is encoded into RAM only (the store is unchanged)"
                )
            else:
                self.set_status(f"tile {tile} embedded")
            self.schedule_preview()
            self.prefetch_tiles(index, tile)

        self.workers.start(session.tile_embedding, index, tile, on_result=ready, done=done)
        self.show_tiles()

    def prefetch_tiles(self, index: tuple[int, ...], tile: tuple[int, int]) -> None:
        """Embed the neighbours of ``tile`` in the background (in view first)."""
        session = self.session
        if session is None or not self.prefetch_check.isChecked():
            return
        self._stop_tile_prefetch()
        stop = self._tile_prefetch_stop = threading.Event()
        limit = min(NEIGHBOUR_TILES, session.embeddings.capacity // 2)
        tiles = session.tiles_around(index, tile, limit, prefer=self.tiles_in_view())

        def job():
            try:
                for _p in tiles:
                    yield _p
                    if stop.is_set():
                        return
            finally:
                tiles.close()

        self.workers.start(job, on_yield=lambda _p: self.show_tiles(), done=self.show_tiles)

    def _stop_tile_prefetch(self) -> None:
        if self._tile_prefetch_stop is not None:
            self._tile_prefetch_stop.set()
            self._tile_prefetch_stop = None

    # ------------------------------------------------------------------ view
    def tiles_in_view(self) -> list[tuple[int, int]]:
        """Tiles whose inner region is visible on the canvas (cheap: GUI thread)."""
        session, image = self.session, self.image_layer
        if session is None or session.grid is None or image is None:
            return []
        region = visible_region(image)
        return [] if region is None else session.grid.tiles_in(region)

    def show_tiles(self) -> None:
        """Outline the current slice's tiles in RAM and those being embedded."""
        session = self.session
        if session is None or session.grid is None or self.layers.tiles is None:
            return
        try:
            index = self.current_slice().index
        except ValueError:
            return
        grid, n = session.grid, len(index)
        busy = {tuple(k[n:]) for k in self._tile_jobs if tuple(k[:n]) == index}
        ready = [t for t in session.tiles_in_ram(index) if t not in busy]
        self.layers.show_tiles([grid.inner(t) for t in ready], [grid.inner(t) for t in busy])


def visible_region(image) -> tuple[int, int, int, int] | None:
    """The part of ``image``'s slice shown on the canvas, as (row_min, col_min,
    row_max, col_max) pixels of its full-resolution data (napari's ``corner_pixels``,
    which for a multiscale layer are those of the level drawn), or None."""
    corners = getattr(image, "corner_pixels", None)
    if corners is None:
        return None
    corners = np.asarray(corners, float)[:, -2:]
    factor = np.ones(2)
    if image.multiscale:  # a pixel of the level drawn covers ``factor`` level-0 pixels
        level = int(getattr(image, "data_level", 0))
        factor = np.asarray(image.downsample_factors[level][-2:], float)
    lo = np.floor(corners[0]) * factor
    hi = (np.ceil(corners[1]) + 1) * factor
    h, w = adapters.spatial_shape(image)
    r0, c0 = (max(int(v), 0) for v in lo)
    r1, c1 = min(int(hi[0]), h), min(int(hi[1]), w)
    return None if r1 <= r0 or c1 <= c0 else (r0, c0, r1, c1)
