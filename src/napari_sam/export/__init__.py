"""Labels export: OME-Zarr (NGFF 0.5) and calibrated OME-TIFF writers and readers, the
object table, provenance and headless replay (docs/export.md).

No napari or Qt here: the npe2 reader / writer hooks (``_napari/io_hooks.py``), the
widget and the CLI call these functions. Main names::

    export_labels("cells.ome.zarr", labels, Calibration.create(3, scale, translate),
                  provenance=prov, overwrite=False)      # + cells.objects.csv
    read_ome_zarr("image.ome.zarr", level=0)             # lazy array + axes + calibration
    object_table(labels, calibration, provenance)        # pandas DataFrame
    replay(Provenance.load("labels.napari_sam.json"), image)
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from .atomic import ExportError
from .calibration import Calibration

PROVENANCE_KEY = "napari_sam_provenance"  # Labels layer.metadata key the session fills
ZARR_SUFFIXES = (".ome.zarr", ".zarr")
TIFF_SUFFIXES = (".ome.tif", ".ome.tiff", ".tif", ".tiff")

_LAZY = {
    "Provenance": ".provenance",
    "PromptRound": ".provenance",
    "ProvenanceError": ".provenance",
    "read_ome_zarr": ".ome_zarr",
    "write_ome_zarr": ".ome_zarr",
    "labels_path": ".ome_zarr",
    "write_tiff": ".tiff",
    "read_tiff": ".tiff",
    "object_table": ".table",
    "iter_object_table": ".table",
    "features": ".table",
    "table_path": ".table",
    "replay": ".replay",
    "iter_replay": ".replay",
}

__all__ = [
    "PROVENANCE_KEY",
    "Calibration",
    "ExportError",
    "export_labels",
    *sorted(_LAZY),
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def export_labels(
    path: str | os.PathLike,
    labels: Any,
    calibration: Calibration | None = None,
    *,
    name: str | None = None,
    provenance: Any = None,
    overwrite: bool = False,
    table: Any = True,
    levels: int | None = None,
) -> list[Path]:
    """Write ``labels`` to ``path`` — OME-Zarr for ``.ome.zarr`` / ``.zarr`` (or a
    ``<image>.ome.zarr/labels/<name>`` target), OME-TIFF for ``.tif`` / ``.tiff`` — and,
    with ``table``, the object table as CSV beside it (``table`` may be the table
    itself, a DataFrame measured beforehand, e.g. in a worker with progress and
    cancel: :func:`~.table.iter_object_table`). Returns the paths written.
    Existing outputs are replaced only with ``overwrite``; nothing is left half-written
    (:class:`ExportError` on a full disk / read-only folder)."""
    from .ome_zarr import enclosing_image, write_ome_zarr
    from .table import object_table, table_path, write_table
    from .tiff import sidecar_path, write_tiff

    target = Path(path)
    low = target.name.lower()
    is_tiff = low.endswith(TIFF_SUFFIXES)
    if not (is_tiff or low.endswith(ZARR_SUFFIXES) or enclosing_image(target) is not None):
        raise ExportError(
            f"{target.name}: use .ome.zarr / .zarr (OME-Zarr) or .tif / .tiff (OME-TIFF)"
        )
    cal = calibration or Calibration.default(labels.ndim)
    tpath = table_path(target)
    measured = None if isinstance(table, bool) else table
    table = measured is not None or bool(table)
    if table and tpath.exists() and not overwrite:
        raise ExportError(f"{tpath} exists; choose another name or ask to overwrite it")
    kw = {"name": name, "provenance": provenance, "overwrite": overwrite}
    kw["table"] = tpath.name if table else None
    if is_tiff:
        written = [write_tiff(target, labels, cal, **kw), sidecar_path(target)]
    else:
        written = [write_ome_zarr(target, labels, cal, levels=levels, **kw)]
    if table:
        prov = provenance
        if isinstance(prov, dict):
            from .provenance import Provenance

            prov = Provenance.from_dict(prov)
        frame = measured if measured is not None else object_table(labels, cal, prov)
        written.append(write_table(tpath, frame))
    return written
