"""Commit decisions without napari (shared by the widget and ``napari-sam segment``): a
committed mask gets the next free id and never takes existing objects' pixels unless
asked; long jobs' plans keep only the pixels that change."""

from __future__ import annotations

import numpy as np

from napari_sam.session import commit_mask, commit_pixels, plan_write


def test_commit_takes_free_pixels_with_the_next_id():
    plane = np.zeros((6, 6), np.uint32)
    plane[1:3, 1:3] = 4
    mask = np.zeros((6, 6), bool)
    mask[2:5, 2:5] = True
    rows, cols = commit_pixels(plane, mask)
    assert len(rows) == 9 - 1 and not (plane[rows, cols]).any()
    assert len(commit_pixels(plane, mask, overwrite=True)[0]) == 9
    assert commit_mask(plane, mask) == 5
    assert plane[2, 2] == 4 and (plane[3:5, 2:5] == 5).all()
    assert commit_mask(plane, plane == 4) is None  # covered entirely: nothing written
    assert commit_mask(plane, np.zeros_like(mask)) is None and plane.max() == 5


def test_plan_write_keeps_only_changed_free_pixels():
    data = np.zeros((2, 4, 4), np.uint32)
    data[1, 0, 0] = 7
    result = np.zeros((4, 4), np.uint32)
    result[0, :2] = 8
    plan = plan_write(data, result, (1,), base=7)
    assert plan.size == 1 and plan.objects == 1
    assert [a.tolist() for a in plan.indices] == [[1], [0], [1]]
    assert plan_write(data, result, (1,), base=7, overwrite=True).size == 2
