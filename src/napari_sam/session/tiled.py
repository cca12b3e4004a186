"""Which tile answers a prompt on a tiled slice (docs/tiling.md section 6).

A slice larger than the model input is covered by a
:class:`~napari_sam.engine.tiling.TileGrid`; a prompt is decoded on ONE tile's embedding
(its outer region at native resolution) and the mask is placed back at slice
coordinates. The rules (napari order: points (row, col), boxes (row_min, col_min,
row_max, col_max), slice pixels):

* a box → the tile whose outer region contains it, preferring the tile whose inner
  region contains its centre (:meth:`TileGrid.tile_for_box`: a box across an inner
  border is answered by a neighbour that sees it whole); a box larger than every
  outer region → :class:`TileError` (no downsampled fall-back: the message names the
  box, the region size and what to do);
* points only → the tile whose inner region contains the first positive point (the
  first point if none is positive);
* a refinement (more clicks on the same object, same box: :func:`.preview.is_refinement`)
  stays on the tile of the object's first prompt, so its low-res mask input matches;
* every point must lie in the chosen tile's outer region, else :class:`TileError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..engine.tiling import Region, Tile, TileGrid, box_to_tile, to_tile

__all__ = ["PlaneWindow", "TileError", "choose_tile", "tiles_window", "to_region"]


class TileError(ValueError):
    """A prompt that no single tile can answer (one line: what and what to do)."""


def choose_tile(
    grid: TileGrid,
    points: np.ndarray,
    labels: np.ndarray,
    box: Sequence[float] | None,
    previous: Tile | None = None,
) -> Tile:
    """The tile that answers a prompt by the rules of the module docstring.

    points: (N, 2) (row, col); labels: (N,) 1 / 0; box: (4,) or None; previous: the tile
    of the object's first prompt when this prompt refines it (it is kept)."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    lab = np.asarray(labels).reshape(-1)
    if previous is not None:
        tile = grid.check(previous)
    elif box is not None:
        found = grid.tile_for_box(box)
        if found is None:
            r0, c0, r1, c1 = (float(v) for v in box)
            oh, ow = grid.tile[0] + 2 * grid.halo[0], grid.tile[1] + 2 * grid.halo[1]
            raise TileError(
                f"box of {r1 - r0:.0f} × {c1 - c0:.0f} px at ({r0:.0f}, {c0:.0f}) is larger "
                f"than any tile's region of {oh} × {ow} px: draw a smaller box or click "
                "points, or use larger tiles / halo, or tiling off"
            )
        tile = found
    elif len(pts):
        positive = np.flatnonzero(lab == 1)
        r, c = pts[positive[0] if positive.size else 0]
        tile = grid.tile_at(r, c)
    else:
        raise TileError("no prompt: give a point or a box")
    r0, c0, r1, c1 = grid.outer(tile)
    outside = [
        (float(r), float(c))
        for r, c in pts
        if not (r0 - 0.5 <= r <= r1 - 0.5 and c0 - 0.5 <= c <= c1 - 0.5)
    ]
    if outside:
        r, c = outside[0]
        raise TileError(
            f"point ({r:.0f}, {c:.0f}) lies outside the region ({r0}, {c0})–({r1}, {c1}) "
            f"of tile {tile} that answers this object: start a new object there, or use "
            "larger tiles / halo"
        )
    return tile


def to_region(
    points: np.ndarray, box: Sequence[float] | None, region: Region
) -> tuple[np.ndarray, np.ndarray | None]:
    """Slice coordinates → the outer region's: points (N, 2) and box (4,) or None."""
    pts = to_tile(np.asarray(points, dtype=np.float64).reshape(-1, 2), region)
    return pts, None if box is None else box_to_tile(box, region)


class PlaneWindow:
    """A label plane of ``plane`` = (H, W) pixels of which only ``region`` (row_min,
    col_min, row_max, col_max) is held, as a (h, w) numpy :attr:`array`: what
    :class:`~napari_sam.engine.amg.tiled.TiledAmg` writes into when it segments some
    tiles of a large plane (their outer regions must lie inside ``region``). Indexed
    like the plane with two slices; anything outside ``region`` is an IndexError."""

    def __init__(self, plane: Sequence[int], region: Sequence[int], dtype: Any = np.uint32):
        self.shape = (int(plane[0]), int(plane[1]))
        r0, c0, r1, c1 = (int(v) for v in region)
        if not (0 <= r0 < r1 <= self.shape[0] and 0 <= c0 < c1 <= self.shape[1]):
            raise ValueError(f"region {tuple(region)} is not inside a {self.shape} plane")
        self.region = (r0, c0, r1, c1)
        self.dtype = np.dtype(dtype)
        self.array = np.zeros((r1 - r0, c1 - c0), self.dtype)

    def _local(self, key: tuple[slice, slice]) -> tuple[slice, slice]:
        r0, c0, r1, c1 = self.region
        rows, cols = key
        out = []
        for s, lo, hi in ((rows, r0, r1), (cols, c0, c1)):
            if not isinstance(s, slice) or s.step not in (None, 1):
                raise IndexError("a PlaneWindow is indexed with two contiguous slices")
            start, stop = s.start, s.stop
            if start is None or stop is None or start < lo or stop > hi:
                raise IndexError(f"{key} leaves the window {self.region}")
            out.append(slice(start - lo, stop - lo))
        return out[0], out[1]

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        return self.array[self._local(key)]

    def __setitem__(self, key: tuple[slice, slice], value: Any) -> None:
        self.array[self._local(key)] = value


def tiles_window(grid: TileGrid, tiles: Sequence[Tile]) -> Region:
    """The bounding box (row_min, col_min, row_max, col_max) of ``tiles``' outer regions."""
    regions = np.array([grid.outer(t) for t in tiles])
    return (
        int(regions[:, 0].min()),
        int(regions[:, 1].min()),
        int(regions[:, 2].max()),
        int(regions[:, 3].max()),
    )
