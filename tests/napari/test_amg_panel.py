"""The "Segment everything" panel driven as a user would: segment a slice / all slices
(worker), one undo step restores the labels exactly, committed objects are never
clobbered unless "overwrite existing objects" is checked, new ids above the max id."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam.engine.amg.result import AmgResult
from napari_sam.engine.progress import Progress

pytestmark = pytest.mark.gui

A = (slice(10, 25), slice(20, 40))  # object 1 of the fake generator
B = (slice(30, 36), slice(2, 10))  # object 2


class FakeAmg:
    """Deterministic stand-in for AutomaticMaskGenerator (same constructor / API)."""

    last = None  # the most recent instance (its params)

    def __init__(self, model, normalization=None, **params):
        self.params, self.points_per_batch = params, 64
        self.crop_n_layers = params.get("crop_n_layers", 0)
        self.images = []
        FakeAmg.last = self

    def n_steps(self, shape):
        return 2

    def iter_generate(self, source, *, image=None):
        self.images.append(image)
        h, w = source.original_size
        labels = np.zeros((h, w), np.uint32)
        labels[A], labels[B] = 1, 2
        yield Progress(1, 2, "batch")
        yield Progress(2, 2, "batch")
        return AmgResult(labels, [], [])


@pytest.fixture
def fake_amg(monkeypatch):
    import napari_sam._napari.amg_panel as mod

    monkeypatch.setattr(mod, "AutomaticMaskGenerator", FakeAmg)


def go_to_slice(viewer, image, z):
    viewer.dims.set_point(0, np.asarray(image.data_to_world((z, 0, 0)))[0])


def wait_done(qtbot, panel):
    qtbot.waitUntil(lambda: panel.worker is None, timeout=60000)


def test_panel_has_official_defaults(sam_widget):
    p = sam_widget.amg_panel
    import inspect

    from napari_sam.engine.amg import AutomaticMaskGenerator

    official = {
        k: v.default
        for k, v in inspect.signature(AutomaticMaskGenerator).parameters.items()
        if k in p.params()
    }
    assert p.params() == pytest.approx(official) and len(official) == 12
    assert p.preset_combo.currentText() == "official defaults"
    assert not p.advanced.isVisibleTo(p)
    assert not p.overwrite_check.isChecked() and not p.cancel_button.isEnabled()
    assert p.overwrite_check is sam_widget.overwrite_check  # one setting for the widget


def test_segment_slice_then_undo_restores_exactly(sam_widget, qtbot, fake_amg):
    viewer, image = sam_widget.viewer, sam_widget.image_layer
    go_to_slice(viewer, image, 3)
    labels = sam_widget.target_labels()
    before = np.array(labels.data)
    assert sam_widget.amg_panel.segment() is not None
    wait_done(qtbot, sam_widget.amg_panel)
    after = np.array(labels.data)
    assert (after[3][A] == 1).all() and (after[3][B] == 2).all()
    assert after[[0, 1, 2, 4, 5]].max() == 0  # only this slice
    labels.undo()  # one undo step
    np.testing.assert_array_equal(labels.data, before)
    labels.redo()
    np.testing.assert_array_equal(labels.data, after)


def test_no_clobbering_ids_offset_and_overwrite(sam_widget, qtbot, fake_amg):
    viewer, image = sam_widget.viewer, sam_widget.image_layer
    go_to_slice(viewer, image, 3)
    labels = sam_widget.target_labels()
    with labels.block_history():  # a committed object 5 overlapping A on slice 3
        labels.data_setitem((np.full(10, 3), np.full(10, 12), np.arange(20, 30)), 5)
    before = np.array(labels.data)
    sam_widget.amg_panel.segment()
    wait_done(qtbot, sam_widget.amg_panel)
    after = np.array(labels.data)
    committed = before == 5
    assert (after[committed] == 5).all()  # not clobbered
    assert set(np.unique(after[3][A])) == {5, 6} and (after[3][B] == 7).all()  # offset
    labels.undo()
    np.testing.assert_array_equal(labels.data, before)
    sam_widget.overwrite_check.setChecked(True)
    sam_widget.amg_panel.segment()
    wait_done(qtbot, sam_widget.amg_panel)
    after = np.array(labels.data)
    assert (after[3][A] == 6).all() and (after[3][B] == 7).all()


def test_no_rim_around_committed_objects(sam_widget, qtbot, fake_amg):
    """Automatic masks after committing: a mask that covers a committed object plus a
    2-px ring around it adds no rim object; the other object gets the next id."""
    viewer, image = sam_widget.viewer, sam_widget.image_layer
    go_to_slice(viewer, image, 3)
    labels = sam_widget.target_labels()
    rows, cols = np.mgrid[12:23, 22:38]  # object 5 = A shrunk by 2 px on every side
    with labels.block_history():
        labels.data_setitem((np.full(rows.size, 3), rows.ravel(), cols.ravel()), 5)
    sam_widget.amg_panel.segment()
    wait_done(qtbot, sam_widget.amg_panel)
    after = np.array(labels.data)[3]
    assert set(np.unique(after[A])) == {0, 5}  # the ring stays empty
    assert (after[B] == 6).all() and set(np.unique(after)) == {0, 5, 6}


def test_all_slices_linked_one_undo_step(sam_widget, qtbot, fake_amg):
    viewer, image = sam_widget.viewer, sam_widget.image_layer
    go_to_slice(viewer, image, 1)
    labels = sam_widget.target_labels()
    before = np.array(labels.data)
    sam_widget.amg_panel.segment(volume=True)
    wait_done(qtbot, sam_widget.amg_panel)
    after = np.array(labels.data)
    for z in range(after.shape[0]):  # the same two objects on every slice: 2 3D ids
        assert (after[z][A] == 1).all() and (after[z][B] == 2).all(), z
    assert set(np.unique(after)) == {0, 1, 2}
    labels.undo()
    np.testing.assert_array_equal(labels.data, before)


def test_tiny_model_runs_on_a_slice(sam_widget, qtbot):
    """The real generator (tiny random model) runs through the worker without error."""
    p = sam_widget.amg_panel
    p.points_spin.setValue(4)
    p.iou_spin.setValue(0.0)
    p.stab_spin.setValue(0.0)
    assert p.segment() is not None
    wait_done(qtbot, p)
    assert "Error" not in sam_widget.status.text()


def test_min_slices_drops_short_3d_objects(sam_widget, qtbot, fake_amg):
    """Objects on all Z slices survive min slices = Z and are dropped at Z + 1."""
    labels = sam_widget.target_labels()
    nz = labels.data.shape[0]
    p = sam_widget.amg_panel
    assert p.min_slices_spin.value() == 1  # default keeps every object
    p.min_slices_spin.setValue(nz + 1)
    before = np.array(labels.data)
    p.segment(volume=True)
    wait_done(qtbot, p)
    np.testing.assert_array_equal(labels.data, before)
    assert "no object found" in sam_widget.status.text()
    p.min_slices_spin.setValue(nz)
    p.segment(volume=True)
    wait_done(qtbot, p)
    assert set(np.unique(labels.data)) == {0, 1, 2}


def test_write_reads_only_the_target_block(sam_widget, qtbot, fake_amg, monkeypatch):
    """One slice of a volume: the write touches that slice only (no full-size array)."""
    import napari_sam.session.commit as commit

    seen = []
    real = commit.plan_write

    def spy(data, result, key, *args, **kwargs):
        seen.append((result.shape, key))
        return real(data, result, key, *args, **kwargs)

    monkeypatch.setattr(commit, "plan_write", spy)
    viewer, image = sam_widget.viewer, sam_widget.image_layer
    go_to_slice(viewer, image, 2)
    labels = sam_widget.target_labels()
    sam_widget.amg_panel.segment()
    wait_done(qtbot, sam_widget.amg_panel)
    assert seen == [(labels.data.shape[1:], (2,))]
    assert (labels.data[2][A] == 1).all() and not labels.data[[0, 1]].any()


def test_presets_follow_the_loaded_model(sam_widget):
    from napari_sam.engine.amg.volume import DEMO_MIN_SLICES, DEMO_PARAMS

    p = sam_widget.amg_panel
    p.model_loaded("demo")
    assert p.preset_combo.currentText() == "demo model (tuned)"
    got = p.params()
    for k, v in DEMO_PARAMS.items():
        assert got[k] == pytest.approx(v), k
    assert p.min_slices_spin.value() == DEMO_MIN_SLICES
    p.model_loaded("vit_b")
    assert p.params()["pred_iou_thresh"] == pytest.approx(0.88)
    assert p.min_slices_spin.value() == 1


def test_advanced_parameters_reach_the_generator(sam_widget, qtbot, fake_amg):
    p = sam_widget.amg_panel
    p.advanced_check.setChecked(True)
    assert p.advanced.isVisibleTo(p)
    p.box_nms_spin.setValue(0.5)
    p.crop_layers_spin.setValue(1)
    p.offset_spin.setValue(2.0)
    p.segment()
    wait_done(qtbot, p)
    params = FakeAmg.last.params
    assert params["box_nms_thresh"] == pytest.approx(0.5)
    assert params["crop_n_layers"] == 1 and params["stability_score_offset"] == 2.0
    # crop layers are encoded from the slice: the generator got the slice itself
    img = FakeAmg.last.images[0]
    ctx = sam_widget.current_slice()
    np.testing.assert_array_equal(img, np.asarray(sam_widget.image_layer.data[ctx.index]))
