"""Embedding-cache storage dtype: mask IoU of float16-stored vs float32 embeddings.

The embedding cache stores each slice's image embedding (256 × 64 × 64 for SAM). Storing
it as float16 halves the disk size (2 MiB instead of 4 MiB per slice); this script
measures what that does to the masks. For every image and prompt it decodes masks once
from the float32 embedding and once from the same embedding rounded to float16 (what a
float16 store returns), and reports the IoU of the binary masks (all multimask outputs
and the single-mask output), the fraction of pixels that flip, and the largest change of
the predicted IoU score.

For scale it also reports the same comparison for a bf16 (autocast) encoder against the
fp32 encoder — the difference the ``precision`` setting already makes.

Model: the official SAM ViT-B architecture (official package, ``tests/oracle.py``) with
seeded random weights, reduced depth (default 4 blocks, 2 global) at the published
1024² input and 256 × 64 × 64 embedding. Prompts follow the parity prompt set (one
point, points with negatives, box, box + negative point), placed at several positions.

Run::

    .venv/bin/python benchmarks/store_dtype.py [--depth 4] [--seeds 0 1] [--images 4]
    .venv/bin/python benchmarks/store_dtype.py --checkpoint sam_vit_b_01ec64.pth
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from napari_sam.engine.decode.predictor import Predictor
from napari_sam.engine.embedding import Embedding
from napari_sam.engine.metrics import iou
from napari_sam.model.build import CONFIGS

from oracle import build_official, ours_from_official


def smooth_image(shape: tuple[int, ...], seed: int, dtype=np.uint8) -> np.ndarray:
    """Blobby test image (not white noise), deterministic; same as the parity tests."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    img = gaussian_filter(rng.random(shape), sigma=(6, 6, 0)[: len(shape)])
    img = (img - img.min()) / (img.max() - img.min())
    top = 255 if dtype == np.uint8 else 40000
    return (img * top).astype(dtype)


def test_images(n: int) -> dict[str, np.ndarray]:
    shapes = [((256, 256), np.uint8), ((256, 256, 3), np.uint8), ((200, 330, 3), np.uint8)]
    shapes += [((240, 180), np.uint16), ((512, 384), np.uint16), ((300, 300, 3), np.uint8)]
    out = {}
    for i in range(n):
        shape, dtype = shapes[i % len(shapes)]
        out[f"{'x'.join(map(str, shape))}-{np.dtype(dtype).name}-{i}"] = smooth_image(
            shape, 10 + i, dtype
        )
    return out


def prompt_set(h: int, w: int, rng: np.random.Generator, positions: int) -> list[dict]:
    """The parity prompt kinds at ``positions`` random places, in (row, col) pixels."""
    prompts = []
    for _ in range(positions):
        r, c = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
        nr, nc = rng.uniform(0.05, 0.95) * h, rng.uniform(0.05, 0.95) * w
        dh, dw = rng.uniform(0.1, 0.3) * h, rng.uniform(0.1, 0.3) * w
        box = [max(r - dh, 0), max(c - dw, 0), min(r + dh, h - 1), min(c + dw, w - 1)]
        prompts += [
            ("one_point", dict(points=[[r, c]], labels=[1])),
            ("points_neg", dict(points=[[r, c], [nr, nc], [r + dh / 2, c]], labels=[1, 0, 1])),
            ("box", dict(box=box)),
            ("box_points", dict(box=box, points=[[nr, nc]], labels=[0])),
        ]
    return prompts


def compare(p_ref: Predictor, emb_ref: Embedding, emb_other: Embedding, prompts) -> dict:
    """Masks from ``emb_other`` vs ``emb_ref`` over all prompts (multimask + single)."""
    ious, flips, dscore = [], [], []
    per_kind: dict[str, list[float]] = {}
    for kind, prompt in prompts:
        for multimask in (True, False):
            p_ref.set_embedding(emb_ref)
            a = p_ref.predict(multimask=multimask, **prompt)
            p_ref.set_embedding(emb_other)
            b = p_ref.predict(multimask=multimask, **prompt)
            for ma, mb in zip(a.masks, b.masks, strict=True):
                v = iou(ma, mb)
                ious.append(v)
                per_kind.setdefault(kind, []).append(v)
                flips.append(float(np.mean(ma != mb)))
            dscore.append(float(np.max(np.abs(a.scores - b.scores))))
    return dict(ious=ious, flips=flips, dscore=dscore, per_kind=per_kind)


def as_float16(emb: Embedding) -> Embedding:
    """What a float16 store hands back: features rounded to float16, read as float32."""
    return dataclasses.replace(emb, features=emb.features.half().float())


def model_pairs(args: argparse.Namespace, cfg):
    """(seed, fp32 predictor, bf16 predictor or None) for each weight set to measure."""
    if args.checkpoint:
        from napari_sam.engine.loader import load_model

        fp32 = Predictor(load_model(args.checkpoint, device="cpu", precision="fp32"))
        bf16 = (
            None
            if args.no_bf16
            else Predictor(load_model(args.checkpoint, device="cpu", precision="bf16"))
        )
        yield 0, fp32, bf16
        return
    for seed in args.seeds:
        official = build_official(cfg, seed=seed)
        fp32 = Predictor(ours_from_official(official, cfg, "fp32"))
        bf16 = None if args.no_bf16 else Predictor(ours_from_official(official, cfg, "bf16"))
        yield seed, fp32, bf16


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depth", type=int, default=4, help="ViT-B blocks (published: 12)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="weight seeds")
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--positions", type=int, default=4, help="prompt positions per image")
    ap.add_argument("--no-bf16", action="store_true", help="skip the bf16-encoder reference")
    ap.add_argument("--checkpoint", help="measure a real checkpoint instead of random weights")
    args = ap.parse_args()

    torch.set_grad_enabled(False)
    g = args.depth
    cfg = dataclasses.replace(
        CONFIGS["vit_b"], depth=g, global_attn_indexes=tuple(range(g // 2 - 1, g, g // 2))
    )
    rows = {"float16 storage": [], "bf16 encoder": []}
    kinds: dict[str, list[float]] = {}
    max_abs, rel = [], []
    t0 = time.perf_counter()
    for seed, fp32, bf16 in model_pairs(args, cfg):
        rng = np.random.default_rng(seed)
        for img in test_images(args.images).values():
            emb = fp32.compute_embedding(img)
            half = as_float16(emb)
            d = (half.features - emb.features).abs()
            max_abs.append(float(d.max()))
            rel.append(float(d.norm() / emb.features.norm()))
            prompts = prompt_set(*img.shape[:2], rng, args.positions)
            r = compare(fp32, emb, half, prompts)
            rows["float16 storage"].append(r)
            for k, v in r["per_kind"].items():
                kinds.setdefault(k, []).extend(v)
            if bf16 is not None:
                try:
                    eb = bf16.compute_embedding(img)
                except RuntimeError as err:  # report, keep the float16 measurement
                    print(f"bf16 encoder failed, reference skipped: {err}", file=sys.stderr)
                    bf16 = None
                    continue
                eb = dataclasses.replace(eb, model_hash=emb.model_hash)
                rows["bf16 encoder"].append(compare(fp32, emb, eb, prompts))
    elapsed = time.perf_counter() - t0

    model = (
        args.checkpoint
        if args.checkpoint
        else f"random-weight vit_b, depth {cfg.depth}, global {cfg.global_attn_indexes}, "
        f"seeds {args.seeds}"
    )
    print(
        f"{model}; {args.images} images, {args.positions} positions × 4 prompt kinds, "
        f"multimask (3) + single mask; {elapsed:.0f} s"
    )
    print(
        f"float16 rounding of features: max |Δ| {max(max_abs):.2e}, relative L2 {np.mean(rel):.2e}"
    )
    print()
    print(
        "| vs float32 embedding | masks | mean IoU | min IoU | IoU < 0.99 | "
        "max pixel flips | max |Δ score| |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, rs in rows.items():
        if not rs:
            continue
        ious = np.concatenate([r["ious"] for r in rs])
        flips = np.concatenate([r["flips"] for r in rs])
        ds = np.concatenate([r["dscore"] for r in rs])
        print(
            f"| {name} | {ious.size} | {ious.mean():.5f} | {ious.min():.4f} | "
            f"{np.sum(ious < 0.99)} | {flips.max():.2e} | {ds.max():.2e} |"
        )
    print()
    print("| float16 storage, per prompt kind | masks | mean IoU | min IoU |")
    print("|---|---|---|---|")
    for k, v in kinds.items():
        a = np.asarray(v)
        print(f"| {k} | {a.size} | {a.mean():.5f} | {a.min():.4f} |")


if __name__ == "__main__":
    main()
