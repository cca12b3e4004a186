"""Concurrent creation and replacement: one store per path, never foreign embeddings."""

from __future__ import annotations

import os
import threading

import pytest
import torch

from napari_sam.engine.decode.predictor import Predictor
from napari_sam.store import EmbeddingStore, StoreMismatchError, creation

from store_helpers import compute, make_tiny, volume


def _lose_the_race_to(monkeypatch, path, winner, img):
    """Just before our creation's rename, another process creates the store with
    ``winner`` (the window between "no store here" and "store created")."""
    real = os.rename
    done = []

    def rename(src, dst, *args, **kwargs):
        if not done and str(dst) == str(path):
            done.append(True)
            EmbeddingStore.open(path, winner, image=img)  # the other process wins
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(creation.os, "rename", rename)
    return done


def test_losing_the_creation_race_to_other_weights_is_a_mismatch(tmp_path, model, monkeypatch):
    img = volume()
    path = tmp_path / "s.zarr"
    other = make_tiny(seed=1)
    done = _lose_the_race_to(monkeypatch, path, other, img)
    with pytest.raises(StoreMismatchError, match="model weights"):
        EmbeddingStore.open(path, model, image=img)
    assert done
    winner = EmbeddingStore.open(path, other, image=img)
    assert winner.attrs["model"]["weights_hash"] == other.weights_hash
    assert not [p for p in tmp_path.iterdir() if p.name != "s.zarr"]  # no temp dir left


def test_losing_the_creation_race_to_the_same_model_shares_the_store(tmp_path, model, monkeypatch):
    img = volume()
    path = tmp_path / "s.zarr"
    _lose_the_race_to(monkeypatch, path, model, img)
    mine = EmbeddingStore.open(path, model, image=img)
    theirs = EmbeddingStore.open(path, model, image=img)
    assert mine.attrs == theirs.attrs  # the winner's store, same identity
    list(compute(mine, keys=[(0,)]))
    assert theirs.get(0) is not None


def test_threads_racing_to_create_one_store_with_different_weights(tmp_path):
    """Four writers with four checkpoints open the same new store at once and fill it:
    one store results, and every slice in it is the winning model's."""
    img = volume((4, 40, 50))
    models = [make_tiny(seed) for seed in range(4)]
    for attempt in range(3):
        path = tmp_path / f"s{attempt}.zarr"
        barrier = threading.Barrier(len(models))
        outcome: dict[int, object] = {}

        def writer(k: int, path=path, barrier=barrier, outcome=outcome) -> None:
            barrier.wait()
            try:
                store = EmbeddingStore.open(path, models[k], image=img)
                list(compute(store))
                outcome[k] = "ok"
            except StoreMismatchError as err:
                outcome[k] = err

        threads = [threading.Thread(target=writer, args=(k,)) for k in range(len(models))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        winners = [k for k, v in outcome.items() if v == "ok"]
        assert len(outcome) == 4 and len(winners) == 1, outcome
        win = models[winners[0]]
        store = EmbeddingStore.open(path, win, image=img, mode="r")
        predictor = Predictor(win)
        for i in range(4):
            ref = predictor.compute_embedding(img[i]).features.half().float()
            assert torch.equal(store.get(i).features, ref)


def test_writer_of_a_replaced_store_is_refused_and_never_serves_foreign_slices(tmp_path, model):
    img = volume()
    path = tmp_path / "s.zarr"
    old = EmbeddingStore.open(path, model, image=img)
    list(compute(old, keys=[(0,)]))
    other = make_tiny(seed=1)
    new = EmbeddingStore.open(path, other, image=img, on_mismatch="overwrite")  # another process
    list(compute(new, keys=[(0,), (1,)]))
    emb = Predictor(model).compute_embedding(img[2])
    with pytest.raises(StoreMismatchError, match="replaced or removed since it was opened"):
        old.put(2, emb)
    with pytest.raises(StoreMismatchError):
        list(compute(old))
    assert new.missing() == [(i,) for i in range(2, 6)]  # nothing of the old writer's
    assert old.get(0) is None and old.get(1) is None  # the old reader is not served them
    ref = Predictor(other).compute_embedding(img[1]).features.half().float()
    assert torch.equal(new.get(1).features, ref)


def test_store_replaced_while_a_slice_is_written(tmp_path, model):
    """The replacement lands between the writer's check and its write: the write goes
    into the new store, the writer is told, and the new store never trusts it."""
    img = volume()
    path = tmp_path / "s.zarr"
    old = EmbeddingStore.open(path, model, image=img)
    other = make_tiny(seed=1)
    real = old._emb
    replaced = []

    class ReplacingArray:
        def __getitem__(self, key):
            return real[key]

        def __setitem__(self, key, value):
            replaced.append(EmbeddingStore.open(path, other, image=img, on_mismatch="overwrite"))
            real[key] = value

    old._emb = ReplacingArray()
    with pytest.raises(StoreMismatchError, match="replaced or removed"):
        old.put(3, Predictor(model).compute_embedding(img[3]))
    (new,) = replaced
    assert new.get(3) is None  # the old writer's marker does not validate in the new store
    assert EmbeddingStore.open(path, other, image=img).get(3) is None
