"""The propagation panel driven as a user would: commit an object on one slice,
propagate it (worker), undo restores the labels exactly; cancel leaves them unchanged
unless asked to keep the partial result; negative-only clicks stop the propagation."""

from __future__ import annotations

import time

import numpy as np
import pytest

from napari_sam.engine.decode.predictor import Predictor, PredictResult

pytestmark = pytest.mark.gui

ROWS, COLS = slice(10, 25), slice(20, 40)  # the bright rectangle of the volume fixture


@pytest.fixture
def fake_decoder(monkeypatch, tiny_model):
    """Deterministic decoder: an object whose click (the panel's default mode sends one
    interior click per object) lies in the 15 × 20 rectangle → that rectangle."""
    state = {"delay": 0.0}

    def predict_batch(self, points=None, labels=None, boxes=None, mask_inputs=None, **kw):
        time.sleep(state["delay"])
        h, w = self.embedding.original_size
        masks = np.zeros((len(points), 1, h, w), bool)
        for i, (r, c) in enumerate(np.asarray(points)[:, 0].astype(int)):
            if ROWS.start <= r < ROWS.stop and COLS.start <= c < COLS.stop:
                masks[i, 0, ROWS, COLS] = True
        low = self.model.sam.low_res_size
        n = len(points)
        return PredictResult(masks, np.full((n, 1), 0.9, np.float32), np.zeros((n, 1, *low)))

    monkeypatch.setattr(Predictor, "predict_batch", predict_batch)
    return state


def go_to_slice(viewer, image, z):
    viewer.dims.set_point(0, np.asarray(image.data_to_world((z, 0, 0)))[0])


def committed(widget, z=3, label_id=1):
    """A Labels layer with one object committed on slice z (one undo step)."""
    labels = widget.target_labels()
    idx = np.nonzero(np.pad(np.ones((15, 20), bool), ((10, 0), (20, 0))))
    with labels.block_history():
        labels.data_setitem((np.full(idx[0].size, z), *idx), label_id)
    labels.selected_label = label_id
    return labels


def wait_done(qtbot, panel):
    qtbot.waitUntil(lambda: panel.worker is None, timeout=60000)


def test_panel_is_part_of_the_widget(sam_widget):
    panel = sam_widget.propagate_panel
    assert panel.mode_combo.currentText() == "mask+points"
    assert not panel.cancel_button.isEnabled()


def test_propagate_selected_then_undo_restores_exactly(sam_widget, qtbot, fake_decoder):
    viewer, image = sam_widget.viewer, sam_widget.image_layer
    go_to_slice(viewer, image, 3)
    labels = committed(sam_widget)
    before = np.array(labels.data)
    assert sam_widget.propagate_panel.propagate() is not None
    wait_done(qtbot, sam_widget.propagate_panel)
    after = np.array(labels.data)
    for z in range(6):  # every slice now holds object 1 where the decoder said so
        assert (after[z, ROWS, COLS] == 1).all(), z
    assert set(np.unique(after)) == {0, 1}
    labels.undo()  # the whole propagation is one undo step
    np.testing.assert_array_equal(labels.data, before)
    labels.redo()
    np.testing.assert_array_equal(labels.data, after)


def test_propagate_all_on_slice_keeps_ids_and_other_objects(sam_widget, qtbot, fake_decoder):
    viewer, image = sam_widget.viewer, sam_widget.image_layer
    go_to_slice(viewer, image, 3)
    labels = committed(sam_widget, z=3, label_id=4)
    with labels.block_history():
        labels.data_setitem((np.array([0]), np.array([1]), np.array([1])), 9)  # elsewhere
    sam_widget.propagate_panel.max_spin.setValue(1)
    sam_widget.propagate_panel.propagate(all_on_slice=True)
    wait_done(qtbot, sam_widget.propagate_panel)
    data = np.asarray(labels.data)
    assert data[0, 1, 1] == 9  # never overwritten
    assert [z for z in range(6) if (data[z] == 4).any()] == [2, 3, 4]  # max 1 slice


def test_negative_only_click_stops_and_cancel_leaves_labels(sam_widget, qtbot, fake_decoder):
    from napari_sam._napari.constants import POSITIVE_FEATURE

    viewer, image = sam_widget.viewer, sam_widget.image_layer
    go_to_slice(viewer, image, 3)
    labels = committed(sam_widget)
    pts = sam_widget.points
    pts.feature_defaults = {POSITIVE_FEATURE: False}
    pts.add(pts.world_to_data(image.data_to_world((5, 2, 2))))
    sam_widget._timer.stop()
    panel = sam_widget.propagate_panel
    panel.propagate()
    wait_done(qtbot, panel)
    data = np.asarray(labels.data)
    assert [z for z in range(6) if (data[z] == 1).any()] == [0, 1, 2, 3, 4]  # not 5

    labels.undo()
    before = np.array(labels.data)
    fake_decoder["delay"] = 0.3
    panel.propagate()
    started = lambda: panel.propagator is not None and bool(panel.propagator.decode_calls)  # noqa: E731
    qtbot.waitUntil(started, timeout=30000)
    assert panel.cancel_button.isVisibleTo(sam_widget) and panel.cancel_button.isEnabled()
    panel.cancel_button.click()  # the job row's one Cancel
    wait_done(qtbot, panel)
    np.testing.assert_array_equal(labels.data, before)  # cancel: unchanged
    assert "propagation cancelled: labels unchanged" in sam_widget.status.text()
    assert not panel.cancel_button.isVisibleTo(sam_widget)

    panel.keep_check.setChecked(True)
    panel.propagate()
    qtbot.waitUntil(started, timeout=30000)
    panel.cancel()
    wait_done(qtbot, panel)
    kept = np.asarray(labels.data)
    assert (kept != before).any() and (kept[before > 0] == before[before > 0]).all()
    assert "cancelled: slices done so far were kept" in sam_widget.status.text()


def test_propagate_needs_an_object(sam_widget, qtbot):
    """The labels are read in the worker: the problem comes back as a status line."""
    go_to_slice(sam_widget.viewer, sam_widget.image_layer, 3)
    sam_widget.target_labels().selected_label = 5
    sam_widget.propagate_panel.propagate()
    wait_done(qtbot, sam_widget.propagate_panel)
    assert "the selected label 5 has no pixel" in sam_widget.status.text()


def test_tzyx_propagates_the_current_time_point_only(
    make_napari_viewer, qtbot, tiny_checkpoint, volume, fake_decoder
):
    from napari_sam._napari.widget import SamWidget

    viewer = make_napari_viewer()
    image = viewer.add_image(np.stack([volume, volume]), name="movie")
    widget = SamWidget(viewer)
    widget.image_combo.setCurrentText("movie")
    widget.checkpoint_edit.setText(str(tiny_checkpoint))
    widget.precision_combo.setCurrentText("fp32")
    widget.ram_only.setChecked(True)
    widget.load_model()
    qtbot.waitUntil(lambda: widget.session is not None, timeout=30000)
    try:
        viewer.dims.set_point(0, 1)
        go_to_slice_4d = np.asarray(image.data_to_world((1, 3, 0, 0)))
        viewer.dims.set_point(1, go_to_slice_4d[1])
        labels = widget.target_labels()
        labels.data[1, 3, ROWS, COLS] = 2
        labels.selected_label = 2
        widget.propagate_panel.propagate()
        wait_done(qtbot, widget.propagate_panel)
        data = np.asarray(labels.data)
        assert not data[0].any()
        assert [z for z in range(6) if (data[1, z] == 2).any()] == list(range(6))
    finally:
        widget.release()
