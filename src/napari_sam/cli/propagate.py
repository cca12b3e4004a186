"""``napari-sam propagate``: segment objects through a volume from objects annotated on
some of its slices (docs/propagation.md).

    napari-sam propagate cells.tif --model demo --labels seeds.tif --out labels.tif

IMAGE: a 3D (Z, Y, X) or 4D (T, Z, Y, X) image (TIFF, .npy, zarr). SEEDS: a label image
of the same shape where each object (id > 0) is drawn on one or more slices. Every
object is propagated (per time point for 4D) and keeps its id; seed pixels are never
changed; the result (seeds + propagated masks) is written to OUT (.tif, .npy or .zarr;
an existing OUT only with ``--overwrite``). Embeddings come from an
:class:`~napari_sam.store.provider.EmbeddingProvider`: at most ``--cache-slices`` in
RAM, read from / written to ``--store`` (a zarr embedding store, e.g. made beforehand by
``napari-sam embed``; one made for another model / precision / normalisation / image is
refused unless ``--overwrite``).

Why a few slices of RAM are enough: the ``Propagator`` sweeps up, then down, asking
for each slice at most once per sweep, and prefetches the next slice of the sweep in
one background thread (so two slices are in flight). A slice is asked for by BOTH
sweeps only when it lies strictly between two annotated slices (a gap filled from both
sides, or two objects seeded on different slices). Those slices are marked
:meth:`~napari_sam.store.provider.EmbeddingProvider.keep`: they are evicted only after
every other slice, so the second sweep reuses them as long as ``--cache-slices`` holds
them; with ``--store`` an evicted slice is read back from the store, never recomputed.
"""

from __future__ import annotations

import argparse

import numpy as np

from . import UserError
from .common import OVERWRITE_HELP, add_tiling_arguments

HELP = "propagate objects annotated on some slices (SEEDS labels) through a 3D / 4D image"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..engine.propagate import DEFAULT_MODE, MODES
    from ..store.provider import DEFAULT_CAPACITY

    p.add_argument("image", help="3D (Z, Y, X) or 4D (T, Z, Y, X) image: .tif, .npy or .zarr")
    p.add_argument("--labels", required=True, metavar="SEEDS", help="seed labels, same shape")
    p.add_argument("--out", required=True, help="output label image (.tif, .npy, .zarr, "
                   ".ome.zarr or IMAGE.ome.zarr/labels/NAME)")
    p.add_argument("--level", type=int, default=0,
                   help="OME-Zarr image: resolution level (default 0)")
    p.add_argument("--model", default="demo", help="registry name (default: demo)")
    p.add_argument("--checkpoint", help="checkpoint file (architecture from --model or shapes)")
    p.add_argument("--store", help="zarr embedding store to read / fill (default: RAM only)")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    p.add_argument(
        "--cache-slices",
        type=int,
        default=DEFAULT_CAPACITY,
        metavar="N",
        help=f"embeddings kept in RAM (default {DEFAULT_CAPACITY}; 4 MiB each for SAM); "
        "slices between annotated slices are kept first",
    )
    p.add_argument("--mode", default=DEFAULT_MODE, choices=MODES, help="prompt for next slice")
    p.add_argument("--iou-stop", type=float, default=0.5, help="stop below this slice IoU")
    p.add_argument("--area-factor", type=float, default=2.5, help="stop when area grows more")
    p.add_argument(
        "--shrink-stop",
        type=float,
        default=0.5,
        help="stop below this fraction of the object's largest area",
    )
    p.add_argument("--max-slices", type=int, help="at most this many slices from a seed")
    p.add_argument("--objects", type=int, nargs="*", help="ids to propagate (default: all)")
    p.add_argument("--axis", type=int, default=None, help="slice axis (default: Z, 3rd-last)")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_tiling_arguments(p)


def run(args: argparse.Namespace) -> int:
    from .common import load_model, store_errors, tile_grid, tiled_embeddings, volume_embeddings
    from .io import check_output, image_calibration, read_image, reading, write_labels

    out = check_output(args.out, args.overwrite)
    image = read_image(args.image, args.level)
    with reading(args.labels):
        seeds = np.asarray(read_image(args.labels))
    if image.ndim not in (3, 4):
        raise UserError(f"image has shape {tuple(image.shape)}: need (Z, Y, X) or (T, Z, Y, X)")
    if tuple(seeds.shape) != tuple(image.shape):
        raise UserError(f"seeds shape {seeds.shape} ≠ image shape {tuple(image.shape)}")
    if seeds.dtype.kind not in "iu":
        raise UserError(f"seeds must be an integer label image, got {seeds.dtype}")
    nd = image.ndim
    if args.axis is not None and not -nd <= args.axis < nd:
        raise UserError(f"--axis {args.axis}: the image has {nd} axes")
    axis = nd - 3 if args.axis is None else args.axis % nd
    if axis < nd - 3:
        raise UserError(f"--axis {args.axis}: for a 4D image the slice axis is 1, 2 or 3")
    if args.cache_slices < 1:
        raise UserError(f"--cache-slices must be ≥ 1, got {args.cache_slices}")
    if args.max_slices is not None and args.max_slices < 1:
        raise UserError(f"--max-slices must be ≥ 1, got {args.max_slices}")
    ids = np.unique(seeds[seeds > 0])
    if ids.size == 0:
        raise UserError(f"{args.labels}: no object (all zeros)")
    unknown = sorted(set(args.objects or ()) - set(ids.tolist()))
    if unknown:
        raise UserError(f"--objects {unknown}: not in {args.labels} (its ids: {_ids(ids)})")
    model = load_model(args)
    spatial = [a for a in range(nd - 3, nd) if a != axis]
    grid = tile_grid(args, model, (image.shape[spatial[0]], image.shape[spatial[1]]))
    if grid is None:
        embeddings = volume_embeddings(args, model, image, spatial, args.cache_slices, args.image)
    else:
        embeddings = tiled_embeddings(
            args, model, image, spatial, grid, args.cache_slices, args.image
        )
        print(
            f"tiles: {grid.shape[0]} × {grid.shape[1]} of {grid.tile[0]} × {grid.tile[1]} px "
            f"+ halo {grid.halo[0]} px per plane"
        )
    result = seeds.copy()
    times = range(image.shape[0]) if nd == 4 else [None]
    with store_errors("--store"):  # a stored slice whose data changed
        for t in times:
            _propagate_one(args, model, embeddings, seeds, result, axis, t, grid)
    cal = image_calibration(args.image, args.level)
    write_labels(out, result, overwrite=args.overwrite, calibration=cal)
    grown = int(np.count_nonzero(result != seeds))
    print(f"{ids.size} object(s), {grown} voxels added → {out}")
    return 0


def _ids(ids: np.ndarray) -> str:
    shown = ", ".join(map(str, ids[:10].tolist()))
    return shown + (f", … ({ids.size} ids)" if ids.size > 10 else "")


def _propagate_one(
    args, model, embeddings, seeds, result, axis: int, t: int | None, grid=None
) -> None:
    from ..engine.propagate import Propagator
    from ..engine.propagate.tiled import TiledPropagator
    from .common import user_errors
    from .progress import drive

    lead = () if t is None else (t,)
    sub_axis = axis - len(lead)
    vol = np.moveaxis(seeds[lead], sub_axis, 0)  # (Z, H, W)
    present = set(np.unique(vol[vol > 0]).tolist())
    objects = present if args.objects is None else present & set(args.objects)
    if not objects:
        return
    # slices between the lowest and highest annotated slice may be needed by both sweeps
    annotated = np.flatnonzero(np.isin(vol, sorted(objects)).any(axis=(1, 2)))
    embeddings.clear()
    between = range(annotated.min() + 1, annotated.max())
    options = {
        "mode": args.mode,
        "iou_stop": args.iou_stop,
        "area_factor": args.area_factor,
        "shrink_stop": args.shrink_stop,
        "max_slices": args.max_slices,
    }
    with user_errors(ValueError):  # --mode / --iou-stop / ... out of range; object > tile
        if grid is None:
            embeddings.keep((*lead, z) for z in between)
            prop = Propagator(
                model, lambda z: embeddings.get((*lead, z)), vol, sorted(objects), **options
            )
        else:  # one group of objects per tile, one after the other (engine/propagate/tiled)
            prop = TiledPropagator(
                model,
                grid,
                lambda z, tile: embeddings.get((*lead, z, *tile)),
                vol,
                sorted(objects),
                **options,
            )
            embeddings.keep((*lead, z, *tile) for tile in prop.groups for z in between)
    desc = "propagate" if t is None else f"propagate t={t}"
    found = drive(prop.run(), desc, "slice", quiet=args.no_progress)
    result[lead] = np.moveaxis(found, 0, sub_axis)
