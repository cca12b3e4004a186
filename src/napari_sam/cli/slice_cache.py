"""Embeddings of the slices of a volume for ``propagate`` and ``amg``: a bounded RAM
cache, then the zarr store given with ``--store`` (if any), then the encoder.

Why a few slices of RAM are enough (the engine's access pattern):

* ``VolumeAmg`` (engine/amg/volume.py) asks for every slice once, in order: nothing is
  ever asked for again.
* ``Propagator`` (engine/propagate/propagator.py) sweeps up, then down, asking for each slice at
  most once per sweep, and prefetches the next slice of the sweep in one background
  thread (so two slices are in flight). A slice is asked for by BOTH sweeps only when
  it lies strictly between two annotated slices (a gap filled from both sides, or two
  objects seeded on different slices). The command line marks those slices
  :meth:`SliceEmbeddings.keep`: they are evicted only after every other slice, so they
  are reused by the second sweep as long as ``capacity`` holds them; with ``--store``
  an evicted slice is read back from the store, never recomputed.

RAM never holds more than ``capacity`` embeddings (``peak`` records the most it held).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from .common import store_error
from .io import reading

Index = tuple[int, ...]
DEFAULT_CAPACITY = 16  # 4 MiB each for SAM's (256, 64, 64) float32 embeddings


class SliceEmbeddings:
    """index (t?, z) → Embedding; thread-safe for the engine's one prefetch thread.

    model: the SamModel; image: the nD image (numpy / zarr, read slice by slice);
    spatial: its (row, col) axes; store_path: a zarr embedding store to read and fill,
    opened with ``on_mismatch="overwrite"`` only when ``overwrite`` (the user's
    ``--overwrite``), else a store made for something else is refused; capacity: the
    most embeddings kept in RAM (≥ 1); source: the image's name in error messages.
    """

    def __init__(
        self,
        model: Any,
        image: Any,
        spatial: list[int],
        store_path: str | None = None,
        *,
        overwrite: bool = False,
        capacity: int = DEFAULT_CAPACITY,
        source: str = "the image",
    ) -> None:
        from ..engine.decode.predictor import Predictor
        from ..store import SliceLayout

        if capacity < 1:
            raise ValueError(f"capacity must be ≥ 1, got {capacity}")
        self.image, self.capacity, self.source = image, int(capacity), source
        self.layout = SliceLayout.for_shape(image.shape, spatial=spatial)
        self.predictor = Predictor(model)
        self._ram: OrderedDict[Index, Any] = OrderedDict()
        self._keep: set[Index] = set()
        self._lock = threading.Lock()
        self.peak = 0  # most embeddings held in RAM at once
        self.computed = 0  # encoder runs
        self.store = None
        if store_path:
            from ..store import EmbeddingStore, StoreError

            try:
                self.store = EmbeddingStore.open(
                    store_path,
                    model,
                    image=image,
                    layout=self.layout,
                    on_mismatch="overwrite" if overwrite else "error",
                )
            except StoreError as err:
                raise store_error(err, "--store") from None

    def keep(self, indices: Iterable[Index]) -> None:
        """Slices that will be asked for again: evicted last (replaces the set)."""
        with self._lock:
            self._keep = {tuple(i) for i in indices}

    def clear(self) -> None:
        """Forget every embedding in RAM (e.g. before the next time point)."""
        with self._lock:
            self._ram.clear()
            self._keep = set()

    def __len__(self) -> int:
        return len(self._ram)

    def __call__(self, index: Index) -> Any:
        index = tuple(index)
        with self._lock:
            emb = self._ram.get(index)
            if emb is not None:
                self._ram.move_to_end(index)
                return emb
        with reading(self.source):
            data = self.layout.read(self.image, index)
        if self.store is not None:
            from ..store import StaleSliceError

            try:
                emb = self.store.get(index, data)
            except StaleSliceError as err:
                raise store_error(err, "--store") from None
        if emb is None:
            emb = self.predictor.compute_embedding(data)
            with self._lock:
                self.computed += 1
            if self.store is not None:
                self.store.put(index, emb, data)
        with self._lock:
            self._ram[index] = emb
            self._ram.move_to_end(index)
            while len(self._ram) > self.capacity:
                victim = next((k for k in self._ram if k not in self._keep), None)
                del self._ram[next(iter(self._ram)) if victim is None else victim]
            self.peak = max(self.peak, len(self._ram))
        return emb
