"""Results and parameter checks of automatic mask generation (see :mod:`.generator`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import find_objects

from ..labels import RimRule, paint_compact_masks
from .masks import CompactMask, point_grid

PAINT_ORDERS = ("quality", "area")


@dataclass(frozen=True)
class ObjectRecord:
    """One object of the label image.

    label: its id. area / bbox: pixels with this id in the label image and their
    inclusive box (row_min, col_min, row_max, col_max). mask_area: pixels of the mask
    before overlap resolution. point: the (row, col) prompt; crop_box: (row0, col0,
    row1, col1), exclusive ends. mask_index: index into :attr:`AmgResult.masks`.
    """

    label: int
    predicted_iou: float
    stability_score: float
    area: int
    bbox: tuple[int, int, int, int]
    mask_area: int
    point: tuple[float, float]
    crop_box: tuple[int, int, int, int]
    mask_index: int


@dataclass
class AmgResult:
    """labels: (H, W) uint32; records[i].label == i + 1; masks: every mask the
    generator kept (the official output set, in its order), compact."""

    labels: np.ndarray
    records: list[ObjectRecord]
    masks: list[CompactMask]

    def features(self) -> dict[str, np.ndarray]:
        """Per-object columns (one row per label, e.g. for a napari Labels ``features``)."""
        r = self.records
        return {
            "label": np.array([x.label for x in r], dtype=np.uint32),
            "predicted_iou": np.array([x.predicted_iou for x in r], dtype=np.float32),
            "stability_score": np.array([x.stability_score for x in r], dtype=np.float32),
            "area": np.array([x.area for x in r], dtype=np.int64),
        }


def build_result(
    masks: list[CompactMask],
    shape: tuple[int, int],
    paint_order: str,
    min_object_area: int,
    rule: RimRule | None = None,
) -> AmgResult:
    """Label image + records from the generator's masks (the overlap rule of
    :mod:`.amg`): paint priority by quality (predicted_iou × stability_score) or area;
    ``rule`` drops masks left as a rim or small part (:class:`~.labels.RimRule`)."""
    if paint_order == "quality":
        key = [-m.predicted_iou * m.stability_score for m in masks]
    else:
        key = [-m.area for m in masks]
    order = np.argsort(np.asarray(key, dtype=np.float64), kind="stable")  # first = top
    labels, kept = paint_compact_masks(
        shape,
        [masks[i].crop for i in order],
        [masks[i].box[:2] for i in order],
        min_area=min_object_area,
        rule=rule,
    )
    areas = np.bincount(labels.ravel(), minlength=len(kept) + 1)
    slices = find_objects(labels, max_label=len(kept)) if kept else []
    records = []
    for lab, (pos, sl) in enumerate(zip(kept, slices, strict=True), start=1):
        m = masks[int(order[pos])]
        records.append(
            ObjectRecord(
                label=lab,
                predicted_iou=m.predicted_iou,
                stability_score=m.stability_score,
                area=int(areas[lab]),
                bbox=(sl[0].start, sl[1].start, sl[0].stop - 1, sl[1].stop - 1),
                mask_area=m.area,
                point=m.point,
                crop_box=m.crop_box,
                mask_index=int(order[pos]),
            )
        )
    return AmgResult(labels, records, masks)


def build_grids(
    points_per_side: int | None,
    point_grids: list[np.ndarray] | None,
    n_layers: int,
    downscale: int,
) -> list[np.ndarray]:
    if (points_per_side is None) == (point_grids is None):
        raise ValueError("give exactly one of points_per_side and point_grids")
    if points_per_side is not None:
        check_int("points_per_side", points_per_side, 1)
        grids = []
        for i in range(n_layers + 1):
            n = int(points_per_side / downscale**i)
            if n < 1:
                raise ValueError(
                    f"crop layer {i} would have {points_per_side}/{downscale}^{i} < 1 points "
                    "per side: lower crop_n_layers or crop_n_points_downscale_factor"
                )
            grids.append(point_grid(n))
        return grids
    grids = [np.asarray(g, dtype=np.float64) for g in point_grids]
    if len(grids) < n_layers + 1:
        raise ValueError(f"point_grids needs one grid per crop layer ({n_layers + 1})")
    for g in grids:
        if g.ndim != 2 or g.shape[1] != 2 or len(g) == 0 or not ((g >= 0) & (g <= 1)).all():
            raise ValueError("each point grid must be (N, 2) normalised (row, col) in [0, 1]")
    return grids


def check_int(name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{name} must be an integer ≥ {low}, got {value!r}")


def check_range(
    name: str,
    value: object,
    low: float,
    high: float,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    ok = isinstance(value, int | float | np.floating) and not isinstance(value, bool)
    if ok:
        v = float(value)
        ok = (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if not ok:
        lo, hi = "(" if low_open else "[", ")" if high_open else "]"
        raise ValueError(f"{name} must be in {lo}{low}, {high}{hi}, got {value!r}")
