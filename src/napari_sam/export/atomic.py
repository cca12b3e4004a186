"""Safe output: every export is written under a temporary name in the target's own
directory and renamed into place only when complete.

* An existing target is replaced only with ``overwrite=True``; a directory is replaced
  only when it is a previous napari-sam export (never a folder the user made).
* A failure while writing (disk full, read-only target, …) removes the temporary
  output, leaves the previous file intact and raises ONE :class:`ExportError` naming
  the target and the cause.
"""

from __future__ import annotations

import errno
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

EXPORT_SUFFIXES = (".ome.zarr", ".zarr", ".ome.tiff", ".ome.tif", ".tiff", ".tif")


class ExportError(Exception):
    """An export could not be written; the message is one line for the user."""


def check_target(
    target: Path, overwrite: bool, is_export: Callable[[Path], bool] | None = None
) -> None:
    """Raise :class:`ExportError` when ``target`` exists and may not be replaced."""
    if not target.exists() and not target.is_symlink():
        return
    if not overwrite:
        raise ExportError(f"{target} exists; choose another name or ask to overwrite it")
    if target.is_dir() and (is_export is None or not is_export(target)):
        raise ExportError(
            f"{target} is a folder that is not a napari-sam export; it is never replaced: "
            "choose another name"
        )


@contextmanager
def atomic_output(
    target: str | os.PathLike,
    overwrite: bool = False,
    is_export: Callable[[Path], bool] | None = None,
) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; write the output (file or folder) there.

    On success it is renamed to ``target`` (replacing an existing one when allowed, see
    :func:`check_target`); on any error it is removed and the target left as it was.
    OSErrors (anywhere in the exception chain) become one :class:`ExportError`.
    """
    target = Path(target)
    check_target(target, overwrite, is_export)
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ExportError(_message(target, err)) from None
    tmp = parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        yield tmp
        _replace(tmp, target)
    except BaseException as err:
        _remove(tmp)
        os_err = _os_error(err)
        if os_err is not None and not isinstance(err, ExportError):
            raise ExportError(_message(target, os_err)) from err
        raise


def write_text(target: str | os.PathLike, text: str, overwrite: bool = True) -> Path:
    """Write a small text file (JSON, CSV) atomically."""
    target = Path(target)
    with atomic_output(target, overwrite) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    return target


def base_name(path: Path) -> str:
    """The file name without an export suffix: ``cells.ome.zarr`` → ``cells``."""
    name = path.name
    for suffix in EXPORT_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _replace(tmp: Path, target: Path) -> None:
    if not tmp.is_dir() or not target.exists():
        os.replace(tmp, target)  # atomic for files; a new folder is renamed in one step
        return
    old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
    os.rename(target, old)
    try:
        os.rename(tmp, target)
    except OSError:
        os.rename(old, target)  # put the previous export back
        raise
    _remove(old)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _os_error(err: BaseException) -> OSError | None:
    seen: set[int] = set()
    cur: BaseException | None = err
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, OSError):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


def _message(target: Path, err: OSError) -> str:
    reason = err.strerror or str(err) or type(err).__name__
    hint = {
        errno.ENOSPC: "free some space",
        errno.EROFS: "choose a writable folder",
        errno.EACCES: "choose a writable folder",
        errno.EDQUOT: "free some space",
    }.get(err.errno or 0, "check the target folder")
    return f"cannot write {target}: {reason} ({hint}); any previous export there is unchanged"
