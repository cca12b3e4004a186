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
