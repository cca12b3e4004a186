"""Helpers for the store tests: the tiny random-weight SAM config, test volumes, a
read-recording array and the precompute of an opened store."""

from __future__ import annotations

import numpy as np

from napari_sam.store import EmbeddingProvider

from tiny import TINY, make_tiny  # noqa: F401  (re-exported for the store tests)


def volume(shape=(6, 40, 50), seed: int = 0, dtype=np.uint16) -> np.ndarray:
    """Blobby uint16 volume, different in every slice."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 4000, shape).astype(dtype)


class CountingArray:
    """Array-like that records every key it is indexed with (laziness checks)."""

    def __init__(self, data: np.ndarray) -> None:
        self.data, self.shape, self.dtype, self.ndim = data, data.shape, data.dtype, data.ndim
        self.keys: list = []

    def __getitem__(self, key):
        self.keys.append(key)
        return self.data[key]


def compute(store, *args, **kwargs):
    """The Progress generator of precomputing ``store``'s missing slices through an
    :class:`EmbeddingProvider` on it (``keys``, ``verify``, ``scheduler`` ... as there)."""
    return EmbeddingProvider.for_store(store).precompute(*args, **kwargs)
