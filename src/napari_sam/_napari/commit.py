"""Writing masks into a napari Labels layer through its history (undo / redo).

One user action (a commit, an automatic segmentation, a propagation) is one undo step:
all writes go through ``Labels.data_setitem`` inside ``Labels.block_history()``. What
to write is decided without napari in :mod:`napari_sam.session.commit` (which pixels a
commit takes, the plans of long jobs); this module reads and writes the layer.
"""

from __future__ import annotations

import numpy as np
from napari.layers import Image, Labels

from ..engine.labels import next_free_id
from ..session.commit import (
    IdSnapshot,
    LabelWrite,
    commit_pixels,
    known_max_id,
    plan_write,
)
from .adapters import SliceContext, spatial_ndim
from .constants import LABELS_LAYER


def labels_shape(image: Image, channel_axis: int | None = None) -> tuple[int, ...]:
    """The image's shape without the RGB and channel axes."""
    shape = tuple(image.data.shape[: spatial_ndim(image)])
    return shape if channel_axis is None else shape[1:]


LARGE_LABELS_BYTES = 1 << 30  # bigger label volumes live in a chunked zarr array on disk
MAX_ID_KEY = "napari_sam_max_id"  # layer.metadata: largest id, for non-numpy labels


def new_labels_data(shape: tuple[int, ...]) -> np.ndarray:
    """Zeros of ``shape`` (uint32): numpy, or — above 1 GiB — a zarr array with one chunk
    per slice in a temporary folder, so huge volumes never need the RAM."""
    if int(np.prod(shape, dtype=np.int64)) * 4 <= LARGE_LABELS_BYTES:
        return np.zeros(shape, dtype=np.uint32)
    import tempfile

    import zarr

    folder = tempfile.mkdtemp(prefix="napari-sam-labels-")
    chunks = (1,) * (len(shape) - 2) + tuple(shape[-2:])
    return zarr.create_array(store=folder, shape=shape, chunks=chunks, dtype="uint32", fill_value=0)


def next_label_id(labels: Labels) -> int:
    """The next free id. numpy labels: 1 + max. Other arrays (zarr, dask): a counter kept
    in ``layer.metadata`` (computed chunk-wise once), so no volume is loaded whole."""
    if isinstance(labels.data, np.ndarray):
        return next_free_id(labels.data)
    if MAX_ID_KEY not in labels.metadata:
        import dask.array as da

        data = labels.data
        arr = da.from_array(data, chunks=getattr(data, "chunks", "auto"))
        labels.metadata[MAX_ID_KEY] = int(arr.max().compute())
    return int(labels.metadata[MAX_ID_KEY]) + 1


def add_labels_layer(
    viewer, image: Image, channel_axis: int | None = None, name: str = LABELS_LAYER
) -> Labels:
    """An empty uint32 Labels layer with the image's shape, scale and translate (without
    the channel axis, which must be axis 0)."""
    drop = slice(None) if channel_axis is None else slice(1, None)
    kwargs = {"scale": image.scale[drop], "translate": image.translate[drop]}
    if channel_axis is None:
        kwargs.update(rotate=image.rotate, shear=image.shear, affine=image.affine.affine_matrix)
    data = new_labels_data(labels_shape(image, channel_axis))
    metadata = {} if isinstance(data, np.ndarray) else {MAX_ID_KEY: 0}
    return viewer.add_labels(data, name=name, metadata=metadata, **kwargs)


def check_compatible(labels: Labels, image: Image, channel_axis: int | None = None) -> None:
    """Labels must have the image's (non-RGB, non-channel) shape."""
    if tuple(labels.data.shape) != labels_shape(image, channel_axis):
        raise ValueError(
            f"labels layer {labels.name!r} has shape {tuple(labels.data.shape)}, the image "
            f"{image.name!r} needs {labels_shape(image, channel_axis)}; choose or create one"
        )


def commit_slice_mask(
    labels: Labels,
    mask: np.ndarray,
    ctx: SliceContext,
    overwrite: bool = False,
    origin: tuple[int, int] = (0, 0),
) -> int | None:
    """Write a 2D mask (h, w) bool whose top-left pixel is ``origin`` (row, col) on
    slice ``ctx`` (the whole slice: (H, W) at (0, 0); a tile's window on a tiled slice)
    as a new object (next free id), one undo step. Only the labels inside the mask's
    bounding box are read. Existing objects are kept unless ``overwrite``
    (:func:`~napari_sam.session.commit.commit_pixels`). Returns the id, or None when
    nothing was written (empty mask, or covered entirely by existing objects)."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    top, left = int(origin[0]) + r0, int(origin[1]) + c0
    box = (slice(top, top + r1 - r0), slice(left, left + c1 - c0))
    current = labels.data[(*ctx.labels_index, *box)]
    rows, cols = commit_pixels(current, mask[r0:r1, c0:c1], overwrite)
    if rows.size == 0:
        return None
    label_id = next_label_id(labels)
    lead = tuple(np.full(rows.size, i, dtype=np.intp) for i in ctx.labels_index)
    with labels.block_history():
        labels.data_setitem((*lead, rows + top, cols + left), label_id)
    _note_written(labels, label_id)
    labels.selected_label = label_id
    return label_id


# ------------------------------------------------------------------ volume writes
# A long job (propagation, automatic segmentation) plans its write in its worker
# (session.commit.plan_write: it reads the labels block there and keeps only the pixels
# that change) and the GUI thread applies the plan with ONE data_setitem of those pixels
# (one undo step), so the GUI never reads or compares whole volumes.

WRITES_KEY = "napari_sam_writes"  # layer.metadata: largest id of each napari-sam write


def id_snapshot(labels: Labels) -> IdSnapshot:
    counter = None if isinstance(labels.data, np.ndarray) else labels.metadata.get(MAX_ID_KEY)
    return IdSnapshot(counter, len(labels.metadata.get(WRITES_KEY, ())))


def _note_written(labels: Labels, largest: int) -> None:
    """Record a napari-sam write (its largest id) in the layer's metadata."""
    labels.metadata[WRITES_KEY] = [*labels.metadata.get(WRITES_KEY, ()), int(largest)]
    if MAX_ID_KEY in labels.metadata:
        labels.metadata[MAX_ID_KEY] = max(int(labels.metadata[MAX_ID_KEY]), int(largest))


def apply_write(labels: Labels, plan: LabelWrite, overwrite: bool = False) -> int:
    """GUI thread: write a plan as ONE undo step. Pixels labelled since it was planned
    are kept (unless ``overwrite``); its new ids move above any id that napari-sam wrote
    into the layer meanwhile. Reads and writes only the planned pixels. Returns the
    number of pixels changed."""
    if plan.size == 0:
        return 0
    idx, values = plan.indices, plan.values.astype(np.int64, copy=True)
    if not overwrite:
        free = np.asarray(labels.data[idx]) == 0
        idx, values = tuple(a[free] for a in idx), values[free]
    if values.size == 0:
        return 0
    meanwhile = labels.metadata.get(WRITES_KEY, [])[plan.since :]
    shift = max(meanwhile, default=0) - plan.base
    if shift > 0:
        values[values > plan.base] += shift
    with labels.block_history():
        labels.data_setitem(idx, values.astype(labels.data.dtype))
    if not isinstance(labels.data, np.ndarray):
        labels.metadata.setdefault(MAX_ID_KEY, plan.base)  # counted in the worker
    _note_written(labels, int(values.max()))
    return int(values.size)


def write_volume(
    labels: Labels, result: np.ndarray, overwrite: bool = False, key: tuple[int, ...] = ()
) -> int:
    """Plan and apply at once, on the calling thread: ``result`` into
    ``labels.data[key]`` as ONE undo step. Returns the number of pixels changed."""
    snap = id_snapshot(labels)
    base = known_max_id(labels.data, snap)
    plan = plan_write(labels.data, result, key, base, overwrite, snap.writes)
    return apply_write(labels, plan, overwrite)
