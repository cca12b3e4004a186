"""The fast (non-exact) CPU inference path of TinyViT (``vit_t``).

Same weights and the same arithmetic (float32 stays float32), in another memory layout
and operation order, so equal to the exact path only up to float rounding — used outside
the exact mode, on CPU tensors without autograd (:func:`~.tiny_vit.set_fast_path`; the
engine's plan decides, ``DecodePlan.fold_tiny_vit``). In the attention stages, per
:class:`~.tiny_vit.TinyViTBlock`:

* the residual stream stays one contiguous (B, H, W, C) tensor, updated in place;
* the window partition, head split and [q, k, v] split are one permute copy from the
  qkv projection, and one copy back (instead of partition, transpose, split, merge and
  unpartition copies); the output projection runs on the unpadded tokens only;
* the attention runs in chunks of whole windows whose scores fit
  :data:`~.vit_fast.CHUNK_BYTES`: the learned offset bias is added in place to the
  scores while they are in the CPU cache — the reference path expanded it into a
  (windows · heads, N, N) tensor (19 MB per block at 1024²), copied twice;
* the first stage's MBConv blocks run in bands of rows (:func:`mbconv_forward`): their
  4× expanded activations are never image-sized (64 MiB each at 1024², faulted in
  afresh on every call).

The padded tokens of the last window row / column are layer-normed like the
reference's (which normalises the zero-padded windows, so a padded key is the norm's
bias, not zero).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from .vit_fast import CHUNK_BYTES

if TYPE_CHECKING:
    from .tiny_vit import Attention, BasicLayer, ConvLayer, MBConv, TinyViTBlock

#: Bytes of MBConv's expanded activations per band (:func:`conv_layer_forward`): 64
#: rows at 1024² input. Measured on the avx2 class (2 threads): 16–128 rows all remove
#: the page faults; bands under 32 rows lose to per-call overhead.
BAND_BYTES = 16 * 2**20


def conv_layer_forward(layer: ConvLayer, x: torch.Tensor) -> torch.Tensor:
    """The convolutional first stage, each MBConv block in bands of rows of at most
    :data:`BAND_BYTES` expanded activations: x (B, C, H, W) channels-last → (B, C', H', W')."""
    for blk in layer.blocks:
        row_bytes = blk.conv1.c.out_channels * x.shape[-1] * x.element_size()
        x = mbconv_forward(blk, x, max(1, BAND_BYTES // row_bytes))
    return x if layer.downsample is None else layer.downsample(x)


def mbconv_forward(blk: MBConv, x: torch.Tensor, rows: int) -> torch.Tensor:
    """:class:`~.tiny_vit.MBConv` band by band: x (B, C, H, W) → (B, C, H, W).

    The 4× expanded activations of a whole 1024² image's first stage are 64 MiB per
    tensor — each call faulted in afresh (glibc hands blocks that large back to the
    kernel) and streamed through memory three times; a band of ``rows`` output rows
    needs them only for ``rows`` + 2 rows (one above and below for the 3 × 3 depthwise
    convolution; at the image's top and bottom its own zero padding applies, as in the
    whole-image convolution)."""
    b, _, h, _ = x.shape
    if h <= rows:
        return blk(x)
    out = torch.empty_like(x, memory_format=torch.channels_last)
    for i in range(b):
        xi = x[i : i + 1]
        for r0 in range(0, h, rows):
            r1 = min(h, r0 + rows)
            a0, a1 = max(0, r0 - 1), min(h, r1 + 1)
            hidden = blk.conv2(blk.conv1(xi[:, :, a0:a1], act="gelu"), act="gelu")
            y = blk.conv3(hidden[:, :, r0 - a0 : r1 - a0], act="gelu", residual=xi[:, :, r0:r1])
            out[i : i + 1, :, r0:r1] = y
    return out


def layer_forward(layer: BasicLayer, x: torch.Tensor) -> torch.Tensor:
    """x: (B, C, H, W), an intermediate of the encoder's own (channels-last: no copy; it
    is updated in place) → (B, C', H', W')."""
    y = x.permute(0, 2, 3, 1).contiguous()
    for blk in layer.blocks:
        y = block_forward(blk, y)
    y = y.permute(0, 3, 1, 2)
    return y if layer.downsample is None else layer.downsample(y)


def block_forward(blk: TinyViTBlock, x: torch.Tensor) -> torch.Tensor:
    """x: (B, H, W, C) contiguous, updated in place → (B, H, W, C)."""
    x.add_(window_attention(blk.attn, x, blk.window))
    x = blk.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1).contiguous()
    x.add_(blk.mlp(x))
    return x


def window_attention(attn: Attention, x: torch.Tensor, window: int) -> torch.Tensor:
    """The block's attention branch (norm, windowed attention with the offset bias
    gathered by :func:`~.tiny_vit.set_fast_path`, projection) for x (B, H, W, C) →
    (B, H, W, C)."""
    b, h, w, c = x.shape
    nh, hd = attn.num_heads, attn.head_dim
    pad_h, pad_w = (window - h % window) % window, (window - w % window) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    nwh, nww = hp // window, wp // window
    qkv = attn.qkv(attn.norm(x)).view(b, nwh, window, nww, window, nh, 3, hd)
    # (3, B, nWh, nWw, heads, win, win, hd) in one copy
    qkv = qkv.permute(6, 0, 1, 3, 5, 2, 4, 7).reshape(3, b * nwh * nww * nh, window**2, hd)
    q, k, v = qkv.unbind(0)
    bias = attn.fast_bias
    assert bias is not None, "set_fast_path(model, True) gathers the bias first"
    out = attend(q, k, v, bias.to(q.dtype), hd**-0.5)
    # (B, nWh, win, nWw, win, heads, hd) → (B, Hp, Wp, C) in one copy, then crop
    out = out.view(b, nwh, nww, nh, window, window, hd).permute(0, 1, 4, 2, 5, 3, 6)
    out = out.reshape(b, hp, wp, c)
    if pad_h or pad_w:
        out = out[:, :h, :w]
    return attn.proj(out)


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, scale: float
) -> torch.Tensor:
    """softmax(q kᵀ · scale + bias) v per (window, head) pair.

    q, k, v: (windows · heads, N, d), heads fastest; bias: (heads, N, N) → (windows ·
    heads, N, d). Chunks of whole windows, at most :data:`CHUNK_BYTES` of scores each."""
    n, t, _ = q.shape
    heads = bias.shape[0]
    windows = n // heads
    per_window = heads * t * t * q.element_size()
    step = max(1, min(windows, CHUNK_BYTES // per_window))
    qs = q * scale
    kt = k.transpose(-2, -1)
    out = torch.empty_like(q)
    buf = torch.empty(step * heads * t * t, dtype=q.dtype, device=q.device)
    for i in range(0, windows, step):
        m = min(step, windows - i)
        rows = slice(i * heads, (i + m) * heads)
        s = buf[: m * heads * t * t].view(m * heads, t, t)
        torch.matmul(qs[rows], kt[rows], out=s)
        s.view(m, heads, t, t).add_(bias)
        torch.ops.aten._softmax.out(s, -1, False, out=s)
        torch.matmul(s, v[rows], out=out[rows])
    return out
