"""Headless replay with the packaged demo model (fp32, exact): actions run directly —
clicks, a negative correction click, a box, points + box, propagation (of committed
objects and of a preview), automatic masks, a manual edit, an overwriting click — are
recorded through the provenance API, exported, and replayed from the export: the
replayed labels are identical."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch

from napari_sam.cli import main
from napari_sam.engine.amg import AutomaticMaskGenerator
from napari_sam.engine.amg.volume import DEMO_PARAMS
from napari_sam.engine.decode.predictor import Predictor
from napari_sam.engine.labels import merge_new_objects, next_free_id
from napari_sam.engine.loader import load_model
from napari_sam.engine.metrics import interior_point
from napari_sam.engine.propagate import Propagator
from napari_sam.export import Calibration, PromptRound, Provenance, export_labels
from napari_sam.export.ome_zarr import read_ome_zarr
from napari_sam.export.replay import replay
from napari_sam.synthetic import nuclei_3d


@pytest.fixture(scope="module")
def demo():
    torch.set_num_threads(1)
    return load_model("demo", device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def volume():
    return nuclei_3d((8, 112, 112), seed=4242, z_step=2.5)


def centre(truth2d: np.ndarray, obj: int) -> list[float]:
    """The object's interior-most pixel; (0, 0) when it is not on this slice."""
    m = truth2d == obj
    return interior_point(m).tolist() if m.any() else [0.0, 0.0]


def bbox(truth2d: np.ndarray, obj: int) -> list[float]:
    rows, cols = np.nonzero(truth2d == obj)
    hi = truth2d.shape[0] - 1.0
    return [max(rows.min() - 2.0, 0), max(cols.min() - 2.0, 0), min(rows.max() + 2.0, hi),
            min(cols.max() + 2.0, hi)]


class Direct:
    """The actions as the interactive tool runs them (engine calls, commit rules)."""

    def __init__(self, model, image) -> None:
        self.model, self.image = model, image
        self.labels = np.zeros(image.shape, np.uint32)
        p = Predictor(model)
        self.emb = {z: p.compute_embedding(image[z]) for z in range(image.shape[0])}

    def preview(self, z: int, rounds: list[PromptRound]) -> tuple[np.ndarray, float]:
        p = Predictor(self.model)
        p.set_embedding(self.emb[z])
        logits = None
        for k, r in enumerate(rounds):
            mi = logits if k else None
            res = p.predict(points=list(r.points) or None, labels=list(r.labels) or None,
                            box=r.box, mask_input=mi,
                            multimask=r.box is None and len(r.points) == 1 and mi is None,
                            best_only=True)
            logits = res.logits[0]
        return res.masks[0], float(res.scores[0])

    def commit(self, z: int, mask: np.ndarray, overwrite: bool = False) -> list[int]:
        target = mask if overwrite else mask & (self.labels[z] == 0)
        if not target.any():
            return []
        new = next_free_id(self.labels)
        self.labels[z][target] = new
        return [new]

    def write(self, result: np.ndarray, overwrite: bool = False) -> None:
        target = result > 0
        if not overwrite:
            target &= self.labels == 0
        self.labels[target] = result[target]


def test_replay_reproduces_every_kind_of_action(demo, volume, tmp_path) -> None:
    image, truth = volume
    d = Direct(demo, image)
    cal = Calibration.create(3, (2.5, 0.4, 0.4), (5.0, -10.0, 20.0), ["micrometer"] * 3)
    prov = Provenance.create(demo, image_shape=image.shape, calibration=cal)
    objs = [int(o) for o in np.unique(truth[4]) if o]
    assert len(objs) >= 5
    a, b, c, e, f = objs[:5]

    # 1. one click; 2. a click corrected by a negative click; 3. a box; 4. points + box
    clicks = {
        a: [PromptRound.create([centre(truth[4], a)], [1])],
        b: [PromptRound.create([centre(truth[4], b)], [1]),
            PromptRound.create([centre(truth[4], b), centre(truth[4] == 0, 1)], [1, 0])],
        c: [PromptRound.create(box=bbox(truth[4], c))],
        e: [PromptRound.create([centre(truth[4], e)], [1], bbox(truth[4], e))],
    }
    for rounds in clicks.values():
        mask, score = d.preview(4, rounds)
        prov.add_prompted((4,), rounds, d.commit(4, mask), predicted_iou=score)
    kinds = [x["kind"] for x in prov.actions]
    assert kinds == ["click", "click", "box", "points+box"] and prov.actions[1]["ids"] == [2]

    # 5. propagate committed objects 1 and 2 through the volume
    params = {"mode": "mask+points", "iou_stop": 0.5, "max_slices": None,
              "stop_slices": {0: {0}}}
    prop = Propagator(demo, d.emb.__getitem__, d.labels.copy(), [1, 2], **params)
    for _ in prop.run():
        pass
    d.write(prop.result)
    prov.add_propagated((), [1, 2], params, [1, 2])
    assert (d.labels == 1).any(axis=(1, 2)).sum() > 1  # propagated to other slices

    # 6. propagate an uncommitted preview (it becomes the next id)
    seed_rounds = [PromptRound.create([centre(truth[4], f)], [1])]
    mask, _ = d.preview(4, seed_rounds)
    seeds = d.labels.copy()
    new = next_free_id(d.labels)
    seeds[4][mask & (seeds[4] == 0)] = new
    prop = Propagator(demo, d.emb.__getitem__, seeds, [new])
    for _ in prop.run():
        pass
    d.write(prop.result)
    prov.add_propagated((), [], {}, [new], seed=(4, seed_rounds))

    # 7. automatic masks on slice 1, merged above the largest id as the widget merges
    # them (session.commit.plan_automatic_write: rims of existing objects dropped,
    # consecutive ids)
    amg = AutomaticMaskGenerator(demo, **DEMO_PARAMS)
    res = amg.generate(d.emb[1])
    offset = next_free_id(d.labels) - 1
    assert int(res.labels.max()) >= 3
    block, n = merge_new_objects(d.labels[1], res.labels, first_id=offset + 1)
    assert (d.labels[1] > 0).any() and n >= 3  # merged over existing objects
    d.labels[1][block > 0] = block[block > 0]
    prov.add_automatic((1,), DEMO_PARAMS, range(offset + 1, offset + n + 1))

    # 8. a manual edit erasing part of object 1; 9. an overwriting click on object c
    region = (slice(4, 5), slice(0, 112), slice(0, 112))
    erase = (d.labels[region] == 1) & (np.indices((1, 112, 112))[2] % 2 == 0)
    d.labels[region][erase] = 0
    prov.add_edited((4, 0, 0), erase, 0, ids=[1])
    rounds = [PromptRound.create([centre(truth[5], c)], [1])]
    mask, score = d.preview(5, rounds)
    prov.add_prompted((5,), rounds, d.commit(5, mask, overwrite=True), overwrite=True,
                      predicted_iou=score)
    assert len(np.unique(d.labels)) > 8

    # export (OME-Zarr with provenance), replay from the export: identical
    out = tmp_path / "labels.ome.zarr"
    export_labels(out, d.labels, cal, provenance=prov)
    loaded = Provenance.load(out)
    assert loaded.to_dict() == Provenance.from_dict(prov.to_dict()).to_dict()
    result = replay(loaded, image)  # loads "demo" in fp32 by the recorded name and hash
    assert result.mismatches == []
    np.testing.assert_array_equal(result.labels, d.labels)
    np.testing.assert_array_equal(np.asarray(read_ome_zarr(out).data), d.labels)

    # the CLI replays the same from a TIFF image into a TIFF export
    tifffile.imwrite(tmp_path / "image.tif", image)
    rc = main(["replay", str(out), str(tmp_path / "image.tif"),
               "--out", str(tmp_path / "replayed.tif"), "--no-progress"])
    assert rc == 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "replayed.tif"), d.labels)
    # calibrated from the recorded calibration, table with the provenance columns
    import pandas as pd

    table = pd.read_csv(tmp_path / "replayed.objects.csv").set_index("label")
    assert table.loc[2, "source"] == "click" and table.loc[3, "source"] == "box"
    assert table.loc[offset + 1, "source"] == "automatic"
    assert table.loc[1, "edited"]


def test_replay_reports_divergence_and_refuses_other_weights(demo, volume, tiny_model) -> None:
    from napari_sam.export import ProvenanceError

    image, truth = volume
    prov = Provenance.create(demo, image_shape=image.shape)
    obj = int(np.unique(truth[3])[1])
    prov.add_prompted((3,), [PromptRound.create([centre(truth[3], obj)], [1])], [7])
    result = replay(prov, image, demo)
    assert result.mismatches == ["action 0 (click): wrote ids [1], recorded [7]"]
    with pytest.raises(ProvenanceError, match="other weights"):
        replay(prov, image, tiny_model)
    with pytest.raises(ProvenanceError, match="image shape"):
        replay(prov, image[:2], demo)


def test_replay_volume_automatic_masks_and_rgb_slices(tiny_model) -> None:
    """Automatic masks through a (T, Z, Y, X) volume (z-linked) and on an RGB slice,
    with the tiny random model: replay equals the direct run."""
    from napari_sam.engine.amg.volume import VolumeAmg
    from napari_sam.engine.progress import run_to_end

    rng = np.random.default_rng(3)
    image = (rng.random((2, 3, 48, 40)) * 255).astype(np.uint8)
    params = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    p = Predictor(tiny_model)
    amg = AutomaticMaskGenerator(tiny_model, **params)
    vol = VolumeAmg(amg, lambda z: p.compute_embedding(image[1, z]), 3, link=True,
                    link_iou=0.3, min_slices=1)
    plane = run_to_end(vol.run()).astype(np.uint32)
    assert plane.max() > 0
    labels = np.zeros(image.shape, np.uint32)
    labels[1] = plane
    prov = Provenance.create(tiny_model, image_shape=image.shape)
    prov.add_automatic((1,), params, range(1, int(plane.max()) + 1),
                       volume={"link": True, "link_iou": 0.3, "min_slices": 1})
    result = replay(Provenance.from_dict(prov.to_dict()), image, tiny_model)
    assert result.mismatches == []
    np.testing.assert_array_equal(result.labels, labels)

    rgb = (rng.random((2, 40, 48, 3)) * 255).astype(np.uint8)
    prov = Provenance.create(tiny_model, image_shape=rgb.shape, rgb=True)
    r = PromptRound.create(box=[5, 5, 30, 40])
    prov.add_prompted((1,), [r], [1])
    p.set_image(rgb[1])
    mask = p.predict(box=r.box, multimask=False, best_only=True).masks[0]
    result = replay(prov, rgb, tiny_model)
    assert result.labels.shape == (2, 40, 48)
    np.testing.assert_array_equal(result.labels[1], mask.astype(np.uint32))
