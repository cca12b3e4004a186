"""Finding, creating and (only when asked) replacing the store at a path.

Creation is atomic: the group and its arrays are written into a temporary sibling
``PATH.creating-<id>`` that is renamed to ``PATH`` in one step, so a store at ``PATH``
always has its complete signature, and a creation killed half-way leaves only that
sibling (deleted on a later open, :func:`~.files.clean_leftovers`). When two processes
create the same store at once, one rename wins; the other re-reads the winner's
signature and uses that store only if it was made for the same thing. Every store gets a
random ``store_id`` at creation; writers check it before and after each write
(``EmbeddingStore.put``) and it salts the per-slice checksums, so a store replaced under
an open writer or reader is noticed, never written to or served silently.
"""

from __future__ import annotations

import errno
import os
import uuid
from pathlib import Path
from typing import Any, Literal

import zarr

from .files import (
    OVERWRITE_HINT,
    StoreDamagedError,
    StoreError,
    StoreMismatchError,
    clean_leftovers,
    damaged,
    delete_tree,
    is_empty_dir,
    looks_like_store,
    read_attrs,
    read_errors,
    remove_store,
    write_errors,
)
from .schema import ATTRS_KEY, MARKER_SIZE, signature_diff
from .tiled_layout import key_shape, layout_from_dict

Mode = Literal["r", "r+", "a"]


def mismatch_error(path: Path, diff: list[str], note: str = "") -> StoreMismatchError:
    problem = f"embedding store {path} was made for something else: {'; '.join(diff)}{note}"
    return StoreMismatchError(
        f"{problem}. Either use another store path, or overwrite it (its embeddings are "
        f"deleted and recomputed): {OVERWRITE_HINT}",
        problem=problem,
    )


def resolve(
    path: Path, wanted: dict[str, Any], *, mode: Mode, on_mismatch: str, dtype: str | None
) -> dict[str, Any]:
    """The signature of the store at ``path`` that fits ``wanted``: the existing one,
    or (mode ``"a"``) a new store's, created atomically. A store made for something else
    raises :class:`StoreMismatchError`, or with ``on_mismatch="overwrite"`` (mode
    ``"a"`` only) is replaced. Never touches a path that is not a napari-sam store."""
    if mode != "r":
        clean_leftovers(path)
    replace = on_mismatch == "overwrite" and mode == "a"
    for _attempt in range(3):
        try:
            stored = read_attrs(path)
        except StoreDamagedError:
            if not (replace and looks_like_store(path)):
                raise
            remove_store(path)  # damaged metadata, a store's layout: the user asked
            stored = None
        if stored is not None:
            diff = signature_diff(stored, wanted, dtype)
            if not diff:
                return stored
            if not replace:
                note = f" (mode={mode!r} never replaces a store)" if mode != "a" else ""
                raise mismatch_error(path, diff, note)
            remove_store(path)  # a napari-sam store made for something else: the user asked
        elif mode != "a":
            what = "is not a napari-sam embedding store" if path.exists() else "does not exist"
            raise FileNotFoundError(f"embedding store {path} {what}")
        elif path.exists() and not is_empty_dir(path):
            raise StoreError(
                f"{path} exists and is not a napari-sam embedding store; refusing to "
                "overwrite it: choose another store path"
            )
        created = {**wanted, "store_id": uuid.uuid4().hex}
        if create(path, created):
            return created
        replace = False  # lost a creation race: never replace the winner's new store
    raise StoreError(f"{path} kept changing while it was being opened; try again")


def create(path: Path, attrs: dict[str, Any]) -> bool:
    """Create the store in a temporary sibling and rename it to ``path``; False when
    another process created ``path`` first (nothing of ours is left behind)."""
    tmp = path.with_name(f"{path.name}.creating-{uuid.uuid4().hex[:8]}")
    with write_errors(path, "creating the store"):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            group = zarr.open_group(tmp, mode="w-", attributes={ATTRS_KEY: attrs})
            ensure_arrays(group, attrs, "a", tmp)
            return _move_into_place(tmp, path)
        finally:
            if tmp.exists():
                delete_tree(tmp)


def _move_into_place(tmp: Path, path: Path) -> bool:
    """Rename ``tmp`` to ``path`` (absent, or an empty directory); False when ``path``
    is someone else's by then."""
    for _attempt in range(2):
        try:
            os.rename(tmp, path)  # atomic; on POSIX it also replaces an empty directory
            return True
        except OSError as err:
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not path.exists():
                raise
            if not is_empty_dir(path):
                return False  # another creator won
            try:  # an empty directory that rename does not replace (Windows, *.partial)
                for p in path.iterdir():
                    p.unlink(missing_ok=True)
                path.rmdir()
            except FileNotFoundError:
                pass
            except OSError as gone:
                if gone.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                return False  # filled by another creator meanwhile
    return False


def open_group(path: Path, attrs: dict[str, Any], mode: Mode) -> zarr.Group:
    """The store's zarr group with both arrays (re-created if a pre-atomic creation was
    interrupted before them)."""
    with read_errors(path, "opening the store"):
        try:
            group = zarr.open_group(path, mode="r" if mode == "r" else "r+")
            ensure_arrays(group, attrs, mode, path)
        except (ValueError, KeyError, TypeError) as err:
            if isinstance(err, StoreError):
                raise
            raise damaged(path, f"its arrays' metadata cannot be read: {err}") from None
    return group


def ensure_arrays(group: zarr.Group, attrs: dict[str, Any], mode: str, path: Path) -> None:
    """Create the arrays if a creation was interrupted before them."""
    have = set(group.array_keys())
    if {"embeddings", "complete"} <= have:
        return
    if mode == "r":
        raise StoreError(f"store {path} is incomplete; open it writable to repair")
    lead = key_shape(layout_from_dict(attrs["image"]))  # slice axes (+ tile axes)
    ones = (1,) * len(lead)
    emb_shape = tuple(attrs["model"]["embedding_shape"])
    with write_errors(path, "creating the store's arrays"):
        if "embeddings" not in have:
            group.create_array(
                "embeddings",
                shape=lead + emb_shape,
                chunks=ones + emb_shape,
                dtype=attrs["storage_dtype"],
                fill_value=0,
                compressors=None,
            )
        if "complete" not in have:
            group.create_array(
                "complete",
                shape=(*lead, MARKER_SIZE),
                chunks=(*ones, MARKER_SIZE),
                dtype="uint8",
                fill_value=0,
                compressors=None,
            )
