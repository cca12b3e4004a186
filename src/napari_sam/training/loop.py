"""The training loop: encode each image once, decode many sampled prompts per embedding.

Per step: ``batch_images`` slices are encoded; on each, ``objects_per_image`` objects get a
prompt — a single positive point (3-mask output, the best candidate is supervised, like
SAM), a jittered box, or several positive / negative points (1-mask output). Then
``correction_rounds`` times a click is sampled from each prediction's error region and the
object is predicted again from all its clicks plus the previous low-res logits as mask
input. Loss: BCE (or focal) + dice on the masks, MSE on the predicted IoU.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..engine.transforms import boxes_to_model_xyxy, rc_to_model_xy
from ..model.build import SamConfig
from ..model.common import set_attention_impl
from ..model.sam import Sam
from .data import Sample, prepare_sample
from .losses import sam_loss
from .prompts import (
    correction_clicks,
    jitter_box,
    object_box,
    sample_negative,
    sample_positive,
)

POINT, BOX, MULTI = 0, 1, 2


@dataclass
class TrainConfig:
    """Hyper-parameters of :func:`train` (stored in the training-state file).

    kind_fractions: shares of single-point / box / multi-point prompts.
    box_jitter: (lo, hi) — each box's sides move by N(0, σ × side) with σ drawn
    uniformly from [lo, hi] (a user's box is sometimes tight, sometimes loose).
    centre_click_fraction: share of correction clicks placed at the most interior pixel
    of the largest error region (where a user clicks) instead of uniformly in the errors.
    """

    steps: int = 10000
    time_limit_s: float | None = None
    batch_images: int = 4
    objects_per_image: int = 16
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_steps: int = 200
    grad_clip: float = 1.0
    kind_fractions: tuple[float, float, float] = (0.4, 0.3, 0.3)
    box_jitter: tuple[float, float] = (0.1, 0.1)
    centre_click_fraction: float = 0.0
    max_points: int = 4
    correction_rounds: int = 1
    mask_loss: str = "bce"
    loss_size: int = 128
    seed: int = 0
    checkpoint_every_s: float = 300.0
    precision: str = "fp32"
    freeze_encoder: bool = False


@dataclass
class _Group:
    kind: int
    img: list[int] = dataclasses.field(default_factory=list)
    label: list[int] = dataclasses.field(default_factory=list)
    points: list[np.ndarray] = dataclasses.field(default_factory=list)  # model xy
    point_labels: list[np.ndarray] = dataclasses.field(default_factory=list)
    boxes: list[np.ndarray] = dataclasses.field(default_factory=list)  # model xyxy


def lr_factor(step: int, elapsed: float, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay over the run; the run's progress is the larger of
    step / steps and elapsed / time_limit, so a time-limited run still anneals."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = step / max(cfg.steps, 1)
    if cfg.time_limit_s:
        progress = max(progress, elapsed / cfg.time_limit_s)
    return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def _make_groups(samples: list[Sample], rng: np.random.Generator, cfg: TrainConfig):
    groups = {k: _Group(k) for k in (POINT, BOX, MULTI)}
    n_multi = int(rng.integers(2, cfg.max_points + 1))
    for b, s in enumerate(samples):
        ids = list(s.objects)
        if not ids:
            continue
        chosen = rng.choice(ids, size=min(cfg.objects_per_image, len(ids)), replace=False)
        for lab in chosen:
            kind = int(rng.choice(3, p=np.asarray(cfg.kind_fractions) / sum(cfg.kind_fractions)))
            g, px = groups[kind], s.objects[int(lab)]
            g.img.append(b)
            g.label.append(int(lab))
            if kind == BOX:
                lo, hi = cfg.box_jitter
                rel = lo if hi <= lo else float(rng.uniform(lo, hi))  # no draw: old runs replay
                box = jitter_box(rng, object_box(px), s.original_size, rel=rel)
                g.boxes.append(boxes_to_model_xyxy(box[None], s.original_size, s.input_size)[0])
                continue
            n_pos = 1 if kind == POINT else int(rng.integers(1, n_multi + 1))
            rc = sample_positive(rng, px, n_pos)
            if n_pos < (1 if kind == POINT else n_multi):
                rc = np.concatenate(
                    [rc, sample_negative(rng, s.labels, int(lab), px, n_multi - n_pos)]
                )
            lab_arr = (np.arange(len(rc)) < n_pos).astype(np.int64)
            g.points.append(rc_to_model_xy(rc, s.original_size, s.input_size))
            g.point_labels.append(lab_arr)
    return [g for g in groups.values() if g.img]


def _decode(sam: Sam, feats, pts, boxes, masks_in, multimask: bool):
    sparse, dense = sam.prompt_encoder(points=pts, boxes=boxes, masks=masks_in)
    return sam.mask_decoder(
        image_embeddings=feats,
        image_pe=sam.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask,
    )


def train_step(
    sam: Sam, samples: list[Sample], rng: np.random.Generator, cfg: TrainConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of one step (not yet back-propagated) and metrics (mean IoU per round)."""
    dev = next(sam.parameters()).device
    size = sam.image_size
    x = torch.cat(
        [
            sam.preprocess(torch.as_tensor(s.rgb, device=dev).permute(2, 0, 1)[None].float())
            for s in samples
        ]
    )
    with torch.autocast(dev.type, torch.bfloat16, enabled=cfg.precision == "bf16"):
        feats = sam.image_encoder(x)
    feats = feats.float()
    losses, metrics = [], {}
    gen = torch.Generator(device=dev).manual_seed(int(rng.integers(0, 2**31)))
    for g in _make_groups(samples, rng, cfg):
        gt_np = np.zeros((len(g.img), size, size), np.float32)
        for i, (b, lab) in enumerate(zip(g.img, g.label, strict=True)):
            li = samples[b].labels_in
            gt_np[i, : li.shape[0], : li.shape[1]] = li == lab
        gt = torch.as_tensor(gt_np, device=dev)
        ls = min(cfg.loss_size, size)
        if ls != size:  # soft targets: fraction of each loss pixel covered by the object
            gt = F.adaptive_avg_pool2d(gt[:, None], ls)[:, 0]
        f = feats[torch.as_tensor(g.img, device=dev)]
        pts = None
        if g.points:
            pts = (
                torch.as_tensor(np.stack(g.points), dtype=torch.float32, device=dev),
                torch.as_tensor(np.stack(g.point_labels), dtype=torch.int64, device=dev),
            )
        boxes = None
        if g.boxes:
            boxes = torch.as_tensor(np.stack(g.boxes), dtype=torch.float32, device=dev)
        multimask = g.kind == POINT
        masks_in = None
        for rnd in range(cfg.correction_rounds + 1):
            low, iou_pred = _decode(sam, f, pts, boxes, masks_in, multimask)
            up = low
            if up.shape[-1] != ls:
                up = F.interpolate(low, (ls, ls), mode="bilinear", align_corners=False)
            loss, true_iou = sam_loss(up, iou_pred, gt, mask_loss=cfg.mask_loss)
            losses.append(loss)
            best = true_iou.argmax(1)
            key = f"iou_r{rnd}"
            metrics.setdefault(key, []).append(true_iou.gather(1, best[:, None])[:, 0])
            if rnd == cfg.correction_rounds:
                break
            ar = torch.arange(len(best), device=dev)
            with torch.no_grad():
                centred = None
                if cfg.centre_click_fraction > 0:
                    centred = torch.as_tensor(
                        rng.random(len(best)) < cfg.centre_click_fraction, device=dev
                    )
                rc, click_lab = correction_clicks(up[ar, best] > 0, gt > 0.5, gen, centred)
            # loss-grid pixel → model-input pixel centre, then (row, col) → (x, y)
            xy = ((rc.float() + 0.5) * (size / ls) - 0.5).flip(-1)[:, None]
            if pts is None:
                pts = (xy, click_lab[:, None])
            else:
                pts = (torch.cat([pts[0], xy], 1), torch.cat([pts[1], click_lab[:, None]], 1))
            masks_in = low[ar, best][:, None].detach()
            multimask = False
    total = torch.cat(losses).mean()
    out = {k: float(torch.cat(v).mean()) for k, v in metrics.items()}
    out["loss"] = float(total.detach())
    return total, out


def save_checkpoint(path: str | os.PathLike, sam: Sam, config: SamConfig, meta: dict) -> None:
    """Write ``{"config", "model", "meta"}`` atomically (loadable with weights_only=True)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().to("cpu", torch.float32).clone() for k, v in sam.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"config": config.to_dict(), "model": sd, "meta": dict(meta)}, tmp)
    os.replace(tmp, path)


def state_path(path: str | os.PathLike) -> Path:
    """The training-state file (optimizer, step, time) that belongs to a checkpoint."""
    path = Path(path)
    return path.with_name(path.stem + ".state.pt")


def train(
    sam: Sam,
    config: SamConfig,
    pairs: list[tuple[np.ndarray, np.ndarray]],
    out: str | os.PathLike,
    cfg: TrainConfig | None = None,
    resume: bool = False,
    meta: dict[str, Any] | None = None,
) -> Iterator[tuple[int, int, dict[str, float]]]:
    """Train ``sam`` (architecture ``config``) on 2D (image, labels) ``pairs``, writing the
    checkpoint ``out`` (and ``out``'s ``.state.pt``) every ``checkpoint_every_s`` and at the
    end. Yields (step, steps, metrics) after every step; stop early by closing the generator
    (the checkpoint is written then too). ``resume`` continues from ``out``'s state file."""
    cfg = cfg or TrainConfig()
    if not pairs:
        raise ValueError("no training pairs")
    dev = next(sam.parameters()).device
    sam.train()
    set_attention_impl(sam, "exact")
    if cfg.freeze_encoder:
        sam.image_encoder.requires_grad_(False)
    params = [p for p in sam.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    step, elapsed = 0, 0.0
    if resume:
        st = torch.load(state_path(out), map_location=dev, weights_only=True)
        opt.load_state_dict(st["optimizer"])
        step, elapsed = int(st["step"]), float(st["elapsed"])
    meta = dict(meta or {})

    def save() -> None:
        info = {**meta, "step": step, "train_seconds": round(elapsed, 1)}
        save_checkpoint(out, sam, config, info)
        torch.save(
            {"optimizer": opt.state_dict(), "step": step, "elapsed": elapsed},
            state_path(out),
        )

    rng = np.random.default_rng([cfg.seed, step])
    t0, last_save = time.perf_counter() - elapsed, time.perf_counter()
    try:
        while step < cfg.steps and not (cfg.time_limit_s and elapsed >= cfg.time_limit_s):
            idx = rng.integers(0, len(pairs), cfg.batch_images)
            samples = [prepare_sample(*pairs[i], sam.image_size, rng) for i in idx]
            for group in opt.param_groups:
                group["lr"] = cfg.lr * lr_factor(step, elapsed, cfg)
            loss, metrics = train_step(sam, samples, rng, cfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            step += 1
            elapsed = time.perf_counter() - t0
            metrics["lr"] = opt.param_groups[0]["lr"]
            if time.perf_counter() - last_save >= cfg.checkpoint_every_s:
                save()
                last_save = time.perf_counter()
            yield step, cfg.steps, metrics
    finally:
        save()
        sam.eval()
