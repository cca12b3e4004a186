"""A preview — the mask the prompts of one slice give — and how to tell a refinement of
the previous prompts (more clicks, same box) from a new object."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Preview:
    """A predicted mask for the slice ``index`` (H, W) bool, with its score and the
    request number that produced it (newer requests win). On a tiled slice ``tile`` is
    the tile that answered it and ``region`` its outer region (row_min, col_min,
    row_max, col_max) in slice pixels; ``logits`` are then that tile's (its
    refinements stay on it); the mask is placed at slice coordinates."""

    index: tuple[int, ...]
    mask: np.ndarray
    score: float
    request: int
    logits: np.ndarray | None = None  # low-res logits of the mask, for refinement
    prompts: tuple = ()  # (points as tuples, labels, box) that produced it
    outline: np.ndarray | None = None  # (H, W) bool: the mask's edge, as a GUI displays it
    tile: tuple[int, int] | None = None  # the tile that answered (tiled slices)
    region: tuple[int, int, int, int] | None = None  # its outer region, slice pixels
    # the prompt rounds that made it, exact: ((points, labels, box), ...) — one round per
    # prediction, each refining the previous one's logits (recorded as provenance)
    chain: tuple = ()


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
