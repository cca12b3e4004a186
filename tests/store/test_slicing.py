"""Slice addressing: index tuples over the non-spatial axes, lazy reads, --slices."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import zarr

from napari_sam.store import SliceLayout, parse_slices

from store_helpers import CountingArray


def test_2d_image_has_one_slice():
    lay = SliceLayout.for_shape((40, 50))
    assert lay.slice_axes == () and lay.slice_shape == () and lay.n_slices == 1
    assert list(lay.indices()) == [()]
    img = np.arange(2000).reshape(40, 50)
    assert np.array_equal(lay.read(img, ()), img)


def test_tzyx_indices_and_read():
    img = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    lay = SliceLayout.for_shape(img.shape)
    assert lay.slice_axes == (0, 1) and lay.slice_shape == (2, 3) and lay.slice_size == (4, 5)
    assert list(lay.indices())[:4] == [(0, 0), (0, 1), (0, 2), (1, 0)]
    assert np.array_equal(lay.read(img, (1, 2)), img[1, 2])


def test_rgb_keeps_samples_axis_and_channel_axis_is_fixed():
    rgb = np.zeros((3, 8, 9, 3), np.uint8)
    lay = SliceLayout.for_shape(rgb.shape, rgb=True)
    assert lay.slice_axes == (0,) and lay.read(rgb, (2,)).shape == (8, 9, 3)
    czyx = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    fixed = SliceLayout.from_axes(czyx.shape, "CZYX", channel=1)
    assert fixed.slice_axes == (1,) and fixed.slice_shape == (3,)
    assert np.array_equal(fixed.read(czyx, (2,)), czyx[1, 2])
    # without --channel, C is just another slice axis
    assert SliceLayout.from_axes(czyx.shape, "CZYX").slice_shape == (2, 3)


def test_spatial_axes_in_any_order_give_row_col_slices():
    img = np.arange(4 * 5 * 3).reshape(4, 5, 3)  # axes Y X Z
    lay = SliceLayout.from_axes(img.shape, "YXZ")
    assert lay.slice_axes == (2,) and np.array_equal(lay.read(img, (1,)), img[:, :, 1])
    xy = SliceLayout.from_axes(img.shape, "XYZ")  # rows are axis 1
    assert xy.slice_size == (5, 4)
    assert np.array_equal(xy.read(img, (2,)), img[:, :, 2].T)


@pytest.mark.parametrize(
    ("shape", "kw", "match"),
    [
        ((5,), {}, "at least a 2D"),
        ((4, 5, 6), {"rgb": True}, "last axis of 3 or 4"),
        ((4, 5, 6), {"channel_axis": 0}, "both channel_axis and channel"),
        ((4, 5, 6), {"channel_axis": 0, "channel": 4}, "out of range"),
        ((4, 5, 6), {"channel_axis": 1, "channel": 0}, "cannot be a spatial"),
        ((4, 5, 6), {"spatial": (1, 1)}, "two distinct"),
    ],
)
def test_bad_layouts_are_refused(shape, kw, match):
    with pytest.raises(ValueError, match=match):
        SliceLayout.for_shape(shape, **kw)


@pytest.mark.parametrize(
    ("axes", "match"), [("ZY", "2 letters"), ("ZYY", "repeats"), ("SYX", "must be last")]
)
def test_bad_axes_strings(axes, match):
    with pytest.raises(ValueError, match=match):
        SliceLayout.from_axes((3, 4, 5), axes)


def test_check_index():
    lay = SliceLayout.for_shape((3, 4, 8, 8))
    assert lay.check_index([1, 2]) == (1, 2)
    with pytest.raises(IndexError, match="2 slice axes"):
        lay.check_index((1,))
    with pytest.raises(IndexError, match="out of range"):
        lay.check_index((3, 0))
    assert SliceLayout.for_shape((3, 8, 8)).check_index(np.int64(2)) == (2,)


def test_layout_round_trips_through_attrs():
    lay = SliceLayout.from_axes((2, 3, 4, 5), "CZYX", channel=1)
    assert SliceLayout.from_dict(lay.to_dict()) == lay


def test_reads_touch_only_the_slice_for_zarr_dask_and_array_likes(tmp_path):
    data = np.arange(5 * 6 * 7, dtype=np.uint16).reshape(5, 6, 7)
    lay = SliceLayout.for_shape(data.shape)
    counting = CountingArray(data)
    assert np.array_equal(lay.read(counting, (3,)), data[3])
    assert counting.keys == [(3, slice(None), slice(None))]
    z = zarr.open_array(
        tmp_path / "a.zarr", mode="w", shape=data.shape, chunks=(1, 6, 7), dtype=data.dtype
    )
    z[:] = data
    assert np.array_equal(lay.read(z, (4,)), data[4])
    inner = CountingArray(data)
    d = da.from_array(inner, chunks=(1, 6, 7), asarray=False)
    inner.keys.clear()
    assert np.array_equal(lay.read(d, (2,)), data[2])
    assert len(inner.keys) == 1 and inner.keys[0][0] in (2, slice(2, 3))


def test_parse_slices():
    lay = SliceLayout.for_shape((4, 6, 8, 8))  # T Z Y X
    assert parse_slices(None, lay) == list(lay.indices())
    assert parse_slices("1:3", lay) == [(t, z) for t in (1, 2) for z in range(6)]
    assert parse_slices("3,::2", lay) == [(3, 0), (3, 2), (3, 4)]
    assert parse_slices("-1,5", lay) == [(3, 5)]
    for bad, match in [
        ("1,2,3", "3 entries"),
        ("a", "bad --slices"),
        ("9", "out of range"),
        ("2:2", "selects no slice"),
        ("1:2:0", "bad --slices"),
    ]:
        with pytest.raises(ValueError, match=match):
            parse_slices(bad, lay)
