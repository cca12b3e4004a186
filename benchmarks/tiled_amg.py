"""Automatic masks on a large synthetic plane: tiled vs untiled, halo and merge rule.

The plane is ``nuclei_large((S, S), diameter_range=(8, 40), seed=SEED)`` (uint16, never
used in training); the model the packaged demo model in fp32 with ``DEMO_PARAMS``
(``--param name=value`` overrides one). For each halo the plane is cut by
``TileGrid.for_model(plane, input_size, "auto", halo)``, every tile's outer region is
embedded at native resolution and segmented once, and the tiles are merged by
``napari_sam.engine.amg.tiled.TiledAmg`` with each rule (``--keep``, ``--tolerance``;
merging takes well under a second). Columns: object F1 at IoU 0.5 against the ground
truth (``object_f1``); recall (IoU > 0.5) of the true nuclei crossing an inner tile
border and of the others (seamless tiling: the same); true nuclei overlapped by more
than one predicted object at IoU > 0.2 ("split": duplicates or cut objects).
``--untiled`` adds the whole plane resized into the model input (what happens without
tiles). ``--clipped`` adds, per halo, the tiles of the plane's border with their outer
region cut at the border (smaller than the model input, zero-padded) instead of moved
inwards (``TileGrid.outer``); the other tiles' results are reused. Usage::

    python benchmarks/tiled_amg.py [--size 2048] [--seed 7] [--halo 16 32 48]
        [--keep centre centre-with-cut touch] [--tolerance 0 2 4 8] [--untiled] [--clipped]
        [--threads 1] [--contrast tile|plane] [--param points_per_side=16]

Prints a Markdown table (CPU, fp32).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from napari_sam.engine.amg import DEMO_PARAMS, AutomaticMaskGenerator
from napari_sam.engine.amg.tiled import DEFAULT_TOLERANCE, TiledAmg
from napari_sam.engine.decode.predictor import Predictor
from napari_sam.engine.image import Normalization
from napari_sam.engine.loader import load_model
from napari_sam.engine.metrics import iou_matrix, object_f1
from napari_sam.engine.tiling import TileGrid
from napari_sam.synthetic import nuclei_large


class ClippedGrid(TileGrid):
    """The grid with outer regions cut at the plane's border (inner region + halo,
    clipped): the alternative to moving the window inwards."""

    def outer(self, tile):
        r0, c0, r1, c1 = self.inner(tile)
        (hh, hw), (h, w) = self.halo, self.plane
        return max(r0 - hh, 0), max(c0 - hw, 0), min(r1 + hh, h), min(c1 + hw, w)


def border_counts(labels: np.ndarray, truth: np.ndarray, grid: TileGrid) -> tuple[str, str, int]:
    """Recall at IoU 0.5 of the true nuclei crossing an inner tile border and of the
    others ("found / total"), and the true nuclei split: overlapped by more than one
    predicted object at IoU > 0.2."""
    on_border = np.zeros(int(truth.max()) + 1, bool)
    th, tw = grid.tile
    for r in range(th, grid.plane[0], th):
        a, b = truth[r - 1], truth[r]
        on_border[a[(a == b) & (a > 0)]] = True
    for c in range(tw, grid.plane[1], tw):
        a, b = truth[:, c - 1], truth[:, c]
        on_border[a[(a == b) & (a > 0)]] = True
    _, ids_t, m = iou_matrix(labels, truth)
    found = (m > 0.5).any(axis=0)
    split = int(((m > 0.2).sum(axis=0) > 1).sum())
    border = on_border[ids_t]
    return (
        f"{found[border].sum()}/{border.sum()}",
        f"{found[~border].sum()}/{(~border).sum()}",
        split,
    )


def parse_params(items: list[str]) -> dict:
    params = dict(DEMO_PARAMS)
    for item in items:
        name, value = item.split("=")
        params[name] = type(DEMO_PARAMS.get(name, 0.0))(float(value))
    return params


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="demo")
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--halo", type=int, nargs="+", default=[32])
    ap.add_argument("--keep", nargs="+", default=["centre"])
    ap.add_argument("--tolerance", type=float, nargs="+", default=[DEFAULT_TOLERANCE])
    ap.add_argument("--untiled", action="store_true")
    ap.add_argument("--clipped", action="store_true")
    ap.add_argument("--contrast", choices=("tile", "plane"), default="tile")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--param", action="append", default=[])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model, device="cpu", precision="fp32")
    params = parse_params(args.param)
    amg = AutomaticMaskGenerator(model, **params)
    t0 = time.perf_counter()
    image, truth = nuclei_large((args.size, args.size), (8, 40), seed=args.seed)
    print(
        f"plane {image.shape} {image.dtype}: {int(truth.max())} nuclei "
        f"(generated in {time.perf_counter() - t0:.1f} s); params {params}\n"
    )
    norm = Normalization()
    if args.contrast == "plane":
        lo, hi = np.percentile(image[::4, ::4], norm.percentiles)
        norm = Normalization(contrast_limits=(float(lo), float(hi)))
    p = Predictor(model, normalization=norm)
    s = model.sam.image_size
    print(
        "| run | tiles | time (s): tiles + merge | objects | F1@0.5 (tp/pred/true) | "
        "found: nuclei on inner borders | found: other nuclei | split nuclei |"
    )
    print("|---|---|---|---|---|---|---|---|")
    if args.untiled:
        t = time.perf_counter()
        labels = amg.generate(p.compute_embedding(image)).labels
        tp, npred, ntrue = object_f1(labels, truth)
        print(
            f"| untiled (resized to {s} px) | 1 | {time.perf_counter() - t:.1f} | {npred} | "
            f"{2 * tp / (npred + ntrue):.3f} ({tp}/{npred}/{ntrue}) | – | – | – |",
            flush=True,
        )
    for halo in args.halo:
        grid = TileGrid.for_model(image.shape, s, "auto", halo)
        assert grid is not None
        t = time.perf_counter()
        results = {}  # tile → AMG result of its outer region (merged below, per rule)
        for tile in grid.tiles():
            emb = p.compute_embedding(grid.read(image, tile), resize=False)
            results[tile] = amg.generate(emb)
        dt = time.perf_counter() - t
        runs = [("", grid, results, dt)]
        if args.clipped:
            cgrid = ClippedGrid(grid.plane, grid.tile, grid.halo)
            t = time.perf_counter()
            cresults = dict(results)
            for tile in grid.tiles():
                if cgrid.outer(tile) != grid.outer(tile):
                    emb = p.compute_embedding(cgrid.read(image, tile), resize=False)
                    cresults[tile] = amg.generate(emb)
            runs.append((" (border tiles clipped)", cgrid, cresults, time.perf_counter() - t))
        for label, g, res, seconds in runs:
            report(label, g, res, seconds, amg, truth, args, halo)


def report(label, grid, results, dt, amg, truth, args, halo) -> None:
    """Merge one set of tile results by every rule; print a row each."""
    for keep in args.keep:
        for tol in args.tolerance if keep != "touch" else [0.0]:
            run = TiledAmg(amg, grid, lambda tile: None, keep=keep, tolerance=tol)
            tm = time.perf_counter()
            for tile, result in results.items():
                run.add_tile(tile, result)
            tm = time.perf_counter() - tm
            labels = run.labels
            tp, npred, ntrue = object_f1(labels, truth)
            border, other, split = border_counts(labels, truth, grid)
            rule = keep if keep == "touch" else f"{keep}, tolerance {tol:g}"
            print(
                f"| halo {halo}, tile {grid.tile[0]}, {rule}{label} | {grid.n_tiles} | "
                f"{dt:.1f} + {tm:.1f} | {npred} | "
                f"{2 * tp / (npred + ntrue):.3f} ({tp}/{npred}/{ntrue}) "
                f"| {border} | {other} | {split} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
