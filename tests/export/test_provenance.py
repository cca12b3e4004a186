"""The provenance format: building it with the API, JSON round trip, versioning,
per-object origin, edit run lengths, and where exports keep it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_sam.engine.image import Normalization
from napari_sam.export import PromptRound, Provenance, ProvenanceError, export_labels
from napari_sam.export.provenance import SCHEMA, SCHEMA_VERSION, rle_decode, rle_encode
from napari_sam.export.replay import normalization_from_signature


def make(tiny_model) -> Provenance:
    norm = Normalization(contrast_limits=(10.0, 900.0))
    prov = Provenance.create(tiny_model, norm, image_shape=(5, 32, 40), source="cells.tif")
    prov.add_prompted((2,), [PromptRound.create([[3.5, 4.0]], [1]),
                             PromptRound.create([[3.5, 4.0], [9, 9]], [1, 0])], [1],
                      predicted_iou=0.87)
    prov.add_prompted((2,), [PromptRound.create(box=[1, 2, 10, 20])], [], overwrite=False)
    prov.add_automatic((3,), {"points_per_side": 8}, [2, 3], scores={2: (0.9, 0.95)},
                       overwrite=True)
    prov.add_propagated((), [1], {"mode": "box", "stop_slices": {0: {4, 1}}}, [1],
                        seed=(2, [PromptRound.create([[5, 5]], [1])]))
    prov.add_edited((2, 0, 0), np.eye(3, dtype=bool)[None], 0, ids=[3])
    return prov


def test_document_fields(tiny_model) -> None:
    d = make(tiny_model).to_dict()
    assert d["schema"] == SCHEMA and d["version"] == SCHEMA_VERSION
    assert d["model"] == {"name": "tiny", "weights_hash": tiny_model.weights_hash,
                          "precision": "fp32"}
    assert d["normalization"]["contrast_limits"] == [10.0, 900.0]
    assert d["tiling"] is None and d["image"]["shape"] == [5, 32, 40]
    a0, a1, a2, a3, a4 = d["actions"]
    assert a0["kind"] == "click" and a0["index"] == [2] and a0["ids"] == [1]
    assert a0["rounds"][1] == {"points": [[3.5, 4.0], [9.0, 9.0]], "labels": [1, 0],
                               "box": None}
    assert a0["scores"] == {"1": {"predicted_iou": 0.87, "stability_score": None}}
    assert a1["kind"] == "box" and a1["ids"] == [] and a1["rounds"][0]["box"] == [1, 2, 10, 20]
    assert a2["kind"] == "automatic" and a2["overwrite"] and a2["params"]["points_per_side"] == 8
    assert a3["params"]["stop_slices"] == {"0": [1, 4]} and a3["seed"]["z"] == 2
    assert a4["kind"] == "edited" and a4["edit"]["value"] == 0
    json.dumps(d)  # plain JSON all the way down


def test_json_round_trip_and_objects(tiny_model, tmp_path) -> None:
    prov = make(tiny_model)
    path = prov.save(tmp_path / "p.json")
    back = Provenance.load(path)
    assert back.to_dict() == prov.to_dict()
    info = back.objects()
    assert info[1]["source"] == "click" and info[1]["predicted_iou"] == 0.87
    assert info[2] == {"source": "automatic", "edited": False, "predicted_iou": 0.9,
                       "stability_score": 0.95}
    assert info[3]["source"] == "automatic" and info[3]["edited"]
    sig = Normalization(contrast_limits=(10.0, 900.0)).signature()
    assert normalization_from_signature(back.normalization).signature() == sig


def test_saved_with_exports(tiny_model, tmp_path) -> None:
    prov = make(tiny_model)
    lab = np.zeros((5, 32, 40), np.uint32)
    export_labels(tmp_path / "a.ome.zarr", lab, provenance=prov, table=False)
    export_labels(tmp_path / "a.tif", lab, provenance=prov, table=False)
    attrs = json.loads((tmp_path / "a.ome.zarr" / "zarr.json").read_text())["attributes"]
    assert attrs["napari_sam"]["provenance"] == prov.to_dict()
    assert Provenance.load(tmp_path / "a.napari_sam.json").to_dict() == prov.to_dict()
    assert Provenance.load(tmp_path / "a.ome.zarr").to_dict() == prov.to_dict()


def test_invalid_documents(tiny_model, tmp_path) -> None:
    d = make(tiny_model).to_dict()
    with pytest.raises(ProvenanceError, match="newer"):
        Provenance.from_dict({**d, "version": SCHEMA_VERSION + 1})
    with pytest.raises(ProvenanceError, match="schema"):
        Provenance.from_dict({**d, "schema": "other"})
    with pytest.raises(ProvenanceError, match="unknown kind"):
        Provenance.from_dict({**d, "actions": [{"kind": "magic"}]})
    with pytest.raises(ProvenanceError, match="points or a box"):
        PromptRound.create()
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ProvenanceError, match="cannot read"):
        Provenance.load(tmp_path / "bad.json")


@pytest.mark.parametrize("seed", range(4))
def test_rle_round_trip(seed) -> None:
    mask = np.random.default_rng(seed).random((3, 7, 5)) < 0.4
    mask[0, 0, 0] = bool(seed % 2)
    runs = rle_encode(mask)
    assert sum(runs) == mask.size
    np.testing.assert_array_equal(rle_decode(runs, mask.shape), mask)
