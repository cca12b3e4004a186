"""Bad situations give a message in the widget's status line, not a traceback."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam._napari.widget import SamWidget

pytestmark = pytest.mark.gui


@pytest.fixture
def make_widget(make_napari_viewer):
    made = []

    def make(*images, checkpoint=None):
        viewer = make_napari_viewer()
        for name, data in images:
            viewer.add_image(data, name=name)
        w = SamWidget(viewer)
        if checkpoint is not None:
            w.checkpoint_edit.setText(str(checkpoint))
        w.ram_only.setChecked(True)
        made.append(w)
        return viewer, w

    yield make
    for w in made:
        w.release()


def test_no_image_layer(make_widget):
    _, w = make_widget()
    w.load_model()
    assert "Add an image layer" in w.status.text()
    assert w.session is None


def test_one_pixel_image(make_widget, tiny_checkpoint):
    _, w = make_widget(("dot", np.ones((1, 1), np.uint8)), checkpoint=tiny_checkpoint)
    w.load_model()
    assert "too small" in w.status.text()


def test_not_a_checkpoint(make_widget, tmp_path, qtbot):
    bad = tmp_path / "notes.pth"
    bad.write_text("not weights\n" * 10)
    _, w = make_widget(("img", np.zeros((32, 32), np.uint8)), checkpoint=bad)
    w.load_model()
    qtbot.waitUntil(lambda: w.load_button.isEnabled(), timeout=30000)
    assert "Error" in w.status.text() and "not a PyTorch checkpoint" in w.status.text()
    assert w.session is None


def test_image_removed_while_loading(make_widget, tiny_checkpoint, qtbot):
    viewer, w = make_widget(("img", np.zeros((32, 32), np.uint8)), checkpoint=tiny_checkpoint)
    w.load_model()
    viewer.layers.remove("img")
    qtbot.waitUntil(lambda: w.load_button.isEnabled(), timeout=30000)
    assert w.session is None
    assert "removed" in w.status.text()


def test_image_removed_after_loading(make_widget, tiny_checkpoint, qtbot):
    viewer, w = make_widget(("img", np.zeros((32, 32), np.uint8)), checkpoint=tiny_checkpoint)
    w.load_model()
    qtbot.waitUntil(lambda: w.session is not None, timeout=30000)
    viewer.layers.remove("img")
    assert w.session is None and "removed" in w.status.text()
    w.update_preview()  # nothing to do, no exception
    assert w.commit() is None


def test_all_nan_slice(make_widget, tiny_checkpoint, qtbot):
    vol = np.random.default_rng(0).random((3, 32, 32)).astype(np.float32)
    vol[1] = np.nan
    viewer, w = make_widget(("vol", vol), checkpoint=tiny_checkpoint)
    w.load_model()
    qtbot.waitUntil(lambda: w.session is not None, timeout=30000)
    viewer.dims.set_point(0, 1)
    w.points.add([1, 10, 10])
    qtbot.waitUntil(lambda: "no finite values" in w.status.text(), timeout=30000)
    assert w.preview is None


def test_commit_without_preview(make_widget, tiny_checkpoint, qtbot):
    _, w = make_widget(("img", np.zeros((32, 32), np.uint8)), checkpoint=tiny_checkpoint)
    w.load_model()
    qtbot.waitUntil(lambda: w.session is not None, timeout=30000)
    assert w.commit() is None
    assert "nothing to commit" in w.status.text()


def test_3d_view_message(make_widget, tiny_checkpoint, qtbot):
    viewer, w = make_widget(("vol", np.zeros((4, 32, 32), np.uint8)), checkpoint=tiny_checkpoint)
    w.load_model()
    qtbot.waitUntil(lambda: w.session is not None, timeout=30000)
    viewer.dims.ndisplay = 3
    w.update_preview()
    assert "2D" in w.status.text()
