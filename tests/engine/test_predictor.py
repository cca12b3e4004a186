"""Predictor behaviour on a tiny random model: shapes, API, errors, batching, flip."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from napari_sam import Predictor, load_model  # public API names
from napari_sam.engine.transforms import boxes_to_model_xyxy, rc_to_model_xy, resized_shape


@pytest.fixture
def pred(tiny_model):
    p = Predictor(tiny_model)
    rng = np.random.default_rng(0)
    p.set_image(rng.integers(0, 4000, (40, 64), dtype=np.uint16))  # non-square, 16 bit
    return p


def test_public_api_names():
    assert callable(load_model) and Predictor.__name__ == "Predictor"


def test_result_shapes(pred):
    r = pred.predict(points=[[10, 20]], labels=[1])
    assert r.masks.shape == (3, 40, 64) and r.masks.dtype == bool
    assert r.scores.shape == (3,) and r.scores.dtype == np.float32
    assert r.logits.shape == (3, 32, 32)  # 4 × the 8 × 8 token grid
    r1 = pred.predict(points=[[10, 20]], labels=[1], multimask=False)
    assert r1.masks.shape == (1, 40, 64)
    # mask_input from a previous step is accepted and changes the result
    r2 = pred.predict(points=[[10, 20]], labels=[1], mask_input=r.logits[r.best] * 50)
    assert not np.allclose(r2.logits, r.logits)


def test_embedding_shapes_and_sizes(pred, tiny_model):
    emb = pred.embedding
    assert tuple(emb.features.shape) == (1, 32, 8, 8)
    assert emb.original_size == (40, 64)
    assert emb.input_size == resized_shape(40, 64, 64) == (40, 64)
    assert emb.model_hash == tiny_model.weights_hash


def test_set_embedding_roundtrip(pred, tiny_model):
    r = pred.predict(box=[5, 5, 30, 40])
    emb = pred.embedding
    p2 = Predictor(tiny_model)
    p2.set_embedding(emb)
    r2 = p2.predict(box=[5, 5, 30, 40])
    assert np.array_equal(r.masks, r2.masks)
    np.testing.assert_array_equal(r.logits, r2.logits)


def test_set_embedding_from_other_weights_refused(pred, tiny_model):
    emb = dataclasses.replace(pred.embedding, model_hash="0" * 64)
    with pytest.raises(ValueError, match="other model weights"):
        Predictor(tiny_model).set_embedding(emb)
    bad = dataclasses.replace(pred.embedding, features=torch.zeros(1, 16, 8, 8))
    with pytest.raises(ValueError, match="shape"):
        Predictor(tiny_model).set_embedding(bad)


def test_predict_before_image(tiny_model):
    with pytest.raises(RuntimeError, match="set_image"):
        Predictor(tiny_model).predict(points=[[1, 1]], labels=[1])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "no prompt"),
        ({"points": [[1, 1]]}, "together"),
        ({"points": [[1, 1, 1]], "labels": [1]}, r"shape \(N, 2\)"),
        ({"points": [[1, 1]], "labels": [1, 0]}, "one per point"),
        ({"points": [[1, 1]], "labels": [2]}, "1 \\(positive\\) or 0"),
        ({"points": [[50, 1]], "labels": [1]}, "outside the slice"),
        ({"points": [[1, -3]], "labels": [1]}, "outside the slice"),
        ({"points": [[np.nan, 1]], "labels": [1]}, "finite"),
        ({"box": [10, 10, 5, 20]}, "inverted or has zero area"),
        ({"box": [10, 10, 10, 20]}, "inverted or has zero area"),
        ({"box": [10, 10, 20]}, r"shape \(4,\)"),
        ({"box": [0, 0, 39, 80]}, "outside the slice"),
        ({"mask_input": np.zeros((64, 64))}, "low-res logits"),
        ({"points": [[1, 1], [2]], "labels": [1, 1]}, "ragged|numeric"),
    ],
)
def test_bad_prompts_raise_clear_value_errors(pred, kwargs, match):
    with pytest.raises(ValueError, match=match):
        pred.predict(**kwargs)


def test_batch_equals_individual(pred):
    boxes = np.array([[2, 3, 20, 30], [10, 10, 39, 60], [0, 0, 15, 15]], float)
    pts = np.array([[[5, 5]], [[20, 30]], [[7, 8]]], float)
    lab = np.ones((3, 1), int)
    rb = pred.predict_batch(points=pts, labels=lab, boxes=boxes, multimask=False)
    assert rb.masks.shape == (3, 1, 40, 64)
    for i in range(3):
        ri = pred.predict(points=pts[i], labels=lab[i], box=boxes[i], multimask=False)
        np.testing.assert_allclose(rb.logits[i], ri.logits, atol=1e-5)
        assert np.array_equal(rb.masks[i], ri.masks)


def test_batch_sizes_must_agree(pred):
    with pytest.raises(ValueError, match="batch size"):
        pred.predict_batch(
            points=np.zeros((2, 1, 2)), labels=np.ones((2, 1)), boxes=[[0, 0, 5, 5]]
        )


def test_the_flip_non_square_scaled():
    """(row, col) of a 300 × 500 slice → (x, y) in a 1024-long-side model input."""
    original = (300, 500)
    input_size = resized_shape(*original, 1024)
    assert input_size == (614, 1024)
    xy = rc_to_model_xy(np.array([[150.0, 250.0], [0.0, 499.0]]), original, input_size)
    np.testing.assert_allclose(xy[0], [250 * 1024 / 500, 150 * 614 / 300])
    np.testing.assert_allclose(xy[1], [499 * 1024 / 500, 0.0])
    box = boxes_to_model_xyxy(np.array([[10.0, 20.0, 30.0, 40.0]]), original, input_size)
    sx, sy = 1024 / 500, 614 / 300
    np.testing.assert_allclose(box[0], [20 * sx, 10 * sy, 40 * sx, 30 * sy])


def test_point_location_drives_the_prompt_encoder(tiny_model):
    """A point at (row, col) reaches the prompt encoder as x=col, y=row (the one flip)."""
    seen = {}
    enc = tiny_model.sam.prompt_encoder
    orig = enc.forward

    def spy(points, boxes, masks):
        seen["xy"] = points[0].clone()
        return orig(points, boxes, masks)

    enc.forward = spy
    p = Predictor(tiny_model)
    p.set_image(np.zeros((32, 64), np.uint8))  # resized to 32 × 64 (long side 64)
    p.predict(points=[[3.0, 50.0]], labels=[1])
    assert seen["xy"].tolist() == [[[50.0, 3.0]]]


def test_best_only_returns_the_best_scored_mask(pred):
    """best_only: one mask, equal to the best of the 3 (scores and low-res logits too)."""
    p = pred
    full = p.predict(points=[[20.0, 30.0]], labels=[1])
    best = p.predict(points=[[20.0, 30.0]], labels=[1], best_only=True)
    assert best.masks.shape == (1, *full.masks.shape[1:])
    np.testing.assert_array_equal(best.masks[0], full.masks[full.best])
    assert best.scores[0] == full.scores[full.best]
    np.testing.assert_array_equal(best.logits[0], full.logits[full.best])


def test_best_only_on_the_folded_decoder_decodes_the_best_output_only(pred, tiny_model):
    """Fast path: best_only picks the output from the IoU predictions first and decodes
    only its mask — same mask, score and logits as decoding all three; in a batch whose
    prompts have different best outputs each gets its own."""
    fast = Predictor(tiny_model, fast_decoder=True)
    fast.set_embedding(pred.embedding)
    q = dict(points=[[20.0, 30.0]], labels=[1])
    full, best = fast.predict(**q), fast.predict(**q, best_only=True)
    assert best.masks.shape == (1, *full.masks.shape[1:])
    np.testing.assert_array_equal(best.masks[0], full.masks[full.best])
    assert best.scores[0] == full.scores[full.best]
    # one mask token instead of three through the same products: equal to rounding
    np.testing.assert_allclose(best.logits[0], full.logits[full.best], atol=1e-5, rtol=1e-5)
    # a batch straight through the folded decoder: B prompts, their own best outputs
    # (the random IoU head prefers one output everywhere: let its weights decide)
    sam = tiny_model.sam
    last = sam.mask_decoder.iou_prediction_head.layers[-1]
    with torch.no_grad():
        last.bias.zero_()
        last.weight.mul_(50.0)
    rng = np.random.default_rng(0)
    xy = torch.as_tensor(rng.uniform(0, sam.image_size, (12, 1, 2)), dtype=torch.float32)
    with torch.inference_mode():
        sparse, _ = sam.prompt_encoder(
            points=(xy, torch.ones(12, 1, dtype=torch.int)), boxes=None, masks=None
        )
    emb = fast.embedding
    low_all, iou_all = fast._decode_folded(emb, sparse, multimask=True)
    low, iou = fast._decode_folded(emb, sparse, multimask=True, best_only=True)
    k = iou_all.argmax(1)
    assert len(k.unique()) > 1, "the case should mix best outputs"
    rows = torch.arange(12)
    torch.testing.assert_close(iou[:, 0], iou_all[rows, k])
    torch.testing.assert_close(low[:, 0], low_all[rows, k], atol=1e-5, rtol=1e-5)


def test_folded_decoder_agrees_with_the_official_order(pred, tiny_model):
    """fast_decoder on / off on the same embedding: logits equal to float rounding, for
    points, boxes and a batch; a mask_input always takes the official decoder."""
    assert tiny_model.exact and not pred.fast_decoder  # fp32 model → official order
    exact = Predictor(tiny_model, fast_decoder=False)
    fast = Predictor(tiny_model, fast_decoder=True)
    exact.set_embedding(pred.embedding)
    fast.set_embedding(pred.embedding)
    assert not exact.fast_decoder and fast.fast_decoder
    for kw in (
        dict(points=[[20.0, 30.0]], labels=[1]),
        dict(points=[[20.0, 30.0], [30.0, 10.0]], labels=[1, 0]),
        dict(box=[5.0, 6.0, 35.0, 50.0]),
    ):
        a, b = exact.predict(**kw), fast.predict(**kw)
        np.testing.assert_allclose(a.logits, b.logits, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5, rtol=1e-5)
        assert np.mean(a.masks != b.masks) <= 1e-3
        prev = a.logits[a.best]
        c = exact.predict(mask_input=prev, multimask=False, **kw)
        d = fast.predict(mask_input=prev, multimask=False, **kw)
        np.testing.assert_array_equal(c.logits, d.logits)
    pts = np.array([[[20.0, 30.0]], [[10.0, 12.0]]])
    a = exact.predict_batch(points=pts, labels=np.ones((2, 1)))
    b = fast.predict_batch(points=pts, labels=np.ones((2, 1)))
    np.testing.assert_allclose(a.logits, b.logits, atol=1e-5, rtol=1e-5)


def test_decoder_precision_policy_and_errors(tiny_model):
    """fp32 (exact) models decode in fp32; bf16 models (auto on bf16 hardware) with the
    bf16 folded decoder unless told otherwise; anything else is refused."""
    from napari_sam.engine.loader import wrap_model

    assert Predictor(tiny_model).decoder_precision == "fp32"
    sam = tiny_model.sam
    bf16 = wrap_model(sam, tiny_model.config, "tiny", "cpu", "bf16")
    assert Predictor(bf16).decoder_precision == "bf16"
    assert Predictor(bf16, decoder_precision="fp32").decoder_precision == "fp32"
    with pytest.raises(ValueError, match="decoder_precision"):
        Predictor(tiny_model, decoder_precision="fp16")


def test_bf16_decoder_masks_close_to_fp32():
    """On the demo model (real nuclei masks): the bf16 folded decoder gives the fp32
    folded decoder's masks up to a few boundary pixels, and nearly its scores."""
    from napari_sam.synthetic import nuclei_2d

    model = load_model("demo", device="cpu", precision="fp32")
    img, gt = nuclei_2d((256, 256), seed=11)
    p32 = Predictor(model, fast_decoder=True, decoder_precision="fp32")
    p16 = Predictor(model, fast_decoder=True, decoder_precision="bf16")
    emb = p32.set_image(img)
    p16.set_embedding(emb)
    ious = []
    for lab in np.unique(gt)[1:9]:
        rows, cols = np.nonzero(gt == lab)
        q = dict(points=[[rows.mean(), cols.mean()]], labels=[1])
        a, b = p32.predict(**q), p16.predict(**q)
        np.testing.assert_allclose(a.scores, b.scores, atol=0.03)
        for i in range(3):
            union = np.logical_or(a.masks[i], b.masks[i]).sum()
            ious.append(np.logical_and(a.masks[i], b.masks[i]).sum() / max(union, 1))
    assert np.mean(ious) >= 0.98 and np.min(ious) >= 0.9


@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize("shape", [(10000, 10), (10, 10000)])
def test_very_thin_slice_keeps_one_pixel_and_predicts(tiny_model, exact, shape):
    """The short side of a 10000 × 10 slice scaled to the 64-px model input rounds to 0
    (PIL: "height and width must be > 0"): it keeps 1 pixel, and a click segments."""
    assert resized_shape(10000, 10, 64) == (64, 1)
    assert resized_shape(10, 10000, 64) == (1, 64)
    assert resized_shape(10000, 10, 1024) == (1024, 1)  # 1.024 → 1, as before
    p = Predictor(tiny_model, fast_decoder=not exact)
    img = np.zeros(shape, np.uint16)
    img[2000:6000, :] = 3000 if shape[0] > shape[1] else 0
    img[:, 2000:6000] = 3000 if shape[1] > shape[0] else 0
    emb = p.set_image(img)
    assert emb.original_size == shape and min(emb.input_size) == 1
    click = [[4000, 5]] if shape[0] > shape[1] else [[5, 4000]]
    r = p.predict(points=click, labels=[1])
    assert r.masks.shape == (3, *shape) and np.isfinite(r.scores).all()
    rb = p.predict(box=[0, 0, shape[0] - 1, shape[1] - 1], multimask=False)
    assert rb.masks.shape == (1, *shape)


@pytest.mark.parametrize("multimask", [True, False])
def test_empty_batch_gives_empty_results(pred, multimask):
    """Zero objects (points (0, N, 2), boxes (0, 4), mask_inputs (0, 4h, 4w)) → empty
    arrays with the usual trailing shapes, not a torch reshape error."""
    c = 3 if multimask else 1
    for kw in (
        {"points": np.zeros((0, 2, 2)), "labels": np.zeros((0, 2), int)},
        {"boxes": np.zeros((0, 4))},
        {"mask_inputs": np.zeros((0, 32, 32), np.float32)},
    ):
        r = pred.predict_batch(multimask=multimask, **kw)
        assert r.masks.shape == (0, c, 40, 64) and r.masks.dtype == bool
        assert r.scores.shape == (0, c) and r.scores.dtype == np.float32
        assert r.logits.shape == (0, c, 32, 32) and r.logits.dtype == np.float32
    full = pred.predict_batch(boxes=np.array([[5.0, 5, 30, 40]]), multimask=multimask)
    assert full.masks.shape[1:] == (c, 40, 64) and full.logits.shape[1:] == (c, 32, 32)
