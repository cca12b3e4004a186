"""Default store locations: a user cache directory keyed by image source and model.

Two ways to name a default store:

* :func:`default_store_path` — by a *name* (a file path, resolved, or any stable
  string) plus the model and the other key parts; used by ``napari-sam embed``.
* :func:`default_store_path_for` — by the image itself: a :func:`content_key` of a few
  sampled slices + shape + dtype + slice layout (and the file path when the image came
  from a file). A re-load of the same data (a new array object with equal content)
  finds its store; different data gets another one. Used for napari layers, which may
  have no file behind them.

The per-slice fingerprints inside a store still refuse a stale slice, so a key only has
to *find* the right store, not prove that the whole volume is identical.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .schema import fingerprint
from .slicing import Index, SliceLayout

#: Slices hashed by :func:`content_key` (first, last, middle and evenly spaced between).
CONTENT_SAMPLES = 7
_KEY_VERSION = "content-key-v1"


def default_store_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """``<napari-sam cache>/embeddings`` (the cache honours ``$NAPARI_SAM_CACHE_DIR``)."""
    from ..weights import default_cache_dir

    return default_cache_dir(cache_dir) / "embeddings"


def default_store_path(
    source: str | os.PathLike[str],
    model: str,
    cache_dir: str | os.PathLike[str] | None = None,
    **parts: Any,
) -> Path:
    """Store path for an image ``source`` (a file path, resolved; or any stable name)
    and a ``model`` name. ``parts`` (normalisation, precision, checkpoint, axes, ...)
    go into the key too, so one store exists per (source, model, normalisation).

    Example: ``default_store_path("cells.tif", "vit_b", precision="fp32")`` →
    ``~/.cache/napari-sam/embeddings/cells-vit_b-1f0c9a2b3d4e5f60.zarr``.
    """
    src = str(source)
    if os.path.exists(src):
        src = str(Path(src).resolve())
    blob = json.dumps({"source": src, "model": model, **parts}, sort_keys=True, default=str)
    key = hashlib.sha256(blob.encode()).hexdigest()[:16]
    stem = _safe(Path(src.rstrip("/\\")).name.split(".")[0] or "image")
    return default_store_root(cache_dir) / f"{stem}-{_safe(model)}-{key}.zarr"


def sample_indices(layout: SliceLayout, samples: int = CONTENT_SAMPLES) -> list[Index]:
    """Up to ``samples`` slice indices evenly spaced over all slices in C order: always
    the first and the last, and the middle one when ``samples`` is odd. A 2D image has
    the single slice ``()``."""
    if samples < 1:
        raise ValueError(f"samples must be ≥ 1, got {samples}")
    n = layout.n_slices
    flat = np.unique(np.rint(np.linspace(0, n - 1, min(samples, n))).astype(np.int64))
    return [tuple(int(i) for i in np.unravel_index(f, layout.slice_shape)) for f in flat]


def content_key(image: Any, layout: SliceLayout, samples: int = CONTENT_SAMPLES) -> str:
    """32-hex-digit key of an nD image's content, reading only a few slices.

    Hashes the shape, dtype and slice layout (spatial axes, RGB, fixed channel) and the
    :func:`~napari_sam.store.schema.fingerprint` of each slice in
    :func:`sample_indices` (read with :meth:`SliceLayout.read`: numpy, zarr and dask
    arrays alike; the rest of the volume is never touched). Equal data gives an equal
    key whatever the array object; data that differs in a sampled slice, the shape,
    the dtype or the layout gives another key. Cost: reading and hashing ``samples``
    slices (docs/cache.md: ~90 ms for a 200 × 2048² uint16 zarr stack).
    """
    if tuple(image.shape) != layout.shape:
        raise ValueError(f"image shape {tuple(image.shape)} ≠ layout shape {layout.shape}")
    head = {
        "version": _KEY_VERSION,
        "dtype": np.dtype(image.dtype).str,
        "layout": layout.to_dict(),
        "samples": samples,
    }
    h = hashlib.sha256(json.dumps(head, sort_keys=True).encode())
    for index in sample_indices(layout, samples):
        h.update(repr(index).encode())
        h.update(fingerprint(layout.read(image, index)))
    return h.hexdigest()[:32]


def default_store_path_for(
    image: Any,
    layout: SliceLayout,
    model_name: str,
    precision: str,
    normalization: Any = None,
    *,
    weights: str | None = None,
    source_path: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    samples: int = CONTENT_SAMPLES,
    tiling: Mapping[str, Any] | None = None,
) -> Path:
    """Default store path for ``image`` (numpy / zarr / dask, laid out by ``layout``).

    The key hashes :func:`content_key` (a few sampled slices, shape, dtype, layout), the
    model name, ``weights`` (e.g. ``model.weights_hash`` or a checkpoint path, so two
    checkpoints with one architecture name never share a store), the concrete
    ``precision`` (``"fp32"`` / ``"bf16"`` — pass ``model.precision``, not ``"auto"``),
    the ``normalization`` (a :class:`~napari_sam.engine.image.Normalization`, its
    ``signature()`` dict, or None for the default) and, for an image read from a file,
    ``source_path`` (resolved when it exists) and ``tiling`` (a
    :meth:`~napari_sam.engine.tiling.TileGrid.to_dict`, when the slices are tiled: a
    store of whole slices and one of tiles never share a path). File modification
    time and size are not part of the key: a rewrite that changes the sampled slices
    gets a new key anyway, and the per-slice fingerprints catch any other change.

    Returns ``<cache>/embeddings/<stem>-<model>-<key>.zarr`` where ``<stem>`` is the
    file's name or ``array-<shape>`` (never a layer name: a re-load under another name
    must find the same store).
    """
    from ..engine.image import Normalization

    if normalization is None:
        normalization = Normalization()
    norm = normalization.signature() if isinstance(normalization, Normalization) else normalization
    if not isinstance(norm, Mapping):
        raise TypeError(f"normalization must be a Normalization or a dict, got {norm!r}")
    source = None
    if source_path is not None:
        source = str(source_path)
        if os.path.exists(source):
            source = str(Path(source).resolve())
        stem = _safe(Path(source.rstrip("/\\")).name.split(".")[0] or "image")
    else:
        stem = "array-" + "x".join(str(s) for s in layout.shape)
    parts = {
        "content": content_key(image, layout, samples),
        "source": source,
        "model": str(model_name),
        "weights": weights,
        "precision": str(precision),
        "normalization": dict(norm),
    }
    if tiling is not None:  # only then: the keys of untiled stores stay as they were
        parts["tiling"] = dict(tiling)
    key = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
    return default_store_root(cache_dir) / f"{stem}-{_safe(str(model_name))}-{key[:16]}.zarr"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:40] or "x"
