"""Propagation on tiles (napari_sam.engine.propagate.tiled): objects given to the tile
that holds them, tracks across inner borders, results placed back, seeds never
overwritten, equality with the untiled propagator on one tile, errors, and the demo
model on nuclei placed across an inner border.

The mechanics tests replace the decoder by a ground-truth oracle (the object under the
prompt box's centre on that slice, in the tile's pixels), as tests/engine/test_propagate.py
does, so the rules are tested exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from napari_sam.engine.decode.predictor import Predictor, PredictResult
from napari_sam.engine.embedding import Embedding
from napari_sam.engine.propagate import Propagator
from napari_sam.engine.propagate.tiled import TiledPropagator, assign_tiles, propagate_tiled
from napari_sam.engine.tiling import TileGrid

GRID = TileGrid((160, 200), (64, 64), (16, 16))
Z = 8


def tile_embeddings(model, grid: TileGrid, calls: list | None = None):
    """(z, tile) → a fake embedding of the tile's outer region; its features hold z and
    the region's origin (the oracle reads them back)."""
    cfg, size = model.config, model.sam.embedding_size

    def emb(z: int, tile) -> Embedding:
        if calls is not None:
            calls.append((z, tile))
        r0, c0, r1, c1 = grid.outer(tile)
        feats = torch.zeros((1, cfg.prompt_embed_dim, *size))
        feats[0, 0, 0, :3] = torch.tensor([z, r0, c0], dtype=torch.float32)
        return Embedding(feats, (r1 - r0, c1 - c0), (r1 - r0, c1 - c0), model.weights_hash)

    return emb


@pytest.fixture
def oracle(monkeypatch, tiny_model):
    """predict_batch → each object's mask = the ground-truth object under the centre of
    its box on slice z, in the current tile's pixels. Set ``oracle.truth`` (Z, H, W)."""

    class Oracle:
        truth: np.ndarray | None = None
        grow = 0  # dilate every mask by this many pixels

    def predict_batch(self, points=None, labels=None, boxes=None, mask_inputs=None, **kw):
        z, r0, c0 = (int(v) for v in self.embedding.features[0, 0, 0, :3])
        h, w = self.embedding.original_size
        plane = Oracle.truth[z, r0 : r0 + h, c0 : c0 + w]
        boxes = np.asarray(boxes)
        masks = np.zeros((len(boxes), 1, h, w), bool)
        for i, b in enumerate(boxes):
            r, c = round(float(b[0] + b[2]) / 2), round(float(b[1] + b[3]) / 2)
            if 0 <= r < h and 0 <= c < w and plane[r, c]:
                masks[i, 0] = plane == plane[r, c]
                if Oracle.grow:
                    masks[i, 0] = ndi.binary_dilation(masks[i, 0], iterations=Oracle.grow)
        low = tiny_model.sam.low_res_size
        return PredictResult(
            masks, np.full((len(boxes), 1), 0.9, np.float32), np.zeros((len(boxes), 1, *low))
        )

    monkeypatch.setattr(Predictor, "predict_batch", predict_batch)
    return Oracle


def disk(vol, obj, z, centre, r):
    rr, cc = np.ogrid[: vol.shape[1], : vol.shape[2]]
    vol[z][(rr - centre[0]) ** 2 + (cc - centre[1]) ** 2 <= r * r] = obj


def test_objects_are_followed_across_inner_borders_and_placed_back(tiny_model, oracle):
    truth = np.zeros((Z, *GRID.plane), np.int32)
    for z in range(Z):
        disk(truth, 1, z, (64, 40 + 3 * z), 6)  # on the row border 64, moving right
        disk(truth, 2, z, (100, 128 + 2 * z), 7)  # across the col border 128, moving
    for z in range(1, 7):
        disk(truth, 3, z, (120, 180), 5)  # in the last tile column, slices 1..6
    oracle.truth = truth
    seeds = np.zeros_like(truth)
    seeds[3][truth[3] > 0] = truth[3][truth[3] > 0]
    seeds[6][30:40, 60:70] = 9  # a committed object not propagated: never overwritten
    calls: list = []
    t = TiledPropagator(
        tiny_model,
        GRID,
        tile_embeddings(tiny_model, GRID, calls),
        seeds,
        objects=[1, 2, 3],
        mode="box",
        prefetch=False,
    )
    assert t.groups == {(1, 0): [1], (1, 2): [2, 3]}  # the tiles of the boxes' centres
    steps = list(t.run())
    assert steps[-1][:2] == (t.total, t.total) == (2 * Z * 2, 2 * Z * 2)
    expected = truth.copy()
    expected[6][30:40, 60:70] = 9
    np.testing.assert_array_equal(t.result, expected)
    assert {tile for _, tile in calls} == {(1, 0), (1, 2)}
    reasons = {(s.obj, s.direction): s.reason for s in t.stops}
    assert reasons == {
        (1, 1): "edge",
        (1, -1): "edge",
        (2, 1): "edge",
        (2, -1): "edge",
        (3, 1): "vanished",
        (3, -1): "vanished",
    }


def test_seeds_are_never_overwritten_and_the_first_group_wins(tiny_model, oracle):
    truth = np.zeros((Z, *GRID.plane), np.int32)
    for z in range(Z):
        disk(truth, 1, z, (40, 60), 6)  # tile (0, 0)
        disk(truth, 2, z, (40, 76), 6)  # tile (0, 1), 4 px away
    oracle.truth, oracle.grow = truth, 3  # predicted masks 3 px larger: they overlap
    seeds = np.zeros_like(truth)
    seeds[0][truth[0] == 1] = 1
    seeds[7][truth[7] == 2] = 2
    seeds[4][35:45, 55:60] = 5  # a seed in object 1's path
    kw = dict(mode="box", prefetch=False, iou_stop=0.0, overlap_stop=1.0)
    t = TiledPropagator(tiny_model, GRID, tile_embeddings(tiny_model, GRID), seeds, [1, 2], **kw)
    assert t.groups == {(0, 0): [1], (0, 1): [2]}
    out = propagate_tiled(tiny_model, GRID, tile_embeddings(tiny_model, GRID), seeds, [1, 2], **kw)
    np.testing.assert_array_equal(out[seeds > 0], seeds[seeds > 0])
    grown = [ndi.binary_dilation(truth[3] == k, iterations=3) for k in (1, 2)]
    for z in range(1, 7):  # where the predictions overlap, object 1's group (first) won
        free = seeds[z] == 0
        np.testing.assert_array_equal(out[z][grown[0] & free], 1)
        np.testing.assert_array_equal(out[z][grown[1] & ~grown[0] & free], 2)
        assert (out[z][~(grown[0] | grown[1]) & free] == 0).all()


def test_one_tile_equals_the_untiled_propagator(tiny_model):
    """A grid of one tile is one Propagator run on the whole plane (same embedding)."""
    rng = np.random.default_rng(1)
    vol = rng.integers(0, 255, (6, 40, 48)).astype(np.uint8)
    p = Predictor(tiny_model)
    cache = {z: p.compute_embedding(vol[z], resize=False) for z in range(6)}
    seeds = np.zeros(vol.shape, np.int32)
    seeds[2, 5:15, 5:20] = 3
    seeds[2, 25:35, 30:44] = 4
    loose = dict(
        iou_stop=0.0,
        area_factor=np.inf,
        min_area=0,
        overlap_stop=1.0,
        shrink_stop=0.0,
        prefetch=False,
    )
    ref = Propagator(tiny_model, cache.__getitem__, seeds, **loose)
    for _ in ref.run():
        pass
    grid = TileGrid((40, 48), (64, 64), (0, 0))
    out = propagate_tiled(tiny_model, grid, lambda z, t: cache[z], seeds, **loose)
    assert (ref.result[[0, 1, 3, 4, 5]] > 0).any()
    np.testing.assert_array_equal(out, ref.result)


def test_assignment_margin_fallback_and_errors(tiny_model):
    seeds = np.zeros((3, *GRID.plane), np.int32)
    seeds[1, 70:90, 70:90] = 1  # centre in tile (1, 1)
    seeds[0, 50:60, 20:30] = 2
    seeds[2, 52:58, 20:30] = 2  # box over slices 0 and 2: rows 50..59 → tile (0, 0)
    seeds[2, 50:120, 50:100] = 3  # 70 × 50 px: fits only without the margin
    assert assign_tiles(GRID, seeds, [1, 2], 8) == {(0, 0): [2], (1, 1): [1]}
    assert assign_tiles(GRID, seeds, [3], 8) == {(1, 1): [3]}  # bare box fits (48..144)
    bad = tile_embeddings(tiny_model, TileGrid(GRID.plane, (64, 64), (8, 8)))
    with pytest.raises(ValueError, match="native resolution"):
        propagate_tiled(tiny_model, GRID, bad, seeds, objects=[1])
    with pytest.raises(ValueError, match="no pixel"):
        assign_tiles(GRID, seeds, [7], 8)
    with pytest.raises(ValueError, match="grid's plane"):
        TiledPropagator(tiny_model, GRID, tile_embeddings(tiny_model, GRID), seeds[:, :50])
    seeds[1, 40:130, 100:120] = 4  # 90 rows: larger than any outer region (96)
    with pytest.raises(ValueError, match=r"object 4's seeds span rows 40–129.*larger than"):
        TiledPropagator(tiny_model, GRID, tile_embeddings(tiny_model, GRID), seeds)


# ----------------------------------------------------------------- demo model


def test_demo_model_follows_nuclei_across_an_inner_border():
    """Synthetic 3D nuclei (held-out seed) on a 320² plane cut into 2 × 2 tiles of 192 +
    halo 32; every nucleus annotated on its middle slice. The nuclei crossing an inner
    border (row or col 192) on that slice are followed through z on both sides of it:
    on the neighbouring slices their masks cross the border too, and their 3D IoU is
    close to the untiled one."""
    from napari_sam.engine.loader import load_model
    from napari_sam.engine.propagate import propagate
    from napari_sam.synthetic import nuclei_3d
    from napari_sam.training.evaluate import ious_3d, seed_slices

    torch.set_num_threads(1)
    demo = load_model("demo", device="cpu", precision="fp32")
    image, truth = nuclei_3d((12, 320, 320), seed=31_050, z_step=2.5)
    grid = TileGrid.for_model(truth.shape[1:], demo.sam.image_size)
    assert grid is not None and grid.shape == (2, 2) and grid.tile == (192, 192)
    seeds = seed_slices(truth, (0.5,))
    across = []
    for obj in np.unique(seeds[seeds > 0]):
        z = int(np.flatnonzero((seeds == obj).any(axis=(1, 2)))[0])
        rows, cols = np.nonzero(seeds[z] == obj)
        if (rows.min() < 192 <= rows.max()) or (cols.min() < 192 <= cols.max()):
            across.append((int(obj), z))
    assert len(across) >= 3
    p = Predictor(demo)
    cache: dict = {}

    def embedding(z, tile):
        if (z, tile) not in cache:
            cache[z, tile] = p.compute_embedding(grid.read(image[z], tile), resize=False)
        return cache[z, tile]

    tiled = propagate_tiled(demo, grid, embedding, seeds)
    untiled = propagate(demo, lambda z: p.compute_embedding(image[z]), seeds)
    for obj, z in across:
        for zz in (z - 1, z + 1):
            if (truth[zz] == obj).sum() > 50:  # the nucleus is there: followed across
                rows, cols = np.nonzero(tiled[zz] == obj)
                assert len(rows), (obj, zz)
                assert (rows.min() < 192 <= rows.max()) or (cols.min() < 192 <= cols.max())
    ids = [obj for obj, _ in across]

    def mean_iou(result):
        return np.mean(
            ious_3d(
                np.where(np.isin(result, ids), result, 0), np.where(np.isin(truth, ids), truth, 0)
            )
        )

    assert mean_iou(tiled) >= 0.7, mean_iou(tiled)
    assert mean_iou(tiled) >= mean_iou(untiled) - 0.05, (mean_iou(tiled), mean_iou(untiled))
