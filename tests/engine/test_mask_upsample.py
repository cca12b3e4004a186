"""MaskUpsampler: thresholded masks and counts without full-size float logits equal the
official dense resize + threshold (up to float rounding), on the block path for smooth
logits and on the dense fallback for noisy ones; AMG and Predictor give the same masks
with it as with the dense resize."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from napari_sam.engine.amg import AutomaticMaskGenerator
from napari_sam.engine.decode.predictor import Predictor
from napari_sam.engine.decode.upsample import (
    MaskUpsampler,
    _Blocks,
    _Dense,
    mask_boxes,
    upsample_chunk,
)
from napari_sam.engine.transforms import resized_shape


def blob_logits(m: int, n: int, seed: int, noise: float = 0.0) -> torch.Tensor:
    """(m, n, n) logits like a mask decoder's: +/- 20 inside / outside a few ellipses,
    steep (a few low-res pixels wide) boundaries; optional pixel noise."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(n) * 1.0, torch.arange(n) * 1.0, indexing="ij")
    scale = torch.tensor([n, n, n / 4, n / 4])
    out = torch.full((m, n, n), -20.0)
    for i in range(m):
        for _ in range(3):
            cy, cx, ry, rx = (torch.rand(4, generator=g) * scale).tolist()
            d = ((yy - cy) / (ry + 3)) ** 2 + ((xx - cx) / (rx + 3)) ** 2
            out[i] = torch.maximum(out[i], 60 * (1 - d).clamp(-1, 1))
    return out + noise * torch.randn(m, n, n, generator=g)


GEOMETRIES = [  # (low-res side, model size, slice shape)
    (256, 1024, (1024, 1024)),  # SAM, slice at model size: one resize
    (256, 1024, (512, 512)),  # two resizes (down)
    (256, 1024, (300, 700)),  # non-square, padding cropped
    (256, 1024, (2048, 1500)),  # two resizes (up)
    (64, 256, (700, 333)),  # the demo model's geometry
    (64, 256, (40, 90)),  # a small crop: the second resize shrinks
    (32, 64, (64, 64)),  # the tiny test model's grid (boundaries in > 10 % of blocks)
]


def dense_reference(low, n_img, shape, thresholds):
    up = upsample_chunk(low, n_img, resized_shape(*shape, n_img), shape)
    return [up > t for t in thresholds]


@pytest.mark.parametrize(("n_low", "n_img", "shape"), GEOMETRIES)
def test_blocks_equal_dense_resize(n_low, n_img, shape):
    low = blob_logits(4, n_low, seed=n_low + shape[0])
    up = MaskUpsampler((n_low, n_low), n_img, resized_shape(*shape, n_img), shape)
    res = up.threshold(low, (1.0, -1.0), 0.0)
    if n_low >= 64:  # smooth logits on a real grid: only boundary blocks evaluated
        assert isinstance(res, _Blocks)
    hi, lo, mask = dense_reference(low, n_img, shape, (1.0, -1.0, 0.0))
    # float rounding may flip an output lying within ~1e-6 of a threshold: allow 1e-5
    tol = max(2, int(1e-5 * shape[0] * shape[1]))
    ref_counts = torch.stack([hi.flatten(1).sum(1), lo.flatten(1).sum(1)], 1)
    assert (res.counts - ref_counts).abs().max() <= tol
    masks = res.masks()
    assert masks.shape == (4, *shape) and masks.dtype == torch.bool
    assert (masks != mask).sum() <= tol
    assert 0 < int(mask.sum()) < mask.numel()  # the case is not trivial


@pytest.mark.parametrize(("n_low", "n_img", "shape"), GEOMETRIES[:5])
def test_block_boxes_and_crops_equal_those_of_the_masks(n_low, n_img, shape):
    """Boxes and box-sized crops straight from the blocks (what AMG uses) equal the
    boxes and crops of the full-size masks of the same result; an empty mask gets the
    zero box and a 1 × 1 crop."""
    low = blob_logits(5, n_low, seed=7 + n_low)
    low[2] = -20.0  # empty
    up = MaskUpsampler((n_low, n_low), n_img, resized_shape(*shape, n_img), shape)
    res = up.threshold(low, (1.0, -1.0), 0.0)
    assert isinstance(res, _Blocks)
    which = torch.tensor([4, 2, 0, 1])
    masks = res.masks(which)
    boxes = res.boxes(which)
    assert torch.equal(boxes, mask_boxes(masks))
    assert boxes[1].tolist() == [0, 0, 0, 0]
    crops = res.crops(which, boxes.numpy())
    for m, crop, (r0, c0, r1, c1) in zip(masks.numpy(), crops, boxes.tolist(), strict=True):
        np.testing.assert_array_equal(crop, m[r0 : r1 + 1, c0 : c1 + 1])
    assert crops[1].shape == (1, 1) and not crops[1].any()
    assert sum(bool(c.any()) for c in crops) >= 2  # the case is not trivial


def test_subset_of_masks_in_order():
    low = blob_logits(6, 64, seed=3)
    up = MaskUpsampler((64, 64), 256, (256, 256), (200, 200))
    res = up.threshold(low, (1.0,), 0.0)
    which = torch.tensor([4, 0, 2])
    assert torch.equal(res.masks(which), res.masks()[which])


def test_noisy_logits_fall_back_to_the_dense_resize():
    g = torch.Generator().manual_seed(0)
    low = torch.randn(3, 64, 64, generator=g)  # a sign change in almost every block
    up = MaskUpsampler((64, 64), 256, (256, 160), (400, 250))
    res = up.threshold(low, (1.0, -1.0), 0.0)
    assert isinstance(res, _Dense)
    hi, lo, mask = dense_reference(low, 256, (400, 250), (1.0, -1.0, 0.0))
    assert torch.equal(res.counts[:, 0], hi.flatten(1).sum(1))
    assert torch.equal(res.counts[:, 1], lo.flatten(1).sum(1))
    assert torch.equal(res.masks(), mask)
    assert torch.equal(up.masks(low, 0.0), mask)  # no count thresholds


def test_axis_weights_are_the_composite_resize():
    """Every block row of weights sums to one and reproduces the 1-D resize."""
    up = MaskUpsampler((64, 64), 256, (256, 171), (300, 200))
    for axis, (n_in, n_out) in ((up.rows, (256, 300)), (up.cols, (171, 200))):
        w = axis.weights[axis.valid]  # (n_out, K)
        assert w.shape[0] == n_out
        assert torch.allclose(w.sum(1), torch.ones(n_out), atol=1e-6)
        sig = torch.linspace(-3, 5, 64, dtype=torch.float64)
        ref = F.interpolate(sig[None, None], size=256, mode="linear", align_corners=False)
        ref = F.interpolate(ref[..., :n_in], size=n_out, mode="linear", align_corners=False)
        windows = sig.unfold(0, axis.k, 1)[axis.win[axis.group]]  # (n_out, K)
        assert torch.allclose((w.double() * windows).sum(1), ref[0, 0], atol=1e-5)


@pytest.fixture(scope="module")
def demo():
    from napari_sam.engine.loader import load_model

    return load_model("demo", device="cpu", precision="fp32")


def test_amg_blocks_same_masks_as_dense(demo):
    from napari_sam.synthetic import nuclei_2d

    img = nuclei_2d((300, 420), seed=5)[0]
    emb = Predictor(demo).compute_embedding(img)
    kw = dict(pred_iou_thresh=0.6, stability_score_thresh=0.8, points_per_side=16)
    dense = AutomaticMaskGenerator(demo, upsampling="dense", **kw).generate_masks(emb)
    blocks = AutomaticMaskGenerator(demo, upsampling="blocks", **kw).generate_masks(emb)
    assert len(dense) > 10
    assert len(blocks) == len(dense)
    for a, b in zip(dense, blocks, strict=True):
        assert a.box == b.box
        assert np.count_nonzero(a.crop != b.crop) <= 2
        # a pixel within float rounding of ±offset may count differently: ≤ 2 pixels of
        # the count n(logit > -1) ≥ area, i.e. ≤ 2 / area
        assert a.stability_score == pytest.approx(b.stability_score, abs=2 / a.area + 1e-6)


def test_predictor_fast_path_masks_equal_exact_upsampling(demo):
    from napari_sam.synthetic import nuclei_2d

    img, gt = nuclei_2d((300, 420), seed=6)
    fast, exact = Predictor(demo, fast_decoder=True), Predictor(demo, fast_decoder=False)
    for p in (fast, exact):
        p.set_image(img)
    for lab in np.unique(gt)[1:6]:
        rows, cols = np.nonzero(gt == lab)
        q = dict(points=[[rows.mean(), cols.mean()]], labels=[1])
        a, b = fast.predict(**q), exact.predict(**q)
        assert a.masks.shape == b.masks.shape == (3, 300, 420)
        assert np.count_nonzero(a.masks != b.masks) <= 3
