"""Embedding cache: per-slice SAM embeddings in a zarr v3 store (docs/cache.md).

No napari or Qt here. Main names::

    EmbeddingProvider(model, image, store=path)      # RAM → store → encoder, thread-safe
    provider.get(index) / provider.precompute(keys, scheduler=...)  # Progress generator
    EmbeddingStore.open(path, model, image=..., normalization=...)  # lazy, validated
    store.get(index) / store.put(index, emb) / store.missing(indices)
    precompute(path, image, ModelSpec(...), scheduler=N)  # driver never loads the model
"""

from __future__ import annotations

from .cluster import ModelSpec, load_spec
from .embeddings import EmbeddingStore
from .files import (
    StaleSliceError,
    StoreCleanupWarning,
    StoreDamagedError,
    StoreError,
    StoreMismatchError,
    StoreReadError,
    StoreWriteError,
    store_info,
)
from .paths import default_store_path
from .precompute import precompute
from .provider import EmbeddingProvider
from .regions import RegionKey, RegionLayout
from .schema import ModelSignature, fingerprint
from .slicing import SliceLayout, parse_slices
from .tiled_layout import TiledLayout

__all__ = [
    "EmbeddingProvider",
    "EmbeddingStore",
    "ModelSignature",
    "ModelSpec",
    "RegionKey",
    "RegionLayout",
    "SliceLayout",
    "StaleSliceError",
    "StoreCleanupWarning",
    "StoreDamagedError",
    "StoreError",
    "StoreMismatchError",
    "StoreReadError",
    "StoreWriteError",
    "TiledLayout",
    "default_store_path",
    "fingerprint",
    "load_spec",
    "parse_slices",
    "precompute",
    "store_info",
]
