"""Prompt validation: napari-order prompts → checked arrays, with clear ValueErrors."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..transforms import boxes_to_model_xyxy, rc_to_model_xy


@dataclass(frozen=True)
class Prompts:
    """Validated prompts for B objects.

    points: (B, N, 2) (row, col) float64 or None; labels: (B, N) int32 or None;
    boxes: (B, 4) (row_min, col_min, row_max, col_max) or None;
    mask_input: (B, 4h, 4w) float32 logits or None.
    """

    points: np.ndarray | None
    labels: np.ndarray | None
    boxes: np.ndarray | None
    mask_input: np.ndarray | None

    @property
    def batch_size(self) -> int:
        """B, the number of objects (0 for an empty batch)."""
        for arr in (self.points, self.boxes, self.mask_input):
            if arr is not None:
                return int(arr.shape[0])
        return 0

    def model_points(
        self, original: tuple[int, int], input_size: tuple[int, int], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(x, y) coords (B, N, 2) float32 and labels (B, N) int32 for the prompt encoder."""
        if self.points is None or self.labels is None:
            return None
        xy = rc_to_model_xy(self.points, original, input_size)
        return (
            torch.as_tensor(xy, dtype=torch.float, device=device),
            torch.as_tensor(self.labels, dtype=torch.int, device=device),
        )

    def model_boxes(
        self, original: tuple[int, int], input_size: tuple[int, int], device: torch.device
    ) -> torch.Tensor | None:
        """(B, 4) (x0, y0, x1, y1) float32 for the prompt encoder."""
        if self.boxes is None:
            return None
        xyxy = boxes_to_model_xyxy(self.boxes, original, input_size)
        return torch.as_tensor(xyxy, dtype=torch.float, device=device)


def validate_prompts(
    points: object,
    labels: object,
    boxes: object,
    mask_input: object,
    image_size: tuple[int, int],
    low_res_size: tuple[int, int],
    batched: bool,
) -> Prompts:
    """Check shapes, values and bounds; return arrays with a leading batch axis.

    Coordinates must lie in the slice: -0.5 ≤ row ≤ H - 0.5 and -0.5 ≤ col ≤ W - 0.5
    (napari pixel centres are integers). Labels are 1 (positive) or 0 (negative).
    """
    if points is None and boxes is None and mask_input is None:
        raise ValueError("no prompt given: pass points (with labels), a box or a mask_input")
    lead = "(B, N, 2)" if batched else "(N, 2)"
    pts = lab = bxs = msk = None
    batch: list[int] = []
    if (points is None) != (labels is None):
        raise ValueError("points and labels must be given together")
    if points is not None:
        pts = _array(points, "points", np.float64)
        lab = _array(labels, "labels", None)
        if not batched:
            pts, lab = pts[None], lab[None]
        if pts.ndim != 3 or pts.shape[-1] != 2 or pts.shape[1] == 0:
            raise ValueError(f"points must have shape {lead} as (row, col), got {_shape(points)}")
        if lab.shape != pts.shape[:2]:
            raise ValueError(
                f"labels must have shape {pts.shape[1:2] if not batched else pts.shape[:2]} "
                f"(one per point), got {_shape(labels)}"
            )
        if lab.dtype.kind not in "biuf" or not np.isin(lab, (0, 1)).all():
            raise ValueError(f"labels must be 1 (positive) or 0 (negative), got {np.unique(lab)}")
        lab = lab.astype(np.int32)
        _check_inside(pts, image_size, "point")
        batch.append(pts.shape[0])
    if boxes is not None:
        bxs = _array(boxes, "box", np.float64)
        if not batched:
            bxs = bxs[None]
        if bxs.ndim != 2 or bxs.shape[1] != 4:
            want = "(B, 4)" if batched else "(4,)"
            raise ValueError(
                f"box must have shape {want} as (row_min, col_min, row_max, col_max), "
                f"got {_shape(boxes)}"
            )
        bad = (bxs[:, 2] <= bxs[:, 0]) | (bxs[:, 3] <= bxs[:, 1])
        if bad.any():
            raise ValueError(
                f"box {bxs[np.argmax(bad)].tolist()} is inverted or has zero area: need "
                "row_min < row_max and col_min < col_max"
            )
        _check_inside(bxs.reshape(-1, 2, 2), image_size, "box corner")
        batch.append(bxs.shape[0])
    if mask_input is not None:
        msk = _array(mask_input, "mask_input", np.float32)
        h, w = low_res_size
        if not batched:
            msk = msk.reshape(msk.shape[-2:]) if msk.size == h * w else msk
            msk = msk[None]
        elif msk.ndim == 4 and msk.shape[1] == 1:
            msk = msk[:, 0]
        if msk.ndim != 3 or msk.shape[1:] != (h, w):
            want = f"(B, {h}, {w})" if batched else f"({h}, {w})"
            raise ValueError(
                f"mask_input must be low-res logits of shape {want} (a previous result's "
                f"logits[i]), got {_shape(mask_input)}"
            )
        if not np.isfinite(msk).all():
            raise ValueError("mask_input contains NaN or infinite values")
        batch.append(msk.shape[0])
    if len(set(batch)) > 1:
        raise ValueError(f"points, boxes and mask_input disagree on the batch size: {batch}")
    return Prompts(pts, lab, bxs, msk)


def _array(value: object, name: str, dtype: type | None) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numeric array-like, got {type(value).__name__}") from None
    if arr.dtype == object:
        raise ValueError(f"{name} must be a regular numeric array (ragged input?)")
    return arr


def _shape(value: object) -> tuple[int, ...] | str:
    try:
        return np.shape(value)
    except ValueError:
        return "ragged"


def _check_inside(rc: np.ndarray, image_size: tuple[int, int], what: str) -> None:
    """rc: (..., 2) (row, col) must be finite and inside the slice."""
    if not np.isfinite(rc).all():
        raise ValueError(f"{what} coordinates must be finite")
    h, w = image_size
    rows, cols = rc[..., 0], rc[..., 1]
    outside = (rows < -0.5) | (rows > h - 0.5) | (cols < -0.5) | (cols > w - 0.5)
    if outside.any():
        bad = rc[outside][0].tolist()
        raise ValueError(
            f"{what} (row, col) = {bad} is outside the slice of shape (H, W) = {(h, w)}"
        )
