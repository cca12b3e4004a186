"""Default store locations: a user cache directory keyed by image source and model."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any


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


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:40] or "x"
