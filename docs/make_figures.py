"""Regenerate the result figures of the docs (no display needed).

    .venv/bin/python docs/make_figures.py

With the packaged demo model, on held-out synthetic data (seeds the training never
used), writes

* docs/images/amg_sample.png — automatic masks on the README sample (``nuclei_2d``
  seed 2024) next to its ground truth;
* docs/images/amg_volume.png — automatic masks linked in z on a 3D volume
  (``nuclei_3d`` seed 31000, the CI case): one colour per 3D object on every slice,
  ground-truth outlines in white;
* docs/images/propagation.png — every nucleus annotated on its middle slice only,
  pushed through the volume (seed 31001); outlines of the ground truth in white.

The pictures are built with Pillow (panels from benchmarks/eval_demo.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from skimage.segmentation import find_boundaries

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "images"
sys.path.insert(0, str(ROOT))

from benchmarks.eval_demo import _overlay, _rgb, _save_panels  # noqa: E402


def tint(rgb: np.ndarray, labels: np.ndarray, ids: list[int], alpha: float = 0.45) -> np.ndarray:
    """Each id of ``ids`` in its own palette colour (the colour follows the id's position
    in ``ids``, so an object keeps its colour on every slice), with a 1-px outline."""
    return _overlay(rgb, [labels == obj for obj in ids], alpha, edge_width=1)


def outline(rgb: np.ndarray, labels: np.ndarray, colour=(255, 255, 255)) -> np.ndarray:
    """The objects' inner boundaries drawn in ``colour``."""
    out = rgb.copy()
    out[find_boundaries(labels, mode="inner")] = colour
    return out


def amg_sample(model) -> None:
    from napari_sam.engine.amg import AutomaticMaskGenerator
    from napari_sam.engine.amg.volume import DEMO_PARAMS
    from napari_sam.engine.metrics import object_f1
    from napari_sam.synthetic import nuclei_2d

    image, truth = nuclei_2d((256, 256), seed=2024)
    labels = AutomaticMaskGenerator(model, **DEMO_PARAMS).generate(image).labels
    tp, npred, ntrue = object_f1(labels, truth)
    rgb = _rgb(image)
    panels = [
        ("sample (nuclei_2d, seed 2024)", rgb, []),
        (
            f"automatic masks: {npred} objects, F1 {2 * tp / (npred + ntrue):.2f}",
            tint(rgb, labels, list(np.unique(labels[labels > 0]))),
            [],
        ),
        (f"ground truth: {ntrue} nuclei", tint(rgb, truth, list(np.unique(truth[truth > 0]))), []),
    ]
    _save_panels(panels, OUT / "amg_sample.png", scale=1.5)


def amg_volume(model) -> None:
    from napari_sam.engine.amg import AutomaticMaskGenerator
    from napari_sam.engine.amg.volume import DEMO_MIN_SLICES, DEMO_PARAMS
    from napari_sam.engine.amg.volume import amg_volume as run
    from napari_sam.engine.decode.predictor import Predictor
    from napari_sam.synthetic import nuclei_3d

    image, truth = nuclei_3d((24, 128, 128), seed=31000, z_step=2.5)
    p = Predictor(model)
    amg = AutomaticMaskGenerator(model, **DEMO_PARAMS)
    labels = run(amg, lambda z: p.compute_embedding(image[z]), 24, min_slices=DEMO_MIN_SLICES)
    ids = list(np.unique(labels[labels > 0]))
    panels = [
        (f"z = {z}", outline(tint(_rgb(image[z]), labels[z], ids), truth[z]), [])
        for z in (5, 8, 11, 14, 17)
    ]
    panels[0] = (panels[0][0] + f": {len(ids)} objects linked in z", panels[0][1], [])
    _save_panels(panels, OUT / "amg_volume.png", scale=2.0)


def propagation(model) -> None:
    from napari_sam.engine.decode.predictor import Predictor
    from napari_sam.engine.propagate import propagate
    from napari_sam.synthetic import nuclei_3d
    from napari_sam.training.evaluate import ious_3d, seed_slices

    image, truth = nuclei_3d((24, 128, 128), seed=31001, z_step=2.5)
    p = Predictor(model)
    cache = {z: p.compute_embedding(image[z]) for z in range(len(image))}
    seeds = seed_slices(truth, (0.5,))
    result = propagate(model, cache.__getitem__, seeds)
    ids = list(np.unique(truth[truth > 0]))
    mean = float(np.mean(ious_3d(result, truth)))
    panels = []
    for z in (6, 9, 12, 15, 18):
        rgb = outline(tint(_rgb(image[z]), result[z], ids), truth[z])
        n_seed = len(np.unique(seeds[z][seeds[z] > 0]))
        panels.append((f"z = {z}" + (f" ({n_seed} annotated here)" if n_seed else ""), rgb, []))
    panels[0] = (panels[0][0] + f"; mean 3D IoU {mean:.2f}", panels[0][1], [])
    _save_panels(panels, OUT / "propagation.png", scale=2.0)


def main() -> None:
    from napari_sam.engine.loader import load_model

    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = load_model("demo", device="cpu", precision="fp32")
    amg_sample(model)
    amg_volume(model)
    propagation(model)


if __name__ == "__main__":
    main()
