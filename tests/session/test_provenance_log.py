"""ProvenanceLog (Qt-free): actions announced before a write are recorded as they are,
unannounced history items as edits with their voxels; undo / redo by history length
(an undone action is not in the document, a redone one is; a new item drops the undone
ones); a bounded history makes old steps permanent; another model is not "the same"."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from napari_sam.engine.image import Normalization
from napari_sam.export.provenance import Provenance, rle_decode
from napari_sam.session.preview import Preview, exact_round
from napari_sam.session.provenance import Edit, ProvenanceLog, automatic, prompted, propagated


def _session(weights="sha256:aa", shape=(4, 30, 40)):
    model = SimpleNamespace(name="demo", weights_hash=weights, exact=True, precision="fp32")
    return SimpleNamespace(model=model, normalization=Normalization(), image=np.zeros(shape))


def _preview(index=(1,)):
    chain = (
        exact_round(np.array([[5.25, 7.5]]), np.array([1]), None),
        exact_round(np.array([[5.25, 7.5], [9.0, 3.125]]), np.array([1, 0]), None),
    )
    return Preview(index, np.ones((30, 40), bool), 0.875, 3, chain=chain)


def _edit():
    mask = np.zeros((1, 2, 3), bool)
    mask[0, 1, 1:] = True
    return Edit((2, 4, 5), mask, 0, (3,))


def test_announced_actions_and_edits_are_recorded_in_order():
    log = ProvenanceLog.start(_session())
    with log.expect(prompted(_preview(), overwrite=False)):
        log.on_item([1], lambda: [])
    with log.expect(automatic((2,), {"points_per_side": 8}, True)):
        log.on_item([2, 3, 0], lambda: [])
    with log.expect(propagated((), [1, 4], {"mode": "mask"}, (1, _preview()))):
        log.on_item([1, 4], lambda: [])
    log.on_item([], lambda: [_edit()])  # not announced: an edit
    doc = log.document()
    prov = Provenance.from_dict(doc)  # a valid document
    kinds = [a["kind"] for a in prov.actions]
    assert kinds == ["click", "automatic", "propagated", "edited"]
    first = prov.actions[0]
    assert first["index"] == [1] and first["ids"] == [1]
    # both rounds, exact (a refinement: round 2 gets round 1's logits at replay)
    assert first["rounds"] == [
        {"points": [[5.25, 7.5]], "labels": [1], "box": None},
        {"points": [[5.25, 7.5], [9.0, 3.125]], "labels": [1, 0], "box": None},
    ]
    assert first["scores"]["1"]["predicted_iou"] == 0.875
    assert prov.actions[1]["ids"] == [2, 3] and prov.actions[1]["overwrite"] is True
    assert prov.actions[2]["objects"] == [1, 4] and prov.actions[2]["seed"]["z"] == 1
    edit = prov.actions[3]["edit"]
    assert edit["origin"] == [2, 4, 5] and edit["value"] == 0
    np.testing.assert_array_equal(rle_decode(edit["rle"], edit["shape"]), _edit().mask)
    assert prov.objects()[3]["edited"] is True and prov.objects()[1]["source"] == "click"
    assert doc["model"]["weights_hash"] == "sha256:aa" and doc["image"]["shape"] == [4, 30, 40]


def test_undo_redo_follow_the_history_length():
    log = ProvenanceLog.start(_session())
    for ids in ([1], [2], [3]):
        with log.expect(automatic((0,), {}, False)):
            log.on_item(ids, lambda: [])
    ids = lambda: [a["ids"] for a in log.actions()]  # noqa: E731
    assert log.sync(1) and ids() == [[1]]  # two undos: not replayed
    assert log.sync(2) and ids() == [[1], [2]]  # one redo: replayed
    assert not log.sync(2)
    log.on_item([], lambda: [_edit()])  # a new change: the undone step is gone for good
    assert not log.sync(5)
    assert [a["kind"] for a in log.actions()] == ["automatic", "automatic", "edited"]


def test_bounded_history_makes_old_steps_permanent():
    log = ProvenanceLog.start(_session(), history_limit=2)
    for i in (1, 2, 3):
        with log.expect(automatic((0,), {}, False)):
            log.on_item([i], lambda: [])
    assert len(log.steps) == 2 and len(log.header.actions) == 1
    log.sync(0)  # everything undoable undone: the oldest step stays
    assert [a["ids"] for a in log.actions()] == [[1]]


def test_existing_document_continued_only_for_the_same_setup():
    first = ProvenanceLog.start(_session())
    with first.expect(automatic((0,), {}, False)):
        first.on_item([1], lambda: [])
    same = ProvenanceLog.start(_session(), existing=first.document())
    assert [a["ids"] for a in same.actions()] == [[1]]
    other = ProvenanceLog.start(_session(weights="sha256:bb"), existing=first.document())
    assert other.actions() == []
    assert first.matches(_session()) and not first.matches(_session(weights="sha256:bb"))
    assert not first.matches(_session(shape=(5, 30, 40)))
