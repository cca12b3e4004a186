"""The layers the widget owns: "SAM points", "SAM boxes", "SAM preview" and, on a
tiled image, "SAM tiles" (outlines of the embedded tiles).

They are created together, for one image layer (its ndim and transform), outside any
napari layer-list or dims event (the widget calls :meth:`OwnLayers.ensure` from the
event loop), and removed together when the image changes or the widget closes. Their
key bindings (commit, clear, polarity, undo / redo of the target labels) are bound with
``overwrite=True`` and released with the layers. Prompt sizes follow the canvas zoom, so
points stay :data:`POINT_SIZE_PX` canvas pixels wide on any image size.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np
from napari.layers import Image, Labels, Points, Shapes

from . import adapters
from .constants import (
    BOX_EDGE_PX,
    KEY_CLEAR,
    KEY_COMMIT,
    KEY_REDO,
    KEY_TOGGLE_POLARITY,
    KEY_UNDO,
    POINT_SIZE_PX,
    PREVIEW_COLOR,
    PREVIEW_LAYER,
    PREVIEW_OPACITY,
    TILE_BUSY_COLOR,
    TILE_EDGE_PX,
    TILE_READY_COLOR,
    TILES_LAYER,
    TILES_OPACITY,
)


class OwnLayers:
    """Prompt + preview layers of one widget. ``actions`` maps each key binding
    (:data:`KEY_COMMIT` …) to a callable without arguments; ``on_prompts`` is called on
    every change of the prompts."""

    def __init__(self, viewer, actions: dict, on_prompts: Callable) -> None:
        self.viewer = viewer
        self.actions = actions
        self.on_prompts = on_prompts
        self.points: Points | None = None
        self.boxes: Shapes | None = None
        self.preview: Labels | None = None
        self.tiles: Shapes | None = None  # tiled images only
        self._shown = False  # the preview layer holds a mask
        self._origin = (0, 0)  # (row, col) of the preview window in the slice
        self.image: Image | None = None
        self.window: tuple[int, int] | None = None  # preview window (tiled), else None
        viewer.scene.camera.events.zoom.connect(self.follow_zoom)

    def layers(self) -> list:
        return [ly for ly in (self.tiles, *self._triple()) if ly is not None]

    def complete(self) -> bool:
        """All three layers exist and are in the viewer."""
        return all(ly is not None and ly in self.viewer.layers for ly in self._triple())

    def _triple(self) -> tuple:
        return self.points, self.boxes, self.preview

    def ensure(self, image: Image, window: tuple[int, int] | None = None) -> None:
        """Layers for ``image`` (re-created when they belong to another image, one was
        deleted or the preview window changed). window: (h, w) of a tile's outer
        region when the session tiles the slices (the preview layer then has that size
        and a "SAM tiles" layer shows the embedded tiles), None for whole slices.
        Never call from inside a layer-list or dims event."""
        tiles_ok = window is None or (self.tiles is not None and self.tiles in self.viewer.layers)
        if self.image is image and self.window == window and self.complete() and tiles_ok:
            return
        self.remove()
        self.image, self.window = image, window
        if window is not None:
            self.tiles = self._add_tiles(image)
        self.points = adapters.add_points_layer(self.viewer, image)
        self.points.events.data.connect(self.on_prompts)
        self.boxes = adapters.add_boxes_layer(self.viewer, image)
        self.boxes.events.data.connect(self.on_prompts)
        self.boxes.mode = "add_rectangle"
        self.preview = self._add_preview(image)
        for layer in (self.points, self.boxes):
            for key in (KEY_COMMIT, KEY_CLEAR, KEY_UNDO, KEY_REDO):
                layer.bind_key(key, _call(self.actions[key]), overwrite=True)
        self.points.bind_key(
            KEY_TOGGLE_POLARITY, _call(self.actions[KEY_TOGGLE_POLARITY]), overwrite=True
        )
        self.follow_zoom()
        self.viewer.layers.selection.active = self.points

    def _add_preview(self, image: Image) -> Labels:
        from napari.utils import DirectLabelColormap

        h, w = adapters.spatial_shape(image) if self.window is None else self.window
        self._origin = (0, 0)
        layer = self.viewer.add_labels(
            np.zeros((h, w), np.uint8),
            name=PREVIEW_LAYER,
            scale=image.scale[-2:],
            translate=image.translate[-2:],
            opacity=PREVIEW_OPACITY,
            colormap=DirectLabelColormap(color_dict={None: "transparent", 1: PREVIEW_COLOR}),
        )
        layer.editable = False
        self._shown = False
        return layer

    def _add_tiles(self, image: Image) -> Shapes:
        layer = self.viewer.add_shapes(
            name=TILES_LAYER,
            ndim=2,
            scale=image.scale[-2:],
            translate=image.translate[-2:],
            edge_color=TILE_READY_COLOR,
            face_color="transparent",
            edge_width=1.0,  # follow_zoom: a constant width on screen
            opacity=TILES_OPACITY,
        )
        layer.editable = False
        return layer

    def show_tiles(self, ready: list, busy: list) -> None:
        """Outline the inner regions (row_min, col_min, row_max, col_max) of the tiles
        whose embeddings are ready (in RAM) and of those being embedded."""
        layer = self.tiles
        if layer is None or layer not in self.viewer.layers:
            return
        rects = [
            np.array([[r0, c0], [r0, c1], [r1, c1], [r1, c0]], float) - 0.5
            for r0, c0, r1, c1 in (*ready, *busy)
        ]
        colors = [TILE_READY_COLOR] * len(ready) + [TILE_BUSY_COLOR] * len(busy)
        width = self._edge_width(layer, TILE_EDGE_PX)
        layer.data = []
        if rects:
            layer.add_rectangles(rects, edge_color=colors, edge_width=width)

    def show(self, mask: np.ndarray | None, origin: tuple[int, int] = (0, 0)) -> None:
        """Show (h, w) bool pixels (the preview's outline, computed in the worker — napari's
        own ``contour`` would compute it here, on the GUI thread) whose top-left pixel is
        ``origin`` (row, col) in the slice, or nothing. Written into the layer's array in
        place and refreshed without thumbnail (replacing ``data`` would make napari
        recompute the viewer's dims: ~3× the GUI time); on a tiled image the layer is
        moved to the window (its translate)."""
        layer = self.preview
        if layer is None or layer not in self.viewer.layers:
            return
        if mask is None:
            if not self._shown:
                return
            layer.data[...] = 0
        else:
            origin = (int(origin[0]), int(origin[1]))
            if mask.shape == layer.data.shape:
                np.copyto(layer.data, mask, casting="unsafe")
            else:  # a window smaller than the layer's (a plane smaller than one tile)
                h, w = (min(a, b) for a, b in zip(mask.shape, layer.data.shape, strict=True))
                layer.data[...] = 0
                layer.data[:h, :w] = mask[:h, :w]
            if origin != self._origin:
                image = self.image
                step = np.asarray(image.scale[-2:], float) * origin
                layer.translate = np.asarray(image.translate[-2:], float) + step
                self._origin = origin
        self._shown = mask is not None
        layer.refresh(thumbnail=False, extent=False, highlight=False)

    def follow_zoom(self, event=None) -> None:
        """Point size and edge widths in data units for a constant size on screen."""
        if self.points is not None and self.points in self.viewer.layers:
            size = self._edge_width(self.points, POINT_SIZE_PX)
            self.points.current_size = size
            if len(self.points.data):
                self.points.size = size
        for layer, px in ((self.boxes, BOX_EDGE_PX), (self.tiles, TILE_EDGE_PX)):
            if layer is not None and layer in self.viewer.layers:
                width = self._edge_width(layer, px)
                layer.current_edge_width = width
                if len(layer.data):
                    layer.edge_width = width

    def _edge_width(self, layer, px: float) -> float:
        """``px`` canvas pixels in ``layer``'s data units at the current zoom."""
        zoom = float(self.viewer.scene.camera.zoom) or 1.0
        return px / (zoom * abs(float(layer.scale[-1])))

    def unbind(self) -> None:
        for layer in (self.points, self.boxes):
            if layer is None:
                continue
            for key in (KEY_COMMIT, KEY_CLEAR, KEY_TOGGLE_POLARITY, KEY_UNDO, KEY_REDO):
                with contextlib.suppress(KeyError, ValueError, TypeError):
                    layer.bind_key(key, None)
            with contextlib.suppress(TypeError, ValueError, RuntimeError):
                layer.events.data.disconnect(self.on_prompts)

    def remove(self) -> None:
        """Unbind and remove the layers (those still in the viewer), in one batch: napari's
        canvas runs a full ``gc.collect()`` after each removal outside a batch (0.4–1.5 s
        each in a large process, measured), once per batch."""
        self.unbind()
        batch = getattr(self.viewer.layers, "batched_update", contextlib.nullcontext)
        with batch():
            for layer in self.layers():
                if layer in self.viewer.layers:
                    self.viewer.layers.remove(layer)
        self.points = self.boxes = self.preview = self.tiles = self.image = None
        self.window = None

    def release(self) -> None:
        """Closing: remove the layers, stop following the zoom."""
        with contextlib.suppress(TypeError, ValueError, RuntimeError):
            self.viewer.scene.camera.events.zoom.disconnect(self.follow_zoom)
        self.remove()


def _call(fn: Callable[[], object]) -> Callable:
    """A key-binding callback (napari passes the layer) that calls ``fn()``."""

    def on_key(_layer=None) -> None:
        fn()

    return on_key
