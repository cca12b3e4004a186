"""The object table: one row per object id of a label image, in physical units.

Columns (see docs/export.md): ``label``; ``voxels`` (count); ``area`` (2 spatial axes)
or ``volume`` (3), in the spatial unit squared / cubed; ``centroid_<axis>``,
``bbox_min_<axis>`` and ``bbox_max_<axis>`` per axis in world coordinates (scale and
translate applied; the bbox gives the centres of the first and last voxel, as napari
shows coordinates); ``n_slices`` (2D slices, i.e. index tuples over the leading axes,
that hold the object); ``unit`` (the spatial unit, or ``pixel``); from provenance when
present: ``source`` (click / box / points+box / automatic / propagated / edited, else
``unknown``), ``edited``, ``predicted_iou`` and ``stability_score`` (NaN when unknown).

Computed chunk by chunk (``skimage.measure.regionprops_table`` per chunk, partial sums
combined: voxel counts, coordinate sums, bbox min / max, (slice, id) pairs), so a label
volume larger than RAM is read once, one chunk at a time, and objects that span chunks
come out as if measured whole.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..engine.progress import Progress, run_to_end
from .calibration import Calibration

if TYPE_CHECKING:
    import pandas as pd

    from .provenance import Provenance

DEFAULT_CHUNK_BYTES = 64 * 2**20  # voxels read at once for numpy input


def object_table(
    labels: Any,
    calibration: Calibration | None = None,
    provenance: Provenance | None = None,
    chunks: Any = None,
) -> pd.DataFrame:
    """The table of :func:`iter_object_table`, run to the end."""
    return run_to_end(iter_object_table(labels, calibration, provenance, chunks))


def iter_object_table(
    labels: Any,
    calibration: Calibration | None = None,
    provenance: Provenance | None = None,
    chunks: Any = None,
) -> Generator[Progress, None, pd.DataFrame]:
    """Measure every object of ``labels`` (numpy, dask or zarr array of integer ids,
    2–5 axes); yields Progress per chunk, returns a DataFrame (one row per id, sorted).
    chunks: dask chunking for numpy input (default: blocks of whole slices of ~64 MB;
    zarr / dask input keeps its own chunks)."""
    from skimage.measure import regionprops_table

    arr = _as_dask(labels, chunks)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"labels must hold integer ids, got dtype {arr.dtype}")
    cal = calibration or Calibration.default(arr.ndim)
    if cal.ndim != arr.ndim:
        raise ValueError(f"calibration has {cal.ndim} axes, labels {arr.ndim}")
    nd = arr.ndim
    lead_shape = arr.shape[:-2]
    offsets = [np.concatenate([[0], np.cumsum(c)[:-1]]) for c in arr.chunks]
    parts, pairs = [], []
    blocks = list(np.ndindex(*arr.numblocks))
    for i, b in enumerate(blocks):
        block = np.asarray(arr.blocks[b].compute())
        origin = np.array([offsets[d][b[d]] for d in range(nd)])
        if block.any():
            if block.dtype.kind == "i" and block.min() < 0:
                raise ValueError("labels must not be negative")
            parts += _measure(block, origin, regionprops_table)
            pairs.append(_slice_pairs(block, origin[:-2], lead_shape))
        yield Progress(i + 1, len(blocks), f"object table: chunk {i + 1}/{len(blocks)}")
    return _finish(parts, pairs, cal, provenance)


def features(table: pd.DataFrame) -> pd.DataFrame:
    """The table as a napari Labels ``features`` table: an ``index`` column (the label
    id, which napari uses to match rows to labels) before the others."""
    out = table.copy()
    out.insert(0, "index", out["label"].to_numpy())
    return out


def table_path(labels_path: str | os.PathLike) -> Path:
    """Where the table of an export goes: ``cells.ome.zarr`` → ``cells.objects.csv``,
    ``labels.tif`` → ``labels.objects.csv`` (same folder); labels inside an image,
    ``image.ome.zarr/labels/nuclei`` → ``image.nuclei.objects.csv`` beside the image
    (not inside the zarr hierarchy)."""
    from .atomic import base_name
    from .ome_zarr import enclosing_image

    p = Path(labels_path)
    image = enclosing_image(p)
    if image is not None:
        return image.with_name(f"{base_name(image)}.{p.name}.objects.csv")
    return p.with_name(base_name(p) + ".objects.csv")


def write_table(path: str | os.PathLike, table: pd.DataFrame) -> Path:
    """Write the table as CSV, atomically."""
    from .atomic import write_text

    return write_text(path, table.to_csv(index=False, float_format="%.10g"))


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    import pandas as pd

    return pd.read_csv(path)


# ---------------------------------------------------------------------- internals
def _as_dask(labels: Any, chunks: Any):
    import dask.array as da

    if isinstance(labels, da.Array):
        return labels if chunks is None else labels.rechunk(chunks)
    if chunks is None:
        chunks = getattr(labels, "chunks", None)
        if not isinstance(chunks, tuple) or not all(isinstance(c, int) for c in chunks):
            chunks = _default_chunks(labels.shape, np.dtype(labels.dtype).itemsize)
    return da.from_array(labels, chunks=chunks)


def _default_chunks(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """Whole slices, as many leading slices as fit in :data:`DEFAULT_CHUNK_BYTES`."""
    plane = int(np.prod(shape[-2:])) * itemsize
    n = max(1, DEFAULT_CHUNK_BYTES // max(plane, 1))
    lead = []
    for s in reversed(shape[:-2]):
        k = min(s, n)
        lead.append(k)
        n = max(1, n // max(s, 1))
    return (*reversed(lead), *shape[-2:])


def _measure(block: np.ndarray, origin: np.ndarray, regionprops_table) -> list:
    """Partial sums of one chunk: per id, voxel count, coordinate sums and bbox (global
    voxel indices, exclusive upper bounds). regionprops works on 2D / 3D arrays: the
    chunk is measured per 3D sub-block along any further leading axes."""
    import pandas as pd

    nd = block.ndim
    k = nd - min(nd, 3)
    out = []
    for lead in np.ndindex(*block.shape[:k]):
        sub = block[lead]
        if not sub.any():
            continue
        ids = None
        if sub.max() > sub.size:  # sparse large ids: regionprops sizes lists by max id
            ids, inv = np.unique(sub, return_inverse=True)
            sub = inv.reshape(sub.shape)
        t = regionprops_table(sub, properties=("label", "area", "centroid", "bbox"))
        n = t["area"].astype(np.float64)
        lab = t["label"].astype(np.int64) if ids is None else ids[t["label"]].astype(np.int64)
        part = {"label": lab, "voxels": t["area"].astype(np.int64)}
        for d in range(nd):
            if d < k:
                c = float(origin[d] + lead[d])
                part[f"s{d}"], part[f"lo{d}"], part[f"hi{d}"] = c * n, c, c + 1
            else:
                e, o = d - k, origin[d]
                part[f"s{d}"] = (t[f"centroid-{e}"] + o) * n
                part[f"lo{d}"] = t[f"bbox-{e}"] + o
                part[f"hi{d}"] = t[f"bbox-{e + nd - k}"] + o
        out.append(pd.DataFrame(part))
    return out


def _slice_pairs(block: np.ndarray, lead_origin: np.ndarray, lead_shape) -> np.ndarray:
    """(global slice number, id) of every (slice, object) in the block, unique."""
    if block.ndim == 2:
        ids = np.unique(block[block != 0])
        return np.stack([np.zeros_like(ids, dtype=np.int64), ids.astype(np.int64)], 1)
    flat = block.reshape(-1, block.shape[-2] * block.shape[-1])
    out = []
    for k, local in enumerate(np.ndindex(*block.shape[:-2])):
        row = flat[k]
        ids = np.unique(row[row != 0])
        if ids.size:
            g = np.ravel_multi_index(tuple(np.asarray(local) + lead_origin), lead_shape)
            out.append(np.stack([np.full(ids.size, g, np.int64), ids.astype(np.int64)], 1))
    return np.concatenate(out) if out else np.zeros((0, 2), np.int64)


def _finish(parts, pairs, cal: Calibration, provenance) -> pd.DataFrame:
    import pandas as pd

    nd = cal.ndim
    ax = cal.axes
    size_col = "area" if len(cal.space_axes) == 2 else "volume"
    cols = ["label", "voxels", size_col]
    cols += [f"centroid_{a}" for a in ax] + [f"bbox_min_{a}" for a in ax]
    cols += [f"bbox_max_{a}" for a in ax]
    cols += ["n_slices", "unit", "source", "edited", "predicted_iou", "stability_score"]
    if not parts:
        return pd.DataFrame({c: [] for c in cols})
    df = pd.concat(parts, ignore_index=True)
    agg: dict[str, str] = {"voxels": "sum"}
    agg.update({f"s{d}": "sum" for d in range(nd)})
    agg.update({f"lo{d}": "min" for d in range(nd)})
    agg.update({f"hi{d}": "max" for d in range(nd)})
    g = df.groupby("label", sort=True).agg(agg)
    count = g["voxels"].to_numpy()
    out: dict[str, Any] = {
        "label": g.index.to_numpy(np.int64),
        "voxels": count,
        size_col: count * cal.voxel_size,
    }
    for d, a in enumerate(ax):
        s, t = cal.scale[d], cal.translate[d]
        out[f"centroid_{a}"] = t + s * (g[f"s{d}"].to_numpy() / count)
    for d, a in enumerate(ax):
        out[f"bbox_min_{a}"] = cal.translate[d] + cal.scale[d] * g[f"lo{d}"].to_numpy()
    for d, a in enumerate(ax):
        out[f"bbox_max_{a}"] = cal.translate[d] + cal.scale[d] * (g[f"hi{d}"].to_numpy() - 1)
    p = np.unique(np.concatenate(pairs), axis=0)
    ids, n_slices = np.unique(p[:, 1], return_counts=True)
    out["n_slices"] = pd.Series(n_slices, index=ids).reindex(out["label"]).to_numpy()
    out["unit"] = cal.space_unit or "pixel"
    info = provenance.objects() if provenance is not None else {}
    rows = [info.get(int(i), {}) for i in out["label"]]
    out["source"] = [r.get("source", "unknown") for r in rows]
    out["edited"] = [bool(r.get("edited", False)) for r in rows]
    for key in ("predicted_iou", "stability_score"):
        out[key] = np.array([np.nan if r.get(key) is None else r[key] for r in rows], float)
    return pd.DataFrame(out, columns=cols)
