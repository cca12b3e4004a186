"""npe2 reader and writer contributions: thin adapters between napari layer data /
meta and :mod:`napari_sam.export`.

Writers (File > Save of a Labels layer): OME-Zarr (``.ome.zarr`` / ``.zarr``, or
``<image>.ome.zarr/labels/<name>``) and OME-TIFF (``.tif`` / ``.tiff``), each with the
object table (CSV) beside it and the layer's provenance (``layer.metadata``
``napari_sam_provenance``) when it has one. npe2 writers get only (path, data, meta):
no "overwrite" flag — napari's Save dialog asks the user before replacing a file, so
the hooks replace an existing export (never a folder that is not one), atomically.

Reader: ``.tif`` / ``.tiff`` / ``.zarr`` written by napari-sam are opened as a Labels
layer with their scale, translate, units and the object table as ``features``; for
any other file the reader returns None, so napari's own (or another plugin's) is used.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..export import PROVENANCE_KEY, Calibration, export_labels

LayerData = tuple[Any, dict[str, Any], str]


def write_labels_ome_zarr(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """npe2 single-layer writer: Labels → OME-Zarr (+ object table)."""
    return _write(path, data, meta)


def write_labels_tiff(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """npe2 single-layer writer: Labels → OME-TIFF (+ sidecar, object table)."""
    return _write(path, data, meta)


def get_reader(path: str | list[str]) -> Callable[[str], list[LayerData]] | None:
    """npe2 reader: a reader function for napari-sam exports, None for anything else."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(path)
    low = p.name.lower()
    if low.endswith((".tif", ".tiff")):
        from ..export.tiff import is_tiff_export

        return read_labels if is_tiff_export(p) else None
    if p.is_dir():
        from ..export.ome_zarr import read_export_attrs

        return read_labels if read_export_attrs(p) is not None else None
    return None


def read_labels(path: str | list[str]) -> list[LayerData]:
    """[(data, kwargs, "labels")] of a napari-sam export (OME-Zarr: all levels)."""
    p = Path(path[0] if isinstance(path, list) else path)
    if p.is_dir():
        from ..export.ome_zarr import read_ome_zarr

        first = read_ome_zarr(p)
        levels = [first.data] + [read_ome_zarr(p, k).data for k in range(1, first.n_levels)]
        data: Any = levels if len(levels) > 1 else levels[0]
        cal, block = first.calibration(), first.attrs or {}
    else:
        from ..export.tiff import read_tiff

        data, cal, block = read_tiff(p)
        block = block or {}
    kwargs: dict[str, Any] = {
        "name": block.get("name") or p.name.split(".")[0],
        "multiscale": isinstance(data, list),
        **cal.napari_kwargs(),
    }
    table = _table(p, block)
    if table is not None:
        kwargs["features"] = table
    if block.get("provenance") is not None:
        kwargs["metadata"] = {PROVENANCE_KEY: block["provenance"]}
    return [(data, kwargs, "labels")]


# ---------------------------------------------------------------------- internals
def _write(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    level0 = data[0] if isinstance(data, list) else data
    cal = Calibration.from_layer_meta(meta, level0.ndim)
    prov = (meta.get("metadata") or {}).get(PROVENANCE_KEY)
    written = export_labels(
        path, level0, cal, name=meta.get("name"), provenance=prov, overwrite=True
    )
    return [str(p) for p in written]


def _table(path: Path, block: dict[str, Any]):
    from ..export.table import features, read_table, table_path

    csv = table_path(path)
    if not csv.is_file():
        return None
    return features(read_table(csv))
