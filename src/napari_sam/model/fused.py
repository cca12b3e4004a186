"""Fused oneDNN operations for the fast (non-exact) paths of the encoders."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


def fused_conv(
    x: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor,
    padding: Any,
    stride: Any,
    groups: int,
    act: str | None,
    residual: torch.Tensor | None,
) -> torch.Tensor | None:
    """``act(conv(x) + residual)`` as one oneDNN convolution with post-ops (PyTorch's
    ``mkldnn._convolution_pointwise``, which its CPU compiler uses), or None where that
    is not available (no oneDNN, not a channels-last float32 CPU tensor, no grad-free
    mode): the caller then runs the plain operations. Equal to float rounding."""
    if (
        x.device.type != "cpu"
        or x.dtype != torch.float32
        or torch.is_grad_enabled()
        or not x.is_contiguous(memory_format=torch.channels_last)
        or not torch.backends.mkldnn.is_available()
    ):
        return None
    ops = getattr(torch.ops, "mkldnn", None)
    fn = getattr(ops, "_convolution_pointwise", None) if ops is not None else None
    if fn is None:
        return None
    pad, st = list(padding), list(stride)
    if residual is None:
        y = fn(x, w, b, pad, st, [1, 1], groups, act or "none", [], "none" if act else None)
        # oneDNN answers the stem's input (an (H, W, 3) image seen as (1, 3, H, W),
        # batch stride 3) in NCHW: every later convolution then missed this path
        # (measured: 26 of 27 for vit_t; the encoder 1.5× slower)
        return y.contiguous(memory_format=torch.channels_last)
    other = residual.contiguous(memory_format=torch.channels_last)
    # oneDNN fuses the residual add, but not a unary post-op after it: GELU separately
    y = fn.binary(x, other, w, b, pad, st, [1, 1], groups, "add", None, None, [], None)
    return y if act is None else F.gelu(y)
