"""EmbeddingStore: round trip, signature, fingerprints, laziness, layout on disk."""

from __future__ import annotations

import dataclasses

import dask.array as da
import numpy as np
import pytest
import torch
import zarr

from napari_sam.engine.decode.predictor import Predictor
from napari_sam.engine.image import Normalization
from napari_sam.store import (
    EmbeddingStore,
    SliceLayout,
    StaleSliceError,
    StoreError,
    StoreMismatchError,
    default_store_path,
    store_info,
)

from store_helpers import TINY, CountingArray, compute, make_tiny, volume


def filled(tmp_path, model, img, **kw) -> EmbeddingStore:
    store = EmbeddingStore.open(tmp_path / "s.zarr", model, image=img, **kw)
    list(compute(store))
    return store


def test_float32_store_round_trip_is_exact(tmp_path, model):
    img = volume()
    store = filled(tmp_path, model, img, dtype="float32")
    p = Predictor(model)
    for i in range(img.shape[0]):
        got, ref = store.get((i,)), p.compute_embedding(img[i])
        assert torch.equal(got.features, ref.features)
        assert got.original_size == ref.original_size == (40, 50)
        assert got.input_size == ref.input_size and got.model_hash == model.weights_hash
    # what set_embedding needs: same masks as encoding the slice directly
    p.set_embedding(store.get(4))
    from_cache = p.predict(points=[[20, 25]], labels=[1])
    p.set_image(img[4])
    direct = p.predict(points=[[20, 25]], labels=[1])
    assert np.array_equal(from_cache.masks, direct.masks)


def test_float16_is_the_default_and_rounds_only(tmp_path, model):
    img = volume((3, 40, 50))
    store = filled(tmp_path, model, img)
    assert store.storage_dtype == np.float16
    ref = Predictor(model).compute_embedding(img[1]).features
    assert torch.equal(store.get(1).features, ref.half().float())
    chunk = tmp_path / "s.zarr" / "embeddings" / "c" / "1" / "0" / "0" / "0"
    assert chunk.stat().st_size == 32 * 8 * 8 * 2  # one raw float16 chunk per slice


def test_attrs_record_the_signature(tmp_path, model):
    store = EmbeddingStore.open(tmp_path / "s.zarr", model, image=volume(), source="cells.tif")
    a = zarr.open_group(tmp_path / "s.zarr", mode="r").attrs["napari_sam"]
    assert a["schema_version"] == 3 and a["kind"] == "embeddings"
    assert len(a["store_id"]) == 32  # identity of this store (salts the checksums)
    assert a["model"]["name"] == "tiny" and a["model"]["weights_hash"] == model.weights_hash
    assert a["model"]["precision"] == "fp32" and a["model"]["config"] == TINY.to_dict()
    assert a["model"]["transform"]["image_size"] == 64
    assert a["model"]["transform"]["pixel_mean"] == pytest.approx([123.675, 116.28, 103.53])
    assert a["normalization"] == Normalization().signature()
    assert a["image"]["shape"] == [6, 40, 50] and a["image"]["original_size"] == [40, 50]
    assert a["input_size"] == [51, 64] and a["storage_dtype"] == "float16"
    assert a["source"] == "cells.tif"
    assert store.input_size == (51, 64)


def test_one_chunk_per_slice_and_marker_after_chunk(tmp_path, model):
    img = volume((2, 3, 40, 50))  # T Z Y X
    store = EmbeddingStore.open(tmp_path / "s.zarr", model, image=img)
    g = zarr.open_group(tmp_path / "s.zarr", mode="r")
    assert g["embeddings"].shape == (2, 3, 32, 8, 8) and g["embeddings"].chunks == (1, 1, 32, 8, 8)
    assert g["complete"].shape == (2, 3, 32) and g["complete"].chunks == (1, 1, 32)
    list(compute(store, keys=[(1, 2)]))
    markers = sorted(
        p.relative_to(tmp_path) for p in (tmp_path / "s.zarr/complete/c").rglob("*") if p.is_file()
    )
    assert [str(m) for m in markers] == ["s.zarr/complete/c/1/2/0"]
    assert store.missing() == [(t, z) for t in range(2) for z in range(3) if (t, z) != (1, 2)]


def test_missing_and_resumed_precompute_progress(tmp_path, model):
    img = volume()
    store = EmbeddingStore.open(tmp_path / "s.zarr", model, image=img)
    steps = list(compute(store, keys=[(1,), (3,)]))
    assert [(s.done, s.total) for s in steps] == [(0, 2), (1, 2), (2, 2)]
    assert store.missing() == [(0,), (2,), (4,), (5,)]
    assert store.missing([(1,), (2,)]) == [(2,)]
    steps = list(compute(store))
    assert [(s.done, s.total) for s in steps] == [(2, 6), (3, 6), (4, 6), (5, 6), (6, 6)]
    assert store.missing() == [] and list(compute(store))[-1].done == 6


def test_never_reads_more_than_the_touched_slices(tmp_path, model):
    arr = CountingArray(volume())
    store = EmbeddingStore.open(tmp_path / "s.zarr", model, image=arr)
    assert store.missing() == [(i,) for i in range(6)] and arr.keys == []
    list(compute(store, keys=[(1,), (3,)]))
    assert [k[0] for k in arr.keys] == [1, 3]
    arr.keys.clear()
    assert store.get(3) is not None and [k[0] for k in arr.keys] == [3]
    assert store.get(0) is None and [k[0] for k in arr.keys] == [3]  # missing: not read


def test_zarr_and_dask_inputs_match_numpy(tmp_path, model):
    img = volume((3, 40, 50))
    ref = filled(tmp_path / "np", model, img)
    z = zarr.open_array(
        tmp_path / "img.zarr", mode="w", shape=img.shape, chunks=(1, 40, 50), dtype=img.dtype
    )
    z[:] = img
    for name, arr in [("zarr", z), ("dask", da.from_array(img, chunks=(1, 20, 50)))]:
        s = filled(tmp_path / name, model, arr)
        for i in range(3):
            assert torch.equal(s.get(i).features, ref.get(i).features), name


def test_changed_slice_is_refused_or_recomputed(tmp_path, model):
    img = volume()
    store = filled(tmp_path, model, img)
    img[2, 5, 5] += 1
    with pytest.raises(StaleSliceError, match=r"slice \(2,\) .* other image data"):
        store.get(2)
    assert store.get(1) is not None
    assert list(compute(store))[-1] == (6, 6, "6 of 6 slices already complete")  # markers only
    lenient = EmbeddingStore.open(tmp_path / "s.zarr", model, image=img, on_mismatch="overwrite")
    assert lenient.get(2) is None
    steps = list(compute(lenient, verify=True))
    assert [s.done for s in steps] == [5, 6]  # only slice 2 recomputed
    ref = Predictor(model).compute_embedding(img[2]).features.half().float()
    assert torch.equal(lenient.get(2).features, ref) and torch.equal(store.get(2).features, ref)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"model": "other"}, "model weights"),
        ({"model": "bf16"}, "encoder precision"),
        ({"normalization": Normalization(contrast_limits=(0, 1000))}, "intensity normalisation"),
        ({"image": volume((5, 40, 50))}, "image shape"),
        ({"dtype": "float32"}, "storage dtype"),
    ],
)
def test_other_model_precision_normalisation_or_image_is_never_reused(
    tmp_path, model, change, match
):
    filled(tmp_path, model, volume())
    kw = {"image": volume(), "normalization": None, "dtype": None}
    other = model
    if change.get("model") == "other":
        other = make_tiny(seed=1)  # another checkpoint, same architecture
    elif change.get("model") == "bf16":
        other = dataclasses.replace(model, plan=dataclasses.replace(model.plan, precision="bf16"))
    kw.update({k: v for k, v in change.items() if k != "model"})
    with pytest.raises(StoreMismatchError, match=match):
        EmbeddingStore.open(tmp_path / "s.zarr", other, **kw)
    assert EmbeddingStore.open(tmp_path / "s.zarr", model, image=volume()).missing() == []
    fresh = EmbeddingStore.open(tmp_path / "s.zarr", other, on_mismatch="overwrite", **kw)
    assert len(fresh.missing()) == fresh.layout.n_slices  # emptied, made for the new signature
    assert not list(tmp_path.glob("s.zarr.deleting-*"))


def test_refuses_to_overwrite_what_is_not_a_store(tmp_path, model):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "keep.txt").write_text("precious")
    zarr.open_group(tmp_path / "img.zarr", mode="w").create_array("x", shape=(2,), dtype="u1")
    for name in ("data", "img.zarr"):
        with pytest.raises(StoreError, match="not a napari-sam embedding store"):
            EmbeddingStore.open(tmp_path / name, model, image=volume(), on_mismatch="overwrite")
    assert (tmp_path / "data" / "keep.txt").read_text() == "precious"
    assert "x" in zarr.open_group(tmp_path / "img.zarr", mode="r")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        EmbeddingStore.open(tmp_path / "nope.zarr", model, image=volume(), mode="r")


def test_without_a_bound_image_get_needs_the_slice(tmp_path, model):
    img = volume()
    filled(tmp_path, model, img)
    store = EmbeddingStore.open(tmp_path / "s.zarr", model, mode="r")
    assert store.layout == SliceLayout.for_shape(img.shape)
    with pytest.raises(ValueError, match="pass the slice data"):
        store.get(1)
    assert store.get(1, data=img[1]) is not None
    with pytest.raises(ValueError, match="does not match the store's slice size"):
        store.get(1, data=img[1, :20])


def test_put_validates_the_embedding(tmp_path, model):
    img = volume()
    store = EmbeddingStore.open(tmp_path / "s.zarr", model, image=img)
    emb = Predictor(model).compute_embedding(img[0])
    with pytest.raises(ValueError, match="other model weights"):
        store.put(0, dataclasses.replace(emb, model_hash="0" * 64))
    with pytest.raises(ValueError, match="embedding shape"):
        store.put(0, dataclasses.replace(emb, features=emb.features[:, :16]))
    with pytest.raises(ValueError, match="slice of"):
        store.put(0, dataclasses.replace(emb, original_size=(10, 10)))
    with pytest.raises(IndexError, match="out of range"):
        store.put(6, emb)
    assert store.missing() == [(i,) for i in range(6)]


def test_2d_and_rgb_images(tmp_path, model):
    gray = volume((40, 50))
    s2 = filled(tmp_path / "a", model, gray)
    assert s2.layout.slice_shape == () and s2.get(()) is not None and s2.missing() == []
    rgb = volume((2, 30, 20, 3), dtype=np.uint8)
    s3 = filled(tmp_path / "b", model, rgb, layout=SliceLayout.for_shape(rgb.shape, rgb=True))
    ref = Predictor(model).compute_embedding(rgb[1]).features.half().float()
    assert torch.equal(s3.get(1).features, ref)


def test_default_store_path_is_keyed_by_source_and_model(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_SAM_CACHE_DIR", str(tmp_path / "cache"))
    src = tmp_path / "cells.tif"
    src.write_bytes(b"x")
    a = default_store_path(src, "vit_b")
    assert a.parent == tmp_path / "cache" / "embeddings" and a.name.startswith("cells-vit_b-")
    assert a.suffix == ".zarr" and a == default_store_path(str(src), "vit_b")
    assert a != default_store_path(src, "vit_l")
    assert a != default_store_path(tmp_path / "other.tif", "vit_b")
    assert a != default_store_path(src, "vit_b", normalization={"percentiles": [1, 99]})


def test_info_counts_complete_slices(tmp_path, model):
    store = EmbeddingStore.open(tmp_path / "s.zarr", model, image=volume())
    list(compute(store, keys=[(0,), (5,)]))
    info = store_info(tmp_path / "s.zarr")
    assert info == store.info()
    assert info["slices_complete"] == 2 and info["slices_total"] == 6
    assert info["model"] == "tiny" and info["image_shape"] == (6, 40, 50)
    with pytest.raises(FileNotFoundError, match="not a napari-sam embedding store"):
        store_info(tmp_path)


def test_store_of_an_older_schema_is_a_mismatch_and_kept(tmp_path, model):
    """Schema 3 changed what weights_hash means (the checkpoint file's hash): a schema-2
    store is refused with the usual mismatch error naming the schema, never deleted;
    only an explicit overwrite replaces it."""
    img = volume()
    filled(tmp_path, model, img)
    group = zarr.open_group(tmp_path / "s.zarr", mode="r+")
    attrs = dict(group.attrs["napari_sam"])
    group.attrs["napari_sam"] = {**attrs, "schema_version": 2}
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(StoreMismatchError, match="schema version: store has 2, needed 3"):
        EmbeddingStore.open(tmp_path / "s.zarr", model, image=img)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    fresh = EmbeddingStore.open(tmp_path / "s.zarr", model, image=img, on_mismatch="overwrite")
    assert len(fresh.missing()) == fresh.layout.n_slices
