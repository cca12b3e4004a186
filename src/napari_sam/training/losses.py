"""Mask and IoU losses of SAM training (per prompt, reduced by the caller)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """logits, target (..., H, W) → (...) soft dice loss."""
    p = logits.sigmoid().flatten(-2)
    t = target.flatten(-2)
    inter = (p * t).sum(-1)
    return 1.0 - (2.0 * inter + eps) / (p.sum(-1) + t.sum(-1) + eps)


def bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """logits, target (..., H, W) → (...) mean binary cross-entropy."""
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean((-2, -1))


def focal_loss(
    logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """logits, target (..., H, W) → (...) sigmoid focal loss (RetinaNet / SAM), mean."""
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    loss = ce * (1 - p_t) ** gamma
    a_t = alpha * target + (1 - alpha) * (1 - target)
    return (a_t * loss).mean((-2, -1))


def mask_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of (logits > 0) with the binary target, (..., H, W) → (...), no gradient."""
    with torch.no_grad():
        pred = logits > 0
        tgt = target > 0.5
        inter = (pred & tgt).flatten(-2).sum(-1).float()
        union = (pred | tgt).flatten(-2).sum(-1).float()
        return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def sam_loss(
    logits: torch.Tensor,
    iou_pred: torch.Tensor,
    target: torch.Tensor,
    mask_loss: str = "bce",
    focal_weight: float = 20.0,
    iou_weight: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss per prompt for M candidate masks.

    logits (B, M, H, W) at the target's resolution; iou_pred (B, M); target (B, H, W).
    Mask loss = BCE (or ``focal_weight`` × focal) + dice, and for M > 1 only the best
    candidate (minimum mask loss) counts, like SAM. The IoU head is trained on every
    candidate with MSE against its true IoU. Returns (loss (B,), true IoU (B, M)).
    """
    tgt = target[:, None].expand_as(logits)
    if mask_loss == "focal":
        per = focal_weight * focal_loss(logits, tgt)
    elif mask_loss == "bce":
        per = bce_loss(logits, tgt)
    else:
        raise ValueError(f"mask_loss must be 'bce' or 'focal', got {mask_loss!r}")
    per = per + dice_loss(logits, tgt)
    true_iou = mask_iou(logits, tgt)
    iou_term = F.mse_loss(iou_pred, true_iou, reduction="none").mean(-1)
    return per.min(dim=1).values + iou_weight * iou_term, true_iou
