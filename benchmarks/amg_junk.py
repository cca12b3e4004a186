"""Junk objects in automatic label images: the rim rule (``engine.labels.RimRule``) on
fresh synthetic nuclei of several kinds, with the packaged demo model and ``DEMO_PARAMS``.

Per kind, images ``nuclei_2d_varied((256, 256), seed=S, **VARIANTS[kind])`` (a generator
the demo model never saw in training) and, as "train-like", ``nuclei_2d((256, 256),
seed=S)``; default seeds 60000–60005 (never used in training: docs/demo_model.md). The
masks are generated once per image; the label image is then built without the rule
("before": the plain overlap resolution) and with it ("after", the defaults). Also: the
bundled sample (``napari-sam amg --sample nuclei-2d``, 45 nuclei), and AMG after
committing every third nucleus by a click (existing labels): the old write (new objects
where the labels are 0) against ``merge_new_objects``.

    python benchmarks/amg_junk.py [--seeds 60000-60005] [--threads 1] [--sweep]

``--sweep`` also prints F1 / junk for other rule parameters and for merging a junk
remainder into the neighbour it hugs instead of dropping it (how the defaults were
chosen; run it on the tuning seeds 60100-60103). Prints Markdown tables (fp32, CPU).
Columns: objects / nuclei found (IoU > 0.5) / nuclei; junk = objects matching no
nucleus; thin = objects in which no 3 × 3 square fits.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy import ndimage as ndi

from napari_sam.engine.amg import AutomaticMaskGenerator
from napari_sam.engine.amg.result import build_result
from napari_sam.engine.amg.volume import DEMO_PARAMS
from napari_sam.engine.decode.predictor import Predictor
from napari_sam.engine.labels import RimRule, merge_new_objects
from napari_sam.engine.loader import load_model
from napari_sam.engine.metrics import iou_matrix, object_f1
from napari_sam.synthetic import VARIANTS, nuclei_2d, nuclei_2d_varied

OFF = RimRule(0.0, 0)


def images(kind: str, seeds: list[int]):
    for s in seeds:
        if kind == "train-like":
            yield nuclei_2d((256, 256), seed=s)
        elif kind == "sample":
            yield nuclei_2d((256, 256), seed=2024)
        else:
            yield nuclei_2d_varied((256, 256), seed=s, **VARIANTS[kind])


def thin(labels: np.ndarray) -> int:
    """Objects of ``labels`` in which no 3 × 3 square fits."""
    sq = np.ones((3, 3), bool)
    same = (ndi.grey_erosion(labels, footprint=sq) == labels) & (
        ndi.grey_dilation(labels, footprint=sq) == labels
    )
    ids = np.unique(labels[labels > 0])
    return len(ids) - len(np.unique(labels[same & (labels > 0)]))


def counts(labels: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(objects, found, nuclei, junk, thin)."""
    tp, npred, ntrue = object_f1(labels, truth)
    return np.array([npred, tp, ntrue, npred - tp, thin(labels)])


def found_iou(labels: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(sum, count) of the best IoU of each nucleus found (IoU > 0.5)."""
    _, _, iou = iou_matrix(labels, truth)
    best = iou.max(axis=0) if iou.size else np.zeros(0)
    return np.array([best[best > 0.5].sum(), (best > 0.5).sum()])


def cell(c: np.ndarray) -> str:
    f1 = 2 * c[1] / max(c[0] + c[2], 1)
    return f"{c[0]} / {c[1]} / {c[2]} | {f1:.3f} | {c[3]} | {c[4]}"


def paint_merge(masks, shape, rule: RimRule, min_area: int) -> np.ndarray:
    """Variant measured with ``--sweep``: a junk remainder joins the object that covers
    most of its mask (the neighbour it hugs) instead of being dropped."""
    order = np.argsort([-m.predicted_iou * m.stability_score for m in masks], kind="stable")
    labels = np.zeros(shape, np.int64)
    for rank, i in enumerate(order, start=1):
        m = masks[i]
        r0, c0, r1, c1 = m.box
        box, crop = labels[r0 : r1 + 1, c0 : c1 + 1], m.crop
        free = crop & (box == 0)
        if not free.any():
            continue
        if rule.is_junk(free, m.area):
            box[free] = np.bincount(box[crop & (box > 0)]).argmax()
        else:
            box[free] = rank
    areas = np.bincount(labels.ravel())
    labels[(areas < min_area)[labels]] = 0
    return labels


def committed(model, image: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Every third nucleus committed as a user would: one click at its centre, the best
    of the three masks."""
    p = Predictor(model)
    p.set_image(image)
    out = np.zeros(truth.shape, np.uint32)
    for k, i in enumerate(range(1, int(truth.max()) + 1, 3), start=1):
        centre = np.argwhere(truth == i).mean(0)
        res = p.predict(points=centre[None], labels=np.array([1]))
        out[res.masks[res.best] & (out == 0)] = k
    return out


def add_sweep(sweep: dict, key, labels: np.ndarray, truth: np.ndarray) -> None:
    c, iou = sweep.get(key, (0, 0))
    sweep[key] = (c + counts(labels, truth), iou + found_iou(labels, truth))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="60000-60005", help="first-last")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sweep", action="store_true")
    args = ap.parse_args()
    lo, hi = (int(v) for v in args.seeds.split("-"))
    seeds = list(range(lo, hi + 1))
    torch.set_num_threads(args.threads)
    model = load_model("demo", device="cpu", precision="fp32")
    amg = AutomaticMaskGenerator(model, **DEMO_PARAMS)
    mins = DEMO_PARAMS["min_object_area"]
    kinds = ["sample", "train-like", *VARIANTS]
    rows, merged_rows, sweep = {}, {}, {}
    t_gen = t_off = t_on = 0.0
    rules = [(f, w) for w in (0, 2) for f in (0.0, 0.2, 0.3, 0.4, 0.5, 0.6)]
    for kind in kinds:
        acc = np.zeros((2, 5), int)
        acc_m = np.zeros((2, 5), int)
        for image, truth in images(kind, [seeds[0]] if kind == "sample" else seeds):
            t0 = time.perf_counter()
            masks = amg.generate_masks(image)
            t1 = time.perf_counter()
            before = build_result(masks, truth.shape, "quality", mins, OFF).labels
            t2 = time.perf_counter()
            after = build_result(masks, truth.shape, "quality", mins, amg.rim_rule).labels
            t3 = time.perf_counter()
            t_gen, t_off, t_on = t_gen + t1 - t0, t_off + t2 - t1, t_on + t3 - t2
            acc += [counts(before, truth), counts(after, truth)]
            existing = committed(model, image, truth)
            first = int(existing.max()) + 1
            old = np.where((existing == 0) & (before > 0), before + first - 1, 0)
            new, _ = merge_new_objects(existing, after, first_id=first)
            acc_m += [counts(np.where(v > 0, v, existing), truth) for v in (old, new)]
            acc_m[:, 4] = [thin(old), thin(new)]  # thin among the objects added
            if args.sweep and kind != "sample":
                for f, w in rules:
                    lab = build_result(masks, truth.shape, "quality", mins, RimRule(f, w)).labels
                    add_sweep(sweep, (f, w), lab, truth)
                lab = paint_merge(masks, truth.shape, amg.rim_rule, mins)
                add_sweep(sweep, "merge", lab, truth)
        rows[kind], merged_rows[kind] = acc, acc_m
    print(f"\ndemo model, {DEMO_PARAMS}, fp32, seeds {args.seeds}; rule {amg.rim_rule}\n")
    print("| kind | before: objects / found / nuclei | F1 | junk | thin "
          "| after: objects / found / nuclei | F1 | junk | thin |")
    print("|---|---|---|---|---|---|---|---|---|")
    for kind, (b, a) in rows.items():
        print(f"| {kind} | {cell(b)} | {cell(a)} |")
    tot = sum(v for k, v in rows.items() if k != "sample")
    print(f"| **all fresh images** | {cell(tot[0])} | {cell(tot[1])} |")
    print("\nAfter committing every third nucleus (one click each), AMG written into the labels:")
    print("| kind | old write: objects / found / nuclei | F1 | junk | thin added "
          "| merge_new_objects | F1 | junk | thin added |")
    print("|---|---|---|---|---|---|---|---|---|")
    for kind, (b, a) in merged_rows.items():
        print(f"| {kind} | {cell(b)} | {cell(a)} |")
    tot = sum(v for k, v in merged_rows.items() if k != "sample")
    print(f"| **all fresh images** | {cell(tot[0])} | {cell(tot[1])} |")
    n = sum(len(seeds) for k in kinds if k != "sample") + 1
    print(
        f"\nlabel image per {n} images: masks {1e3 * t_gen / n:.0f} ms, plain painting "
        f"{1e3 * t_off / n:.1f} ms, with the rule {1e3 * t_on / n:.1f} ms"
    )
    if args.sweep:
        print("\n| (min_uncovered_fraction, rim_width) | objects / found / nuclei | F1 | junk "
              "| thin | mean IoU of found |\n|---|---|---|---|---|---|")
        for key, (c, iou) in sweep.items():
            name = "merge into neighbour (0.4, 2)" if key == "merge" else str(key)
            print(f"| {name} | {cell(c)} | {iou[0] / max(iou[1], 1):.4f} |")


if __name__ == "__main__":
    main()
