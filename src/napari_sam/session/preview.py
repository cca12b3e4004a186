"""A preview — the mask the prompts of one slice give — and how to tell a refinement of
the previous prompts (more clicks, same box) from a new object."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Preview:
    """A predicted mask for the slice ``index``, with its score and the request number
    that produced it (newer requests win).

    ``local`` is the mask (h, w) bool of its *window*: the whole slice (H, W) on an
    untiled slice; on a tiled slice the outer region of the tile that answered it
    (``tile``; ``region`` = (row_min, col_min, row_max, col_max) in slice pixels,
    ``plane`` = (H, W) the slice's size) — a large plane never gets a plane-sized
    preview. :attr:`mask` places it at slice size (allocates (H, W): for callers that
    need the whole slice); :attr:`origin` is the window's top-left pixel. ``logits`` are
    the window's (a refinement stays on the same tile)."""

    index: tuple[int, ...]
    local: np.ndarray
    score: float
    request: int
    logits: np.ndarray | None = None  # low-res logits of the mask, for refinement
    prompts: tuple = ()  # (points as tuples, labels, box) that produced it
    outline: np.ndarray | None = None  # (h, w) bool: the window's edge pixels, as drawn
    tile: tuple[int, int] | None = None  # the tile that answered (tiled slices)
    region: tuple[int, int, int, int] | None = None  # its outer region, slice pixels
    # the prompt rounds that made it, exact: ((points, labels, box), ...) — one round per
    # prediction, each refining the previous one's logits (recorded as provenance)
    chain: tuple = ()
    plane: tuple[int, int] | None = None  # (H, W) of the slice when ``region`` is set

    @property
    def origin(self) -> tuple[int, int]:
        """(row, col) of the window's top-left pixel in the slice."""
        return (0, 0) if self.region is None else (int(self.region[0]), int(self.region[1]))

    @property
    def mask(self) -> np.ndarray:
        """The mask at slice size (H, W) bool (the window placed at :attr:`origin`)."""
        if self.region is None:
            return self.local
        from ..engine.tiling import place

        if self.plane is None:
            raise ValueError("a windowed preview needs its plane size")
        return place(self.local, self.region, self.plane)

    def bbox(self) -> tuple[int, int, int, int] | None:
        """(row_min, col_min, row_max, col_max) (max exclusive) of the mask's pixels in
        slice coordinates, or None when it is empty."""
        rows = np.flatnonzero(self.local.any(axis=1))
        if rows.size == 0:
            return None
        cols = np.flatnonzero(self.local.any(axis=0))
        r, c = self.origin
        return r + int(rows[0]), c + int(cols[0]), r + int(rows[-1]) + 1, c + int(cols[-1]) + 1


def prompt_key(points: np.ndarray, labels: np.ndarray, box: np.ndarray | None) -> tuple:
    """Hashable description of a prompt set (to tell a refinement from a new object)."""
    pts = tuple(map(tuple, np.round(np.asarray(points, float), 3)))
    return pts, tuple(np.asarray(labels).tolist()), None if box is None else tuple(box)


def exact_round(points: np.ndarray, labels: np.ndarray, box: np.ndarray | None) -> tuple:
    """One prompt round as plain floats / ints (points (row, col), box (row_min,
    col_min, row_max, col_max)), for provenance: not rounded, replay needs the values."""
    pts = tuple((float(r), float(c)) for r, c in np.asarray(points, float).reshape(-1, 2))
    lab = tuple(int(v) for v in np.asarray(labels).ravel())
    return pts, lab, None if box is None else tuple(float(v) for v in np.ravel(box))


def is_refinement(previous: tuple, current: tuple) -> bool:
    """True when ``current`` = ``previous`` plus more clicks (same box)."""
    if not previous:
        return False
    (p_pts, p_lab, p_box), (c_pts, c_lab, c_box) = previous, current
    n = len(p_pts)
    return c_box == p_box and len(c_pts) > n and c_pts[:n] == p_pts and c_lab[:n] == p_lab
