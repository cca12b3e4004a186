"""``napari-sam embed``: precompute the SAM embeddings of an image into a zarr store.

Reads TIFF (tifffile, lazily through its zarr interface), zarr arrays (a group: its only
array, or OME-Zarr level ``0``) and ``.npy`` (memory-mapped); only the slices being
computed are read. Runs here, or on Dask (``--scheduler ADDR`` / ``--workers N``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from . import UserError
from .common import load_model, user_errors

HELP = "precompute SAM embeddings of an image (TIFF, zarr, .npy) into a zarr store"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", help="TIFF, .npy or zarr array (path/to/x.zarr[/array])")
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


class TiffArray:
    """Lazy, picklable TIFF array (for Dask workers): opens the file on first read."""

    def __init__(self, path: str) -> None:
        self.path = path
        z = self._open()
        self.shape, self.dtype = tuple(z.shape), z.dtype
        self.ndim = len(self.shape)

    def _open(self) -> Any:
        import tifffile
        import zarr

        self._z = zarr.open(tifffile.imread(self.path, aszarr=True), mode="r")
        return self._z

    def __getitem__(self, key: Any) -> Any:
        z = getattr(self, "_z", None) or self._open()
        return z[key]

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_z"}


def read_image(path_text: str) -> Any:
    """The image at ``path_text`` as a lazy array (nothing but metadata is read)."""
    from .io import check_dtype, reading

    path = Path(path_text)
    if not path.exists():
        raise UserError(f"image not found: {path}")
    suffix = path.suffix.lower()
    with reading(path):
        if suffix == ".npy":
            import numpy as np

            return check_dtype(np.load(path, mmap_mode="r", allow_pickle=False), path)
        if suffix in (".tif", ".tiff"):
            return check_dtype(TiffArray(str(path)), path)
        if path.is_dir():
            return check_dtype(_open_zarr(path), path)
    raise UserError(f"unsupported image format {path.name!r}: use TIFF, .npy or zarr")


def _open_zarr(path: Path) -> Any:
    import zarr

    node = zarr.open(path, mode="r")
    if isinstance(node, zarr.Array):
        return node
    if "napari_sam" in node.attrs:
        raise UserError(f"{path} is an embedding store, not an image")
    names = sorted(node.array_keys())
    if "0" in names:
        return node["0"]
    if len(names) == 1:
        return node[names[0]]
    listed = ", ".join(names) or "none"
    raise UserError(f"{path} is a zarr group with arrays {listed}: give IMAGE as {path}/NAME")


def run(args: argparse.Namespace) -> int:
    from ..engine.image import Normalization
    from ..store import (
        ModelSpec,
        SliceLayout,
        default_store_path,
        parse_slices,
        precompute,
    )

    image = read_image(args.image)
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
        model = load_model(args)
        kw: dict[str, Any] = {"load": lambda _spec: model}
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
        source=str(Path(args.image).resolve()),
        **kw,
    )
    return _run(steps, out, args.no_progress)


def _run(steps: Any, out: Any, quiet: bool) -> int:
    """Run the precompute generator under the progress bar. Store errors are rephrased
    with the command's flags (``--overwrite`` / ``--out``); weights that cannot be
    downloaded and a bad checkpoint are reported by the top level (exit 2); a Dask
    scheduler that cannot be reached is a user error; anything else is a bug."""
    from .common import dask_errors, store_errors
    from .progress import drive

    last = [0, 0]

    def note(step: Any, _bar: Any) -> None:
        last[:] = step[:2]

    with store_errors("--out"), dask_errors():
        drive(steps, "embed", "slice", quiet=quiet, on_step=note)
    print(f"{out}: {last[0]}/{last[1]} slices complete")
    return 0
