"""Dask backend: a real LocalCluster (2 worker processes) writing one store."""

from __future__ import annotations

import collections

import pytest
import torch
import zarr

from napari_sam.engine.predictor import Predictor
from napari_sam.store import EmbeddingStore, precompute
from napari_sam.store.precompute import worker_load_counts

from requires import require
from store_helpers import volume

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
    list(store.precompute(indices=[(0,), (4,)]))  # locally
    steps = list(store.precompute(scheduler=cluster.scheduler_address, spec=spec))  # on Dask
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
