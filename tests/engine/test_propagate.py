"""Propagation mechanics (napari_sam.engine.propagate): batching, stop rules, ids,
seeds never overwritten, filling between annotated slices, cancel, prefetch.

Most tests replace the decoder by a ground-truth oracle (the object under the prompt's
box centre on that slice), so the rules are tested exactly; the batching test runs the
real tiny model."""

from __future__ import annotations

import threading
from typing import ClassVar

import numpy as np
import pytest
import torch

from napari_sam.engine.decode.predictor import Predictor, PredictResult
from napari_sam.engine.embedding import Embedding
from napari_sam.engine.metrics import interior_point
from napari_sam.engine.propagate import Propagator, propagate
from napari_sam.engine.propagate.prompts import (
    build_prompts,
    mask_box,
    mask_to_logits,
    parse_mode,
)
from napari_sam.engine.transforms import resized_shape

Z, H, W = 10, 40, 48


def embeddings(model, calls: list | None = None):
    """z → a fake embedding whose features hold z (the oracle reads it back)."""
    cfg = model.config
    grid = model.sam.embedding_size
    lock = threading.Lock()

    def emb(z: int) -> Embedding:
        if calls is not None:
            with lock:
                calls.append(z)
        feats = torch.full((1, cfg.prompt_embed_dim, *grid), float(z))
        return Embedding(feats, (H, W), resized_shape(H, W, cfg.image_size), model.weights_hash)

    return emb


@pytest.fixture
def oracle(monkeypatch, tiny_model):
    """Replace predict_batch: each object's mask = the ground-truth object under the
    centre of its box on slice z (empty when there is none). Set ``oracle.truth``."""

    class Oracle:
        truth: np.ndarray | None = None
        calls: ClassVar[list[tuple[int, int]]] = []

    def predict_batch(self, points=None, labels=None, boxes=None, mask_inputs=None, **kw):
        z = int(self.embedding.features.flatten()[0])
        boxes = np.asarray(boxes)
        masks = np.zeros((len(boxes), 1, H, W), bool)
        for i, b in enumerate(boxes):
            r, c = round(float(b[0] + b[2]) / 2), round(float(b[1] + b[3]) / 2)
            obj = Oracle.truth[z, r, c]
            if obj:
                masks[i, 0] = Oracle.truth[z] == obj
        Oracle.calls.append((z, len(boxes)))
        low = tiny_model.sam.low_res_size
        return PredictResult(
            masks, np.full((len(boxes), 1), 0.9, np.float32), np.zeros((len(boxes), 1, *low))
        )

    monkeypatch.setattr(Predictor, "predict_batch", predict_batch)
    Oracle.calls = []
    return Oracle


def block(vol, obj, zs, r0, c0, size=8):
    for z in zs:
        vol[z, r0 : r0 + size, c0 : c0 + size] = obj
    return vol


def run(model, seeds, **kw):
    kw.setdefault("mode", "box")
    p = Propagator(model, embeddings(model), seeds, **kw)
    for _ in p.run():
        pass
    return p


def test_objects_follow_truth_and_keep_ids(tiny_model, oracle):
    truth = np.zeros((Z, H, W), np.int32)
    block(truth, 4, range(2, 8), 5, 5)
    block(truth, 9, range(0, 10), 20, 30)
    oracle.truth = truth
    seeds = np.zeros_like(truth)
    seeds[5][truth[5] > 0] = truth[5][truth[5] > 0]
    p = run(tiny_model, seeds)
    np.testing.assert_array_equal(p.result, truth)
    reasons = {(s.obj, s.direction): s.reason for s in p.stops}
    assert reasons == {(4, 1): "vanished", (4, -1): "vanished", (9, 1): "edge", (9, -1): "edge"}


def test_one_batched_decoder_call_per_slice_and_direction(tiny_model, monkeypatch):
    """Real tiny decoder, spied: one call per (slice, sweep) with all active objects."""
    seeds = np.zeros((Z, H, W), np.int32)
    for obj, (r, c) in enumerate([(4, 4), (4, 30), (25, 10)], 1):
        block(seeds, obj, [6], r, c)
    calls = []
    real = Predictor.predict_batch

    def spy(self, *args, **kwargs):
        calls.append((int(self.embedding.features.flatten()[0]), len(kwargs["boxes"])))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Predictor, "predict_batch", spy)
    p = Propagator(
        tiny_model,
        embeddings(tiny_model),
        seeds,
        mode="box+mask+points",
        iou_stop=0.0,
        area_factor=np.inf,
        min_area=0,
        overlap_stop=1.0,
        shrink_stop=0.0,
    )
    for _ in p.run():
        pass
    assert calls == [(z, 3) for z in range(7, Z)] + [(z, 3) for z in range(5, -1, -1)]
    assert len(p.decode_calls) == len(calls)
    assert set(np.unique(p.result)) <= {0, 1, 2, 3}
    np.testing.assert_array_equal(p.result[6], seeds[6])


def test_stop_slices_max_slices_and_selected_objects(tiny_model, oracle):
    truth = np.zeros((Z, H, W), np.int32)
    block(truth, 1, range(Z), 5, 5)
    block(truth, 2, range(Z), 20, 30)
    oracle.truth = truth
    seeds = np.zeros_like(truth)
    seeds[4] = truth[4]
    p = run(tiny_model, seeds, stop_slices={1: {7}, 0: {1}}, max_slices=4)
    assert p.kept_slices(1) == [2, 3, 5, 6]  # stops before 7 (its own) and 1 (everyone's)
    assert p.kept_slices(2) == [2, 3, 5, 6, 7, 8]  # 8 = 4 + max_slices
    only = run(tiny_model, seeds, objects=[2])
    assert only.kept_slices(1) == []
    assert (only.result == 1).sum() == (seeds == 1).sum()  # object 1 untouched


def test_iou_and_area_stops(tiny_model, oracle):
    truth = np.zeros((Z, H, W), np.int32)
    block(truth, 1, range(0, 5), 10, 10, size=10)
    block(truth, 1, range(5, Z), 10, 14, size=10)  # shifts 4 px: IoU 6/14 with slice 4
    oracle.truth = truth
    seeds = np.zeros_like(truth)
    seeds[2] = truth[2]
    p = run(tiny_model, seeds, iou_stop=0.5)
    assert p.kept_slices(1) == [0, 1, 3, 4]
    assert any(s.reason == "iou" and s.z == 5 for s in p.stops)

    truth = np.zeros((Z, H, W), np.int32)
    block(truth, 1, range(0, 6), 10, 10, size=6)
    block(truth, 1, range(6, Z), 6, 6, size=14)  # area × 5.4
    oracle.truth = truth
    seeds = np.zeros_like(truth)
    seeds[3] = truth[3]
    p = run(tiny_model, seeds, iou_stop=0.0, area_factor=2.5)
    assert p.kept_slices(1) == [0, 1, 2, 4, 5]
    assert any(s.reason == "area" and s.z == 6 for s in p.stops)


def test_shrink_stop(tiny_model, oracle):
    truth = np.zeros((Z, H, W), np.int32)
    for z, size in enumerate([4, 6, 8, 10, 12, 12, 10, 8, 6, 4]):
        block(truth, 1, [z], 10, 10, size=size)
    oracle.truth = truth
    seeds = np.zeros_like(truth)
    seeds[4] = truth[4]
    p = run(tiny_model, seeds, iou_stop=0.0, shrink_stop=0.3)
    assert p.kept_slices(1) == [2, 3, 5, 6, 7]  # 64 / 144 ≥ 0.3 > 36 / 144
    assert {s.reason for s in p.stops} == {"shrink"}


def test_fill_between_two_annotated_slices(tiny_model, oracle):
    truth = np.zeros((Z, H, W), np.int32)
    block(truth, 3, range(1, 9), 10, 10)
    oracle.truth = truth
    seeds = np.zeros_like(truth)
    seeds[2], seeds[7] = truth[2], truth[7]
    p = run(tiny_model, seeds)
    np.testing.assert_array_equal(p.result, truth)
    # the gap 3..6 is decoded from both sides; slices beyond come from the outer seeds
    assert sorted(z for z, _ in oracle.calls) == [0, 1, 3, 3, 4, 4, 5, 5, 6, 6, 8, 9]
    assert any(s.reason == "annotated" and s.z == 7 for s in p.stops)


def test_seeds_never_overwritten_and_conflicts(tiny_model, oracle):
    truth = np.zeros((Z, H, W), np.int32)
    block(truth, 1, range(Z), 10, 10, size=12)
    oracle.truth = truth
    seeds = np.zeros_like(truth)
    seeds[5] = truth[5]
    seeds[3, 12:16, 12:16] = 7  # another committed object inside object 1's path
    p = run(tiny_model, seeds, objects=[1], overlap_stop=1.0)
    assert (p.result[3, 12:16, 12:16] == 7).all()
    assert (p.result[3] == 1).sum() == 144 - 16

    # two objects claim the same pixels: the one nearer to its annotated slice wins
    truth = np.zeros((Z, H, W), np.int32)
    block(truth, 1, range(Z), 10, 10, size=12)
    oracle.truth = truth
    seeds = np.zeros((Z, H, W), np.int32)
    seeds[1] = truth[1]
    seeds[8][truth[8] > 0] = 2  # same region, annotated as object 2 on slice 8
    p = run(tiny_model, seeds, overlap_stop=1.0)
    assert (p.result[2] == 1).sum() == 144 and (p.result[7] == 2).sum() == 144
    assert set(np.unique(p.result[4])) == {0, 1} and set(np.unique(p.result[5])) == {0, 2}


def test_drift_into_a_seeded_neighbour_stops(tiny_model, oracle):
    truth = np.zeros((Z, H, W), np.int32)
    block(truth, 1, range(Z), 10, 10, size=12)
    oracle.truth = truth
    seeds = np.zeros_like(truth)
    seeds[2] = truth[2]
    seeds[6][truth[6] > 0] = 5  # the user says this is another object
    p = run(tiny_model, seeds, objects=[1])
    assert max(p.kept_slices(1)) < 6
    assert (p.result[6] == 5).sum() == 144


def test_cancel_keeps_partial_result_and_seeds(tiny_model, oracle):
    truth = np.zeros((Z, H, W), np.int32)
    block(truth, 1, range(Z), 10, 10)
    oracle.truth = truth
    seeds = np.zeros_like(truth)
    seeds[0] = truth[0]
    calls: list[int] = []
    p = Propagator(tiny_model, embeddings(tiny_model, calls), seeds, mode="box")
    gen = p.run()
    for done, _total, _ in gen:
        if done == 4:
            break
    gen.close()
    assert p.total == 2 * Z and p.result is None
    partial = p.assemble()
    assert p.kept_slices(1) == [1, 2, 3]
    np.testing.assert_array_equal(partial[0], seeds[0])
    assert set(calls) <= {1, 2, 3, 4}  # at most one slice prefetched ahead


def test_prefetch_asks_ahead_and_gives_the_same_result(tiny_model, oracle):
    truth = np.zeros((Z, H, W), np.int32)
    block(truth, 1, range(Z), 10, 10)
    oracle.truth = truth
    seeds = np.zeros_like(truth)
    seeds[4] = truth[4]
    a_calls: list[int] = []
    a = propagate(tiny_model, embeddings(tiny_model, a_calls), seeds, mode="box", prefetch=True)
    b = propagate(tiny_model, embeddings(tiny_model), seeds, mode="box", prefetch=False)
    np.testing.assert_array_equal(a, b)
    assert sorted(set(a_calls)) == [z for z in range(Z) if z != 4]


def test_bad_inputs(tiny_model):
    emb = embeddings(tiny_model)
    seeds = np.zeros((Z, H, W), np.int32)
    seeds[2, 3:6, 3:6] = 1
    with pytest.raises(ValueError, match="mode"):
        Propagator(tiny_model, emb, seeds, mode="box+magic")
    with pytest.raises(ValueError, match="no pixel"):
        Propagator(tiny_model, emb, seeds, objects=[2])
    with pytest.raises(ValueError, match=r"\(Z, H, W\)"):
        Propagator(tiny_model, emb, seeds[0])
    with pytest.raises(ValueError, match="integer"):
        Propagator(tiny_model, emb, seeds.astype(float))


def test_prompts_from_a_mask():
    m = np.zeros((40, 48), bool)
    m[10:20, 5:25] = True
    box = mask_box(m, margin=0.1)
    np.testing.assert_allclose(box, [8, 3, 21, 26])  # max(2 px, 10 %) each side
    assert m[tuple(interior_point(m).astype(int))]
    assert parse_mode("mask+box") == {"box", "mask"}
    # seed mask → logits in SAM's low-res frame: 40 × 48 → 53 × 64 of a 64² input
    lg = mask_to_logits(m, 64, (16, 16))
    assert lg.shape == (16, 16) and lg.dtype == np.float32
    assert lg[4, 4] > 5 and lg[0, 0] < -5 and lg[15, 0] < -5  # padding is background
    kw = build_prompts(parse_mode("box+mask+points"), [m, m], [None, lg], 64, (16, 16), 0.1)
    assert kw["boxes"].shape == (2, 4) and kw["points"].shape == (2, 1, 2)
    np.testing.assert_array_equal(kw["mask_inputs"][0], kw["mask_inputs"][1])


def test_seed_mask_of_a_slice_smaller_than_the_low_res_frame_is_not_striped():
    """8 × 8 slice, 64² input, 16² low-res frame: each pixel covers 2 × 2 cells; all of
    them are inside a full mask (the hand-written binning left 3 of 4 cells empty)."""
    lg = mask_to_logits(np.ones((8, 8), bool), 64, (16, 16))
    assert (lg > 5).all()
    half = np.zeros((8, 8), bool)
    half[:, :4] = True
    lg = mask_to_logits(half, 64, (16, 16))
    assert (lg[:, :8] > 5).all() and (lg[:, 8:] < -5).all()
