"""The default cache directory ``<cache>/embeddings``: use marks, in-use locks, a size
cap and least-recently-used clean-up (docs/cache.md, "Default stores and clean-up").

Use of a store is recorded inside it, in a small zarr sub-group ``usage/`` (a plain
extra file would make zarr warn when it lists the store): :func:`mark_used` sets the
modification time of ``usage/zarr.json`` — access times are unreliable (``noatime``).
A store's *last use* is the newest modification time of any file in it, so a store
written without a mark still counts as used when it was written.

A process using a store holds it (:func:`hold_store`): an exclusive
:class:`filelock.FileLock` on its own file ``usage/in-use-<pid>-<random>.lock``, so any
number of processes can hold one store, and a lock dies with its process. Clean-up
tries each lock without waiting; a store with a held lock is in use and never removed.

Clean-up (:func:`clean`, :func:`enforce_cap`) only looks at the direct children of the
cache root and only ever removes directories whose ``zarr.json`` says they are
napari-sam embedding stores (``store.files.read_attrs``) — never symbolic links, other
files or directories, stores in ``keep`` or stores in use. A store is renamed aside
before it is deleted, so an interruption never leaves a half-deleted store under its
name; failures are reported, not raised.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
import uuid
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import filelock

from .files import read_attrs
from .paths import default_store_root

CAP_ENV_VAR = "NAPARI_SAM_CACHE_MAX_GB"
DEFAULT_CAP_GB = 20.0
GB = 10**9
USAGE = "usage"  # sub-group of a store holding the use mark and in-use locks
_USAGE_GROUP = b'{"zarr_format": 3, "node_type": "group", "attributes": {}}'
_TRASH = ".deleting-"  # rename-aside infix, as store.files.remove_store


@dataclass(frozen=True)
class CacheEntry:
    """One embedding store in the cache root.

    size: bytes of its files. last_used: seconds since the epoch (newest mtime of a file,
    including the use mark). in_use: a process holds it (:func:`hold_store`).
    attrs: its napari-sam signature (model, image, ...).
    """

    path: Path
    size: int
    last_used: float
    in_use: bool
    attrs: Mapping[str, Any]


@dataclass(frozen=True)
class CacheScan:
    """The stores in a cache root (oldest use first) and the other entries left alone."""

    root: Path
    entries: list[CacheEntry]
    foreign: list[Path]

    @property
    def total(self) -> int:
        return sum(e.size for e in self.entries)


@dataclass
class CleanResult:
    """What a clean-up removed (or would remove, ``dry_run``), kept and failed to remove.

    kept: stores the selection matched that were in ``keep`` or in use.
    failed: (store, reason) pairs; a store that failed is left in place or, when only
    the deletion after the rename failed, as ``<name>.deleting-<hex>`` (reason says).
    """

    root: Path
    dry_run: bool
    total_before: int
    removed: list[CacheEntry] = field(default_factory=list)
    kept: list[CacheEntry] = field(default_factory=list)
    failed: list[tuple[CacheEntry, str]] = field(default_factory=list)

    @property
    def freed(self) -> int:
        return sum(e.size for e in self.removed)

    @property
    def total_after(self) -> int:
        return self.total_before - self.freed


# ---------------------------------------------------------------- configuration
def cache_cap_bytes(env: Mapping[str, str] | None = None) -> int | None:
    """The configured cap in bytes: ``$NAPARI_SAM_CACHE_MAX_GB`` (decimal GB, may be
    fractional; ``0`` = no cap → None), default 20 GB. Raises ValueError for a value
    that is not a number ≥ 0."""
    text = (os.environ if env is None else env).get(CAP_ENV_VAR, "").strip()
    if not text:
        return int(DEFAULT_CAP_GB * GB)
    try:
        gb = float(text)
    except ValueError:
        gb = -1.0
    if not gb >= 0 or gb == float("inf"):
        raise ValueError(f"{CAP_ENV_VAR} must be a number of GB ≥ 0 (0 = no cap), got {text!r}")
    return None if gb == 0 else int(gb * GB)


# ------------------------------------------------------------------- use marks
def _is_store_dir(path: Path) -> bool:
    return (path / "zarr.json").is_file()


def _usage_dir(path: Path) -> Path:
    """``<store>/usage``, created as an (empty) zarr group if missing."""
    usage = path / USAGE
    marker = usage / "zarr.json"
    if not marker.is_file():
        usage.mkdir(exist_ok=True)
        tmp = usage / f"zarr.json.{uuid.uuid4().hex[:8]}.partial"
        tmp.write_bytes(_USAGE_GROUP)
        os.replace(tmp, marker)
    return usage


def mark_used(path: str | os.PathLike[str]) -> bool:
    """Record that the store at ``path`` was used now (for least-recently-used
    clean-up). Does nothing for a path that is not a zarr group; never raises: returns
    False when the mark could not be written (e.g. a read-only store)."""
    path = Path(path).expanduser()
    if not _is_store_dir(path):
        return False
    try:
        os.utime(_usage_dir(path) / "zarr.json")
    except OSError:
        return False
    return True


class StoreHold:
    """A process's hold on a store (see :func:`hold_store`); ``release()`` or leaving a
    ``with`` block ends it (so does garbage collection or the end of the process)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.locked = False
        self._finalizer: weakref.finalize | None = None
        mark_used(path)
        if not _is_store_dir(path):
            return
        try:
            file = _usage_dir(path) / f"in-use-{os.getpid()}-{uuid.uuid4().hex[:8]}.lock"
            lock = filelock.FileLock(file, thread_local=False)
            lock.acquire(timeout=0)
        except (OSError, filelock.Timeout):
            return  # read-only store: it cannot be cleaned by us either way
        self.locked = True
        self._finalizer = weakref.finalize(self, _unlock, lock, file)

    def release(self) -> None:
        """Mark the store used (now) and drop the in-use lock. Idempotent."""
        if self._finalizer is not None and self._finalizer.alive:
            mark_used(self.path)
            self._finalizer()

    def __enter__(self) -> StoreHold:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _unlock(lock: filelock.FileLock, file: Path) -> None:
    with contextlib.suppress(OSError):
        lock.release(force=True)
        file.unlink(missing_ok=True)


def hold_store(path: str | os.PathLike[str]) -> StoreHold:
    """Mark the store at ``path`` used and hold it in use until ``release()``: clean-up
    in any process skips it. Never raises; ``hold.locked`` is False when no lock could
    be taken (path not a store yet, read-only). Keep the returned object alive as long
    as the store is open (e.g. as an attribute of the session using it)."""
    return StoreHold(Path(path).expanduser())


def in_use(path: str | os.PathLike[str]) -> bool:
    """True when some process (this one included) holds the store (:func:`hold_store`)."""
    usage = Path(path) / USAGE
    try:
        files = sorted(usage.glob("in-use-*.lock"))
    except OSError:
        return False
    for file in files:
        probe = filelock.FileLock(file, thread_local=False)
        try:
            probe.acquire(timeout=0)
        except filelock.Timeout:
            return True
        except OSError:
            continue  # a lock file we cannot open: its holder could not either
        probe.release(force=True)
    return False


# ------------------------------------------------------------------------- scan
def _walk(path: Path) -> tuple[int, float]:
    """(total bytes of the files, newest mtime of a file — the directory's own when it
    has none) under ``path``. Directory mtimes are not use: they change when a lock
    file comes or goes. Symbolic links are counted as themselves, never followed."""
    size, newest = 0, None
    stack = [path]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                    continue
                st = entry.stat(follow_symlinks=False)
                size += st.st_size
                newest = st.st_mtime if newest is None else max(newest, st.st_mtime)
    return size, path.lstat().st_mtime if newest is None else newest


def scan(root: str | os.PathLike[str] | None = None) -> CacheScan:
    """The napari-sam embedding stores directly in ``root`` (default: the default store
    root, ``default_store_root()``), oldest use first, and the other entries."""
    root = default_store_root() if root is None else Path(root).expanduser()
    entries: list[CacheEntry] = []
    foreign: list[Path] = []
    if not root.is_dir():
        return CacheScan(root, entries, foreign)
    for child in sorted(root.iterdir()):
        attrs = None if child.is_symlink() or not child.is_dir() else read_attrs(child)
        if attrs is None:
            foreign.append(child)
            continue
        try:
            size, newest = _walk(child)
        except OSError:  # vanished or unreadable meanwhile: not ours to judge
            foreign.append(child)
            continue
        entries.append(CacheEntry(child, size, newest, in_use(child), attrs))
    entries.sort(key=lambda e: (_TRASH not in e.path.name, e.last_used, e.path.name))
    return CacheScan(root, entries, foreign)


# ---------------------------------------------------------------------- clean-up
def clean(
    root: str | os.PathLike[str] | None = None,
    *,
    max_bytes: int | None = None,
    older_than_days: float | None = None,
    everything: bool = False,
    keep: Iterable[str | os.PathLike[str]] = (),
    dry_run: bool = False,
    now: float | None = None,
) -> CleanResult:
    """Remove stores from the cache ``root`` (default: ``default_store_root()``).

    everything: every store. older_than_days: stores last used more than that many
    days ago. max_bytes: then, least recently used first, until the stores total at
    most ``max_bytes``. Stores left by an interrupted deletion (``*.deleting-*``, still
    with a store signature) are always selected, first. Stores in ``keep`` (paths,
    compared resolved) and stores in use are never removed (listed in ``kept``).
    dry_run: select and report, remove nothing.
    """
    listing = scan(root)
    now = time.time() if now is None else now
    protect = {_resolved(p) for p in keep}
    result = CleanResult(listing.root, dry_run, listing.total)
    total = listing.total
    selected: list[CacheEntry] = []
    for entry in listing.entries:
        old = older_than_days is not None and entry.last_used < now - older_than_days * 86400
        over = max_bytes is not None and total > max_bytes
        debris = _TRASH in entry.path.name
        if not (everything or old or over or debris):
            continue
        if entry.in_use or _resolved(entry.path) in protect:
            result.kept.append(entry)
            continue
        selected.append(entry)
        total -= entry.size
    for entry in selected:
        if dry_run:
            result.removed.append(entry)
            continue
        error = _remove(entry.path)
        if error is None:
            result.removed.append(entry)
        elif error == "in use":
            result.kept.append(entry)
        else:
            result.failed.append((entry, error))
    return result


def enforce_cap(
    root: str | os.PathLike[str] | None = None,
    max_bytes: int | None = None,
    keep: Iterable[str | os.PathLike[str]] = (),
    *,
    dry_run: bool = False,
) -> CleanResult:
    """Remove least-recently-used stores of ``root`` (default: ``default_store_root()``)
    until they total at most ``max_bytes`` (default: :func:`cache_cap_bytes`, i.e.
    ``$NAPARI_SAM_CACHE_MAX_GB`` or 20 GB; nothing when the cap is off). ``keep``: the
    stores in use by the caller. See :func:`clean` for what is never removed."""
    cap = cache_cap_bytes() if max_bytes is None else int(max_bytes)
    return clean(root, max_bytes=cap, keep=keep, dry_run=dry_run)


def _resolved(path: str | os.PathLike[str]) -> Path:
    return Path(path).expanduser().resolve()


def _remove(path: Path) -> str | None:
    """Remove one store: check it is not in use, rename it aside, check again (a holder
    that came in between moves with the rename), delete. None on success, else why."""
    if in_use(path):
        return "in use"
    trash = path if _TRASH in path.name else path.with_name(f"{path.name}{_TRASH}{_hex()}")
    try:
        if trash != path:
            path.rename(trash)
    except OSError as err:
        return f"cannot rename it aside: {err.strerror or err}"
    if in_use(trash):
        try:
            trash.rename(path)
        except OSError as err:
            return f"it came into use while being removed; left at {trash}: {err}"
        return "in use"
    errors = _rmtree(trash)
    if errors or trash.exists():
        return f"partly deleted, left at {trash}: {errors[0] if errors else 'not empty'}"
    return None


def _rmtree(path: Path) -> list[str]:
    """Delete a directory tree; the errors (a file already gone is none)."""
    errors: list[str] = []

    def record(_fn: Any, where: str, exc: BaseException) -> None:
        if not isinstance(exc, FileNotFoundError):
            errors.append(f"{where}: {exc}")

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=record)
    else:  # pragma: no cover - Python < 3.12
        shutil.rmtree(path, onerror=lambda fn, where, info: record(fn, where, info[1]))
    return errors


def _hex() -> str:
    return uuid.uuid4().hex[:8]
