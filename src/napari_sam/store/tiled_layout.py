"""Region keys of a tiled image: one embedding per (slice, tile) (docs/tiling.md).

A :class:`TiledLayout` is the :class:`~.regions.RegionLayout` of an image whose slices
are larger than the model input: each slice (:class:`~.slicing.SliceLayout` index) is
covered by the tiles of one :class:`~napari_sam.engine.tiling.TileGrid`, and each tile's
*outer* region is one region, embedded at native resolution (never resized). Its keys
are ``(*slice_index, tile_row, tile_col)``::

    layout = TiledLayout(SliceLayout.for_shape(image.shape), grid)
    provider = EmbeddingProvider(model, image, layout)     # store=... : one entry per tile
    emb = provider.get(layout.tile_key((z,), (2, 3)))      # reads that outer region only

Reading a region touches only the tile's outer region of that slice (numpy, zarr and
dask alike). In an embedding store (:class:`~.embeddings.EmbeddingStore`) each tile is
one entry with its own chunk and completion marker: the arrays get the tile axes after
the slice axes, ``(*slice_shape, tile_rows, tile_cols, C, h, w)``, and the grid is part
of the store's signature (``image.tiles``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..engine.tiling import Tile, TileGrid
from .slicing import Index, SliceLayout


@dataclass(frozen=True)
class TiledLayout:
    """The tiles of every slice of an image: ``slices`` (how the image splits into 2D
    slices) and ``grid`` (the tiles of one slice, whose plane is ``slices.slice_size``).
    """

    slices: SliceLayout
    grid: TileGrid

    #: regions are embedded at native resolution (``Encoder(..., resize=False)``)
    native = True

    def __post_init__(self) -> None:
        if tuple(self.grid.plane) != tuple(self.slices.slice_size):
            raise ValueError(
                f"the grid's plane {self.grid.plane} ≠ the slices' size {self.slices.slice_size}"
            )

    @property
    def spatial(self) -> tuple[int, int]:
        return self.slices.spatial

    @property
    def key_shape(self) -> tuple[int, ...]:
        """Extent of each key entry: (*slice_shape, tile_rows, tile_cols)."""
        return (*self.slices.slice_shape, *self.grid.shape)

    @property
    def region_size(self) -> tuple[int, int]:
        """(h, w) of every region: the outer region (all tiles' are the same size)."""
        r0, c0, r1, c1 = self.grid.outer((0, 0))
        return r1 - r0, c1 - c0

    # ----------------------------------------------------------- RegionLayout
    @property
    def shape(self) -> tuple[int, ...]:
        return self.slices.shape

    @property
    def n_regions(self) -> int:
        return self.slices.n_slices * self.grid.n_tiles

    def region_keys(self) -> Iterator[tuple[int, ...]]:
        """Every (slice..., tile_row, tile_col), slices in C order, tiles row-major."""
        return (
            (*index, *tile)
            for index, tile in itertools.product(self.slices.indices(), list(self.grid.tiles()))
        )

    def check_key(self, key: int | Iterable[int]) -> tuple[int, ...]:
        """``(*slice_index, tile_row, tile_col)`` normalised; IndexError naming the
        valid ranges otherwise."""
        k = (key,) if isinstance(key, (int, np.integer)) else tuple(key)
        n = len(self.slices.slice_shape)
        if len(k) != n + 2:
            raise IndexError(
                f"tile key {k} has {len(k)} entries; this tiled image needs {n + 2} "
                f"(slice index of {n}, tile row, tile col)"
            )
        for v in k[n:]:
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise IndexError(f"tile key {k} must hold ints")
        index = self.slices.check_index(k[:n])
        return (*index, *self.grid.check(k[n:]))

    def read(self, image: Any, key: tuple[int, ...]) -> np.ndarray:
        """The tile's outer region of its slice as numpy (h, w) or (h, w, 3|4),
        reading only that region."""
        if tuple(image.shape) != self.shape:
            raise ValueError(f"image shape {tuple(image.shape)} ≠ layout shape {self.shape}")
        part = image[self.key(key)]
        if hasattr(part, "compute") and hasattr(part, "dask"):
            part = part.compute(scheduler="sync")
        part = np.asarray(part)
        if self.slices.spatial[0] > self.slices.spatial[1]:  # remaining axes in axis order
            part = np.swapaxes(part, 0, 1)
        return part

    def key(self, key: Iterable[int]) -> tuple[int | slice, ...]:
        """Numpy-style key selecting the tile's outer region on its slice."""
        index, tile = self.split(key)
        r0, c0, r1, c1 = self.grid.outer(tile)
        sel = list(self.slices.key(index))
        sel[self.slices.spatial[0]] = slice(r0, r1)
        sel[self.slices.spatial[1]] = slice(c0, c1)
        return tuple(sel)

    # ---------------------------------------------------------------- helpers
    def tile_key(self, index: Iterable[int], tile: Iterable[int]) -> tuple[int, ...]:
        """The region key of ``tile`` on slice ``index``."""
        return self.check_key((*tuple(index), *tuple(tile)))

    def split(self, key: Iterable[int]) -> tuple[Index, Tile]:
        """A region key → (slice index, tile)."""
        k = self.check_key(key)
        return k[:-2], (k[-2], k[-1])

    def to_dict(self) -> dict[str, Any]:
        return {**self.slices.to_dict(), "tiles": self.grid.to_dict()}


def layout_from_dict(d: dict[str, Any]) -> SliceLayout | TiledLayout:
    """The layout a store's signature (``image``) describes: tiled when it has
    ``tiles``."""
    slices = SliceLayout.from_dict(d)
    tiles = d.get("tiles")
    return slices if tiles is None else TiledLayout(slices, TileGrid.from_dict(tiles))


def key_shape(layout: Any) -> tuple[int, ...]:
    """Extent of each region-key entry (slice axes, then tile axes when tiled)."""
    return tuple(layout.key_shape) if isinstance(layout, TiledLayout) else layout.slice_shape


def region_size(layout: Any) -> tuple[int, int]:
    """(h, w) of one region's pixels: a tile's outer region, or a whole slice."""
    return layout.region_size if isinstance(layout, TiledLayout) else layout.slice_size
