"""Helpers shared by the sub-commands: library errors → :class:`UserError` at the place
they happen, model loading, and CLI wording of embedding-store errors."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from typing import Any

from . import UserError, one_line

OVERWRITE_HELP = (
    "replace an existing output file, and an embedding store (--store) made for another "
    "model / precision / normalisation / image (recomputing changed slices); without it "
    "nothing is replaced"
)


@contextlib.contextmanager
def user_errors(*types: type[BaseException], prefix: str = "") -> Iterator[None]:
    """Re-raise ``types`` raised in the block as :class:`UserError` (one line, with an
    optional ``prefix``); use it only around code whose errors of these types describe
    the user's input (argument checks, parameters, reading input)."""
    try:
        yield
    except UserError:
        raise
    except types as err:
        raise UserError(prefix + one_line(err)) from None


def load_model(args: argparse.Namespace) -> Any:
    """``--model`` / ``--checkpoint`` / ``--device`` / ``--precision`` → a SamModel.

    Unknown registry names, a device that is not available and bad checkpoint files are
    user errors; weights that cannot be downloaded (offline, hash mismatch) are reported
    by the top level as they are (``WeightsUnavailableError``, exit 2)."""
    from ..engine.loader import load_model as _load

    with user_errors(ValueError):  # unknown name / device, CheckpointError (a ValueError)
        return _load(
            args.model, checkpoint=args.checkpoint, device=args.device, precision=args.precision
        )


def store_error(err: BaseException, flag: str) -> UserError:
    """A store error in command-line words: the API's hint (``on_mismatch=...``) is
    replaced by the flags that help — ``--overwrite`` or another ``flag`` path — for a
    mismatched store or a slice whose data changed; other store errors keep their text."""
    from ..store import StaleSliceError, StoreMismatchError

    text = one_line(err)
    if isinstance(err, (StoreMismatchError, StaleSliceError)):
        text = one_line(err.problem)
        what = "replace it" if isinstance(err, StoreMismatchError) else "recompute changed slices"
        text += f"; use --overwrite to {what}, or another {flag} path"
    return UserError(text)


@contextlib.contextmanager
def store_errors(flag: str) -> Iterator[None]:
    """Embedding-store errors raised in the block → :func:`store_error` (UserError)."""
    from ..store import StoreError

    try:
        yield
    except StoreError as err:
        raise store_error(err, flag) from None


def volume_embeddings(
    args: argparse.Namespace,
    model: Any,
    image: Any,
    spatial: list[int],
    capacity: int,
    source: str,
) -> Any:
    """The :class:`~napari_sam.store.provider.EmbeddingProvider` of a stack's slices for
    ``amg`` / ``propagate``: at most ``capacity`` in RAM, ``--store`` read and filled
    (replaced only with ``--overwrite``), a read error of ``source`` one line."""
    from ..store import SliceLayout
    from ..store.provider import EmbeddingProvider
    from .io import reading

    with store_errors("--store"):
        return EmbeddingProvider(
            model,
            image,
            SliceLayout.for_shape(image.shape, spatial=spatial),
            store=args.store or None,
            overwrite=args.overwrite,
            capacity=capacity,
            reading=lambda: reading(source),
        )


# the Dask driver (store.cluster.dask_client) reports a scheduler that cannot be
# reached or a bad worker count as ValueError; only those are the user's, not every
# ValueError a worker may raise
_DASK_USER = ("cannot connect to the Dask scheduler", "number of workers", "scheduler must be")


@contextlib.contextmanager
def dask_errors() -> Iterator[None]:
    """A Dask scheduler the user named that cannot be used → UserError."""
    try:
        yield
    except ValueError as err:
        if not str(err).startswith(_DASK_USER):
            raise
        raise UserError(one_line(err)) from None


# ------------------------------------------------------------------------------ tiles
def add_tiling_arguments(p: argparse.ArgumentParser) -> None:
    """``--tiling auto|off``, ``--tile-shape TH TW``, ``--halo H`` (docs/tiling.md)."""
    p.add_argument(
        "--tiling",
        choices=["auto", "off"],
        default="auto",
        help="embed planes larger than the model input by tiles at native resolution "
        "(auto: when the plane exceeds the input; off: shrink the whole plane into it)",
    )
    p.add_argument(
        "--tile-shape",
        type=int,
        nargs=2,
        metavar=("TH", "TW"),
        help="inner tile size in pixels (default: model input − 2 × halo); tiles on",
    )
    p.add_argument(
        "--halo", type=int, metavar="H", help="context pixels around each tile (default: "
        "1/8 of the model input)",
    )  # fmt: skip


def tile_grid(args: argparse.Namespace, model: Any, plane: tuple[int, int]) -> Any:
    """The :class:`~napari_sam.engine.tiling.TileGrid` the flags ask for on a plane of
    (H, W) pixels, or None (the plane is used whole). model: the loaded model, or its
    input size in pixels (a Dask driver learns it from a worker). Bad combinations:
    UserError."""
    from ..engine.tiling import TileGrid

    if args.tiling == "off" and (args.tile_shape is not None or args.halo is not None):
        raise UserError("--tile-shape / --halo need tiling: drop --tiling off")
    if args.halo is not None and args.halo < 0:
        raise UserError(f"--halo must be ≥ 0 pixels, got {args.halo}")
    if args.tile_shape is not None and min(args.tile_shape) < 1:
        raise UserError(f"--tile-shape must be two sizes ≥ 1, got {tuple(args.tile_shape)}")
    tiling = tuple(args.tile_shape) if args.tile_shape is not None else args.tiling
    size = int(model) if isinstance(model, int) else int(model.sam.image_size)
    with user_errors(ValueError, prefix="--tile-shape / --halo: "):
        grid = TileGrid.for_model(plane, size, tiling, args.halo)
    return grid


def tiled_embeddings(
    args: argparse.Namespace,
    model: Any,
    image: Any,
    spatial: list[int],
    grid: Any,
    capacity: int,
    source: str,
    rgb: bool = False,
) -> Any:
    """An :class:`~napari_sam.store.provider.EmbeddingProvider` of the tiles of every
    slice (keys ``(*slice_index, tile_row, tile_col)``; at most ``capacity`` tile
    embeddings in RAM; ``--store`` read and filled, one entry per tile, replaced only
    with ``--overwrite``); ``.layout`` is the :class:`~napari_sam.store.TiledLayout`."""
    from ..store import SliceLayout, TiledLayout
    from ..store.provider import EmbeddingProvider
    from .io import reading

    layout = TiledLayout(SliceLayout.for_shape(image.shape, spatial=spatial, rgb=rgb), grid)
    with store_errors("--store"):
        return EmbeddingProvider(
            model,
            image,
            layout,
            store=getattr(args, "store", None) or None,
            overwrite=bool(getattr(args, "overwrite", False)),
            capacity=capacity,
            reading=lambda: reading(source),
        )
