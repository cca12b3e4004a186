"""GUI fixtures: a napari viewer (virtual display) with the napari-sam widget."""

from __future__ import annotations

import numpy as np
import pytest

from requires import require

require("napari")
require("pytestqt")

pytestmark = pytest.mark.gui


@pytest.fixture
def volume():
    """A (6, 40, 56) uint16 stack with a bright rectangle on slices 2–4."""
    vol = np.zeros((6, 40, 56), np.uint16)
    vol[2:5, 10:25, 20:40] = 4000
    return vol


@pytest.fixture
def sam_widget(make_napari_viewer, qtbot, tiny_checkpoint, volume, tmp_path):
    """Viewer with a scaled + translated 3D image and a widget with the tiny model loaded
    (embeddings stored in tmp_path)."""
    from napari_sam._napari.widget import SamWidget

    viewer = make_napari_viewer()
    viewer.add_image(volume, name="stack", scale=(2.5, 0.5, 0.5), translate=(10.0, -3.0, 7.0))
    widget = SamWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.image_combo.setCurrentText("stack")
    widget.checkpoint_edit.setText(str(tiny_checkpoint))
    widget.precision_combo.setCurrentText("fp32")
    widget.store_edit.setText(str(tmp_path / "emb.zarr"))
    widget.load_model()
    qtbot.waitUntil(lambda: widget.session is not None, timeout=30000)
    yield widget
    widget.release()
