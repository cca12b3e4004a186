"""Region keys: how the embedding provider and the store address the parts of an image
that get one embedding each.

A *region key* is opaque to the callers of :class:`~.provider.EmbeddingProvider`: they
pass the index tuple of a slice (over the image's non-spatial axes, as napari addresses
non-displayed axes — docs/architecture.md) and never build store indices themselves.
With a :class:`~.slicing.SliceLayout` one region is one whole 2D slice and its key IS
that slice index. With a :class:`~.tiled_layout.TiledLayout` (planes larger than the
model input, docs/tiling.md) one region is one tile's outer region and its key is
``(*slice_index, tile_row, tile_col)``; the store then holds one entry per tile.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Protocol, runtime_checkable

import numpy as np

RegionKey = tuple[int, ...]


@runtime_checkable
class RegionLayout(Protocol):
    """The regions of an nD image of ``shape`` (what the provider needs of a layout)."""

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the whole image."""

    @property
    def n_regions(self) -> int:
        """Number of regions (embeddings) of the image."""

    def region_keys(self) -> Iterator[RegionKey]:
        """Every region key, in storage order."""

    def check_key(self, key: int | Iterable[int]) -> RegionKey:
        """The normalised key (an int accepted for one axis); IndexError naming the
        valid ranges when it is out of bounds."""

    def read(self, image: Any, key: RegionKey) -> np.ndarray:
        """The region's pixels as numpy (H, W) or (H, W, 3|4), reading only them."""
