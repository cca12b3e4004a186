"""``napari-sam amg``: segment everything (automatic mask generation) in a 2D image or
in every slice of a 3D / 4D stack (docs/amg_volumes.md).

    napari-sam amg cells.tif --model demo --out labels.tif --link-z
    napari-sam amg --sample nuclei-2d            # synthetic sample: F1 + PNG overlay

IMAGE: 2D (Y, X) or RGB (Y, X, 3) → a 2D label image; 3D (Z, Y, X) → per-slice ids (each
slice 1..n) or, with ``--link-z``, 3D ids linked across slices (ids 1..N); 4D
(T, Z, Y, X) → the same per time point. OUT: .tif, .npy or .zarr. AMG parameters default
to the official ones, except for the packaged demo model, which uses its tuned set
(``DEMO_PARAMS``); the parameters used are printed. Embeddings of stacks are computed
slice by slice (a few in RAM) or read from / written to ``--store``. ``--scheduler ADDR``
/ ``--workers N`` run on Dask: one task per slice, or per tile when the planes are
tiled (merged on this machine by the local merge rule: the same labels as a local run).
An existing OUT, and a store made for another model /
precision / normalisation / image, are replaced only with ``--overwrite``.
"""

from __future__ import annotations

import argparse

import numpy as np

from . import UserError
from .common import OVERWRITE_HELP, add_tiling_arguments, user_errors

HELP = "segment everything (automatic masks) in a 2D image or every slice of a stack"
OFFICIAL = {
    "points_per_side": 32,
    "pred_iou_thresh": 0.88,
    "stability_score_thresh": 0.95,
    "min_mask_region_area": 0,
    "min_object_area": 0,
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("image", nargs="?", help="2D / 3D / 4D image (.tif, .npy, .zarr)")
    src.add_argument("--sample", choices=["nuclei-2d"], help="use a bundled synthetic sample")
    p.add_argument(
        "--out",
        help="output labels (.tif, .npy, .zarr, .ome.zarr or "
        "IMAGE.ome.zarr/labels/NAME); --sample: optional",
    )
    p.add_argument(
        "--level",
        type=int,
        default=0,
        help="OME-Zarr image: resolution level to segment (default 0)",
    )
    p.add_argument("--model", default="demo", help="registry name (default: demo)")
    p.add_argument("--checkpoint", help="checkpoint file (architecture from --model or shapes)")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--store", help="zarr embedding store to read / fill (default: RAM only)")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    p.add_argument("--points-per-side", type=int, help="grid points per side (official: 32)")
    p.add_argument("--pred-iou-thresh", type=float, help="predicted IoU filter (0.88)")
    p.add_argument("--stability-score-thresh", type=float, help="stability filter (0.95)")
    p.add_argument("--min-mask-region-area", type=int, help="clean holes/islands below (0)")
    p.add_argument("--min-object-area", type=int, help="drop objects smaller than this (0)")
    p.add_argument("--link-z", action="store_true", help="link slices into 3D objects")
    p.add_argument("--link-iou", type=float, default=None, help="min IoU of a z link (0.5)")
    p.add_argument(
        "--min-slices",
        type=int,
        help="with --link-z: drop 3D objects on fewer slices (demo model: 3, else 1)",
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--scheduler",
        metavar="ADDR",
        help="run slices / tiles on this Dask scheduler (or N: a local Dask cluster of N workers)",
    )
    g.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="run slices / tiles on a local Dask cluster of N worker processes",
    )
    add_tiling_arguments(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def params_for(args: argparse.Namespace) -> dict:
    """AMG parameters: the flags given, else the demo model's tuned set (registry demo,
    no checkpoint), else the official defaults."""
    from ..engine.amg.volume import DEMO_PARAMS

    base = DEMO_PARAMS if _is_demo(args) else OFFICIAL
    out = dict(base)
    for k in OFFICIAL:
        v = getattr(args, k)
        if v is not None:
            out[k] = v
    return out


def _is_demo(args: argparse.Namespace) -> bool:
    return args.model == "demo" and not args.checkpoint


def run(args: argparse.Namespace) -> int:
    from ..engine.amg import DEFAULT_LINK_IOU, DEMO_MIN_SLICES
    from ..engine.metrics import object_f1
    from .io import check_output, image_calibration, read_image, write_labels, write_overlay

    truth = None
    if not args.sample and not args.out:
        raise UserError("give --out LABELS (.tif, .npy or .zarr)")
    out = check_output(args.out or "napari-sam-out/amg_labels.tif", args.overwrite)
    overlay = out.with_name(out.stem + "_overlay.png")
    if args.sample:
        from ..synthetic import nuclei_2d

        check_output(overlay, args.overwrite, (".png",))
        image, truth = nuclei_2d((256, 256), seed=2024)
    else:
        image = read_image(args.image, args.level)
    rgb = image.ndim == 3 and image.shape[-1] in (3, 4) and min(image.shape[:2]) > 4
    nd = image.ndim - (1 if rgb else 0)
    if nd not in (2, 3, 4):
        raise UserError(f"image has shape {tuple(image.shape)}: need 2D, 3D or 4D")
    if args.link_iou is not None and not 0.0 <= args.link_iou <= 1.0:
        raise UserError(f"--link-iou must be in [0, 1], got {args.link_iou}")
    link_iou = DEFAULT_LINK_IOU if args.link_iou is None else args.link_iou
    params = params_for(args)
    if args.min_slices is None:
        args.min_slices = DEMO_MIN_SLICES if _is_demo(args) else 1
    if args.min_slices < 1:
        raise UserError(f"--min-slices must be ≥ 1, got {args.min_slices}")
    print("AMG parameters: " + ", ".join(f"{k}={v}" for k, v in params.items()))
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers must be ≥ 1, got {args.workers}")
    if args.scheduler is not None or args.workers is not None:
        labels = _run_dask(args, image, nd, rgb, params, link_iou)
    else:
        labels = _run_local(args, image, nd, rgb, params, link_iou)
    cal = None if args.sample else image_calibration(args.image, args.level)
    write_labels(out, labels, overwrite=args.overwrite, calibration=cal)
    n = int(labels.max()) if labels.size else 0
    what = "3D objects" if (nd > 2 and args.link_z) else "objects (max id)"
    print(f"{n} {what} → {out}")
    if truth is not None:
        tp, npred, ntrue = object_f1(labels, truth)
        f1 = 2 * tp / max(npred + ntrue, 1)
        write_overlay(overlay, image, labels, overwrite=args.overwrite)
        print(
            f"F1 at IoU 0.5 vs ground truth: {f1:.3f} ({tp} of {ntrue} nuclei found, "
            f"{npred} objects) → {overlay}"
        )
    return 0


def _run_local(args, image, nd: int, rgb: bool, params: dict, link_iou: float) -> np.ndarray:
    from ..engine.amg import AutomaticMaskGenerator, VolumeAmg
    from .common import load_model, store_errors, tile_grid, volume_embeddings
    from .progress import drive

    model = load_model(args)
    with user_errors(ValueError):  # --points-per-side 0, thresholds out of range, ...
        amg = AutomaticMaskGenerator(model, **params)
    plane = (image.shape[0], image.shape[1]) if nd == 2 else tuple(image.shape[-2:])
    grid = tile_grid(args, model, plane)
    if grid is not None:
        return _run_tiled(args, model, amg, grid, image, nd, rgb, link_iou)
    if nd == 2:
        return drive(amg.iter_generate(np.asarray(image)), "amg", "step",
                     quiet=args.no_progress).labels  # fmt: skip
    nz = image.shape[-3]
    # each slice is asked for once, in order (engine/amg/volume.py): 2 in RAM suffice
    source = args.image or "the sample"
    embeddings = volume_embeddings(args, model, image, [nd - 2, nd - 1], 2, source)
    result = np.zeros(image.shape, np.uint32)
    for t in range(image.shape[0]) if nd == 4 else [None]:
        lead = () if t is None else (t,)
        with user_errors(ValueError):
            vol = VolumeAmg(
                amg,
                lambda z, lead=lead: embeddings.get((*lead, z)),
                nz,
                image=lambda z, lead=lead: embeddings.read((*lead, z)),
                link=args.link_z,
                link_iou=link_iou,
                min_slices=args.min_slices,
            )
        desc = "amg" if t is None else f"amg t={t}"
        with store_errors("--store"):  # a stored slice whose data changed
            result[lead] = drive(vol.run(), desc, "slice", quiet=args.no_progress)
    return result


def _run_tiled(args, model, amg, grid, image, nd: int, rgb: bool, link_iou: float) -> np.ndarray:
    """AMG tile by tile (engine/amg/tiled.py) on tile embeddings computed on the fly
    (or read from / written to --store, one entry per tile): one tile's embedding in RAM
    at a time (each tile is asked for once)."""
    from ..engine.amg.tiled import TiledAmg, TiledVolumeAmg
    from .common import store_errors, tiled_embeddings
    from .progress import drive

    source = args.image or "the sample"
    spatial = [0, 1] if nd == 2 else [nd - 2, nd - 1]
    tiles = tiled_embeddings(args, model, image, spatial, grid, 1, source, rgb=rgb and nd == 2)
    print(
        f"tiles: {grid.shape[0]} × {grid.shape[1]} of {grid.tile[0]} × {grid.tile[1]} px "
        f"+ halo {grid.halo[0]} px per plane"
    )
    if nd == 2:
        run = TiledAmg(amg, grid, tiles.get, read=tiles.read)
        with store_errors("--store"):
            return drive(run.run(), "amg (tiles)", "tile", quiet=args.no_progress)
    result = np.zeros(image.shape, np.uint32)
    for t in range(image.shape[0]) if nd == 4 else [None]:
        lead = () if t is None else (t,)
        with user_errors(ValueError):
            vol = TiledVolumeAmg(
                amg,
                grid,
                lambda z, tile, lead=lead: tiles.get((*lead, z, *tile)),
                image.shape[-3],
                read=lambda z, tile, lead=lead: tiles.read((*lead, z, *tile)),
                link=args.link_z,
                link_iou=link_iou,
                min_slices=args.min_slices,
            )
        desc = "amg (tiles)" if t is None else f"amg (tiles) t={t}"
        with store_errors("--store"):  # a stored tile whose data changed
            result[lead] = drive(vol.run(), desc, "tile", quiet=args.no_progress)
    return result


def _run_dask(args, image, nd: int, rgb: bool, params: dict, link_iou: float) -> np.ndarray:
    """Slices (or, when the planes are tiled, tiles) segmented on Dask workers; the
    driver learns the model's input size from a worker (it never loads the model),
    merges tiles (store/amg_dask_tiles.py) and links slices in z."""
    from ..engine.amg.volume import link_slices
    from ..store import ModelSpec, SliceLayout, TiledLayout
    from ..store.amg_dask import amg_slices
    from ..store.amg_dask_tiles import amg_tiles
    from ..store.cluster import dask_client, load_spec, signature_task
    from .common import dask_errors, store_errors, tile_grid
    from .progress import drive

    if args.workers is not None:
        sched = args.workers
    else:
        sched = int(args.scheduler) if args.scheduler.isdigit() else args.scheduler
    spec = ModelSpec(args.model, args.checkpoint, args.device, args.precision)
    spatial = [0, 1] if nd == 2 else [nd - 2, nd - 1]
    slices = SliceLayout.for_shape(image.shape, spatial=spatial, rgb=rgb and nd == 2)
    # `overwrite` is passed only when asked: older store.amg_dask versions lack it
    kw = {"overwrite": True} if args.overwrite else {}
    with dask_errors(), store_errors("--store"), dask_client(sched) as client:
        sig = client.submit(signature_task, spec, load_spec, pure=False).result()
        grid = tile_grid(args, int(sig.transform["image_size"]), tuple(slices.slice_size))
        indices = list(slices.indices())
        if grid is None:
            steps = amg_slices(image, slices, indices, spec, params, scheduler=client,
                               store=args.store, **kw)  # fmt: skip
            planes = drive(steps, "amg (dask)", "slice", quiet=args.no_progress)
        else:
            print(
                f"tiles: {grid.shape[0]} × {grid.shape[1]} of {grid.tile[0]} × "
                f"{grid.tile[1]} px + halo {grid.halo[0]} px per plane (on Dask)"
            )
            steps = amg_tiles(image, TiledLayout(slices, grid), indices, spec, params,
                              scheduler=client, store=args.store, **kw)  # fmt: skip
            planes = drive(steps, "amg (dask, tiles)", "tile", quiet=args.no_progress)
    if nd == 2:
        return planes[()]
    result = np.zeros(image.shape, np.uint32)
    for t in range(image.shape[0]) if nd == 4 else [None]:
        lead = () if t is None else (t,)
        stack = np.stack([planes[(*lead, z)] for z in range(image.shape[-3])])
        result[lead] = link_slices(stack, link_iou, link=args.link_z, min_slices=args.min_slices)
    return result
