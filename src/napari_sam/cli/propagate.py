"""``napari-sam propagate``: segment objects through a volume from objects annotated on
some of its slices (docs/propagation.md).

    napari-sam propagate cells.tif --model demo --labels seeds.tif --out labels.tif

IMAGE: a 3D (Z, Y, X) or 4D (T, Z, Y, X) image (TIFF, .npy, zarr). SEEDS: a label image
of the same shape where each object (id > 0) is drawn on one or more slices. Every
object is propagated (per time point for 4D) and keeps its id; seed pixels are never
changed; the result (seeds + propagated masks) is written to OUT (.tif or .npy).
Embeddings are kept in RAM, or read from / written to ``--store`` (a zarr embedding
store, e.g. made beforehand by ``napari-sam embed``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from . import UserError

HELP = "propagate objects annotated on some slices (SEEDS labels) through a 3D / 4D image"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..engine.propagate import DEFAULT_MODE
    from ..engine.propagate_prompts import MODES

    p.add_argument("image", help="3D (Z, Y, X) or 4D (T, Z, Y, X) image: .tif, .npy or .zarr")
    p.add_argument("--labels", required=True, metavar="SEEDS", help="seed labels, same shape")
    p.add_argument("--out", required=True, help="output label image (.tif or .npy)")
    p.add_argument("--model", default="demo", help="registry name (default: demo)")
    p.add_argument("--checkpoint", help="checkpoint file (architecture from --model or shapes)")
    p.add_argument("--store", help="zarr embedding store to read / fill (default: RAM only)")
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


def run(args: argparse.Namespace) -> int:
    from ..engine.loader import load_model
    from .io import read_image, write_labels

    image = read_image(args.image)
    seeds = np.asarray(read_image(args.labels))
    if image.ndim not in (3, 4):
        raise UserError(f"image has shape {tuple(image.shape)}: need (Z, Y, X) or (T, Z, Y, X)")
    if tuple(seeds.shape) != tuple(image.shape):
        raise UserError(f"seeds shape {seeds.shape} ≠ image shape {tuple(image.shape)}")
    if seeds.dtype.kind not in "iu":
        raise UserError(f"seeds must be an integer label image, got {seeds.dtype}")
    nd = image.ndim
    axis = nd - 3 if args.axis is None else args.axis % nd
    if axis < nd - 3:
        raise UserError(f"--axis {args.axis}: for a 4D image the slice axis is 1, 2 or 3")
    ids = np.unique(seeds[seeds > 0])
    if ids.size == 0:
        raise UserError(f"{args.labels}: no object (all zeros)")
    model = load_model(
        args.model, checkpoint=args.checkpoint, device=args.device, precision=args.precision
    )
    spatial = [a for a in range(nd - 3, nd) if a != axis]
    embeddings = _Embeddings(model, image, spatial, args.store)
    result = seeds.copy()
    times = range(image.shape[0]) if nd == 4 else [None]
    for t in times:
        _propagate_one(args, model, embeddings, seeds, result, axis, t)
    write_labels(Path(args.out), result)
    grown = int(np.count_nonzero(result != seeds))
    print(f"{ids.size} object(s), {grown} voxels added → {args.out}")
    return 0


def _propagate_one(args, model, embeddings, seeds, result, axis: int, t: int | None) -> None:
    from tqdm import tqdm

    from ..engine.propagate import Propagator

    lead = () if t is None else (t,)
    sub_axis = axis - len(lead)
    vol = np.moveaxis(seeds[lead], sub_axis, 0)  # (Z, H, W)
    present = set(np.unique(vol[vol > 0]).tolist())
    objects = present if args.objects is None else present & set(args.objects)
    if not objects:
        return
    prop = Propagator(
        model,
        lambda z: embeddings((*lead, z)),
        vol,
        sorted(objects),
        mode=args.mode,
        iou_stop=args.iou_stop,
        area_factor=args.area_factor,
        shrink_stop=args.shrink_stop,
        max_slices=args.max_slices,
    )
    desc = "propagate" if t is None else f"propagate t={t}"
    steps = prop.run()
    with tqdm(total=prop.total, unit="slice", file=sys.stderr, disable=args.no_progress) as bar:
        bar.set_description(desc)
        try:
            for done, _total, _msg in steps:
                bar.update(done - bar.n)
        finally:
            steps.close()
    result[lead] = np.moveaxis(prop.result, 0, sub_axis)


class _Embeddings:
    """index (t?, z) → Embedding: RAM, then the zarr store (if any), then the encoder
    (written to the store). Thread-safe enough for the engine's one prefetch thread."""

    def __init__(self, model, image, spatial: list[int], store_path: str | None) -> None:
        from ..engine.predictor import Predictor
        from ..store import SliceLayout

        self.image, self.ram = image, {}
        self.layout = SliceLayout.for_shape(image.shape, spatial=spatial)
        self.predictor = Predictor(model)
        self.store = None
        if store_path:
            from ..store import EmbeddingStore, StoreError

            try:
                self.store = EmbeddingStore.open(
                    store_path, model, image=image, layout=self.layout, on_mismatch="overwrite"
                )
            except StoreError as err:
                raise UserError(str(err)) from None

    def __call__(self, index: tuple[int, ...]):
        emb = self.ram.get(index)
        if emb is not None:
            return emb
        data = self.layout.read(self.image, index)
        if self.store is not None:
            emb = self.store.get(index, data)
        if emb is None:
            emb = self.predictor.compute_embedding(data)
            if self.store is not None:
                self.store.put(index, emb, data)
        self.ram[index] = emb
        return emb
