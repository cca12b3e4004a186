"""``EmbeddingProvider``: THE way to get the embedding of a region of an image — from RAM
(a bounded LRU), else from the zarr store if it holds a valid one, else computed by the
encoder (and written to the store when one is attached).

Used by the widget's session, the command line (``segment``, ``amg``, ``propagate``,
``embed``) and the Dask workers, so every caller gets the same cache rules::

    provider = EmbeddingProvider(model, image, layout, store="cells.zarr")
    emb = provider.get((z,))                 # RAM → store → encoder (→ store)
    for p in provider.precompute(): ...      # Progress; local or scheduler=... (Dask)

Keys are region keys (:mod:`.regions`): the caller's slice index, or with a
:class:`~.tiled_layout.TiledLayout` ``(*slice_index, tile_row, tile_col)`` — a tile's
outer region embedded at native resolution (a store entry per tile).
Thread-safe:
any number of threads may call :meth:`get`; two threads asking for the same key
compute it once (the second waits for the first). RAM holds at most ``capacity``
embeddings; keys marked with :meth:`keep` (asked for again later, e.g. the slices both
propagation sweeps visit) are evicted only after every other key. ``peak`` and
``computed`` record the most held at once and the encoder runs.

A stored region whose image data changed (its fingerprint differs) raises
:class:`~.files.StaleSliceError` (``on_stale="error"``: the command line, the workers)
or is encoded into RAM only and listed in :attr:`stale` (``on_stale="ram"``: the widget
— the store keeps its entry, the user did not ask to replace it). A store opened with
``overwrite`` recomputes and replaces such regions. The store itself is opened with
``on_mismatch="error"`` unless the user asked (``overwrite=True``).
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..engine.embedding import Embedding, Encoder
from ..engine.image import Normalization
from ..engine.progress import Progress
from .embeddings import EmbeddingStore
from .files import StaleSliceError, StoreWriteError
from .regions import RegionKey, RegionLayout
from .schema import ModelSignature
from .slicing import SliceLayout

DEFAULT_CAPACITY = 16  # 4 MiB each for SAM's (256, 64, 64) float32 embeddings
OnStale = Literal["error", "ram"]


class EmbeddingProvider:
    """Embeddings of the regions of one image for one model and normalisation.

    model: the :class:`~napari_sam.engine.loader.SamModel` (or only its
    :class:`~.schema.ModelSignature`: a driver that computes on Dask workers only).
    image: the nD image (numpy / dask / zarr; read region by region), or None when the
    caller passes each region's pixels to :meth:`get` (the Dask workers). layout: its
    :class:`~.regions.RegionLayout` (default: the store's, else
    :meth:`SliceLayout.for_shape`). normalization: default the store's, else
    ``Normalization()``. store: an opened :class:`~.embeddings.EmbeddingStore`, or a path
    opened here for this image (``on_mismatch="overwrite"`` only with ``overwrite``;
    ``dtype`` / ``source`` for a new store), or None for RAM only. capacity: the most
    embeddings kept in RAM (≥ 1). on_stale: see the module docstring. check: called with
    (key, pixels) before a region is encoded (raise to refuse it). reading: a context
    manager factory wrapping every read of image pixels (the command line turns read
    errors into one line there).
    """

    def __init__(
        self,
        model: Any,
        image: Any = None,
        layout: RegionLayout | None = None,
        *,
        normalization: Normalization | None = None,
        store: EmbeddingStore | str | Path | None = None,
        overwrite: bool = False,
        capacity: int = DEFAULT_CAPACITY,
        on_stale: OnStale = "error",
        check: Callable[[RegionKey, np.ndarray], None] | None = None,
        reading: Callable[[], AbstractContextManager[Any]] | None = None,
        dtype: str | None = None,
        source: str | None = None,
    ) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be ≥ 1, got {capacity!r}")
        if on_stale not in ("error", "ram"):
            raise ValueError(f"on_stale must be 'error' or 'ram', got {on_stale!r}")
        opened = store if isinstance(store, EmbeddingStore) else None
        if layout is None:
            if opened is not None:
                layout = opened.layout
            elif image is not None:
                layout = SliceLayout.for_shape(image.shape)
            else:
                raise ValueError("give the image, its layout or an opened store")
        if normalization is None:
            normalization = opened.normalization if opened is not None else Normalization()
        # a tiled layout (.tiled_layout): regions are tiles embedded at native resolution
        self.native = bool(getattr(layout, "native", False))
        self.model, self.image, self.layout = model, image, layout
        self.normalization = normalization
        self.capacity, self.on_stale = capacity, on_stale
        self._check, self._reading = check, reading
        self._encoder = None if isinstance(model, ModelSignature) else Encoder(model, normalization)
        self._ram: OrderedDict[RegionKey, Embedding] = OrderedDict()
        self._keep: set[RegionKey] = set()
        self._pending: dict[RegionKey, Future] = {}
        self._lock = threading.Lock()  # guards the RAM, keep, pending, counters, stale
        self.stale: set[RegionKey] = set()  # stored regions made from other data (RAM only)
        self.peak = 0  # most embeddings held in RAM at once
        self.computed = 0  # encoder runs
        if store is None or opened is not None:
            self.store = opened
        else:
            self.store = EmbeddingStore.open(
                store,
                model,
                image=image,
                layout=layout,
                normalization=normalization,
                dtype=dtype,
                on_mismatch="overwrite" if overwrite else "error",
                source=source,
            )

    @classmethod
    def for_store(cls, store: EmbeddingStore, **kwargs: Any) -> EmbeddingProvider:
        """A provider on an opened store: its model (or signature), bound image, layout
        and normalisation."""
        model = store.sam_model if store.sam_model is not None else store.model
        return cls(model, store.image, store.layout, store=store, **kwargs)

    # ------------------------------------------------------------------ RAM
    def cached(self, key: Iterable[int]) -> Embedding | None:
        """The embedding if it is in RAM (never reads or computes: safe on a GUI thread)."""
        key = self.layout.check_key(key)
        with self._lock:
            emb = self._ram.get(key)
            if emb is not None:
                self._ram.move_to_end(key)
            return emb

    def keep(self, keys: Iterable[Iterable[int]]) -> None:
        """Keys that will be asked for again: evicted last (replaces the set)."""
        with self._lock:
            self._keep = {tuple(k) for k in keys}

    def clear(self) -> None:
        """Forget every embedding in RAM (e.g. before the next time point)."""
        with self._lock:
            self._ram.clear()
            self._keep = set()

    def ram_keys(self) -> list[RegionKey]:
        """The keys in RAM, least recently used first."""
        with self._lock:
            return list(self._ram)

    def __len__(self) -> int:
        return len(self._ram)

    def _remember(self, key: RegionKey, emb: Embedding) -> None:
        with self._lock:
            self._ram[key] = emb
            self._ram.move_to_end(key)
            while len(self._ram) > self.capacity:
                victim = next((k for k in self._ram if k not in self._keep), None)
                del self._ram[next(iter(self._ram)) if victim is None else victim]
            self.peak = max(self.peak, len(self._ram))

    # ------------------------------------------------------------------ one region
    def read(self, key: Iterable[int]) -> np.ndarray:
        """The region's pixels (H, W) / (H, W, 3|4) as numpy, read from the image."""
        key = self.layout.check_key(key)
        if self.image is None:
            raise ValueError("this provider has no image: pass the region's pixels")
        with self._reading() if self._reading is not None else contextlib.nullcontext():
            return self.layout.read(self.image, key)

    def get(self, key: Iterable[int], data: np.ndarray | None = None) -> Embedding:
        """The embedding of region ``key``: RAM → store (if valid) → encoder (→ store).
        data: the region's pixels when the caller has them (default: read them)."""
        return self._get(self.layout.check_key(key), data, use_ram=True)

    def _get(self, key: RegionKey, data: np.ndarray | None, use_ram: bool) -> Embedding:
        with self._lock:
            emb = self._ram.get(key) if use_ram else None
            if emb is not None:
                self._ram.move_to_end(key)
                return emb
            pending = self._pending.get(key)
            owner = pending is None
            if owner:
                pending = self._pending[key] = Future()
        if not owner:
            return pending.result()  # computed by another thread (its error re-raised)
        try:
            emb = self._load(key, data)
        except BaseException as err:
            with self._lock:
                del self._pending[key]
            pending.set_exception(err)
            raise
        self._remember(key, emb)
        with self._lock:
            del self._pending[key]
        pending.set_result(emb)
        return emb

    def _load(self, key: RegionKey, data: np.ndarray | None) -> Embedding:
        """Store → encoder (→ store), outside the lock."""
        if data is None:
            data = self.read(key)
        if self._check is not None:
            self._check(key, data)
        emb, stale = None, False
        if self.store is not None:
            try:
                emb = self.store.get(key, data)
            except StaleSliceError:
                if self.on_stale == "error":
                    raise
                stale = True  # keep the store's entry: the user did not ask to replace it
                with self._lock:
                    self.stale.add(key)
        if emb is None:
            if self._encoder is None:
                raise ValueError(
                    f"region {key} is not in the store and this provider has no loaded model"
                )
            emb = self._encoder(data, resize=False) if self.native else self._encoder(data)
            with self._lock:
                self.computed += 1
            if self.store is not None and not stale:
                self.store.put(key, emb, data)
        return emb

    # ------------------------------------------------------------------ many regions
    def _batch(self) -> int:
        """Regions per encoder call in precompute (:func:`~napari_sam.engine.plan
        .precompute_batch`; 1 without a loaded model)."""
        from ..engine.plan import precompute_batch

        if self._encoder is None:
            return 1
        return precompute_batch(self.model.plan, int(self.model.sam.image_size))

    def _compute_many(self, keys: list[RegionKey]) -> None:
        """Encode ``keys`` in ONE encoder call and write them to the store (kept in RAM
        without one). Keys another thread is computing are waited for instead; a failure
        reaches every thread waiting for these keys."""
        with self._lock:
            mine = [k for k in keys if k not in self._pending]
            futures = {k: self._pending.setdefault(k, Future()) for k in mine}
        try:
            data = [self.read(k) for k in mine]
            if self._check is not None:
                for key, pixels in zip(mine, data, strict=False):
                    self._check(key, pixels)
            encoder: Any = self._encoder  # tiles: native resolution (never resized)
            embeddings = encoder.many(data, resize=False) if self.native else encoder.many(data)
            with self._lock:
                self.computed += len(mine)
            for key, emb, pixels in zip(mine, embeddings, data, strict=False):
                if self.store is not None:
                    self.store.put(key, emb, pixels)
                self._remember(key, emb)
        except BaseException as err:
            with self._lock:
                for key in mine:
                    self._pending.pop(key, None)
            for future in futures.values():
                future.set_exception(err)
            raise
        with self._lock:
            for key in mine:
                del self._pending[key]
        for key, emb in zip(mine, embeddings, strict=False):
            futures[key].set_result(emb)
        for key in keys:
            if key not in futures:
                self._get(key, None, use_ram=True)  # another thread's: wait for it

    def keys(self, keys: Iterable[Iterable[int]] | None = None) -> list[RegionKey]:
        """``keys`` checked (default: every region of the image)."""
        every = self.layout.region_keys() if keys is None else keys
        return [self.layout.check_key(k) for k in every]

    def prefetch(self, keys: Iterable[Iterable[int]]) -> Generator[Progress, None, None]:
        """Bring ``keys`` into RAM (reading or computing them); yields Progress.
        Closing the generator stops after the current region."""
        wanted = self.keys(keys)
        yield Progress(0, len(wanted), "prefetching")
        for done, key in enumerate(wanted, 1):
            self.get(key)
            yield Progress(done, len(wanted), f"{'tile' if self.native else 'slice'} {key}")

    def precompute(
        self,
        keys: Iterable[Iterable[int]] | None = None,
        *,
        verify: bool = False,
        scheduler: Any = None,
        client: Any = None,
        spec: Any = None,
        load: Any = None,
    ) -> Generator[Progress, None, None]:
        """Compute the regions of ``keys`` (default all) that the store lacks (every
        key when there is no store); yields Progress (done, total, message) with
        ``done`` counting the regions already complete. Closing the generator cancels;
        what was written stays complete.

        Here, with the provider's model; or with ``scheduler`` (an address, an int →
        LocalCluster, a ``distributed.Client``) / ``client``: on Dask, whose workers load
        ``spec`` (a :class:`~.cluster.ModelSpec`) with ``load`` and write into the store
        (on a file system they see). verify: also re-read and fingerprint the complete
        regions, recomputing (or, with ``on_mismatch="error"``, refusing:
        StaleSliceError) those whose data changed — this reads every requested region.
        """
        wanted = self.keys(keys)
        store = self.store
        if store is None:
            todo = wanted
        else:
            if store.read_only:
                raise StoreWriteError(f"store {store.path} was opened read-only")
            if self.image is None:
                raise ValueError("precompute needs the image (give it to the provider)")
            todo = store.missing(wanted)
            if verify:
                lacking = set(todo)
                # store.get raises StaleSliceError when on_mismatch="error"
                stale = [
                    k for k in wanted if k not in lacking and store.get(k, self.read(k)) is None
                ]
                todo = sorted(set(todo) | set(stale))
        total, done = len(wanted), len(wanted) - len(todo)
        yield Progress(done, total, f"{done} of {total} slices already complete")
        if not todo:
            return
        if scheduler is None and client is None:
            batch = self._batch()
            for start in range(0, len(todo), batch):
                keys = todo[start : start + batch]
                if len(keys) == 1:
                    self._get(keys[0], None, use_ram=store is None)
                else:
                    self._compute_many(keys)
                done += len(keys)
                yield Progress(done, total, f"slice {keys[-1]}")
            return
        if store is None:
            raise ValueError("a Dask precompute needs a store the workers can write to")
        if spec is None:
            raise ValueError("a Dask run needs a ModelSpec (spec=...) the workers can load")
        yield from _precompute_on_dask(self, todo, spec, load, scheduler, client, done, total)


# ------------------------------------------------------------------------------ Dask
def _precompute_on_dask(
    provider: EmbeddingProvider,
    todo: list[RegionKey],
    spec: Any,
    load: Any,
    scheduler: Any,
    client: Any,
    done: int,
    total: int,
) -> Generator[Progress, None, None]:
    from .cluster import completed, dask_client, load_spec, payload, task_key

    store, layout = provider.store, provider.layout
    load = load or load_spec
    with contextlib.ExitStack() as stack:
        if client is None:
            client = stack.enter_context(dask_client(scheduler))
        futures = [
            client.submit(
                embed_task,
                spec,
                load,
                str(store.path),
                layout,
                provider.normalization,
                store.on_mismatch,
                [(key, payload(provider.image, layout, key))],
                pure=False,
                key=task_key("embed", key),
            )
            for key in todo
        ]
        results = stack.enter_context(contextlib.closing(completed(client, futures)))
        for result in results:
            done += len(result["indices"])
            yield Progress(done, total, f"slice {result['indices'][0]} (worker {result['pid']})")


def embed_task(
    spec: Any,
    load: Any,
    path: str,
    layout: SliceLayout,
    normalization: Normalization,
    on_mismatch: str,
    items: list[tuple[RegionKey, Any]],
) -> dict[str, Any]:
    """Worker side: a provider on the store the driver opened (``"r+"``: it never
    creates, replaces or deletes one), with the model from the worker cache; encodes and
    writes ``items``."""
    import os

    from .cluster import read_payload, worker_loads, worker_model

    model = worker_model(spec, load)
    store = EmbeddingStore.open(
        path, model, layout=layout, normalization=normalization, mode="r+",
        on_mismatch=on_mismatch,
    )  # fmt: skip
    provider = EmbeddingProvider(model, None, layout, store=store, capacity=1)
    for key, part in items:
        provider.get(key, read_payload(part, layout, key))
    keys = [k for k, _ in items]
    return {"indices": keys, "pid": os.getpid(), "loads": worker_loads(spec, load)}
