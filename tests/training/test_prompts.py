"""Prompt sampling from instance labels."""

from __future__ import annotations

import numpy as np
import torch

from napari_sam.synthetic import nuclei_2d
from napari_sam.training.prompts import (
    correction_clicks,
    jitter_box,
    largest_error_click,
    object_box,
    object_pixels,
    sample_negative,
    sample_positive,
)


def test_points_inside_and_outside_objects() -> None:
    _, lab = nuclei_2d((128, 128), seed=0)
    objects = object_pixels(lab, min_area=10)
    assert objects and set(objects) <= set(np.unique(lab)) - {0}
    rng = np.random.default_rng(0)
    for label, px in list(objects.items())[:10]:
        pos = sample_positive(rng, px, 20).astype(int)
        assert np.all(lab[pos[:, 0], pos[:, 1]] == label)
        neg = sample_negative(rng, lab, label, px, 20).astype(int)
        assert np.all(lab[neg[:, 0], neg[:, 1]] != label)
        assert np.all((neg >= 0) & (neg < 128))


def test_boxes_and_jitter() -> None:
    px = np.array([[10, 20], [30, 25], [15, 40]])
    box = object_box(px)
    assert box.tolist() == [10, 20, 30, 40]
    rng = np.random.default_rng(1)
    boxes = np.stack([jitter_box(rng, box, (50, 60)) for _ in range(200)])
    assert np.all(boxes[:, 2] > boxes[:, 0]) and np.all(boxes[:, 3] > boxes[:, 1])
    assert np.all(boxes >= 0) and np.all(boxes[:, [0, 2]] <= 49) and np.all(boxes[:, [1, 3]] <= 59)
    assert np.abs(boxes - box).max() <= 20 and np.abs(boxes - box).mean() > 0.5


def test_correction_clicks_land_in_the_error_region() -> None:
    gt = torch.zeros(3, 32, 32, dtype=torch.bool)
    gt[:, 8:24, 8:24] = True
    pred = gt.clone()
    pred[0, 8:24, 8:16] = False  # missed half → positive click there
    pred[1, 0:4, 0:4] = True  # false positive corner → negative click there
    rc, lab = correction_clicks(pred, gt, torch.Generator().manual_seed(0))
    assert lab.tolist() == [1, 0, 1]
    r, c = rc[0].tolist()
    assert 8 <= r < 24 and 8 <= c < 16
    r, c = rc[1].tolist()
    assert r < 4 and c < 4
    r, c = rc[2].tolist()  # perfect prediction → a positive click inside the object
    assert gt[2, r, c]


def test_largest_error_click_is_deterministic_centre() -> None:
    gt = np.zeros((40, 40), bool)
    gt[5:35, 5:35] = True
    pred = gt.copy()
    pred[5:35, 20:35] = False
    (r, c), lab = largest_error_click(pred, gt)
    assert lab == 1 and 5 <= r < 35 and 24 <= c <= 30
    (r, c), lab = largest_error_click(gt | (np.arange(40) < 3)[:, None], gt)
    assert lab == 0 and r < 3


def test_centred_correction_clicks_hit_the_largest_error_centre() -> None:
    gt = torch.zeros(3, 40, 40, dtype=torch.bool)
    gt[:, 5:35, 5:35] = True
    pred = gt.clone()
    pred[:, 5:35, 20:35] = False  # a 30 × 15 miss: its centre column is ~27
    pred[:, 0:2, 0:2] = True  # a tiny false positive a uniform click could hit
    pred[2] = gt[2]  # perfect → stays a positive click inside the object
    centred = torch.tensor([True, False, True])
    rc, lab = correction_clicks(pred, gt, torch.Generator().manual_seed(0), centred)
    (r, c), want = largest_error_click(pred[0].numpy(), gt[0].numpy())
    assert rc[0].tolist() == [int(r), int(c)] and lab[0] == want == 1
    assert 24 <= rc[0, 1] <= 30
    r, c = rc[1].tolist()  # uniform: anywhere in the errors
    assert bool(pred[1, r, c] != gt[1, r, c])
    assert lab[2] == 1 and gt[2, rc[2, 0], rc[2, 1]]
