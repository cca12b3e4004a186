"""Prompts the user cannot see never block the widget; the preview never looks like a
committed object; prompt points keep their size on screen at any zoom."""

from __future__ import annotations

import numpy as np
import pytest
from test_widget import add_click, go_to_slice, world_of

from napari_sam._napari.constants import POINT_SIZE_PX

pytestmark = pytest.mark.gui


def test_point_outside_the_image_is_ignored(sam_widget, qtbot):
    """Real (tiny) decoder: a click off the image gives a hint, not an error, and the
    next click on the image is previewed with the off-image one left out."""
    viewer, image = sam_widget.viewer, sam_widget.image_layer
    go_to_slice(viewer, image, 3)
    before = sam_widget.status.text()
    add_click(sam_widget, image, 3, -25, 10)  # above the image
    qtbot.waitUntil(lambda: sam_widget.status.text() != before, timeout=30000)
    qtbot.wait(300)  # encoding / decoding, if any, is over
    assert sam_widget.preview is None
    assert "Error" not in sam_widget.status.text()
    assert "1 point outside the image ignored" in sam_widget.status.text()
    add_click(sam_widget, image, 3, 15, 30)
    qtbot.waitUntil(lambda: sam_widget.preview is not None, timeout=30000)
    assert "Error" not in sam_widget.status.text()
    assert "(1 point outside the image ignored)" in sam_widget.status.text()
    assert sam_widget.preview.prompts[0] == ((15.0, 30.0),)  # only the visible click

    # a box entirely off the image is ignored the same way
    corners = [(3, -40, 70), (3, -40, 90), (3, -20, 90), (3, -20, 70)]
    boxes = sam_widget.boxes
    boxes.add_rectangles(np.array([boxes.world_to_data(world_of(image, c)) for c in corners]))
    request = sam_widget.preview.request
    qtbot.waitUntil(
        lambda: sam_widget.preview is not None and sam_widget.preview.request > request,
        timeout=30000,
    )
    assert "1 box" in sam_widget.status.text() and "Error" not in sam_widget.status.text()


def test_preview_does_not_look_like_a_label(sam_widget, qtbot, monkeypatch):
    """The preview's colour is far (RGB distance ≥ 0.5) from the first 10 colours of a
    default Labels layer, and it is drawn as an outline of the mask, not filled."""
    from napari.layers import Labels

    from napari_sam.engine.decode.predictor import Predictor, PredictResult

    def rectangle(self, **kw):  # the decoder's answer: a 15 × 20 rectangle
        h, w = self.embedding.original_size
        masks = np.zeros((1, h, w), bool)
        masks[:, 10:25, 20:40] = True
        return PredictResult(masks, np.ones(1, np.float32), np.zeros((1, 16, 16), np.float32))

    monkeypatch.setattr(Predictor, "predict", rectangle)
    viewer, image = sam_widget.viewer, sam_widget.image_layer
    go_to_slice(viewer, image, 3)
    add_click(sam_widget, image, 3, 15, 30)
    qtbot.waitUntil(lambda: sam_widget.preview is not None, timeout=30000)
    preview = sam_widget.preview_layer
    shown = np.asarray(preview.get_color(1))[:3]
    default = Labels(np.zeros((4, 4), np.uint8))
    colours = np.array([default.get_color(i)[:3] for i in range(1, 11)])
    assert np.linalg.norm(colours - shown, axis=1).min() >= 0.5
    drawn = preview.data > 0
    mask = sam_widget.preview.mask
    assert mask.sum() == 300 and not (drawn & ~mask).any()  # inside the mask only
    assert drawn[10:12, 20:40].all() and drawn[10:25, 38:40].all()  # its 2-px edge
    assert not drawn[12:23, 22:38].any()  # not filled


def test_points_keep_their_size_on_screen(sam_widget):
    viewer, image = sam_widget.viewer, sam_widget.image_layer
    pts = sam_widget.points
    add_click(sam_widget, image, 0, 3, 3)

    def on_screen(size):
        return float(size) * abs(pts.scale[-1]) * viewer.scene.camera.zoom

    seen = []
    for zoom in (1.0, 6.0):
        viewer.scene.camera.zoom = zoom
        seen.append(on_screen(pts.size[0]))
        add_click(sam_widget, image, 0, 5, 5)  # a new point gets that size too
        seen.append(on_screen(pts.size[-1]))
    assert seen == pytest.approx([seen[0]] * 4)  # the same on screen at both zooms
    assert seen[0] == pytest.approx(POINT_SIZE_PX)
