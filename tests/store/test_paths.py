"""Default store paths of images without a stable name: the content key.

The widget used to name a layer's store by ``id(layer.data)``, so every load of the
same data wrote a new store (31 in one session). The content key hashes a few sampled
slices + shape + dtype + layout: a re-load finds its store, other data gets another.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import zarr

from napari_sam.engine.image import Normalization
from napari_sam.store.paths import (
    CONTENT_SAMPLES,
    content_key,
    default_store_path_for,
    sample_indices,
)
from napari_sam.store.slicing import SliceLayout

from store_helpers import CountingArray, volume


def _path(image, tmp_path, layout=None, **kw):
    layout = layout or SliceLayout.for_shape(image.shape)
    args = dict(model_name="vit_b", precision="fp32", normalization=Normalization())
    args.update(kw)
    return default_store_path_for(image, layout, cache_dir=tmp_path, **args)


def test_reload_of_equal_data_finds_the_same_store(tmp_path):
    vol = volume((12, 30, 40))
    first = _path(vol, tmp_path)
    again = _path(np.array(vol), tmp_path)  # a new array object, as a re-load makes
    assert again == first
    assert first.parent == tmp_path / "embeddings" and first.suffix == ".zarr"
    assert first.name.startswith("array-12x30x40-vit_b-")


def test_same_content_same_key_for_numpy_zarr_and_dask(tmp_path):
    vol = volume((9, 20, 24))
    z = zarr.create_array(tmp_path / "v.zarr", shape=vol.shape, chunks=(1, 20, 24), dtype=vol.dtype)
    z[...] = vol
    lazy = da.from_array(vol, chunks=(3, 20, 24))
    layout = SliceLayout.for_shape(vol.shape)
    key = content_key(vol, layout)
    assert content_key(zarr.open_array(tmp_path / "v.zarr", mode="r"), layout) == key
    assert content_key(lazy, layout) == key


def test_different_data_gets_a_different_store(tmp_path):
    vol = volume((12, 30, 40))
    base = _path(vol, tmp_path)
    last = vol.copy()
    last[-1, 5, 5] += 1  # the last slice is always sampled
    middle = vol.copy()
    middle[sample_indices(SliceLayout.for_shape(vol.shape))[3][0], 0, 0] += 1
    assert _path(last, tmp_path) != base
    assert _path(middle, tmp_path) != base
    assert _path(vol.astype(np.int32), tmp_path) != base  # same values, other dtype
    assert _path(volume((12, 30, 40), seed=1), tmp_path) != base
    assert _path(vol[:, :, :39], tmp_path) != base


def test_model_precision_normalisation_weights_and_source_are_in_the_key(tmp_path):
    vol = volume((4, 20, 24))
    base = _path(vol, tmp_path)
    others = [
        _path(vol, tmp_path, model_name="vit_l"),
        _path(vol, tmp_path, precision="bf16"),
        _path(vol, tmp_path, normalization=Normalization(contrast_limits=(0, 1000))),
        _path(vol, tmp_path, weights="3c1a"),
        _path(vol, tmp_path, source_path=tmp_path / "cells.tif"),
    ]
    assert len({base, *others}) == 6
    # a Normalization and its signature dict are the same key part
    assert _path(vol, tmp_path, normalization=Normalization().signature()) == base
    assert _path(vol, tmp_path, normalization=None) == base


def test_file_source_names_the_store_and_separates_files(tmp_path):
    vol = volume((4, 20, 24))
    a, b = tmp_path / "cells.tif", tmp_path / "other.tif"
    a.write_bytes(b"x")
    p = _path(vol, tmp_path, source_path=a)
    assert p.name.startswith("cells-vit_b-")
    assert _path(vol, tmp_path, source_path=str(a)) == p  # str or Path, resolved
    assert _path(vol, tmp_path, source_path=b) != p  # equal content, another file
    # two layers of one file (napari's channel_axis split) keep separate stores
    assert _path(volume((4, 20, 24), seed=3), tmp_path, source_path=a) != p


def test_layout_is_in_the_key(tmp_path):
    rgb = volume((3, 20, 24, 3), dtype=np.uint8)
    as_rgb = SliceLayout.for_shape(rgb.shape, rgb=True)
    as_stack = SliceLayout.for_shape(rgb.shape, spatial=(1, 2))
    assert content_key(rgb, as_rgb) != content_key(rgb, as_stack)
    cz = volume((2, 3, 20, 24))
    ch0 = SliceLayout.for_shape(cz.shape, channel_axis=0, channel=0)
    ch1 = SliceLayout.for_shape(cz.shape, channel_axis=0, channel=1)
    assert content_key(cz, ch0) != content_key(cz, ch1)


def test_only_the_sampled_slices_are_read():
    vol = volume((50, 8, 9))
    arr = CountingArray(vol)
    layout = SliceLayout.for_shape(vol.shape)
    content_key(arr, layout)
    read = [k[0] for k in arr.keys]
    assert len(read) == CONTENT_SAMPLES == 7
    assert read == [0, 8, 16, 24, 33, 41, 49]  # first, middle (24/25), last, evenly spaced
    assert all(k[1:] == (slice(None), slice(None)) for k in arr.keys)  # whole slices only


def test_sampling_over_several_slice_axes_and_2d():
    tz = SliceLayout.for_shape((3, 10, 8, 9))
    idx = sample_indices(tz)
    assert idx[0] == (0, 0) and idx[-1] == (2, 9) and len(idx) == CONTENT_SAMPLES
    assert (1, 4) in idx or (1, 5) in idx  # the middle of the 30 slices
    assert sample_indices(SliceLayout.for_shape((3, 8, 9))) == [(0,), (1,), (2,)]
    arr = CountingArray(volume((8, 9)))
    content_key(arr, SliceLayout.for_shape((8, 9)))
    assert len(arr.keys) == 1
    with pytest.raises(ValueError, match="samples"):
        sample_indices(tz, 0)


def test_unsampled_change_keeps_the_key():
    """Documented limit: the key finds the store; the per-slice fingerprints (not the
    key) refuse a changed slice that was not sampled."""
    vol = volume((50, 8, 9))
    layout = SliceLayout.for_shape(vol.shape)
    changed = vol.copy()
    changed[1] += 1
    assert content_key(changed, layout) == content_key(vol, layout)
