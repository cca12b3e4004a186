"""Training loop: the loss goes down, checkpoints load safely, resume continues."""

from __future__ import annotations

import numpy as np
import torch

from napari_sam.cli import main
from napari_sam.engine.decode.predictor import Predictor
from napari_sam.engine.loader import load_model
from napari_sam.model.build import build_sam
from napari_sam.model.checkpoint import load_sam_checkpoint, read_checkpoint
from napari_sam.synthetic import nuclei_2d
from napari_sam.training.loop import TrainConfig, lr_factor, state_path, train
from napari_sam.training.losses import dice_loss, mask_iou, sam_loss


def _pairs(n: int = 2) -> list[tuple[np.ndarray, np.ndarray]]:
    return [nuclei_2d((64, 64), seed=i, radius=(6, 12)) for i in range(n)]


def _cfg(**kw) -> TrainConfig:
    base = dict(steps=4, batch_images=2, objects_per_image=4, warmup_steps=1, lr=2e-3)
    return TrainConfig(**{**base, **kw})


def test_losses() -> None:
    target = torch.zeros(2, 8, 8)
    target[:, 2:6, 2:6] = 1
    good = (target * 20 - 10)[:, None].repeat(1, 3, 1, 1)
    good[:, 1] = -10  # candidate 1 is empty, the others perfect
    loss, true_iou = sam_loss(good, torch.ones(2, 3), target)
    assert torch.allclose(true_iou[:, 0], torch.ones(2)) and torch.all(true_iou[:, 1] == 0)
    assert float(dice_loss(good[:, 0], target).max()) < 0.01
    # min over candidates; IoU MSE: (1-1)², (0-1)², (1-1)² → 1/3
    assert torch.allclose(loss, torch.full((2,), 1 / 3), atol=0.02)
    assert float(mask_iou(-good[:, 0], target).max()) == 0.0


def test_lr_schedule_warms_up_and_anneals_by_time() -> None:
    cfg = TrainConfig(steps=1000, warmup_steps=10, time_limit_s=100.0)
    assert lr_factor(0, 0.0, cfg) == 0.1
    assert lr_factor(10, 0.0, cfg) > 0.99
    assert lr_factor(20, 50.0, cfg) < 0.52  # half the time budget used → half-way down
    assert lr_factor(20, 100.0, cfg) < 0.03


def test_tiny_model_learns(tmp_path, tiny_config) -> None:
    torch.manual_seed(0)
    sam = build_sam(tiny_config)
    pairs = _pairs(2)
    losses = [
        m["loss"]
        for _, _, m in train(sam, tiny_config, pairs, tmp_path / "m.pt", _cfg(steps=40, seed=1))
    ]
    assert len(losses) == 40 and np.all(np.isfinite(losses))
    assert np.mean(losses[-8:]) < 0.8 * np.mean(losses[:4])


def test_checkpoint_and_resume_round_trip(tmp_path, tiny_config) -> None:
    torch.manual_seed(0)
    out = tmp_path / "ckpt.pt"
    sam = build_sam(tiny_config)
    steps = [s for s, _, _ in train(sam, tiny_config, _pairs(), out, _cfg(steps=3), meta={"a": 1})]
    assert steps == [1, 2, 3]
    obj = read_checkpoint(out)  # weights_only=True
    assert obj["meta"]["step"] == 3 and obj["meta"]["a"] == 1
    loaded, config = load_sam_checkpoint(out)
    assert config == tiny_config
    for k, v in sam.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    st = torch.load(state_path(out), weights_only=True)
    assert st["step"] == 3 and "state" in st["optimizer"]
    # resume: continues at step 4 from the saved weights and optimizer
    steps = [s for s, _, _ in train(loaded, config, _pairs(), out, _cfg(steps=5), resume=True)]
    assert steps == [4, 5]
    assert read_checkpoint(out)["meta"]["step"] == 5
    # the result works through the public API (same coordinate path as training)
    model = load_model(str(out), device="cpu", precision="fp32")
    p = Predictor(model)
    p.set_image(_pairs(1)[0][0])
    r = p.predict(points=[[30, 30]], labels=[1])
    assert r.masks.shape == (3, 64, 64)


def test_cli_fine_tunes_a_checkpoint(tmp_path, tiny_config, capsys) -> None:
    start = tmp_path / "start.pt"
    torch.manual_seed(0)
    sam = build_sam(tiny_config)
    list(train(sam, tiny_config, _pairs(), start, _cfg(steps=1)))
    imgs, labs = tmp_path / "images", tmp_path / "labels"
    imgs.mkdir()
    labs.mkdir()
    for i, (img, lab) in enumerate(_pairs(2)):
        np.save(imgs / f"{i}.npy", img)
        np.save(labs / f"{i}.npy", lab)
    out = tmp_path / "tuned.pt"
    args = ["train", "--images", str(imgs), "--labels", str(labs), "--init", str(start)]
    args += ["--out", str(out), "--steps", "2", "--batch-images", "1", "--objects", "2"]
    assert main(args) == 0
    meta = read_checkpoint(out)["meta"]
    assert meta["step"] == 2 and meta["init"] == str(start)
    assert load_sam_checkpoint(out)[1] == tiny_config
    assert main(["train", "--out", str(out)]) == 2  # no data given
    assert "--synthetic" in capsys.readouterr().err


def test_box_jitter_range_and_centre_clicks_train(tmp_path, tiny_config) -> None:
    """The prompt-distribution options run end to end and are recorded in the state."""
    torch.manual_seed(0)
    sam = build_sam(tiny_config)
    cfg = _cfg(steps=3, box_jitter=(0.0, 0.2), centre_click_fraction=0.5,
               kind_fractions=(0.2, 0.6, 0.2))
    out = [m for _, _, m in train(sam, tiny_config, _pairs(), tmp_path / "m.pt", cfg)]
    assert len(out) == 3 and all(np.isfinite(m["loss"]) for m in out)
    assert all("iou_r1" in m for m in out)
