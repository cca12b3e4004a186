"""The 3D-stack acceptance of tiles (issue 18): propagation from clicks and z-linked
automatic masks on a stack of large planes, tiled vs untiled (docs/tiling.md §2.6).

The stack: ``--planes`` planes of ``--size``² uint16 nuclei 8–40 px
(:class:`napari_sam.synthetic_large.LargeNuclei`, seed ``--seed``, never used in
training). Every nucleus of plane 0 moves by a seeded velocity (each axis
N(0, ``--drift``) px per plane) and grows by U(0, ``--growth``) of its axes per plane;
each plane has its own noise. Ground truth: the same id through z. Model: the packaged
demo model (256-px input) in fp32 → ``TileGrid.for_model`` tiles of 192 + halo 32.

Only a block of ``--region`` × ``--region`` tiles at the centre of each plane is
segmented (a whole 2048² plane is 121 tiles, ~4 min of automatic masks per plane on
2 loaded cores); the objects are those of that block (minus a 24-px margin).

(a) **Propagation from clicks**: up to ``--per-group`` nuclei of plane 0 within 10 px of
an inner tile border ("near") and as many away from borders, each clicked once at its
interior-most pixel in a :class:`~napari_sam.session.SegmentationSession` (tiled:
``tiling="auto"``; untiled: ``"off"``, the plane shrunk 8× into the input); the click
masks are the seeds of :class:`~napari_sam.engine.propagate.tiled.TiledPropagator`
(tiled) / :class:`~napari_sam.engine.propagate.Propagator` (untiled) through z. Per
plane: mean IoU of each propagated object with its true nucleus.

(b) **Automatic masks**: :class:`~napari_sam.engine.amg.tiled.TiledAmg` on the block's
tiles of every plane (``DEMO_PARAMS``), then linked in z by
:func:`~napari_sam.engine.amg.volume.link_slices` (what ``TiledVolumeAmg`` and
``napari-sam amg --link-z`` do, local or on Dask). Per plane: object F1 at IoU 0.5
against the truth, tiled and untiled; "tracked": of the true nuclei found on every
plane, the fraction found under one single 3D id. Usage::

    OMP_NUM_THREADS=1 python benchmarks/tiled_stack.py [--size 2048] [--planes 5]
        [--region 3] [--per-group 20] [--seed 7] [--threads 1]

Prints Markdown tables (CPU, fp32).
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch
from scipy.ndimage import find_objects

from napari_sam.engine.amg import DEMO_PARAMS, AutomaticMaskGenerator
from napari_sam.engine.amg.tiled import TiledAmg
from napari_sam.engine.amg.volume import DEFAULT_LINK_IOU, link_slices
from napari_sam.engine.loader import load_model
from napari_sam.engine.metrics import interior_point, iou, iou_matrix, object_f1
from napari_sam.engine.propagate import Propagator
from napari_sam.engine.propagate.tiled import TiledPropagator
from napari_sam.engine.tiling import TileGrid
from napari_sam.session import SegmentationSession
from napari_sam.synthetic_large import LargeNuclei

MARGIN = 24  # px kept free inside the block's border for the objects counted


def moving_stack(size: int, planes: int, seed: int, drift: float, growth: float):
    """(Z, S, S) uint16 image and int32 truth: plane 0's nuclei moved and grown."""
    base = LargeNuclei((size, size), (8.0, 40.0), seed)
    rng = np.random.default_rng([seed, 99])
    base.reach += int(np.ceil(planes * (drift * 3 + growth * 20))) + 2  # culling margin
    moves = {k: rng.normal(0, drift, (len(g), 2)) for k, g in base.geometry.items()}
    grows = {k: rng.uniform(0, growth, len(g)) for k, g in base.geometry.items()}
    image = np.zeros((planes, size, size), np.uint16)
    truth = np.zeros((planes, size, size), np.int32)
    for z in range(planes):
        scene = copy.copy(base)
        scene.seed = seed * 1000 + z  # noise of its own per plane
        scene.geometry = {}
        for k, g in base.geometry.items():
            g = g.copy()
            g[:, :2] += z * moves[k]
            g[:, 2:4] *= 1 + z * grows[k][:, None]
            scene.geometry[k] = g
        image[z], truth[z] = scene.region(0, 0, size, size)
    return image, truth


def border_distance(grid: TileGrid, r: float, c: float) -> float:
    (th, tw), (h, w) = grid.tile, grid.plane
    rows, cols = np.arange(th, h, th) - 0.5, np.arange(tw, w, tw) - 0.5
    return float(min(np.abs(rows - r).min(), np.abs(cols - c).min()))


def centred_in(labels: np.ndarray, window) -> np.ndarray:
    """``labels`` with only the objects whose box centre lies in ``window``."""
    r0, c0, r1, c1 = window
    keep = np.zeros(int(labels.max()) + 1, bool)
    for k, sl in enumerate(find_objects(labels), 1):
        if sl is not None:
            cr, cc = (sl[0].start + sl[0].stop - 1) / 2, (sl[1].start + sl[1].stop - 1) / 2
            keep[k] = r0 <= cr < r1 and c0 <= cc < c1
    return np.where(keep[labels], labels, 0)


def tracked(linked: np.ndarray, truth: np.ndarray) -> tuple[int, int]:
    """(true nuclei found at IoU > 0.5 on every plane under one 3D id, found on every
    plane)."""
    best: dict[int, list[int]] = {}
    for z in range(len(truth)):
        ids_p, ids_t, m = iou_matrix(linked[z], truth[z])
        for j, t in enumerate(ids_t):
            i = int(np.argmax(m[:, j])) if m.shape[0] else -1
            ok = i >= 0 and m[i, j] > 0.5
            best.setdefault(int(t), []).append(int(ids_p[i]) if ok else -1)
    every = [v for v in best.values() if len(v) == len(truth) and min(v) > 0]
    return sum(len(set(v)) == 1 for v in every), len(every)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--planes", type=int, default=5)
    ap.add_argument("--region", type=int, default=3)
    ap.add_argument("--per-group", type=int, default=20)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--drift", type=float, default=0.7)
    ap.add_argument("--growth", type=float, default=0.02)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    t0 = time.time()
    image, truth = moving_stack(a.size, a.planes, a.seed, a.drift, a.growth)
    t_stack = time.time() - t0
    model = load_model("demo", device="cpu", precision="fp32")
    ram = 4 * a.region * a.region * a.planes + 64
    tiled = SegmentationSession(model, image, False, None, tiling="auto", ram_slices=ram)
    untiled = SegmentationSession(model, image, False, None, tiling="off", ram_slices=a.planes)
    grid = tiled.grid
    assert grid is not None
    gi, gj = grid.shape[0] // 2 - a.region // 2, grid.shape[1] // 2 - a.region // 2
    block = [(gi + i, gj + j) for i in range(a.region) for j in range(a.region)]
    r0, c0 = grid.inner(block[0])[:2]
    r1, c1 = grid.inner(block[-1])[2:]
    window = (r0 + MARGIN, c0 + MARGIN, r1 - MARGIN, c1 - MARGIN)

    # ---------------------------------------------------------------- (a) propagation
    t1 = time.time()
    rng = np.random.default_rng(0)
    zero = centred_in(truth[0], window)
    groups: dict[str, list[int]] = {"near": [], "away": []}
    for k in rng.permutation(np.unique(zero[zero > 0])).tolist():
        pt = interior_point(truth[0] == k)
        g = "near" if border_distance(grid, *pt) <= 10 else "away"
        if len(groups[g]) < a.per_group:
            groups[g].append(k)
    ids = groups["near"] + groups["away"]
    seeds = {how: np.zeros(truth.shape, np.int32) for how in ("tiled", "untiled")}
    for k in ids:
        pt = interior_point(truth[0] == k).astype(float)[None]
        for how, s in (("tiled", tiled), ("untiled", untiled)):
            m = s.prompt((0,), pt, np.ones(1, int), None, 0).mask
            seeds[how][0][m & (seeds[how][0] == 0)] = k
    tp = TiledPropagator(model, grid, lambda z, t: tiled.embeddings.get((z, *t)), seeds["tiled"])
    up = Propagator(model, lambda z: untiled.embeddings.get((z,)), seeds["untiled"])
    results = {}
    for how, p in (("tiled", tp), ("untiled", up)):
        for _ in p.run():
            pass
        results[how] = p.result if p.result is not None else p.assemble()
    t_prop = time.time() - t1

    # ---------------------------------------------------------------- (b) automatic masks
    t2 = time.time()
    amg = AutomaticMaskGenerator(model, **DEMO_PARAMS)
    planes = []
    for z in range(a.planes):
        run = TiledAmg(amg, grid, lambda t, z=z: tiled.embeddings.get((z, *t)), tiles=block)
        for _ in run.run():
            pass
        planes.append(run.labels)
    linked = link_slices(np.stack(planes), DEFAULT_LINK_IOU, link=True, min_slices=1)
    t_amg = time.time() - t2
    flat = [amg.generate(untiled.embeddings.get((z,))).labels for z in range(a.planes)]
    t_all = time.time() - t0

    print(
        f"stack {a.planes} × {a.size}² uint16 (seed {a.seed}, drift {a.drift} px/plane, "
        f"growth ≤ {a.growth:.0%}/plane); grid {grid.shape} of {grid.tile} + halo "
        f"{grid.halo}; block {a.region}×{a.region} tiles at {block[0]}, objects centred in "
        f"{window}; {torch.get_num_threads()} thread(s); stack {t_stack:.0f} s, "
        f"propagation {t_prop:.0f} s, tiled AMG {t_amg:.0f} s, total {t_all:.0f} s; tile "
        f"embeddings {tiled.embeddings.computed}"
    )
    print("\n(a) propagation from one click per nucleus on plane 0: mean IoU per plane\n")
    head = " | ".join(f"z={z}" for z in range(a.planes))
    print(f"| nuclei | n | how | {head} |")
    print("|---|---|---|" + "---|" * a.planes)
    for g, members in groups.items():
        for how in ("untiled", "tiled"):
            per = [
                np.mean([iou(results[how][z] == k, truth[z] == k) for k in members])
                for z in range(a.planes)
            ]
            cells = " | ".join(f"{v:.3f}" for v in per)
            label = "within 10 px of an inner border" if g == "near" else "away from borders"
            print(f"| {label} | {len(members)} | {how} | {cells} |")
    print("\n(b) automatic masks, F1 at IoU 0.5 per plane (objects centred in the window)\n")
    print(f"| how | {head} | tracked through z |")
    print("|---|" + "---|" * a.planes + "---|")
    sub = np.s_[r0:r1, c0:c1]
    for how, stack in (("untiled", np.stack(flat)), ("tiled + z-link", linked)):
        f1s = []
        for z in range(a.planes):
            win = (MARGIN, MARGIN, r1 - r0 - MARGIN, c1 - c0 - MARGIN)
            p = centred_in(stack[z][sub], win)
            t = centred_in(truth[z][sub], win)
            n_tp, n_p, n_t = object_f1(p, t)
            f1s.append(2 * n_tp / max(n_p + n_t, 1))
        got, every = tracked(
            np.stack([centred_in(s[sub], win) for s in stack]),
            np.stack([centred_in(t[sub], win) for t in truth]),
        )
        cells = " | ".join(f"{v:.3f}" for v in f1s)
        print(f"| {how} | {cells} | {got}/{every} |")


if __name__ == "__main__":
    main()
