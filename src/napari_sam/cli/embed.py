"""``napari-sam embed``: precompute the SAM embeddings of an image into a zarr store.

Reads the image with the CLI's one reader (:func:`napari_sam.cli.io.read_image`: TIFF,
zarr, ``.npy``, all lazy); only the slices being computed are read. Runs here, or on
Dask (``--scheduler ADDR`` / ``--workers N``). Slices larger than the model input are
embedded by tiles (``--tiling auto``, the default; ``--tile-shape`` / ``--halo``;
docs/tiling.md): one store entry per tile, resumable like slices.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from . import UserError
from .common import add_tiling_arguments, load_model, tile_grid, user_errors
from .io import read_image

HELP = "precompute SAM embeddings of an image (TIFF, zarr, .npy) into a zarr store"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", help="TIFF, .npy, OME-Zarr image or zarr array "
                   "(path/to/x.zarr[/array])")
    p.add_argument("--level", type=int, default=0,
                   help="OME-Zarr image: resolution level (default 0)")
    p.add_argument("--model", required=True, help="model name (see `napari-sam models`)")
    p.add_argument("--checkpoint", help="checkpoint file (default: the registry's)")
    p.add_argument("--out", help="store path STORE.zarr (default: in the user cache)")
    p.add_argument(
        "--axes",
        help="axis letters, e.g. ZYX, TZYX, YXS (S: RGB samples, last), CZYX; "
        "Y/X are the slice's rows/cols (default: the last two axes)",
    )
    p.add_argument("--channel", type=int, help="fixed channel index on the C axis")
    p.add_argument(
        "--slices", help="slice range per slice axis, comma separated: 0:50 | 3,10:20 | :,5"
    )
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument(
        "--contrast-limits",
        nargs=2,
        type=float,
        metavar=("LOW", "HIGH"),
        help="fixed intensity window (default: per-slice percentiles)",
    )
    p.add_argument(
        "--percentiles", nargs=2, type=float, metavar=("LOW", "HIGH"), default=(0.5, 99.5)
    )
    p.add_argument("--store-dtype", choices=("float16", "float32"), help="default float16")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a store (--out) made for another model / precision / normalisation / "
        "image, and recompute slices whose data changed; without it nothing is replaced",
    )
    p.add_argument(
        "--verify",
        action="store_true",
        help="re-read complete slices and recompute those whose data changed",
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument("--scheduler", metavar="ADDR", help="Dask scheduler address")
    g.add_argument("--workers", type=int, metavar="N", help="start a local Dask cluster")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_tiling_arguments(p)


def run(args: argparse.Namespace) -> int:
    from ..engine.image import Normalization
    from ..store import (
        ModelSpec,
        SliceLayout,
        TiledLayout,
        default_store_path,
        parse_slices,
        precompute,
    )

    image = read_image(args.image, args.level)
    try:
        if args.axes:
            layout = SliceLayout.from_axes(image.shape, args.axes, args.channel)
        elif args.channel is not None:
            raise UserError("--channel needs --axes naming the C axis")
        else:
            layout = SliceLayout.for_shape(image.shape)
        indices = parse_slices(args.slices, layout)
        norm = Normalization(
            None if args.contrast_limits is None else tuple(args.contrast_limits),
            tuple(args.percentiles),
        )
    except ValueError as err:
        raise UserError(str(err)) from None
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers must be ≥ 1, got {args.workers}")
    if args.checkpoint and not Path(args.checkpoint).is_file():
        raise UserError(f"checkpoint not found: {args.checkpoint}")
    spec = ModelSpec(
        args.model,
        None if args.checkpoint is None else str(Path(args.checkpoint).resolve()),
        args.device,
        args.precision,
    )
    model = None
    if args.tiling != "off" or args.tile_shape is not None or args.halo is not None:
        model = load_model(args)  # its input size decides the tiles (also with Dask)
        grid = tile_grid(args, model, layout.slice_size)
        if grid is not None:  # one store entry per (slice, tile)
            layout = TiledLayout(layout, grid)
            indices = [(*i, *t) for i in indices for t in grid.tiles()]
            print(
                f"tiles: {grid.shape[0]} × {grid.shape[1]} of {grid.tile[0]} × {grid.tile[1]} "
                f"px + halo {grid.halo[0]} px per slice"
            )
    out = args.out or default_store_path(
        args.image,
        args.model,
        checkpoint=spec.checkpoint,
        precision=args.precision,
        normalization=norm.signature(),
        layout=layout.to_dict(),
    )
    scheduler = args.scheduler if args.scheduler is not None else args.workers
    if scheduler is None:  # here: load it now, so its errors are reported as the user's
        loaded = model if model is not None else load_model(args)
        kw: dict[str, Any] = {"load": lambda _spec: loaded}
    else:  # the workers load it; check what can be checked here
        kw = {}
        if args.checkpoint is None and Path(args.model).suffix not in (".pt", ".pth", ".ckpt"):
            from ..weights import get_model_info

            with user_errors(ValueError):
                get_model_info(args.model)
    steps = precompute(
        out,
        image,
        spec,
        indices=indices,
        layout=layout,
        normalization=norm,
        dtype=args.store_dtype,
        scheduler=scheduler,
        on_mismatch="overwrite" if args.overwrite else "error",
        verify=args.verify,
        source=str(Path(args.image).resolve()) + (f"#level={args.level}" if args.level else ""),
        **kw,
    )
    return _run(steps, out, args.no_progress, layout)


def _run(steps: Any, out: Any, quiet: bool, layout: Any = None) -> int:
    """Run the precompute generator under the progress bar. Store errors are rephrased
    with the command's flags (``--overwrite`` / ``--out``); weights that cannot be
    downloaded and a bad checkpoint are reported by the top level (exit 2); a Dask
    scheduler that cannot be reached is a user error; anything else is a bug."""
    from ..store import TiledLayout
    from .common import dask_errors, store_errors
    from .progress import drive

    last = [0, 0]

    def note(step: Any, _bar: Any) -> None:
        last[:] = step[:2]

    with store_errors("--out"), dask_errors():
        drive(steps, "embed", "slice", quiet=quiet, on_step=note)
    unit = "tiles" if isinstance(layout, TiledLayout) else "slices"
    print(f"{out}: {last[0]}/{last[1]} {unit} complete")
    return 0
