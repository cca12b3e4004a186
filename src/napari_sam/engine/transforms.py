"""Geometry between a slice and the model input, and the one (row, col) ↔ (x, y) flip.

The slice (H, W) is resized so its longest side equals the model's ``image_size``
(rounding like the official ``ResizeLongestSide``), then zero-padded bottom/right.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def resized_shape(h: int, w: int, long_side: int) -> tuple[int, int]:
    """(h, w) after scaling the longest side to ``long_side`` (rounded half up, like
    the official ``ResizeLongestSide``), but never below 1 pixel: a very thin slice
    (e.g. 10000 × 10 for a 1024 model, whose short side would round to 0) keeps one
    row / column. Identical to the official sizes for every slice whose short side
    rounds to ≥ 1."""
    scale = long_side * 1.0 / max(h, w)
    return max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))


def resize_rgb(image: np.ndarray, long_side: int) -> np.ndarray:
    """(H, W, 3) uint8 → (h, w, 3) uint8 via Pillow's bilinear (antialiased) resize,
    the same resampling the official predictor uses."""
    h, w = resized_shape(image.shape[0], image.shape[1], long_side)
    if (h, w) == image.shape[:2]:
        return image
    return np.array(Image.fromarray(image).resize((w, h), Image.Resampling.BILINEAR))


def rc_to_model_xy(
    rc: np.ndarray, original_size: tuple[int, int], input_size: tuple[int, int]
) -> np.ndarray:
    """THE flip: (..., 2) napari (row, col) pixels of the slice → SAM (x, y) pixels of the
    resized model input. Float64 out."""
    rc = np.asarray(rc, dtype=np.float64)
    sy = input_size[0] / original_size[0]
    sx = input_size[1] / original_size[1]
    xy = np.empty_like(rc)
    xy[..., 0] = rc[..., 1] * sx
    xy[..., 1] = rc[..., 0] * sy
    return xy


def boxes_to_model_xyxy(
    boxes: np.ndarray, original_size: tuple[int, int], input_size: tuple[int, int]
) -> np.ndarray:
    """(B, 4) boxes (row_min, col_min, row_max, col_max) → (B, 4) (x0, y0, x1, y1)."""
    corners = np.asarray(boxes, dtype=np.float64).reshape(-1, 2, 2)
    return rc_to_model_xy(corners, original_size, input_size).reshape(-1, 4)
