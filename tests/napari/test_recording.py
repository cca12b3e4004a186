"""Provenance recorded by the widget (tiny model): a commit is a prompt action with its
exact prompts, napari's paint / fill / erase tools are ``edited`` actions holding the
changed voxels (and mark the objects they touched), undo / redo through the widget and
napari's own undo are followed (an undone action is not in the document, a redone one
is, a new action drops the undone ones), and the export carries the document."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from test_widget import add_click, go_to_slice

from napari_sam.export import PROVENANCE_KEY, Provenance
from napari_sam.export.provenance import rle_decode
from napari_sam.session import SegmentationSession

pytestmark = pytest.mark.gui


def rect_predict(box):
    """The real prediction (its prompts chain) with a fixed rectangle as its mask."""
    real = SegmentationSession.predict

    def predict(self, *args, **kwargs):
        p = real(self, *args, **kwargs)
        mask = np.zeros_like(p.local)
        mask[box[0] : box[2], box[1] : box[3]] = True
        return dataclasses.replace(p, local=mask)

    return predict


def commit_at(widget, qtbot, monkeypatch, box, z=3):
    image = widget.image_layer
    go_to_slice(widget.viewer, image, z)
    monkeypatch.setattr(SegmentationSession, "predict", rect_predict(box))
    add_click(widget, image, z, box[0] + 2.25, box[1] + 3.5)
    qtbot.waitUntil(lambda: widget.preview is not None, timeout=30000)
    return widget.commit()


def doc(layer) -> Provenance:
    return Provenance.from_dict(layer.metadata[PROVENANCE_KEY])


def test_commits_edits_and_undo_redo_are_recorded(sam_widget, qtbot, monkeypatch, tmp_path):
    w = sam_widget
    assert commit_at(w, qtbot, monkeypatch, (10, 20, 25, 40)) == 1
    labels = w.viewer.layers["SAM labels"]
    (a,) = doc(labels).actions
    assert a["kind"] == "click" and a["index"] == [3] and a["ids"] == [1]
    assert a["rounds"] == [{"points": [[12.25, 23.5]], "labels": [1], "box": None}]
    assert doc(labels).model["weights_hash"] == w.session.model.weights_hash

    # napari's paint tool (one history item), then erase and fill over object 1
    before = np.array(labels.data)
    labels.brush_size = 3
    labels.paint((3, 30, 45), 5)
    labels.paint((3, 12, 22), 0)
    labels.fill((3, 20, 30), 9)
    acts = doc(labels).actions
    assert [x["kind"] for x in acts] == ["click", "edited", "edited", "edited"]
    assert [x["ids"] for x in acts[1:]] == [[5], [1], [1, 9]]
    # the recorded voxels re-create the edits exactly
    redo = before.copy()
    for x in acts[1:]:
        e = x["edit"]
        region = tuple(slice(o, o + s) for o, s in zip(e["origin"], e["shape"], strict=True))
        redo[region][rle_decode(e["rle"], e["shape"])] = e["value"]
    np.testing.assert_array_equal(redo, labels.data)
    assert doc(labels).objects()[1]["edited"] is True

    # undo / redo through the widget; napari's own undo of the (visible) layer
    w.undo_commit()
    w.undo_commit()
    assert [x["kind"] for x in doc(labels).actions] == ["click", "edited"]
    w.redo_commit()
    assert [x["ids"] for x in doc(labels).actions] == [[1], [5], [1]]
    labels.undo()  # napari's Ctrl+Z on the labels layer
    assert len(doc(labels).actions) == 2
    # a new action after an undo: the undone steps are gone for good
    assert commit_at(w, qtbot, monkeypatch, (0, 0, 6, 6), z=1) is not None
    acts = doc(labels).actions
    assert [x["kind"] for x in acts] == ["click", "edited", "click"]
    w.redo_commit()  # nothing to redo
    assert len(doc(labels).actions) == 3

    # the export carries the document of the labels as they are
    w.export_panel.export(tmp_path / "cells.tif")
    qtbot.waitUntil(lambda: w.export_panel.worker is None, timeout=60000)
    assert Provenance.load(tmp_path / "cells.napari_sam.json").actions == acts


def test_a_write_with_another_model_is_recorded_as_an_edit(sam_widget, qtbot, monkeypatch):
    w = sam_widget
    commit_at(w, qtbot, monkeypatch, (10, 20, 25, 40))
    labels = w.viewer.layers["SAM labels"]
    log = w.recorder.log(labels)
    log.header.model["weights_hash"] = "sha256:other"  # as if made with another model
    commit_at(w, qtbot, monkeypatch, (0, 0, 6, 6), z=1)
    assert [x["kind"] for x in doc(labels).actions] == ["click", "edited"]
    assert doc(labels).actions[1]["ids"] == [2]
