"""Store files: errors, safe writes, reading a store's signature without a model."""

from __future__ import annotations

import contextlib
import errno
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from .schema import ATTRS_KEY, KIND, MARKER_SIZE, Marker


class StoreError(Exception):
    """A problem with an embedding store; the message says what to do."""


class StoreMismatchError(StoreError):
    """The store was made with another model, precision, normalisation or image."""


class StaleSliceError(StoreError):
    """A slice's data changed since its embedding was stored (``on_mismatch="error"``)."""


class StoreWriteError(StoreError):
    """Writing failed (read-only, disk full, ...); the store is left consistent."""

    def __init__(self, message: str, errno_: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno_


def read_attrs(path: Path) -> dict[str, Any] | None:
    """The napari-sam signature of the store at ``path``, or None if it is not one."""
    try:
        group = zarr.open_group(path, mode="r")
    except (OSError, ValueError, TypeError, KeyError, zarr.errors.BaseZarrError):
        return None
    attrs = group.attrs.get(ATTRS_KEY)
    return dict(attrs) if isinstance(attrs, dict) and attrs.get("kind") == KIND else None


def is_empty_dir(path: Path) -> bool:
    """An empty directory, or one holding only temporary files of an interrupted write."""
    return path.is_dir() and all(p.name.endswith(".partial") for p in path.iterdir())


def remove_store(path: Path) -> None:
    """Delete a store: rename it away first (atomic), so an interruption never leaves a
    half-deleted store at ``path``."""
    trash = path.with_name(f"{path.name}.deleting-{uuid.uuid4().hex[:8]}")
    with write_errors(path, "removing the old store"):
        path.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)


def summarize(attrs: dict[str, Any], n_complete: int) -> dict[str, Any]:
    image = attrs["image"]
    return {
        "model": attrs["model"]["name"],
        "weights_hash": attrs["model"]["weights_hash"],
        "precision": attrs["model"]["precision"],
        "image_shape": tuple(image["shape"]),
        "slice_axes": tuple(image["slice_axes"]),
        "slice_shape": tuple(image["slice_shape"]),
        "slice_size": tuple(image["original_size"]),
        "rgb": image["rgb"],
        "channel": None if image["channel"] is None else (image["channel_axis"], image["channel"]),
        "embedding_shape": tuple(attrs["model"]["embedding_shape"]),
        "storage_dtype": attrs["storage_dtype"],
        "normalization": attrs["normalization"],
        "source": attrs.get("source"),
        "schema_version": attrs["schema_version"],
        "slices_complete": n_complete,
        "slices_total": int(np.prod(image["slice_shape"], dtype=np.int64)),
    }


def store_info(path: str | Path) -> dict[str, Any]:
    """What a store holds, without loading a model (``napari-sam info``)."""
    path = Path(path).expanduser()
    attrs = read_attrs(path)
    if attrs is None:
        what = "is not a napari-sam embedding store" if path.exists() else "does not exist"
        raise FileNotFoundError(f"{path} {what}")
    group = zarr.open_group(path, mode="r")
    n = 0
    if "complete" in set(group.array_keys()):
        raw = group["complete"][...].reshape(-1, MARKER_SIZE)
        n = sum(Marker.decode(r) is not None for r in raw)
    return summarize(attrs, n)


@contextlib.contextmanager
def write_errors(path: Path, what: str) -> Iterator[None]:
    """Turn OS / zarr write failures into one clear :class:`StoreWriteError`."""
    try:
        yield
    except OSError as err:
        code = err.errno
        if code == errno.ENOSPC or code == errno.EDQUOT:
            msg = (
                f"no space left on the device of {path} while {what}; slices marked "
                "complete are intact: free space and run again to resume"
            )
        elif code in (errno.EACCES, errno.EPERM, errno.EROFS):
            msg = f"cannot write to {path} while {what}: it is read-only ({err.strerror})"
        else:
            msg = f"cannot write to {path} while {what}: {err}"
        raise StoreWriteError(msg, code) from err
    except ValueError as err:
        if "read-only" not in str(err):
            raise
        raise StoreWriteError(f"cannot write to {path}: opened read-only", errno.EROFS) from err
