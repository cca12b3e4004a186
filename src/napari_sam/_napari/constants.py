"""Names, colours, sizes and key bindings of the napari-sam widget, in one place."""

from __future__ import annotations

from app_model.types import KeyCode, KeyMod

POINTS_LAYER = "SAM points"
BOXES_LAYER = "SAM boxes"
PREVIEW_LAYER = "SAM preview"
LABELS_LAYER = "SAM labels"
TILES_LAYER = "SAM tiles"  # outlines of the embedded tiles (tiled slices only)

POSITIVE_FEATURE = "positive"  # bool feature column of the points layer
POSITIVE_COLOR = "#00ff66"
NEGATIVE_COLOR = "#ff3355"
BOX_EDGE_COLOR = "#ffd000"
# The preview is drawn as an outline (PREVIEW_CONTOUR px wide, computed in the worker)
# in magenta: napari's default label colours are random hues of a cyclic map, never pure
# magenta (RGB distance ≥ 0.6 from the first 10 of them), and an outline never looks
# like a filled (committed) object.
PREVIEW_COLOR = "#ff00ff"
PREVIEW_CONTOUR = 2
PREVIEW_OPACITY = 1.0
# tiles of a large slice: inner regions drawn as thin outlines, ready (embedding in RAM)
# in a light grey-blue, being embedded in amber
TILE_READY_COLOR = "#7f9fbf"
TILE_BUSY_COLOR = "#ffb000"
TILE_EDGE_PX = 1.0
TILES_OPACITY = 0.6

# prompt size on screen (canvas pixels), kept when zooming
POINT_SIZE_PX = 10.0
BOX_EDGE_PX = 2.0

# key bindings on the prompt layers the widget owns (bound with overwrite=True,
# released when the widget closes)
KEY_COMMIT = "c"
KEY_CLEAR = "Shift-c"
KEY_TOGGLE_POLARITY = "t"  # points layer only: next points negative / positive
# undo / redo of the target labels layer, from the prompt layers (napari's own Labels
# undo keys: Ctrl+Z / Ctrl+Shift+Z, Cmd on macOS)
KEY_UNDO = KeyMod.CtrlCmd | KeyCode.KeyZ
KEY_REDO = KeyMod.CtrlCmd | KeyMod.Shift | KeyCode.KeyZ

PREVIEW_DEBOUNCE_MS = 120
MEMORY_CACHE_SLICES = 8  # embeddings kept in RAM besides the zarr store
MEMORY_CACHE_TILES = 32  # the same on tiled slices, in tiles
NEIGHBOUR_TILES = 16  # tiles embedded after a click on a tiled slice (in view first)
CLOSE_WAIT_S = 5.0  # closing the widget waits this long for its own workers to stop
