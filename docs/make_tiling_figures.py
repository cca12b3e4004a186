"""Regenerate the figures of docs/tiling.md (no display needed).

    .venv/bin/python docs/make_tiling_figures.py

With the packaged demo model (fp32, ``DEMO_PARAMS``) on a synthetic 1024² uint16 plane
(``nuclei_large((1024, 1024), (8, 40), seed=11)``, nuclei 8–40 px), writes

* docs/images/tiling_amg.png — left: the plane resized into the 256-px model input
  (no tiles), red outlines; middle: tiled automatic masks (inner tiles of 192 px + a
  32-px halo), one colour per object, inner tile borders in yellow and one tile's
  embedded (outer) region in cyan; right: a zoom on an inner-border crossing with the
  ground truth in white — nuclei on the borders are one object each.

Pure Pillow / numpy drawing (outlines of the label images, drawn at display size).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from skimage.segmentation import find_boundaries

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "images"
PALETTE = np.array(
    [
        (255, 80, 40),
        (40, 200, 255),
        (255, 220, 0),
        (200, 60, 255),
        (60, 255, 120),
        (255, 140, 200),
        (120, 160, 255),
    ],
    np.uint8,
)


def gray(image: np.ndarray) -> np.ndarray:
    """(H, W) any dtype → (H, W, 3) uint8 (the model's normalisation)."""
    from napari_sam.engine.image import to_uint8_rgb

    return to_uint8_rgb(image)


def zoom(a: np.ndarray, scale: float) -> np.ndarray:
    """Nearest-neighbour resize of an (H, W[, 3]) array by ``scale``."""
    h, w = a.shape[:2]
    rows = np.minimum((np.arange(int(h * scale)) / scale).astype(int), h - 1)
    cols = np.minimum((np.arange(int(w * scale)) / scale).astype(int), w - 1)
    return a[rows][:, cols]


def outlines(rgb: np.ndarray, labels: np.ndarray, colour=None) -> np.ndarray:
    """Object outlines drawn on ``rgb`` (same size): one palette colour per id, or
    ``colour`` for all."""
    out = rgb.copy()
    edge = find_boundaries(labels, mode="inner")
    if colour is None:
        out[edge] = PALETTE[labels[edge].astype(np.int64) % len(PALETTE)]
    else:
        out[edge] = colour
    return out


def panel(title: str, rgb: np.ndarray, lines=(), boxes=()) -> Image.Image:
    """A titled panel; lines: ("h" | "v", position px) in yellow; boxes: (r0, c0, r1,
    c1) px in cyan."""
    im = Image.fromarray(rgb)
    canvas = Image.new("RGB", (im.width, im.height + 18), "white")
    canvas.paste(im, (0, 18))
    d = ImageDraw.Draw(canvas)
    d.text((4, 3), title, fill="black")
    for kind, pos in lines:
        if kind == "h":
            d.line((0, pos + 18, im.width, pos + 18), fill=(255, 230, 0), width=1)
        else:
            d.line((pos, 18, pos, im.height + 18), fill=(255, 230, 0), width=1)
    for r0, c0, r1, c1 in boxes:
        d.rectangle((c0, r0 + 18, c1, r1 + 18), outline=(0, 255, 255), width=2)
    return canvas


def tiling_amg(model) -> None:
    from napari_sam.engine.amg import DEMO_PARAMS, AutomaticMaskGenerator
    from napari_sam.engine.amg.tiled import tiled_amg
    from napari_sam.engine.decode.predictor import Predictor
    from napari_sam.engine.metrics import object_f1
    from napari_sam.engine.tiling import TileGrid
    from napari_sam.synthetic import nuclei_large

    image, truth = nuclei_large((1024, 1024), (8, 40), seed=11)
    amg = AutomaticMaskGenerator(model, **DEMO_PARAMS)
    p = Predictor(model)
    untiled = amg.generate(p.compute_embedding(image)).labels
    grid = TileGrid.for_model(image.shape, model.sam.image_size)
    assert grid is not None
    tiled = tiled_amg(amg, grid, lambda t: p.compute_embedding(grid.read(image, t), resize=False))

    def f1(labels) -> str:
        tp, npred, ntrue = object_f1(labels, truth)
        return f"{npred} objects, F1 {2 * tp / (npred + ntrue):.2f}"

    s = 0.5
    base = zoom(gray(image), s)
    left = outlines(base, zoom(untiled, s), (255, 60, 60))
    mid = outlines(base, zoom(tiled, s))
    th, tw = grid.tile
    lines = [("h", r * s) for r in range(th, image.shape[0], th)]
    lines += [("v", c * s) for c in range(tw, image.shape[1], tw)]
    outer = tuple(v * s for v in grid.outer((1, 2)))
    # zoom on the crossing of inner borders at (384, 384)
    z0, z1, zs = 384 - 80, 384 + 80, 3.0
    crop = np.s_[z0:z1, z0:z1]
    right = outlines(zoom(gray(image[crop]), zs), zoom(truth[crop], zs), (255, 255, 255))
    right = outlines(right, zoom(tiled[crop], zs))
    zl = [("h", (384 - z0) * zs), ("v", (384 - z0) * zs)]
    panels = [
        panel(f"untiled (resized to 256 px): {f1(untiled)}", left),
        panel(f"tiles 192 + halo 32 ({grid.n_tiles}): {f1(tiled)}", mid, lines, [outer]),
        panel("zoom at a tile corner (white: truth)", right, zl),
    ]
    out = Image.new(
        "RGB", (sum(p.width for p in panels) + 12, max(p.height for p in panels)), "white"
    )
    x = 0
    for p_ in panels:
        out.paste(p_, (x, 0))
        x += p_.width + 6
    OUT.mkdir(parents=True, exist_ok=True)
    out.save(OUT / "tiling_amg.png")
    print(f"wrote {OUT / 'tiling_amg.png'}")


def main() -> None:
    from napari_sam.engine.loader import load_model

    torch.set_num_threads(max(1, torch.get_num_threads()))
    tiling_amg(load_model("demo", device="cpu", precision="fp32"))


if __name__ == "__main__":
    main()
