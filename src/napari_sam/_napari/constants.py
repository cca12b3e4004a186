"""Names, colours and key bindings of the napari-sam widget, in one place."""

from __future__ import annotations

POINTS_LAYER = "SAM points"
BOXES_LAYER = "SAM boxes"
PREVIEW_LAYER = "SAM preview"
LABELS_LAYER = "SAM labels"

POSITIVE_FEATURE = "positive"  # bool feature column of the points layer
POSITIVE_COLOR = "#00ff66"
NEGATIVE_COLOR = "#ff3355"
BOX_EDGE_COLOR = "#ffd000"
PREVIEW_COLOR = "#00c8ff"

# key bindings on the prompt layers the widget owns (bound with overwrite=True,
# released when the widget closes)
KEY_COMMIT = "c"
KEY_CLEAR = "Shift-c"
KEY_TOGGLE_POLARITY = "t"  # points layer only: next points negative / positive

PREVIEW_DEBOUNCE_MS = 120
MEMORY_CACHE_SLICES = 8  # embeddings kept in RAM besides the zarr store
