"""A lazily generated dask volume far larger than RAM can be annotated on any slice;
only the touched slices are ever read, and only the tile under the click is encoded."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from requires import require

pytestmark = pytest.mark.gui

da = require("dask.array")

SHAPE = (2000, 2048, 2048)  # uint16: 16.8 GB of image; uint32 labels: 33.6 GB


def lazy_volume(reads: list[int]):
    """Each (1, 2048, 2048) block is generated on demand; its z is recorded."""
    lock = threading.Lock()

    def block(block_info=None):
        z = block_info[None]["chunk-location"][0]
        with lock:
            reads.append(z)
        img = np.zeros((1, *SHAPE[1:]), np.uint16)
        img[0, 900:1100, 1000:1300] = 3000 + z
        return img

    return da.map_blocks(block, dtype=np.uint16, chunks=((1,) * SHAPE[0], (SHAPE[1],), (SHAPE[2],)))


def test_annotate_slice_1500_of_a_huge_lazy_volume(
    make_napari_viewer, qtbot, tiny_checkpoint, tmp_path, monkeypatch
):
    from napari_sam._napari.widget import SamWidget
    from napari_sam.session import Preview, SegmentationSession

    reads: list[int] = []
    viewer = make_napari_viewer()
    viewer.add_image(lazy_volume(reads), name="huge", contrast_limits=(0, 5000), multiscale=False)
    w = SamWidget(viewer)
    w.checkpoint_edit.setText(str(tiny_checkpoint))
    w.precision_combo.setCurrentText("fp32")
    w.store_edit.setText(str(tmp_path / "huge.zarr"))
    w.prefetch_check.setChecked(False)
    w.load_model()
    qtbot.waitUntil(lambda: w.session is not None, timeout=60000)

    def tile_predict(self, index, emb, points, labels, box, request, **_kwargs):
        # a mask over the whole tile window the session answers on
        return Preview(index, np.ones(emb.original_size, bool), 0.9, request)

    real = SegmentationSession.predict
    monkeypatch.setattr(SegmentationSession, "predict", tile_predict)
    grid = w.session.grid  # 2048² slices, 64-px model input: tiles, with no setting
    assert grid is not None and w.layers.preview.data.shape == (64, 64)
    viewer.dims.set_point(0, 1500)
    reads.clear()
    w.points.add([1500, 1000, 1150])
    qtbot.waitUntil(lambda: w.preview is not None, timeout=60000)
    tile = w.preview.tile
    assert tile == grid.tile_at(1000, 1150)
    assert w.session.store.missing([(1500, *tile)]) == []  # that tile encoded and stored
    assert w.session.embeddings.computed == 1
    assert w.commit() == 1
    labels = viewer.layers["SAM labels"]
    assert not isinstance(labels.data, np.ndarray)  # chunked on disk, not 33 GB of RAM
    r0, c0, r1, c1 = grid.outer(tile)
    plane = np.asarray(labels.data[1500])
    assert int(plane.sum()) == (r1 - r0) * (c1 - c0) and plane[r0:r1, c0:c1].all()
    assert int(np.asarray(labels.data[1499]).sum()) == 0
    assert set(reads) <= {1500}, f"read slices {sorted(set(reads))}"
    labels.undo()
    assert int(np.asarray(labels.data[1500]).sum()) == 0
    monkeypatch.setattr(SegmentationSession, "predict", real)
    w.release()
