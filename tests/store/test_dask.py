"""Dask backend: a real LocalCluster (2 worker processes) writing one store, and the
automatic-mask-generation path (store checked once by the driver)."""

from __future__ import annotations

import collections

import pytest
import torch
import zarr

from napari_sam.engine.decode.predictor import Predictor
from napari_sam.store import (
    EmbeddingStore,
    SliceLayout,
    StaleSliceError,
    StoreMismatchError,
    precompute,
)
from napari_sam.store.amg_dask import amg_slices
from napari_sam.store.cluster import worker_load_counts

from requires import require
from store_helpers import compute, make_tiny, volume

distributed = require("distributed")


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        env={"OMP_NUM_THREADS": "1"},
    ) as c:
        yield c


@pytest.mark.slow
def test_local_cluster_writes_one_store_matching_local_computation(cluster, model, spec, tmp_path):
    img = volume((10, 40, 50))
    z = zarr.open_array(
        tmp_path / "img.zarr", mode="w", shape=img.shape, chunks=(1, 40, 50), dtype=img.dtype
    )
    z[:] = img
    p = Predictor(model)
    ref = [p.compute_embedding(img[i]).features.half().float() for i in range(len(img))]
    for name, image in [("numpy", img), ("zarr", z)]:
        path = tmp_path / f"{name}.zarr"
        steps = list(precompute(path, image, spec, scheduler=cluster.scheduler_address))
        assert [s.done for s in steps] == list(range(11)) and steps[-1].total == 10
        pids = collections.Counter(s.message.split("worker ")[1] for s in steps[1:])
        assert max(pids.values()) > 1  # some worker ran several tasks ...
        store = EmbeddingStore.open(path, model, image=img, mode="r")
        assert store.missing() == []
        for i in range(len(img)):
            assert torch.equal(store.get(i).features, ref[i]), (name, i)
    with distributed.Client(cluster) as client:
        counts = client.run(worker_load_counts)
    assert len(counts) == 2
    for per_worker in counts.values():  # ... but each worker loaded the model once
        assert set(per_worker.values()) <= {1}
    assert any(counts.values())


@pytest.mark.slow
def test_resume_on_cluster_computes_only_missing(cluster, model, spec, tmp_path):
    img = volume((6, 40, 50), seed=3)
    path = tmp_path / "s.zarr"
    store = EmbeddingStore.open(path, model, image=img)
    list(compute(store, keys=[(0,), (4,)]))  # locally
    steps = list(compute(store, scheduler=cluster.scheduler_address, spec=spec))  # on Dask
    assert steps[0].done == 2 and len(steps) == 5
    got = sorted(int(s.message.split("(")[1].split(",")[0]) for s in steps[1:])
    assert got == [1, 2, 3, 5]
    store = EmbeddingStore.open(path, model, image=img, mode="r")
    assert store.missing() == [] and all(store.get(i) is not None for i in range(6))


def test_bad_scheduler_values(model, spec, tmp_path):
    img = volume((2, 40, 50))
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match=r"scheduler|workers"):
            list(precompute(tmp_path / "s.zarr", img, spec, scheduler=bad))
    assert not (tmp_path / "s.zarr").exists()


AMG = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}


def _amg(cluster, spec, img, store, **kw) -> dict:
    layout = SliceLayout.for_shape(img.shape)
    steps = amg_slices(
        img,
        layout,
        list(layout.indices()),
        spec,
        AMG,
        scheduler=cluster.scheduler_address,
        store=str(store),
        **kw,
    )
    try:
        while True:
            next(steps)
    except StopIteration as stop:
        return stop.value


def _files(root) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_amg_never_replaces_a_store_made_for_other_weights(cluster, model, spec, tmp_path):
    img = volume((3, 40, 50), seed=5)
    path = tmp_path / "s.zarr"
    list(compute(EmbeddingStore.open(path, make_tiny(seed=1), image=img)))
    before = _files(path)
    with pytest.raises(StoreMismatchError, match="--overwrite on the command line"):
        _amg(cluster, spec, img, path)
    assert _files(path) == before  # the other model's store is untouched
    labels = _amg(cluster, spec, img, path, overwrite=True)  # the user asked
    assert sorted(labels) == [(0,), (1,), (2,)]
    store = EmbeddingStore.open(path, model, image=img, mode="r")
    assert store.missing() == []  # replaced, and filled by the workers
    ref = Predictor(model).compute_embedding(img[2]).features.half().float()
    assert torch.equal(store.get(2).features, ref)


@pytest.mark.slow
def test_amg_with_a_changed_slice_refuses_unless_overwrite(cluster, model, spec, tmp_path):
    img = volume((3, 40, 50), seed=6)
    path = tmp_path / "s.zarr"
    list(compute(EmbeddingStore.open(path, model, image=img)))
    img[1, 3, 3] += 1
    with pytest.raises(StaleSliceError, match=r"slice \(1,\)"):
        _amg(cluster, spec, img, path)
    _amg(cluster, spec, img, path, overwrite=True)
    ref = Predictor(model).compute_embedding(img[1]).features.half().float()
    store = EmbeddingStore.open(path, model, image=img, mode="r")
    assert torch.equal(store.get(1).features, ref)  # recomputed from the new data


@pytest.mark.slow
def test_tiles_on_the_cluster_equal_local_tiles(cluster, model, spec, tmp_path):
    """A tiled layout on Dask: one task per tile, each reading only its outer region
    (numpy, zarr and dask images), the entries equal to the local computation."""
    import dask.array as da
    import numpy as np

    from napari_sam.engine.tiling import TileGrid
    from napari_sam.store import EmbeddingProvider, TiledLayout

    img = volume((2, 100, 120))
    grid = TileGrid((100, 120), (48, 48), (8, 8))
    layout = TiledLayout(SliceLayout.for_shape(img.shape), grid)
    local = EmbeddingProvider(model, img, layout, store=tmp_path / "local.zarr")
    list(local.precompute())
    want = np.asarray(zarr.open_group(tmp_path / "local.zarr")["embeddings"][...])
    z = zarr.open_array(tmp_path / "img.zarr", mode="w", shape=img.shape, chunks=(1, 50, 60),
                        dtype=img.dtype)  # fmt: skip
    z[:] = img
    for name, image in [("numpy", img), ("zarr", z), ("dask", da.from_array(img, (1, 50, 60)))]:
        path = tmp_path / f"{name}.zarr"
        kw = {"layout": layout, "scheduler": cluster.scheduler_address}
        steps = list(precompute(path, image, spec, **kw))
        assert steps[-1].done == steps[-1].total == 18, name
        got = np.asarray(zarr.open_group(path)["embeddings"][...])
        assert got.shape == (2, 3, 3, *want.shape[3:]) and np.array_equal(got, want), name


def _refault_pages() -> tuple[dict[str, str | None], float]:
    """Worker side: the MALLOC_* variables it started with and the minor page faults per
    round of allocating, filling and freeing an 8 MB block (what an encoder call's
    activations do)."""
    import resource

    import numpy as np

    start = dict(  # the environment the process started with (glibc reads it)
        kv.split("=", 1) for kv in open("/proc/self/environ").read().split("\0") if "=" in kv
    )
    env = {k: start.get(k) for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")}
    np.ones(2**20)  # warm-up
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        np.ones(2**20).sum()  # 8 MB
    return env, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20


@pytest.mark.slow
def test_local_cluster_of_workers_n_keeps_freed_activations(monkeypatch):
    """``--workers N``: the workers we spawn get tune_cpu_allocator's glibc setting, not
    Dask's MALLOC_TRIM_THRESHOLD_=65536 (which re-faulted every activation: the demo
    model's tile embedding ran 2× slower in a worker than here)."""
    import os

    from napari_sam.engine.device import MMAP_THRESHOLD, TRIM_THRESHOLD, allocator_environ
    from napari_sam.store.cluster import dask_client

    for var in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "NAPARI_SAM_MALLOC_TUNING"):
        monkeypatch.delenv(var, raising=False)
    if not allocator_environ():
        pytest.skip("no glibc allocator tuning on this platform")
    saved = dict(os.environ)  # Dask's nanny writes its pre-spawn variables here too
    try:
        with dask_client(1) as client:
            env, faults = client.submit(_refault_pages, pure=False).result()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert env == {
        "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD),
        "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD),
    }
    assert faults < 100  # with Dask's own setting: ~500 per round (measured)
    monkeypatch.setenv("NAPARI_SAM_MALLOC_TUNING", "0")
    assert allocator_environ() == {}


def _threads_after_load() -> tuple[str | None, int]:
    """Worker side: OMP_NUM_THREADS and torch's threads once a model is loaded."""
    import os

    import torch

    from napari_sam.store.cluster import ModelSpec, worker_model

    worker_model(ModelSpec("tiny-threads"), load=_tiny_loader)
    return os.environ.get("OMP_NUM_THREADS"), torch.get_num_threads()


def _tiny_loader(spec):
    return make_tiny()


@pytest.mark.slow
def test_local_cluster_workers_use_their_share_of_the_cores():
    """``--workers N``: each worker's torch runs cores // N threads (torch had read
    Dask's pre-spawn OMP_NUM_THREADS=1 before the cluster's own value arrived)."""
    import os

    from napari_sam.store.cluster import dask_client

    saved = dict(os.environ)
    try:
        with dask_client(1) as client:
            omp, threads = client.submit(_threads_after_load, pure=False).result()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    want = max(1, os.cpu_count() or 1)
    assert omp == str(want) and threads == want
