"""Segmentation metrics and the simulated click, in one place (used by the engine —
z-linking, propagation prompts —, the command line's samples, the evaluation, the
benchmarks and the tests).

Masks are bool arrays; label images are integer arrays (0 = background), 2D or 3D.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two bool masks of the same shape (1.0 when both are empty)."""
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


def iou_matrix(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IoU of every object of label image ``a`` with every object of ``b`` (same shape).

    Returns (ids_a, ids_b, iou) with iou shaped (len(ids_a), len(ids_b)); one pass over
    the pixels (pair counts), no per-object masks."""
    a = np.asarray(a).ravel()
    b = np.asarray(b).ravel()
    if a.shape != b.shape:
        raise ValueError(f"label images differ in size: {a.size} vs {b.size}")
    ids_a, inv_a, area_a = np.unique(a, return_inverse=True, return_counts=True)
    ids_b, inv_b, area_b = np.unique(b, return_inverse=True, return_counts=True)
    inter = np.bincount(
        inv_a.astype(np.int64) * len(ids_b) + inv_b, minlength=len(ids_a) * len(ids_b)
    ).reshape(len(ids_a), len(ids_b))
    ka, kb = ids_a != 0, ids_b != 0
    inter = inter[ka][:, kb]
    union = area_a[ka][:, None] + area_b[kb][None, :] - inter
    return ids_a[ka], ids_b[kb], inter / np.maximum(union, 1)


def object_f1(pred: np.ndarray, truth: np.ndarray, iou: float = 0.5) -> tuple[int, int, int]:
    """(true positives, #predicted, #true) objects: a true object is found when some
    predicted object has IoU > ``iou`` with it (one-to-one for ``iou`` ≥ 0.5). Works for
    2D and 3D label images. F1 = 2·tp / (#predicted + #true)."""
    ids_p, ids_t, m = iou_matrix(pred, truth)
    tp = int((m > iou).any(axis=0).sum()) if m.size else 0
    return tp, len(ids_p), len(ids_t)


def matched_ious(labels: np.ndarray, truth: np.ndarray) -> list[float]:
    """Per object of ``truth`` (in id order): its IoU with the object of ``labels`` that
    covers most of it (0.0 when none does)."""
    out = []
    for obj in np.unique(truth[truth > 0]):
        gt = truth == obj
        ids, counts = np.unique(labels[gt], return_counts=True)
        counts, ids = counts[ids != 0], ids[ids != 0]
        out.append(iou(labels == ids[np.argmax(counts)], gt) if ids.size else 0.0)
    return out


def interior_point(mask: np.ndarray) -> np.ndarray:
    """(2,) the interior-most pixel (row, col) of a non-empty bool mask (H, W): the
    maximum of its distance to the background, the image border counting as background
    (first in C order on ties; computed on the mask's bounding crop). ValueError for an
    empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        raise ValueError("an empty mask has no interior point")
    cols = np.flatnonzero(mask.any(axis=0))
    crop = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    dist = ndimage.distance_transform_edt(np.pad(crop, 1))[1:-1, 1:-1]
    r, c = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return np.array([r + rows[0], c + cols[0]], float)
