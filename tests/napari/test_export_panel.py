"""The widget's Export tab: the labels layer written as OME-Zarr / OME-TIFF in a worker
(ids, calibration, object table → the layer's features), replacement only after a
confirmation, cancel, and a failing export that leaves the previous file and the labels
untouched."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from napari_sam.export import read_ome_zarr
from napari_sam.export.tiff import read_tiff

pytestmark = pytest.mark.gui


def _fill(widget) -> np.ndarray:
    layer = widget.viewer.layers["SAM labels"]
    lab = np.zeros(layer.data.shape, np.uint32)
    lab[2:5, 10:25, 20:40] = 1
    lab[1, 2:6, 3:9] = 7
    layer.data = lab
    return lab


def _wait(qtbot, panel) -> None:
    qtbot.waitUntil(lambda: panel.worker is None, timeout=60000)


@pytest.mark.parametrize("name", ["cells.ome.zarr", "cells.tif"])
def test_export_writes_labels_table_and_features(sam_widget, qtbot, tmp_path, name):
    w, panel = sam_widget, sam_widget.export_panel
    lab = _fill(w)
    target = tmp_path / name
    assert panel.export(target) is not None
    _wait(qtbot, panel)
    if name.endswith(".zarr"):
        img = read_ome_zarr(target)
        data, cal = np.asarray(img.data), img.calibration()
    else:
        data, cal, _ = read_tiff(target)
    np.testing.assert_array_equal(np.asarray(data), lab)
    np.testing.assert_allclose(cal.scale, (2.5, 0.5, 0.5))
    np.testing.assert_allclose(cal.translate, (10.0, -3.0, 7.0))
    assert (tmp_path / "cells.objects.csv").is_file()
    feats = w.viewer.layers["SAM labels"].features.set_index("index")
    assert sorted(feats.index) == [1, 7]
    assert feats.loc[7, "voxels"] == 24 and feats.loc[1, "voxels"] == int((lab == 1).sum())
    assert "exported 2 objects" in w.status.text()


def test_existing_export_replaced_only_after_confirmation(sam_widget, qtbot, tmp_path, monkeypatch):
    w, panel = sam_widget, sam_widget.export_panel
    lab = _fill(w)
    target = tmp_path / "cells.tif"
    panel.export(target)
    _wait(qtbot, panel)
    before = target.read_bytes()
    layer = w.viewer.layers["SAM labels"]
    layer.data = np.where(lab == 7, 0, lab).astype(np.uint32)
    asked = []
    monkeypatch.setattr(panel, "confirm_replace", lambda p: asked.append(p) or False)
    assert panel.export(target) is None
    assert asked == [target] and target.read_bytes() == before
    assert "kept" in w.status.text()
    monkeypatch.setattr(panel, "confirm_replace", lambda p: True)
    panel.export(target)
    _wait(qtbot, panel)
    data, _, _ = read_tiff(target)
    assert not (np.asarray(data) == 7).any() and (np.asarray(data) == 1).any()


def test_cancel_writes_nothing(sam_widget, qtbot, tmp_path, monkeypatch):
    from napari_sam.engine.progress import Progress
    from napari_sam.export import table

    w, panel = sam_widget, sam_widget.export_panel
    _fill(w)
    started = threading.Event()

    def slow(labels, cal=None, prov=None, chunks=None):
        yield Progress(0, 2, "object table")
        started.set()
        assert panel.cancel_event.wait(30)
        yield Progress(1, 2, "object table")
        return None

    monkeypatch.setattr(table, "iter_object_table", slow)
    target = tmp_path / "cells.ome.zarr"
    panel.export(target)
    qtbot.waitUntil(started.is_set, timeout=30000)
    panel.cancel()
    _wait(qtbot, panel)
    assert not target.exists() and not (tmp_path / "cells.objects.csv").exists()
    assert "export cancelled" in w.status.text()


def test_failed_export_keeps_previous_file_and_labels(sam_widget, qtbot, tmp_path, monkeypatch):
    import errno

    import tifffile

    w, panel = sam_widget, sam_widget.export_panel
    lab = _fill(w)
    target = tmp_path / "cells.tif"
    panel.export(target)
    _wait(qtbot, panel)
    before = target.read_bytes()

    def full_disk(self, *args, **kwargs):  # some bytes reach the disk, then it is full
        self._fh.write(b"\0" * 4096)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tifffile.TiffWriter, "write", full_disk)
    monkeypatch.setattr(panel, "confirm_replace", lambda p: True)
    w.viewer.layers["SAM labels"].data = (lab * 2).astype(np.uint32)
    panel.export(target)
    _wait(qtbot, panel)
    assert "export failed" in w.status.text() and "No space left" in w.status.text()
    assert target.read_bytes() == before
    np.testing.assert_array_equal(w.viewer.layers["SAM labels"].data, lab * 2)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("cells")) == [
        "cells.napari_sam.json", "cells.objects.csv", "cells.tif"
    ]


def test_export_into_the_image_ome_zarr(make_napari_viewer, qtbot, tmp_path, volume):
    from napari_sam._napari.widget import SamWidget
    from napari_sam.export import Calibration
    from napari_sam.export.ome_zarr import write_ome_zarr

    image = tmp_path / "image.ome.zarr"
    write_ome_zarr(image, volume, Calibration.create(3, (2.0, 0.5, 0.5), (0, 0, 0)), levels=1)
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(image), plugin="napari-ome-zarr")
    assert layer.source.path
    w = SamWidget(viewer)
    try:
        lab = np.zeros(volume.shape, np.uint32)
        lab[3, 5:9, 5:9] = 4
        viewer.add_labels(lab, name="nuclei", scale=(2.0, 0.5, 0.5))
        w.labels_combo.setCurrentText("nuclei")
        panel = w.export_panel
        assert panel.source_ome_zarr() == image
        panel.export_into_image()
        _wait(qtbot, panel)
        out = read_ome_zarr(image / "labels" / "nuclei")
        np.testing.assert_array_equal(np.asarray(out.data), lab)
    finally:
        w.release()
