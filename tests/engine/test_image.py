"""The one normalisation rule to uint8 RGB."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam.engine.image import Normalization, to_uint8_rgb


def test_uint8_rgb_used_as_is():
    img = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    out = to_uint8_rgb(img)
    assert out.dtype == np.uint8 and np.array_equal(out, img)


def test_uint8_gray_replicated_unchanged():
    img = np.arange(35, dtype=np.uint8).reshape(5, 7)
    out = to_uint8_rgb(img)
    assert out.shape == (5, 7, 3)
    assert all(np.array_equal(out[..., c], img) for c in range(3))


def test_rgba_drops_alpha():
    img = np.zeros((4, 4, 4), np.uint8)
    img[..., 3] = 255
    img[..., 0] = 9
    assert np.array_equal(to_uint8_rgb(img), img[..., :3])


def test_uint16_percentiles():
    img = np.linspace(0, 60000, 1000).reshape(25, 40).astype(np.uint16)
    out = to_uint8_rgb(img, Normalization(percentiles=(0, 100)))
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255
    mid = to_uint8_rgb(img)  # default 0.5 / 99.5 %: extremes clipped
    assert mid.min() == 0 and mid.max() == 255
    assert (mid[..., 0] == 0).sum() >= 5 and (mid[..., 0] == 255).sum() >= 5


def test_float_negative_nan_inf():
    img = np.array([[-1.0, 0.0, np.nan], [1.0, np.inf, -np.inf]], np.float32)
    out = to_uint8_rgb(img, Normalization(contrast_limits=(-1.0, 1.0)))[..., 0]
    assert out.tolist() == [[0, 128, 0], [255, 255, 0]]
    out2 = to_uint8_rgb(img)[..., 0]  # percentiles over finite values only
    assert out2[0, 0] == 0 and out2[1, 0] == 255 and out2[0, 2] == 0


def test_constant_and_all_nan_slices():
    assert not to_uint8_rgb(np.full((3, 3), 7.5)).any()
    assert not to_uint8_rgb(np.full((3, 3), np.nan)).any()


def test_contrast_limits_apply_to_uint8_too():
    img = np.array([[10, 20, 30]], np.uint8)
    out = to_uint8_rgb(img, Normalization(contrast_limits=(10, 30)))[..., 0]
    assert out.tolist() == [[0, 128, 255]]


def test_bool_image():
    out = to_uint8_rgb(np.array([[True, False]]))[..., 0]
    assert out.tolist() == [[255, 0]]


@pytest.mark.parametrize("shape", [(4,), (2, 3, 5), (2, 3, 4, 5), (0, 4)])
def test_bad_shapes(shape):
    with pytest.raises(ValueError, match=r"slice|empty"):
        to_uint8_rgb(np.zeros(shape))


def test_bad_parameters():
    with pytest.raises(ValueError, match="contrast_limits"):
        Normalization(contrast_limits=(5, 5))
    with pytest.raises(ValueError, match="percentiles"):
        Normalization(percentiles=(50, 10))
    with pytest.raises(ValueError, match="dtype"):
        to_uint8_rgb(np.array([["a"]]))


def test_signature_is_json_friendly():
    import json

    sig = Normalization(contrast_limits=(0, 10)).signature()
    assert json.loads(json.dumps(sig)) == sig
    assert sig != Normalization().signature()
