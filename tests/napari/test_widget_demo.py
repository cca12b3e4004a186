"""Semantic GUI tests with the shipped demo model: a click in a nucleus gives that
nucleus on that slice, for 2D, 3D (z > 0), a scaled + translated layer, uint16, RGB and
4D TZYX images; boxes; a negative click; slice switching."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_sam._napari.constants import POSITIVE_FEATURE
from napari_sam._napari.widget import SamWidget
from napari_sam.engine.metrics import interior_point, iou
from napari_sam.synthetic import nuclei_2d, nuclei_3d

pytestmark = pytest.mark.gui


def biggest(truth2d: np.ndarray) -> tuple[int, tuple[int, int]]:
    """The largest nucleus of the slice that neither touches the border nor another
    nucleus (an unambiguous click), and its interior-most pixel (row, col)."""
    ids, counts = np.unique(truth2d[truth2d > 0], return_counts=True)
    best, best_area = int(ids[np.argmax(counts)]), 0
    for i, area in zip(ids, counts, strict=True):
        m = truth2d == i
        ring = ndi.binary_dilation(m, iterations=2) & ~m
        edge = m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any()
        if not edge and not (truth2d[ring] > 0).any() and area > best_area:
            best, best_area = int(i), int(area)
    r, c = interior_point(truth2d == best)
    return best, (int(r), int(c))


def cases():
    img2, lab2 = nuclei_2d((160, 160), seed=901)
    img3, lab3 = nuclei_3d((12, 96, 96), seed=902, z_step=2.0)
    u16, lab16 = nuclei_2d((160, 160), seed=903, dtype="uint16")
    rgb = np.repeat(img2[..., None], 3, axis=-1)
    vol4 = np.stack([img3, np.roll(img3, 5, axis=1)])
    lab4 = np.stack([lab3, np.roll(lab3, 5, axis=1)])
    return {
        "2d": (img2, lab2, {}, ()),
        "3d_z5": (img3, lab3, {}, (5,)),
        "scaled_translated": (
            img3,
            lab3,
            {"scale": (2.0, 0.5, 0.5), "translate": (10, -20, 5)},
            (6,),
        ),
        "uint16": (u16, lab16, {}, ()),
        "rgb": (rgb, lab2, {"rgb": True}, ()),
        "tzyx_t1_z4": (vol4, lab4, {}, (1, 4)),
    }


@pytest.fixture
def demo_widget(make_napari_viewer, qtbot):
    made = []

    def make(image, layer_kwargs, index):
        viewer = make_napari_viewer()
        layer = viewer.add_image(image, name="img", **layer_kwargs)
        w = SamWidget(viewer)
        w.image_combo.setCurrentText("img")
        w.model_combo.setCurrentText("demo")
        w.precision_combo.setCurrentText("fp32")
        w.ram_only.setChecked(True)
        w.prefetch_check.setChecked(False)
        w.load_model()
        qtbot.waitUntil(lambda: w.session is not None, timeout=60000)
        if index:
            world = layer.data_to_world((*index, 0, 0))
            for axis in range(len(index)):
                viewer.dims.set_point(axis, world[axis])
        made.append(w)
        return viewer, layer, w

    yield make
    for w in made:
        w.release()


def click(w, layer, index, rc, positive=True):
    w.points.feature_defaults = {POSITIVE_FEATURE: positive}
    world = layer.data_to_world((*index, *rc))
    w.points.add(w.points.world_to_data(world))


def wait_preview(qtbot, w, min_request=0):
    qtbot.waitUntil(
        lambda: w.preview is not None and w.preview.request > min_request, timeout=60000
    )
    return w.preview


@pytest.mark.parametrize("case", list(cases()))
def test_click_gives_the_nucleus_on_that_slice(demo_widget, qtbot, case):
    image, truth, kwargs, index = cases()[case]
    viewer, layer, w = demo_widget(image, kwargs, index)
    t2 = truth[index] if index else truth
    obj, rc = biggest(t2)
    click(w, layer, index, rc)
    p = wait_preview(qtbot, w)
    assert p.index == index
    assert iou(p.mask, t2 == obj) >= 0.8, case
    label_id = w.commit()
    labels = viewer.layers["SAM labels"].data
    assert label_id == 1 and (labels > 0).sum() == (labels[index] > 0).sum()  # that slice only
    viewer.layers["SAM labels"].undo()
    assert not viewer.layers["SAM labels"].data.any()
    viewer.layers["SAM labels"].redo()
    assert iou(viewer.layers["SAM labels"].data[index] == 1, t2 == obj) >= 0.8


def test_box_delete_and_slice_switch(demo_widget, qtbot):
    image, truth, kwargs, _ = cases()["3d_z5"]
    viewer, layer, w = demo_widget(image, kwargs, (6,))
    obj, _ = biggest(truth[6])
    rows, cols = np.nonzero(truth[6] == obj)
    corners = [(rows.min() - 1, cols.min() - 1), (rows.max() + 1, cols.max() + 1)]
    (r0, c0), (r1, c1) = corners
    verts = [layer.data_to_world((6, r, c)) for r, c in [(r0, c0), (r0, c1), (r1, c1), (r1, c0)]]
    w.boxes.add_rectangles(np.array([w.boxes.world_to_data(v) for v in verts]))
    p = wait_preview(qtbot, w)
    assert iou(p.mask, truth[6] == obj) >= 0.8  # a box gives the object in it

    # deleting every prompt clears the preview
    w.boxes.data = []
    w.points.data = np.zeros((0, 3))
    qtbot.waitUntil(lambda: w.preview is None, timeout=30000)

    # another slice gets its own embedding, never slice 6's
    obj9, rc9 = biggest(truth[8])
    viewer.dims.set_point(0, layer.data_to_world((8, 0, 0))[0])
    click(w, layer, (8,), rc9)
    p3 = wait_preview(qtbot, w)
    assert p3.index == (8,)
    assert w.session.cached((8,)) is not w.session.cached((6,))
    assert iou(p3.mask, truth[8] == obj9) >= 0.8


def touching_pair(truth: np.ndarray) -> tuple[int, int]:
    """Two nuclei that touch, both away from the border (largest such pair)."""
    best, best_area = None, 0
    for a in np.unique(truth[truth > 0]):
        ma = truth == a
        ring = ndi.binary_dilation(ma, iterations=1) & ~ma
        for b in np.unique(truth[ring]):
            if b == 0 or b == a:
                continue
            both = ma | (truth == b)
            rows, cols = np.nonzero(both)
            if rows.min() == 0 or cols.min() == 0 or rows.max() == truth.shape[0] - 1:
                continue
            if cols.max() == truth.shape[1] - 1:
                continue
            if both.sum() > best_area:
                best, best_area = (int(a), int(b)), int(both.sum())
    assert best is not None
    return best


def test_negative_click_removes_a_leak(demo_widget, qtbot, monkeypatch):
    """A box over two touching nuclei takes both; a negative click in one refines the
    mask: the widget sends box + negative click + the previous low-res logits, and the
    leak into the clicked nucleus shrinks."""
    from napari_sam.engine.decode.predictor import Predictor
    from napari_sam.session import SegmentationSession

    calls = []
    real = SegmentationSession.predict

    def spy(self, index, emb, points, labels, box, request, **kw):
        calls.append((emb, np.array(points), np.array(labels), box, kw.get("mask_input")))
        return real(self, index, emb, points, labels, box, request, **kw)

    monkeypatch.setattr(SegmentationSession, "predict", spy)
    image, truth, kwargs, _ = cases()["2d"]
    _viewer, layer, w = demo_widget(image, kwargs, ())
    a, b = touching_pair(truth)
    rows, cols = np.nonzero((truth == a) | (truth == b))
    r0, c0, r1, c1 = rows.min(), cols.min(), rows.max(), cols.max()
    verts = [layer.data_to_world((r, c)) for r, c in [(r0, c0), (r0, c1), (r1, c1), (r1, c0)]]
    w.boxes.add_rectangles(np.array([w.boxes.world_to_data(v) for v in verts]))
    p = wait_preview(qtbot, w)
    in_b = (p.mask & (truth == b)).sum() / (truth == b).sum()
    assert in_b > 0.5  # the box "leaks" into the second nucleus
    _, rc_b = biggest(np.where(truth == b, b, 0))
    click(w, layer, (), rc_b, positive=False)
    p2 = wait_preview(qtbot, w, p.request)
    # what SAM was asked: the box, the negative click, the previous logits
    emb, pts, labs, box, mask_input = calls[-1]
    np.testing.assert_allclose(pts, [rc_b], atol=1e-6)
    assert labs.tolist() == [0] and box is not None
    np.testing.assert_array_equal(mask_input, p.logits)
    ref = Predictor(w.session.model, w.session.normalization)
    ref.set_embedding(emb)
    r = ref.predict(box=box, points=pts, labels=labs, mask_input=mask_input, multimask=False)
    np.testing.assert_array_equal(p2.mask, r.masks[0])
    # the small demo model removes part of the leak (SAM removes it whole); measured
    # on this pair 0.87 → 0.73 of the second nucleus, and over 55 touching pairs
    # (seeds 901–912) a median 0.83 of the leak stays — the clicked pixel itself goes
    # in a third of them, so it is not asserted
    assert (p2.mask & (truth == b)).sum() / (truth == b).sum() < 0.9 * in_b
    # the other nucleus stays (measured 0.76 of it)
    assert (p2.mask & (truth == a)).sum() / (truth == a).sum() > 0.5
