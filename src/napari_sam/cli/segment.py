"""``napari-sam segment``: prompted segmentation of a 2D image (or one slice of a stack)
from a CSV of clicks / boxes, written as a label image and a PNG overlay.

Prompts CSV (header required, UTF-8 with or without a BOM; napari order):
  points: ``object,row,col[,label]`` (label 1 positive (default when empty) / 0
          negative, nothing else; rows with the same ``object`` prompt one object
          together)
  boxes:  ``object,row_min,col_min,row_max,col_max`` (one box per object)
Objects get the ids 1..N in ``object`` order, and later objects never overwrite earlier
ones. The order: when every ``object`` value is an integer they are sorted as numbers
(objects 2, 10, 1 → ids 2, 3, 1), when none is they are sorted as text; a mix of
numbers and names is refused. Unless every object's id equals its own number, the
mapping ``object → id`` is printed.

Outputs: ``OUT/labels.tif`` and ``OUT/overlay.png``; either one that exists is replaced
only with ``--overwrite`` (checked before any work).

``--sample nuclei-2d`` runs on the bundled synthetic sample with simulated clicks (one
click at the interior-most pixel of each ground-truth nucleus) and also reports the
mean IoU against the ground truth.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from . import UserError
from .common import OVERWRITE_HELP, add_tiling_arguments

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
    p.add_argument("--level", type=int, default=0,
                   help="OME-Zarr image: resolution level (default 0)")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    add_tiling_arguments(p)


def run(args: argparse.Namespace) -> int:
    from ..session import SegmentationSession, commit_mask
    from .common import load_model, tile_grid, user_errors
    from .io import check_output, image_calibration, read_image, write_labels, write_overlay
    from .prompts_csv import id_mapping, read_prompts

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder")
    labels_path = check_output(out / "labels.tif", args.overwrite)
    overlay_path = check_output(out / "overlay.png", args.overwrite, (".png",))
    truth = None
    if args.sample:
        image, truth = _sample()
        prompts = _clicks_from_truth(truth)
    else:
        image = _select_slice(read_image(args.image, args.level), args.slice)
        prompts = read_prompts(args.points, args.boxes)
    ids = id_mapping(prompts)
    model = load_model(args)
    rgb = image.ndim == 3  # _select_slice: (H, W) or (H, W, 3|4)
    grid = tile_grid(args, model, image.shape[:2])
    tiles = "off" if grid is None else grid.tile
    session = SegmentationSession(
        model, image, rgb, store_path=None, tiling=tiles, halo=None if grid is None else grid.halo
    )  # untiled: the slice is encoded once; tiled: each tile a prompt needs, once
    if grid is not None:
        print(
            f"tiles: {grid.shape[0]} × {grid.shape[1]} of {grid.tile[0]} × {grid.tile[1]} px "
            f"+ halo {grid.halo[0]} px (each prompt is answered on one tile)"
        )
    labels = np.zeros(image.shape[:2], np.uint32)
    for obj, _id in ids.items():  # ids are 1..N in this order: commit order = id order
        q = prompts[obj]
        pts = np.asarray(q.get("points", np.zeros((0, 2))), float)
        lab = np.asarray(q.get("labels", np.zeros(0, int)))
        box = q.get("box")
        with user_errors(ValueError, prefix=f"object {obj!r}: "):  # no tile can answer it
            tile = session.tile_for(pts, lab, box)
        # the embedding outside user_errors: an encoder failure is a bug, not the user's
        session.embedding(()) if tile is None else session.tile_embedding((), tile)
        with user_errors(ValueError, prefix=f"object {obj!r}: "):  # outside the slice, ...
            preview = session.prompt((), pts, lab, box, request=0)  # that embedding, in RAM
        commit_mask(labels, preview.mask)  # next free id; never over earlier objects
    cal = None if args.sample else _plane_calibration(image_calibration(args.image, args.level))
    write_labels(labels_path, labels, overwrite=args.overwrite, calibration=cal)
    write_overlay(overlay_path, image, labels, overwrite=args.overwrite)
    if any(str(obj) != str(i) for obj, i in ids.items()):
        print("object → id: " + ", ".join(f"{obj} → {i}" for obj, i in ids.items()))
    print(f"{len(prompts)} objects → {labels_path}, {overlay_path}")
    if truth is not None:
        from ..engine.metrics import matched_ious

        ious = matched_ious(labels, truth)
        print(f"mean IoU vs ground truth: {float(np.mean(ious)) if ious else 0.0:.3f}")
    return 0


def _select_slice(image: Any, index: list[int]) -> np.ndarray:
    """``--slice`` indices (leading axes) → a 2D (H, W) or RGB (H, W, 3|4) slice."""
    shape = tuple(image.shape)
    if len(index) > len(shape) - 2:
        raise UserError(
            f"--slice {' '.join(map(str, index))}: the image has shape {shape}, "
            f"at most {max(len(shape) - 2, 0)} slice index(es)"
        )
    for axis, (i, n) in enumerate(zip(index, shape, strict=False)):
        if not -n <= i < n:
            raise UserError(
                f"--slice index {i} out of range for axis {axis} of {n} slices "
                f"(valid 0..{n - 1}; image shape {shape})"
            )
    data = np.asarray(image[tuple(index)])
    if data.ndim != 2 and not (data.ndim == 3 and data.shape[-1] in (3, 4)):
        raise UserError(f"image slice has shape {data.shape}; give --slice indices down to 2D")
    if min(data.shape[:2]) < 1:
        raise UserError(f"image slice has shape {data.shape}: it is empty")
    return data


def _sample() -> tuple[np.ndarray, np.ndarray]:
    from ..synthetic import nuclei_2d

    return nuclei_2d((256, 256), seed=2024)


def _clicks_from_truth(truth: np.ndarray) -> dict[str, dict]:
    """One simulated positive click per object at its interior-most pixel."""
    from ..engine.metrics import interior_point

    return {
        str(int(obj)): {"points": [interior_point(truth == obj).tolist()], "labels": [1]}
        for obj in np.unique(truth[truth > 0])
    }


def _plane_calibration(cal):
    """The (y, x) part of an image's calibration (the labels of one 2D slice), or None."""
    if cal is None or cal.ndim < 2:
        return None
    from ..export import Calibration

    fields = ("axes", "scale", "translate", "units")
    return Calibration(*(tuple(getattr(cal, f)[-2:]) for f in fields))
