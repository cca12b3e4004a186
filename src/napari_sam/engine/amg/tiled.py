"""Automatic masks on a plane larger than the model input, tile by tile (docs/tiling.md).

Pure numpy / torch (no napari, no zarr): the caller supplies ``embedding(tile)``, the
embedding of a tile's *outer* region (:meth:`~.tiling.TileGrid.outer`) at native
resolution (``Predictor.compute_embedding(grid.read(plane, tile), resize=False)``, or
its cache), and optionally ``read(tile)``, the outer region's pixels (only needed with
``crop_n_layers > 0``). Main names::

    t = TiledAmg(amg, grid, embedding)               # amg: AutomaticMaskGenerator
    for done, total, message in t.run(): ...         # one step per tile; closing cancels
    labels = t.labels                                # (H, W) uint32, ids 1..N
    labels = tiled_amg(amg, grid, embedding)         # the same, run to the end
    TiledAmg(amg, grid, embedding, out=zarr_labels, tiles=grid.tiles_in(region))

**Merge rule** (measured in docs/tiling.md, ``benchmarks/tiled_amg.py``; implemented
once, in :class:`~.tile_merge.TileMerge`, which the Dask driver uses too). Tiles are
segmented one after the other (row-major, or the order of ``tiles``); each runs the 2D
generator on its whole outer region (inner tile + halo), so an object near an inner
border is seen whole. A tile *keeps* the objects of its label image whose bounding-box
centre lies in its inner region grown by ``tolerance`` pixels (``keep="centre"``; the
inner regions partition the plane, so an object is kept by the tile it is centred in,
and by a neighbour too when its centre lies within ``tolerance`` of their border — two
views of one nucleus may place its centre a pixel apart, and without the tolerance
neither tile would keep it) and that do not touch a cut edge of its outer region (an
edge inside the plane: such a mask is a truncated view of an object centred in the halo;
the tile that owns it sees it whole). The kept objects are written into the plane's
labels over the outer region with :func:`~.labels.merge_new_objects` (never over pixels
already labelled, by an earlier tile or by the caller; a near-duplicate of an object
written by a neighbour is only a rim / small part of it there and is dropped by the
generator's :class:`~.labels.RimRule`; ``min_object_area`` applies to what is left). New
ids are consecutive from ``first_id`` in tile order, then the generator's paint
priority. Alternatives (kept for the benchmark): ``keep="centre-with-cut"`` also keeps
masks touching a cut edge (the same result on the 2048² benchmark: with a full halo such
masks are rare); ``keep="touch"`` keeps every object meeting the inner region
(duplicates then rely on the rim rule alone; more split nuclei).

Volumes (:class:`TiledVolumeAmg`): every slice is segmented by tiles into a plane, then
linked to the slice before by the rule of :mod:`.volume` (the linking holds two
planes in RAM).

Memory: the output may be any array-like of the plane's shape with numpy slicing (a
zarr array); only the current tile's outer region is read from and written to it, so
the plane's labels never have to fit in RAM. Per-object features are kept as columns
(a few bytes per object).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable
from typing import Any

import numpy as np

from ..embedding import Embedding
from ..progress import Progress, run_to_end, within_step
from ..tiling import Tile, TileGrid, check_tile_embedding
from .generator import AutomaticMaskGenerator
from .tile_merge import DEFAULT_TOLERANCE, KEEP_RULES, TileMerge, keep_mask
from .volume import DEFAULT_LINK_IOU, VolumeAmg

__all__ = [
    "DEFAULT_TOLERANCE",
    "KEEP_RULES",
    "TileMerge",
    "TiledAmg",
    "TiledVolumeAmg",
    "keep_mask",
    "tiled_amg",
]


class TiledAmg(TileMerge):
    """AMG on every tile of a :class:`~.tiling.TileGrid`, merged into one label image
    by :class:`~.tile_merge.TileMerge` (the merge step, shared with the Dask driver).

    amg: the 2D generator (its parameters, rim rule and ``min_object_area`` apply);
    grid: the tiles; embedding: ``tile → Embedding`` of the tile's outer region at
    native resolution; read: ``tile → (h, w[, 3])`` outer-region pixels (needed only
    when ``amg.crop_n_layers > 0``); out: an array-like (H, W) of an integer dtype to
    write into (e.g. a zarr array; default a new numpy uint32 array); tiles: the tiles
    to segment, in this order (default all, row-major; e.g.
    ``grid.tiles_in(region)``); first_id: the first new id (pass the next free id when
    ``out`` already holds objects: they are never overwritten); keep: the merge rule.
    """

    def __init__(
        self,
        amg: AutomaticMaskGenerator,
        grid: TileGrid,
        embedding: Callable[[Tile], Embedding],
        *,
        read: Callable[[Tile], np.ndarray] | None = None,
        out: Any | None = None,
        tiles: Iterable[Tile] | None = None,
        first_id: int = 1,
        keep: str = "centre",
        tolerance: float = DEFAULT_TOLERANCE,
    ) -> None:
        if amg.crop_n_layers > 0 and read is None:
            raise ValueError("crop_n_layers > 0 needs the tiles' pixels: pass read=...")
        super().__init__(
            grid,
            min_area=amg.min_object_area,
            rim_rule=amg.rim_rule,
            out=out,
            tiles=tiles,
            first_id=first_id,
            keep=keep,
            tolerance=tolerance,
        )
        self.amg, self.embedding, self.read = amg, embedding, read

    def run(self) -> Generator[Progress, None, Any]:
        """Segment tile after tile; yields Progress in tiles (the generator's own steps
        with ``done`` unchanged, then one per finished tile). Returns :attr:`labels`.
        Closing the generator cancels; the tiles done so far stay written."""
        total = self.total
        yield Progress(0, total, "starting")
        for done, tile in enumerate(self.tiles):
            emb = check_tile_embedding(self.grid, tile, self.embedding(tile))
            need_image = self.read is not None and self.amg.crop_n_layers > 0
            image = self.read(tile) if need_image else None
            gen = self.amg.iter_generate(emb, image=image)
            result = yield from within_step(gen, done, total, f"tile {tile}")
            n = self.add_tile(tile, result)
            yield Progress(done + 1, total, f"tile {tile}: {n} objects")
        return self.labels


def tiled_amg(
    amg: AutomaticMaskGenerator,
    grid: TileGrid,
    embedding: Callable[[Tile], Embedding],
    **kwargs: Any,
) -> Any:
    """:class:`TiledAmg` run to the end; returns its labels ((H, W) uint32 or ``out``)."""
    return run_to_end(TiledAmg(amg, grid, embedding, **kwargs).run())


class TiledVolumeAmg(VolumeAmg):
    """:class:`~.volume.VolumeAmg` on a (Z, H, W) volume of large planes: each
    slice by :class:`TiledAmg`, then linked in z (same rule, results and attributes:
    :attr:`planes`, :attr:`result`).

    embedding: ``(z, tile) → Embedding`` of the tile's outer region on slice z; read:
    ``(z, tile) → pixels`` (only with ``crop_n_layers > 0``); keep: the merge rule.
    """

    def __init__(
        self,
        amg: AutomaticMaskGenerator,
        grid: TileGrid,
        embedding: Callable[[int, Tile], Embedding],
        n_slices: int,
        *,
        read: Callable[[int, Tile], np.ndarray] | None = None,
        slices: list[int] | None = None,
        link: bool = True,
        link_iou: float = DEFAULT_LINK_IOU,
        min_slices: int = 1,
        keep: str = "centre",
        tolerance: float = DEFAULT_TOLERANCE,
    ) -> None:
        super().__init__(
            amg,
            embedding,  # type: ignore[arg-type]  # called per tile in run()
            n_slices,
            slices=slices,
            link=link,
            link_iou=link_iou,
            min_slices=min_slices,
        )
        if amg.crop_n_layers > 0 and read is None:
            raise ValueError("crop_n_layers > 0 needs the tiles' pixels: pass read=...")
        if keep not in KEEP_RULES:
            raise ValueError(f"keep must be one of {KEEP_RULES}, got {keep!r}")
        self.grid, self.tile_embedding, self.tile_read = grid, embedding, read
        self.keep, self.tolerance = keep, tolerance

    @property
    def total(self) -> int:
        return len(self.slices) * self.grid.n_tiles

    def run(self) -> Generator[Progress, None, np.ndarray]:
        """Segment slice after slice, tile after tile; yields Progress in tiles over the
        volume. Returns the label volume (:attr:`result`). Closing the generator
        cancels; the slices done so far stay in :attr:`planes`."""
        total, per = self.total, self.grid.n_tiles
        yield Progress(0, total, "starting")
        read = self.tile_read
        for k, z in enumerate(self.slices):
            t = TiledAmg(
                self.amg,
                self.grid,
                lambda tile, z=z: self.tile_embedding(z, tile),
                read=None if read is None else (lambda tile, z=z: read(z, tile)),
                keep=self.keep,
                tolerance=self.tolerance,
            )
            gen = t.run()
            try:
                for p in gen:
                    yield Progress(k * per + p.done, total, f"slice {z}: {p.message}")
            finally:
                gen.close()
            self.add_slice(z, t.labels)
            yield Progress((k + 1) * per, total, f"slice {z}: {t.n_objects} objects")
        return self.result
