"""Propagation quality with the packaged demo model on held-out synthetic 3D nuclei
(the figures of docs/propagation.md, same volumes as benchmarks/propagate_eval.py):
mean 3D IoU ≥ 0.80 from one annotated slice per nucleus (its middle slice) and ≥ 0.85
from two, for anisotropic and isotropic volumes.

The demo model is a required part of the product: if it is missing this test fails."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_sam import weights
from napari_sam.engine.decode.predictor import Predictor
from napari_sam.engine.loader import load_model
from napari_sam.engine.propagate import propagate
from napari_sam.synthetic import nuclei_3d
from napari_sam.training.evaluate import ious_3d, seed_slices

# held out: the demo model's training volumes (stages 6-7) use other seeds
# (benchmarks/demo_train_data.py, SeedSequence(6) / (7))
CASES = {
    "anisotropic": ((24, 128, 128), 2.5, 31_000),
    "isotropic": ((48, 128, 128), 1.0, 32_000),
}
VOLUMES = 3


@pytest.fixture(scope="module")
def demo():
    path = weights.fetch_weights("demo")
    assert path.is_file(), f"the packaged demo model is missing: {path}"
    return load_model("demo", device="cpu", precision="fp32")


@pytest.mark.parametrize("case", list(CASES))
def test_3d_iou_from_one_and_two_slices(demo, case) -> None:
    shape, z_step, seed = CASES[case]
    torch.set_num_threads(1)
    one, two = [], []
    for i in range(VOLUMES):
        image, truth = nuclei_3d(shape, seed=seed + i, z_step=z_step)
        p = Predictor(demo)
        cache = {z: p.compute_embedding(image[z]) for z in range(shape[0])}
        one += ious_3d(propagate(demo, cache.__getitem__, seed_slices(truth, (0.5,))), truth)
        two += ious_3d(propagate(demo, cache.__getitem__, seed_slices(truth, (0.25, 0.75))), truth)
    assert len(one) >= 20
    assert np.mean(one) >= 0.80, f"{case}: mean 3D IoU from 1 slice {np.mean(one):.3f}"
    assert np.mean(two) >= 0.85, f"{case}: mean 3D IoU from 2 slices {np.mean(two):.3f}"
    assert np.mean(two) > np.mean(one)
