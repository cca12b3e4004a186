"""Precompute embeddings into a store: locally, or on a Dask cluster.

Both are generators of :class:`Progress` (done, total, message); closing the generator
cancels (the slices written so far stay complete). Each slice is read, encoded and
written on its own, so a run killed at any moment resumes with only the missing slices.

Dask: every task encodes and writes its own slices straight into the store (which must
be on a file system the workers see). Workers build the model from a picklable
:class:`ModelSpec` with a picklable ``load`` function, **once per worker process**: the
model is kept in this module's ``_WORKER_MODELS`` dict inside the worker process (keyed
by spec and loader) and reused by every later task there. That dict lives only in Dask
worker processes; local runs never use it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..engine.image import Normalization
from ..engine.progress import Progress
from .schema import ModelSignature, fingerprint
from .slicing import Index, SliceLayout

if TYPE_CHECKING:
    from ..engine.loader import SamModel
    from .embeddings import EmbeddingStore, OnMismatch


@dataclass(frozen=True)
class ModelSpec:
    """Everything a worker needs to load the model (picklable, hashable)."""

    name: str
    checkpoint: str | None = None
    device: str = "auto"
    precision: str = "auto"


def load_spec(spec: ModelSpec) -> SamModel:
    """Default loader: :func:`napari_sam.engine.loader.load_model` with the spec's fields."""
    from ..engine.loader import load_model

    return load_model(spec.name, spec.checkpoint, device=spec.device, precision=spec.precision)


Loader = Callable[[ModelSpec], "SamModel"]

# Per-worker-process model cache (Dask workers only, see module docstring).
_WORKER_MODELS: dict[tuple[ModelSpec, str], SamModel] = {}
_WORKER_LOADS: dict[tuple[ModelSpec, str], int] = {}
_WORKER_LOCK = threading.Lock()


def worker_model(spec: ModelSpec, load: Loader = load_spec) -> SamModel:
    """The model for ``spec`` in this worker process, loaded on first use only."""
    key = (spec, f"{load.__module__}.{load.__qualname__}")
    with _WORKER_LOCK:
        if key not in _WORKER_MODELS:
            _WORKER_MODELS[key] = load(spec)
            _WORKER_LOADS[key] = _WORKER_LOADS.get(key, 0) + 1
        return _WORKER_MODELS[key]


def worker_load_counts() -> dict[str, int]:
    """How often each model was loaded in this process (``client.run`` diagnostics)."""
    with _WORKER_LOCK:
        return {f"{spec.name}|{loader}": n for (spec, loader), n in _WORKER_LOADS.items()}


# ------------------------------------------------------------------------ entry points
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
    worker processes, closed at the end. With Dask the driver never loads the model: one
    worker reports the model's signature, used to open the store.
    """
    from .embeddings import EmbeddingStore

    layout = layout or SliceLayout.for_shape(image.shape)
    opts = dict(image=image, layout=layout, normalization=normalization, dtype=dtype)
    opts.update(on_mismatch=on_mismatch, source=source)
    if scheduler is None:
        model = load(spec)
        store = EmbeddingStore.open(path, model, **opts)
        yield from run(store, image, indices, verify=verify)
        return
    with _dask_client(scheduler) as client:
        sig = client.submit(_signature_task, spec, load, pure=False).result()
        store = EmbeddingStore.open(path, sig, **opts)
        yield from run(store, image, indices, spec=spec, client=client, load=load, verify=verify)


def run(
    store: EmbeddingStore,
    image: Any = None,
    indices: Iterable[Index] | None = None,
    *,
    scheduler: Any = None,
    client: Any = None,
    spec: ModelSpec | None = None,
    load: Loader = load_spec,
    verify: bool = False,
) -> Iterator[Progress]:
    """Compute the slices of ``indices`` (default all) that ``store`` lacks.

    Locally the store's own model is used (it must have been opened with a SamModel);
    with ``scheduler`` / ``client`` the workers load ``spec``. verify: also re-read and
    fingerprint the complete slices, recomputing (or, with ``on_mismatch="error"``,
    refusing) those whose data changed — this reads every requested slice.
    """
    from .embeddings import StoreWriteError

    if store.read_only:
        raise StoreWriteError(f"store {store.path} was opened read-only")
    image = store.image if image is None else image
    if image is None:
        raise ValueError("precompute needs the image (pass it or bind it to the store)")
    store.bind(image)
    wanted = [
        store.layout.check_index(i)
        for i in (store.layout.indices() if indices is None else indices)
    ]
    todo = store.missing(wanted)
    if verify:
        lacking = set(todo)
        stale = [
            i
            for i in wanted
            if i not in lacking
            and store.get(i) is None  # raises StaleSliceError when on_mismatch="error"
        ]
        todo = sorted(set(todo) | set(stale))
    total, done = len(wanted), len(wanted) - len(todo)
    yield Progress(done, total, f"{done} of {total} slices already complete")
    if not todo:
        return
    if scheduler is None and client is None:
        if store.sam_model is None:
            raise ValueError("local precompute needs a store opened with a loaded model")
        from ..engine.decode.predictor import Predictor

        predictor = Predictor(store.sam_model, store.normalization)
        for idx in todo:
            data = store.layout.read(image, idx)
            store.put(idx, predictor.compute_embedding(data), slice_fingerprint=fingerprint(data))
            done += 1
            yield Progress(done, total, f"slice {idx}")
        return
    if spec is None:
        raise ValueError("a Dask run needs a ModelSpec (spec=...) the workers can load")
    if client is not None:
        yield from _run_dask(store, image, todo, spec, load, client, done, total)
    else:
        with _dask_client(scheduler) as c:
            yield from _run_dask(store, image, todo, spec, load, c, done, total)


# ------------------------------------------------------------------------------ Dask
class _Payload:
    """Slice source shipped with a task: a numpy slice, or a lazy (zarr / dask) array
    that the worker reads. Wrapped so Dask does not try to unpack collections."""

    def __init__(self, data: Any) -> None:
        self.data = data


def _payload(image: Any, layout: SliceLayout, idx: Index) -> _Payload:
    if isinstance(image, np.ndarray):
        return _Payload(layout.read(image, idx))  # ship only this slice
    if hasattr(image, "dask"):
        import dask

        (part,) = dask.optimize(image[layout.key(idx)])  # culled graph of this slice
        if layout.spatial[0] > layout.spatial[1]:
            part = part.swapaxes(0, 1)
        return _Payload(part)
    return _Payload(image)  # zarr & co: pickled as a reference, read by the worker


def _read_payload(p: _Payload, layout: SliceLayout, idx: Index) -> np.ndarray:
    d = p.data
    if isinstance(d, np.ndarray):
        return d
    if hasattr(d, "dask"):
        return np.asarray(d.compute(scheduler="sync"))
    return layout.read(d, idx)


def _signature_task(spec: ModelSpec, load: Loader) -> ModelSignature:
    return ModelSignature.of(worker_model(spec, load))


def _embed_task(
    spec: ModelSpec,
    load: Loader,
    path: str,
    layout: SliceLayout,
    normalization: Normalization,
    items: list[tuple[Index, _Payload]],
) -> dict[str, Any]:
    """Worker side: encode and write ``items``; the model comes from the worker cache."""
    from ..engine.decode.predictor import Predictor
    from .embeddings import EmbeddingStore

    model = worker_model(spec, load)
    store = EmbeddingStore.open(path, model, layout=layout, normalization=normalization, mode="r+")
    predictor = Predictor(model, normalization)
    for idx, payload in items:
        data = _read_payload(payload, layout, idx)
        store.put(idx, predictor.compute_embedding(data), slice_fingerprint=fingerprint(data))
    key = (spec, f"{load.__module__}.{load.__qualname__}")
    return {"indices": [i for i, _ in items], "pid": os.getpid(), "loads": _WORKER_LOADS[key]}


def _run_dask(
    store: EmbeddingStore,
    image: Any,
    todo: list[Index],
    spec: ModelSpec,
    load: Loader,
    client: Any,
    done: int,
    total: int,
) -> Iterator[Progress]:
    from distributed import as_completed

    layout = store.layout
    futures = [
        client.submit(
            _embed_task,
            spec,
            load,
            str(store.path),
            layout,
            store.normalization,
            [(idx, _payload(image, layout, idx))],
            pure=False,
            key=f"napari-sam-embed-{'-'.join(map(str, idx)) or 'slice'}-{os.urandom(4).hex()}",
        )
        for idx in todo
    ]
    try:
        for fut in as_completed(futures):
            result = fut.result()  # re-raises a worker's error here
            done += len(result["indices"])
            yield Progress(done, total, f"slice {result['indices'][0]} (worker {result['pid']})")
    finally:
        client.cancel([f for f in futures if not f.done()])


class _dask_client:
    """Context manager: a Client for an address / a Client as is / a new LocalCluster."""

    def __init__(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        self.owned: list[Any] = []

    def __enter__(self) -> Any:
        from distributed import Client, LocalCluster

        s = self.scheduler
        if isinstance(s, Client):
            return s
        if isinstance(s, bool) or not isinstance(s, (int, str)):
            raise ValueError(f"scheduler must be None, an address, a Client or an int, got {s!r}")
        if isinstance(s, int):
            if s < 1:
                raise ValueError(f"number of workers must be ≥ 1, got {s}")
            threads = str(max(1, (os.cpu_count() or 1) // s))
            cluster = LocalCluster(
                n_workers=s,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                env={"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads},
            )
            self.owned.append(cluster)
            s = cluster
        try:
            client = Client(s, timeout="20s")
        except OSError as err:
            self.__exit__()
            raise ValueError(f"cannot connect to the Dask scheduler {s!r}: {err}") from None
        self.owned.insert(0, client)
        return client

    def __exit__(self, *exc: object) -> None:
        for obj in self.owned:
            obj.close()
        self.owned.clear()
