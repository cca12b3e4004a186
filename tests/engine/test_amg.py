"""AutomaticMaskGenerator on the tiny random model: label image, records, clean-up options,
progress and parameter errors. (Equality with the official generator: test_amg_parity.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_sam.engine.amg import AmgResult, AutomaticMaskGenerator
from napari_sam.engine.amg.masks import CompactMask, _remove_small, clean_small_regions, crop_boxes
from napari_sam.engine.decode.predictor import Predictor
from napari_sam.engine.decode.upsample import mask_boxes
from napari_sam.engine.labels import paint_compact_masks
from napari_sam.engine.progress import Progress

from requires import require

# random weights: masks are noise patterns spanning the image, so box NMS is switched off
# (it would keep one) and the thresholds are lowered to let masks through
LOOSE = dict(
    points_per_side=4,
    pred_iou_thresh=0.0,
    stability_score_thresh=0.0,
    box_nms_thresh=1.0,
    crop_nms_thresh=1.0,
)
# the plain overlap resolution (rim rule off; the rule is tested in test_amg_junk.py)
PLAIN = dict(min_uncovered_fraction=0.0, rim_width=0)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one thread is many times faster than two on a small busy CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def image(shape=(48, 72), seed=0) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    return (gaussian_filter(rng.random(shape), 3) * 60000).astype(np.uint16)


@pytest.fixture
def result(tiny_model) -> AmgResult:
    return AutomaticMaskGenerator(tiny_model, **LOOSE).generate(image())


def expected_labels(masks: list[CompactMask], shape, order) -> np.ndarray:
    """Dense reference: paint masks from the lowest to the highest priority."""
    out = np.zeros(shape, np.int64)
    for rank in range(len(order) - 1, -1, -1):
        out[masks[order[rank]].dense(shape)] = rank + 1
    return out


def test_label_image_shape_dtype_ids(result):
    labels = result.labels
    assert labels.shape == (48, 72) and labels.dtype == np.uint32
    ids = np.unique(labels[labels > 0])
    assert len(result.records) > 1 and len(result.masks) == 48  # 16 points × 3, no NMS
    np.testing.assert_array_equal(ids, np.arange(1, len(result.records) + 1))
    assert len(result.masks) >= len(result.records)  # overlapped-away objects dropped


def test_overlaps_resolved_by_quality(tiny_model):
    """Where masks overlap, the one with the higher predicted_iou × stability wins."""
    result = AutomaticMaskGenerator(tiny_model, **PLAIN, **LOOSE).generate(image())
    masks = result.masks
    quality = np.array([m.predicted_iou * m.stability_score for m in masks])
    order = np.argsort(-quality, kind="stable")
    ref = expected_labels(masks, result.labels.shape, order)
    # same partition as the dense reference, ids renumbered after dropping empty objects
    kept = [r.mask_index for r in result.records]
    lut = np.zeros(len(masks) + 1, np.int64)
    for new, idx in enumerate(kept, start=1):
        lut[int(np.flatnonzero(order == idx)[0]) + 1] = new
    np.testing.assert_array_equal(result.labels, lut[ref])
    q = [masks[i].predicted_iou * masks[i].stability_score for i in kept]
    assert q == sorted(q, reverse=True)  # id 1 = best


def test_records_consistent_with_labels(result):
    for r in result.records:
        px = result.labels == r.label
        rows, cols = np.nonzero(px)
        assert r.area == px.sum() > 0
        assert r.bbox == (rows.min(), cols.min(), rows.max(), cols.max())
        m = result.masks[r.mask_index]
        assert r.mask_area == m.area >= r.area
        assert not (px & ~m.dense(px.shape)).any()  # an object only covers its mask
        assert (r.predicted_iou, r.stability_score) == (m.predicted_iou, m.stability_score)
        assert 0 <= r.point[0] < 48 and 0 <= r.point[1] < 72
        assert r.crop_box == (0, 0, 48, 72)
    feats = result.features()
    np.testing.assert_array_equal(feats["label"], np.arange(1, len(result.records) + 1))
    assert feats["area"].sum() == (result.labels > 0).sum()


def test_paint_order_area_keeps_small_objects_on_top(tiny_model):
    gen = AutomaticMaskGenerator(tiny_model, paint_order="area", **PLAIN, **LOOSE)
    res = gen.generate(image())
    order = np.argsort([-m.area for m in res.masks], kind="stable")
    ref = expected_labels(res.masks, res.labels.shape, order)
    assert np.array_equal(res.labels > 0, ref > 0)
    areas = [res.masks[r.mask_index].area for r in res.records]
    assert areas == sorted(areas, reverse=True)


def test_min_object_area_drops_small_objects(tiny_model, result):
    cut = int(np.median([r.area for r in result.records])) + 1
    res = AutomaticMaskGenerator(tiny_model, min_object_area=cut, **LOOSE).generate(image())
    assert res.records and all(r.area >= cut for r in res.records)
    big = {r.mask_index for r in result.records if r.area >= cut}
    assert {r.mask_index for r in res.records} == big
    np.testing.assert_array_equal(np.unique(res.labels[res.labels > 0]), np.arange(1, len(big) + 1))


def test_min_mask_region_area_cleans_masks(tiny_model, result):
    gen = AutomaticMaskGenerator(tiny_model, min_mask_region_area=30, **LOOSE)
    res = gen.generate(image())
    from scipy import ndimage

    for m in res.masks:
        dense = m.dense((48, 72))
        lab, n = ndimage.label(dense, structure=np.ones((3, 3)))
        sizes = np.bincount(lab.ravel())[1:]
        assert n <= 1 or sizes.min() >= 30  # no small islands left (unless only one)
        holes, _ = ndimage.label(~dense, structure=np.ones((3, 3)))
        assert np.bincount(holes.ravel())[1:].min(initial=10**9) >= 30
    assert sum(m.area for m in res.masks) != sum(m.area for m in result.masks)


def random_blobs(shape, seed, density=0.45):
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    return gaussian_filter(rng.random(shape), 1.5) > density + 0.05 * rng.random()


@pytest.mark.parametrize("seed", range(12))
def test_compact_clean_up_equals_full_size(seed):
    """Box-sized clean-up (padding stands for the outside) equals the full-size one."""
    rng = np.random.default_rng(seed)
    shape = (40, 50)
    dense = np.zeros(shape, bool)
    r0, c0 = rng.integers(0, 6, 2) * (seed % 3 > 0)
    r1, c1 = shape[0] - rng.integers(0, 6), shape[1] - rng.integers(0, 6)
    dense[r0:r1, c0:c1] = random_blobs((r1 - r0, c1 - c0), seed)
    rows, cols = np.flatnonzero(dense.any(1)), np.flatnonzero(dense.any(0))
    box = (rows[0], cols[0], rows[-1], cols[-1])
    m = CompactMask(
        dense[box[0] : box[2] + 1, box[1] : box[3] + 1], box, 0.9, 0.9, (0, 0), (0, 0, 40, 50)
    )
    for area in (3, 15, 60, 400):
        crop, new_box, changed = clean_small_regions(m, area, shape)
        ref, ref_changed = _remove_small(dense, area, band_areas=None)
        got = CompactMask(crop, new_box, 0, 0, (0, 0), (0, 0, 0, 0)).dense(shape)
        np.testing.assert_array_equal(got, ref)
        assert changed == ref_changed


def test_clean_up_equals_official_remove_small_regions():
    cv2 = require("cv2")  # noqa: F841  (the official function needs OpenCV)
    require("segment_anything")
    from segment_anything.utils.amg import remove_small_regions

    for seed in range(6):
        mask = random_blobs((30, 40), seed)
        for area in (4, 25, 200):
            expect, c1 = remove_small_regions(mask, area, "holes")
            expect, c2 = remove_small_regions(expect, area, "islands")
            got, changed = _remove_small(mask, area, band_areas=None)
            np.testing.assert_array_equal(got, expect)
            assert changed == (c1 or c2)


def test_mask_boxes():
    m = torch.zeros(3, 5, 7, dtype=torch.bool)
    m[0, 1:3, 2:6] = True
    m[2, 4, 0] = True
    assert mask_boxes(m).tolist() == [[1, 2, 2, 5], [0, 0, 0, 0], [4, 0, 4, 0]]


def test_paint_compact_masks():
    a = np.ones((2, 2), bool)
    b = np.ones((3, 3), bool)
    empty = np.zeros((1, 1), bool)
    labels, kept = paint_compact_masks((4, 4), [a, empty, b], [(0, 0), (0, 0), (1, 1)])
    assert kept == [0, 2] and labels.dtype == np.uint32
    assert labels.tolist() == [[1, 1, 0, 0], [1, 1, 2, 2], [0, 2, 2, 2], [0, 2, 2, 2]]
    labels, kept = paint_compact_masks((4, 4), [a, b], [(0, 0), (1, 1)], min_area=5)
    assert kept == [1] and (labels == 1).sum() == 8 and labels[0, 0] == 0


def test_embedding_input_and_progress(tiny_model):
    img = image()
    gen = AutomaticMaskGenerator(tiny_model, **LOOSE)
    direct = gen.generate(img)
    emb = Predictor(tiny_model).compute_embedding(img)
    steps, it = [], gen.iter_generate(emb)
    while True:
        try:
            steps.append(next(it))
        except StopIteration as stop:
            via_emb = stop.value
            break
    np.testing.assert_array_equal(direct.labels, via_emb.labels)
    assert all(isinstance(p, Progress) for p in steps)
    assert [p.done for p in steps] == list(range(1, steps[-1].total + 1))


def test_crops_need_the_image_with_an_embedding(tiny_model):
    img = image()
    emb = Predictor(tiny_model).compute_embedding(img)
    gen = AutomaticMaskGenerator(tiny_model, crop_n_layers=1, **LOOSE)
    with pytest.raises(ValueError, match="image="):
        gen.generate(emb)
    res = gen.generate(emb, image=img)
    assert res.labels.shape == img.shape
    assert {m.crop_box for m in res.masks} <= {b for b, _ in crop_boxes(img.shape, 1, 512 / 1500)}
    with pytest.raises(ValueError, match="does not match"):
        gen.generate(emb, image=img[:40])
    with pytest.raises(ValueError, match="not both"):
        gen.generate(img, image=img)


def test_embedding_from_other_model_rejected(tiny_model):
    from napari_sam.engine.loader import wrap_model
    from napari_sam.model.build import build_sam

    torch.manual_seed(1)
    other = wrap_model(build_sam(tiny_model.config), tiny_model.config, "x", "cpu", "fp32")
    emb = Predictor(other).compute_embedding(image())
    with pytest.raises(ValueError, match="other model weights"):
        AutomaticMaskGenerator(tiny_model, **LOOSE).generate(emb)


def test_nothing_passes_gives_empty_labels(tiny_model):
    res = AutomaticMaskGenerator(tiny_model, points_per_side=2, pred_iou_thresh=1.0).generate(
        image()
    )
    assert res.records == [] and res.masks == [] and not res.labels.any()
    assert res.features()["label"].shape == (0,)


def test_rgb_and_point_grids(tiny_model):
    rgb = np.stack([image(seed=s).astype(np.uint8) for s in range(3)], axis=-1)
    grid = np.array([[0.5, 0.5], [0.25, 0.75]])
    kw = {**LOOSE, "points_per_side": None}
    res = AutomaticMaskGenerator(tiny_model, point_grids=[grid], **kw).generate(rgb)
    points = {r.point for r in res.records}
    assert points <= {(24.0, 36.0), (12.0, 54.0)}


def test_bf16_decoder_runs(tiny_model):
    res = AutomaticMaskGenerator(tiny_model, decoder_precision="bf16", **LOOSE).generate(image())
    assert res.labels.dtype == np.uint32 and res.records
    assert all(isinstance(m.predicted_iou, float) for m in res.masks)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        (dict(points_per_side=0), "points_per_side"),
        (dict(points_per_side=None), "exactly one"),
        (dict(point_grids=[np.zeros((2, 2))]), "exactly one"),
        (dict(points_per_side=None, point_grids=[np.ones((3, 3))]), r"\(N, 2\)"),
        (dict(points_per_side=None, point_grids=[np.full((1, 2), 2.0)]), r"\[0, 1\]"),
        (dict(points_per_side=None, point_grids=[np.ones((1, 2))], crop_n_layers=1), "one grid"),
        (dict(points_per_batch=0), "points_per_batch"),
        (dict(pred_iou_thresh=1.5), "pred_iou_thresh"),
        (dict(stability_score_thresh=-0.1), "stability_score_thresh"),
        (dict(stability_score_offset=-1), "stability_score_offset"),
        (dict(box_nms_thresh=0.0), "box_nms_thresh"),
        (dict(crop_nms_thresh=1.2), "crop_nms_thresh"),
        (dict(crop_overlap_ratio=1.0), "crop_overlap_ratio"),
        (dict(crop_n_layers=-1), "crop_n_layers"),
        (dict(crop_n_layers=1.5), "crop_n_layers"),
        (dict(points_per_side=4, crop_n_layers=3, crop_n_points_downscale_factor=2), "< 1"),
        (dict(crop_n_points_downscale_factor=0), "downscale"),
        (dict(min_mask_region_area=-5), "min_mask_region_area"),
        (dict(min_object_area=2.5), "min_object_area"),
        (dict(paint_order="size"), "paint_order"),
        (dict(min_uncovered_fraction=1.5), "min_uncovered_fraction"),
        (dict(min_uncovered_fraction=True), "min_uncovered_fraction"),
        (dict(rim_width=-1), "rim_width"),
        (dict(rim_width=1.5), "rim_width"),
        (dict(pred_iou_thresh="high"), "pred_iou_thresh"),
        (dict(decoder_precision="fp16"), "decoder_precision"),
        (dict(upsampling="bicubic"), "upsampling"),
    ],
)
def test_bad_parameters(tiny_model, kw, match):
    with pytest.raises(ValueError, match=match):
        AutomaticMaskGenerator(tiny_model, **kw)
