"""Tile grid geometry (engine/tiling.py) and native-resolution embedding of a tile."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_sam.engine.decode.predictor import Predictor
from napari_sam.engine.tiling import TileGrid, box_to_tile, place, to_tile


def test_auto_is_off_for_planes_that_fit_and_tiles_otherwise():
    assert TileGrid.for_model((256, 200), 256) is None
    assert TileGrid.for_model((2048, 2048), 256, "off") is None
    g = TileGrid.for_model((700, 300), 256)
    assert g.halo == (32, 32) and g.tile == (192, 192) and g.shape == (4, 2)
    g = TileGrid.for_model((700, 300), 256, (100, 120), halo=(20, 10))
    assert (g.tile, g.halo, g.shape) == ((100, 120), (20, 10), (7, 3))
    with pytest.raises(ValueError, match="exceeds the model input"):
        TileGrid.for_model((700, 300), 256, (220, 220), halo=32)
    with pytest.raises(ValueError, match="tiling must be"):
        TileGrid.for_model((700, 300), 256, "on")


@pytest.mark.parametrize("plane", [(700, 300), (384, 384), (193, 1000)])
def test_inner_regions_partition_the_plane_and_outer_fit_the_input(plane):
    g = TileGrid.for_model(plane, 256, (150, 170), halo=(40, 30))
    cover = np.zeros(plane, int)
    for t in g.tiles():
        r0, c0, r1, c1 = g.inner(t)
        cover[r0:r1, c0:c1] += 1
        o = g.outer(t)
        assert o[0] <= r0 and o[1] <= c0 and o[2] >= r1 and o[3] >= c1
        assert o[2] - o[0] <= 256 and o[3] - o[1] <= 256
        assert 0 <= o[0] and 0 <= o[1] and o[2] <= plane[0] and o[3] <= plane[1]
        assert g.tile_at((r0 + r1 - 1) / 2, (c0 + c1 - 1) / 2) == t
    assert (cover == 1).all()
    assert TileGrid.from_dict(g.to_dict()) == g


def test_prompts_pick_their_tile():
    g = TileGrid((1000, 1000), (200, 200), (28, 28))
    assert g.tile_at(0, 0) == (0, 0) and g.tile_at(199.4, 200) == (0, 1)
    assert g.tile_at(-3, 2000) == (0, 4)  # clipped into the plane
    assert g.tile_for_box((10, 10, 150, 150)) == (0, 0)
    # a box across the inner border 200 at rows 190..215: the tile of its centre,
    # whose outer region (to 228) holds it
    assert g.tile_for_box((190, 20, 215, 60)) == (1, 0)
    assert g.tile_for_box((150, 20, 215, 60)) == (0, 0)  # centre in tile 0, fits its halo
    assert g.tile_for_box((100, 100, 400, 130)) is None  # larger than any outer region
    assert g.tiles_in((150, 390, 420, 410)) == [(0, 1), (0, 2), (1, 1), (1, 2), (2, 1), (2, 2)]
    order = g.by_distance((2, 2))
    assert order[0] == (2, 2) and set(order[1:9]) == {
        (i, j) for i in (1, 2, 3) for j in (1, 2, 3) if (i, j) != (2, 2)
    }


def test_coordinates_move_with_the_outer_region():
    g = TileGrid((1000, 800), (200, 200), (28, 28))
    region = g.outer((1, 1))
    assert region == (172, 172, 428, 428)
    np.testing.assert_array_equal(to_tile([[200, 210]], region), [[28, 38]])
    np.testing.assert_array_equal(box_to_tile([180, 190, 300, 310], region), [8, 18, 128, 138])
    mask = np.zeros((256, 256), bool)
    mask[28, 38] = True
    full = place(mask, region, g.plane)
    assert full.shape == (1000, 800) and full[200, 210] and full.sum() == 1
    plane = np.arange(1000 * 800).reshape(1000, 800)
    np.testing.assert_array_equal(g.read(plane, (1, 1)), plane[172:428, 172:428])


def test_a_tile_is_embedded_at_native_resolution(tiny_model):
    """resize=False: a region no larger than the input is zero-padded, not resized; for a
    region of exactly the input size that is the same embedding as before."""
    p = Predictor(tiny_model)
    rng = np.random.default_rng(0)
    full = rng.integers(0, 255, (64, 64), dtype=np.uint8)
    a, b = p.compute_embedding(full), p.compute_embedding(full, resize=False)
    torch.testing.assert_close(a.features, b.features, rtol=0, atol=0)
    crop = full[:40, :50]
    e = p.compute_embedding(crop, resize=False)
    assert e.original_size == e.input_size == (40, 50)
    padded = np.zeros((64, 64), np.uint8)
    padded[:40, :50] = crop
    x, _ = p.prepare_input(crop, resize=False)
    # the padded input equals the crop's pixels normalised, then zeros
    ref, _ = p.prepare_input(np.dstack([padded] * 3), resize=False)
    torch.testing.assert_close(x[..., :40, :50], ref[..., :40, :50])
    assert (x[..., 40:, :] == 0).all() and (x[..., :, 50:] == 0).all()
    p.set_embedding(e)
    r = p.predict(points=[[20, 25]], labels=[1])
    assert r.masks.shape == (3, 40, 50)
    with pytest.raises(ValueError, match="does not fit the model input"):
        p.compute_embedding(np.zeros((65, 10), np.uint8), resize=False)


def test_outer_regions_at_the_plane_border_move_inwards_instead_of_being_cut():
    """Every tile embeds a full (th + 2 hh, tw + 2 hw) window when the plane is that
    large: at the border the window shifts inwards (a zero-padded tile segments worse,
    docs/tiling.md); smaller only along an axis where the plane is smaller."""
    g = TileGrid((700, 300), (150, 170), (40, 30))
    for t in g.tiles():
        r0, c0, r1, c1 = g.outer(t)
        assert (r1 - r0, c1 - c0) == (230, 230)
    assert g.outer((0, 0)) == (0, 0, 230, 230)
    assert g.outer((4, 1)) == (470, 70, 700, 300)  # last (100 × 130 px) inner tile
    assert g.outer((2, 0)) == (260, 0, 490, 230)  # interior row: inner grown by the halo
    small = TileGrid((200, 1000), (150, 170), (40, 30))
    assert small.outer((1, 2)) == (0, 310, 200, 540)  # the plane is only 200 rows
