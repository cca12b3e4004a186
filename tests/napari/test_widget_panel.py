"""The panel as a whole: it fits a laptop screen (scroll area, tabs, one overwrite
setting), reports to napari's status bar and notifications (not for every preview),
says "cancelled" after a cancel, and never replaces an embedding store made for
something else unless the user says so."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from qtpy.QtWidgets import QCheckBox, QPushButton
from test_widget import add_click, go_to_slice

from napari_sam._napari.binding import CANCEL, RAM_ONLY, REPLACE
from napari_sam._napari.widget import SamWidget
from napari_sam.engine.expected import MEASURED

from tiny import TINY, make_tiny

pytestmark = pytest.mark.gui


def test_panel_fits_a_laptop_screen(make_napari_viewer, qtbot):
    """≤ 600 px of height asked for; on a 1366 × 768 window every button of every tab
    can be scrolled into view; one "overwrite existing objects" box."""
    viewer = make_napari_viewer(show=True)
    viewer.add_image(np.zeros((4, 32, 32), np.uint8), name="img")
    w = SamWidget(viewer)
    viewer.window.add_dock_widget(w, name="Segment Anything")
    viewer.window._qt_window.resize(1366, 768)
    try:
        assert w.sizeHint().height() <= 600
        assert w.minimumSizeHint().height() <= 600
        assert len([b for b in w.findChildren(QCheckBox) if "overwrite" in b.text()]) == 1
        assert [w.tabs.tabText(i) for i in range(w.tabs.count())] == [
            "Model", "Interactive", "Propagate", "Automatic", "Export"]
        qtbot.waitUntil(lambda: w.isVisible(), timeout=10000)
        assert w.height() <= 768
        for tab in range(w.tabs.count()):
            w.tabs.setCurrentIndex(tab)
            page = w.tabs.widget(tab)
            buttons = [b for b in page.findChildren(QPushButton) if b.isVisibleTo(page)]
            assert buttons, w.tabs.tabText(tab)
            for b in buttons:
                w.scroll.ensureWidgetVisible(b)
                qtbot.wait(10)
                shown = b.visibleRegion().boundingRect()
                assert shown.size() == b.size(), (w.tabs.tabText(tab), b.text())
        # the job rows (each with its one Cancel) sit below the scroll area
        for panel in (w.propagate_panel, w.amg_panel):
            assert not w.scroll.isAncestorOf(panel.cancel_button)
        assert not w.scroll.isAncestorOf(w.cancel_button)
    finally:
        w.release()


def test_status_reaches_napari_and_cancel_is_reported(sam_widget, qtbot, monkeypatch):
    from napari.utils.notifications import notification_manager

    seen = []
    notification_manager.notification_ready.connect(seen.append)
    try:
        viewer, image = sam_widget.viewer, sam_widget.image_layer
        go_to_slice(viewer, image, 3)
        add_click(sam_widget, image, 3, 15, 30)
        qtbot.waitUntil(lambda: sam_widget.preview is not None, timeout=30000)
        assert viewer.status == sam_widget.status.text()  # napari's status bar too
        assert "preview" in viewer.status and not seen  # no notification per preview

        model = sam_widget.session.model
        real = model.encode

        def slow_encode(x):
            time.sleep(0.3)
            return real(x)

        monkeypatch.setattr(model, "encode", slow_encode)
        store = sam_widget.session.store
        missing = len(store.missing())
        sam_widget.precompute()
        qtbot.waitUntil(lambda: len(store.missing()) < missing, timeout=30000)
        sam_widget.cancel_button.click()
        qtbot.waitUntil(lambda: sam_widget._precompute_worker is None, timeout=30000)
        assert "precompute cancelled" in sam_widget.status.text()
        assert "cancelled" in viewer.status
        assert any("precompute cancelled" in str(n.message) for n in seen)
        assert sam_widget.session.store.missing() != []  # it really stopped early
    finally:
        notification_manager.notification_ready.disconnect(seen.append)


@pytest.fixture
def other_checkpoint(tmp_path):
    """A tiny model with other weights (seed 1)."""
    path = tmp_path / "other.pt"
    torch.save({"config": TINY.to_dict(), "model": make_tiny(1).sam.state_dict()}, path)
    return path


def test_store_made_for_another_model_is_kept_unless_replaced(
    make_napari_viewer, qtbot, tmp_path, tiny_checkpoint, other_checkpoint, volume, monkeypatch
):
    from napari_sam.store.files import read_attrs

    store = tmp_path / "emb.zarr"
    viewer = make_napari_viewer()
    viewer.add_image(volume, name="stack")
    w = SamWidget(viewer)
    w.checkpoint_edit.setText(str(tiny_checkpoint))
    w.precision_combo.setCurrentText("fp32")
    w.prefetch_check.setChecked(False)
    w.store_edit.setText(str(store))
    w.load_model()
    qtbot.waitUntil(lambda: w.session is not None, timeout=30000)
    w.session.embedding((3,))  # one slice stored
    made_for = read_attrs(store)["model"]
    asked, answer = [], {}

    def ask(path, differences):
        asked.append((path, differences))
        return answer["choice"]

    monkeypatch.setattr(w, "ask_store_mismatch", ask, raising=False)

    def load_other(choice):
        asked.clear()
        answer["choice"] = choice
        w.checkpoint_edit.setText(str(other_checkpoint))
        w.load_model()
        qtbot.waitUntil(lambda: bool(asked) or w.session is not None, timeout=30000)

    try:
        load_other(CANCEL)
        assert asked and asked[0][0] == str(store) and "weights" in asked[0][1].lower()
        assert w.session is None and "left unchanged" in w.status.text()
        assert read_attrs(store)["model"] == made_for  # intact

        load_other(RAM_ONLY)
        qtbot.waitUntil(lambda: w.session is not None, timeout=30000)
        assert w.session.store is None and read_attrs(store)["model"] == made_for

        load_other(REPLACE)
        qtbot.waitUntil(lambda: w.session is not None, timeout=30000)
        assert str(w.session.store.path) == str(store)
        assert read_attrs(store)["model"] != made_for  # replaced, as asked
        assert w.session.store.missing([(3,)]) == [(3,)]
    finally:
        w.release()


def test_default_store_is_found_again_for_the_same_data(
    make_napari_viewer, qtbot, tmp_path, tiny_checkpoint, volume, monkeypatch
):
    """No store path given: the default store is keyed by the data's content, so the
    same data loaded again (another layer object, another name) finds its store — one
    store in the cache, slices computed once — and other data gets its own; the store
    is held in use while its session lives (clean-up skips it)."""
    from napari_sam.store.cache_dir import in_use

    monkeypatch.setenv("NAPARI_SAM_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "cache" / "embeddings"
    viewer = make_napari_viewer()
    viewer.add_image(volume, name="first")
    w = SamWidget(viewer)
    w.checkpoint_edit.setText(str(tiny_checkpoint))
    w.precision_combo.setCurrentText("fp32")
    w.prefetch_check.setChecked(False)
    w.image_combo.setCurrentText("first")
    w.load_model()
    qtbot.waitUntil(lambda: w.session is not None, timeout=30000)
    try:
        first = w.session.store.path
        w.session.embedding((3,))
        assert in_use(first)
        viewer.add_image(volume.copy(), name="again")
        w.image_combo.setCurrentText("again")
        w.load_model()
        qtbot.waitUntil(lambda: w.session is not None and w.session.image is not volume)
        assert w.session.store.path == first and w.session.store.missing([(3,)]) == []
        viewer.add_image(volume[::-1].copy(), name="other")
        w.image_combo.setCurrentText("other")
        w.load_model()
        qtbot.waitUntil(lambda: w.session is not None and w.session.store.path != first)
        assert sorted(p.name for p in root.iterdir() if p.suffix == ".zarr") == sorted(
            [first.name, w.session.store.path.name]
        )
    finally:
        w.release()


def test_vit_t_is_suggested_for_a_vit_on_a_cpu_without_bf16(make_napari_viewer,
                                                           force_cpu_class):
    """No GPU and no native bf16: choosing vit_b shows the suggestion with the measured
    times per slice of vit_b and vit_t (the user's choice is kept); vit_t, the demo
    model, a GPU device or a bf16 CPU show nothing."""
    force_cpu_class("avx2")
    viewer = make_napari_viewer()
    w = SamWidget(viewer)
    w.device_combo.setCurrentText("cpu")
    w.model_combo.setCurrentText("vit_b")
    assert w.model_combo.currentText() == "vit_b"  # kept
    assert w.model_hint.isVisibleTo(w)
    text = w.model_hint.text()
    big, small = (MEASURED[("avx2", m)].seconds for m in ("vit_b", "vit_t"))
    assert "vit_t" in text and f"{big:.3g} s per slice" in text
    assert f"{small:.3g} s per slice" in text
    for other in ("vit_t", "demo"):
        w.model_combo.setCurrentText(other)
        assert not w.model_hint.isVisibleTo(w), other
    w.model_combo.setCurrentText("vit_h")  # not measured: suggested without times
    assert w.model_hint.isVisibleTo(w) and "s per slice" not in w.model_hint.text()
    force_cpu_class("amx")
    w.model_combo.setCurrentText("vit_b")
    assert not w.model_hint.isVisibleTo(w)
    w.release()
