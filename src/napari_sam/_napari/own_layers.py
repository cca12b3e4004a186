"""The layers the widget owns: "SAM points", "SAM boxes", "SAM preview".

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
        self._shown = False  # the preview layer holds a mask
        self.image: Image | None = None
        viewer.scene.camera.events.zoom.connect(self.follow_zoom)

    def layers(self) -> list:
        return [ly for ly in (self.points, self.boxes, self.preview) if ly is not None]

    def complete(self) -> bool:
        """All three layers exist and are in the viewer."""
        return all(ly is not None and ly in self.viewer.layers for ly in self._triple())

    def _triple(self) -> tuple:
        return self.points, self.boxes, self.preview

    def ensure(self, image: Image) -> None:
        """Layers for ``image`` (re-created when they belong to another image or one was
        deleted). Never call from inside a layer-list or dims event."""
        if self.image is image and self.complete():
            return
        self.remove()
        self.image = image
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

        h, w = adapters.spatial_shape(image)
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

    def show(self, mask: np.ndarray | None) -> None:
        """Show (H, W) bool pixels (the preview's outline, computed in the worker — napari's
        own ``contour`` would compute it here, on the GUI thread), or nothing. Written
        into the layer's array in place and refreshed without thumbnail (replacing
        ``data`` would make napari recompute the viewer's dims: ~3× the GUI time)."""
        layer = self.preview
        if layer is None or layer not in self.viewer.layers:
            return
        if mask is None:
            if not self._shown:
                return
            layer.data[...] = 0
        else:
            np.copyto(layer.data, mask, casting="unsafe")
        self._shown = mask is not None
        layer.refresh(thumbnail=False, extent=False, highlight=False)

    def follow_zoom(self, event=None) -> None:
        """Point size and box edge width in data units for a constant size on screen."""
        zoom = float(self.viewer.scene.camera.zoom) or 1.0
        if self.points is not None and self.points in self.viewer.layers:
            size = POINT_SIZE_PX / (zoom * abs(float(self.points.scale[-1])))
            self.points.current_size = size
            if len(self.points.data):
                self.points.size = size
        if self.boxes is not None and self.boxes in self.viewer.layers:
            width = BOX_EDGE_PX / (zoom * abs(float(self.boxes.scale[-1])))
            self.boxes.current_edge_width = width
            if len(self.boxes.data):
                self.boxes.edge_width = width

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
        """Unbind and remove the layers (those still in the viewer)."""
        self.unbind()
        for layer in self.layers():
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        self.points = self.boxes = self.preview = self.image = None

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
