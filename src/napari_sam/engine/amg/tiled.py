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

**Merge rule** (measured in docs/tiling.md, ``benchmarks/tiled_amg.py``). Tiles are
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
from scipy.ndimage import find_objects

from ..embedding import Embedding
from ..labels import merge_new_objects
from ..progress import Progress, run_to_end, within_step
from ..tiling import Tile, TileGrid, check_tile_embedding
from .generator import AutomaticMaskGenerator
from .result import AmgResult
from .volume import DEFAULT_LINK_IOU, VolumeAmg

__all__ = [
    "DEFAULT_TOLERANCE",
    "KEEP_RULES",
    "TiledAmg",
    "TiledVolumeAmg",
    "keep_mask",
    "tiled_amg",
]

KEEP_RULES = ("centre", "centre-with-cut", "touch")
DEFAULT_TOLERANCE = 2.0  # pixels; measured in docs/tiling.md (benchmarks/tiled_amg.py)
_COLUMNS = ("label", "tile_row", "tile_col", "predicted_iou", "stability_score", "area")


def keep_mask(
    result: AmgResult,
    grid: TileGrid,
    tile: Tile,
    keep: str = "centre",
    tolerance: float = 0.0,
) -> np.ndarray:
    """(n_records,) bool: which objects of a tile's AMG result (labels in the outer
    region's pixels) the tile keeps by rule ``keep`` (module docstring), with the inner
    region grown by ``tolerance`` pixels for the centre test."""
    if keep not in KEEP_RULES:
        raise ValueError(f"keep must be one of {KEEP_RULES}, got {keep!r}")
    n = len(result.records)
    if n == 0:
        return np.zeros(0, bool)
    o0, p0, o1, p1 = grid.outer(tile)
    i0, j0, i1, j1 = (a - b for a, b in zip(grid.inner(tile), (o0, p0, o0, p0), strict=True))
    box = np.array([r.bbox for r in result.records], dtype=np.float64)  # inclusive
    if keep == "touch":
        return (box[:, 0] < i1) & (box[:, 2] >= i0) & (box[:, 1] < j1) & (box[:, 3] >= j0)
    cr, cc = (box[:, 0] + box[:, 2]) / 2, (box[:, 1] + box[:, 3]) / 2
    # pixel centres: the inner region [i0, i1) holds centres in [i0 - 0.5, i1 - 0.5)
    t = float(tolerance) + 0.5
    sel = (cr >= i0 - t) & (cr < i1 - 1 + t) & (cc >= j0 - t) & (cc < j1 - 1 + t)
    if keep == "centre":
        h, w = grid.plane
        cut = np.zeros(n, bool)
        if o0 > 0:
            cut |= box[:, 0] == 0
        if p0 > 0:
            cut |= box[:, 1] == 0
        if o1 < h:
            cut |= box[:, 2] == o1 - o0 - 1
        if p1 < w:
            cut |= box[:, 3] == p1 - p0 - 1
        sel &= ~cut
    return sel


class TiledAmg:
    """AMG on every tile of a :class:`~.tiling.TileGrid`, merged into one label image.

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
        if keep not in KEEP_RULES:
            raise ValueError(f"keep must be one of {KEEP_RULES}, got {keep!r}")
        if amg.crop_n_layers > 0 and read is None:
            raise ValueError("crop_n_layers > 0 needs the tiles' pixels: pass read=...")
        if int(first_id) < 1:
            raise ValueError(f"first_id must be ≥ 1, got {first_id}")
        if out is None:
            out = np.zeros(grid.plane, np.uint32)
        elif tuple(out.shape) != tuple(grid.plane):
            raise ValueError(f"out has shape {tuple(out.shape)}, the plane is {grid.plane}")
        elif np.dtype(out.dtype).kind not in "iu":
            raise ValueError(f"out must have an integer dtype, got {out.dtype}")
        self.amg, self.grid, self.embedding, self.read = amg, grid, embedding, read
        if not tolerance >= 0:
            raise ValueError(f"tolerance must be ≥ 0 pixels, got {tolerance!r}")
        self.keep, self.tolerance = keep, float(tolerance)
        self.labels = out
        self.tiles = [grid.check(t) for t in (grid.tiles() if tiles is None else tiles)]
        self.next_id = int(first_id)
        self.done: list[Tile] = []  # tiles finished (their objects are in ``labels``)
        self._columns: dict[str, list[np.ndarray]] = {c: [] for c in _COLUMNS}

    @property
    def total(self) -> int:
        return len(self.tiles)

    @property
    def n_objects(self) -> int:
        return sum(len(a) for a in self._columns["label"])

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

    def add_tile(self, tile: Tile, result: AmgResult) -> int:
        """Merge one tile's AMG result (labels of its outer region) into :attr:`labels`
        by the merge rule; returns the number of objects added (used by :meth:`run` and
        by drivers that segment tiles elsewhere)."""
        tile = self.grid.check(tile)
        region = self.grid.outer(tile)
        r0, c0, r1, c1 = region
        if result.labels.shape != (r1 - r0, c1 - c0):
            raise ValueError(
                f"tile {tile}: labels of shape {result.labels.shape}, its outer region is "
                f"{(r1 - r0, c1 - c0)}"
            )
        sel = keep_mask(result, self.grid, tile, self.keep, self.tolerance)
        ids = np.array([r.label for r in result.records], dtype=np.int64)[sel]
        lut = np.zeros(len(result.records) + 1, np.uint32)
        lut[ids] = np.arange(1, len(ids) + 1, dtype=np.uint32)
        new = lut[result.labels]
        existing = np.asarray(self.labels[r0:r1, c0:c1])
        values, n_added = merge_new_objects(
            existing,
            new,
            first_id=self.next_id,
            min_area=self.amg.min_object_area,
            rule=self.amg.rim_rule,
        )
        if n_added:
            written = values != 0
            block = existing.copy()
            block[written] = values[written]
            self.labels[r0:r1, c0:c1] = block
            self._record(tile, result, ids, new, values, n_added)
        self.next_id += n_added
        self.done.append(tile)
        return n_added

    def _record(self, tile, result, ids, new, values, n_added) -> None:
        first = self.next_id
        added = np.where(values != 0, values.astype(np.int64) - first + 1, 0)
        boxes = find_objects(added, max_label=n_added)
        area = np.bincount(added.ravel(), minlength=n_added + 1)[1:]
        src = np.array([int(new[b][added[b] == k][0]) for k, b in enumerate(boxes, 1)])
        recs = [result.records[int(ids[s - 1]) - 1] for s in src]
        cols = self._columns
        cols["label"].append(np.arange(first, first + n_added, dtype=np.uint32))
        cols["tile_row"].append(np.full(n_added, tile[0], np.int32))
        cols["tile_col"].append(np.full(n_added, tile[1], np.int32))
        cols["predicted_iou"].append(np.array([r.predicted_iou for r in recs], np.float32))
        cols["stability_score"].append(np.array([r.stability_score for r in recs], np.float32))
        cols["area"].append(area.astype(np.int64))

    def features(self) -> dict[str, np.ndarray]:
        """Per-object columns of the objects written (label, tile_row, tile_col,
        predicted_iou, stability_score, area = pixels written), in id order."""
        return {
            c: np.concatenate(v) if v else np.zeros(0, _dtype(c)) for c, v in self._columns.items()
        }


def _dtype(column: str) -> np.dtype:
    return np.dtype(
        {"label": np.uint32, "tile_row": np.int32, "tile_col": np.int32, "area": np.int64}.get(
            column, np.float32
        )
    )


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
