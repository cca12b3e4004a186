"""Tiled automatic masks on Dask (store/amg_dask_tiles.py): tiles segmented on the
workers, merged on the driver by the local merge step — the labels equal the local
tiled result exactly; the store the driver checked is filled with one entry per tile."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr

from napari_sam.engine.amg import DEMO_PARAMS, AutomaticMaskGenerator
from napari_sam.engine.amg.tiled import TiledVolumeAmg
from napari_sam.engine.loader import load_model
from napari_sam.engine.metrics import object_f1
from napari_sam.engine.progress import run_to_end
from napari_sam.engine.tiling import TileGrid
from napari_sam.store import (
    EmbeddingProvider,
    EmbeddingStore,
    ModelSpec,
    SliceLayout,
    StoreMismatchError,
    TiledLayout,
)
from napari_sam.store.amg_dask_tiles import amg_tiles
from napari_sam.synthetic import nuclei_large

from requires import require
from store_helpers import make_tiny, volume

distributed = require("distributed")
dask = require("dask")

DEMO = ModelSpec("demo", None, device="cpu", precision="fp32")


# demo-model tiles take seconds each on a loaded 2-core machine: long comm timeouts so
# a busy worker is not dropped by the scheduler (a lost worker's tasks wait for another)
SLOW_COMMS = {"distributed.comm.timeouts.tcp": "300s", "distributed.comm.timeouts.connect": "120s"}


@pytest.fixture(scope="module")
def cluster():
    env = {"OMP_NUM_THREADS": "1", "DASK_DISTRIBUTED__COMM__TIMEOUTS__TCP": "300s"}
    with (
        dask.config.set(SLOW_COMMS),
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, env=env
        ) as c,
    ):
        yield c


def _run(steps):
    progress = []
    try:
        while True:
            progress.append(next(steps))
    except StopIteration as stop:
        return stop.value, progress


@pytest.fixture(scope="module")
def stack():
    """(2, 260, 180) uint16 small nuclei (8–24 px): 2 × 1 tiles of 192 + halo 32 for
    the demo model's 256-px input."""
    return np.stack([nuclei_large((260, 180), (8, 24), seed=s)[0] for s in (31, 32)])


@pytest.fixture(scope="module")
def local(stack):
    """The local tiled result: TiledVolumeAmg per slice (no linking), tiles embedded at
    native resolution by a provider on the same TiledLayout."""
    torch.set_num_threads(1)
    model = load_model("demo", device="cpu", precision="fp32")
    grid = TileGrid.for_model(stack.shape[1:], 256)
    layout = TiledLayout(SliceLayout.for_shape(stack.shape), grid)
    provider = EmbeddingProvider(model, stack, layout, capacity=1)
    amg = AutomaticMaskGenerator(model, **DEMO_PARAMS)
    vol = TiledVolumeAmg(amg, grid, lambda z, t: provider.get((z, *t)), 2, link=False)
    return layout, run_to_end(vol.run())


@pytest.mark.slow
def test_dask_tiles_equal_the_local_tiled_result(cluster, stack, local, tmp_path):
    """2 workers, window 4: tiles finish out of order and wait to be merged in order."""
    layout, expected = local
    assert layout.grid.shape == (2, 1) and expected.max() > 10
    kw = {"scheduler": cluster.scheduler_address}
    got, steps = _run(amg_tiles(stack, layout, [(0,), (1,)], DEMO, DEMO_PARAMS, **kw))
    assert sorted(got) == [(0,), (1,)]
    assert [s.done for s in steps] == list(range(5)) and steps[-1].total == 4
    for z in range(2):
        np.testing.assert_array_equal(got[(z,)], expected[z])


@pytest.mark.slow
def test_dask_tiles_fill_the_store_and_reuse_it(cluster, stack, local, tmp_path):
    layout, expected = local
    path = str(tmp_path / "tiles.zarr")
    kw = {"scheduler": cluster.scheduler_address, "store": path}
    first, _ = _run(amg_tiles(stack, layout, [(1,)], DEMO, DEMO_PARAMS, **kw))
    model = load_model("demo", device="cpu", precision="fp32")
    store = EmbeddingStore.open(path, model, layout=layout, mode="r")
    assert store.missing() == [(0, 0, 0), (0, 1, 0)]  # slice 0 was not asked for
    again, _ = _run(amg_tiles(stack, layout, [(1,)], DEMO, DEMO_PARAMS, window=1, **kw))
    np.testing.assert_array_equal(first[(1,)], expected[1])  # encoded by the workers
    # the second run read the (float16) stored tiles: the same objects as the local run
    tp, n_pred, n_true = object_f1(again[(1,)], expected[1], 0.9)
    assert n_true > 10 and 2 * tp / (n_pred + n_true) >= 0.95


@pytest.mark.slow
def test_dask_tiles_never_replace_a_store_made_for_other_weights(cluster, spec, tmp_path):
    img = volume((1, 100, 120), seed=4)
    grid = TileGrid((100, 120), (48, 48), (8, 8))
    layout = TiledLayout(SliceLayout.for_shape(img.shape), grid)
    path = tmp_path / "s.zarr"
    EmbeddingStore.open(path, make_tiny(seed=1), image=img, layout=layout)
    before = sorted(p.name for p in path.rglob("*"))
    params = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    kw = {"scheduler": cluster.scheduler_address, "store": str(path)}
    with pytest.raises(StoreMismatchError, match="--overwrite"):
        _run(amg_tiles(img, layout, [(0,)], spec, params, **kw))
    assert sorted(p.name for p in path.rglob("*")) == before
    got, _ = _run(amg_tiles(img, layout, [(0,)], spec, params, overwrite=True, **kw))
    assert got[(0,)].shape == (100, 120) and got[(0,)].dtype == np.uint32
    assert zarr.open_group(path)["embeddings"].shape[:3] == (1, 3, 3)


def test_bad_window_is_refused():
    img = volume((1, 100, 120))
    layout = TiledLayout(SliceLayout.for_shape(img.shape), TileGrid((100, 120), (48, 48), (8, 8)))
    with pytest.raises(ValueError, match="window must be ≥ 1"):
        _run(amg_tiles(img, layout, [(0,)], DEMO, DEMO_PARAMS, scheduler=1, window=0))
