"""The widget on slices larger than the model input (issue 18 item 3 / 6): tiles with no
setting to touch, a tile-sized preview, bounding-box commits, the "SAM tiles" outlines,
neighbours embedded after a click (in view first), automatic masks on the tiles in view
and propagation across tile borders — demo model (256-px input: 192-px tiles + 32-px
halo), driven as a user would."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_sam._napari import commit as commit_mod
from napari_sam._napari.constants import TILES_LAYER
from napari_sam._napari.controls import TILING_AUTO, TILING_OFF
from napari_sam._napari.tiles import visible_region
from napari_sam._napari.widget import SamWidget
from napari_sam.engine.metrics import interior_point, iou, object_f1
from napari_sam.synthetic import nuclei_2d, nuclei_3d

pytestmark = pytest.mark.gui

SCALE, TRANSLATE = (0.5, 0.25), (7.0, -3.0)


def across_border(truth: np.ndarray, col: int = 192) -> tuple[int, tuple[int, int]]:
    """A nucleus that crosses the inner tile border at ``col``, touches no other nucleus
    and lies away from the plane's border; and an interior pixel of it (row, col)."""
    for i, sl in enumerate(ndi.find_objects(truth), 1):
        if sl is None or not (sl[1].start < col - 3 and sl[1].stop > col + 3):
            continue
        m = truth == i
        ring = ndi.binary_dilation(m, iterations=2) & ~m
        if sl[0].start > 10 and not (truth[ring] > 0).any() and m.sum() > 150:
            r, c = interior_point(m)
            return i, (int(r), int(c))
    raise AssertionError("no isolated nucleus across the border")


@pytest.fixture
def tiled_widget(make_napari_viewer, qtbot):
    made = []

    def make(image, prefetch=False, **layer_kwargs):
        viewer = make_napari_viewer()
        layer = viewer.add_image(image, name="big", **layer_kwargs)
        w = SamWidget(viewer)
        w.image_combo.setCurrentText("big")
        w.model_combo.setCurrentText("demo")
        w.precision_combo.setCurrentText("fp32")
        w.ram_only.setChecked(True)
        w.prefetch_check.setChecked(prefetch)
        w.load_model()
        qtbot.waitUntil(lambda: w.session is not None, timeout=60000)
        made.append(w)
        return viewer, layer, w

    yield make
    for w in made:
        w.release()


def click(w, layer, rc, qtbot, z=()) -> None:
    world = layer.data_to_world((*z, *rc))
    w.points.add(w.points.world_to_data(world))
    qtbot.waitUntil(lambda: w.preview is not None, timeout=60000)


def test_click_across_a_tile_border_embeds_one_tile_and_commits_the_whole_nucleus(
    tiled_widget, qtbot, monkeypatch
):
    image, truth = nuclei_2d((768, 768), seed=11, dtype="uint16", radius=(10.0, 18.0))
    viewer, layer, w = tiled_widget(image, scale=SCALE, translate=TRANSLATE)
    s = w.session
    assert s.grid is not None and s.grid.shape == (4, 4)  # auto: no setting touched
    assert "tiled: 4 × 4 tiles" in w.status.text()
    assert w.layers.preview.data.shape == (256, 256)  # one tile's window, not the plane
    assert TILES_LAYER in viewer.layers
    nucleus, rc = across_border(truth)
    click(w, layer, rc, qtbot)
    p = w.preview
    assert s.embeddings.computed == 1  # only the tile under the click
    assert p.tile is not None and p.local.shape == (256, 256)
    r0, c0 = p.origin
    # the preview layer sits on that window, in world coordinates
    np.testing.assert_allclose(
        w.layers.preview.translate, np.array(TRANSLATE) + np.array(SCALE) * (r0, c0)
    )
    assert iou(p.mask, truth == nucleus) > 0.8  # whole, although cut by the inner border
    # the tile's outline is drawn (ready: its embedding is in RAM)
    tiles = viewer.layers[TILES_LAYER]
    assert len(tiles.data) == 1
    i0, j0, i1, j1 = s.grid.inner(p.tile)
    np.testing.assert_allclose(tiles.data[0].min(0), [i0 - 0.5, j0 - 0.5])
    np.testing.assert_allclose(tiles.data[0].max(0), [i1 - 0.5, j1 - 0.5])
    # the commit reads only the labels inside the mask's bounding box
    seen = []
    real = commit_mod.commit_pixels
    monkeypatch.setattr(
        commit_mod, "commit_pixels", lambda cur, m, o: seen.append(cur.shape) or real(cur, m, o)
    )
    label_id = w.commit()
    labels = w.chosen_labels()
    b = p.bbox()
    assert seen == [(b[2] - b[0], b[3] - b[1])]
    assert label_id == 1 and iou(labels.data == 1, truth == nucleus) > 0.8
    np.testing.assert_array_equal(labels.data == 1, p.mask)
    labels.undo()
    assert not labels.data.any()


def test_tiles_can_be_switched_off_and_on_again(tiled_widget, qtbot):
    image, _truth = nuclei_2d((600, 520), seed=17, dtype="uint16")
    viewer, _layer, w = tiled_widget(image)
    assert w.session.grid is not None and w.layers.preview.data.shape == (256, 256)
    w.tiling_combo.setCurrentText(TILING_OFF)
    qtbot.waitUntil(lambda: w.session is not None and w.session.grid is None, timeout=60000)
    assert w.layers.preview.data.shape == (600, 520) and TILES_LAYER not in viewer.layers
    w.tiling_combo.setCurrentText(TILING_AUTO)
    qtbot.waitUntil(lambda: w.session is not None and w.session.grid is not None, timeout=60000)
    assert w.layers.preview.data.shape == (256, 256) and TILES_LAYER in viewer.layers


def test_neighbours_are_embedded_after_a_click_tiles_in_view_first(tiled_widget, qtbot):
    image, _truth = nuclei_2d((768, 768), seed=12, dtype="uint16")
    viewer, layer, w = tiled_widget(image, prefetch=True)
    s = w.session
    w.tiles_in_view = lambda: [(3, 3), (3, 2)]  # the view, far from the click
    asked: list = []
    prefetch = s.embeddings.prefetch
    s.embeddings.prefetch = lambda keys: (asked.extend(keys), prefetch(keys))[1]
    click(w, layer, (40, 40), qtbot)  # tile (0, 0)
    qtbot.waitUntil(lambda: s.embeddings.computed == 16, timeout=60000)  # 16 = 32 // 2
    assert asked[:3] == [(0, 0), (3, 2), (3, 3)]  # the click's tile, then the view
    assert asked[3:6] == [(0, 1), (1, 0), (1, 1)]  # then the nearest ring
    assert len(asked) == 16
    qtbot.waitUntil(lambda: len(viewer.layers[TILES_LAYER].data) == 16, timeout=10000)


def test_a_click_beyond_a_tile_region_says_what_to_do(tiled_widget, qtbot):
    image, _truth = nuclei_2d((768, 768), seed=13, dtype="uint16")
    _viewer, _layer, w = tiled_widget(image)
    w.boxes.add_rectangles(np.array([[10.0, 10.0], [700.0, 700.0]]))
    qtbot.waitUntil(lambda: "larger than any tile" in w.status.text(), timeout=10000)
    assert w.preview is None and w.session.embeddings.computed == 0


def test_automatic_masks_segment_the_tiles_in_view(tiled_widget, qtbot):
    image, truth = nuclei_2d((576, 576), seed=14, dtype="uint16", radius=(9.0, 16.0))
    _viewer, _layer, w = tiled_widget(image)
    grid = w.session.grid
    w.tiles_in_view = lambda: [(0, 0), (0, 1)]
    p = w.amg_panel
    p.apply_preset("demo model (tuned)")
    assert p.segment() is not None
    qtbot.waitUntil(lambda: p.worker is None, timeout=120000)
    labels = w.chosen_labels().data
    r1 = grid.outer((0, 1))[2]
    c1 = grid.outer((0, 1))[3]
    assert labels.any() and not labels[r1:].any() and not labels[:, c1:].any()
    inner = (slice(0, grid.tile[0]), slice(0, 2 * grid.tile[1]))
    ids = np.unique(labels[inner])
    assert len(ids) > 5
    whole = np.isin(truth, np.unique(truth[inner])[1:])
    tp, n_pred, n_true = object_f1(labels * whole, truth * whole)
    assert 2 * tp / (n_pred + n_true) > 0.75
    w.tiles_in_view = lambda: [(0, 0)] * 65  # as many as a zoomed-out 20000² plane shows
    assert p.segment() is None and "zoom in" in w.status.text()


def test_propagation_follows_an_object_across_tiles(tiled_widget, qtbot):
    vol, truth = nuclei_3d((4, 512, 512), seed=15, z_step=1.0)
    _viewer, layer, w = tiled_widget(vol)
    assert w.session.grid is not None
    z0 = 1
    ids, counts = np.unique(truth[z0][truth[z0] > 0], return_counts=True)
    target = int(ids[np.argmax(counts)])
    rc = interior_point(truth[z0] == target)
    layer_z = layer.data_to_world((z0, 0, 0))[0]
    _viewer.dims.set_point(0, layer_z)
    click(w, layer, tuple(int(v) for v in rc), qtbot, z=(z0,))
    assert w.propagate_panel.propagate() is not None
    qtbot.waitUntil(lambda: w.propagate_panel.worker is None, timeout=120000)
    labels = w.chosen_labels().data
    for z in range(4):
        if (truth[z] == target).sum() > 50:
            assert iou(labels[z] > 0, truth[z] == target) > 0.6, z


def test_visible_region_is_in_full_resolution_pixels():
    plain = SimpleNamespace(
        corner_pixels=np.array([[3, 10.2, 20.7], [3, 99.5, 300.0]]),
        multiscale=False,
        data=np.zeros((5, 200, 250)),
        ndim=3,
    )
    assert visible_region(plain) == (10, 20, 101, 250)
    pyramid = SimpleNamespace(
        corner_pixels=np.array([[0, 0], [50, 60]]),
        multiscale=True,
        data_level=1,
        downsample_factors=np.array([[1.0, 1.0], [4.0, 4.0]]),
        data=np.zeros((400, 400)),
        ndim=2,
    )
    assert visible_region(pyramid) == (0, 0, 204, 244)


def test_tiled_actions_are_recorded_and_replayed_identically(tiled_widget, qtbot):
    from napari_sam.export import PROVENANCE_KEY, Provenance
    from napari_sam.export.replay import replay

    image, truth = nuclei_2d((768, 768), seed=16, dtype="uint16", radius=(10.0, 18.0))
    _viewer, layer, w = tiled_widget(image, scale=SCALE, translate=TRANSLATE)
    a, rc = across_border(truth)
    click(w, layer, rc, qtbot)
    assert w.commit() == 1
    # a click refined by a negative click on the background next to another nucleus
    others = [i for i in np.unique(truth) if i and i != a]
    b = others[len(others) // 2]
    rc_b = tuple(int(v) for v in interior_point(truth == b))
    click(w, layer, rc_b, qtbot)
    first = w.preview
    bg = np.argwhere(truth == 0)
    near = bg[np.argmin(np.abs(bg - rc_b).sum(axis=1))]
    w.points.feature_defaults = {"positive": False}
    w.points.add(w.points.world_to_data(layer.data_to_world(tuple(near))))
    qtbot.waitUntil(lambda: w.preview is not None and w.preview.request > first.request)
    assert len(w.preview.chain) == 2 and w.preview.tile == first.tile
    assert w.commit() == 2
    # automatic masks on the tiles in view: recorded as an edit
    w.tiles_in_view = lambda: [(3, 3)]
    w.amg_panel.apply_preset("demo model (tuned)")
    w.amg_panel.segment()
    qtbot.waitUntil(lambda: w.amg_panel.worker is None, timeout=120000)
    labels = w.chosen_labels()
    doc = labels.metadata[PROVENANCE_KEY]
    assert doc["tiling"] == w.session.grid.to_dict()
    kinds = [x["kind"] for x in doc["actions"]]
    assert kinds[:2] == ["click", "click"] and set(kinds[2:]) == {"edited"}  # voxels by id
    assert [x["tile"] for x in doc["actions"][:2]] == [list(w.session.grid.tile_at(*rc)),
                                                       list(first.tile)]  # fmt: skip
    result = replay(Provenance.from_dict(doc), image, w.session.model)
    assert not result.mismatches
    np.testing.assert_array_equal(result.labels, labels.data)
