"""``napari-sam segment``: prompted segmentation of a 2D image (or one slice of a stack)
from a CSV of clicks / boxes, written as a label image and a PNG overlay.

Prompts CSV (header required; napari order):
  points: ``object,row,col[,label]`` (label 1 positive (default) / 0 negative;
          rows with the same ``object`` prompt one object together)
  boxes:  ``object,row_min,col_min,row_max,col_max``
Objects are committed in ``object`` order with ids 1..N; later objects never overwrite
earlier ones.

``--sample nuclei-2d`` runs on the bundled synthetic sample with simulated clicks (one
click at the interior-most pixel of each ground-truth nucleus) and also reports the
mean IoU against the ground truth.
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

import numpy as np

from . import UserError

HELP = "segment objects from point/box prompts (CSV) into a label image + PNG overlay"


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("image", nargs="?", help="2D image (.tif, .npy, .zarr)")
    src.add_argument("--sample", choices=["nuclei-2d"], help="use a bundled sample")
    p.add_argument("--points", help="CSV: object,row,col[,label]")
    p.add_argument("--boxes", help="CSV: object,row_min,col_min,row_max,col_max")
    p.add_argument("--slice", type=int, nargs="*", default=[], help="index of a stack slice")
    p.add_argument("--model", default="demo", help="registry name (default: demo)")
    p.add_argument("--checkpoint", help="checkpoint file (architecture from --model or shapes)")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--out", default="napari-sam-out", help="output folder")


def run(args: argparse.Namespace) -> int:
    from ..engine.labels import paint_mask
    from ..engine.loader import load_model
    from ..engine.predictor import Predictor
    from .io import read_image, write_labels, write_overlay

    truth = None
    if args.sample:
        image, truth = _sample()
        prompts = _clicks_from_truth(truth)
    else:
        image = np.asarray(read_image(args.image)[tuple(args.slice)])
        if image.ndim != 2 and not (image.ndim == 3 and image.shape[-1] in (3, 4)):
            raise UserError(f"image slice has shape {image.shape}; give --slice indices down to 2D")
        prompts = _read_prompts(args.points, args.boxes)
    model = load_model(
        args.model, checkpoint=args.checkpoint, device=args.device, precision=args.precision
    )
    predictor = Predictor(model)
    predictor.set_image(image)
    labels = np.zeros(image.shape[:2], np.uint32)
    for obj in sorted(prompts):
        q = prompts[obj]
        multimask = "box" not in q and len(q.get("points", [])) == 1
        r = predictor.predict(multimask=multimask, **q)
        paint_mask(labels, r.masks[r.best])
    out = Path(args.out)
    write_labels(out / "labels.tif", labels)
    write_overlay(out / "overlay.png", image, labels)
    print(f"{len(prompts)} objects → {out / 'labels.tif'}, {out / 'overlay.png'}")
    if truth is not None:
        print(f"mean IoU vs ground truth: {_mean_iou(labels, truth):.3f}")
    return 0


def _sample() -> tuple[np.ndarray, np.ndarray]:
    from ..synthetic import nuclei_2d

    return nuclei_2d((256, 256), seed=2024)


def _clicks_from_truth(truth: np.ndarray) -> dict[int, dict]:
    """One simulated positive click per object at its interior-most pixel."""
    from scipy import ndimage as ndi

    prompts = {}
    for obj in np.unique(truth[truth > 0]):
        dist = ndi.distance_transform_edt(truth == obj)
        r, c = np.unravel_index(np.argmax(dist), dist.shape)
        prompts[int(obj)] = {"points": [[float(r), float(c)]], "labels": [1]}
    return prompts


def _mean_iou(labels: np.ndarray, truth: np.ndarray) -> float:
    ious = []
    for obj in np.unique(truth[truth > 0]):
        gt = truth == obj
        ids, counts = np.unique(labels[gt], return_counts=True)
        best = max(
            (i for i in zip(ids, counts, strict=True) if i[0]), key=lambda t: t[1], default=None
        )
        if best is None:
            ious.append(0.0)
            continue
        pred = labels == best[0]
        ious.append((gt & pred).sum() / (gt | pred).sum())
    return float(np.mean(ious)) if ious else 0.0


def _read_prompts(points: str | None, boxes: str | None) -> dict[str, dict]:
    if not points and not boxes:
        raise UserError("give --points and/or --boxes (CSV files), or --sample")
    prompts: dict[str, dict] = defaultdict(dict)
    for row in _rows(points, {"object", "row", "col"}):
        q = prompts[row["object"]]
        q.setdefault("points", []).append([_num(row, "row"), _num(row, "col")])
        q.setdefault("labels", []).append(int(_num(row, "label")) if row.get("label") else 1)
    for row in _rows(boxes, {"object", "row_min", "col_min", "row_max", "col_max"}):
        keys = ("row_min", "col_min", "row_max", "col_max")
        prompts[row["object"]]["box"] = [_num(row, k) for k in keys]
    return dict(prompts)


def _rows(path: str | None, required: set[str]) -> list[dict[str, str]]:
    if not path:
        return []
    p = Path(path)
    if not p.is_file():
        raise UserError(f"prompt file not found: {p}")
    with p.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = required - set(reader.fieldnames or [])
        if missing:
            raise UserError(f"{p.name}: missing column(s) {sorted(missing)}")
        return list(reader)


def _num(row: dict[str, str], key: str) -> float:
    try:
        return float(row[key])
    except (TypeError, ValueError):
        raise UserError(f"not a number in column {key!r}: {row[key]!r}") from None
