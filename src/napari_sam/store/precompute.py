"""``precompute``: open (or create) the store for an image and compute its missing
embeddings, here or on a Dask cluster — the entry point of ``napari-sam embed``.

A generator of :class:`~napari_sam.engine.progress.Progress` (done, total, message);
closing it cancels (the slices written so far stay complete). Each slice is read,
encoded and written on its own, so a run killed at any moment resumes with only the
missing slices. The work is :meth:`.provider.EmbeddingProvider.precompute`; on Dask the
driver never loads the model: one worker reports the model's signature, used to open
and check the store (:mod:`.cluster`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..engine.image import Normalization
from ..engine.progress import Progress
from .cluster import Loader, ModelSpec, dask_client, load_spec, signature_task
from .embeddings import EmbeddingStore, OnMismatch
from .provider import EmbeddingProvider
from .slicing import Index, SliceLayout

__all__ = ["ModelSpec", "load_spec", "precompute"]


def precompute(
    path: str | Path,
    image: Any,
    spec: ModelSpec,
    *,
    indices: Iterable[Index] | None = None,
    layout: SliceLayout | None = None,
    normalization: Normalization | None = None,
    dtype: str | None = None,
    scheduler: Any = None,
    on_mismatch: OnMismatch = "error",
    verify: bool = False,
    load: Loader = load_spec,
    source: str | None = None,
) -> Iterator[Progress]:
    """Open (or create) the store at ``path`` for ``image`` and compute missing slices.

    scheduler: None → here, with ``load(spec)``; an address string (or a
    ``distributed.Client``) → that Dask cluster; an int N → a new LocalCluster with N
    worker processes, closed at the end. on_mismatch: ``"overwrite"`` only when the user
    asked (a store made for something else is replaced, changed slices recomputed).
    """
    layout = layout or SliceLayout.for_shape(image.shape)
    opts = dict(image=image, layout=layout, normalization=normalization, dtype=dtype)
    opts.update(on_mismatch=on_mismatch, source=source)
    if scheduler is None:
        model = load(spec)
        store = EmbeddingStore.open(path, model, **opts)
        yield from EmbeddingProvider.for_store(store).precompute(indices, verify=verify)
        return
    with dask_client(scheduler) as client:
        sig = client.submit(signature_task, spec, load, pure=False).result()
        store = EmbeddingStore.open(path, sig, **opts)
        provider = EmbeddingProvider.for_store(store)
        yield from provider.precompute(indices, verify=verify, client=client, spec=spec, load=load)
