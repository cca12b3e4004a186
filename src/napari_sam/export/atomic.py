"""Safe output: every export is written under a temporary name in the target's own
directory and renamed into place only when complete — by :mod:`napari_sam.outputs`, the
one implementation of atomic results; this module adds the export's rules and errors.

* An existing target is replaced only with ``overwrite=True``; a directory is replaced
  only when it is a previous napari-sam export (never a folder the user made).
* A failure while writing (disk full, read-only target, …) removes the temporary
  output, leaves the previous file intact and raises ONE :class:`ExportError` naming
  the target and the cause.
"""

from __future__ import annotations

import errno
import os
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
    *,
    folder: bool = False,
) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; write the output there — a file, or
    with ``folder`` a folder (the yielded folder exists, empty; e.g. OME-Zarr).

    The renaming is :mod:`napari_sam.outputs`' (:func:`~napari_sam.outputs.atomic_dir` /
    :func:`~napari_sam.outputs.atomic_file`): on success the temporary output takes
    ``target``'s name (an existing one, when allowed by :func:`check_target`, is moved
    aside first and deleted after); on any error it is removed and the target left as
    it was. OSErrors (anywhere in the exception chain) become one :class:`ExportError`.
    """
    from ..outputs import OutputError, OutputExistsError, atomic_dir, atomic_file

    target = Path(target)
    check_target(target, overwrite, is_export)
    writer = atomic_dir if folder else atomic_file
    try:
        with writer(target, overwrite=overwrite) as tmp:
            yield tmp
    except ExportError:
        raise
    except OutputExistsError:  # created meanwhile by someone else
        raise ExportError(
            f"{target} exists; choose another name or ask to overwrite it"
        ) from None
    except BaseException as err:
        os_err = _os_error(err)
        if os_err is not None:
            raise ExportError(_message(target, os_err)) from err
        if isinstance(err, OutputError):
            raise ExportError(str(err)) from err
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
