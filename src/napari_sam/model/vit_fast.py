"""The fast (non-exact) inference path of :class:`~.image_encoder.ImageEncoderViT`.

Same weights and the same arithmetic (float32 stays float32), in another memory layout
and operation order, so equal to the exact path only up to float rounding — used outside
the exact mode (:func:`set_fast_path`; the engine's plan decides, ``DecodePlan.fast_vit``):

* the residual stream is kept contiguous (B, H, W, C): the reference keeps the patch
  embedding's channels-first memory through every block, so each layer norm, residual add
  and window partition copied or strided over it;
* windowed blocks: one permute copy from the qkv projection to (3, windows · heads,
  tokens, head_dim) and one back — instead of separate window partition, head split,
  head merge, window unpartition and crop copies; the output projection runs on the
  H · W unpadded tokens only (padded tokens' outputs are dropped anyway);
* global blocks: the attention is computed in chunks of query rows (all heads at once),
  so the scores, the relative-position terms and the softmax stay in the CPU cache
  instead of streaming a (heads, HW, HW) matrix (0.8 GB for ViT-B at 1024²) through
  memory four times;
* residual adds in place.

The linear layers and the MLP are the modules' own (MKL / oneDNN GEMMs, GELU after
the first MLP layer): oneDNN's pre-packed weights with GELU as a post-op
(``mkldnn._linear_pointwise``) measured slower on the avx2 class at 1 and 2 threads
(4096 × 768 → 3072 with GELU: 165–171 ms vs 111–133 ms at 2 threads; encoder A/B in one
process level or worse; docs/benchmarks.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from .image_encoder import Attention, Block, ImageEncoderViT

#: Bytes of attention scores per global-attention chunk (all heads): fits a
#: desktop / server CPU's last-level cache with room for q, k, v.
CHUNK_BYTES = 8 * 2**20


def encoder_forward(enc: ImageEncoderViT, x: torch.Tensor) -> torch.Tensor:
    """x: (B, 3, H, W) → (B, out_chans, H / patch, W / patch), no autograd."""
    x = enc.patch_embed.proj(x).permute(0, 2, 3, 1).contiguous()
    if enc.pos_embed is not None:
        x.add_(enc.pos_embed)
    for blk in enc.blocks:
        x = block_forward(blk, x)
    return enc.neck(x.permute(0, 3, 1, 2))


def block_forward(blk: Block, x: torch.Tensor) -> torch.Tensor:
    """x: (B, H, W, C) contiguous, updated in place → (B, H, W, C)."""
    y = blk.norm1(x)
    if blk.window_size > 0:
        y = windowed_attention(blk.attn, y, blk.window_size)
    else:
        y = global_attention(blk.attn, y)
    x.add_(y)
    x.add_(blk.mlp(blk.norm2(x)))
    return x


def windowed_attention(attn: Attention, x: torch.Tensor, window: int) -> torch.Tensor:
    """Attention within non-overlapping ``window`` × ``window`` windows (zero-padded like
    the reference). x: (B, H, W, C) → (B, H, W, C)."""
    b, h, w, c = x.shape
    nh = attn.num_heads
    hd = c // nh
    pad_h, pad_w = (window - h % window) % window, (window - w % window) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    nwh, nww = hp // window, wp // window
    qkv = attn.qkv(x).view(b, nwh, window, nww, window, 3, nh, hd)
    # (3, B, nWh, nWw, heads, win, win, hd) in one copy
    qkv = qkv.permute(5, 0, 1, 3, 6, 2, 4, 7).reshape(3, b * nwh * nww * nh, window * window, hd)
    q, k, v = qkv.unbind(0)
    out = _attend(attn, q, k, v, (window, window))
    # (B, nWh, win, nWw, win, heads, hd) → (B, Hp, Wp, C) in one copy, then crop
    out = out.view(b, nwh, nww, nh, window, window, hd).permute(0, 1, 4, 2, 5, 3, 6)
    out = out.reshape(b, hp, wp, c)
    if pad_h or pad_w:
        out = out[:, :h, :w]
    return attn.proj(out)


def global_attention(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    """Attention over all H · W tokens. x: (B, H, W, C) → (B, H, W, C)."""
    b, h, w, c = x.shape
    nh = attn.num_heads
    hd = c // nh
    qkv = attn.qkv(x).view(b, h * w, 3, nh, hd).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.reshape(3, b * nh, h * w, hd).unbind(0)
    out = _attend(attn, q, k, v, (h, w))
    out = out.view(b, nh, h, w, hd).permute(0, 2, 3, 1, 4).reshape(b, h, w, c)
    return attn.proj(out)


def _attend(
    attn: Attention,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    size: tuple[int, int],
) -> torch.Tensor:
    """softmax(q kᵀ · scale + rel_h + rel_w) v for q, k, v (N, h · w, hd) → (N, h · w, hd)
    (N = batch · windows · heads; h, w: the token grid), with at most
    :data:`CHUNK_BYTES` of scores at a time: chunks of whole (window, head) pairs where
    one pair's scores fit, else chunks of query rows of one pair."""
    from .image_encoder import rel_pos_terms

    n, t, _ = q.shape
    h, w = size
    rel_h = rel_w = None
    if attn.use_rel_pos:  # (N, h, w, h) and (N, h, w, w), as in the reference
        rel_h, rel_w = rel_pos_terms(q, attn.rel_pos_h, attn.rel_pos_w, size, size)
    per_pair = t * t * q.element_size()
    if per_pair <= CHUNK_BYTES:
        step = max(1, CHUNK_BYTES // per_pair)
        chunks = [(slice(i, min(n, i + step)), 0, h) for i in range(0, n, step)]
    else:
        rows = max(1, CHUNK_BYTES // (w * t * q.element_size()))
        chunks = [
            (slice(i, i + 1), r, min(h, r + rows)) for i in range(n) for r in range(0, h, rows)
        ]
    qs = q * attn.scale
    kt = k.transpose(-2, -1)
    out = torch.empty_like(q)
    biggest = max(len(range(n)[p]) * (r1 - r0) for p, r0, r1 in chunks) * w * t
    buf = torch.empty(biggest, dtype=q.dtype, device=q.device)
    for pairs, r0, r1 in chunks:
        m = len(range(n)[pairs])
        s = buf[: m * (r1 - r0) * w * t].view(m, (r1 - r0) * w, t)
        torch.matmul(qs[pairs, r0 * w : r1 * w], kt[pairs], out=s)
        if rel_h is not None and rel_w is not None:
            s5 = s.view(m, r1 - r0, w, h, w)
            s5.add_(rel_h[pairs, r0:r1, :, :, None]).add_(rel_w[pairs, r0:r1, :, None, :])
        torch.ops.aten._softmax.out(s, -1, False, out=s)
        torch.matmul(s, v[pairs], out=out[pairs, r0 * w : r1 * w])
    return out
