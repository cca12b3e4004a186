"""Geometry and per-mask steps of automatic mask generation, in napari (row, col) order.

Boxes are inclusive pixel indices (row_min, col_min, row_max, col_max) — the official
generator's XYXY boxes with the axes swapped. Box IoU and area are symmetric in the
axes, so NMS on these boxes equals NMS on the official ones. Crop boxes are
(row0, col0, row1, col1) with exclusive row1 / col1, like the official crop boxes.

Masks are kept compact: a bool array the size of the mask's box plus the box, never a
full-size array per mask.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage

_EIGHT = np.ones((3, 3), dtype=bool)


class CompactMask:
    """One mask: ``crop`` (bool, box-sized) placed at ``box`` in the image, stored as
    packed bits (1 bit per pixel of its box, never a full-size array).

    box: (row_min, col_min, row_max, col_max) inclusive; an empty mask has a 1 × 1
    False crop at its crop's origin (the official (0, 0, 0, 0) box, uncropped).
    predicted_iou, stability_score: the decoder's scores. point: (row, col) prompt in
    image pixels. crop_box: (row0, col0, row1, col1). area: its number of pixels.
    """

    __slots__ = (
        "_bits",
        "_size",
        "area",
        "box",
        "crop_box",
        "point",
        "predicted_iou",
        "stability_score",
    )

    def __init__(
        self,
        crop: np.ndarray,
        box: tuple[int, int, int, int],
        predicted_iou: float,
        stability_score: float,
        point: tuple[float, float],
        crop_box: tuple[int, int, int, int],
    ) -> None:
        crop = np.asarray(crop, dtype=bool)
        if crop.shape != (box[2] - box[0] + 1, box[3] - box[1] + 1):
            raise ValueError(f"crop shape {crop.shape} does not fit box {box}")
        self._size = crop.shape
        self._bits = np.packbits(crop, axis=None)
        self.area = int(np.count_nonzero(crop))
        self.box = tuple(int(v) for v in box)
        self.predicted_iou = float(predicted_iou)
        self.stability_score = float(stability_score)
        self.point = point
        self.crop_box = crop_box

    @property
    def crop(self) -> np.ndarray:
        """The box-sized bool mask (unpacked on each access)."""
        h, w = self._size
        return np.unpackbits(self._bits, count=h * w).reshape(h, w).view(bool)

    def dense(self, shape: tuple[int, int]) -> np.ndarray:
        """The mask as a full (H, W) bool array."""
        out = np.zeros(shape, dtype=bool)
        r0, c0, r1, c1 = self.box
        out[r0 : r1 + 1, c0 : c1 + 1] = self.crop
        return out

    def __repr__(self) -> str:
        return (
            f"CompactMask(box={self.box}, area={self.area}, "
            f"predicted_iou={self.predicted_iou:.4f}, stability_score="
            f"{self.stability_score:.4f}, point={self.point}, crop_box={self.crop_box})"
        )


def point_grid(n_per_side: int) -> np.ndarray:
    """(n², 2) cell centres of an n × n grid in [0, 1]², (row, col), row-major — the
    official grid (its (x, y) points with the axes swapped, same order)."""
    side = np.linspace(0.5 / n_per_side, 1 - 0.5 / n_per_side, n_per_side)
    rows, cols = np.meshgrid(side, side, indexing="ij")
    return np.stack([rows.ravel(), cols.ravel()], axis=-1)


def crop_boxes(
    shape: tuple[int, int], n_layers: int, overlap_ratio: float
) -> list[tuple[tuple[int, int, int, int], int]]:
    """[(crop box (row0, col0, row1, col1), layer)]: the whole image (layer 0), then
    (2^i)² overlapping crops for layer i = 1..n_layers (official order and sizes)."""
    h, w = shape
    out = [((0, 0, h, w), 0)]
    for layer in range(1, n_layers + 1):
        n = 2**layer
        overlap = int(overlap_ratio * min(h, w) * (2 / n))
        ch = math.ceil((overlap * (n - 1) + h) / n)
        cw = math.ceil((overlap * (n - 1) + w) / n)
        # official order: x-major (for x0: for y0:)
        for c0 in (int((cw - overlap) * i) for i in range(n)):
            for r0 in (int((ch - overlap) * i) for i in range(n)):
                out.append(((r0, c0, min(r0 + ch, h), min(c0 + cw, w)), layer))
    return out


def near_crop_edge(
    boxes: torch.Tensor, crop: tuple[int, int, int, int], shape: tuple[int, int]
) -> torch.Tensor:
    """(k,) bool: a box side within 20 px of a crop side that is not an image side
    (boxes already in image coordinates; the official rule, including its comparison of
    inclusive box ends with exclusive crop ends)."""
    crop_t = torch.as_tensor(crop, dtype=torch.float, device=boxes.device)
    img_t = torch.as_tensor((0, 0, *shape), dtype=torch.float, device=boxes.device)
    b = boxes.float()
    near_crop = torch.isclose(b, crop_t[None], atol=20.0, rtol=0)
    near_img = torch.isclose(b, img_t[None], atol=20.0, rtol=0)
    return (near_crop & ~near_img).any(dim=1)


def place_crops(
    crops: list[np.ndarray], boxes: np.ndarray, offset: tuple[int, int]
) -> list[tuple[np.ndarray, tuple[int, int, int, int]]]:
    """Box-sized crops of masks and their (k, 4) boxes in crop coordinates → [(crop,
    image box)], boxes moved by ``offset`` (crop origin); an empty mask becomes a 1 × 1
    False crop at the offset (the official (0, 0, 0, 0) box, moved like any other)."""
    out = []
    dr, dc = offset
    for crop, (r0, c0, r1, c1) in zip(crops, boxes.tolist(), strict=True):
        if not crop.any():
            out.append((np.zeros((1, 1), bool), (dr, dc, dr, dc)))
        else:
            out.append((crop, (r0 + dr, c0 + dc, r1 + dr, c1 + dc)))
    return out


# ---------------------------------------------------------------- small-region clean-up
def clean_small_regions(
    mask: CompactMask, min_area: int, shape: tuple[int, int]
) -> tuple[np.ndarray, tuple[int, int, int, int], bool]:
    """Fill holes, then remove islands, smaller than ``min_area`` px (8-connected), as the
    official ``remove_small_regions`` does on the full-size mask ("holes", then
    "islands"; if every island is small the largest is kept).

    Works on the box-sized crop padded by one background pixel on each side that is not
    on the image border; that padding stands for the background outside the box (its
    true area is added), so component sizes equal the full-image ones. Returns
    (crop, box, changed).
    """
    r0, c0, r1, c1 = mask.box
    h, w = shape
    pads = (int(r0 > 0), int(c0 > 0), int(r1 < h - 1), int(c1 < w - 1))  # top left bottom right
    bh, bw = r1 - r0 + 1, c1 - c0 + 1
    band_areas = (r0 * w, bh * c0, (h - 1 - r1) * w, bh * (w - 1 - c1))
    if any(p and a < min_area for p, a in zip(pads, band_areas, strict=True)):
        # background outside the box may itself be a small hole: do it on the full mask
        full, changed = _remove_small(mask.dense(shape), min_area, band_areas=None)
        if not full.any():
            return np.zeros((1, 1), bool), (0, 0, 0, 0), changed
        rows, cols = np.flatnonzero(full.any(1)), np.flatnonzero(full.any(0))
        box = (int(rows[0]), int(cols[0]), int(rows[-1]), int(cols[-1]))
        return full[box[0] : box[2] + 1, box[1] : box[3] + 1].copy(), box, changed
    pt, pl, pb, pr = pads
    padded = np.zeros((bh + pt + pb, bw + pl + pr), dtype=bool)
    padded[pt : pt + bh, pl : pl + bw] = mask.crop
    # representative pad pixel of each band: top row, left column, bottom row, right column
    reps = ((0, pl), (pt, 0), (padded.shape[0] - 1, pl), (pt, padded.shape[1] - 1))
    bands = [(rep, a) for p, rep, a in zip(pads, reps, band_areas, strict=True) if p]
    out, changed = _remove_small(padded, min_area, band_areas=bands, pads=pads)
    crop = out[pt : pt + bh, pl : pl + bw]
    if not changed:
        return mask.crop, mask.box, False
    rows, cols = np.flatnonzero(crop.any(1)), np.flatnonzero(crop.any(0))
    box = (r0 + int(rows[0]), c0 + int(cols[0]), r0 + int(rows[-1]), c0 + int(cols[-1]))
    sub = crop[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].copy()
    return sub, box, True


def _remove_small(
    mask: np.ndarray,
    min_area: int,
    band_areas: list | None,
    pads: tuple[int, ...] = (0, 0, 0, 0),
) -> tuple[np.ndarray, bool]:
    """Holes then islands on ``mask`` (possibly padded, pad pixels are background).

    band_areas: [((row, col) of a pad pixel, true area of that band)] or None.
    """
    pt, pl, pb, pr = pads
    inner = np.zeros(mask.shape, dtype=bool)
    inner[pt : mask.shape[0] - pb, pl : mask.shape[1] - pr] = True
    # holes: small background components become foreground
    lab, n = ndimage.label(~mask, structure=_EIGHT)
    sizes = np.bincount(lab[inner], minlength=n + 1)
    for (r, c), area in band_areas or []:
        sizes[lab[r, c]] += area
    small = np.flatnonzero(sizes[1:] < min_area) + 1
    changed = small.size > 0
    if changed:
        mask = mask | np.isin(lab, small)
    # islands: small foreground components are removed (all small → keep the largest)
    lab, n = ndimage.label(mask, structure=_EIGHT)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:]
    small = sizes < min_area
    if small.any():
        changed = True
        keep = np.flatnonzero(~small) + 1
        if keep.size == 0:
            keep = np.array([int(np.argmax(sizes)) + 1])
        mask = np.isin(lab, keep)
    return mask, changed
