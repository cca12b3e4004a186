"""Dask plumbing shared by the embedding precompute and automatic masks on a cluster.

Workers build the model from a picklable :class:`ModelSpec` with a picklable ``load``
function, **once per worker process**: the model is kept in this module's
``_WORKER_MODELS`` dict inside the worker process (keyed by spec and loader) and reused
by every later task there. That dict lives only in Dask worker processes; local runs
never use it. The slice data travels with each task as a :class:`Payload` (only that
slice of a numpy image, the culled graph of a dask image, a reference to a zarr array).
The tasks themselves build an :class:`~.provider.EmbeddingProvider` on the store the
driver opened and checked (``provider.py``, ``amg_dask.py``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .schema import ModelSignature
from .slicing import Index, SliceLayout

if TYPE_CHECKING:
    from ..engine.loader import SamModel


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


def _loader_key(spec: ModelSpec, load: Loader) -> tuple[ModelSpec, str]:
    return spec, f"{load.__module__}.{load.__qualname__}"


def worker_threads() -> int:
    """Dask workers: torch's CPU threads as ``OMP_NUM_THREADS`` says. The variable that
    :class:`dask_client` gives its LocalCluster workers (cores // workers) reaches the
    worker's environment after torch has read Dask's pre-spawn value (1), so it is
    applied here, before the worker's first model load. Returns the thread count."""
    import torch

    n = os.environ.get("OMP_NUM_THREADS", "")
    if n.isdigit() and int(n) >= 1 and torch.get_num_threads() != int(n):
        torch.set_num_threads(int(n))
    return torch.get_num_threads()


def worker_model(spec: ModelSpec, load: Loader = load_spec) -> SamModel:
    """The model for ``spec`` in this worker process, loaded on first use only (with
    the worker's thread count applied first: :func:`worker_threads`)."""
    key = _loader_key(spec, load)
    with _WORKER_LOCK:
        if key not in _WORKER_MODELS:
            worker_threads()
            _WORKER_MODELS[key] = load(spec)
            _WORKER_LOADS[key] = _WORKER_LOADS.get(key, 0) + 1
        return _WORKER_MODELS[key]


def worker_loads(spec: ModelSpec, load: Loader) -> int:
    """How often this worker process loaded ``spec`` with ``load``."""
    with _WORKER_LOCK:
        return _WORKER_LOADS.get(_loader_key(spec, load), 0)


def worker_load_counts() -> dict[str, int]:
    """How often each model was loaded in this process (``client.run`` diagnostics)."""
    with _WORKER_LOCK:
        return {f"{spec.name}|{loader}": n for (spec, loader), n in _WORKER_LOADS.items()}


def signature_task(spec: ModelSpec, load: Loader) -> ModelSignature:
    """Worker side: the signature of the spec's model (the driver never loads it)."""
    return ModelSignature.of(worker_model(spec, load))


# ----------------------------------------------------------------------------- payloads
class Payload:
    """Slice source shipped with a task: a numpy slice, or a lazy (zarr / dask) array
    that the worker reads. Wrapped so Dask does not try to unpack collections."""

    def __init__(self, data: Any) -> None:
        self.data = data


def payload(image: Any, layout: SliceLayout, idx: Index) -> Payload:
    """What a task needs to read slice ``idx`` of ``image``."""
    if isinstance(image, np.ndarray):
        return Payload(layout.read(image, idx))  # ship only this slice
    if hasattr(image, "dask"):
        import dask

        (part,) = dask.optimize(image[layout.key(idx)])  # culled graph of this slice
        if layout.spatial[0] > layout.spatial[1]:
            part = part.swapaxes(0, 1)
        return Payload(part)
    return Payload(image)  # zarr & co: pickled as a reference, read by the worker


def read_payload(p: Payload, layout: SliceLayout, idx: Index) -> np.ndarray:
    """Worker side: the slice's pixels (H, W) / (H, W, 3|4)."""
    d = p.data
    if isinstance(d, np.ndarray):
        return d
    if hasattr(d, "dask"):
        return np.asarray(d.compute(scheduler="sync"))
    return layout.read(d, idx)


def task_key(kind: str, idx: Index) -> str:
    """A unique Dask key for one slice's task (never merged with another run's)."""
    return f"napari-sam-{kind}-{'-'.join(map(str, idx)) or 'slice'}-{os.urandom(4).hex()}"


def completed(client: Any, futures: list[Any]) -> Iterator[Any]:
    """The futures' results as they complete (a worker's error is re-raised here);
    closing the iterator cancels the pending tasks."""
    from distributed import as_completed

    try:
        for fut in as_completed(futures):
            yield fut.result()
    finally:
        client.cancel([f for f in futures if not f.done()])


class dask_client:
    """Context manager: a Client for an address / a Client as is / a new LocalCluster
    with N worker processes (closed at the end)."""

    def __init__(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        self.owned: list[Any] = []

    def __enter__(self) -> Any:
        import dask
        from distributed import Client, LocalCluster

        from ..engine.device import allocator_environ

        s = self.scheduler
        if isinstance(s, Client):
            return s
        if isinstance(s, bool) or not isinstance(s, (int, str)):
            raise ValueError(f"scheduler must be None, an address, a Client or an int, got {s!r}")
        if isinstance(s, int):
            if s < 1:
                raise ValueError(f"number of workers must be ≥ 1, got {s}")
            threads = str(max(1, (os.cpu_count() or 1) // s))
            # set before each worker starts, over Dask's MALLOC_TRIM_THRESHOLD_=65536
            spawn = {**dask.config.get("distributed.nanny.pre-spawn-environ", {})}
            with dask.config.set({"distributed.nanny.pre-spawn-environ": {
                **spawn, **allocator_environ()
            }}):  # fmt: skip
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
