"""Writing binary masks into an instance label image (pure numpy / SciPy, no napari).

Rule: a committed object gets the next free id (``labels.max() + 1``). By default it
never overwrites existing objects (pixels already labelled keep their id); with
``overwrite=True`` it takes them.

**Rim rule** (:class:`RimRule`, automatic masks): an object that overlaps objects placed
before it keeps only its uncovered pixels; when those are a small part of it or only a
thin rim (a mask slightly larger than a neighbour already placed leaves a 1–2 px
crescent around it), the object is dropped instead of becoming a junk object. Used by
:func:`paint_compact_masks` (overlaps between automatic masks) and
:func:`merge_new_objects` (automatic objects written into a label image that already
has objects). Defaults measured in docs/amg.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.segmentation import relabel_sequential

# measured on fresh synthetic nuclei with the demo model (docs/amg.md, benchmarks/amg_junk.py)
DEFAULT_MIN_UNCOVERED_FRACTION = 0.4
DEFAULT_RIM_WIDTH = 2


@dataclass(frozen=True)
class RimRule:
    """When the part of an object left uncovered by objects placed before it is junk.

    An object with none of its pixels covered is always kept. A partly covered object
    is dropped when its uncovered pixels are fewer than ``min_uncovered_fraction`` of
    its own pixels, or when no (rim_width + 1) × (rim_width + 1) square fits in them
    (a binary opening with that square removes them all: a rim at most ``rim_width``
    pixels thick; in nD the square lies in the last two axes, i.e. per 2D slice).
    ``min_uncovered_fraction=0`` and ``rim_width=0`` switch the rule off.
    """

    min_uncovered_fraction: float = DEFAULT_MIN_UNCOVERED_FRACTION
    rim_width: int = DEFAULT_RIM_WIDTH

    def __post_init__(self) -> None:
        f, w = self.min_uncovered_fraction, self.rim_width
        if isinstance(f, bool) or not isinstance(f, int | float | np.floating) or not 0 <= f <= 1:
            raise ValueError(f"min_uncovered_fraction must be in [0, 1], got {f!r}")
        if isinstance(w, bool) or not isinstance(w, int | np.integer) or w < 0:
            raise ValueError(f"rim_width must be an integer ≥ 0, got {w!r}")

    @property
    def active(self) -> bool:
        return self.min_uncovered_fraction > 0 or self.rim_width > 0

    def is_junk(self, uncovered: np.ndarray, area: int) -> bool:
        """``uncovered``: bool array (e.g. the object's box) of its pixels no other object
        holds; ``area``: all its own pixels. True when the object should be dropped."""
        n = int(np.count_nonzero(uncovered))
        if n == 0:
            return True
        if n >= area:
            return False
        if n < self.min_uncovered_fraction * area:
            return True
        return self.rim_width > 0 and not self._fits_square(uncovered)

    def _fits_square(self, uncovered: np.ndarray) -> bool:
        k = self.rim_width + 1
        if uncovered.shape[-1] < k or uncovered.shape[-2] < k:
            return False
        square = np.ones((1,) * (uncovered.ndim - 2) + (k, k), dtype=bool)
        # an erosion is non-empty exactly when the opening is (opening = dilated erosion)
        return bool(ndimage.binary_erosion(uncovered, square).any())


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


def renumber(labels: np.ndarray, offset: int = 1) -> np.ndarray:
    """Label image (any shape, ids ≥ 0) with its ids > 0 renumbered ``offset``,
    ``offset + 1``, … in increasing order (0 stays background); skimage's
    ``relabel_sequential``, which also widens the dtype when the ids need it."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return labels.copy()
    return relabel_sequential(labels, offset=offset)[0]


def paint_compact_masks(
    shape: tuple[int, int],
    crops: list[np.ndarray],
    origins: list[tuple[int, int]],
    min_area: int = 0,
    rule: RimRule | None = None,
) -> tuple[np.ndarray, list[int]]:
    """Instance label image from masks in priority order (index 0 = highest).

    Mask ``i`` is the bool array ``crops[i]`` placed with its top-left pixel at
    ``origins[i]`` (row, col). Where masks overlap the higher-priority one wins: masks
    claim the pixels not yet held, from the highest priority down. With a ``rule``
    (:class:`RimRule`), a mask whose unclaimed pixels are junk by that rule claims
    nothing (its pixels stay free for the masks below it). Then objects with fewer than
    ``min_area`` pixels are dropped (their pixels become background) and the others get
    consecutive ids in priority order.

    Returns (labels (H, W) uint32, kept) where ``kept[j]`` is the index of the mask that
    got id ``j + 1``.
    """
    n = len(crops)
    if len(origins) != n:
        raise ValueError(f"{n} masks but {len(origins)} origins")
    labels = np.zeros(shape, dtype=np.uint32)
    if rule is not None and rule.active:
        for i in range(n):
            (r, c), m = origins[i], crops[i]
            box = labels[r : r + m.shape[0], c : c + m.shape[1]]
            free = m & (box == 0)
            if not rule.is_junk(free, int(np.count_nonzero(m))):
                box[free] = i + 1
    else:  # painting from the lowest priority up gives the same image, vectorised
        for i in range(n - 1, -1, -1):
            (r, c), m = origins[i], crops[i]
            labels[r : r + m.shape[0], c : c + m.shape[1]][m] = i + 1
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    keep = (areas > 0) & (areas >= min_area)
    kept = np.concatenate([[False], keep])[labels]
    out = renumber(np.where(kept, labels, 0)).astype(np.uint32, copy=False)
    return out, np.flatnonzero(keep).tolist()


def merge_new_objects(
    existing: np.ndarray,
    new: np.ndarray,
    *,
    overwrite: bool = False,
    first_id: int | None = None,
    min_area: int = 0,
    rule: RimRule | None = None,
) -> tuple[np.ndarray, int]:
    """What to write into a label block that already has objects, from a new instance
    label image of the same shape (e.g. an automatic segmentation, any dimensionality).

    existing: the block's current labels (0 = background); new: new objects (ids > 0, in
    priority order, e.g. :attr:`AmgResult.labels`). Without ``overwrite`` a new object
    never takes an existing object's pixels; it keeps its other pixels unless those are
    junk by ``rule`` (default :class:`RimRule`: a rim or small part of it; ``None`` =
    the default rule, ``RimRule(0, 0)`` = off) or fewer than ``min_area``. With
    ``overwrite`` every new object is written whole. Kept objects get consecutive ids
    ``first_id, first_id + 1, …`` in the order of their ids in ``new``; ``first_id``
    defaults to ``existing.max() + 1`` — when the block is part of a larger image, pass
    the image's next free id instead (only the block is read).

    Returns (values, n_added): values has ``existing``'s shape and dtype (uint32 if it is
    not an unsigned / signed integer type), 0 = leave the pixel as it is, else the id to
    write; n_added = the number of objects written (ids first_id … first_id + n_added - 1).
    """
    existing, new = np.asarray(existing), np.asarray(new)
    if existing.shape != new.shape:
        raise ValueError(f"new labels shape {new.shape} ≠ existing block shape {existing.shape}")
    if new.size and new.min() < 0:
        raise ValueError("new labels must be ≥ 0")
    rule = RimRule() if rule is None else rule
    first = next_free_id(existing) if first_id is None else int(first_id)
    if first < 1:
        raise ValueError(f"first_id must be ≥ 1, got {first_id}")
    dtype = existing.dtype if existing.dtype.kind in "iu" else np.dtype(np.uint32)
    new = new.astype(np.int64, copy=False)
    n = int(new.max(initial=0))
    own = np.bincount(new.ravel(), minlength=n + 1)
    free = new if overwrite else np.where(existing == 0, new, 0)
    left = np.bincount(free.ravel(), minlength=n + 1)
    keep = (left > 0) & (left >= min_area)
    keep[0] = False
    if not overwrite and rule.active:
        partial = np.flatnonzero(keep & (left < own))
        boxes = ndimage.find_objects(new, max_label=n)
        for i in partial.tolist():
            box = boxes[i - 1]
            keep[i] = not rule.is_junk(free[box] == i, int(own[i]))
    n_added = int(keep.sum())
    if n_added and first + n_added - 1 > np.iinfo(dtype).max:
        raise ValueError(f"ids up to {first + n_added - 1} do not fit labels of dtype {dtype}")
    values = renumber(np.where(keep[free], free, 0), offset=first)
    return values.astype(dtype, copy=False), n_added
