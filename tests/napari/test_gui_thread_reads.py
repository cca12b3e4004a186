"""Long jobs never read a whole label volume on the GUI thread: propagation's seeds and
new ids, automatic segmentation's id offset and the comparison with existing labels
happen in the worker; the GUI thread reads and writes only the changed pixels (one
undo step). The labels here are a lazy (non-numpy) array that records its reads."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from test_amg_panel import fake_amg  # noqa: F401  (fixture)
from test_propagate_panel import (
    fake_decoder,  # noqa: F401  (fixture)
    go_to_slice,
)

from napari_sam._napari.commit import MAX_ID_KEY

pytestmark = pytest.mark.gui


class RecordingArray:
    """A lazy-array stand-in (like zarr / dask) over numpy: records the size of every
    read and whether the GUI (main) thread made it."""

    def __init__(self, array: np.ndarray) -> None:
        self._a = array
        self.reads: list[tuple[bool, int]] = []
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim

    @property
    def size(self) -> int:
        return self._a.size

    def _note(self, n: int) -> None:
        self.reads.append((threading.current_thread() is threading.main_thread(), int(n)))

    def __getitem__(self, key):
        out = self._a[key]
        self._note(np.size(out))
        return out

    def __setitem__(self, key, value) -> None:
        self._a[key] = value

    def __array__(self, dtype=None, copy=None):
        self._note(self._a.size)
        return np.asarray(self._a, dtype=dtype)

    def __len__(self) -> int:
        return len(self._a)

    def gui_reads(self) -> list[int]:
        return [n for main, n in self.reads if main]


def test_jobs_read_the_volume_in_their_workers(sam_widget, qtbot, fake_decoder, fake_amg):  # noqa: F811
    viewer, image = sam_widget.viewer, sam_widget.image_layer
    data = RecordingArray(np.zeros((6, 40, 56), np.uint32))
    labels = viewer.add_labels(
        data, name="lazy", scale=image.scale, translate=image.translate, metadata={MAX_ID_KEY: 0}
    )
    sam_widget.labels_combo.setCurrentText("lazy")
    go_to_slice(viewer, image, 3)
    with labels.block_history():  # object 1 on slice 3 (the fake decoder's rectangle)
        rows, cols = np.nonzero(np.pad(np.ones((15, 20), bool), ((10, 0), (20, 0))))
        labels.data_setitem((np.full(rows.size, 3), rows, cols), 1)
    labels.metadata[MAX_ID_KEY] = 1
    labels.selected_label = 1
    one_slice = 40 * 56

    for start in (
        lambda: sam_widget.propagate_panel.propagate(),
        lambda: sam_widget.amg_panel.segment(volume=True),
    ):
        before = np.array(data._a)
        data.reads.clear()
        assert start() is not None, sam_widget.status.text()
        qtbot.waitUntil(
            lambda: sam_widget.propagate_panel.worker is None
            and sam_widget.amg_panel.worker is None,
            timeout=60000,
        )
        changed = int((data._a != before).sum())
        assert changed > 0, sam_widget.status.text()
        gui = data.gui_reads()
        assert max(gui, default=0) <= max(one_slice, changed), gui
        assert sum(n for main, n in data.reads if not main) >= data.size  # worker read it
        labels.undo()  # still one undo step
        np.testing.assert_array_equal(data._a, before)
