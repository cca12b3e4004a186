"""A multiscale image layer (an OME-Zarr opened by napari-ome-zarr) is segmented on its
level 0 with the layer's level-0 scale: the session's image is the lazy level-0 array
(never read whole), the labels have level 0's shape, scale and translate, and a click
commits on the right pixels."""

from __future__ import annotations

import ngff_zarr as nz
import numpy as np
import pytest
from test_widget import add_click, fake_predict, go_to_slice

from napari_sam._napari.controls import TILING_OFF
from napari_sam._napari.widget import SamWidget
from napari_sam.session import SegmentationSession

pytestmark = pytest.mark.gui


def test_multiscale_layer_is_segmented_on_level_0(
    make_napari_viewer, qtbot, tiny_checkpoint, tmp_path, monkeypatch
):
    vol = np.zeros((4, 64, 80), np.uint16)
    vol[1:3, 10:30, 20:50] = 3000
    raw = nz.to_ngff_image(vol, dims=["z", "y", "x"], scale={"z": 2.0, "y": 0.5, "x": 0.5},
                           translation={"z": 1.0, "y": 4.0, "x": -2.0})
    path = tmp_path / "img.ome.zarr"
    nz.to_ngff_zarr(str(path), nz.to_multiscales(raw, scale_factors=[{"z": 1, "y": 2, "x": 2}]),
                    version="0.5")
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(path), plugin="napari-ome-zarr")
    assert layer.multiscale and len(layer.data) == 2
    w = SamWidget(viewer)
    try:
        w.image_combo.setCurrentText(layer.name)
        w.checkpoint_edit.setText(str(tiny_checkpoint))
        w.precision_combo.setCurrentText("fp32")
        w.ram_only.setChecked(True)
        w.tiling_combo.setCurrentText(TILING_OFF)  # 64 × 80 > the tiny model's 64-px input
        w.load_model()
        qtbot.waitUntil(lambda: w.session is not None, timeout=30000)
        assert w.session.image is layer.data[0] and not isinstance(w.session.image, np.ndarray)
        labels = viewer.layers["SAM labels"]
        assert labels.data.shape == vol.shape
        np.testing.assert_allclose(labels.scale, layer.scale)
        np.testing.assert_allclose(labels.translate, layer.translate)
        go_to_slice(viewer, layer, 2)
        monkeypatch.setattr(SegmentationSession, "predict", fake_predict((10, 20, 30, 50)))
        add_click(w, layer, 2, 15, 30)
        qtbot.waitUntil(lambda: w.preview is not None, timeout=30000)
        assert w.preview.index == (2,) and w.session.cached((2,)) is not None
        assert w.commit() == 1
        expected = np.zeros(vol.shape, np.uint32)
        expected[2, 10:30, 20:50] = 1
        np.testing.assert_array_equal(labels.data, expected)
    finally:
        w.release()
