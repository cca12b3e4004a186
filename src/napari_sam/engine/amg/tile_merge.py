"""The merge step of tiled automatic masks (docs/tiling.md section 2.2): one tile's
2D automatic-mask result (labels of its *outer* region) at a time into one label image
of the plane. One implementation, used by :class:`~.tiled.TiledAmg` (tiles segmented
here) and by the Dask driver (:mod:`napari_sam.store.amg_dask_tiles`: tiles segmented on
workers, merged on the driver in the same order, so both give the same labels).

    merge = TileMerge(grid, min_area=0, rim_rule=RimRule())   # or TileMerge.for_params
    for tile in grid.tiles():                                   # row-major
        merge.add_tile(tile, result)                            # AmgResult of the tile
    labels = merge.labels                                       # (H, W) uint32, ids 1..N

**Merge rule.** A tile *keeps* the objects of its label image whose bounding-box centre
lies in its inner region grown by ``tolerance`` pixels (``keep="centre"``) and that do
not touch a cut edge of its outer region (an edge inside the plane); kept objects are
written over the outer region with :func:`~.labels.merge_new_objects` (never over pixels
already labelled; the rim rule drops what is left of a near-duplicate;
``min_area`` applies to what is left). New ids are consecutive from ``first_id`` in
tile order. Details and alternatives (``"centre-with-cut"``, ``"touch"``):
:mod:`.tiled`.

Memory: only the current tile's outer region of the output is read and written (the
output may be a zarr array); per-object features are columns (a few bytes per object).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from scipy.ndimage import find_objects

from ..labels import DEFAULT_MIN_UNCOVERED_FRACTION, DEFAULT_RIM_WIDTH, RimRule, merge_new_objects
from ..tiling import Tile, TileGrid
from .result import AmgResult

__all__ = ["DEFAULT_TOLERANCE", "KEEP_RULES", "TileMerge", "keep_mask"]

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


class TileMerge:
    """Tile results merged into one label image of a :class:`~.tiling.TileGrid`'s plane.

    grid: the tiles; min_area: objects smaller than this many pixels (after the
    never-overwrite rule) are dropped (the generator's ``min_object_area``); rim_rule:
    the generator's :class:`~.labels.RimRule`; out: an array-like (H, W) of an integer
    dtype to write into (e.g. a zarr array; default a new numpy uint32 array); tiles:
    the tiles to merge, in this order (default all, row-major); first_id: the first new
    id (pass the next free id when ``out`` already holds objects: they are never
    overwritten); keep / tolerance: the merge rule (module docstring).
    """

    def __init__(
        self,
        grid: TileGrid,
        *,
        min_area: int = 0,
        rim_rule: RimRule | None = None,
        out: Any | None = None,
        tiles: Iterable[Tile] | None = None,
        first_id: int = 1,
        keep: str = "centre",
        tolerance: float = DEFAULT_TOLERANCE,
    ) -> None:
        if keep not in KEEP_RULES:
            raise ValueError(f"keep must be one of {KEEP_RULES}, got {keep!r}")
        if int(first_id) < 1:
            raise ValueError(f"first_id must be ≥ 1, got {first_id}")
        if not tolerance >= 0:
            raise ValueError(f"tolerance must be ≥ 0 pixels, got {tolerance!r}")
        if out is None:
            out = np.zeros(grid.plane, np.uint32)
        elif tuple(out.shape) != tuple(grid.plane):
            raise ValueError(f"out has shape {tuple(out.shape)}, the plane is {grid.plane}")
        elif np.dtype(out.dtype).kind not in "iu":
            raise ValueError(f"out must have an integer dtype, got {out.dtype}")
        self.grid = grid
        self.min_area = int(min_area)
        self.rim_rule = RimRule() if rim_rule is None else rim_rule
        self.keep, self.tolerance = keep, float(tolerance)
        self.labels = out
        self.tiles = [grid.check(t) for t in (grid.tiles() if tiles is None else tiles)]
        self.next_id = int(first_id)
        self.done: list[Tile] = []  # tiles merged (their objects are in ``labels``)
        self._columns: dict[str, list[np.ndarray]] = {c: [] for c in _COLUMNS}

    @classmethod
    def for_params(cls, grid: TileGrid, params: Mapping[str, Any], **kwargs: Any) -> TileMerge:
        """The merge of tiles segmented by ``AutomaticMaskGenerator(model, **params)``:
        its ``min_object_area`` and rim rule (``min_uncovered_fraction``,
        ``rim_width``), with the generator's defaults for those not in ``params``."""
        rule = RimRule(
            params.get("min_uncovered_fraction", DEFAULT_MIN_UNCOVERED_FRACTION),
            params.get("rim_width", DEFAULT_RIM_WIDTH),
        )
        return cls(grid, min_area=params.get("min_object_area", 0), rim_rule=rule, **kwargs)

    @property
    def total(self) -> int:
        return len(self.tiles)

    @property
    def n_objects(self) -> int:
        return sum(len(a) for a in self._columns["label"])

    def add_tile(self, tile: Tile, result: AmgResult) -> int:
        """Merge one tile's AMG result (labels of its outer region) into :attr:`labels`
        by the merge rule; returns the number of objects added. Tiles must be added in
        the order :attr:`tiles` gives (row-major by default) for the documented result."""
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
            min_area=self.min_area,
            rule=self.rim_rule,
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
