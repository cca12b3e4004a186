"""Automatic mask generation of many slices on a Dask cluster (docs/amg_volumes.md).

With a store, the driver opens (or creates) it ONCE, with the model signature one worker
reports (the driver never loads the model), and checks it: a store made for something
else is refused unless ``overwrite=True`` (the user asked). Each task segments one
slice: the worker loads the model once per worker process
(:func:`.precompute.worker_model`), opens that already-checked store with mode ``"r+"``
(it can never create, replace or delete a store), takes the slice's embedding when it
is there and complete (else encodes the slice and writes it back), runs the 2D
generator and returns the slice's label image (ids 1..n). The driver (the caller
of :func:`amg_slices`) links the slices into 3D ids with
:func:`napari_sam.engine.amg.volume.link_slices`: linking is cheap and sequential.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterable
from typing import Any

import numpy as np

from ..engine.image import Normalization
from ..engine.progress import Progress
from .precompute import (
    Loader,
    ModelSpec,
    _dask_client,
    _Payload,
    _payload,
    _read_payload,
    _signature_task,
    load_spec,
    worker_model,
)
from .schema import fingerprint
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
    with _dask_client(scheduler) as client:
        from distributed import as_completed

        if store is not None:  # checked once, here; workers only open it "r+"
            from .embeddings import EmbeddingStore

            sig = client.submit(_signature_task, spec, load, pure=False).result()
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
                _payload(image, layout, idx),
                overwrite,
                pure=False,
                key=f"napari-sam-amg-{'-'.join(map(str, idx)) or 'slice'}-{os.urandom(4).hex()}",
            )
            for idx in todo
        ]
        try:
            for fut in as_completed(futures):
                idx, labels = fut.result()  # re-raises a worker's error here
                out[idx] = labels
                yield Progress(len(out), total, f"slice {idx}: {int(labels.max())} objects")
        finally:
            client.cancel([f for f in futures if not f.done()])
    return out


def _amg_task(
    spec: ModelSpec,
    load: Loader,
    params: dict[str, Any],
    store_path: str | None,
    layout: SliceLayout,
    normalization: Normalization,
    idx: Index,
    payload: _Payload,
    overwrite: bool = False,
) -> tuple[Index, np.ndarray]:
    """Worker side: one slice → its label image (model from the worker cache). The
    store was opened and checked by the driver; a worker opens it "r+" (never creates,
    replaces or deletes it) and refuses a store that does not match its model."""
    from ..engine.amg import AutomaticMaskGenerator
    from ..engine.decode.predictor import Predictor

    model = worker_model(spec, load)
    data = _read_payload(payload, layout, idx)
    emb = None
    store = None
    if store_path is not None:
        from .embeddings import EmbeddingStore
        from .files import StaleSliceError

        store = EmbeddingStore.open(
            store_path, model, layout=layout, normalization=normalization, mode="r+"
        )
        try:
            emb = store.get(idx, data)
        except StaleSliceError:
            if not overwrite:
                raise
            emb = None  # the user asked to recompute slices whose data changed
    if emb is None:
        emb = Predictor(model, normalization).compute_embedding(data)
        if store is not None:
            store.put(idx, emb, slice_fingerprint=fingerprint(data))
    amg = AutomaticMaskGenerator(model, normalization=normalization, **params)
    image = data if amg.crop_n_layers > 0 else None
    return idx, amg.generate(emb, image=image).labels
