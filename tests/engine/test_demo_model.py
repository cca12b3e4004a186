"""The packaged demo model: offline loading, quality on held-out synthetic nuclei, and
bit-exact parity with the official segment-anything classes built from its config."""

from __future__ import annotations

import numpy as np
import pooch
import pytest
import torch

from napari_sam import weights
from napari_sam.engine.decode.predictor import Predictor
from napari_sam.engine.loader import load_model
from napari_sam.engine.metrics import interior_point, iou
from napari_sam.model.checkpoint import read_checkpoint
from napari_sam.synthetic import nuclei_2d
from napari_sam.training.prompts import object_box, object_pixels

from requires import require

HELD_OUT_SEED = 987_654  # never used for training (docs/demo_model.md)


@pytest.fixture(scope="module")
def demo():
    return load_model("demo", device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def held_out():
    return nuclei_2d(
        (256, 256), seed=HELD_OUT_SEED, n_nuclei=25, radius=(9.0, 18.0), dtype="uint16"
    )


def test_demo_loads_offline(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(weights.CACHE_DIR_ENV_VAR, str(tmp_path))

    def no_network(*args, **kwargs):
        raise AssertionError("the demo model must not touch the network")

    monkeypatch.setattr(pooch, "retrieve", no_network)
    info = weights.get_model_info("demo")
    assert "demo" in weights.available_models()
    path = weights.fetch_weights("demo")
    assert path.is_file() and path.name == "demo_sam.pt"
    assert path.stat().st_size < 10 * 2**20
    model = load_model("demo", device="cpu", precision="fp32")
    assert model.name == "demo" and model.config.image_size == 256
    assert info.model_type == "custom"
    assert list(tmp_path.iterdir()) == []  # nothing downloaded or cached
    meta = read_checkpoint(path)["meta"]  # weights_only=True
    assert meta["step"] > 0 and "napari-sam train" in meta["trained_with"]


def test_point_and_box_segment_held_out_nuclei(demo, held_out) -> None:
    img, lab = held_out
    p = Predictor(demo)
    p.set_image(img)
    point_iou, box_iou = [], []
    objects = object_pixels(lab, min_area=80)
    assert len(objects) >= 8
    for i, px in objects.items():
        gt = lab == i
        r = p.predict(points=interior_point(lab == i)[None], labels=[1])
        point_iou.append(iou(r.masks[r.best], gt))
        r = p.predict(box=object_box(px), multimask=False)
        box_iou.append(iou(r.masks[0], gt))
    assert np.mean(point_iou) >= 0.8, point_iou
    assert np.mean(box_iou) >= 0.85, box_iou


def test_click_selects_the_clicked_nucleus(demo, held_out) -> None:
    img, lab = held_out
    p = Predictor(demo)
    p.set_image(img)
    objects = object_pixels(lab, min_area=80)
    for i in list(objects)[:5]:
        r = p.predict(points=interior_point(lab == i)[None], labels=[1])
        m = r.masks[r.best]
        ids, counts = np.unique(lab[m], return_counts=True)
        assert ids[np.argmax(counts)] == i  # mostly covers the clicked nucleus


@pytest.mark.parity
def test_official_classes_load_demo_weights_and_agree(demo, held_out) -> None:
    require("segment_anything")
    from segment_anything import SamPredictor

    from napari_sam.engine.image import to_uint8_rgb

    from oracle import build_official

    official = build_official(demo.config)  # architecture only: every weight is replaced
    sd = read_checkpoint(weights.fetch_weights("demo"))["model"]
    official.load_state_dict(sd, strict=True)
    img, lab = held_out
    op = SamPredictor(official)
    op.set_image(to_uint8_rgb(img))
    p = Predictor(demo)
    p.set_image(img)
    torch.testing.assert_close(p.embedding.features, op.features, atol=1e-5, rtol=1e-5)
    for i, px in list(object_pixels(lab, min_area=80).items())[:4]:
        rc = interior_point(lab == i)
        theirs, _, _ = op.predict(point_coords=rc[None, ::-1].copy(), point_labels=np.array([1]))
        assert np.array_equal(p.predict(points=rc[None], labels=[1]).masks, theirs)
        r0, c0, r1, c1 = object_box(px)
        theirs, _, _ = op.predict(box=np.array([c0, r0, c1, r1]), multimask_output=False)
        assert np.array_equal(p.predict(box=[r0, c0, r1, c1], multimask=False).masks, theirs)
