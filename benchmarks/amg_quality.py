"""Automatic-mask quality of a demo-like model on held-out synthetic nuclei.

Reproduces the validation table of docs/amg_volumes.md: object-level F1 at IoU 0.5
(``napari_sam.engine.metrics.object_f1``) with ``DEMO_PARAMS``, z-linking at
``DEFAULT_LINK_IOU`` and ``DEMO_MIN_SLICES``, pooled over

* the CI volume ``nuclei_3d((24, 128, 128), seed=31000, z_step=2.5)``,
* 8 validation volumes, seeds 31003…31010 (2D F1 pooled over all slices; 3D F1 over
  the linked objects),
* 6 2D images ``nuclei_2d((256, 256), seed=40000…40005)``,
* the README sample ``nuclei_2d((256, 256), seed=2024)``.

None of these seeds is used in training. Usage::

    python benchmarks/amg_quality.py [--model demo|CHECKPOINT] [--threads 1]
        [--pred-iou-thresh 0.6]

Prints a Markdown table (fp32, CPU).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from napari_sam.engine.amg import AutomaticMaskGenerator
from napari_sam.engine.amg.volume import DEMO_MIN_SLICES, DEMO_PARAMS, amg_volume
from napari_sam.engine.decode.predictor import Predictor
from napari_sam.engine.loader import load_model
from napari_sam.engine.metrics import object_f1
from napari_sam.synthetic import nuclei_2d, nuclei_3d

CI_VOLUME = 31000
VOLUMES = range(31003, 31011)
IMAGES = range(40000, 40006)
SAMPLE = 2024


def volume_counts(amg, p, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(tp, #pred, #true) pooled over the slices, and for the linked 3D objects."""
    image, truth = nuclei_3d((24, 128, 128), seed=seed, z_step=2.5)
    labels = amg_volume(
        amg, lambda z: p.compute_embedding(image[z]), 24, min_slices=DEMO_MIN_SLICES
    )
    c2 = np.sum([object_f1(labels[z], truth[z]) for z in range(24)], axis=0)
    return c2, np.array(object_f1(labels, truth))


def image_counts(amg, seed: int) -> np.ndarray:
    image, truth = nuclei_2d((256, 256), seed=seed)
    return np.array(object_f1(amg.generate(image).labels, truth))


def f1_value(c: np.ndarray) -> float:
    """F1 from (tp, #pred, #true) counts."""
    return 2 * c[0] / max(c[1] + c[2], 1)


def f1(c: np.ndarray) -> str:
    return f"{f1_value(c):.3f} ({c[0]}/{c[1]}/{c[2]})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="demo", help="registry name or checkpoint path")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pred-iou-thresh", type=float, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model, device="cpu", precision="fp32")
    params = dict(DEMO_PARAMS)
    if args.pred_iou_thresh is not None:
        params["pred_iou_thresh"] = args.pred_iou_thresh
    amg = AutomaticMaskGenerator(model, **params)
    p = Predictor(model)
    t0 = time.perf_counter()
    ci2, ci3 = volume_counts(amg, p, CI_VOLUME)
    per_volume = [volume_counts(amg, p, s) for s in VOLUMES]
    v2 = np.sum([c for c, _ in per_volume], axis=0)
    v3 = np.sum([c for _, c in per_volume], axis=0)
    im = np.sum([image_counts(amg, s) for s in IMAGES], axis=0)
    sample = image_counts(amg, SAMPLE)
    print(
        f"\nmodel {args.model}, {params}, min_slices {DEMO_MIN_SLICES}, fp32, "
        f"{time.perf_counter() - t0:.0f} s; F1 at IoU 0.5 (tp/pred/true)\n"
    )
    print("| set | 2D F1 | 3D F1 |")
    print("|---|---|---|")
    print(f"| CI volume (seed {CI_VOLUME}) | {f1(ci2)} | {f1(ci3)} |")
    print(
        f"| validation volumes ({VOLUMES.start}–{VOLUMES.stop - 1}), pooled | {f1(v2)} | {f1(v3)} |"
    )
    print(f"| validation 2D images ({IMAGES.start}–{IMAGES.stop - 1}), pooled | {f1(im)} | – |")
    print(f"| README sample (seed {SAMPLE}) | {f1(sample)} | – |")
    per = ", ".join(f"{f1_value(a):.2f}/{f1_value(b):.2f}" for a, b in per_volume)
    print(f"\nper validation volume (2D/3D): {per}")


if __name__ == "__main__":
    main()
