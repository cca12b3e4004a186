"""vit_b (random weights, the published architecture at its 1024-px input): a prompt on
a tiled plane equals the untiled result of the tile's 1024² region cropped — one
encoder pass (issue #18 acceptance, parity-style)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_sam.engine.decode.predictor import Predictor
from napari_sam.engine.loader import wrap_model
from napari_sam.model.build import CONFIGS, build_sam
from napari_sam.session import SegmentationSession

from oracle import randomise_


@pytest.mark.slow
def test_vit_b_tiled_prompt_equals_the_untiled_crop():
    torch.set_num_threads(1)
    cfg = CONFIGS["vit_b"]
    torch.manual_seed(5)
    sam = build_sam(cfg)
    randomise_(sam, 5)
    model = wrap_model(sam.eval(), cfg, "vit_b-random", "cpu", "fp32")
    rng = np.random.default_rng(7)
    plane = rng.integers(0, 3000, (1300, 1200)).astype(np.uint16)
    plane[250:350, 350:460] += 6000
    s = SegmentationSession(model, plane, False, None, tiling="auto")
    assert s.grid is not None and s.grid.tile == (768, 768) and s.grid.halo == (128, 128)
    assert s.grid.outer((0, 0)) == (0, 0, 1024, 1024)
    crop = plane[:1024, :1024]
    p = Predictor(model)
    # the untiled input of the crop (resized to 1024 = its own size) is the tile's input,
    # so their embeddings are equal: the encoder runs once, for the tile
    untiled_in, _ = p.prepare_input(crop, resize=True)
    tile_in, _ = p.prepare_input(s.embeddings.read((0, 0)), resize=False)
    assert torch.equal(untiled_in, tile_in)
    point = s.prompt((), np.array([[300.0, 400.0]]), np.ones(1, int), None, 0)
    box = s.prompt((), np.zeros((0, 2)), np.zeros(0, int), np.array([500, 600, 700, 740]), 1)
    assert point.tile == box.tile == (0, 0) and s.embeddings.computed == 1
    emb = s.tile_embedding((), (0, 0))
    assert tuple(emb.original_size) == tuple(emb.input_size) == (1024, 1024)
    p.set_embedding(emb)
    r1 = p.predict(points=[[300.0, 400.0]], labels=[1], best_only=True)
    rb = p.predict(box=[500, 600, 700, 740], multimask=False, best_only=True)
    for got, want in ((point, r1), (box, rb)):
        np.testing.assert_array_equal(got.mask[:1024, :1024], want.masks[0])
        assert not got.mask[1024:].any() and not got.mask[:, 1024:].any()
        assert got.score == float(want.scores[0])
