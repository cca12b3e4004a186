"""Interactive prompts on a tiled plane: 1-point and box mIoU of small nuclei, tiled vs
untiled vs native-scale crops, near inner tile borders vs away (docs/tiling.md §6).

The plane is ``nuclei_large((S, S), (8, 40), seed=SEED)`` (uint16, never used in
training); the model the packaged demo model (256-px input) in fp32. *Small* nuclei: an
equivalent diameter ≤ ``--max-diameter`` (20 px), not touching the plane's edge. Each is
prompted once with one positive click at its interior-most pixel and once with its tight
box (``object_box``), in three ways:

* ``untiled``: ``SegmentationSession(..., tiling="off")`` — the plane resized into the
  input (what happens without tiles);
* ``tiled``: ``SegmentationSession(..., tiling="auto")`` → ``session.prompt`` (the tile
  chosen by ``session.tiled.choose_tile``, only the tiles prompted are embedded);
* ``native crop``: a window of the model input centred on the nucleus (moved inside the
  plane), embedded at native resolution — the nucleus far from any border.

Groups: *near* = the click lies within ``--near`` (10) px of an inner tile border (a row
or column where two inner tiles meet), *away* = the others; at most ``--per-group``
nuclei per group (random, seeded). IoU against the true nucleus, averaged per group.
Usage::

    python benchmarks/tiled_clicks.py [--size 1024] [--seed 11] [--per-group 80]
        [--near 10] [--max-diameter 20] [--threads 1]

Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy.ndimage import find_objects

from napari_sam.engine.decode.predictor import Predictor
from napari_sam.engine.loader import load_model
from napari_sam.engine.metrics import interior_point, iou
from napari_sam.engine.tiling import TileGrid
from napari_sam.session import SegmentationSession
from napari_sam.synthetic import nuclei_large
from napari_sam.training.prompts import object_box


def small_nuclei(truth: np.ndarray, max_d: float) -> list[int]:
    out = []
    h, w = truth.shape
    for k, sl in enumerate(find_objects(truth), 1):
        if sl is None or sl[0].start == 0 or sl[1].start == 0:
            continue
        if sl[0].stop == h or sl[1].stop == w:
            continue
        area = int((truth[sl] == k).sum())
        if 2 * np.sqrt(area / np.pi) <= max_d:
            out.append(k)
    return out


def border_distance(grid: TileGrid, r: float, c: float) -> float:
    """Pixels from (r, c) to the nearest inner tile border (inside the plane)."""
    (th, tw), (h, w) = grid.tile, grid.plane
    rows = np.arange(th, h, th) - 0.5
    cols = np.arange(tw, w, tw) - 0.5
    d = [np.abs(rows - r).min() if rows.size else np.inf]
    d.append(np.abs(cols - c).min() if cols.size else np.inf)
    return float(min(d))


def native(model, image, pixels, point, box, size):
    """1-point and box masks on a native-resolution crop centred on the nucleus."""
    h, w = image.shape
    cy, cx = pixels.mean(0)
    r0 = int(min(max(round(cy) - size // 2, 0), h - size))
    c0 = int(min(max(round(cx) - size // 2, 0), w - size))
    p = Predictor(model)
    p.set_embedding(p.compute_embedding(image[r0 : r0 + size, c0 : c0 + size], resize=False))
    off = np.array([r0, c0], float)
    out = []
    for kw in ({"points": (point - off)[None], "labels": [1]}, {"box": box - np.tile(off, 2)}):
        r = p.predict(**kw, multimask="points" in kw, best_only=True)
        full = np.zeros(image.shape, bool)
        full[r0 : r0 + size, c0 : c0 + size] = r.masks[0]
        out.append(full)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--per-group", type=int, default=80)
    ap.add_argument("--near", type=float, default=10.0)
    ap.add_argument("--max-diameter", type=float, default=20.0)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model = load_model("demo", device="cpu", precision="fp32")
    size = int(model.sam.image_size)
    image, truth = nuclei_large((a.size, a.size), (8, 40), seed=a.seed)
    tiled = SegmentationSession(model, image, False, None, tiling="auto", ram_slices=64)
    untiled = SegmentationSession(model, image, False, None, tiling="off")
    grid = tiled.grid
    assert grid is not None
    rng = np.random.default_rng(0)
    groups: dict[str, list[int]] = {"near": [], "away": []}
    for k in rng.permutation(small_nuclei(truth, a.max_diameter)).tolist():
        pt = interior_point(truth == k)
        g = "near" if border_distance(grid, *pt) <= a.near else "away"
        if len(groups[g]) < a.per_group:
            groups[g].append(k)
    ious: dict[tuple[str, str, str], list[float]] = {}
    t0 = time.time()
    for g, ids in groups.items():
        for k in ids:
            mask = truth == k
            pixels = np.argwhere(mask)
            pt, box = interior_point(mask).astype(float), object_box(pixels)
            for how, s in (("untiled", untiled), ("tiled", tiled)):
                m1 = s.prompt((), pt[None], np.ones(1, int), None, 0).mask
                mb = s.prompt((), np.zeros((0, 2)), np.zeros(0, int), box, 0).mask
                ious.setdefault((g, how, "point"), []).append(iou(m1, mask))
                ious.setdefault((g, how, "box"), []).append(iou(mb, mask))
            n1, nb = native(model, image, pixels, pt, box, size)
            ious.setdefault((g, "native crop", "point"), []).append(iou(n1, mask))
            ious.setdefault((g, "native crop", "box"), []).append(iou(nb, mask))
    took = time.time() - t0
    print(
        f"plane {a.size}² seed {a.seed}; grid {grid.shape} of {grid.tile} + halo {grid.halo}; "
        f"tiles embedded {tiled.embeddings.computed}; {took:.0f} s"
    )
    print("| nuclei | n | prompt | untiled | tiled | native crop | tiled − native |")
    print("|---|---|---|---|---|---|---|")
    for g, ids in groups.items():
        for kind in ("point", "box"):
            hows = ("untiled", "tiled", "native crop")
            u, t, n = (float(np.mean(ious[(g, h, kind)])) for h in hows)
            label = "away from borders"
            if g == "near":
                label = f"within {a.near:g} px of an inner border"
            print(f"| {label} | {len(ids)} | {kind} | {u:.3f} | {t:.3f} | {n:.3f} | {t - n:+.3f} |")


if __name__ == "__main__":
    main()
