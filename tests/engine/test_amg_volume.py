"""AMG through a volume: the linking rule on hand-made label stacks (no model), ids
consecutive, cancel, and the quality figures of docs/amg_volumes.md with the packaged
demo model on held-out synthetic 3D nuclei."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_sam.engine.amg import AutomaticMaskGenerator
from napari_sam.engine.amg.volume import (
    DEMO_MIN_SLICES,
    DEMO_PARAMS,
    VolumeAmg,
    amg_volume,
    drop_short,
    link_pair,
    link_slices,
)
from napari_sam.engine.decode.predictor import Predictor
from napari_sam.engine.metrics import iou_matrix, object_f1


def disk(shape, centre, r, value):
    rr, cc = np.ogrid[: shape[0], : shape[1]]
    out = np.zeros(shape, np.uint32)
    out[(rr - centre[0]) ** 2 + (cc - centre[1]) ** 2 <= r * r] = value
    return out


def test_iou_matrix_counts_pairs():
    a = np.array([[1, 1, 0, 2]])
    b = np.array([[5, 0, 0, 5]])
    ia, ib, m = iou_matrix(a, b)
    assert ia.tolist() == [1, 2] and ib.tolist() == [5]
    np.testing.assert_allclose(m[:, 0], [1 / 3, 1 / 2])


def test_link_is_one_to_one_max_total_iou():
    # greedy by best IoU would link 10→1 (0.6) and leave 20 alone; the assignment
    # maximising the total links 10→2 and 20→1
    prev = np.zeros((1, 10), np.uint32)
    prev[0, 0:5], prev[0, 5:10] = 1, 2
    cur = np.zeros((1, 10), np.uint32)
    cur[0, 2:8] = 10  # IoU with 1: 3/8, with 2: 3/8
    cur[0, 0:2] = 20  # IoU with 1: 2/5
    links = link_pair(prev, cur, link_iou=0.3)
    assert links == {20: 1, 10: 2}
    assert link_pair(prev, cur, link_iou=0.39) == {20: 1}  # below threshold: not linked


def test_link_slices_threshold_new_ids_and_consecutive():
    shape = (32, 32)
    a = disk(shape, (10, 10), 5, 7) + disk(shape, (24, 24), 4, 3)
    b = disk(shape, (11, 10), 5, 2)  # overlaps a's 7 strongly; a's 3 vanishes
    c = disk(shape, (11, 10), 5, 4) + disk(shape, (20, 4), 3, 9)  # new object 9
    d = disk(shape, (17, 10), 5, 1)  # shifted: IoU with previous ~0.25 < 0.3 → new id
    out = link_slices(np.stack([a, b, c, d]), link_iou=0.3)
    assert out.dtype == np.uint32
    ids = np.unique(out)
    assert ids.tolist() == list(range(len(ids)))  # consecutive 0..N
    assert set(np.unique(out[0])) == {0, 1, 2}
    assert out[0][24, 24] == 1 and out[0][10, 10] == 2  # first appearance: slice id order
    assert np.unique(out[1][b > 0]).tolist() == [2]
    assert np.unique(out[2][c == 4]).tolist() == [2]
    assert np.unique(out[2][c == 9]).tolist() == [3]
    assert np.unique(out[3][d > 0]).tolist() == [4]
    # a lower threshold links the shifted disk
    assert np.unique(link_slices(np.stack([a, b, c, d]), 0.1)[3][d > 0]).tolist() == [2]
    # unlinked: every slice 1..n on its own
    flat = link_slices(np.stack([a, b, c, d]), link=False)
    assert [int(p.max()) for p in flat] == [2, 1, 2, 1]


def test_drop_short_removes_and_renumbers():
    vol = np.zeros((4, 4, 4), np.uint32)
    vol[:, 0, 0] = 1  # 4 slices
    vol[1, 2, 2] = 2  # 1 slice
    vol[1:3, 3, 3] = 3  # 2 slices
    out = drop_short(vol, 2)
    assert out[:, 0, 0].tolist() == [1] * 4 and out[1, 2, 2] == 0 and out[1, 3, 3] == 2
    with pytest.raises(ValueError):
        drop_short(vol, 0)


def test_object_f1():
    truth = disk((32, 32), (10, 10), 5, 1) + disk((32, 32), (24, 24), 4, 2)
    pred = disk((32, 32), (10, 11), 5, 3) + disk((32, 32), (3, 28), 2, 4)
    assert object_f1(pred, truth) == (1, 2, 2)


class FakeAmg(AutomaticMaskGenerator):
    """The generator's API on stored label images (no decoder): slice z's "embedding"
    is z; yields two progress steps per slice."""

    def __init__(self, planes):
        self.planes, self.crop_n_layers, self.calls = planes, 0, []

    def iter_generate(self, source, *, image=None):
        from napari_sam.engine.amg.result import AmgResult
        from napari_sam.engine.progress import Progress

        self.calls.append(source)
        yield Progress(1, 2, "a")
        yield Progress(2, 2, "b")
        return AmgResult(self.planes[source], [], [])


def test_volume_generator_progress_and_cancel():
    shape = (16, 16)
    planes = [disk(shape, (8, 8), 4, 1) for _ in range(5)]
    amg = FakeAmg(planes)
    vol = VolumeAmg(amg, lambda z: z, 5)
    steps = list(vol.run())
    assert steps[-1].done == steps[-1].total == 5
    assert np.unique(vol.result).tolist() == [0, 1]  # one linked object
    # closing the generator cancels: no further slice is requested
    amg = FakeAmg(planes)
    vol = VolumeAmg(amg, lambda z: z, 5, link=False)
    gen = vol.run()
    for p in gen:
        if p.done == 2:
            break
    gen.close()
    assert amg.calls == [0, 1] and sorted(vol.planes) == [0, 1]
    assert (vol.result[2:] == 0).all()
    out = amg_volume(FakeAmg(planes), lambda z: z, 5, slices=[1, 3], link=False)
    assert out[0].max() == 0 and out[1].max() == 1 and out[3].max() == 1


def test_tiny_model_runs_on_embeddings(tiny_model):
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    vol = (rng.random((3, 40, 48)) * 255).astype(np.uint8)
    p = Predictor(tiny_model)
    embs = [p.compute_embedding(s) for s in vol]
    amg = AutomaticMaskGenerator(
        tiny_model, points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0
    )
    out = amg_volume(amg, embs.__getitem__, 3)
    assert out.shape == vol.shape and out.dtype == np.uint32
    ids = np.unique(out)
    assert ids.tolist() == list(range(len(ids)))


# ---------------------------------------------------------------- demo model quality
# docs/amg_volumes.md: on this volume (24, 128, 128), seed 31000, DEMO_PARAMS, link IoU
# 0.5, min_slices 3: 2D F1 0.912 (78 / 82 / 89), 3D F1 1.000 (11 / 11 / 11) (stage-7 model)
QUALITY_2D, QUALITY_3D = 0.85, 0.90


@pytest.fixture(scope="module")
def demo():
    from napari_sam import weights
    from napari_sam.engine.loader import load_model

    path = weights.fetch_weights("demo")
    assert path.is_file(), f"the packaged demo model is missing: {path}"
    return load_model("demo", device="cpu", precision="fp32")


def test_demo_quality_2d_and_3d(demo):
    from napari_sam.synthetic import nuclei_3d

    torch.set_num_threads(1)
    image, truth = nuclei_3d((24, 128, 128), seed=31000, z_step=2.5)
    p = Predictor(demo)
    amg = AutomaticMaskGenerator(demo, **DEMO_PARAMS)
    labels = amg_volume(
        amg, lambda z: p.compute_embedding(image[z]), 24, min_slices=DEMO_MIN_SLICES
    )
    tp, npred, ntrue = object_f1(labels, truth)
    f1_3d = 2 * tp / (npred + ntrue)
    t2 = np.sum([object_f1(labels[z], truth[z]) for z in range(24)], axis=0)
    f1_2d = 2 * t2[0] / (t2[1] + t2[2])
    assert f1_3d >= QUALITY_3D, f"3D F1 {f1_3d:.3f} ({tp}/{ntrue}, {npred} objects)"
    assert f1_2d >= QUALITY_2D, f"2D F1 {f1_2d:.3f} {t2}"
