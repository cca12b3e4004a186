"""Prompt sampling from instance labels, for training (and evaluation).

All coordinates produced here are napari-order pixels of the *original* slice:
points (row, col), boxes (row_min, col_min, row_max, col_max). They reach the model
through :func:`napari_sam.engine.transforms.rc_to_model_xy`, exactly like at inference.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage as ndi


def object_pixels(labels: np.ndarray, min_area: int = 10) -> dict[int, np.ndarray]:
    """label id → (n, 2) integer (row, col) pixels of that object, for objects with at
    least ``min_area`` pixels."""
    out: dict[int, np.ndarray] = {}
    for i, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        rr, cc = np.nonzero(labels[sl] == i)
        if rr.size >= min_area:
            out[i] = np.stack([rr + sl[0].start, cc + sl[1].start], axis=1)
    return out


def sample_positive(rng: np.random.Generator, pixels: np.ndarray, n: int) -> np.ndarray:
    """``n`` (row, col) points drawn uniformly from the object's pixels: (n, 2) float."""
    return pixels[rng.integers(0, len(pixels), n)].astype(np.float64)


def sample_negative(
    rng: np.random.Generator, labels: np.ndarray, label: int, pixels: np.ndarray, n: int
) -> np.ndarray:
    """``n`` (row, col) points outside the object, preferably near it (inside its bounding
    box grown by half its size on each side, which often hits a touching neighbour)."""
    h, w = labels.shape
    lo, hi = pixels.min(0), pixels.max(0)
    grow = np.maximum((hi - lo) // 2, 4)
    r0, c0 = np.maximum(lo - grow, 0)
    r1, c1 = np.minimum(hi + grow + 1, (h, w))
    rr, cc = np.nonzero(labels[r0:r1, c0:c1] != label)
    if rr.size == 0:
        rr, cc = np.nonzero(labels != label)
        r0 = c0 = 0
    if rr.size == 0:  # the object fills the image
        return sample_positive(rng, pixels, n)
    k = rng.integers(0, rr.size, n)
    return np.stack([rr[k] + r0, cc[k] + c0], axis=1).astype(np.float64)


def object_box(pixels: np.ndarray) -> np.ndarray:
    """Tight (row_min, col_min, row_max, col_max) of the object's pixel centres."""
    lo, hi = pixels.min(0), pixels.max(0)
    if hi[0] == lo[0]:
        hi = hi + np.array([1, 0])
    if hi[1] == lo[1]:
        hi = hi + np.array([0, 1])
    return np.concatenate([lo, hi]).astype(np.float64)


def jitter_box(
    rng: np.random.Generator,
    box: np.ndarray,
    shape: tuple[int, int],
    rel: float = 0.1,
    max_px: float = 20.0,
) -> np.ndarray:
    """Box with each side moved by N(0, ``rel`` × side length), clipped to ``max_px`` and to
    the image; stays valid (min < max)."""
    side = np.array([box[2] - box[0], box[3] - box[1]] * 2, dtype=np.float64)
    noise = np.clip(rng.normal(0.0, 1.0, 4) * rel * side, -max_px, max_px)
    out = box + noise
    h, w = shape
    out = np.clip(out, 0, [h - 1, w - 1, h - 1, w - 1])
    if out[2] <= out[0]:
        out[[0, 2]] = box[[0, 2]]
    if out[3] <= out[1]:
        out[[1, 3]] = box[[1, 3]]
    return out


def correction_clicks(
    pred: torch.Tensor,
    gt: torch.Tensor,
    generator: torch.Generator | None = None,
    centred: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One corrective click per object, sampled uniformly from the error region.

    pred, gt: (B, H, W) bool at model-input resolution. Returns (B, 2) (row, col) pixel
    coordinates of that grid and (B,) labels: 1 where the click marks a missed
    (false-negative) pixel, 0 for a false positive. Where the prediction is perfect, the
    click is a positive one inside the object.

    centred: optional (B,) bool; where True the click is instead the one a user would
    make — the most interior pixel of the largest error region
    (:func:`largest_error_click`), computed on the CPU.
    """
    err = (pred != gt).flatten(1).float()
    inside = gt.flatten(1).float()
    weights = torch.where(err.sum(1, keepdim=True) > 0, err, inside + 1e-12)
    idx = torch.multinomial(weights, 1, generator=generator)[:, 0]
    w = gt.shape[-1]
    rc = torch.stack([idx // w, idx % w], dim=1)
    labels = gt.flatten(1).gather(1, idx[:, None])[:, 0].long()
    if centred is not None and bool(centred.any()):
        has_err = err.sum(1) > 0
        pick = torch.nonzero(centred.to(pred.device) & has_err)[:, 0].tolist()
        p_np, g_np = pred[pick].cpu().numpy(), gt[pick].cpu().numpy()
        for j, b in enumerate(pick):
            (r, c), lab = largest_error_click(p_np[j], g_np[j])
            rc[b] = torch.as_tensor([int(r), int(c)], device=rc.device)
            labels[b] = lab
    return rc, labels


def largest_error_click(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, int]:
    """Deterministic corrective click (evaluation): the pixel farthest from the border of
    the largest error region; label 1 for a false-negative region, 0 for false-positive.
    pred, gt: (H, W) bool. Returns ((row, col), label)."""
    fn = np.pad(gt & ~pred, 1)
    fp = np.pad(pred & ~gt, 1)
    d_fn = ndi.distance_transform_edt(fn)
    d_fp = ndi.distance_transform_edt(fp)
    is_pos = d_fn.max() >= d_fp.max()
    d = d_fn if is_pos else d_fp
    r, c = np.unravel_index(int(np.argmax(d)), d.shape)
    return np.array([r - 1, c - 1], dtype=np.float64), int(is_pos)
