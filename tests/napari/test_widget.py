"""The dock widget driven as a user would: prompts, preview, commit, undo, slices."""

from __future__ import annotations

import time

import numpy as np
import pytest
from qtpy.QtCore import QTimer

from napari_sam._napari import adapters
from napari_sam._napari.constants import KEY_COMMIT, POSITIVE_FEATURE
from napari_sam.session import Preview, SegmentationSession

pytestmark = pytest.mark.gui


def world_of(layer, data_coords):
    return np.asarray(layer.data_to_world(data_coords))


def go_to_slice(viewer, image, z):
    """Move the viewer to data slice z of ``image`` (through world coordinates)."""
    world_z = world_of(image, (z, 0, 0))[0]
    viewer.dims.set_point(0, world_z)


def add_click(widget, image, z, row, col, positive=True):
    """Click at image data (z, row, col): converted to the points layer's data coords."""
    pts = widget.points
    world = world_of(image, (z, row, col))
    widget.points.feature_defaults = {POSITIVE_FEATURE: positive}
    pts.add(pts.world_to_data(world))


def bound_keys(layer) -> set[str]:
    return {str(k).lower() for k in layer.keymap}


def press(layer, key: str) -> None:
    """Call the function bound to ``key`` on ``layer`` (as a key press would)."""
    from app_model.types import KeyBinding

    layer.keymap[KeyBinding.from_str(key)](layer)


def fake_predict(mask_value_box):
    """A deterministic stand-in for the decoder: the mask is a fixed rectangle."""

    def predict(self, index, emb, points, labels, box, request):
        mask = np.zeros(emb.original_size, bool)
        r0, c0, r1, c1 = mask_value_box
        mask[r0:r1, c0:c1] = True
        return Preview(index, mask, 0.9, request)

    return predict


def test_prompt_layers_take_the_image_geometry(sam_widget):
    image = sam_widget.image_layer
    for layer in (sam_widget.points, sam_widget.boxes):
        np.testing.assert_allclose(layer.scale, image.scale)
        np.testing.assert_allclose(layer.translate, image.translate)
        assert layer.ndim == 3
    assert image.scale.tolist() == [2.5, 0.5, 0.5]  # we never reset the user's scale


def test_click_preview_commit_undo_redo(sam_widget, qtbot, monkeypatch):
    monkeypatch.setattr(SegmentationSession, "predict", fake_predict((10, 20, 25, 40)))
    viewer, image = sam_widget.viewer, sam_widget.image_layer
    go_to_slice(viewer, image, 3)
    add_click(sam_widget, image, 3, 15, 30)
    qtbot.waitUntil(lambda: sam_widget.preview is not None, timeout=30000)
    assert sam_widget.preview.index == (3,)
    label_id = sam_widget.commit()
    assert label_id == 1
    labels = viewer.layers["SAM labels"]
    assert labels.data.shape == (6, 40, 56)
    np.testing.assert_allclose(labels.scale, image.scale)
    assert (labels.data[3, 10:25, 20:40] == 1).all()
    assert labels.data.sum() == 15 * 20  # only slice 3
    assert len(sam_widget.points.data) == 0  # prompts cleared
    labels.undo()
    assert not labels.data.any()
    labels.redo()
    assert (labels.data[3] == 1).sum() == 300


def test_second_object_does_not_overwrite(sam_widget, qtbot, monkeypatch):
    viewer, image = sam_widget.viewer, sam_widget.image_layer
    go_to_slice(viewer, image, 2)
    for i, box in enumerate([(0, 0, 20, 20), (10, 10, 30, 30)], start=1):
        monkeypatch.setattr(SegmentationSession, "predict", fake_predict(box))
        add_click(sam_widget, image, 2, box[0] + 5, box[1] + 5)
        qtbot.waitUntil(lambda: sam_widget.preview is not None, timeout=30000)
        assert sam_widget.commit() == i
    labels = viewer.layers["SAM labels"].data[2]
    assert (labels[0:20, 0:20] == 1).all()  # object 1 kept where they overlap
    assert (labels == 2).sum() == 400 - 100
    labels_layer = viewer.layers["SAM labels"]
    labels_layer.undo()  # one commit = one undo step
    assert (labels_layer.data == 2).sum() == 0 and (labels_layer.data == 1).sum() == 400


def test_real_decoder_preview_and_key_commit(sam_widget, qtbot):
    """No fakes: tiny model encodes the slice in a worker, decoder predicts, the commit
    key on the points layer writes the mask."""
    viewer, image = sam_widget.viewer, sam_widget.image_layer
    go_to_slice(viewer, image, 3)
    r0, c0, r1, c1 = 5, 10, 30, 45
    world = [world_of(image, (3, r, c)) for r, c in [(r0, c0), (r0, c1), (r1, c1), (r1, c0)]]
    sam_widget.boxes.add_rectangles(np.array([sam_widget.boxes.world_to_data(w) for w in world]))
    qtbot.waitUntil(lambda: sam_widget.preview is not None, timeout=30000)
    expected = sam_widget.preview.mask.copy()
    press(sam_widget.points, KEY_COMMIT)
    if expected.any():
        assert (viewer.layers["SAM labels"].data[3] > 0).sum() == expected.sum()
    # the slice's embedding went to the zarr store
    assert sam_widget.session.store.missing([(3,)]) == []


def test_only_prompts_of_current_slice_are_used(sam_widget, qtbot, monkeypatch):
    seen = {}

    def spy(self, index, emb, points, labels, box, request):
        seen["points"] = points.copy()
        return Preview(index, np.zeros(emb.original_size, bool), 0.5, request)

    monkeypatch.setattr(SegmentationSession, "predict", spy)
    viewer, image = sam_widget.viewer, sam_widget.image_layer
    add_click(sam_widget, image, 1, 5, 6)  # another slice
    go_to_slice(viewer, image, 4)
    add_click(sam_widget, image, 4, 12.0, 33.0)
    qtbot.waitUntil(lambda: "points" in seen, timeout=30000)
    np.testing.assert_allclose(seen["points"], [[12.0, 33.0]], atol=1e-6)


def test_toggle_polarity_is_a_feature_not_a_colour(sam_widget):
    image = sam_widget.image_layer
    add_click(sam_widget, image, 0, 3, 3, positive=True)
    sam_widget.points.feature_defaults = {POSITIVE_FEATURE: True}
    sam_widget._toggle_polarity()
    pts = sam_widget.points
    pts.add(pts.world_to_data(world_of(image, (0, 8, 8))))
    assert pts.features[POSITIVE_FEATURE].tolist() == [True, False]
    assert not np.allclose(pts.face_color[0], pts.face_color[1])
    ctx = adapters.SliceContext((0,), (1, 2), (40, 56), False)
    _, lab = adapters.points_on_slice(pts, image, ctx)
    assert lab.tolist() == [1, 0]


def test_stale_preview_is_dropped(sam_widget):
    sam_widget._latest = 5
    sam_widget._on_preview(Preview((0,), np.ones((40, 56), bool), 1.0, request=4))
    assert sam_widget.preview is None


def test_gui_stays_responsive_while_encoding(sam_widget, qtbot, monkeypatch):
    """The encoder runs in a worker: the Qt event loop keeps ticking meanwhile."""
    model = sam_widget.session.model
    real = model.encode

    def slow_encode(x):
        time.sleep(1.5)
        return real(x)

    monkeypatch.setattr(model, "encode", slow_encode)
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start(20)
    image = sam_widget.image_layer
    go_to_slice(sam_widget.viewer, image, 5)
    add_click(sam_widget, image, 5, 10, 10)
    t0 = time.perf_counter()
    qtbot.waitUntil(lambda: sam_widget.preview is not None, timeout=30000)
    timer.stop()
    assert time.perf_counter() - t0 >= 1.4  # the slow encoder really ran
    assert len(ticks) >= 20, f"event loop starved: {len(ticks)} ticks"


def test_precompute_all_slices(sam_widget, qtbot):
    sam_widget.precompute()
    qtbot.waitUntil(lambda: sam_widget._precompute_worker is None, timeout=60000)
    assert sam_widget.session.store.missing() == []


def test_keys_released_on_close(sam_widget):
    pts = sam_widget.points
    assert KEY_COMMIT in bound_keys(pts)
    sam_widget.release()
    assert KEY_COMMIT not in bound_keys(pts)
    sam_widget.release = lambda: None  # fixture teardown calls it again
