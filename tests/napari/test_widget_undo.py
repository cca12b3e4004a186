"""Undo / redo of commits from where the user is: the widget keeps the SAM points layer
active, so Ctrl+Z / Ctrl+Shift+Z pressed on the canvas must reach the target labels
(one commit = one step), and the Undo / Redo buttons do the same."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import Qt
from test_widget import add_click, fake_predict, go_to_slice

from napari_sam.session import SegmentationSession

pytestmark = pytest.mark.gui


def key_on_canvas(viewer, key, modifiers) -> None:
    """A real key press on napari's canvas (napari's keymap handler dispatches it to
    the active layer, as when the user types)."""
    from qtpy.QtTest import QTest

    canvas = viewer.window._qt_viewer.canvas.native
    QTest.keyClick(canvas, key, modifiers)


def commit_two(widget, qtbot, monkeypatch):
    viewer, image = widget.viewer, widget.image_layer
    go_to_slice(viewer, image, 3)
    for box in [(0, 0, 10, 10), (20, 20, 30, 30)]:
        monkeypatch.setattr(SegmentationSession, "predict", fake_predict(box))
        add_click(widget, image, 3, box[0] + 5, box[1] + 5)
        qtbot.waitUntil(lambda: widget.preview is not None, timeout=30000)
        widget.commit()
    labels = viewer.layers["SAM labels"]
    assert (labels.data[3] == 1).sum() == 100 and (labels.data[3] == 2).sum() == 100
    return labels


def test_ctrl_z_on_the_canvas_undoes_the_last_commit(sam_widget, qtbot, monkeypatch):
    viewer = sam_widget.viewer
    labels = commit_two(sam_widget, qtbot, monkeypatch)
    assert viewer.layers.selection.active is sam_widget.points
    ctrl = Qt.KeyboardModifier.ControlModifier
    key_on_canvas(viewer, Qt.Key.Key_Z, ctrl)
    assert (labels.data[3] == 2).sum() == 0 and (labels.data[3] == 1).sum() == 100
    key_on_canvas(viewer, Qt.Key.Key_Z, ctrl | Qt.KeyboardModifier.ShiftModifier)
    assert (labels.data[3] == 2).sum() == 100 and (labels.data[3] == 1).sum() == 100
    assert viewer.layers.selection.active is sam_widget.points  # the user stays there


def test_undo_buttons(sam_widget, qtbot, monkeypatch):
    labels = commit_two(sam_widget, qtbot, monkeypatch)
    sam_widget.undo_button.click()
    assert (labels.data == 2).sum() == 0 and (labels.data == 1).sum() == 100
    sam_widget.undo_button.click()
    assert not labels.data.any()
    sam_widget.redo_button.click()
    assert (labels.data == 1).sum() == 100 and (labels.data == 2).sum() == 0
    before = np.array(labels.data)
    sam_widget.redo_button.click()
    sam_widget.redo_button.click()  # nothing more to redo: no change, a message
    assert (labels.data == 2).sum() == 100 and (labels.data[before > 0] == 1).all()
    assert "nothing to redo" in sam_widget.status.text()
