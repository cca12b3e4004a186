"""Prompt-based evaluation against instance ground truth (used by benchmarks/eval_demo.py
and the semantic tests). Goes through the public :class:`~napari_sam.engine.decode.Predictor`,
so it measures exactly what a user gets."""

from __future__ import annotations

import numpy as np

from ..engine.decode.predictor import Predictor
from ..engine.loader import SamModel
from ..engine.metrics import interior_point, iou
from .prompts import largest_error_click, object_box, object_pixels

MODES = ("point", "point_random", "box", "point+1", "box+1")


def evaluate(
    model: SamModel,
    pairs: list[tuple[np.ndarray, np.ndarray]],
    seed: int = 0,
    min_area: int = 30,
    max_objects: int | None = None,
) -> dict[str, list[float]]:
    """IoU per object for each prompt mode of :data:`MODES` (and ``"area"``: the object's
    size in pixels, same order).

    point: the object's centre pixel, 3 masks, the highest-scored one is kept;
    point_random: a uniformly random pixel of the object (seeded), same rule;
    box: the tight bounding box, 1 mask; point+1 / box+1: then one corrective click at the
    centre of the largest error region, with the previous low-res logits as mask input.
    """
    rng = np.random.default_rng(seed)
    pred = Predictor(model)
    out: dict[str, list[float]] = {m: [] for m in (*MODES, "area")}
    for image, labels in pairs:
        pred.set_image(image)
        objects = object_pixels(labels, min_area)
        ids = list(objects)[:max_objects] if max_objects else list(objects)
        for lab in ids:
            gt = labels == lab
            px = objects[lab]
            out["area"].append(float(len(px)))
            for mode, pts in (
                ("point", interior_point(gt)[None]),
                ("point_random", px[rng.integers(len(px))][None].astype(np.float64)),
            ):
                r = pred.predict(points=pts, labels=[1], multimask=True)
                out[mode].append(iou(r.masks[r.best], gt))
                if mode == "point":
                    first = r
            box = object_box(px)
            rb = pred.predict(box=box, multimask=False)
            out["box"].append(iou(rb.masks[0], gt))
            # one correction click after the centre point
            m0 = first.masks[first.best]
            click, lab1 = largest_error_click(m0, gt)
            r = pred.predict(
                points=np.stack([interior_point(gt), click]),
                labels=[1, lab1],
                mask_input=first.logits[first.best],
                multimask=False,
            )
            out["point+1"].append(iou(r.masks[0], gt))
            click, lab1 = largest_error_click(rb.masks[0], gt)
            r = pred.predict(
                points=click[None], labels=[lab1], box=box, mask_input=rb.logits[0], multimask=False
            )
            out["box+1"].append(iou(r.masks[0], gt))
    return out


def summarise(results: dict[str, list[float]]) -> dict[str, float]:
    """Mean IoU per mode."""
    return {k: float(np.mean(v)) if v else float("nan") for k, v in results.items() if k in MODES}


def seed_slices(truth: np.ndarray, fractions: tuple[float, ...]) -> np.ndarray:
    """Seeds (Z, H, W) for propagation benchmarks: every object of ``truth`` annotated
    (with its ground truth) on the slices at ``fractions`` of its z extent
    ((0.5,) = the middle slice; (0.25, 0.75) = two slices)."""
    seeds = np.zeros_like(truth)
    for obj in np.unique(truth[truth > 0]):
        zs = np.flatnonzero((truth == obj).any(axis=(1, 2)))
        for f in fractions:
            z = round(float(zs[0] + f * (zs[-1] - zs[0])))
            seeds[z][truth[z] == obj] = obj
    return seeds


def ious_3d(result: np.ndarray, truth: np.ndarray) -> list[float]:
    """Per ground-truth object: IoU of the voxels with the same id in ``result``."""
    return [iou(result == obj, truth == obj) for obj in np.unique(truth[truth > 0])]
