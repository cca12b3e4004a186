"""EmbeddingProvider: RAM (bounded LRU) → store → encoder, thread-safe (one key is
computed once however many threads ask), the stale-slice policies, prefetch and
precompute with or without a store."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from napari_sam.engine.decode import Predictor
from napari_sam.store import EmbeddingProvider, EmbeddingStore, SliceLayout, StaleSliceError

from store_helpers import volume


def counting(monkeypatch, model, delay: float = 0.0):
    """Record every encoder run of ``model`` (optionally slowed down) in this test."""
    calls = []
    real = model.encode

    def encode(x):
        calls.append(threading.get_ident())
        time.sleep(delay)
        return real(x)

    monkeypatch.setattr(model, "encode", encode)
    return calls


def test_two_threads_asking_for_one_key_compute_it_once(monkeypatch, model):
    calls = counting(monkeypatch, model, delay=0.3)
    p = EmbeddingProvider(model, volume())
    got, barrier = {}, threading.Barrier(3)

    def ask(k):
        barrier.wait()
        got[k] = p.get((2,))

    threads = [threading.Thread(target=ask, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(calls) == 1 and p.computed == 1
    assert got[0] is got[1] is got[2]
    assert p.cached((2,)) is got[0] and p.get(2) is got[0]  # an int key for one axis


def test_an_error_reaches_every_waiter_and_the_key_is_retried(model):
    img = volume()
    boom = []

    def check(key, data):
        if not boom:
            boom.append(key)
            time.sleep(0.2)
            raise ValueError("refused once")

    p = EmbeddingProvider(model, img, check=check)
    errors = []

    def ask():
        try:
            p.get((0,))
        except ValueError as err:
            errors.append(err)

    threads = [threading.Thread(target=ask) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(errors) == 2 and all("refused once" in str(e) for e in errors)
    assert p.cached((0,)) is None
    assert p.get((0,)) is not None and p.computed == 1  # retried, then fine


def test_equals_the_encoder_and_ram_stays_bounded(model):
    img = volume((5, 40, 50))
    p = EmbeddingProvider(model, img, capacity=2)
    ref = Predictor(model).compute_embedding(img[3])
    assert torch.equal(p.get((3,)).features, ref.features)
    for z in range(5):
        p.get((z,))
    assert len(p) == 2 and p.peak == 2 and p.ram_keys() == [(3,), (4,)]
    with pytest.raises(IndexError, match="out of range"):
        p.get((5,))
    with pytest.raises(ValueError, match="capacity"):
        EmbeddingProvider(model, img, capacity=0)


def test_store_serves_what_it_holds_and_is_filled(monkeypatch, tmp_path, model):
    img = volume()
    first = EmbeddingProvider(model, img, store=tmp_path / "s.zarr")
    first.get((1,))
    assert first.store.missing([(1,)]) == []
    calls = counting(monkeypatch, model)
    again = EmbeddingProvider(model, img, store=tmp_path / "s.zarr")
    emb = again.get((1,))
    assert calls == [] and again.computed == 0
    np.testing.assert_allclose(emb.features, first.get((1,)).features, atol=1e-2)


def test_changed_slice_error_ram_only_or_replaced(tmp_path, model):
    path = tmp_path / "s.zarr"
    EmbeddingProvider(model, volume(), store=path).get((1,))
    changed = volume()
    changed[1] = 4000 - changed[1]
    with pytest.raises(StaleSliceError, match="other image data"):
        EmbeddingProvider(model, changed, store=path).get((1,))
    ram = EmbeddingProvider(model, changed, store=path, on_stale="ram")
    assert ram.get((1,)) is not None and ram.stale == {(1,)}
    stored = EmbeddingStore.open(path, model, image=volume(), mode="r").get((1,))
    assert stored is not None  # the store keeps the old slice's entry
    replaced = EmbeddingProvider(model, changed, store=path, overwrite=True)
    replaced.get((1,))
    assert EmbeddingStore.open(path, model, image=changed, mode="r").get((1,)) is not None


def test_regions_given_as_data_without_an_image(model):
    img = volume()
    p = EmbeddingProvider(model, None, SliceLayout.for_shape(img.shape))
    emb = p.get((4,), img[4])
    assert emb.original_size == (40, 50)
    with pytest.raises(ValueError, match="no image"):
        p.get((0,))


def test_prefetch_and_precompute_without_a_store(model):
    img = volume((4, 40, 50))
    p = EmbeddingProvider(model, img, capacity=8)
    steps = list(p.prefetch([(0,), (1,)]))
    assert [s.done for s in steps] == [0, 1, 2] and p.computed == 2
    steps = list(p.precompute())
    assert [(s.done, s.total) for s in steps] == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]
    assert p.computed == 4 and len(p) == 4  # RAM hits are not encoded again


def test_precompute_writes_even_what_ram_holds(tmp_path, model):
    img = volume((3, 40, 50))
    p = EmbeddingProvider(model, img, store=tmp_path / "s.zarr")
    p.store.invalidate((0,))
    p.get((0,))
    p.store.invalidate((0,))  # e.g. deleted behind the provider's back
    assert (0,) in p.ram_keys()
    list(p.precompute())
    assert p.store.missing() == []


def test_precompute_batches_small_inputs_outside_the_exact_mode(monkeypatch, tmp_path):
    """auto (not exact), a small model input: precompute encodes 4 slices per encoder
    call (what benchmarks/batched_embedding.py measured faster) and stores embeddings
    equal to one-by-one ones to float rounding; the exact mode keeps one slice per call,
    bit-identical."""
    from napari_sam.engine.plan import SMALL_INPUT_BATCH

    from tiny import make_tiny

    img = volume((6, 40, 50))
    exact, auto = make_tiny(0), make_tiny(0, precision="auto")
    batches = []
    real = auto.encode
    monkeypatch.setattr(auto, "encode", lambda x: batches.append(x.shape[0]) or real(x))
    p = EmbeddingProvider(auto, img, store=tmp_path / "auto.zarr")
    list(p.precompute())
    assert batches == [SMALL_INPUT_BATCH, 6 - SMALL_INPUT_BATCH] and p.computed == 6
    one = EmbeddingProvider(exact, img, store=tmp_path / "exact.zarr")
    calls = counting(monkeypatch, exact)
    list(one.precompute())
    assert len(calls) == 6
    for z in range(6):
        single = Predictor(exact).compute_embedding(img[z]).features
        assert torch.equal(one.store.get(z, img[z]).features, single.half().float())
        stored = p.store.get(z, img[z]).features
        assert torch.allclose(stored, single.half().float(), atol=2e-3, rtol=1e-2)
    # a region that cannot be read fails the batch: nothing is left pending, nothing of
    # that batch is marked complete, and a later run completes the store
    failing = [(2,)]

    def check(key, data):
        if key in failing:
            raise OSError("disk gone")

    broken = EmbeddingProvider(auto, img, store=tmp_path / "broken.zarr", check=check)
    with pytest.raises(OSError, match="disk gone"):
        list(broken.precompute())
    assert broken.store.missing() == [(k,) for k in range(6)]
    failing.clear()  # the same provider again: no key stuck as "being computed"
    list(broken.precompute())
    assert broken.store.missing() == [] and broken.computed == 6
