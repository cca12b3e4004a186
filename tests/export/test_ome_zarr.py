"""OME-Zarr export (NGFF 0.5 on zarr v3): metadata, pyramid, lazy input, the
image-label relation, and reading back with ngff-zarr (our reader) and with
napari-ome-zarr's reader (as a library; the napari round-trip is in
tests/napari/test_io_hooks.py)."""

from __future__ import annotations

import json

import dask.array as da
import ngff_zarr as nz
import numpy as np
import pytest
import zarr

from napari_sam.export import Calibration, ExportError, export_labels
from napari_sam.export.ome_zarr import labels_path, read_export_attrs, read_ome_zarr

from export_data import SCALE, TRANSLATE


def _ome(path) -> dict:
    return json.loads((path / "zarr.json").read_text())["attributes"]["ome"]


def test_metadata_axes_transforms_units(tmp_path, labels3d, cal3d) -> None:
    out = tmp_path / "cells.ome.zarr"
    written = export_labels(out, labels3d, cal3d, name="cells", levels=2)
    assert written == [out, tmp_path / "cells.objects.csv"]
    doc = json.loads((out / "zarr.json").read_text())
    assert doc["zarr_format"] == 3
    ome = doc["attributes"]["ome"]
    assert ome["version"] == "0.5"
    ms = ome["multiscales"][0]
    assert [(a["name"], a["type"], a.get("unit")) for a in ms["axes"]] == [
        ("z", "space", "micrometer"), ("y", "space", "micrometer"), ("x", "space", "micrometer")
    ]
    t0 = ms["datasets"][0]["coordinateTransformations"]
    assert t0 == [{"type": "scale", "scale": list(SCALE)},
                  {"type": "translation", "translation": list(TRANSLATE)}]
    t1 = ms["datasets"][1]["coordinateTransformations"]
    assert t1[0]["scale"] == [2.0, 1.0, 1.0]
    assert t1[1]["translation"] == [10.0, 100.25, -49.75]  # centre of the 2×2 block
    block = doc["attributes"]["napari_sam"]
    assert block["calibration"]["translate"] == list(TRANSLATE)
    assert block["table"] == "cells.objects.csv"


def test_round_trip_with_ngff_zarr_reader(tmp_path, labels3d, cal3d) -> None:
    out = tmp_path / "cells.ome.zarr"
    export_labels(out, labels3d, cal3d, levels=2)
    r = read_ome_zarr(out)
    assert r.axes == ("z", "y", "x") and r.types == ("space",) * 3
    assert r.scale == SCALE and r.translate == TRANSLATE
    assert r.units == ("micrometer",) * 3 and r.n_levels == 3
    np.testing.assert_array_equal(np.asarray(r.data), labels3d)
    assert r.data.dtype == np.uint32
    assert r.calibration() == cal3d
    # the library's own reader agrees
    ms = nz.from_ngff_zarr(str(out))
    assert ms.images[0].scale == dict(zip("zyx", SCALE, strict=True))
    assert ms.images[0].translation == dict(zip("zyx", TRANSLATE, strict=True))


def test_pyramid_is_labels_only_never_interpolated(tmp_path, labels3d, cal3d) -> None:
    out = tmp_path / "p.ome.zarr"
    export_labels(out, labels3d, cal3d, levels=2, table=False)
    ids = set(np.unique(labels3d).tolist())
    for k, shape in ((1, (6, 20, 26)), (2, (6, 10, 13))):
        lev = read_ome_zarr(out, k)
        data = np.asarray(lev.data)
        assert data.shape == shape
        assert set(np.unique(data).tolist()) <= ids  # a mode, never a blend of ids
        assert lev.scale == (2.0, 0.5 * 2**k, 0.5 * 2**k)
    # big box 2 survives downsampling in place
    lev1 = np.asarray(read_ome_zarr(out, 1).data)
    assert (lev1[0, 12:18, 16:24] == 2).all()


def test_pyramid_rule_is_the_block_mode(tmp_path) -> None:
    """Each level-1 voxel is the most frequent id of its 2 × 2 block, smallest on a tie."""
    lab = np.array([[5, 5, 0, 7],
                    [5, 9, 7, 0],
                    [3, 4, 8, 8],
                    [4, 3, 8, 2]], np.uint16)
    out = tmp_path / "m.ome.zarr"
    export_labels(out, lab, levels=1, table=False)
    np.testing.assert_array_equal(np.asarray(read_ome_zarr(out, 1).data), [[5, 0], [3, 8]])


def test_auto_levels_and_no_pyramid_for_small_labels(tmp_path, labels3d, cal3d) -> None:
    out = tmp_path / "s.ome.zarr"
    export_labels(out, labels3d, cal3d, table=False)
    assert read_ome_zarr(out).n_levels == 1


def test_lazy_zarr_input_is_streamed(tmp_path, labels3d, cal3d) -> None:
    """A zarr array on disk (written chunk-wise) exports chunk by chunk, unchanged."""
    src = zarr.create_array(str(tmp_path / "src.zarr"), shape=labels3d.shape,
                            chunks=(2, 16, 16), dtype="uint32")
    for z in range(0, 6, 2):
        src[z:z + 2] = labels3d[z:z + 2]
    out = tmp_path / "lazy.ome.zarr"
    export_labels(out, src, cal3d, levels=1)
    r = read_ome_zarr(out)
    assert isinstance(r.data, da.Array)
    np.testing.assert_array_equal(np.asarray(r.data), labels3d)
    arr = zarr.open_array(str(out / json.loads((out / "zarr.json").read_text())
                              ["attributes"]["ome"]["multiscales"][0]["datasets"][0]["path"]))
    assert arr.chunks == (2, 16, 16)


def _write_image(path, shape=(6, 40, 52)) -> None:
    img = np.random.default_rng(0).integers(0, 4000, shape).astype(np.uint16)
    im = nz.to_ngff_image(img, dims=["z", "y", "x"], scale=dict(zip("zyx", SCALE, strict=True)),
                          translation=dict(zip("zyx", TRANSLATE, strict=True)), name="raw")
    nz.to_ngff_zarr(str(path), nz.to_multiscales(im, scale_factors=[]), version="0.5")


def test_labels_inside_an_image_get_the_image_label_relation(tmp_path, labels3d, cal3d) -> None:
    image = tmp_path / "image.ome.zarr"
    _write_image(image)
    target = labels_path(image, "nuclei")
    export_labels(target, labels3d, cal3d, levels=1)
    assert _ome(image / "labels")["labels"] == ["nuclei"]
    assert _ome(target)["image-label"]["version"] == "0.5"
    assert "multiscales" in _ome(target)
    export_labels(labels_path(image, "cells"), labels3d, cal3d, table=False)
    assert _ome(image / "labels")["labels"] == ["nuclei", "cells"]
    # the image still reads, with consolidated metadata that knows the labels
    root = zarr.open_group(str(image), mode="r")
    assert "labels" in root and "nuclei" in root["labels"]
    assert read_export_attrs(target)["name"] == "nuclei"
    np.testing.assert_array_equal(np.asarray(read_ome_zarr(target).data), labels3d)
    # napari-ome-zarr's reader (used as a library) finds image and labels
    from napari_ome_zarr._reader import napari_get_reader

    layers = napari_get_reader(str(image))(str(image))
    kinds = [lt for _, _, lt in layers]
    assert kinds == ["image", "labels", "labels"]
    data, meta, _ = layers[1]
    np.testing.assert_array_equal(np.asarray(data[0]), labels3d)
    assert list(meta["scale"]) == list(SCALE)
    assert list(meta["translate"]) == list(TRANSLATE)


def test_labels_must_fit_the_image(tmp_path, cal3d) -> None:
    image = tmp_path / "image.ome.zarr"
    _write_image(image)
    with pytest.raises(ExportError, match="do not fit"):
        export_labels(labels_path(image, "x"), np.zeros((6, 40, 50), np.uint32), cal3d)
    assert not (image / "labels").exists()


def test_read_ome_zarr_levels_and_errors(tmp_path, labels3d, cal3d) -> None:
    out = tmp_path / "c.ome.zarr"
    export_labels(out, labels3d, cal3d, levels=1, table=False)
    assert read_ome_zarr(out, 1).level == 1
    with pytest.raises(ValueError, match="resolution level"):
        read_ome_zarr(out, 5)
    with pytest.raises(FileNotFoundError):
        read_ome_zarr(tmp_path / "missing.ome.zarr")
    (tmp_path / "plain").mkdir()
    with pytest.raises(ValueError, match="not an OME-Zarr"):
        read_ome_zarr(tmp_path / "plain")


def test_4d_time_axis_and_uint64(tmp_path) -> None:
    lab = np.zeros((2, 3, 20, 24), np.uint64)
    lab[1, 1:3, 4:9, 5:11] = 2**40
    cal = Calibration.create(4, (30.0, 1.5, 0.2, 0.2), (0, 3, 4, 5),
                             ["second", "micrometer", "micrometer", "micrometer"])
    out = tmp_path / "t.ome.zarr"
    export_labels(out, lab, cal)
    r = read_ome_zarr(out)
    assert r.axes == ("t", "z", "y", "x") and r.types[0] == "time"
    assert r.units[0] == "second" and r.scale[0] == 30.0
    np.testing.assert_array_equal(np.asarray(r.data), lab)
