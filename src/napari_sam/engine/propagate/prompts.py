"""Prompts for the next slice from an object's mask on the previous slice (propagation).

All coordinates are napari order: boxes (row_min, col_min, row_max, col_max), points
(row, col), in pixels of the slice. Mask inputs are SAM low-res logits (4h, 4w) in the
frame of the padded model input.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..metrics import interior_point
from ..transforms import resized_shape

MODES = ("box", "mask", "points", "box+mask", "box+points", "mask+points", "box+mask+points")
SEED_LOGIT = float(np.log((1 - 1e-3) / 1e-3))  # ±6.9: a confident binary mask as logits


def parse_mode(mode: str) -> frozenset[str]:
    """``"box+mask"`` → {"box", "mask"}; raises ValueError for unknown parts."""
    parts = frozenset(p.strip() for p in mode.split("+") if p.strip())
    if not parts or not parts <= {"box", "mask", "points"}:
        raise ValueError(f"mode must combine 'box', 'mask' and 'points' with '+', got {mode!r}")
    return parts


def mask_box(mask: np.ndarray, margin: float = 0.1, min_margin: float = 2.0) -> np.ndarray:
    """(4,) box around a non-empty bool mask (H, W), grown on each side by
    ``max(min_margin, margin × side length)`` pixels and clipped to the slice."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    r0, r1, c0, c1 = rows[0], rows[-1], cols[0], cols[-1]
    mr = max(min_margin, margin * (r1 - r0 + 1))
    mc = max(min_margin, margin * (c1 - c0 + 1))
    h, w = mask.shape
    box = np.array([r0 - mr, c0 - mc, r1 + mr, c1 + mc], float)
    return np.clip(box, -0.5, [h - 0.5, w - 0.5, h - 0.5, w - 0.5])


def mask_to_logits(
    mask: np.ndarray, image_size: int, low_res: tuple[int, int], gain: float = SEED_LOGIT
) -> np.ndarray:
    """A full-resolution bool mask (H, W) → low-res logits (4h, 4w) float32, in the frame
    SAM uses for ``mask_input``: resized like the image (longest side = ``image_size``),
    padded bottom/right, area-averaged down to ``low_res`` (``F.interpolate(mode="area")``
    both times, so a slice smaller than the low-res frame is replicated, not striped);
    the covered fraction f maps
    to ``gain × (2f − 1)`` (so ±``gain`` inside / outside, like micro-sam's
    ``eps = 1e-3`` inverse sigmoid)."""
    h, w = mask.shape
    rh, rw = resized_shape(h, w, image_size)
    m = torch.from_numpy(np.asarray(mask, dtype=np.float64))[None, None]
    m = F.interpolate(m, size=(rh, rw), mode="area")  # the slice as the model sees it
    m = F.pad(m, (0, image_size - rw, 0, image_size - rh))  # padded bottom / right
    frac = F.interpolate(m, size=tuple(low_res), mode="area")[0, 0].numpy()
    return (gain * (2.0 * frac - 1.0)).astype(np.float32)


def build_prompts(
    parts: frozenset[str],
    masks: list[np.ndarray],
    logits: list[np.ndarray | None],
    image_size: int,
    low_res: tuple[int, int],
    margin: float,
) -> dict[str, np.ndarray]:
    """Batched ``predict_batch`` keyword arguments for B objects from their previous
    masks (H, W) bool and previous low-res logits (None for a seed mask, which is then
    converted with :func:`mask_to_logits`)."""
    kw: dict[str, np.ndarray] = {}
    if "box" in parts:
        kw["boxes"] = np.stack([mask_box(m, margin) for m in masks])
    if "points" in parts:
        kw["points"] = np.stack([interior_point(m)[None] for m in masks])
        kw["labels"] = np.ones(kw["points"].shape[:2], np.int32)
    if "mask" in parts:
        kw["mask_inputs"] = np.stack(
            [
                lg if lg is not None else mask_to_logits(m, image_size, low_res)
                for m, lg in zip(masks, logits, strict=True)
            ]
        )
    return kw
