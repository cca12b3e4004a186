"""Writing binary masks into an instance label image (pure numpy, no napari).

Rule: a committed object gets the next free id (``labels.max() + 1``). By default it
never overwrites existing objects (pixels already labelled keep their id); with
``overwrite=True`` it takes them.
"""

from __future__ import annotations

import numpy as np


def next_free_id(labels: np.ndarray) -> int:
    """1 + the largest id in ``labels`` (1 for an empty image)."""
    return int(labels.max(initial=0)) + 1


def paint_mask(
    labels: np.ndarray, mask: np.ndarray, label_id: int | None = None, overwrite: bool = False
) -> tuple[int, np.ndarray]:
    """Write ``mask`` (bool, same shape) into ``labels`` in place.

    Returns the id used and the boolean array of pixels actually written (empty when the
    mask only covered other objects and ``overwrite`` is False).
    """
    if mask.shape != labels.shape:
        raise ValueError(f"mask shape {mask.shape} does not match labels shape {labels.shape}")
    if label_id is None:
        label_id = next_free_id(labels)
    if label_id < 1 or label_id > np.iinfo(labels.dtype).max:
        raise ValueError(f"label id {label_id} does not fit labels of dtype {labels.dtype}")
    target = mask.astype(bool, copy=False)
    if not overwrite:
        target = target & (labels == 0)
    labels[target] = label_id
    return label_id, target


def paint_compact_masks(
    shape: tuple[int, int],
    crops: list[np.ndarray],
    origins: list[tuple[int, int]],
    min_area: int = 0,
) -> tuple[np.ndarray, list[int]]:
    """Instance label image from masks in priority order (index 0 = highest).

    Mask ``i`` is the bool array ``crops[i]`` placed with its top-left pixel at
    ``origins[i]`` (row, col). Masks are painted from the lowest to the highest priority,
    so where they overlap the higher-priority one wins. Objects left with no pixel, or
    fewer than ``min_area`` pixels, are dropped (their pixels become background) and
    the others get consecutive ids in priority order.

    Returns (labels (H, W) uint32, kept) where ``kept[j]`` is the index of the mask that
    got id ``j + 1``.
    """
    n = len(crops)
    if len(origins) != n:
        raise ValueError(f"{n} masks but {len(origins)} origins")
    labels = np.zeros(shape, dtype=np.uint32)
    for i in range(n - 1, -1, -1):
        (r, c), m = origins[i], crops[i]
        labels[r : r + m.shape[0], c : c + m.shape[1]][m] = i + 1
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    keep = (areas > 0) & (areas >= min_area)
    lut = np.zeros(n + 1, dtype=np.uint32)
    lut[1:][keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.uint32)
    return lut[labels], np.flatnonzero(keep).tolist()
