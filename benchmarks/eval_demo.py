"""Quality of a (demo) model on held-out synthetic nuclei, and a picture on skimage's cell.

    python benchmarks/eval_demo.py                    # the packaged demo model
    python benchmarks/eval_demo.py --model run.pt     # any checkpoint

Prints mean IoU per prompt mode (see napari_sam.training.evaluate.evaluate) on images
generated with a seed the training never saw, and writes docs/images/demo_cell.png.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


SIZES = ((0, 300, "< 300 px (radius ≲ 10)"), (300, 1000, "300–1000 px"), (1000, 10**9, "> 1000 px"))


def table(results: dict[str, list[float]]) -> str:
    from napari_sam.training.evaluate import MODES

    area = np.asarray(results["area"])
    head = "| prompt | mIoU | IoU ≥ 0.8 | " + " | ".join(f"mIoU {s[2]}" for s in SIZES) + " |"
    rows = [head, "|---" * (3 + len(SIZES)) + "|"]
    for mode in MODES:
        a = np.asarray(results[mode])
        by = [a[(area >= lo) & (area < hi)] for lo, hi, _ in SIZES]
        cells = " | ".join(f"{b.mean():.3f} ({b.size})" if b.size else "–" for b in by)
        rows.append(f"| {mode} | {a.mean():.3f} | {np.mean(a >= 0.8):.0%} | {cells} |")
    return "\n".join(rows)


def _rgb(img: np.ndarray) -> np.ndarray:
    from napari_sam.engine.image import to_uint8_rgb

    return to_uint8_rgb(img).astype(np.float32)


def _overlay(
    rgb: np.ndarray, masks: list[np.ndarray], alpha: float = 0.45, edge_width: int = 2
) -> np.ndarray:
    """Tint mask i with palette colour i and draw its outline (``edge_width`` px)."""
    from scipy import ndimage as ndi

    out = rgb.copy()
    for i, m in enumerate(masks):
        colour = np.array(PALETTE[i % len(PALETTE)], np.float32)
        out[m] = (1 - alpha) * out[m] + alpha * colour
        edge = m & ~ndi.binary_erosion(m, iterations=edge_width)
        out[edge] = colour
    return out


def _save_panels(panels: list[tuple[str, np.ndarray, list]], path: Path, scale: float) -> None:
    """Panels side by side with a title line; marks: ("point", r, c, positive) or
    ("box", r0, c0, r1, c1)."""
    from PIL import Image, ImageDraw

    ims = []
    for title, rgb, marks in panels:
        im = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
        im = im.resize((int(im.width * scale), int(im.height * scale)))
        canvas = Image.new("RGB", (im.width, im.height + 18), "white")
        canvas.paste(im, (0, 18))
        d = ImageDraw.Draw(canvas)
        d.text((4, 3), title, fill="black")
        for m in marks:
            if m[0] == "point":
                r, c = m[1] * scale + 18, m[2] * scale
                d.ellipse(
                    (c - 5, r - 5, c + 5, r + 5), fill="lime" if m[3] else "red", outline="black"
                )
            else:
                r0, c0, r1, c1 = (v * scale for v in m[1:])
                d.rectangle((c0, r0 + 18, c1, r1 + 18), outline="cyan", width=2)
        ims.append(canvas)
    out = Image.new("RGB", (sum(i.width for i in ims) + 6 * (len(ims) - 1), ims[0].height), "white")
    x = 0
    for i in ims:
        out.paste(i, (x, 0))
        x += i.width + 6
    path.parent.mkdir(parents=True, exist_ok=True)
    out.save(path)
    print(f"wrote {path}")


PALETTE = [(255, 80, 40), (40, 200, 255), (255, 220, 0), (200, 60, 255), (60, 255, 120)]


def cell_picture(model, path: Path) -> None:
    """The model on ``skimage.data.cell()`` (bundled, no download): a point, a box and a
    point + negative point prompt, drawn over the image."""
    from skimage import data

    from napari_sam.engine.decode.predictor import Predictor

    img = data.cell()
    p = Predictor(model)
    p.set_image(img)
    centre = [378.0, 430.0]  # the round cell (660 × 550 image)
    box = [312.0, 365.0, 445.0, 495.0]
    neg = [60.0, 60.0]
    prompts = [
        ("point", dict(points=[centre], labels=[1], multimask=True), [("point", *centre, True)]),
        ("box", dict(box=box, multimask=False), [("box", *box)]),
        (
            "point + negative point",
            dict(points=[centre, neg], labels=[1, 0], multimask=False),
            [("point", *centre, True), ("point", *neg, False)],
        ),
    ]
    rgb = _rgb(img)
    panels = [("skimage.data.cell()", rgb, [])]
    for title, kw, marks in prompts:
        r = p.predict(**kw)
        panels.append(
            (f"{title}: score {r.scores[r.best]:.2f}", _overlay(rgb, [r.masks[r.best]]), marks)
        )
    _save_panels(panels, path, scale=0.5)


def synthetic_picture(model, pair, path: Path) -> None:
    """One centre click per nucleus of a held-out image: ground truth vs the model."""
    from napari_sam.engine.decode.predictor import Predictor
    from napari_sam.engine.metrics import interior_point
    from napari_sam.training.prompts import object_pixels

    img, lab = pair
    p = Predictor(model)
    p.set_image(img)
    rgb = _rgb(img)
    gt, pred, marks = [], [], []
    for i in object_pixels(lab, 30):
        c = interior_point(lab == i)
        r = p.predict(points=c[None], labels=[1])
        gt.append(lab == i)
        pred.append(r.masks[r.best])
        marks.append(("point", *c, True))
    panels = [
        ("held-out synthetic image", rgb, []),
        ("ground truth", _overlay(rgb, gt), []),
        ("one click per nucleus -> demo model", _overlay(rgb, pred), marks),
    ]
    _save_panels(panels, path, scale=1.5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="demo", help="registry name or checkpoint path")
    ap.add_argument("--images", type=int, default=24, help="held-out synthetic images")
    ap.add_argument("--seed", type=int, default=20251125, help="held-out data seed")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--no-pictures", action="store_true")
    args = ap.parse_args()

    import torch

    from napari_sam.engine.loader import load_model
    from napari_sam.training.data import random_synthetic_pairs
    from napari_sam.training.evaluate import evaluate

    torch.set_num_threads(1)
    model = load_model(args.model, device="cpu", precision=args.precision)
    pairs = random_synthetic_pairs(args.images, seed=args.seed)
    t = time.perf_counter()
    results = evaluate(model, pairs, seed=args.seed)
    dt = time.perf_counter() - t
    print(
        f"model {args.model}: {args.images} held-out synthetic images (seed {args.seed}), "
        f"{args.precision}, {dt:.0f} s"
    )
    print(table(results))
    if not args.no_pictures:
        cell_picture(model, ROOT / "docs" / "images" / "demo_cell.png")
        synthetic_picture(model, pairs[0], ROOT / "docs" / "images" / "demo_synthetic.png")


if __name__ == "__main__":
    main()
