"""``SegmentationSession``: one image + one model, without Qt — its embeddings (an
:class:`~napari_sam.store.provider.EmbeddingProvider`: RAM → zarr store → encoder) and
the prompts → mask step. The widget and ``napari-sam segment`` both use it. All methods
may run in worker threads; nothing here touches napari layers.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..engine.decode.predictor import Predictor
from ..engine.embedding import Embedding
from ..engine.image import Normalization
from ..engine.loader import SamModel
from ..engine.progress import Progress
from .preview import Preview, exact_round, is_refinement, prompt_key
from .tiled import choose_tile, to_region

RAM_SLICES = 8  # embeddings kept in RAM besides the zarr store (the widget's default)
RAM_TILES = 32  # the same for tiled slices, in tiles (a vit_b tile: 4 MiB)


class SegmentationSession:
    """One image + one model: embeddings and predictions.

    image: the nD image (a layer's data; numpy / dask / zarr; read slice by slice),
    addressed by slice index tuples over its non-spatial axes (``()`` for 2D); rgb: its
    last axis holds RGB(A) samples. store_path: zarr store for the embeddings, or None
    for RAM only (at most ``ram_slices`` in RAM either way; ``ram_tiles`` tiles when the
    slices are tiled).
    on_mismatch: a store made for another model / precision / normalisation / image
    raises :class:`~napari_sam.store.StoreMismatchError` (``"error"``, the default: the
    widget asks the user) or is replaced (``"overwrite"``: only after the user said so).
    In ``"error"`` mode a stored slice whose image data changed is not used and not
    replaced: that slice is encoded into RAM only and listed in :attr:`stale`.
    tiling / halo: ``"off"`` (default: the whole slice is resized into the model input),
    ``"auto"`` (tiles when a slice exceeds the input) or a tile shape (th, tw), and the
    halo in pixels (default: :meth:`~napari_sam.engine.tiling.TileGrid.for_model`). With
    tiles (:attr:`grid` not None) embeddings are per (slice, tile) (one store entry per
    tile, computed only when a prompt needs it) and :meth:`prompt` answers each prompt on one
    tile (:mod:`.tiled`).
    """

    def __init__(
        self,
        model: SamModel,
        image: Any,
        rgb: bool,
        store_path: str | Path | None,
        normalization: Normalization | None = None,
        on_mismatch: str = "error",
        ram_slices: int = RAM_SLICES,
        tiling: str | tuple[int, int] = "off",
        ram_tiles: int = RAM_TILES,
        halo: int | None = None,
    ) -> None:
        from ..engine.tiling import TileGrid
        from ..store import EmbeddingProvider, SliceLayout, TiledLayout

        if on_mismatch not in ("error", "overwrite"):
            raise ValueError(f"on_mismatch must be 'error' or 'overwrite', got {on_mismatch!r}")
        self.model = model
        self.image = image
        self.normalization = normalization or Normalization()
        slices = SliceLayout.for_shape(image.shape, rgb=rgb)
        self.grid = TileGrid.for_model(slices.slice_size, model.sam.image_size, tiling, halo)
        self.embeddings = EmbeddingProvider(
            model,
            image,
            slices if self.grid is None else TiledLayout(slices, self.grid),
            normalization=self.normalization,
            store=store_path,
            overwrite=on_mismatch == "overwrite",
            capacity=ram_slices if self.grid is None else ram_tiles,
            on_stale="ram",
            check=_finite,
        )
        self._lock = threading.Lock()  # guards _click_predictor, never held long
        self._click_predictor: tuple[Embedding, Predictor] | None = None
        if self.store is not None:
            from ..store.cache_dir import hold_store

            # in use while this session lives: cache clean-up (any process) skips it
            self._hold = hold_store(self.store.path)

    @property
    def store(self):
        """The zarr embedding store, or None (RAM only)."""
        return self.embeddings.store

    @property
    def stale(self) -> set[tuple[int, ...]]:
        """Store slices made from other image data (encoded into RAM only)."""
        return self.embeddings.stale

    # ------------------------------------------------------------------ embeddings
    def cached(self, index: tuple[int, ...]) -> Embedding | None:
        """Embedding from RAM only (cheap: safe on the GUI thread)."""
        return self.embeddings.cached(index)

    def slice(self, index: tuple[int, ...]) -> np.ndarray:
        """The slice's pixels (H, W) / (H, W, 3|4) as numpy, reading only it."""
        return self.embeddings.read(index)

    def embedding(self, index: tuple[int, ...]) -> Embedding:
        """RAM → zarr store → encoder (then written to the store). Worker threads only."""
        return self.embeddings.get(index)

    def precompute(self, indices: list[tuple[int, ...]]) -> Iterator[Progress]:
        """Compute missing embeddings into the store (every one without a store); yields
        Progress with ``done`` counting those already complete. indices: keys of
        :meth:`region_keys` (slice indices, or (slice…, tile row, tile col))."""
        return self.embeddings.precompute(indices)

    def tile_embedding(self, index: tuple[int, ...], tile: tuple[int, int]) -> Embedding:
        """A tile's embedding on a tiled slice (RAM → encoder). Worker threads only."""
        return self.embeddings.get((*tuple(index), *tuple(tile)))

    def tiles_around(
        self,
        index: tuple[int, ...],
        tile: tuple[int, int],
        limit: int | None = None,
        prefer: Iterable[tuple[int, int]] = (),
    ) -> Iterator[Progress]:
        """Embed the tiles of slice ``index`` nearest to ``tile`` first
        (:meth:`~napari_sam.engine.tiling.TileGrid.by_distance`: the tile itself, then its
        neighbours ring by ring) — those in ``prefer`` (e.g. the tiles in view) before
        all others — at most ``limit`` of them (default: as many as RAM holds — more
        would evict the first ones without a store); yields Progress per tile.
        What a prompt does next, in a worker thread; closing the generator stops after
        the current tile. Tiles already in RAM or in the store are not recomputed."""
        if self.grid is None:
            raise ValueError("this session's slices are not tiled")
        tile = self.grid.check(tile)
        first = {tuple(t) for t in prefer}
        # stable: the tile itself, those preferred, the rest — each by distance
        order = sorted(self.grid.by_distance(tile), key=lambda t: (t != tile, t not in first))
        n = min(len(order), self.embeddings.capacity if limit is None else int(limit))
        keys = [(*tuple(index), *t) for t in order[:n]]
        return self.embeddings.prefetch(keys)

    def cached_tile(self, index: tuple[int, ...], tile: tuple[int, int]) -> Embedding | None:
        """A tile's embedding from RAM only (cheap: safe on the GUI thread)."""
        return self.embeddings.cached((*tuple(index), *tuple(tile)))

    def tiles_in_ram(self, index: tuple[int, ...]) -> list[tuple[int, int]]:
        """The tiles of slice ``index`` whose embeddings are in RAM (cheap)."""
        n = len(tuple(index))
        return [
            (int(k[n]), int(k[n + 1]))
            for k in self.embeddings.ram_keys()
            if len(k) == n + 2 and tuple(k[:n]) == tuple(index)
        ]

    def region_keys(self, indices: Iterable[tuple[int, ...]]) -> list[tuple[int, ...]]:
        """The embedding keys of slices ``indices``: the slices themselves, or every
        tile of each when the slices are tiled (what :meth:`precompute` takes)."""
        if self.grid is None:
            return [tuple(i) for i in indices]
        tiles = list(self.grid.tiles())
        return [(*tuple(i), *t) for i in indices for t in tiles]

    def tile_for(
        self,
        points: np.ndarray,
        labels: np.ndarray,
        box: np.ndarray | None,
        previous: Preview | None = None,
    ) -> tuple[int, int] | None:
        """The tile :meth:`prompt` answers these prompts on (None: the slice is not
        tiled); :class:`~.tiled.TileError` when no tile can. Cheap: nothing embedded."""
        if self.grid is None:
            return None
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        lab = np.asarray(labels).reshape(-1)
        refine = previous is not None and is_refinement(
            previous.prompts, prompt_key(pts, lab, box)
        )
        return choose_tile(self.grid, pts, lab, box, previous.tile if refine else None)  # type: ignore[union-attr]

    # ------------------------------------------------------------------- predict
    def prompt(
        self,
        index: tuple[int, ...],
        points: np.ndarray,
        labels: np.ndarray,
        box: np.ndarray | None,
        request: int,
        *,
        previous: Preview | None = None,
    ) -> Preview:
        """Mask for one object from the prompts of one slice, computing the embedding it
        needs (worker threads only): on an untiled slice :meth:`predict` on the slice's
        embedding; on a tiled one on the tile chosen by :func:`.tiled.choose_tile` (only
        that tile is embedded); the preview's window is then the tile's outer region
        (:attr:`Preview.local`, placed by :attr:`Preview.mask`). previous: the
        object's last preview — when these prompts refine it (more clicks, same box) its
        logits are the mask input and, tiled, its tile is kept. Raises
        :class:`~.tiled.TileError` for a prompt no tile can answer."""
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        lab = np.asarray(labels).reshape(-1)
        refine = previous is not None and is_refinement(
            previous.prompts, prompt_key(pts, lab, box)
        )
        mask_input = previous.logits if refine else None  # type: ignore[union-attr]
        chain = previous.chain if refine else ()  # type: ignore[union-attr]
        if self.grid is None:
            emb = self.embedding(index)
            return self.predict(
                index, emb, pts, lab, box, request, mask_input=mask_input, chain=chain
            )
        tile = self.tile_for(pts, lab, box, previous)
        assert tile is not None
        region = self.grid.outer(tile)
        emb = self.tile_embedding(index, tile)
        tp, tb = to_region(pts, box, region)
        r = self.predict(index, emb, tp, lab, tb, request, mask_input=mask_input)
        return replace(
            r,
            plane=self.grid.plane,  # the mask stays the region's (Preview.local)
            prompts=prompt_key(pts, lab, box),
            chain=(*chain, exact_round(pts, lab, box)),  # slice coordinates
            tile=tile,
            region=region,
        )

    def predict(
        self,
        index: tuple[int, ...],
        emb: Embedding,
        points: np.ndarray,
        labels: np.ndarray,
        box: np.ndarray | None,
        request: int,
        *,
        mask_input: np.ndarray | None = None,
        chain: tuple = (),
    ) -> Preview:
        """Mask for one object from the prompts of one slice: points (N, 2) (row, col)
        with labels (N,) 1 / 0, and / or a box (4,) (row_min, col_min, row_max,
        col_max), on the slice's embedding ``emb``. A single click without a box uses
        SAM's 3 candidate masks and keeps the best-scored one. ``mask_input``: the
        previous preview's low-res logits when the user adds a correction click (as
        SAM's interactive loop does); ``chain``: then the previous preview's chain of
        prompt rounds (the new preview's chain is it plus these prompts)."""
        p = self._predictor_for(emb)
        multimask = box is None and len(points) == 1 and mask_input is None
        r = p.predict(
            points=points if len(points) else None,
            labels=labels if len(points) else None,
            box=box,
            mask_input=mask_input,
            multimask=multimask,
            best_only=True,
        )
        return Preview(
            index,
            r.masks[0],
            float(r.scores[0]),
            request,
            r.logits[0],
            prompt_key(points, labels, box),
            chain=(*chain, exact_round(points, labels, box)),
        )

    def _predictor_for(self, emb: Embedding) -> Predictor:
        """A Predictor on ``emb``, reused while the embedding is the same object, so its
        per-embedding decoder context is computed once per slice, not once per click.
        (Preview workers may overlap: a Predictor is never shared with the encoder.)"""
        with self._lock:
            cached = self._click_predictor
            if cached is not None and cached[0] is emb:
                return cached[1]
        p = Predictor(self.model, self.normalization)
        p.set_embedding(emb)
        with self._lock:
            self._click_predictor = (emb, p)
        return p


def _finite(index: tuple[int, ...], data: np.ndarray) -> None:
    """A slice that is all NaN / inf cannot be segmented: say so instead of encoding it."""
    if data.dtype.kind == "f" and not np.isfinite(data).any():
        raise ValueError(f"slice {index} has no finite values (all NaN / inf)")
