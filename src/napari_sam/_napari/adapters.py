"""napari layer adapters: the current 2D slice, prompts on it in (row, col), prompt
layers that follow the image layer's transform.

Every mapping between layers goes prompt layer data → world (``data_to_world``) →
image data (``world_to_data``), so prompt layers with any scale / translate work.
The 2D slice is addressed by the integer index tuple over the image's non-displayed
data axes (e.g. (t, z)); displayed axes must be the image's last two spatial axes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from napari.layers import Image, Points, Shapes

from .constants import (
    BOX_EDGE_COLOR,
    BOXES_LAYER,
    NEGATIVE_COLOR,
    POINTS_LAYER,
    POSITIVE_COLOR,
    POSITIVE_FEATURE,
)


@dataclass(frozen=True)
class SliceContext:
    """The slice of ``image`` shown now.

    index: ints over the image's non-spatial data axes (channel axis included), in
    axis order; spatial: the two displayed data axes (row, col); shape: (H, W).
    """

    index: tuple[int, ...]
    spatial: tuple[int, int]
    shape: tuple[int, int]
    rgb: bool
    channel_axis: int | None = None

    @property
    def labels_index(self) -> tuple[int, ...]:
        """The index in the Labels layer, which has no channel axis."""
        if self.channel_axis is None:
            return self.index
        return self.index[: self.channel_axis] + self.index[self.channel_axis + 1 :]


def spatial_ndim(layer: Image) -> int:
    """Number of non-RGB data axes of an image layer."""
    return layer.ndim  # napari's Image.ndim excludes the RGB axis


def current_slice(viewer, layer: Image, channel_axis: int | None = None) -> SliceContext:
    """Slice of ``layer`` at the viewer's current position.

    channel_axis: a non-spatial axis holding channels (only axis 0 is supported: the
    Labels layer drops it and napari aligns layers by their trailing axes).
    Raises ValueError when the view is 3D or the displayed axes are not the layer's
    last two axes (transposed views are not supported).
    """
    if viewer.dims.ndisplay != 2:
        raise ValueError("switch the viewer to 2D to segment (napari-sam works on slices)")
    nd = spatial_ndim(layer)
    offset = viewer.dims.ndim - nd
    displayed = tuple(a - offset for a in viewer.dims.displayed)
    if displayed != (nd - 2, nd - 1):
        raise ValueError("the displayed axes must be the image's last two (undo transposes)")
    pos = layer.world_to_data(viewer.dims.point)
    shape = layer.data.shape[:nd]
    index = tuple(int(np.clip(np.round(pos[a]), 0, shape[a] - 1)) for a in range(nd - 2))
    if channel_axis not in (None, 0) or (channel_axis == 0 and nd < 3):
        raise ValueError("the channel axis must be the first axis of an image with ≥ 3 axes")
    return SliceContext(
        index, (nd - 2, nd - 1), (shape[-2], shape[-1]), bool(layer.rgb), channel_axis
    )


def slice_data(layer: Image, ctx: SliceContext) -> np.ndarray:
    """The slice as numpy: (H, W) or (H, W, 3|4) for RGB. Reads only that slice."""
    return np.asarray(layer.data[ctx.index])


def to_image_data(prompt_layer, image: Image, coords: np.ndarray) -> np.ndarray:
    """(N, D) prompt-layer data coords → (N, image ndim) image data coords."""
    if len(coords) == 0:
        return np.zeros((0, spatial_ndim(image)))
    world = np.array([prompt_layer.data_to_world(c) for c in coords])
    return np.array([image.world_to_data(w) for w in world])


def _on_slice(coords: np.ndarray, ctx: SliceContext) -> np.ndarray:
    """Boolean (N,): which image-data coords round to the current slice index."""
    if coords.shape[1] == 2:
        return np.ones(len(coords), bool)
    return np.all(np.round(coords[:, :-2]).astype(int) == np.array(ctx.index), axis=1)


def inside(rc: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Boolean (N,): which (row, col) lie on a slice of ``shape`` (pixel centres ± 0.5,
    the bounds SAM accepts)."""
    h, w = shape
    rows, cols = rc[:, 0], rc[:, 1]
    return (rows >= -0.5) & (rows <= h - 0.5) & (cols >= -0.5) & (cols <= w - 0.5)


@dataclass(frozen=True)
class SlicePrompts:
    """The prompts of the current slice, in (row, col) image pixels.

    points (N, 2) and labels (N,) (1 positive, 0 negative); boxes (B, 4) (row_min,
    col_min, row_max, col_max), clipped to the slice; outside_points / outside_boxes:
    prompts of this slice that lie outside the image (ignored).
    """

    points: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    outside_points: int = 0
    outside_boxes: int = 0

    def ignored_message(self) -> str:
        """"" when nothing was ignored, else e.g. "1 point outside the image ignored"."""
        parts = [
            f"{n} {word if n == 1 else plural}"
            for n, word, plural in (
                (self.outside_points, "point", "points"),
                (self.outside_boxes, "box", "boxes"),
            )
            if n
        ]
        return " and ".join(parts) + " outside the image ignored" if parts else ""


def prompts_on_slice(
    points: Points | None, shapes: Shapes | None, image: Image, ctx: SliceContext
) -> SlicePrompts:
    """The points and rectangles on the slice ``ctx``; those outside the image are
    counted and left out (never an error: the user may not see them)."""
    pts, lab, n_pts = np.zeros((0, 2)), np.zeros(0, int), 0
    if points is not None and len(points.data):
        data = to_image_data(points, image, np.asarray(points.data))
        keep = _on_slice(data, ctx)
        rc = data[keep][:, -2:]
        pos = np.asarray(points.features[POSITIVE_FEATURE], bool)[keep].astype(int)
        ok = inside(rc, ctx.shape)
        pts, lab, n_pts = rc[ok], pos[ok], int((~ok).sum())
    boxes, n_boxes = [], 0
    for verts, kind in zip(
        shapes.data if shapes is not None else [],
        shapes.shape_type if shapes is not None else [],
        strict=True,
    ):
        if kind != "rectangle":
            continue
        data = to_image_data(shapes, image, np.asarray(verts))
        if not _on_slice(data, ctx).all():
            continue
        rc = data[:, -2:]
        box = clip_box(np.array([*rc.min(axis=0), *rc.max(axis=0)], float), ctx.shape)
        if box[2] <= box[0] or box[3] <= box[1]:
            n_boxes += 1  # entirely outside the image
            continue
        boxes.append(box)
    return SlicePrompts(pts, lab, np.array(boxes, float).reshape(-1, 4), n_pts, n_boxes)


def points_on_slice(
    points: Points, image: Image, ctx: SliceContext
) -> tuple[np.ndarray, np.ndarray]:
    """Points on the current slice inside the image as (N, 2) (row, col) image pixels
    and (N,) labels (1 positive, 0 negative, from the ``positive`` feature)."""
    p = prompts_on_slice(points, None, image, ctx)
    return p.points, p.labels


def boxes_on_slice(shapes: Shapes, image: Image, ctx: SliceContext) -> np.ndarray:
    """Rectangles on the current slice as (B, 4) (row_min, col_min, row_max, col_max),
    clipped to the slice; rectangles entirely outside it are left out."""
    return prompts_on_slice(None, shapes, image, ctx).boxes


def clip_box(box: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Clip a box to the slice (users draw past the edge)."""
    h, w = shape
    lo = np.array([-0.5, -0.5, -0.5, -0.5])
    hi = np.array([h - 0.5, w - 0.5, h - 0.5, w - 0.5])
    return np.clip(box, lo, hi)


def prompt_layer_kwargs(image: Image) -> dict:
    """Geometry of ``image`` for a prompt layer: same ndim, scale, translate, rotate,
    shear, affine, units — so prompts land on the right pixels."""
    return {
        "ndim": spatial_ndim(image),
        "scale": image.scale,
        "translate": image.translate,
        "rotate": image.rotate,
        "shear": image.shear,
        "affine": image.affine.affine_matrix,
    }


def add_points_layer(viewer, image: Image) -> Points:
    """Points layer whose ``positive`` feature (not a colour) holds the polarity."""
    layer = viewer.add_points(
        name=POINTS_LAYER,
        features={POSITIVE_FEATURE: np.zeros(0, bool)},
        feature_defaults={POSITIVE_FEATURE: True},
        face_color=POSITIVE_FEATURE,
        face_color_cycle={True: POSITIVE_COLOR, False: NEGATIVE_COLOR},
        border_color="white",
        size=1.0,  # OwnLayers.follow_zoom: a constant size on screen
        **prompt_layer_kwargs(image),
    )
    layer.mode = "add"
    return layer


def add_boxes_layer(viewer, image: Image) -> Shapes:
    layer = viewer.add_shapes(
        name=BOXES_LAYER,
        edge_color=BOX_EDGE_COLOR,
        face_color="transparent",
        edge_width=1.0,  # OwnLayers.follow_zoom: a constant width on screen
        **prompt_layer_kwargs(image),
    )
    return layer


def spatial_shape(image: Image) -> tuple[int, int]:
    shape = image.data.shape[: spatial_ndim(image)]
    return int(shape[-2]), int(shape[-1])
