"""Writing masks into a napari Labels layer through its history (undo / redo).

One user action (a commit, an automatic segmentation, a propagation) is one undo step:
all writes go through ``Labels.data_setitem`` inside ``Labels.block_history()``.
"""

from __future__ import annotations

import numpy as np
from napari.layers import Image, Labels

from ..engine.labels import next_free_id
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
    labels: Labels, mask: np.ndarray, ctx: SliceContext, overwrite: bool = False
) -> int | None:
    """Write a 2D mask (H, W) on slice ``ctx`` as a new object (next free id).

    Existing objects are kept unless ``overwrite``. Returns the id, or None when
    nothing was written (empty mask, or covered entirely by existing objects).
    """
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return None
    current = np.asarray(labels.data[ctx.labels_index])
    if not overwrite:
        free = current[rows, cols] == 0
        rows, cols = rows[free], cols[free]
        if rows.size == 0:
            return None
    label_id = next_label_id(labels)
    lead = tuple(np.full(rows.size, i, dtype=np.intp) for i in ctx.labels_index)
    with labels.block_history():
        labels.data_setitem((*lead, rows, cols), label_id)
    if MAX_ID_KEY in labels.metadata:
        labels.metadata[MAX_ID_KEY] = max(labels.metadata[MAX_ID_KEY], label_id)
    labels.selected_label = label_id
    return label_id


def write_volume(
    labels: Labels, result: np.ndarray, overwrite: bool = False, key: tuple[int, ...] = ()
) -> int:
    """Write ``result`` into ``labels.data[key]`` as ONE undo step; 0 in ``result``
    leaves the labels as they are. ``key`` is a leading index (e.g. the time point of a
    (T, Z, Y, X) layer) so that only that block is read and no full-size array is built.
    Returns the number of pixels changed."""
    key = tuple(int(k) for k in key)
    expected = tuple(labels.data.shape[len(key) :])
    if result.shape != expected:
        raise ValueError(f"result shape {result.shape} ≠ labels block shape {expected}")
    target = result > 0
    if not overwrite:
        target &= np.asarray(labels.data[key] if key else labels.data) == 0
    idx = np.nonzero(target)
    n = int(idx[0].size)
    if n == 0:
        return 0
    values = result[idx]
    full_idx = tuple(np.full(n, k, dtype=np.intp) for k in key) + idx
    with labels.block_history():
        labels.data_setitem(full_idx, values.astype(labels.data.dtype, copy=False))
    return n
