"""The rim rule of automatic label images (engine.labels.RimRule): masks left as a thin
rim or a small part by higher-priority masks are dropped, in the generator's label image
(paint_compact_masks) and when new objects are written into existing labels
(merge_new_objects). Demo-model figures: docs/amg.md, benchmarks/amg_junk.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage as ndi

from napari_sam.engine.amg import AutomaticMaskGenerator
from napari_sam.engine.amg.volume import DEMO_PARAMS
from napari_sam.engine.labels import RimRule, merge_new_objects, paint_compact_masks
from napari_sam.engine.metrics import object_f1

# random weights (as test_amg.py): masks are noise patterns, NMS off, thresholds open
LOOSE = dict(
    points_per_side=4,
    pred_iou_thresh=0.0,
    stability_score_thresh=0.0,
    box_nms_thresh=1.0,
    crop_nms_thresh=1.0,
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def disc(shape, centre, r) -> np.ndarray:
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= r * r


def fits_square(pixels: np.ndarray, k: int) -> bool:
    """Naive reference: does some k × k window lie entirely inside ``pixels`` (2D)?"""
    if min(pixels.shape) < k:
        return False
    return bool(sliding_window_view(pixels, (k, k)).all(axis=(-2, -1)).any())


def full(mask: np.ndarray) -> tuple[list[np.ndarray], list[tuple[int, int]]]:
    return [mask], [(0, 0)]


# --------------------------------------------------------------------------- RimRule
def test_rule_fraction_rim_and_untouched_objects():
    rule = RimRule(min_uncovered_fraction=0.4, rim_width=2)
    a = disc((40, 40), (20, 20), 10)
    ring2 = disc((40, 40), (20, 20), 12) & ~a  # 2 px thick crescent / ring
    assert rule.is_junk(ring2, int(ring2.sum()) + 10)  # partly covered, a thin rim
    assert not rule.is_junk(ring2, int(ring2.sum()))  # nothing covered: a real thin object
    thick = disc((40, 40), (20, 20), 14) & ~disc((40, 40), (20, 20), 10)  # 4 px thick
    assert fits_square(thick, 3)
    assert not rule.is_junk(thick, int(thick.sum()) + 10)
    assert rule.is_junk(thick, int(thick.sum() / 0.39))  # < 40 % of the object left
    assert not rule.is_junk(thick, int(thick.sum() / 0.41))
    assert rule.is_junk(np.zeros((5, 5), bool), 10)  # nothing left
    off = RimRule(0.0, 0)
    assert not off.active and not off.is_junk(ring2, 10_000)
    # 3D: the square lies in the last two axes (per slice)
    stack = np.stack([ring2, ring2])
    assert rule.is_junk(stack, int(stack.sum()) + 1)
    assert not rule.is_junk(np.stack([ring2, thick]), int(ring2.sum() + thick.sum()) + 1)


@pytest.mark.parametrize(
    "kw", [dict(min_uncovered_fraction=-0.1), dict(min_uncovered_fraction=2), dict(rim_width=-1)]
)
def test_rule_rejects_bad_values(kw):
    with pytest.raises(ValueError, match=next(iter(kw))):
        RimRule(**kw)


# ------------------------------------------------------------- paint_compact_masks
def test_crescent_of_a_larger_lower_priority_mask_is_dropped():
    shape = (48, 48)
    a = disc(shape, (24, 24), 10)
    bigger = disc(shape, (24, 25), 12)  # the same nucleus, a bit larger
    crops = [a, bigger]
    plain, kept = paint_compact_masks(shape, crops, [(0, 0)] * 2)
    assert kept == [0, 1]  # the plain label image: a 1–3 px crescent, 30 % of its mask
    assert 0.2 < (plain == 2).sum() / bigger.sum() < 0.4
    labels, kept = paint_compact_masks(shape, crops, [(0, 0)] * 2, rule=RimRule())
    assert kept == [0] and np.array_equal(labels, a.astype(np.uint32))
    # a small nucleus: its 2 px rim is most of the larger mask, the rim test drops it
    small, ring = disc(shape, (24, 24), 4), disc(shape, (24, 24), 6)
    plain, kept = paint_compact_masks(shape, [small, ring], [(0, 0)] * 2)
    assert kept == [0, 1] and (plain == 2).sum() > 0.5 * ring.sum()
    assert not fits_square(plain == 2, 3)
    labels, kept = paint_compact_masks(shape, [small, ring], [(0, 0)] * 2, rule=RimRule())
    assert kept == [0] and np.array_equal(labels, small.astype(np.uint32))
    labels, kept = paint_compact_masks(shape, [small, ring], [(0, 0)] * 2, rule=RimRule(0.4, 1))
    assert kept == [0, 1]  # rim_width=1: only 1 px rims are rims


def test_half_covered_mask_is_kept_and_junk_pixels_stay_free():
    shape = (48, 64)
    a = disc(shape, (24, 20), 10)
    b = disc(shape, (24, 36), 10)  # overlaps a: more than half of it stays uncovered
    labels, kept = paint_compact_masks(shape, [a, b], [(0, 0)] * 2, rule=RimRule())
    assert kept == [0, 1]
    assert np.array_equal(labels == 1, a) and np.array_equal(labels == 2, b & ~a)
    # a junk mask (a's rim) claims nothing: a lower-priority neighbour gets those pixels
    rim = disc(shape, (24, 20), 12)
    c = disc(shape, (24, 33), 3)  # a small object inside rim's crescent, overlapping a
    labels, kept = paint_compact_masks(shape, [a, rim, c], [(0, 0)] * 3, rule=RimRule())
    assert kept == [0, 2] and np.array_equal(labels == 2, c & ~a)


def test_rule_is_placed_with_origins_and_min_area():
    shape = (40, 40)
    a = disc((21, 21), (10, 10), 10)
    rim = disc((25, 25), (12, 12), 12)  # box-sized crops placed at their origins
    labels, kept = paint_compact_masks(shape, [a, rim], [(5, 5), (3, 3)], rule=RimRule())
    assert kept == [0] and labels.sum() == a.sum()
    labels, kept = paint_compact_masks(
        shape, [a, rim], [(5, 5), (3, 3)], min_area=int(a.sum()) + 1, rule=RimRule()
    )
    assert kept == [] and not labels.any()


def rule_reference(masks, shape, order, rule: RimRule) -> np.ndarray:
    """Dense reference: masks claim free pixels in priority order unless what they would
    claim is junk (fraction test, naive square search)."""
    out = np.zeros(shape, np.int64)
    for rank, i in enumerate(order, start=1):
        m = masks[i].dense(shape)
        free = m & (out == 0)
        n, area = int(free.sum()), int(m.sum())
        junk = n == 0 or (
            n < area
            and (
                n < rule.min_uncovered_fraction * area
                or not fits_square(free, rule.rim_width + 1)
            )
        )
        if not junk:
            out[free] = rank
    return out


@pytest.mark.parametrize("paint_order", ["quality", "area"])
def test_generator_labels_equal_dense_reference(tiny_model, paint_order):
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    img = (gaussian_filter(rng.random((48, 72)), 3) * 60000).astype(np.uint16)
    gen = AutomaticMaskGenerator(tiny_model, paint_order=paint_order, **LOOSE)
    res = gen.generate(img)
    masks = res.masks
    key = [-m.predicted_iou * m.stability_score for m in masks]
    if paint_order == "area":
        key = [-m.area for m in masks]
    order = np.argsort(key, kind="stable")
    ref = rule_reference(masks, img.shape, order, gen.rim_rule)
    plain = AutomaticMaskGenerator(
        tiny_model, paint_order=paint_order, min_uncovered_fraction=0, rim_width=0, **LOOSE
    ).generate(img)
    assert len(res.records) < len(plain.records)  # the rule drops masks here
    ranks = np.unique(ref[ref > 0])
    lut = np.zeros(len(masks) + 1, np.int64)
    lut[ranks] = np.arange(1, len(ranks) + 1)
    np.testing.assert_array_equal(res.labels, lut[ref])
    assert [r.mask_index for r in res.records] == [int(order[k - 1]) for k in ranks]
    for r in res.records:  # records describe the label image
        assert r.area == int((res.labels == r.label).sum())


# --------------------------------------------------------------- merge_new_objects
def test_merge_drops_crescent_keeps_half_covered_ids_consecutive():
    shape = (60, 90)
    existing = np.zeros(shape, np.uint16)
    existing[disc(shape, (20, 20), 10)] = 3
    existing[disc(shape, (40, 60), 9)] = 7
    new = np.zeros(shape, np.uint32)
    new[disc(shape, (20, 20), 12)] = 1  # existing object 3 plus a 2 px rim
    half = disc(shape, (40, 68), 9)  # 45 % covered by object 7
    new[half] = 2
    new[disc(shape, (48, 20), 6)] = 4  # a free object (ids need not be consecutive)
    new[disc(shape, (40, 61), 8) & ~(new > 0)] = 5  # inside object 7 entirely
    before = (existing.copy(), new.copy())
    values, n = merge_new_objects(existing, new)
    assert np.array_equal(existing, before[0]) and np.array_equal(new, before[1])
    assert n == 2 and values.dtype == existing.dtype and values.shape == shape
    assert np.array_equal(values == 8, half & (existing == 0))  # ids from max + 1
    assert np.array_equal(values == 9, new == 4)
    assert set(np.unique(values)) == {0, 8, 9}
    assert not values[existing > 0].any()  # nothing existing is overwritten
    # the same with the rule off: the crescent becomes an object (the old behaviour)
    values, n = merge_new_objects(existing, new, rule=RimRule(0, 0))
    assert n == 3 and not fits_square(values == 8, 3)


def test_merge_first_id_min_area_overwrite_3d():
    existing = np.zeros((2, 30, 30), np.int32)
    existing[0][disc((30, 30), (15, 15), 8)] = 1
    new = np.zeros((2, 30, 30), np.int64)
    new[0][disc((30, 30), (15, 15), 10)] = 1  # a 2 px rim on slice 0 …
    new[1][disc((30, 30), (15, 15), 4)] = 1  # … and a disc on slice 1: 46 % left
    new[1, 0:3, 0:3] = 2  # 9 px, free
    values, n = merge_new_objects(existing, new, first_id=100)
    assert n == 2 and values.max() == 101  # both kept: the 3D remainder has a 3 × 3 core
    values, n = merge_new_objects(existing, new, first_id=100, min_area=10)
    assert n == 1 and set(np.unique(values)) == {0, 100}
    values, n = merge_new_objects(existing, new, overwrite=True)
    assert n == 2 and np.array_equal(values == 2, new == 1)  # written whole, over id 1
    new[1] = 0
    new[1, 0:3, 0:3] = 2
    values, n = merge_new_objects(existing, new)  # now only the rim is left of object 1
    assert n == 1 and np.array_equal(values == 2, new == 2)
    with pytest.raises(ValueError, match="shape"):
        merge_new_objects(existing, new[:1])
    full255 = np.zeros((3, 3), np.uint8)
    full255[0, 0] = 255
    with pytest.raises(ValueError, match="fit"):
        merge_new_objects(full255, np.eye(3, dtype=np.uint8), overwrite=True)
    values, n = merge_new_objects(np.zeros((3, 3), np.uint8), np.zeros((3, 3), np.uint8))
    assert n == 0 and not values.any()


# ------------------------------------------------------------------- demo model
@pytest.fixture(scope="module")
def demo_amg():
    from napari_sam.engine.loader import load_model

    model = load_model("demo", device="cpu", precision="fp32")
    return AutomaticMaskGenerator(model, **DEMO_PARAMS)


def thin_objects(labels: np.ndarray) -> list[int]:
    """Ids of objects in which no 3 × 3 square fits (≤ 2 px thick everywhere)."""
    square = np.ones((3, 3), bool)
    same = (ndi.grey_erosion(labels, footprint=square) == labels) & (
        ndi.grey_dilation(labels, footprint=square) == labels
    )
    cores = set(np.unique(labels[same & (labels > 0)]).tolist())
    return sorted(set(np.unique(labels[labels > 0]).tolist()) - cores)


def test_bundled_sample_has_no_junk_objects(demo_amg):
    """The README / demo.sh sample (45 nuclei): 52 objects before the rule (7 crescents
    around nuclei already covered), 45 with it."""
    from napari_sam.synthetic import nuclei_2d

    image, truth = nuclei_2d((256, 256), seed=2024)
    res = demo_amg.generate(image)
    tp, npred, ntrue = object_f1(res.labels, truth)
    assert ntrue == 45 and npred <= 46 and tp >= 44, (tp, npred, ntrue)
    assert thin_objects(res.labels) == []
    for r in res.records:  # every object holds ≥ 40 % of its mask (or all of it)
        assert r.area == r.mask_area or r.area >= 0.4 * r.mask_area
    # the official mask set is untouched: the rule only shapes the label image
    official = demo_amg.generate_masks(image)
    assert len(res.masks) == len(official) > len(res.records)
    for a, b in zip(res.masks, official, strict=True):
        assert a.box == b.box and np.array_equal(a.crop, b.crop)


@pytest.mark.parametrize(("kind", "seed"), [("soft", 60000), ("soft-large", 60002)])
def test_fresh_soft_edged_nuclei(demo_amg, kind, seed):
    """Nuclei from a generator the demo model never saw (soft edges): every nucleus the
    plain label image finds is still found, and the junk objects are gone. soft-large
    is the case of the issue (seed 60002: 26 objects for 16 nuclei without the rule)."""
    from napari_sam.synthetic import VARIANTS, nuclei_2d_varied

    image, truth = nuclei_2d_varied(seed=seed, **VARIANTS[kind])
    res = demo_amg.generate(image)
    plain = AutomaticMaskGenerator(
        demo_amg.model, **DEMO_PARAMS, min_uncovered_fraction=0, rim_width=0
    ).generate(image)
    tp, npred, ntrue = object_f1(res.labels, truth)
    tp0, npred0, _ = object_f1(plain.labels, truth)
    # soft 60000: 44 of 47 found either way, 8 false objects → 2; soft-large: 10 → 0
    assert tp >= tp0 and 2 * (npred - tp) <= npred0 - tp0, (tp, npred, tp0, npred0)
    assert thin_objects(res.labels) == []
    if kind == "soft-large":
        assert tp == ntrue and npred <= ntrue + 1 and npred0 >= ntrue + 5


def test_existing_objects_get_no_rims(demo_amg):
    """AMG after committing objects: the new objects around committed ones are not
    written as fragments; the committed ones are untouched; new ids above the max."""
    from napari_sam.synthetic import nuclei_2d

    image, truth = nuclei_2d((256, 256), seed=2024)
    existing = np.zeros(truth.shape, np.uint32)
    committed = list(range(1, 46, 3))  # 15 nuclei committed by hand, 1 px larger
    for k, i in enumerate(committed, start=1):
        existing[ndi.binary_dilation(truth == i) & (existing == 0)] = 10 + k
    new = demo_amg.generate(image).labels
    plain = np.where((existing == 0) & (new > 0), new + 25, 0)  # the old panel write
    values, n = merge_new_objects(existing, new)
    merged = np.where(values > 0, values, existing)
    assert np.array_equal(merged[existing > 0], existing[existing > 0])
    assert set(np.unique(values[values > 0])) == set(range(26, 26 + n))
    assert thin_objects(values) == [] and len(thin_objects(plain)) >= 5
    tp, npred, ntrue = object_f1(merged, truth)
    assert ntrue == 45 and tp >= 44 and npred <= 46, (tp, npred, ntrue)


def test_renumber_keeps_order_offset_dtype_and_empty():
    from napari_sam.engine.labels import renumber

    lab = np.array([[0, 7, 7], [3, 0, 250]], np.uint8)
    out = renumber(lab)
    assert out.tolist() == [[0, 2, 2], [1, 0, 3]] and out.dtype == np.uint8
    assert renumber(lab, offset=300).max() == 302  # widened to hold the ids
    assert renumber(np.zeros((0, 4), np.uint32)).shape == (0, 4)
