"""Object table against ground truth on synthetic labels (physical units), chunked
computation equal to the whole-array one, objects spanning chunks."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import zarr

from napari_sam.export import Calibration, PromptRound, Provenance
from napari_sam.export.table import features, object_table, read_table, write_table

CAL = Calibration.create(3, (2.0, 0.5, 0.25), (10.0, 100.0, -50.0), ["micrometer"] * 3)


def boxes_volume() -> tuple[np.ndarray, dict[int, tuple[slice, slice, slice]]]:
    """(20, 64, 80) uint32 with 4 boxes; box 2 spans every 8³-ish chunk boundary."""
    lab = np.zeros((20, 64, 80), np.uint32)
    boxes = {
        1: (slice(0, 3), slice(0, 5), slice(0, 7)),
        2: (slice(3, 17), slice(5, 60), slice(9, 71)),  # spans many chunks
        7: (slice(18, 20), slice(60, 64), slice(75, 80)),
        40: (slice(5, 6), slice(1, 3), slice(74, 79)),
    }
    for i, b in boxes.items():
        lab[b] = i
    return lab, boxes


def expected(lab: np.ndarray, boxes) -> pd.DataFrame:
    rows = []
    for i, b in boxes.items():
        n = int(np.prod([s.stop - s.start for s in b]))
        centre = [(s.start + s.stop - 1) / 2 for s in b]
        rows.append(
            {
                "label": i,
                "voxels": n,
                "volume": n * 2.0 * 0.5 * 0.25,
                **{f"centroid_{a}": t + sc * c for a, t, sc, c in
                   zip("zyx", CAL.translate, CAL.scale, centre, strict=True)},
                **{f"bbox_min_{a}": t + sc * s.start for a, t, sc, s in
                   zip("zyx", CAL.translate, CAL.scale, b, strict=True)},
                **{f"bbox_max_{a}": t + sc * (s.stop - 1) for a, t, sc, s in
                   zip("zyx", CAL.translate, CAL.scale, b, strict=True)},
                "n_slices": b[0].stop - b[0].start,
            }
        )
    return pd.DataFrame(rows).sort_values("label").reset_index(drop=True)


@pytest.mark.parametrize("chunks", [None, (4, 16, 16), (3, 13, 17)])
def test_table_matches_ground_truth(chunks) -> None:
    lab, boxes = boxes_volume()
    got = object_table(lab, CAL, chunks=chunks)
    want = expected(lab, boxes)
    assert got["label"].tolist() == [1, 2, 7, 40]
    for col in want.columns:
        np.testing.assert_allclose(got[col].to_numpy(float), want[col].to_numpy(float),
                                   rtol=1e-12, err_msg=col)
    assert (got["unit"] == "micrometer").all()
    assert (got["source"] == "unknown").all()
    assert got["predicted_iou"].isna().all()


def test_irregular_object_across_chunks_equals_whole() -> None:
    """A ball and a ring spanning chunk borders: per-chunk sums = whole-array values."""
    z, y, x = np.ogrid[:16, :48, :48]
    lab = np.zeros((16, 48, 48), np.uint16)
    lab[(z - 7.3) ** 2 + (y - 23.1) ** 2 + (x - 20.6) ** 2 < 60] = 3
    ring = ((y - 24) ** 2 + (x - 24) ** 2 > 300) & ((y - 24) ** 2 + (x - 24) ** 2 < 420)
    lab[(np.broadcast_to(ring, lab.shape)) & (np.arange(16)[:, None, None] % 3 == 0)] = 9
    whole = object_table(lab, CAL, chunks=lab.shape)
    chunked = object_table(lab, CAL, chunks=(5, 10, 13))
    pd.testing.assert_frame_equal(whole, chunked, check_exact=False, rtol=1e-12)
    zz, yy, xx = np.nonzero(lab == 3)
    row = whole.set_index("label").loc[3]
    assert row["voxels"] == zz.size
    assert row["centroid_y"] == pytest.approx(100.0 + 0.5 * yy.mean())
    assert row["centroid_x"] == pytest.approx(-50.0 + 0.25 * xx.mean())
    assert whole.set_index("label").loc[9, "n_slices"] == 6  # slices 0, 3, ..., 15


def test_lazy_zarr_input_keeps_its_chunks(tmp_path) -> None:
    lab, _boxes = boxes_volume()
    arr = zarr.create_array(str(tmp_path / "l.zarr"), shape=lab.shape, chunks=(4, 16, 16),
                            dtype="uint32")
    arr[...] = lab
    got = object_table(arr, CAL)
    pd.testing.assert_frame_equal(got, object_table(da.from_array(lab, (4, 16, 16)), CAL))
    assert got["voxels"].tolist() == [int((lab == i).sum()) for i in (1, 2, 7, 40)]


def test_2d_area_and_4d_slices() -> None:
    lab2 = np.zeros((10, 12), np.int32)
    lab2[2:5, 3:9] = 5
    t = object_table(lab2, Calibration.create(2, (0.5, 2.0), (1.0, 2.0)))
    assert t.loc[0, "area"] == 18 * 1.0 and t.loc[0, "n_slices"] == 1
    assert t.loc[0, "unit"] == "pixel"
    lab4 = np.zeros((3, 4, 6, 6), np.uint8)
    lab4[0, 1:3, 2:4, 2:4] = 1
    lab4[2, 0, 2:4, 2:4] = 1
    cal4 = Calibration.create(4, (5.0, 2.0, 1.0, 1.0), (0, 0, 0, 0))
    t4 = object_table(lab4, cal4, chunks=(1, 2, 6, 6))
    assert t4.loc[0, "n_slices"] == 3  # (t=0, z=1), (0, 2), (2, 0)
    assert t4.loc[0, "volume"] == 12 * 2.0  # voxel volume z·y·x = 2 (time is not space)
    assert t4.loc[0, "bbox_max_t"] == 10.0


def test_provenance_columns_and_napari_features(tmp_path) -> None:
    lab, _ = boxes_volume()
    prov = Provenance.create({"name": "m", "weights_hash": "h", "precision": "fp32"},
                             image_shape=lab.shape)
    prov.add_prompted((3,), [PromptRound.create([[10, 20]], [1])], [1], predicted_iou=0.91)
    prov.add_automatic((5,), {"points_per_side": 8}, [2, 7], scores={2: (0.8, 0.97)})
    prov.add_edited((0, 0, 0), np.ones((1, 1, 1), bool), 2)
    t = object_table(lab, CAL, prov)
    by = t.set_index("label")
    assert by.loc[1, "source"] == "click" and by.loc[1, "predicted_iou"] == pytest.approx(0.91)
    assert np.isnan(by.loc[1, "stability_score"])
    assert by.loc[2, "source"] == "automatic" and by.loc[2, "stability_score"] == 0.97
    assert by.loc[2, "edited"] and not by.loc[1, "edited"]
    assert by.loc[7, "source"] == "automatic" and np.isnan(by.loc[7, "predicted_iou"])
    assert by.loc[40, "source"] == "unknown"
    path = write_table(tmp_path / "t.objects.csv", t)
    back = read_table(path)
    pd.testing.assert_frame_equal(back, t, check_dtype=False)
    f = features(back)
    assert f.columns[0] == "index" and f["index"].tolist() == [1, 2, 7, 40]


def test_empty_labels_give_an_empty_table() -> None:
    t = object_table(np.zeros((4, 8, 8), np.uint32), CAL)
    assert len(t) == 0 and "volume" in t.columns
