"""cli/io.read_image: the one image reader of every command — lazy, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr

from napari_sam.cli import UserError
from napari_sam.cli.io import TiffArray, read_image


def test_tiff_is_lazy_and_converts(tmp_path) -> None:
    img = np.arange(3 * 8 * 9, dtype=np.uint16).reshape(3, 8, 9)
    tifffile.imwrite(tmp_path / "v.tif", img, photometric="minisblack")
    arr = read_image(tmp_path / "v.tif")
    assert isinstance(arr, TiffArray) and arr.shape == img.shape and arr.ndim == 3
    assert np.array_equal(arr[1], img[1]) and np.array_equal(np.asarray(arr), img)
    assert np.asarray(arr, dtype=np.float32).dtype == np.float32 and len(arr) == 3


def test_npy_is_memory_mapped_and_zarr_groups_resolve(tmp_path) -> None:
    img = np.ones((4, 5), np.float32)
    np.save(tmp_path / "a.npy", img)
    assert isinstance(read_image(tmp_path / "a.npy"), np.memmap)
    g = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    g.create_array("0", shape=img.shape, dtype=img.dtype)[...] = img
    assert np.array_equal(read_image(tmp_path / "g.zarr")[...], img)  # OME-Zarr level 0


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("missing.tif", "image not found"),
        ("x.png", "unsupported image format 'x.png': use .tif, .npy or .zarr"),
        ("two.zarr", "zarr group with arrays a, b: give IMAGE as"),
        ("store.zarr", "is an embedding store, not an image"),
        ("text.npy", "pixel type"),
    ],
)
def test_errors_are_one_line(tmp_path, name, message) -> None:
    if name == "x.png":
        (tmp_path / name).write_bytes(b"png")
    elif name == "two.zarr":
        g = zarr.open_group(str(tmp_path / name), mode="w")
        for a in ("a", "b"):
            g.create_array(a, shape=(2, 2), dtype="u1")
    elif name == "store.zarr":
        zarr.open_group(str(tmp_path / name), mode="w").attrs["napari_sam"] = {}
    elif name == "text.npy":
        np.save(tmp_path / name, np.array(["a", "b"]))
    with pytest.raises(UserError, match=message):
        read_image(tmp_path / name)
