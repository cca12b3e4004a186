"""TinyViT image encoder of MobileSAM (``vit_t``).

Layout: a 4× convolutional stem, one stage of inverted-residual convolutions (MBConv)
and three stages of windowed-attention blocks, each stage but the last ending in a
patch-merging convolution, then SAM's conv neck. The total stride is 16: the stem (4)
and the first two merges (2 each); later merges only change the channel count.

Parameter and buffer names follow the MobileSAM checkpoint (``image_encoder.layers.N...``,
``Conv2d_BN`` children ``c`` / ``bn``, the unused classifier ``norm_head`` / ``head``),
so a state dict loads with a strict key check. The model is inference-only: batch norm
always uses its running statistics, whatever ``train()`` mode is set.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .common import LayerNorm2d, SwitchableAttention
from .fused import fused_conv
from .image_encoder import window_partition, window_unpartition
from .tiny_vit_fast import conv_layer_forward, layer_forward

#: Total downsampling of :class:`TinyViT` (input side / embedding-grid side).
STRIDE = 16
#: Channels per attention head that TinyViT uses; the convolutional first stage has no
#: heads in its weights, so :func:`infer_tiny_vit_config` derives its nominal count from it.
HEAD_DIM = 32


class Conv2dBN(nn.Sequential):
    """Bias-free ``Conv2d`` (child ``c``) followed by ``BatchNorm2d`` (child ``bn``).

    Padding is ``kernel_size // 2`` ("same" for odd kernels at stride 1). ``fold(True)``
    folds the (inference-only) batch norm into the convolution's weight and a bias — one
    pass over the activations instead of two; equal to float rounding, so only outside
    the exact mode (:func:`set_fast_path`).
    """

    _folded: tuple[torch.Tensor, torch.Tensor] | None = None

    def __init__(
        self, in_chans: int, out_chans: int, kernel_size: int = 1, stride: int = 1, groups: int = 1
    ) -> None:
        super().__init__()
        self.c = nn.Conv2d(
            in_chans, out_chans, kernel_size, stride, kernel_size // 2, groups=groups, bias=False
        )
        self.bn = nn.BatchNorm2d(out_chans)

    def fold(self, on: bool) -> None:
        """Use (True) or drop (False) the folded weight and bias (computed from the
        current parameters; call again after loading other weights)."""
        if not on:
            self._folded = None
            return
        with torch.no_grad():
            bn = self.bn
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            weight = self.c.weight * scale.to(self.c.weight.dtype)[:, None, None, None]
            bias = (bn.bias - bn.running_mean * scale).to(self.c.weight.dtype)
        self._folded = (weight.detach(), bias.detach())

    def forward(
        self, x: torch.Tensor, act: str | None = None, residual: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x: (B, in_chans, H, W) → (B, out_chans, H / stride, W / stride).

        ``residual`` (same shape as the output) is added after the batch norm, then
        ``act`` (``"gelu"``) is applied: ``act(bn(conv(x)) + residual)``. Folded, on a
        channels-last CPU tensor, the three run as one oneDNN convolution with fused
        post-ops (:func:`fused_conv`) — one pass over the activations instead of three."""
        if self._folded is not None:
            c = self.c
            w, b = (t.to(x.dtype) for t in self._folded)
            y = fused_conv(x, w, b, c.padding, c.stride, c.groups, act, residual)
            if y is not None:
                return y
            y = F.conv2d(x, w, b, c.stride, c.padding, 1, c.groups)
        else:
            bn = self.bn
            y = F.batch_norm(
                self.c(x), bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps
            )
        if residual is not None:
            y = residual + y
        return y if act is None else F.gelu(y)


class PatchEmbed(nn.Module):
    """Stem: two stride-2 3×3 convolutions, (B, C_in, H, W) → (B, dim, H/4, W/4)."""

    def __init__(self, in_chans: int, dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(
            Conv2dBN(in_chans, dim // 2, 3, 2), nn.GELU(), Conv2dBN(dim // 2, dim, 3, 2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq[2](self.seq[0](x, act="gelu"))


class MBConv(nn.Module):
    """Inverted residual: 1×1 expand → 3×3 depthwise → 1×1 project, plus the input."""

    def __init__(self, dim: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = Conv2dBN(dim, hidden)
        self.conv2 = Conv2dBN(hidden, hidden, 3, groups=hidden)
        self.conv3 = Conv2dBN(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) → (B, C, H, W)."""
        y = self.conv2(self.conv1(x, act="gelu"), act="gelu")
        return self.conv3(y, act="gelu", residual=x)


class PatchMerging(nn.Module):
    """1×1 → 3×3 depthwise (stride ``stride``) → 1×1: (B, C, H, W) → (B, C', H/s, W/s)."""

    def __init__(self, dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.conv1 = Conv2dBN(dim, out_dim)
        self.conv2 = Conv2dBN(out_dim, out_dim, 3, stride, groups=out_dim)
        self.conv3 = Conv2dBN(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.conv2(self.conv1(x, act="gelu"), act="gelu"))


class ConvLayer(nn.Module):
    """First stage: ``depth`` MBConv blocks, then an optional merge. Works on (B, C, H, W)."""

    def __init__(self, dim: int, depth: int, expand_ratio: float, downsample: nn.Module | None):
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand_ratio) for _ in range(depth))
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return x if self.downsample is None else self.downsample(x)


def attention_bias_index(window: int) -> torch.Tensor:
    """(window², window²) index into the per-head bias table for a pair of window cells.

    Cells are row-major; the pair ((y1, x1), (y2, x2)) maps to ``|y1-y2| * window + |x1-x2|``,
    so the table has ``window²`` entries per head.
    """
    d = (torch.arange(window)[:, None] - torch.arange(window)[None, :]).abs()
    idx = d[:, None, :, None] * window + d[None, :, None, :]
    return idx.reshape(window * window, window * window)


class Attention(SwitchableAttention):
    """Pre-norm multi-head self-attention inside one window with a learned offset bias.

    ``qkv`` is laid out per head as [q_h, k_h, v_h]. The bias (heads, N, N) is gathered
    from ``attention_biases`` (heads, window²) and passed to ``scaled_dot_product_attention``
    as an additive mask, which equals softmax(q·kᵀ / √d + bias) · v.
    """

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window * window))
        self.register_buffer("attention_bias_idxs", attention_bias_index(window), False)
        self.fast_bias: torch.Tensor | None = None  # (heads, N, N), set by set_fast_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, N, C) tokens of B windows, N = window² → (B, N, C)."""
        b, n, _ = x.shape
        qkv = self.qkv(self.norm(x)).view(b, n, self.num_heads, 3 * self.head_dim)
        q, k, v = qkv.transpose(1, 2).split(self.head_dim, dim=-1)  # each (B, heads, N, d)
        if self.fast_bias is not None and self.impl == "exact":
            # the fast path: bias gathered once; scale and bias fused into the batched
            # matrix product (baddbmm), softmax in place — equal to float rounding
            h, d = self.num_heads, self.head_dim
            scores = torch.baddbmm(
                self.fast_bias.to(q.dtype).expand(b, h, n, n).reshape(b * h, n, n),
                q.reshape(b * h, n, d),
                k.reshape(b * h, n, d).transpose(1, 2),
                alpha=d**-0.5,
            )
            probs = torch.ops.aten._softmax.out(scores, -1, False, out=scores)
            out = torch.bmm(probs, v.reshape(b * h, n, d))
            return self.proj(out.view(b, h, n, d).transpose(1, 2).reshape(b, n, -1))
        bias = self.attention_biases[:, self.attention_bias_idxs].to(q.dtype)
        if self.impl == "exact":
            attn = (q @ k.transpose(-2, -1)) * self.head_dim**-0.5 + bias
            out = attn.softmax(dim=-1) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.transpose(1, 2).reshape(b, n, -1))


class Mlp(nn.Module):
    """Pre-norm feed-forward: LayerNorm → fc1 → GELU → fc2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., dim) → (..., dim)."""
        return self.fc2(F.gelu(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """Window attention (+ residual) → depthwise ``local_conv`` → MLP (+ residual).

    Windows are zero-padded at the bottom/right before attention (the padded tokens take
    part as keys, as in the reference) and cropped afterwards.
    """

    def __init__(
        self, dim: int, num_heads: int, window: int, mlp_ratio: float, local_conv_size: int
    ) -> None:
        super().__init__()
        self.window = window
        self.attn = Attention(dim, num_heads, window)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.local_conv = Conv2dBN(dim, dim, local_conv_size, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C) → (B, H, W, C)."""
        _, h, w, c = x.shape
        win = self.window
        windows, padded = window_partition(x.contiguous(), win)
        out = self.attn(windows.view(-1, win * win, c)).view(-1, win, win, c)
        x = x + window_unpartition(out, win, padded, (h, w))
        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + self.mlp(x)


class BasicLayer(nn.Module):
    """Attention stage: ``depth`` :class:`TinyViTBlock` s, then an optional merge.

    (B, C, H, W) → (B, C', H', W').
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window: int,
        mlp_ratio: float,
        local_conv_size: int,
        downsample: nn.Module | None,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TinyViTBlock(dim, num_heads, window, mlp_ratio, local_conv_size) for _ in range(depth)
        )
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        for blk in self.blocks:
            x = blk(x)
        x = x.permute(0, 3, 1, 2)
        return x if self.downsample is None else self.downsample(x)


class TinyViT(nn.Module):
    """MobileSAM image encoder.

    Input: (B, in_chans, img_size, img_size) normalised float image.
    Output: (B, out_chans, img_size // 16, img_size // 16).

    ``num_heads[0]`` and ``window_sizes[0]`` are unused (the first stage is convolutional);
    they are accepted so configs keep one entry per stage. ``norm_head`` / ``head`` (an
    ImageNet classifier) are never run; they exist because the checkpoint holds them.
    ``channels_last``: run the convolutions on channels-last tensors (PyTorch's CPU
    depthwise convolutions fall back to a slow kernel on contiguous NCHW tensors; set by
    :func:`set_fast_path`, off in the exact mode).
    """

    channels_last: bool = False

    def __init__(
        self,
        img_size: int = 1024,
        in_chans: int = 3,
        embed_dims: Sequence[int] = (64, 128, 160, 320),
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (2, 4, 5, 10),
        window_sizes: Sequence[int] = (7, 7, 14, 7),
        mlp_ratio: float = 4.0,
        mbconv_expand_ratio: float = 4.0,
        local_conv_size: int = 3,
        out_chans: int = 256,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        n = len(embed_dims)
        if n < 2 or not len(depths) == len(num_heads) == len(window_sizes) == n:
            raise ValueError("embed_dims, depths, num_heads, window_sizes need one entry per stage")
        if img_size % STRIDE:
            raise ValueError(f"img_size must be a multiple of {STRIDE}, got {img_size}")
        self.img_size = img_size
        self.patch_embed = PatchEmbed(in_chans, embed_dims[0])
        self.layers = nn.ModuleList()
        for i in range(n):
            merge = None
            if i < n - 1:  # stem /4, then /2 twice: total stride 16
                merge = PatchMerging(embed_dims[i], embed_dims[i + 1], 2 if i < 2 else 1)
            if i == 0:
                layer: nn.Module = ConvLayer(embed_dims[0], depths[0], mbconv_expand_ratio, merge)
            else:
                layer = BasicLayer(
                    embed_dims[i],
                    depths[i],
                    num_heads[i],
                    window_sizes[i],
                    mlp_ratio,
                    local_conv_size,
                    merge,
                )
            self.layers.append(layer)
        self.norm_head = nn.LayerNorm(embed_dims[-1])
        self.head = nn.Linear(embed_dims[-1], num_classes) if num_classes else nn.Identity()
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, in_chans, H, W) → (B, out_chans, H / 16, W / 16)."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.patch_embed(x)
        fast = self.channels_last and x.device.type == "cpu" and not torch.is_grad_enabled()
        for layer in self.layers:
            if fast and isinstance(layer, BasicLayer):
                x = layer_forward(layer, x)
            elif fast and isinstance(layer, ConvLayer):
                x = conv_layer_forward(layer, x)
            else:
                x = layer(x)
        return self.neck(x)


def set_fast_path(module: nn.Module, on: bool) -> None:
    """Batch norms folded into their convolutions and channels-last convolutions for
    every TinyViT inside ``module`` (on), or the reference operation order (off, the
    exact mode). The results agree to float rounding (tests/model/test_tiny_vit.py);
    measured ~1.6× faster on an AVX2 CPU (docs/benchmarks.md)."""
    for m in module.modules():
        if isinstance(m, Conv2dBN):
            m.fold(on)
        elif isinstance(m, TinyViT):
            m.channels_last = on
        elif isinstance(m, Attention):
            with torch.no_grad():
                bias = m.attention_biases[:, m.attention_bias_idxs].detach().clone()
            m.fast_bias = bias if on else None


def _count(prefix: str, keys: Sequence[str]) -> int:
    """Number of numbered children ``prefix.N.`` present in ``keys``."""
    idx = {int(k[len(prefix) :].split(".")[0]) for k in keys if k.startswith(prefix)}
    return max(idx) + 1 if idx else 0


def infer_tiny_vit_config(
    state_dict: Mapping[str, torch.Tensor], image_size: int = 1024
) -> dict[str, Any]:
    """Encoder fields of a ``SamConfig`` from a prefix-free MobileSAM state dict.

    Stage widths come from the stem and merge convolutions, depths from block counts, head
    counts from ``attention_biases`` (heads, window²) and windows from its square root.
    Not stored in the weights, hence conventions: the input size (TinyViT weights fit any
    size; pass ``image_size``, default MobileSAM's 1024), and for the convolutional first
    stage ``max(1, dim // 32)`` heads and the second stage's window.
    Raises ``KeyError`` naming the first missing tensor.
    """
    p = "image_encoder."
    keys = list(state_dict)
    n = _count(p + "layers.", keys)
    if n < 2:
        raise KeyError(f"{p}layers.{n}.blocks.0")
    dims = [int(state_dict[p + "patch_embed.seq.2.c.weight"].shape[0])]
    for i in range(n - 1):
        dims.append(int(state_dict[f"{p}layers.{i}.downsample.conv1.c.weight"].shape[0]))
    depths = [_count(f"{p}layers.{i}.blocks.", keys) for i in range(n)]
    heads, windows = [], []
    for i in range(1, n):
        nh, size = state_dict[f"{p}layers.{i}.blocks.0.attn.attention_biases"].shape
        heads.append(int(nh))
        windows.append(math.isqrt(int(size)))
    return {
        "encoder": "tiny_vit",
        "image_size": image_size,
        "tv_embed_dims": tuple(dims),
        "tv_depths": tuple(depths),
        "tv_num_heads": (max(1, dims[0] // HEAD_DIM), *heads),
        "tv_window_sizes": (windows[0], *windows),
    }
