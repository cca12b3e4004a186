"""Tiles of a large 2D plane, embedded at native resolution (docs/tiling.md).

SAM sees one fixed square input (``image_size``: 1024 px for ViT-B/L/H and vit_t, 256 px
for the demo model). A plane larger than that is covered by a grid of *inner tiles*
(``tile`` = (th, tw) pixels, the last row / column smaller) that partition the plane;
each is embedded together with a *halo* of ``halo`` = (hh, hw) pixels on every side,
so the embedded *outer* region is (th + 2 hh, tw + 2 hw) ≤ (image_size, image_size)
(at the plane's border the window moves inwards instead of being cut; it is smaller
only when the plane is) and is never resized: it is normalised and zero-padded bottom /
right to the model input, like the official transform pads a slice whose longest side
already equals the input size.

A prompt is answered on the tile whose inner region contains it (a box: the tile whose
outer region contains it, preferring the tile whose inner region contains its centre),
so an object near an inner border still sees its surroundings through the halo. Masks
come back in the outer region's pixels and are placed at plane coordinates by its
origin (:meth:`TileGrid.outer`).

Coordinates are napari order: (row, col) pixels of the plane; regions are
(row_min, col_min, row_max, col_max) with exclusive max (numpy slices).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .embedding import Embedding

Tile = tuple[int, int]  # (tile row, tile col) in the grid
Region = tuple[int, int, int, int]  # (row_min, col_min, row_max, col_max), max exclusive

#: Default halo as a fraction of the model input (measured: docs/tiling.md).
DEFAULT_HALO_FRACTION = 0.125


@dataclass(frozen=True)
class TileGrid:
    """Overlapping tiles over a plane of ``plane`` = (H, W) pixels.

    tile: (th, tw) inner tile size (the grid step); halo: (hh, hw) context added on
    every side of an inner tile before it is embedded (at the plane's border the window
    moves inwards instead: :meth:`outer`).
    """

    plane: tuple[int, int]
    tile: tuple[int, int]
    halo: tuple[int, int]

    def __post_init__(self) -> None:
        checks = (("plane", self.plane, 1), ("tile", self.tile, 1), ("halo", self.halo, 0))
        for name, v, low in checks:
            if len(v) != 2 or any(int(x) != x or x < low for x in v):
                raise ValueError(f"{name} must be two integers ≥ {low}, got {tuple(v)}")

    # ----------------------------------------------------------------- construction
    @classmethod
    def for_model(
        cls,
        plane: Sequence[int],
        input_size: int,
        tiling: str | Sequence[int] = "auto",
        halo: int | Sequence[int] | None = None,
    ) -> TileGrid | None:
        """The grid for a plane and a model input of ``input_size`` pixels, or None when
        the plane is used whole (today's behaviour: resized to the input).

        tiling: ``"auto"`` (tiles when the plane exceeds the input on either side),
        ``"off"`` (never), or an explicit tile shape (th, tw). halo: pixels (one int or
        (hh, hw)); default ``DEFAULT_HALO_FRACTION × input_size``. With ``"auto"`` the
        inner tile is ``input_size − 2 × halo``. Raises ValueError when the outer region
        would exceed the model input.
        """
        h, w = (int(v) for v in plane)
        s = int(input_size)
        if halo is None:
            hh = hw = round(DEFAULT_HALO_FRACTION * s)
        else:
            hh, hw = (int(halo), int(halo)) if np.ndim(halo) == 0 else (int(v) for v in halo)
        if isinstance(tiling, str):
            if tiling == "off":
                return None
            if tiling != "auto":
                raise ValueError(f"tiling must be 'auto', 'off' or a tile shape, got {tiling!r}")
            if h <= s and w <= s:
                return None
            th, tw = s - 2 * hh, s - 2 * hw
        else:
            th, tw = (int(v) for v in tiling)
        if min(hh, hw) < 0 or min(th, tw) < 1:
            raise ValueError(f"halo {(hh, hw)} leaves no inner tile for a {s}-px model input")
        if th + 2 * hh > s or tw + 2 * hw > s:
            raise ValueError(
                f"tile {(th, tw)} + 2 × halo {(hh, hw)} = {(th + 2 * hh, tw + 2 * hw)} px "
                f"exceeds the model input of {s} px: use a smaller tile or halo"
            )
        return cls((h, w), (th, tw), (hh, hw))

    # ------------------------------------------------------------------- geometry
    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of tiles."""
        return (math.ceil(self.plane[0] / self.tile[0]), math.ceil(self.plane[1] / self.tile[1]))

    @property
    def n_tiles(self) -> int:
        r, c = self.shape
        return r * c

    def tiles(self) -> Iterator[Tile]:
        """Every tile, row-major."""
        r, c = self.shape
        return ((i, j) for i in range(r) for j in range(c))

    def check(self, tile: Sequence[int]) -> Tile:
        i, j = (int(v) for v in tile)
        r, c = self.shape
        if not (0 <= i < r and 0 <= j < c):
            raise IndexError(f"tile {(i, j)} out of range for a {r} × {c} grid")
        return i, j

    def inner(self, tile: Sequence[int]) -> Region:
        """The tile's own pixels (the inner regions partition the plane)."""
        i, j = self.check(tile)
        (th, tw), (h, w) = self.tile, self.plane
        return i * th, j * tw, min((i + 1) * th, h), min((j + 1) * tw, w)

    def outer(self, tile: Sequence[int]) -> Region:
        """The embedded pixels: a window of (th + 2 hh, tw + 2 hw) pixels (at most the
        plane) centred on the inner region and shifted to lie inside the plane. Inside
        the plane that is the inner region grown by the halo; at the plane's border the
        window is not cut but moved inwards (the halo on the inner side grows), so every
        tile fills the model input when the plane is large enough — a zero-padded tile
        costs the same encoder time and segments worse (measured: docs/tiling.md)."""
        r0, c0, r1, c1 = self.inner(tile)
        (th, tw), (hh, hw), (h, w) = self.tile, self.halo, self.plane
        oh, ow = min(th + 2 * hh, h), min(tw + 2 * hw, w)
        a = min(max((r0 + r1 - oh) // 2, 0), h - oh)
        b = min(max((c0 + c1 - ow) // 2, 0), w - ow)
        return a, b, a + oh, b + ow

    def tile_at(self, row: float, col: float) -> Tile:
        """The tile whose inner region contains the pixel (row, col) (napari pixel
        centres are integers; coordinates are rounded, then clipped into the plane)."""
        h, w = self.plane
        r = min(max(int(np.floor(row + 0.5)), 0), h - 1)
        c = min(max(int(np.floor(col + 0.5)), 0), w - 1)
        return r // self.tile[0], c // self.tile[1]

    def tile_for_box(self, box: Sequence[float]) -> Tile | None:
        """A tile whose outer region contains the box (row_min, col_min, row_max,
        col_max) — the one whose inner region holds the box's centre if it does, else
        the nearest such tile by centre distance; None when no tile can hold it."""
        r0, c0, r1, c1 = (float(v) for v in box)
        centre = self.tile_at((r0 + r1) / 2, (c0 + c1) / 2)
        best, best_d = None, math.inf
        ci, cj = centre
        for i in range(max(ci - 1, 0), min(ci + 2, self.shape[0])):
            for j in range(max(cj - 1, 0), min(cj + 2, self.shape[1])):
                o = self.outer((i, j))
                # pixel centres: a box edge at -0.5 / H - 0.5 lies on the border
                if r0 >= o[0] - 0.5 and c0 >= o[1] - 0.5 and r1 <= o[2] - 0.5 and c1 <= o[3] - 0.5:
                    d = abs(i - ci) + abs(j - cj)
                    if d < best_d:
                        best, best_d = (i, j), d
        return best

    def tiles_in(self, region: Sequence[int]) -> list[Tile]:
        """Tiles whose inner region meets ``region`` (e.g. a viewport), row-major."""
        r0, c0, r1, c1 = (int(v) for v in region)
        (th, tw), (h, w) = self.tile, self.plane
        r0, c0 = max(r0, 0), max(c0, 0)
        r1, c1 = min(r1, h), min(c1, w)
        if r1 <= r0 or c1 <= c0:
            return []
        return [
            (i, j)
            for i in range(r0 // th, (r1 - 1) // th + 1)
            for j in range(c0 // tw, (c1 - 1) // tw + 1)
        ]

    def by_distance(self, tile: Sequence[int]) -> list[Tile]:
        """Every tile ordered by (Chebyshev, then Manhattan) distance from ``tile``:
        the one under a prompt first, then its neighbours (what to embed next)."""
        ti, tj = self.check(tile)
        return sorted(
            self.tiles(),
            key=lambda t: (max(abs(t[0] - ti), abs(t[1] - tj)), abs(t[0] - ti) + abs(t[1] - tj), t),
        )

    # ------------------------------------------------------------------ data
    def read(self, plane: Any, tile: Sequence[int]) -> np.ndarray:
        """The tile's outer region of a 2D plane (numpy / zarr / dask (H, W[, 3|4])),
        reading only that region."""
        r0, c0, r1, c1 = self.outer(tile)
        part = plane[r0:r1, c0:c1]
        if hasattr(part, "compute") and hasattr(part, "dask"):
            part = part.compute(scheduler="sync")
        return np.asarray(part)

    def to_dict(self) -> dict[str, Any]:
        return {"plane": list(self.plane), "tile": list(self.tile), "halo": list(self.halo)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TileGrid:
        return cls(
            tuple(int(v) for v in d["plane"]),  # type: ignore[arg-type]
            tuple(int(v) for v in d["tile"]),  # type: ignore[arg-type]
            tuple(int(v) for v in d["halo"]),  # type: ignore[arg-type]
        )


def to_tile(points_rc: np.ndarray, region: Region) -> np.ndarray:
    """(..., 2) plane (row, col) → (row, col) in the outer region ``region``."""
    out = np.asarray(points_rc, dtype=np.float64).copy()
    out[..., 0] -= region[0]
    out[..., 1] -= region[1]
    return out


def box_to_tile(box: Sequence[float], region: Region) -> np.ndarray:
    """A plane box (row_min, col_min, row_max, col_max) → the same box in ``region``."""
    b = np.asarray(box, dtype=np.float64).reshape(2, 2)
    return to_tile(b, region).reshape(4)


def place(mask: np.ndarray, region: Region, plane: tuple[int, int]) -> np.ndarray:
    """A mask of the outer region (h, w) → the same mask at plane size (H, W) bool."""
    out = np.zeros(plane, dtype=bool)
    r0, c0, r1, c1 = region
    out[r0:r1, c0:c1] = mask
    return out


def check_tile_embedding(grid: TileGrid, tile: Tile, emb: Embedding) -> Embedding:
    """``emb`` if it is the native-resolution embedding of ``tile``'s outer region, else
    ValueError naming the mismatch."""
    r0, c0, r1, c1 = grid.outer(tile)
    if tuple(emb.original_size) != (r1 - r0, c1 - c0) or tuple(emb.input_size) != (
        r1 - r0,
        c1 - c0,
    ):
        raise ValueError(
            f"the embedding of tile {tile} is of a {tuple(emb.original_size)} px region "
            f"resized to {tuple(emb.input_size)}; the tile's outer region is "
            f"{(r1 - r0, c1 - c0)} px embedded at native resolution "
            "(Predictor.compute_embedding(grid.read(plane, tile), resize=False))"
        )
    return emb
