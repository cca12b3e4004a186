"""Calibrated OME-TIFF export: what tifffile (and so Fiji / Bio-Formats) reads, the
sidecar, our reader with and without the sidecar, dtype handling."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import zarr

from napari_sam.export import Calibration, export_labels
from napari_sam.export.tiff import is_tiff_export, read_tiff, sidecar_path

from export_data import SCALE


def test_tifffile_reads_physical_size_axes_and_positions(tmp_path, labels3d, cal3d) -> None:
    out = tmp_path / "labels.tif"
    written = export_labels(out, labels3d, cal3d, name="nuclei")
    assert written == [out, tmp_path / "labels.napari_sam.json", tmp_path / "labels.objects.csv"]
    with tifffile.TiffFile(out) as tif:
        assert tif.is_ome and tif.series[0].axes == "ZYX"
        np.testing.assert_array_equal(tif.asarray(), labels3d)
        page = tif.pages.first
        assert page.dtype == np.uint32 and page.software == "napari-sam"
        # resolution tags: pixels per centimetre (0.5 µm → 20000 / cm)
        assert page.resolution == pytest.approx((2e4, 2e4))
        assert page.resolutionunit == tifffile.RESUNIT.CENTIMETER
        pixels = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]["Pixels"]
    assert pixels["PhysicalSizeX"] == 0.5 and pixels["PhysicalSizeY"] == 0.5
    assert pixels["PhysicalSizeZ"] == 2.0 and pixels["PhysicalSizeXUnit"] == "µm"
    planes = pixels["Plane"]
    assert [p["PositionZ"] for p in planes] == [10.0 + 2.0 * z for z in range(6)]
    assert {(p["PositionY"], p["PositionX"]) for p in planes} == {(100.0, -50.0)}


def test_sidecar_and_reader_round_trip(tmp_path, labels3d, cal3d) -> None:
    out = tmp_path / "labels.tiff"
    export_labels(out, labels3d, cal3d, name="nuclei", table=False)
    side = json.loads(sidecar_path(out).read_text())["napari_sam"]
    assert side["calibration"]["scale"] == list(SCALE) and side["name"] == "nuclei"
    data, cal, block = read_tiff(out)
    assert isinstance(data, zarr.Array)  # lazy
    np.testing.assert_array_equal(data[:], labels3d)
    assert cal == cal3d and block["name"] == "nuclei"
    # without the sidecar the OME-XML alone gives the same calibration
    sidecar_path(out).unlink()
    _, cal2, block2 = read_tiff(out)
    assert block2 is None and cal2 == cal3d
    assert is_tiff_export(out)  # recognised by the Software tag


def test_other_tiffs_are_not_ours(tmp_path) -> None:
    p = tmp_path / "plain.tif"
    tifffile.imwrite(p, np.zeros((5, 5), np.uint8))
    assert not is_tiff_export(p)
    assert not is_tiff_export(tmp_path / "missing.tif")


def test_int64_labels_are_stored_as_uint32_and_overflow_refused(tmp_path) -> None:
    lab = np.zeros((2, 8, 8), np.int64)
    lab[1, 2:5, 2:5] = 70_000
    out = tmp_path / "a.tif"
    export_labels(out, lab, table=False)
    back = tifffile.imread(out)
    assert back.dtype == np.uint32
    np.testing.assert_array_equal(back, lab)
    lab[0, 0, 0] = 2**33
    with pytest.raises(ValueError, match="cannot be stored"):
        export_labels(tmp_path / "b.tif", lab, table=False)
    assert not (tmp_path / "b.tif").exists()
    assert not list(tmp_path.glob(".b.tif*"))  # no temporary left behind


def test_2d_and_time_series(tmp_path) -> None:
    lab = np.arange(12, dtype=np.uint16).reshape(3, 4)
    export_labels(tmp_path / "p.tif", lab, Calibration.create(2, (0.25, 0.25), (3, 4),
                                                              ["nanometer"] * 2))
    _, cal, _ = read_tiff(tmp_path / "p.tif")
    assert cal.units == ("nanometer", "nanometer") and cal.translate == (3.0, 4.0)
    lab4 = np.zeros((2, 3, 6, 7), np.uint8)
    lab4[1, 2, 1:3, 1:4] = 4
    cal4 = Calibration.create(4, (60.0, 1.5, 0.3, 0.3), (120.0, 7.0, 0.0, 0.0),
                              ["second", "micrometer", "micrometer", "micrometer"])
    export_labels(tmp_path / "t.tif", lab4, cal4)
    with tifffile.TiffFile(tmp_path / "t.tif") as tif:
        assert tif.series[0].axes == "TZYX"
        pixels = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]["Pixels"]
    assert pixels["TimeIncrement"] == 60.0 and pixels["TimeIncrementUnit"] == "s"
    (tmp_path / "t.napari_sam.json").unlink()
    _, back, _ = read_tiff(tmp_path / "t.tif")
    assert back == cal4
