"""The widget follows the image it segments and lets go of everything when closed:
another image (or channel axis) rebuilds the session, prompt layers and target labels,
and drops the old image's running work; removing layers while workers run is
harmless; adding layers never makes napari's layer list fail; the dock's [x] cancels
this widget's workers (only its own), unbinds its keys and removes its layers."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from test_widget_demo import biggest, iou

from napari_sam._napari.constants import KEY_COMMIT, POSITIVE_FEATURE
from napari_sam._napari.widget import SamWidget
from napari_sam.engine.amg.result import AmgResult
from napari_sam.engine.progress import Progress
from napari_sam.session import Preview, SegmentationSession
from napari_sam.synthetic import nuclei_2d, nuclei_3d

pytestmark = pytest.mark.gui

OWN = ("SAM points", "SAM boxes", "SAM preview")


def click(w, layer, index, rc, positive=True):
    w.points.feature_defaults = {POSITIVE_FEATURE: positive}
    w.points.add(w.points.world_to_data(layer.data_to_world((*index, *rc))))


def go_to(viewer, layer, index):
    world = layer.data_to_world((*index, 0, 0))
    for axis in range(len(index)):
        viewer.dims.set_point(axis, world[axis])


def fake_predict(box):
    def predict(self, index, emb, points, labels, box_=None, request=0, **kw):
        mask = np.zeros(emb.original_size, bool)
        r0, c0, r1, c1 = box
        mask[r0:r1, c0:c1] = True
        return Preview(index, mask, 0.9, request)

    return predict


class SlowAmg:
    """Stand-in for AutomaticMaskGenerator: 20 steps of 0.1 s, then one object."""

    last = None

    def __init__(self, model, normalization=None, **params):
        self.crop_n_layers = 0
        self.steps = 0
        SlowAmg.last = self

    def n_steps(self, shape):
        return 20

    def iter_generate(self, source, *, image=None):
        for i in range(20):
            time.sleep(0.1)
            self.steps += 1
            yield Progress(i + 1, 20, "batch")
        labels = np.zeros(source.original_size, np.uint32)
        labels[2:10, 2:10] = 1
        return AmgResult(labels, [], [])


@pytest.fixture
def slow_amg(monkeypatch):
    import napari_sam._napari.amg_panel as mod

    monkeypatch.setattr(mod, "AutomaticMaskGenerator", SlowAmg)


def tiny_widget(viewer, tiny_checkpoint, image_name, dock=False, **opts):
    w = SamWidget(viewer)
    if dock:
        w.test_dock = viewer.window.add_dock_widget(w, name="Segment Anything")
    w.image_combo.setCurrentText(image_name)
    w.checkpoint_edit.setText(str(tiny_checkpoint))
    w.precision_combo.setCurrentText("fp32")
    w.ram_only.setChecked(opts.get("ram_only", True))
    w.prefetch_check.setChecked(opts.get("prefetch", False))
    return w


def test_choosing_another_image_segments_that_image(
    make_napari_viewer, qtbot, monkeypatch, tmp_path
):
    """Load on a 2D image A, choose a scaled 3D image B, load again: clicks on B are
    predicted from B's embeddings and committed into labels of B's shape; A's labels
    keep what was committed into them (demo model, default store location)."""
    monkeypatch.setenv("NAPARI_SAM_CACHE_DIR", str(tmp_path))
    img2, truth2 = nuclei_2d((160, 160), seed=901)
    img3, truth3 = nuclei_3d((12, 96, 96), seed=902, z_step=2.0)
    viewer = make_napari_viewer()
    a = viewer.add_image(img2, name="A2d")
    b = viewer.add_image(img3, name="B3d", scale=(2.0, 0.5, 0.5), translate=(4, -10, 3))
    w = SamWidget(viewer)
    w.image_combo.setCurrentText("A2d")
    w.model_combo.setCurrentText("demo")
    w.precision_combo.setCurrentText("fp32")
    w.prefetch_check.setChecked(False)
    w.load_button.click()
    qtbot.waitUntil(lambda: w.session is not None, timeout=60000)
    try:
        _, rc = biggest(truth2)
        click(w, a, (), rc)
        qtbot.waitUntil(lambda: w.preview is not None, timeout=60000)
        assert w.commit() == 1
        a_labels = viewer.layers["SAM labels"]
        a_before = np.array(a_labels.data)

        w.image_combo.setCurrentText("B3d")
        w.load_button.click()
        qtbot.waitUntil(lambda: w.session is not None and w.session.image is b.data, timeout=60000)
        assert w.points.ndim == 3 and w.boxes.ndim == 3
        np.testing.assert_allclose(w.points.scale, b.scale)
        np.testing.assert_allclose(w.points.translate, b.translate)
        store = str(w.session.store.path)
        assert store in w.status.text() and "B3d" in w.status.text()
        assert sum(ly.name in OWN for ly in viewer.layers) == 3  # no orphans of A

        obj3, rc3 = biggest(truth3[6])
        go_to(viewer, b, (6,))
        click(w, b, (6,), rc3)
        qtbot.waitUntil(lambda: w.preview is not None, timeout=60000)
        assert w.preview.index == (6,)
        assert iou(w.preview.mask, truth3[6] == obj3) >= 0.8
        assert w.commit() == 1
        b_labels = viewer.layers[w.labels_combo.currentText()]
        assert b_labels is not a_labels and b_labels.data.shape == (12, 96, 96)
        np.testing.assert_allclose(b_labels.scale, b.scale)
        assert iou(b_labels.data[6] == 1, truth3[6] == obj3) >= 0.8
        np.testing.assert_array_equal(a_labels.data, a_before)  # A untouched
    finally:
        w.release()


def test_switching_image_drops_the_old_images_job(
    make_napari_viewer, qtbot, tiny_checkpoint, volume, slow_amg
):
    """Choosing another image (without pressing Load: the model is kept) cancels a job
    still running for the old one; its result never reaches the old labels."""
    viewer = make_napari_viewer()
    viewer.add_image(volume, name="A")
    b = viewer.add_image(volume[:, :32, :48].copy(), name="B")
    w = tiny_widget(viewer, tiny_checkpoint, "A")
    w.load_model()
    qtbot.waitUntil(lambda: w.session is not None, timeout=30000)
    try:
        labels_a = w.target_labels()
        worker = w.amg_panel.segment()
        qtbot.waitUntil(lambda: SlowAmg.last.steps > 0, timeout=30000)
        w.image_combo.setCurrentText("B")
        qtbot.waitUntil(lambda: w.session is not None and w.session.image is b.data, timeout=30000)
        assert worker.abort_requested
        qtbot.waitUntil(lambda: w.amg_panel.worker is None, timeout=30000)
        qtbot.wait(300)
        assert not np.asarray(labels_a.data).any()  # the old job wrote nothing
        labels_b = viewer.layers[w.labels_combo.currentText()]  # B's own target labels
        assert labels_b is not labels_a and labels_b.data.shape == b.data.shape
        assert "segment everything" not in w.status.text()
    finally:
        w.release()


def test_changing_the_channel_axis_retargets_the_labels(
    make_napari_viewer, qtbot, tiny_checkpoint, volume, monkeypatch
):
    monkeypatch.setattr(SegmentationSession, "predict", fake_predict((10, 20, 25, 40)))
    viewer = make_napari_viewer()
    stack = viewer.add_image(np.stack([volume, volume // 2]), name="two channels")
    w = tiny_widget(viewer, tiny_checkpoint, "two channels")
    w.load_model()
    qtbot.waitUntil(lambda: w.session is not None, timeout=30000)
    try:
        go_to(viewer, stack, (1, 3))
        click(w, stack, (1, 3), (15, 30))
        qtbot.waitUntil(lambda: w.preview is not None, timeout=30000)
        assert w.commit() == 1
        assert viewer.layers["SAM labels"].data.shape == (2, 6, 40, 56)

        w.channel_combo.setCurrentText("axis 0")  # axis 0 holds channels after all
        qtbot.waitUntil(lambda: w.session is not None and w.channel_axis == 0, timeout=30000)
        assert viewer.layers[w.labels_combo.currentText()].data.shape == (6, 40, 56)
        go_to(viewer, stack, (1, 3))
        click(w, stack, (1, 3), (15, 30))
        qtbot.waitUntil(lambda: w.preview is not None, timeout=30000)
        assert w.commit() == 1, w.status.text()
        labels = viewer.layers[w.labels_combo.currentText()]
        assert labels.data.shape == (6, 40, 56) and (labels.data[3] == 1).sum() == 300
    finally:
        w.release()


def test_removing_the_image_while_prefetching(
    make_napari_viewer, qtbot, tiny_checkpoint, volume, monkeypatch
):
    """The image layer goes while neighbouring slices are being encoded: no exception
    reaches Qt's event loop (pytest-qt fails the test on one), nothing more happens."""
    viewer = make_napari_viewer()
    image = viewer.add_image(volume, name="stack")
    w = tiny_widget(viewer, tiny_checkpoint, "stack", prefetch=True)
    w.load_model()
    qtbot.waitUntil(lambda: w.session is not None, timeout=30000)
    model = w.session.model
    real = model.encode
    encoded = []

    def slow_encode(x):
        time.sleep(0.4)
        out = real(x)
        encoded.append(1)
        return out

    monkeypatch.setattr(model, "encode", slow_encode)
    try:
        go_to(viewer, image, (2,))
        click(w, image, (2,), (15, 30))
        qtbot.waitUntil(lambda: w.session.cached((2,)) is not None, timeout=30000)
        qtbot.waitUntil(lambda: len(w._embedding_jobs) > 0, timeout=30000)  # prefetch runs
        viewer.layers.remove(image)
        qtbot.waitUntil(lambda: len(encoded) >= 2, timeout=30000)  # the prefetch ended
        qtbot.wait(300)
        assert w.session is None and "removed" in w.status.text()
        assert not any(ly.name in OWN for ly in viewer.layers)
    finally:
        w.release()


def test_adding_layers_never_disturbs_napari(make_napari_viewer, qtbot):
    """With the widget open and no model, adding layers that change the sliders must
    not make the widget add layers inside napari's insertion (no error notification,
    no exception in Qt's event loop)."""
    from napari.utils.notifications import NotificationSeverity, notification_manager

    viewer = make_napari_viewer(show=True)
    w = SamWidget(viewer)
    viewer.window.add_dock_widget(w)
    seen = []
    notification_manager.notification_ready.connect(seen.append)
    try:
        viewer.add_image(np.zeros((5, 32, 32), np.uint8), name="vol")
        viewer.add_image(np.zeros((3, 4, 32, 32), np.uint8), name="movie")
        viewer.add_labels(np.zeros((5, 32, 32), np.uint8), name="lab")
        viewer.dims.set_point(0, 2)
        qtbot.wait(100)
        errors = [n for n in seen if n.severity >= NotificationSeverity.WARNING]
        assert not errors, [str(n.message) for n in errors]
        assert [ly.name for ly in viewer.layers] == ["vol", "movie", "lab"]
        assert w.image_combo.currentText() == "vol"
    finally:
        notification_manager.notification_ready.disconnect(seen.append)
        w.release()


def test_dock_close_button_releases_the_widget(
    make_napari_viewer, qtbot, tiny_checkpoint, volume, slow_amg
):
    """The user closes the dock with its [x] while automatic segmentation runs: the
    job stops and writes nothing, another plugin's worker keeps running, the keys are
    unbound, the SAM layers go; a widget opened again starts clean."""
    from napari.qt.threading import create_worker

    viewer = make_napari_viewer()
    viewer.add_image(volume, name="stack")
    w = tiny_widget(viewer, tiny_checkpoint, "stack", dock=True)
    w.load_model()
    qtbot.waitUntil(lambda: w.session is not None, timeout=30000)
    points = w.points
    assert KEY_COMMIT in {str(k).lower() for k in points.keymap}
    labels = w.target_labels()

    stop_other = threading.Event()

    def other_plugin():
        while not stop_other.is_set():
            time.sleep(0.01)
            yield

    other = create_worker(other_plugin, _start_thread=True)
    try:
        ours = w.amg_panel.segment()
        qtbot.waitUntil(lambda: SlowAmg.last.steps > 0, timeout=30000)
        t0 = time.perf_counter()
        w.test_dock.title.close_button.click()  # the dock's [x]
        assert time.perf_counter() - t0 < 5  # bounded wait
        assert ours.abort_requested and not other.abort_requested and other.is_running
        assert KEY_COMMIT not in {str(k).lower() for k in points.keymap}
        assert not any(ly.name in OWN for ly in viewer.layers)
        qtbot.wait(2500)  # longer than the fake job would have run
        assert not np.asarray(labels.data).any()

        again = tiny_widget(viewer, tiny_checkpoint, "stack", dock=True)
        again.load_model()
        qtbot.waitUntil(lambda: again.session is not None, timeout=30000)
        assert sorted(ly.name for ly in viewer.layers if ly.name in OWN) == sorted(OWN)
        again.release()
    finally:
        stop_other.set()
        qtbot.waitUntil(lambda: not other.is_running, timeout=10000)
        w.release()


def test_first_load_keeps_a_chosen_labels_layer(
    make_napari_viewer, qtbot, tiny_checkpoint, volume, monkeypatch
):
    """A labels layer the user chose before loading (and that fits the image) stays the
    target; no extra "SAM labels" layer appears."""
    monkeypatch.setattr(SegmentationSession, "predict", fake_predict((10, 20, 25, 40)))
    viewer = make_napari_viewer()
    image = viewer.add_image(volume, name="stack")
    mine = viewer.add_labels(np.zeros((6, 40, 56), np.uint32), name="mine")
    w = tiny_widget(viewer, tiny_checkpoint, "stack")
    w.labels_combo.setCurrentText("mine")
    w.load_model()
    qtbot.waitUntil(lambda: w.session is not None, timeout=30000)
    try:
        assert w.labels_combo.currentText() == "mine" and "SAM labels" not in viewer.layers
        go_to(viewer, image, (3,))
        click(w, image, (3,), (15, 30))
        qtbot.waitUntil(lambda: w.preview is not None, timeout=30000)
        assert w.commit() == 1 and (mine.data[3] == 1).sum() == 300
    finally:
        w.release()
