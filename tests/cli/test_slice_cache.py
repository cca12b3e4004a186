"""The embedding provider the CLI uses for ``propagate`` / ``amg`` holds a bounded number
of slices in RAM (it used to keep every slice of the volume) and still encodes no slice
twice."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_sam.cli import main
from napari_sam.store import SliceLayout, provider


@pytest.fixture
def recorded(monkeypatch):
    """Every EmbeddingProvider the command makes, with the indices asked for and the
    number of embeddings in RAM after every call."""
    made = []

    class Recording(provider.EmbeddingProvider):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.asked, self.sizes = [], []
            made.append(self)

        def get(self, index, data=None):
            emb = super().get(index, data)
            self.asked.append(tuple(index))
            self.sizes.append(len(self))
            return emb

    monkeypatch.setattr(provider, "EmbeddingProvider", Recording)
    return made


def volume(tmp_path, seed_slices):
    img = np.zeros((20, 40, 48), np.uint16)
    img[:, 8:24, 10:30] = 3000
    seeds = np.zeros(img.shape, np.uint8)
    for z in seed_slices:
        seeds[z, 8:24, 10:30] = 1
    tifffile.imwrite(tmp_path / "img.tif", img)
    tifffile.imwrite(tmp_path / "seeds.tif", seeds)


def propagate(tmp_path, ckpt, *extra):
    return main(["propagate", str(tmp_path / "img.tif"), "--labels", str(tmp_path / "seeds.tif"),
                 "--out", str(tmp_path / "out.tif"), "--model", "tiny", "--checkpoint",
                 str(ckpt), "--precision", "fp32", "--device", "cpu", "--no-progress",
                 "--iou-stop", "0", "--area-factor", "1000", "--shrink-stop", "0", *extra])


def test_propagate_20_slices_bounded_and_nothing_recomputed(tmp_path, tiny_checkpoint, capsys,
                                                            recorded):
    # seeds on 9 and 12: slices 10, 11 are visited by both sweeps, the rest by one
    volume(tmp_path, [9, 12])
    assert propagate(tmp_path, tiny_checkpoint, "--cache-slices", "4") == 0, (
        capsys.readouterr().err
    )
    (cache,) = recorded
    twice = sorted({z for z in cache.asked if cache.asked.count(z) > 1})
    assert twice == [(10,), (11,)]  # asked for by both sweeps ...
    assert len(set(cache.asked)) == 20  # (the engine prefetches a sweep's next slice)
    assert cache.computed == 20  # ... but encoded once
    assert max(cache.sizes) <= 4 and cache.peak <= 4


def test_with_a_store_ram_stays_bounded_and_the_store_serves_repeats(tmp_path, tiny_checkpoint,
                                                                     capsys, recorded):
    # seeds on 1 and 18: 16 slices are visited by both sweeps, far more than 3 in RAM
    volume(tmp_path, [1, 18])
    store = str(tmp_path / "s.zarr")
    assert propagate(tmp_path, tiny_checkpoint, "--cache-slices", "3", "--store", store) == 0
    (cache,) = recorded
    assert cache.peak <= 3 and max(cache.sizes) <= 3
    assert len(cache.asked) >= 36  # slices 2..17 asked for by both sweeps
    assert cache.computed == len(set(cache.asked)) == 20  # repeats read from the store


def test_amg_volume_keeps_two_slices(tmp_path, tiny_checkpoint, capsys, recorded):
    volume(tmp_path, [])
    rc = main(["amg", str(tmp_path / "img.tif"), "--out", str(tmp_path / "l.npy"), "--model",
               "tiny", "--checkpoint", str(tiny_checkpoint), "--precision", "fp32", "--device",
               "cpu", "--no-progress", "--points-per-side", "2"])
    assert rc == 0, capsys.readouterr().err
    (cache,) = recorded
    assert cache.asked == [(z,) for z in range(20)]  # each slice once, in order
    assert cache.computed == 20 and cache.peak <= 2


def test_eviction_prefers_slices_not_kept(tiny_model):
    img = np.random.default_rng(0).integers(0, 255, (8, 16, 16)).astype(np.uint8)
    layout = SliceLayout.for_shape(img.shape, spatial=[1, 2])
    cache = provider.EmbeddingProvider(tiny_model, img, layout, capacity=3)
    cache.keep([(1,), (2,)])
    for z in range(8):
        cache.get((z,))
        assert len(cache) <= 3
    assert {(1,), (2,)} <= set(cache.ram_keys())  # kept through six other slices
    cache.get((1,))
    assert cache.computed == 8  # (1,) served from RAM
    cache.clear()
    assert len(cache) == 0
    with pytest.raises(ValueError, match="capacity"):
        provider.EmbeddingProvider(tiny_model, img, layout, capacity=0)
