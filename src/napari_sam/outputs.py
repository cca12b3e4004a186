"""Atomic result files: written to a temporary name in the same folder, then renamed.

Every result napari-sam writes (label images, overlays, tables) goes through here, so a
full disk, a read-only folder or a crash never leaves a torn file under the result's
name, and an existing result is only replaced when the caller says so::

    from napari_sam.outputs import atomic_file, atomic_dir, check_target

    check_target(out, overwrite=False)          # before the long work: fail early
    with atomic_file(out, overwrite=False) as tmp:   # tmp: same folder, same suffix
        tifffile.imwrite(tmp, labels)           # out appears only when this succeeded
    with atomic_dir(out_zarr, overwrite=True) as tmp:  # tmp: a new empty folder
        zarr.create_array(store=str(tmp), ...)  # the old out_zarr is deleted only after
                                                # the new one took its name

On failure the temporary file / folder is removed, the previous result (if any) is
untouched, and :class:`OutputWriteError` says in one line what went wrong (no space,
read-only, permission denied, a part of the path is a file). An existing result without
``overwrite`` raises :class:`OutputExistsError`. Errors the writer raises that are not
``OSError`` (a bug, an unsupported dtype) pass through unchanged, after the clean-up.

Pure standard library: no napari, Qt, zarr or torch, so every layer may use it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "WRITE_ERRNOS",
    "OutputError",
    "OutputExistsError",
    "OutputWriteError",
    "atomic_dir",
    "atomic_file",
    "check_target",
    "os_reason",
]

_REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder",
    errno.ENAMETOOLONG: "the name is too long",
}


# errors that describe the place written to (space, permissions), not a bug
WRITE_ERRNOS = frozenset(
    (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR)
)


def os_reason(err: OSError) -> str:
    """A short reason for an OSError: "no space left on the device", ..."""
    return _REASONS.get(err.errno or -1) or err.strerror or str(err) or type(err).__name__


class OutputError(Exception):
    """A result could not be written; the message is one line naming the path."""

    def __init__(self, message: str, path: Path, errno_: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.errno = errno_


class OutputExistsError(OutputError):
    """The result exists and the caller did not ask to replace it."""


class OutputWriteError(OutputError):
    """Writing failed (no space, read-only, permission, ...); the previous result, if
    any, is unchanged and no temporary file is left."""


def check_target(path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Fail early, before the work that produces ``path``, without creating anything:
    refuse an existing ``path`` unless ``overwrite``, a file where a folder of the path
    should be, and a nearest existing folder that is not writable. Returns ``path``."""
    path = Path(path)
    _refuse_existing(path, overwrite)
    with _os_errors(path):
        folder = _existing_ancestor(path)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise OSError(errno.EACCES, "permission denied")
    return path


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` (same suffix, so suffix-driven writers
    such as ``np.save`` or Pillow behave); rename it to ``path`` when the block
    succeeds. The file is flushed to disk (fsync) before the rename."""
    path = Path(path)
    _refuse_existing(path, overwrite)
    _make_parent(path)
    tmp = _sibling(path, "tmp")
    try:
        with _os_errors(path):
            yield tmp
            if not tmp.is_file():
                raise OutputWriteError(f"cannot write {path}: the writer made no file", path)
            _fsync(tmp)
            _refuse_existing(path, overwrite)  # created meanwhile by someone else
            os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a new empty temporary folder next to ``path`` (e.g. for a zarr store);
    when the block succeeds it takes ``path``'s name. An existing ``path`` (only with
    ``overwrite``) is first renamed aside and deleted only after the rename succeeded;
    if the rename fails it is put back."""
    path = Path(path)
    _refuse_existing(path, overwrite)
    _make_parent(path)
    tmp = _sibling(path, "tmp")
    aside: Path | None = None
    try:
        with _os_errors(path):
            tmp.mkdir()
            yield tmp
            _refuse_existing(path, overwrite)
            if path.exists() or path.is_symlink():
                aside = _sibling(path, "old")
                os.replace(path, aside)
            try:
                os.replace(tmp, path)
            except OSError:
                if aside is not None:
                    os.replace(aside, path)
                    aside = None
                raise
    except BaseException:
        _remove(tmp)
        raise
    if aside is not None:
        _remove(aside)


# ------------------------------------------------------------------------- helpers
def _refuse_existing(path: Path, overwrite: bool) -> None:
    if not overwrite and (path.exists() or path.is_symlink()):
        raise OutputExistsError(f"{path} exists", path, errno.EEXIST)


def _existing_ancestor(path: Path) -> Path:
    """The nearest existing folder above ``path``; a file in the way is named."""
    for p in path.absolute().parents:
        if p.exists():
            if not p.is_dir():
                raise OSError(errno.ENOTDIR, f"{p} is a file, not a folder")
            return p
    return Path(path.absolute().anchor)


def _make_parent(path: Path) -> None:
    with _os_errors(path):
        _existing_ancestor(path)
        path.parent.mkdir(parents=True, exist_ok=True)


def _sibling(path: Path, kind: str) -> Path:
    """A hidden, unique name in the same folder, keeping the suffix."""
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    return path.with_name(f".{stem}.{secrets.token_hex(4)}.{kind}{path.suffix}")


def _fsync(path: Path) -> None:
    with open(path, "rb+") as f:
        try:
            os.fsync(f.fileno())
        except OSError as err:  # file systems without fsync: nothing to flush
            if err.errno not in (errno.EINVAL, errno.ENOTSUP):
                raise


def _remove(path: Path) -> None:
    """Best-effort removal of a temporary file or folder (never raises)."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass


@contextlib.contextmanager
def _os_errors(path: Path) -> Iterator[None]:
    """OSError → OutputWriteError with one line: the path and the reason."""
    existed = path.exists()
    try:
        yield
    except OutputError:
        raise
    except OSError as err:
        reason = os_reason(err)
        if err.errno == errno.ENOTDIR and err.strerror and err.strerror.endswith("not a folder"):
            reason = err.strerror  # ours, naming the file in the way
        kept = f"; the existing {path.name} is unchanged" if existed else ""
        raise OutputWriteError(
            f"cannot write {path}: {reason}{kept}", path, err.errno
        ) from err
