"""Propagation through z on large planes, on tile embeddings (docs/tiling.md).

Pure numpy / torch: the caller supplies ``embedding(z, tile)``, the native-resolution
embedding of a tile's outer region on slice z (as for :mod:`.tiled_amg`). Main names::

    t = TiledPropagator(model, grid, embedding, seeds, objects=[3, 7])
    for done, total, message in t.run(): ...    # generator; closing it cancels
    labels = t.result                            # (Z, H, W), the seeds' dtype
    labels = propagate_tiled(model, grid, embedding, seeds)   # run to the end

**Rule.** Each object is given to one tile: the box around all its seed pixels (every
annotated slice), grown by ``margin`` pixels on every side, goes to
:meth:`~.tiling.TileGrid.tile_for_box` — the tile whose outer region holds it,
preferring the tile whose inner region holds its centre. When the grown box fits no
tile the bare box is tried; when that fits none either, ValueError (the object is larger
than any tile's outer region: use larger tiles or no tiling). Objects given to the same
tile form a group, and a plain :class:`~.propagate.Propagator` runs per group on the
(Z, h, w) crop of that tile's outer region, with ``embedding(z) = embedding(z, tile)``
and every seed pixel of the crop (so its overlap and never-overwrite rules see the
neighbours' seeds). A track can therefore follow its object across an inner border as
far as the outer region reaches (the halo, plus ``margin`` kept free around the seed).
Results are placed back group by group in row-major tile order: a pixel goes to the
first group that claims it; seed pixels are never overwritten. With a grid of one tile
(the plane fits the input) this is exactly one Propagator run on the whole plane.

Memory: the seeds and the result (Z, H, W) are in RAM, as for the untiled propagator;
each group's crop adds (Z, h, w).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable
from typing import Any

import numpy as np
from scipy.ndimage import find_objects

from ..embedding import Embedding
from ..loader import SamModel
from ..progress import Progress, run_to_end
from ..tiling import Tile, TileGrid, check_tile_embedding
from .propagator import Propagator, Stop, check_seeds

__all__ = ["TiledPropagator", "assign_tiles", "propagate_tiled"]


def assign_tiles(
    grid: TileGrid, seeds: np.ndarray, objects: Iterable[int], margin: int
) -> dict[Tile, list[int]]:
    """``{tile: [object ids]}`` by the rule of the module docstring (tiles row-major,
    ids ascending). seeds: (Z, H, W) integer labels; margin: pixels (≥ 0)."""
    if margin < 0:
        raise ValueError(f"margin must be ≥ 0, got {margin}")
    objs = sorted({int(o) for o in objects})
    n = int(seeds.max(initial=0))
    boxes = find_objects(np.asarray(seeds), max_label=n)
    groups: dict[Tile, list[int]] = {}
    h, w = grid.plane
    for obj in objs:
        sl = boxes[obj - 1] if 0 < obj <= n else None
        if sl is None:
            raise ValueError(f"object {obj} has no pixel in the seeds")
        r0, c0, r1, c1 = sl[1].start, sl[2].start, sl[1].stop - 1, sl[2].stop - 1
        grown = (
            max(r0 - margin, 0),
            max(c0 - margin, 0),
            min(r1 + margin, h - 1),
            min(c1 + margin, w - 1),
        )
        tile = grid.tile_for_box(grown)
        if tile is None:
            tile = grid.tile_for_box((r0, c0, r1, c1))
        if tile is None:
            oh, ow = grid.tile[0] + 2 * grid.halo[0], grid.tile[1] + 2 * grid.halo[1]
            raise ValueError(
                f"object {obj}'s seeds span rows {r0}–{r1}, cols {c0}–{c1} "
                f"({r1 - r0 + 1} × {c1 - c0 + 1} px): larger than any tile's region of "
                f"{oh} × {ow} px; use larger tiles / halo or propagate without tiling"
            )
        groups.setdefault(tile, []).append(obj)
    return dict(sorted(groups.items()))


class TiledPropagator:
    """Propagation of several objects through a (Z, H, W) volume of large planes.

    model: the SAM model; grid: the tiles of one plane (H, W); embedding: ``(z, tile)
    → Embedding`` of the tile's outer region on slice z (native resolution); seeds:
    (Z, H, W) integer labels; objects: ids to propagate (default every id in
    ``seeds``); margin: free pixels wanted around an object's seed box inside its
    tile's outer region (default half the halo); ``kwargs``: the
    :class:`~.propagate.Propagator`'s parameters (mode, stop rules, stop_slices, …).
    """

    def __init__(
        self,
        model: SamModel,
        grid: TileGrid,
        embedding: Callable[[int, Tile], Embedding],
        seeds: np.ndarray,
        objects: Iterable[int] | None = None,
        *,
        margin: int | None = None,
        **kwargs: Any,
    ) -> None:
        seeds = check_seeds(seeds)
        if tuple(seeds.shape[1:]) != tuple(grid.plane):
            raise ValueError(f"seeds planes are {seeds.shape[1:]}, the grid's plane {grid.plane}")
        if objects is None:
            objects = np.unique(seeds[seeds > 0]).tolist()
        self.model, self.grid, self.seeds, self.kwargs = model, grid, seeds, kwargs
        self._embedding = embedding
        self.margin = min(grid.halo) // 2 if margin is None else int(margin)
        self.groups = assign_tiles(grid, seeds, objects, self.margin)
        self.stops: list[Stop] = []  # why each track ended (every group)
        self.result: np.ndarray | None = None

    @property
    def total(self) -> int:
        return 2 * self.seeds.shape[0] * len(self.groups)

    def run(self) -> Generator[Progress, None, np.ndarray]:
        """Yields Progress per slice of each group's two sweeps; returns (and stores in
        :attr:`result`) the label volume. Closing the generator stops; groups finished
        so far are in :attr:`result`."""
        out = self.seeds.copy()
        self.result = out
        per = 2 * self.seeds.shape[0]
        for k, (tile, objs) in enumerate(self.groups.items()):
            r0, c0, r1, c1 = self.grid.outer(tile)
            crop = self.seeds[:, r0:r1, c0:c1]

            def emb(z: int, tile: Tile = tile) -> Embedding:
                return check_tile_embedding(self.grid, tile, self._embedding(z, tile))

            p = Propagator(self.model, emb, crop, objs, **self.kwargs)
            gen = p.run()
            try:
                for step in gen:
                    msg = f"tile {tile} ({len(objs)} object(s)): {step.message}"
                    yield Progress(k * per + step.done, self.total, msg)
            finally:
                gen.close()
            res = p.result if p.result is not None else p.assemble()
            win = out[:, r0:r1, c0:c1]
            new = (win == 0) & np.isin(res, objs)
            win[new] = res[new]
            self.stops += p.stops
        return out


    def assemble(self) -> np.ndarray:
        """The label volume so far (after a cancel: the groups finished; the seeds when
        none was)."""
        return self.seeds.copy() if self.result is None else self.result


def propagate_tiled(
    model: SamModel,
    grid: TileGrid,
    embedding: Callable[[int, Tile], Embedding],
    seeds: np.ndarray,
    objects: Iterable[int] | None = None,
    **kwargs: Any,
) -> np.ndarray:
    """Run a :class:`TiledPropagator` to the end and return its label volume."""
    return run_to_end(TiledPropagator(model, grid, embedding, seeds, objects, **kwargs).run())
