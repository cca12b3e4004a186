"""Automatic mask generation of many slices on a Dask cluster (docs/amg_volumes.md).

With a store, the driver opens (or creates) it ONCE, with the model signature one worker
reports (the driver never loads the model), and checks it: a store made for something
else is refused unless ``overwrite=True`` (the user asked). Each task segments one
slice: the worker loads the model once per worker process
(:func:`.cluster.worker_model`) and builds an :class:`~.provider.EmbeddingProvider` on
that already-checked store, opened with mode ``"r+"`` (it can never create, replace or
delete a store): the slice's embedding comes from the store when it is there and
complete (else it is encoded and written back). Then the 2D generator runs and the
task returns the slice's label image (ids 1..n). The driver (the caller of
:func:`amg_slices`) links the slices into 3D ids with
:func:`napari_sam.engine.amg.volume.link_slices`: linking is cheap and sequential.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Iterable
from typing import Any

import numpy as np

from ..engine.image import Normalization
from ..engine.progress import Progress
from .cluster import (
    Loader,
    ModelSpec,
    Payload,
    completed,
    dask_client,
    load_spec,
    payload,
    read_payload,
    signature_task,
    task_key,
    worker_model,
)
from .embeddings import EmbeddingStore
from .provider import EmbeddingProvider
from .slicing import Index, SliceLayout


def amg_slices(
    image: Any,
    layout: SliceLayout,
    indices: Iterable[Index],
    spec: ModelSpec,
    params: dict[str, Any],
    *,
    scheduler: Any,
    store: str | None = None,
    normalization: Normalization | None = None,
    load: Loader = load_spec,
    overwrite: bool = False,
) -> Generator[Progress, None, dict[Index, np.ndarray]]:
    """Segment the slices ``indices`` of ``image`` on the cluster ``scheduler`` (an
    address, a ``distributed.Client`` or an int → LocalCluster, as in
    :func:`.precompute.precompute`). params: :class:`AutomaticMaskGenerator` keyword
    arguments. store: path of an embedding store the workers read (and fill); a store
    made for another model / normalisation / image raises
    :class:`~.files.StoreMismatchError` unless ``overwrite`` (only when the user asked:
    the store is replaced, slices whose data changed are recomputed). Yields Progress
    as slices finish; returns ``{index: (H, W) uint32 labels}``. Closing the generator
    cancels the pending tasks."""
    todo = [layout.check_index(i) for i in indices]
    norm = normalization or Normalization()
    out: dict[Index, np.ndarray] = {}
    total = len(todo)
    yield Progress(0, total, "submitting")
    with dask_client(scheduler) as client:
        if store is not None:  # checked once, here; workers only open it "r+"
            sig = client.submit(signature_task, spec, load, pure=False).result()
            EmbeddingStore.open(
                store,
                sig,
                layout=layout,
                normalization=norm,
                mode="a",
                on_mismatch="overwrite" if overwrite else "error",
            )
        futures = [
            client.submit(
                _amg_task,
                spec,
                load,
                params,
                store,
                layout,
                norm,
                idx,
                payload(image, layout, idx),
                overwrite,
                pure=False,
                key=task_key("amg", idx),
            )
            for idx in todo
        ]
        with contextlib.closing(completed(client, futures)) as results:
            for idx, labels in results:
                out[idx] = labels
                yield Progress(len(out), total, f"slice {idx}: {int(labels.max())} objects")
    return out


def _amg_task(
    spec: ModelSpec,
    load: Loader,
    params: dict[str, Any],
    store_path: str | None,
    layout: SliceLayout,
    normalization: Normalization,
    idx: Index,
    part: Payload,
    overwrite: bool = False,
) -> tuple[Index, np.ndarray]:
    """Worker side: one slice → its label image (:func:`generate_on_worker`)."""
    result = generate_on_worker(
        spec, load, params, store_path, layout, normalization, idx, part, overwrite
    )
    return idx, result.labels


def generate_on_worker(
    spec: ModelSpec,
    load: Loader,
    params: dict[str, Any],
    store_path: str | None,
    layout: Any,
    normalization: Normalization,
    key: Any,
    part: Payload,
    overwrite: bool = False,
) -> Any:
    """Worker side: the automatic masks of one region ``key`` of ``layout`` (a slice,
    or a tile of a tiled layout), model from the worker cache. The store was opened and
    checked by the driver; the worker's provider opens it "r+" (never creates, replaces
    or deletes it) and refuses a store that does not match its model; a region whose
    data changed is recomputed only with ``overwrite``. Returns the generator's result
    (labels (h, w) uint32, records, masks)."""
    from ..engine.amg import AutomaticMaskGenerator

    model = worker_model(spec, load)
    data = read_payload(part, layout, key)
    store = None
    if store_path is not None:
        store = EmbeddingStore.open(
            store_path, model, layout=layout, normalization=normalization, mode="r+",
            on_mismatch="overwrite" if overwrite else "error",
        )  # fmt: skip
    provider = EmbeddingProvider(
        model, None, layout, normalization=normalization, store=store, capacity=1
    )
    emb = provider.get(key, data)
    amg = AutomaticMaskGenerator(model, normalization=normalization, **params)
    image = data if amg.crop_n_layers > 0 else None
    return amg.generate(emb, image=image)
