"""Store files: errors, safe writes and reads, reading a store's signature without a
model, removing a store and the leftovers of interrupted removals / creations."""

from __future__ import annotations

import contextlib
import errno
import json
import re
import shutil
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .schema import ATTRS_KEY, KIND, attrs_problem

META = "zarr.json"  # a zarr v3 node's metadata file (the group's holds the signature)
STORE_ENTRIES = {META, "embeddings", "complete"}
CREATING_MAX_AGE_S = 3600.0  # a ``.creating-*`` sibling older than this is a leftover


class StoreError(Exception):
    """A problem with an embedding store; the message says what to do.

    ``problem``: the message without the advice (what the Python API offers), so that
    the command line and the widget can name their own ways out."""

    def __init__(self, message: str, *, problem: str | None = None) -> None:
        super().__init__(message)
        self.problem = problem or message


class StoreMismatchError(StoreError):
    """The store was made with another model, precision, normalisation or image (or was
    replaced by such a store since it was opened)."""


class StaleSliceError(StoreError):
    """A slice's data changed since its embedding was stored (``on_mismatch="error"``)."""


class StoreDamagedError(StoreError):
    """The store's metadata (its signature in ``zarr.json``) cannot be read."""


class StoreReadError(StoreError):
    """Reading the store failed for an I/O or permission reason (not damaged data)."""


class StoreCleanupWarning(UserWarning):
    """Files of a removed store (or of an interrupted creation) could not be deleted."""


class StoreWriteError(StoreError):
    """Writing failed (read-only, disk full, ...); the store is left consistent."""

    def __init__(self, message: str, errno_: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno_


OVERWRITE_HINT = "--overwrite on the command line, on_mismatch='overwrite' in Python"


def damaged(path: Path, reason: str) -> StoreDamagedError:
    return StoreDamagedError(
        f"the metadata of the embedding store {path} is damaged ({reason}); its embeddings "
        f"cannot be trusted: delete {path} (or overwrite it: {OVERWRITE_HINT}) to recompute "
        "them, or choose another store path"
    )


def _read_meta(path: Path) -> dict[str, Any] | None:
    """The parsed group ``zarr.json`` of ``path``, or None when there is none."""
    meta = path / META
    try:
        raw = meta.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except IsADirectoryError:
        raise damaged(path, f"{meta} is a directory") from None
    except OSError as err:
        raise StoreReadError(
            f"cannot read {meta}: an I/O or permission problem ({err.strerror or err}); "
            "check the file's permissions and the disk"
        ) from err
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise damaged(path, f"{META} is truncated or not JSON: {err}") from None
    if not isinstance(doc, dict):
        raise damaged(path, f"{META} holds a {type(doc).__name__}, not a JSON object")
    return doc


def read_attrs(path: Path) -> dict[str, Any] | None:
    """The napari-sam signature of the store at ``path``; None if ``path`` is not one
    (absent, empty, another kind of zarr node or folder). Raises
    :class:`StoreDamagedError` when ``zarr.json`` is damaged or the signature's fields
    have wrong types, :class:`StoreReadError` when it cannot be read."""
    doc = _read_meta(path)
    if doc is None or doc.get("node_type") == "array":
        return None
    if doc.get("node_type") != "group":
        raise damaged(path, f"{META} has no valid node_type")
    attrs = doc.get("attributes", {})
    if not isinstance(attrs, dict):
        raise damaged(path, f"the attributes in {META} are a {type(attrs).__name__}")
    if ATTRS_KEY not in attrs:
        return None
    sig = attrs[ATTRS_KEY]
    if isinstance(sig, dict) and "kind" in sig and sig["kind"] != KIND:
        return None  # another kind of napari-sam data
    problem = attrs_problem(sig)
    if problem is not None:
        raise damaged(path, problem)
    return dict(sig)


def is_empty_dir(path: Path) -> bool:
    """An empty directory, or one holding only temporary files of an interrupted write."""
    return path.is_dir() and all(p.name.endswith(".partial") for p in path.iterdir())


def looks_like_store(path: Path) -> bool:
    """``path`` holds nothing but what a store holds (its metadata may be damaged)."""
    return path.is_dir() and all(
        p.name in STORE_ENTRIES or p.name.endswith(".partial") for p in path.iterdir()
    )


def _rmtree(path: Path) -> list[str]:
    """Delete a tree; returns the failures (a part already gone is not one)."""
    failures: list[str] = []

    def onexc(_func: Any, name: str, exc: BaseException) -> None:
        if not isinstance(exc, FileNotFoundError):
            failures.append(f"{name}: {exc}")

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=onexc)
    else:
        shutil.rmtree(path, onerror=lambda f, n, info: onexc(f, n, info[1]))
    return failures


def delete_tree(path: Path) -> None:
    """Delete a directory tree, reporting (a :class:`StoreCleanupWarning`) what could
    not be deleted."""
    _report(_rmtree(path), path)


def _report(failures: list[str], what: Path) -> None:
    if failures:
        shown = "; ".join(failures[:3]) + (f" (+{len(failures) - 3} more)" if failures[3:] else "")
        warnings.warn(
            f"could not delete {what} ({shown}); delete it by hand to free the space",
            StoreCleanupWarning,
            stacklevel=4,
        )


def clean_leftovers(path: Path) -> None:
    """Delete ``PATH.deleting-*`` siblings (stores renamed away for deletion whose
    deletion was interrupted) and ``PATH.creating-*`` siblings older than
    :data:`CREATING_MAX_AGE_S` (creations killed before their rename). A failure is
    reported as a :class:`StoreCleanupWarning`, never ignored."""
    parent = path.parent
    if not parent.is_dir():
        return
    leftover = re.compile(re.escape(path.name) + r"\.(deleting|creating)-[0-9a-f]{8}")
    now = time.time()
    for p in parent.iterdir():
        m = leftover.fullmatch(p.name)
        if m and (m[1] == "deleting" or _age(p, now) > CREATING_MAX_AGE_S):
            delete_tree(p)


def _age(p: Path, now: float) -> float:
    try:
        return now - p.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def remove_store(path: Path) -> None:
    """Delete a store: rename it away first (atomic), so an interruption never leaves a
    half-deleted store at ``path``; then delete it (and older leftovers), reporting
    what could not be deleted."""
    trash = path.with_name(f"{path.name}.deleting-{uuid.uuid4().hex[:8]}")
    with write_errors(path, "removing the old store"):
        path.rename(trash)
    clean_leftovers(path)


def summarize(attrs: dict[str, Any], n_complete: int, n_damaged: int = 0) -> dict[str, Any]:
    """What :func:`store_info` / ``EmbeddingStore.info`` report; ``slices_damaged``:
    slices marked complete whose embedding chunk is truncated (counted as missing).
    A tiled store counts entries (tiles): ``tiles_complete`` / ``tiles_total``, and
    ``slices_complete`` / ``slices_damaged`` are then tile counts too (``tiles`` is the
    grid, else None)."""
    from .tiled_layout import TiledLayout, layout_from_dict

    tiled = layout_from_dict(attrs["image"])
    layout = tiled.slices if isinstance(tiled, TiledLayout) else tiled
    grid = tiled.grid if isinstance(tiled, TiledLayout) else None
    return {
        "model": attrs["model"]["name"],
        "weights_hash": attrs["model"]["weights_hash"],
        "precision": attrs["model"]["precision"],
        "plan": attrs["model"].get("plan"),
        "image_shape": layout.shape,
        "slice_axes": layout.slice_axes,
        "slice_shape": layout.slice_shape,
        "slice_size": layout.slice_size,
        "rgb": layout.rgb,
        "channel": None if layout.channel is None else (layout.channel_axis, layout.channel),
        "embedding_shape": tuple(attrs["model"]["embedding_shape"]),
        "storage_dtype": attrs["storage_dtype"],
        "normalization": attrs["normalization"],
        "source": attrs.get("source"),
        "schema_version": attrs["schema_version"],
        "slices_complete": n_complete,
        "slices_damaged": n_damaged,
        "slices_total": int(np.prod(layout.slice_shape, dtype=np.int64)),
        # tiled stores (docs/tiling.md): one entry per tile; complete / damaged count tiles
        "tiles": None if grid is None else grid.to_dict(),
        "tiles_complete": None if grid is None else n_complete,
        "tiles_total": None if grid is None else tiled.n_regions,  # type: ignore[union-attr]
    }


def store_info(path: str | Path) -> dict[str, Any]:
    """What a store holds, without loading a model (``napari-sam info``).

    Raises FileNotFoundError (not a store), :class:`StoreDamagedError` (damaged
    metadata), :class:`StoreReadError` (I/O or permission problem)."""
    from .embeddings import EmbeddingStore
    from .schema import ModelSignature

    path = Path(path).expanduser()
    attrs = read_attrs(path)
    if attrs is None:
        what = "is not a napari-sam embedding store" if path.exists() else "does not exist"
        raise FileNotFoundError(f"{path} {what}")
    store = EmbeddingStore.from_attrs(path, attrs, ModelSignature.from_dict(attrs["model"]))
    return store.info()


@contextlib.contextmanager
def read_errors(path: Path, what: str) -> Iterator[None]:
    """Turn an OS failure while reading into one clear :class:`StoreReadError` (an I/O
    or permission problem, not damaged data)."""
    try:
        yield
    except OSError as err:
        raise StoreReadError(
            f"cannot read {path} while {what}: an I/O or permission problem "
            f"({err.strerror or err}); check the permissions and the disk"
        ) from err


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
