"""The export acceptance (issue #19): through the real widget with the packaged demo
model in fp32 — a click, a box, a click corrected by a negative click, propagation of a
committed object and of an uncommitted preview, automatic masks on a slice (over
existing objects), a manual paint, and a commit that is undone — exported as OME-Zarr
and OME-TIFF; ``napari-sam replay PROVENANCE IMAGE --out LABELS`` re-creates the
exported labels exactly, ids included, from either export."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from test_widget_demo import biggest, click, demo_widget, wait_preview  # noqa: F401

from napari_sam.cli import main
from napari_sam.export import PROVENANCE_KEY, Provenance, read_ome_zarr
from napari_sam.export.tiff import read_tiff
from napari_sam.synthetic import nuclei_3d

pytestmark = pytest.mark.gui

SCALE, TRANSLATE = (2.5, 0.4, 0.4), (5.0, -10.0, 20.0)


def go_to(viewer, layer, z: int) -> None:
    viewer.dims.set_point(0, layer.data_to_world((z, 0, 0))[0])


def commit_click(w, qtbot, layer, z, rc, negative=None):
    click(w, layer, (z,), rc)
    p = wait_preview(qtbot, w)
    if negative is not None:  # a correction click: refines the preview's logits
        click(w, layer, (z,), negative, positive=False)
        p = wait_preview(qtbot, w, p.request)
        assert len(p.chain) == 2
    return w.commit()


def wait_job(qtbot, panel) -> None:
    qtbot.waitUntil(lambda: panel.worker is None, timeout=300000)


def test_widget_actions_exported_and_replayed_identically(demo_widget, qtbot, tmp_path):  # noqa: F811
    image, truth = nuclei_3d((6, 96, 96), seed=4243, z_step=2.5)
    viewer, layer, w = demo_widget(image, {"scale": SCALE, "translate": TRANSLATE}, (3,))
    labels = viewer.layers["SAM labels"]
    objs = [int(o) for o in np.unique(truth[3]) if o]
    a, _ = biggest(truth[3])
    others = [o for o in objs if o != a]
    b, c, d = others[:3]

    # 1. a click
    assert commit_click(w, qtbot, layer, 3, biggest(np.where(truth[3] == a, a, 0))[1]) == 1
    # 2. a box
    rows, cols = np.nonzero(truth[3] == b)
    r0, c0, r1, c1 = rows.min() - 1, cols.min() - 1, rows.max() + 1, cols.max() + 1
    verts = [layer.data_to_world((3, r, q)) for r, q in [(r0, c0), (r0, c1), (r1, c1), (r1, c0)]]
    w.boxes.add_rectangles(np.array([w.boxes.world_to_data(v) for v in verts]))
    wait_preview(qtbot, w)
    assert w.commit() == 2
    # 3. a click corrected by a negative click (on the background near it)
    rc = biggest(np.where(truth[3] == c, c, 0))[1]
    bg = np.argwhere(truth[3] == 0)
    near = bg[np.argmin(np.abs(bg - rc).sum(axis=1))]
    assert commit_click(w, qtbot, layer, 3, rc, negative=tuple(near)) == 3
    # 4. a commit that is undone through the widget: never replayed
    assert commit_click(w, qtbot, layer, 3, biggest(np.where(truth[3] == d, d, 0))[1]) == 4
    w.undo_commit()
    assert not (labels.data == 4).any()

    # 5. propagate the selected committed object 1; 6. propagate a preview (object d)
    labels.selected_label = 1
    w.propagate_panel.propagate()
    wait_job(qtbot, w.propagate_panel)
    assert (labels.data == 1).any(axis=(1, 2)).sum() > 1
    click(w, layer, (3,), biggest(np.where(truth[3] == d, d, 0))[1])
    wait_preview(qtbot, w)
    w.propagate_panel.propagate()
    wait_job(qtbot, w.propagate_panel)
    assert (labels.data == 4).any()

    # 7. automatic masks on slice 3 (existing objects kept, new ones above them)
    w.amg_panel.segment()
    wait_job(qtbot, w.amg_panel)
    assert labels.data[3].max() > 4
    # 8. a manual paint with napari's tool (an edit replay re-paints)
    labels.brush_size = 5
    labels.paint((2, 10, 10), 40)

    kinds = [x["kind"] for x in labels.metadata[PROVENANCE_KEY]["actions"]]
    assert kinds == ["click", "box", "click", "propagated", "propagated", "automatic",
                     "edited"]

    # export both ways through the Export tab
    exported = np.array(labels.data)
    panel = w.export_panel
    for name in ("cells.ome.zarr", "tif_cells.tif"):  # distinct object tables
        panel.export(tmp_path / name)
        wait_job(qtbot, panel)
        assert "exported" in w.status.text(), w.status.text()
    np.testing.assert_array_equal(np.asarray(read_ome_zarr(tmp_path / "cells.ome.zarr").data),
                                  exported)
    # the object table: automatic objects carry the generator's scores, clicks their IoU
    table = labels.features
    auto = table[table["source"] == "automatic"]
    assert len(auto) and auto["predicted_iou"].notna().all()
    assert auto["stability_score"].between(0, 1).all()
    assert table[table["source"] == "click"]["predicted_iou"].notna().all()

    # replay from each export (in-process CLI) → identical labels, ids included
    tifffile.imwrite(tmp_path / "image.tif", image)
    for source, out in (("cells.ome.zarr", "replayed.tif"),
                        ("tif_cells.napari_sam.json", "replayed2.ome.zarr")):
        rc = main(["replay", str(tmp_path / source), str(tmp_path / "image.tif"),
                   "--out", str(tmp_path / out), "--no-progress"])
        assert rc == 0
    data, cal, _ = read_tiff(tmp_path / "replayed.tif")
    np.testing.assert_array_equal(np.asarray(data), exported)
    np.testing.assert_allclose(cal.scale, SCALE)  # calibrated like the export
    replayed = read_ome_zarr(tmp_path / "replayed2.ome.zarr")
    np.testing.assert_array_equal(np.asarray(replayed.data), exported)
    prov = Provenance.load(tmp_path / "cells.ome.zarr")
    assert prov.model["precision"] == "fp32" and prov.model["name"] == "demo"
