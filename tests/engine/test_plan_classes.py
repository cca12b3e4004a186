"""The decode plan per CPU class: each class's ``"auto"`` plan, forced on this machine
with ``NAPARI_SAM_CPU_CLASS``, gives masks within the IoU bound of the exact mode (the
speed differs from class to class, never the answer), and the plan travels with the
model into the embedding store's attributes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_sam.engine import cpu
from napari_sam.engine.decode.predictor import Predictor
from napari_sam.engine.loader import load_model, wrap_model
from napari_sam.engine.plan import resolve_plan
from napari_sam.model.build import TINY_VIT_TEST_CONFIG, build_sam
from napari_sam.synthetic import nuclei_2d

CPU = torch.device("cpu")
# what "auto" must resolve to per class: (precision, attention)
EXPECTED = {
    "amx": ("bf16", "sdpa"),
    "avx512_bf16": ("bf16", "exact"),
    "avx512": ("fp32", "exact"),
    "avx2": ("fp32", "exact"),
    "apple_arm64": ("fp32", "exact"),
    "other": ("fp32", "exact"),
}
pytestmark = pytest.mark.filterwarnings("ignore:precision 'bf16' on a CPU")


def test_every_class_has_its_plan(force_cpu_class):
    assert set(EXPECTED) == set(cpu.CPU_CLASSES)
    for name, (precision, attention) in EXPECTED.items():
        force_cpu_class(name)
        plan = resolve_plan(CPU, "auto")
        assert (plan.precision, plan.attention, plan.cpu_class) == (precision, attention, name)
        assert not plan.exact and plan.fast_decoder and plan.fold_tiny_vit
        exact = resolve_plan(CPU, "fp32")  # the parity mode does not depend on the class
        assert (exact.exact, exact.precision, exact.attention) == (True, "fp32", "exact")
        assert exact.cpu_class == name
        assert any(line.split() == ["cpu", "class", name] for line in plan.describe().splitlines())
        assert plan.to_dict()["cpu_class"] == name


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


def _centre_clicks(truth: np.ndarray) -> list[np.ndarray]:
    """(row, col) of each object's pixel nearest its centroid."""
    out = []
    for i in np.unique(truth[truth > 0]):
        pix = np.argwhere(truth == i)
        out.append(pix[np.argmin(((pix - pix.mean(0)) ** 2).sum(1))].astype(float))
    return out


def _masks(model, image, clicks, boxes) -> list[np.ndarray]:
    p = Predictor(model)
    p.set_image(image)
    out = []
    for c in clicks:
        r = p.predict(points=c[None], labels=[1])
        out.append(r.masks[r.best])
    for b in boxes:
        r = p.predict(box=b)
        out.append(r.masks[r.best])
    return out


def test_each_class_plan_gives_the_exact_masks_on_the_demo_model(force_cpu_class):
    """Demo model, held-out synthetic nuclei, a centre click and a box per nucleus: every
    class's auto plan (bf16 ones emulated here, slow but correct) within mean mask IoU
    0.98 of the exact fp32 masks."""
    image, truth = nuclei_2d((256, 256), seed=424_242, n_nuclei=12, radius=(9.0, 16.0))
    clicks = _centre_clicks(truth)
    boxes = []
    for i in np.unique(truth[truth > 0]):
        rr, cc = np.nonzero(truth == i)
        boxes.append(np.array([rr.min(), cc.min(), rr.max(), cc.max()], float))
    reference = _masks(load_model("demo", device="cpu", precision="fp32"), image, clicks, boxes)
    assert min(m.sum() for m in reference) > 20  # real masks, not empty agreement
    seen = {}
    for name in cpu.CPU_CLASSES:
        force_cpu_class(name)
        model = load_model("demo", device="cpu", precision="auto")
        assert model.plan.cpu_class == name
        key = (model.plan.precision, model.plan.attention)
        if key not in seen:  # classes with the same plan give the same masks
            masks = _masks(model, image, clicks, boxes)
            seen[key] = float(np.mean([_iou(a, b) for a, b in zip(masks, reference, strict=False)]))
        assert seen[key] >= 0.98, (name, key, seen[key])
    assert set(seen) == {("fp32", "exact"), ("bf16", "exact"), ("bf16", "sdpa")}


def test_each_class_plan_keeps_tiny_vit_embeddings(force_cpu_class):
    """TinyViT (vit_t's encoder, random weights): each class's auto plan — folded batch
    norms, channels-last, fused oneDNN convolutions, bf16 where the class has it — keeps
    the embedding of the exact mode (cosine ≥ 0.99 per token, relative error ≤ 5 %)."""
    torch.manual_seed(0)
    sam = build_sam(TINY_VIT_TEST_CONFIG)
    state = {k: v.clone() for k, v in sam.state_dict().items()}
    rng = np.random.default_rng(3)
    image = (rng.random((200, 240, 3)) * 255).astype(np.uint8)

    def embed(precision: str) -> torch.Tensor:
        fresh = build_sam(TINY_VIT_TEST_CONFIG)
        fresh.load_state_dict(state)
        model = wrap_model(fresh, TINY_VIT_TEST_CONFIG, "tiny_vit", "cpu", precision)
        return Predictor(model).set_image(image).features.float()

    reference = embed("fp32")
    for name in cpu.CPU_CLASSES:
        force_cpu_class(name)
        got = embed("auto")
        cos = torch.nn.functional.cosine_similarity(got, reference, dim=1)
        rel = (got - reference).norm() / reference.norm()
        assert float(cos.min()) >= 0.99 and float(rel) <= 0.05, (name, float(cos.min()), rel)
