"""napari_sam.synthetic: deterministic nuclei images with instance ground truth."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_sam.synthetic import make_dataset, nuclei_2d, nuclei_3d


def test_2d_is_deterministic_and_seed_dependent() -> None:
    a_img, a_lab = nuclei_2d((128, 160), seed=3)
    b_img, b_lab = nuclei_2d((128, 160), seed=3)
    c_img, _ = nuclei_2d((128, 160), seed=4)
    assert np.array_equal(a_img, b_img) and np.array_equal(a_lab, b_lab)
    assert not np.array_equal(a_img, c_img)
    assert a_img.shape == a_lab.shape == (128, 160)
    assert a_img.dtype == np.uint8 and a_lab.dtype == np.int32


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_dtype_and_nuclei_brighter_than_background(dtype: str) -> None:
    img, lab = nuclei_2d((128, 128), seed=1, dtype=dtype, photons=200)
    assert img.dtype == np.dtype(dtype)
    assert lab.max() >= 5
    inside = img[ndi.binary_erosion(lab > 0, iterations=2)].mean()
    outside = img[~ndi.binary_dilation(lab > 0, iterations=4)].mean()
    assert inside > 2 * outside
    if dtype == "uint16":
        assert img.max() > 255


def test_labels_are_consecutive_and_neighbours_touch() -> None:
    _, lab = nuclei_2d((256, 256), seed=0, radius=(10, 20), max_overlap=0.3)
    ids = np.unique(lab[lab > 0])
    assert np.array_equal(ids, np.arange(1, ids.max() + 1))
    # some pairs of nuclei share a border (touching / overlapping neighbours)
    grown = ndi.grey_dilation(lab, size=3)
    assert np.count_nonzero((grown != lab) & (lab > 0) & (grown > 0)) > 0


def test_3d_anisotropic() -> None:
    vol, lab = nuclei_3d((16, 64, 64), seed=2, z_step=3.0, radius=(8, 10))
    assert vol.shape == lab.shape == (16, 64, 64)
    assert vol.dtype == np.uint16
    assert lab.max() >= 1
    # nuclei are round in physical units: extent in z (slices) ≈ xy extent / z_step
    sl = ndi.find_objects(lab)[0]
    z_ext = sl[0].stop - sl[0].start
    xy_ext = max(sl[1].stop - sl[1].start, sl[2].stop - sl[2].start)
    assert z_ext < xy_ext


def test_make_dataset_seeds() -> None:
    a = make_dataset(3, seed=5, shape=(64, 64))
    b = make_dataset(3, seed=5, shape=(64, 64))
    assert all(np.array_equal(x[0], y[0]) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0][0], a[1][0])
    vols = make_dataset(2, seed=5, shape=(8, 48, 48))
    assert vols[0][0].ndim == 3


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="dtype"):
        nuclei_2d((32, 32), dtype="float32")
    with pytest.raises(ValueError, match="radius"):
        nuclei_2d((32, 32), radius=(5, 2))
