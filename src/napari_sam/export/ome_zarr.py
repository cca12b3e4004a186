"""Labels ↔ OME-Zarr (OME-NGFF 0.5 on zarr v3), written and read with ``ngff-zarr``.

Layout. A standalone export (``cells.ome.zarr``) is an NGFF multiscales group holding
the label pyramid; a target inside an OME-Zarr image (``image.ome.zarr/labels/<name>``)
is written there as an NGFF label image: the multiscales group carries ``image-label``
metadata and the image's ``labels`` group lists ``<name>`` (the NGFF image-label
relation). Axes carry names and types (t / c / z / y / x; time / channel / space) and
units when known; every level's coordinate transformations are [scale, translation]
from the layer's scale and translate. The pyramid halves y and x per level
(``DASK_IMAGE_MODE``: each output voxel is the most frequent id of its 2 × 2 block, the
smallest on a tie — never an interpolated id) and is written chunk by chunk from dask,
so lazy labels larger than RAM are streamed. napari-sam's own block (calibration, provenance, table
file) is in the root attributes under ``napari_sam``.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .atomic import ExportError, atomic_output
from .calibration import Calibration

EXPORT_KEY = "napari_sam"  # root attribute holding napari-sam's block
EXPORT_FORMAT = "napari-sam-labels"
EXPORT_VERSION = 1
NGFF_VERSION = "0.5"
CHUNK_PLANE = 256  # y / x chunk size of the written arrays
CHUNK_DEPTH = 16  # chunk size along the other axes (z; 1 for t / c)
MIN_LEVEL_SIZE = 256  # no pyramid level whose larger y / x side is below this


@dataclass(frozen=True)
class OmeZarrData:
    """One resolution level of an OME-Zarr multiscales image.

    data: lazy dask array (level ``level`` of ``n_levels``); axes / types / scale /
    translate / units: per axis, from that level's coordinate transformations
    (units None when not given); attrs: napari-sam's block when the group is a
    napari-sam export, else None.
    """

    data: Any
    axes: tuple[str, ...]
    types: tuple[str, ...]
    scale: tuple[float, ...]
    translate: tuple[float, ...]
    units: tuple[str | None, ...]
    level: int
    n_levels: int
    name: str | None
    attrs: dict[str, Any] | None

    def calibration(self) -> Calibration:
        """As a :class:`Calibration` (ValueError for axes that are not NGFF t/c/z/y/x)."""
        return Calibration(self.axes, self.scale, self.translate, self.units)


def export_block(
    calibration: Calibration,
    name: str | None = None,
    provenance: Any = None,
    table: str | None = None,
) -> dict[str, Any]:
    """napari-sam's metadata block of an export (OME-Zarr attribute / TIFF sidecar)."""
    from .. import __version__

    prov = provenance.to_dict() if hasattr(provenance, "to_dict") else provenance
    return {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "package_version": __version__,
        "name": name,
        "calibration": calibration.to_dict(),
        "table": table,
        "provenance": prov,
    }


def write_ome_zarr(
    path: str | os.PathLike,
    labels: Any,
    calibration: Calibration | None = None,
    *,
    name: str | None = None,
    provenance: Any = None,
    table: str | None = None,
    overwrite: bool = False,
    levels: int | None = None,
    chunks: tuple[int, ...] | None = None,
) -> Path:
    """Write ``labels`` (numpy / dask / zarr array of integer ids) as OME-Zarr at ``path``.

    calibration: axes, scale, translate, units (default: unit voxels). levels: number
    of downsampled levels (None: halve y / x while the larger side stays ≥
    :data:`MIN_LEVEL_SIZE`). A ``path`` of the form ``<image>/labels/<name>`` inside an
    OME-Zarr 0.5 image is written as a label image of that image. An existing export
    is replaced only with ``overwrite``; written to a temporary folder and renamed.
    table: file name of the object table written beside it (recorded in the block).
    """
    import ngff_zarr as nz

    target = Path(path)
    arr = as_dask(labels, chunks)
    cal = calibration or Calibration.default(arr.ndim)
    if cal.ndim != arr.ndim:
        raise ValueError(f"calibration has {cal.ndim} axes, labels {arr.ndim}")
    if arr.dtype.kind not in "iu":
        raise ValueError(f"labels must hold integer ids, got dtype {arr.dtype}")
    image = enclosing_image(target)
    if image is not None:
        _check_image(image, arr.shape)
    name = name or target.name
    img = nz.to_ngff_image(
        arr,
        dims=list(cal.axes),
        scale=dict(zip(cal.axes, cal.scale, strict=True)),
        translation=dict(zip(cal.axes, cal.translate, strict=True)),
        name=name,
        axes_units={a: u for a, u in zip(cal.axes, cal.units, strict=True) if u is not None},
    )
    factors = pyramid_factors(arr.shape, cal.axes, levels)
    ms = nz.to_multiscales(
        img, scale_factors=factors, method=nz.Methods.DASK_IMAGE_MODE, chunks=arr.chunksize
    )
    ms.root_attributes = {EXPORT_KEY: export_block(cal, name, provenance, table)}
    with atomic_output(target, overwrite, is_export, folder=True) as tmp:
        nz.to_ngff_zarr(str(tmp), ms, version=NGFF_VERSION)
        if image is not None:
            _update_group_json(tmp, lambda ome: ome.setdefault(
                "image-label", {"version": NGFF_VERSION, "source": {"image": "../../"}}
            ))
    if image is not None:
        _register_label(image, target.name)
    return target


def read_ome_zarr(path: str | os.PathLike, level: int = 0) -> OmeZarrData:
    """Level ``level`` of the OME-Zarr multiscales image (or label image) at ``path``:
    lazy array, axes, scale, translate and units (any NGFF version ngff-zarr reads)."""
    import ngff_zarr as nz

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"not found: {p}")
    try:
        ms = nz.from_ngff_zarr(str(p), validate=False)
    except Exception as err:
        raise ValueError(f"{p} is not an OME-Zarr multiscales image: {err}") from None
    n = len(ms.images)
    if not -n <= level < n:
        raise ValueError(f"{p} has {n} resolution level(s); --level must be 0..{n - 1}")
    im = ms.images[level]
    axes = tuple(str(a) for a in im.dims)
    meta_axes = {a.name: a for a in ms.metadata.axes}
    types = tuple(str(getattr(meta_axes.get(a), "type", None) or "space") for a in axes)
    units = tuple(_unit(getattr(meta_axes.get(a), "unit", None)) for a in axes)
    return OmeZarrData(
        data=im.data,
        axes=axes,
        types=types,
        scale=tuple(float(im.scale.get(a, 1.0)) for a in axes),
        translate=tuple(float(im.translation.get(a, 0.0)) for a in axes),
        units=units,
        level=level % n,
        n_levels=n,
        name=getattr(ms.metadata, "name", None),
        attrs=read_export_attrs(p),
    )


def read_export_attrs(path: str | os.PathLike) -> dict[str, Any] | None:
    """napari-sam's block of a zarr group (None when it is not a napari-sam export)."""
    meta = Path(path) / "zarr.json"
    try:
        doc = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    block = doc.get("attributes", {}).get(EXPORT_KEY)
    return block if isinstance(block, dict) and block.get("format") == EXPORT_FORMAT else None


def is_export(path: Path) -> bool:
    return read_export_attrs(path) is not None


def labels_path(image: str | os.PathLike, name: str) -> Path:
    """Where a label image called ``name`` of an OME-Zarr image goes."""
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"invalid label image name {name!r}")
    return Path(image) / "labels" / name


def enclosing_image(target: Path) -> Path | None:
    """The OME-Zarr image whose ``labels`` group ``target`` is in, else None."""
    if target.parent.name != "labels":
        return None
    image = target.parent.parent
    ome = _group_attrs(image).get("ome", {})
    return image if "multiscales" in ome else None


def pyramid_factors(
    shape: tuple[int, ...], axes: tuple[str, ...], levels: int | None
) -> list[dict[str, int]]:
    """Downsampling factors per level: y and x halved per level, other axes kept."""
    yx = [i for i, a in enumerate(axes) if a in ("y", "x")]
    if levels is None:
        levels = 0
        while max(shape[i] for i in yx) // 2 ** (levels + 1) >= MIN_LEVEL_SIZE:
            levels += 1
    return [{a: (2**k if a in ("y", "x") else 1) for a in axes} for k in range(1, levels + 1)]


def as_dask(labels: Any, chunks: tuple[int, ...] | None = None):
    """numpy / zarr / dask → dask array; numpy gets :data:`CHUNK_DEPTH` ×
    :data:`CHUNK_PLANE`² chunks (``chunks`` overrides), zarr keeps its own."""
    import dask.array as da

    if isinstance(labels, da.Array):
        return labels if chunks is None else labels.rechunk(chunks)
    if chunks is None:
        own = getattr(labels, "chunks", None)
        if isinstance(own, tuple) and all(isinstance(c, int) for c in own):
            chunks = own
        else:
            nd = labels.ndim
            chunks = tuple(
                min(s, CHUNK_PLANE if i >= nd - 2 else (CHUNK_DEPTH if i == nd - 3 else 1))
                for i, s in enumerate(labels.shape)
            )
    return da.from_array(labels, chunks=chunks)


# ---------------------------------------------------------------------- internals
def _unit(u: Any) -> str | None:
    if u is None:
        return None
    return str(getattr(u, "value", u)) or None


def _group_attrs(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads((path / "zarr.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return doc.get("attributes", {}) if doc.get("node_type") == "group" else {}


def _check_image(image: Path, shape: tuple[int, ...]) -> None:
    ome = _group_attrs(image)["ome"]
    version = str(ome.get("version", ""))
    if version != NGFF_VERSION:
        raise ExportError(
            f"{image} is OME-Zarr {version or '< 0.5'}; labels can be added only to "
            f"OME-Zarr {NGFF_VERSION} images: export next to it instead"
        )
    img = read_ome_zarr(image)
    space = [i for i, t in enumerate(img.types) if t == "space"]
    want = tuple(img.data.shape[i] for i in space)
    if tuple(shape[-len(want):]) != want:
        raise ExportError(
            f"labels of shape {tuple(shape)} do not fit the image {image.name} "
            f"(spatial shape {want})"
        )


def _update_group_json(group: Path, edit) -> None:
    """Edit the ``ome`` attributes of a zarr v3 group's zarr.json, atomically."""
    from .atomic import write_text

    meta = group / "zarr.json"
    doc = json.loads(meta.read_text(encoding="utf-8"))
    edit(doc.setdefault("attributes", {}).setdefault("ome", {}))
    write_text(meta, json.dumps(doc, indent=2))


def _register_label(image: Path, name: str) -> None:
    """List ``name`` in ``<image>/labels`` (created when missing); refresh the image's
    consolidated metadata when it has some."""
    import zarr

    group = image / "labels"
    if not (group / "zarr.json").exists():
        zarr.open_group(str(group), mode="a", zarr_format=3)

    def add(ome: dict) -> None:
        ome.setdefault("version", NGFF_VERSION)
        names = ome.setdefault("labels", [])
        if name not in names:
            names.append(name)

    _update_group_json(group, add)
    root = json.loads((image / "zarr.json").read_text(encoding="utf-8"))
    if root.get("consolidated_metadata"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "not part of the v3 spec"
            zarr.consolidate_metadata(str(image))
