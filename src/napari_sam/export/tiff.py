"""Labels ↔ calibrated OME-TIFF (tifffile), with a JSON sidecar.

``labels.tif`` is an OME-TIFF (uint8 / uint16 / uint32 / int8–int32 labels; larger ids
raise) whose OME-XML holds the axes and ``PhysicalSizeX/Y/Z`` with units, so Fiji
(Bio-Formats) opens it calibrated; every plane's ``PositionX/Y/Z`` (and ``DeltaT``) is
the world position of its first voxel (the layer's translate); the TIFF resolution tags
carry the pixel size too (pixels per centimetre when the unit is a length). Planes are
written one at a time from lazy input (bounded memory), zlib-compressed, as BigTIFF
above 2 GB. Beside it, ``labels.napari_sam.json`` holds napari-sam's block: calibration
(exact scale and translate), provenance and the table file name. napari-sam's reader
recognises these files (the sidecar, or ``Software`` = napari-sam) and re-opens them
calibrated; any other TIFF is left to napari's own reader.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_output, base_name, write_text
from .calibration import OME_SYMBOLS, Calibration
from .ome_zarr import EXPORT_FORMAT, EXPORT_KEY, export_block

SOFTWARE = "napari-sam"
SIDECAR_SUFFIX = ".napari_sam.json"
BIGTIFF_BYTES = 2**31 - 2**25  # classic TIFF offsets are 32-bit; many readers sign them
_OME_TYPES = {"u1", "u2", "u4", "i1", "i2", "i4"}
_LENGTH_UNITS_PER_CM = {"nanometer": 1e7, "micrometer": 1e4, "millimeter": 10.0,
                        "centimeter": 1.0, "meter": 0.01}


def sidecar_path(path: str | os.PathLike) -> Path:
    """``labels.tif`` → ``labels.napari_sam.json`` (same folder)."""
    p = Path(path)
    return p.with_name(base_name(p) + SIDECAR_SUFFIX)


def write_tiff(
    path: str | os.PathLike,
    labels: Any,
    calibration: Calibration | None = None,
    *,
    name: str | None = None,
    provenance: Any = None,
    table: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``labels`` (numpy / dask / zarr, 2–5 axes) as OME-TIFF + sidecar, one plane
    in memory at a time. An existing file is replaced only with ``overwrite``."""
    import tifffile

    target = Path(path)
    cal = calibration or Calibration.default(labels.ndim)
    if cal.ndim != labels.ndim:
        raise ValueError(f"calibration has {cal.ndim} axes, labels {labels.ndim}")
    dtype = _tiff_dtype(labels)
    shape = tuple(int(s) for s in labels.shape)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize

    def pages() -> Iterator[np.ndarray]:
        for idx in np.ndindex(*shape[:-2]):
            page = np.asarray(labels[idx])
            if page.dtype != dtype:
                if page.size and (page.min() < 0 or page.max() > np.iinfo(dtype).max):
                    raise ValueError(f"label ids beyond {dtype} cannot be stored in a TIFF")
                page = page.astype(dtype)
            yield page

    with atomic_output(target, overwrite) as tmp:
        with tifffile.TiffWriter(tmp, bigtiff=nbytes >= BIGTIFF_BYTES, ome=True) as tw:
            tw.write(
                pages(),
                shape=shape,
                dtype=dtype,
                photometric="minisblack",
                compression="zlib",
                metadata=_ome_metadata(cal, shape, name),
                software=SOFTWARE,
                **_resolution(cal),
            )
    block = export_block(cal, name, provenance, table)
    write_text(sidecar_path(target), json.dumps({EXPORT_KEY: block}, indent=1))
    return target


def read_tiff(path: str | os.PathLike) -> tuple[Any, Calibration, dict[str, Any] | None]:
    """(lazy zarr array, calibration, napari-sam block or None) of an OME-TIFF: the
    calibration from the sidecar when there is one, else from the OME-XML."""
    import tifffile
    import zarr

    p = Path(path)
    block = read_sidecar(p)
    with tifffile.TiffFile(p) as tif:
        axes = tif.series[0].axes.lower()
        ome = tif.ome_metadata
    data = zarr.open(tifffile.imread(p, aszarr=True), mode="r")
    if block is not None:
        cal = Calibration.from_dict(block["calibration"])
    else:
        cal = _calibration_from_ome(ome, axes, data.ndim)
    if cal.ndim != data.ndim:
        raise ValueError(f"{p.name}: calibration has {cal.ndim} axes, the image {data.ndim}")
    return data, cal, block


def read_sidecar(path: str | os.PathLike) -> dict[str, Any] | None:
    """napari-sam's block from a TIFF's sidecar (None when absent or not ours)."""
    try:
        doc = json.loads(sidecar_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    block = doc.get(EXPORT_KEY) if isinstance(doc, dict) else None
    return block if isinstance(block, dict) and block.get("format") == EXPORT_FORMAT else None


def is_tiff_export(path: str | os.PathLike) -> bool:
    """True for a TIFF written by napari-sam (sidecar present, or Software tag)."""
    p = Path(path)
    if not p.is_file():
        return False
    if read_sidecar(p) is not None:
        return True
    try:
        import tifffile

        with tifffile.TiffFile(p) as tif:
            return str(tif.pages.first.software or "").startswith(SOFTWARE)
    except Exception:
        return False


# ---------------------------------------------------------------------- internals
def _tiff_dtype(labels: Any) -> np.dtype:
    dt = np.dtype(labels.dtype)
    if dt.kind not in "iu":
        raise ValueError(f"labels must hold integer ids, got dtype {dt}")
    if dt.str[1:] in _OME_TYPES:
        return dt
    return np.dtype(np.uint32)  # int64 / uint64 layers: checked page by page


def _ome_metadata(cal: Calibration, shape: tuple[int, ...], name: str | None) -> dict:
    md: dict[str, Any] = {"axes": "".join(cal.axes).upper()}
    if name:
        md["Name"] = name
    nplanes = int(np.prod(shape[:-2], dtype=np.int64))
    lead = list(np.ndindex(*shape[:-2]))
    plane: dict[str, list] = {}
    for d, a in enumerate(cal.axes):
        unit = OME_SYMBOLS.get(cal.units[d] or "", None)
        if a in ("x", "y", "z"):
            md[f"PhysicalSize{a.upper()}"] = cal.scale[d]
            md[f"PhysicalSize{a.upper()}Unit"] = unit or "pixel"
            key = f"Position{a.upper()}"
        elif a == "t":
            md["TimeIncrement"] = cal.scale[d]
            if unit:
                md["TimeIncrementUnit"] = unit
            key = "DeltaT"
        else:
            continue
        if d >= cal.ndim - 2:
            values = [cal.translate[d]] * nplanes
        else:
            values = [cal.translate[d] + cal.scale[d] * idx[d] for idx in lead]
        plane[key] = values
        if unit or a != "t":
            plane[f"{key}Unit"] = [unit or ("pixel" if a != "t" else "s")] * nplanes
    md["Plane"] = plane
    return md


def _resolution(cal: Calibration) -> dict[str, Any]:
    """TIFF XResolution / YResolution (pixels per unit) from the y / x scale."""
    sy, sx = cal.scale[-2], cal.scale[-1]
    unit = cal.units[-1] if cal.units[-1] == cal.units[-2] else None
    per_cm = _LENGTH_UNITS_PER_CM.get(unit or "")
    if per_cm is None:
        return {"resolution": (1.0 / sx, 1.0 / sy), "resolutionunit": "NONE"}
    return {"resolution": (per_cm / sx, per_cm / sy), "resolutionunit": "CENTIMETER"}


def _calibration_from_ome(ome: str | None, axes: str, ndim: int) -> Calibration:
    """Scale, translate and units from OME-XML (first plane's positions)."""
    if not ome:
        return Calibration.create(ndim, axes=tuple(axes))
    import tifffile

    pixels = tifffile.xml2dict(ome)["OME"]["Image"]
    pixels = (pixels[0] if isinstance(pixels, list) else pixels)["Pixels"]
    planes = pixels.get("Plane", [])
    first = planes[0] if isinstance(planes, list) and planes else (planes or {})
    symbols = {v: k for k, v in OME_SYMBOLS.items()}
    scale, translate, units = [], [], []
    for a in axes:
        if a in "xyz":
            scale.append(float(pixels.get(f"PhysicalSize{a.upper()}", 1.0)))
            translate.append(float(first.get(f"Position{a.upper()}", 0.0)))
            units.append(symbols.get(pixels.get(f"PhysicalSize{a.upper()}Unit", "µm")))
        elif a == "t":
            scale.append(float(pixels.get("TimeIncrement", 1.0)))
            translate.append(float(first.get("DeltaT", 0.0)))
            units.append(symbols.get(pixels.get("TimeIncrementUnit", "s")))
        else:
            scale.append(1.0)
            translate.append(0.0)
            units.append(None)
    return Calibration.create(ndim, scale, translate, units, tuple(axes))
