"""engine/metrics.py: the one IoU / F1 / interior-point implementation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_sam.engine.metrics import interior_point, iou, iou_matrix, matched_ious, object_f1
from napari_sam.synthetic import nuclei_2d


def test_iou_of_masks() -> None:
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    assert iou(a, b) == 1.0  # both empty
    a[:2] = True
    b[1:3] = True
    assert iou(a, b) == pytest.approx(4 / 12)
    assert iou(a, a) == 1.0


def test_iou_matrix_and_f1_by_hand() -> None:
    pred = np.array([[1, 1, 0, 2], [1, 1, 0, 2]])
    truth = np.array([[5, 5, 5, 0], [5, 5, 0, 7]])
    ids_p, ids_t, m = iou_matrix(pred, truth)
    assert ids_p.tolist() == [1, 2] and ids_t.tolist() == [5, 7]
    np.testing.assert_allclose(m, [[4 / 5, 0.0], [0.0, 1 / 2]])
    assert object_f1(pred, truth) == (1, 2, 2)  # 0.5 is not > 0.5
    assert object_f1(pred, truth, iou=0.4) == (2, 2, 2)
    with pytest.raises(ValueError, match="differ in size"):
        iou_matrix(pred, truth[:1])


def test_matched_ious_takes_the_most_covering_object() -> None:
    truth = np.array([[1, 1, 1, 0], [0, 0, 0, 2]])
    labels = np.array([[3, 3, 4, 0], [0, 0, 0, 0]])
    assert matched_ious(labels, truth) == [pytest.approx(2 / 3), 0.0]


def test_interior_point_counts_the_border_as_background() -> None:
    mask = np.zeros((9, 20), bool)
    mask[:7, :7] = True  # a square in the top-left corner: its centre, not the corner
    assert interior_point(mask).tolist() == [3.0, 3.0]
    with pytest.raises(ValueError, match="empty"):
        interior_point(np.zeros((3, 3), bool))


def test_interior_point_equals_the_full_image_distance_transform() -> None:
    """The crop is an optimisation only: same pixel as the distance transform of the
    whole (padded) image, ties broken in C order."""
    _, truth = nuclei_2d((128, 128), seed=7)
    for obj in np.unique(truth[truth > 0]):
        d = ndi.distance_transform_edt(np.pad(truth == obj, 1))
        r, c = np.unravel_index(int(np.argmax(d)), d.shape)
        assert interior_point(truth == obj).tolist() == [r - 1, c - 1]
