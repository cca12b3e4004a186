"""ViT image encoder of SAM (ViT-B/L/H and smaller configs).

Parameter names follow the official checkpoints (``image_encoder.blocks.N.attn.qkv`` ...),
so a state dict loads with a strict key check.

Attention is a :class:`~napari_sam.model.common.SwitchableAttention`: ``"exact"`` or
``"sdpa"`` (the decomposed relative-position bias becomes the additive mask).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import LayerNorm2d, MLPBlock, Scratch, SwitchableAttention


class ImageEncoderViT(nn.Module):
    """Vision transformer with windowed + global attention blocks and a conv neck.

    Input: (B, 3, img_size, img_size) normalised float image.
    Output: (B, out_chans, img_size // patch_size, img_size // patch_size).

    ``fast`` (False by default, :func:`set_fast_path`): inference without autograd takes
    :mod:`.vit_fast` — equal to float rounding, not bit-identical, so outside the exact
    mode only.
    """

    fast: bool = False

    def __init__(
        self,
        img_size: int = 1024,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        out_chans: int = 256,
        qkv_bias: bool = True,
        use_abs_pos: bool = True,
        use_rel_pos: bool = True,
        window_size: int = 14,
        global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11),
    ) -> None:
        super().__init__()
        self.img_size = img_size
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.pos_embed: nn.Parameter | None = None
        if use_abs_pos:
            self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim))
        self.blocks = nn.ModuleList(
            Block(
                dim=embed_dim,
                num_heads=num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                use_rel_pos=use_rel_pos,
                window_size=0 if i in global_attn_indexes else window_size,
                input_size=(grid, grid),
            )
            for i in range(depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, H, W) → (B, out_chans, H / patch, W / patch)."""
        if self.fast and not torch.is_grad_enabled():
            from .vit_fast import encoder_forward

            return encoder_forward(self, x)
        x = self.patch_embed(x)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        # inference: every block's attention matrix lives in one reused buffer
        scratch = None if torch.is_grad_enabled() else Scratch()
        for blk in self.blocks:
            x = blk(x, scratch)
        return self.neck(x.permute(0, 3, 1, 2))


def set_fast_path(module: nn.Module, on: bool) -> None:
    """Switch every :class:`ImageEncoderViT` inside ``module`` to the fast inference path
    (``on``) or back to the reference operation order."""
    for m in module.modules():
        if isinstance(m, ImageEncoderViT):
            m.fast = on


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection: (B, C, H, W) → (B, H/p, W/p, embed_dim)."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class Block(nn.Module):
    """Pre-norm transformer block; windowed attention when ``window_size > 0``."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        qkv_bias: bool,
        use_rel_pos: bool,
        window_size: int,
        input_size: tuple[int, int],
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        attn_size = input_size if window_size == 0 else (window_size, window_size)
        self.attn = Attention(dim, num_heads, qkv_bias, use_rel_pos, attn_size)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), nn.GELU)
        self.window_size = window_size

    def forward(self, x: torch.Tensor, scratch: Scratch | None = None) -> torch.Tensor:
        """x: (B, H, W, C) → (B, H, W, C). scratch: see :meth:`Attention.forward`."""
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            h, w = x.shape[1], x.shape[2]
            x, padded = window_partition(x, self.window_size)
            x = self.attn(x, scratch)
            x = window_unpartition(x, self.window_size, padded, (h, w))
        else:
            x = self.attn(x, scratch)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class Attention(SwitchableAttention):
    """Multi-head self-attention with decomposed relative-position bias."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool,
        use_rel_pos: bool,
        input_size: tuple[int, int],
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))

    def forward(self, x: torch.Tensor, scratch: Scratch | None = None) -> torch.Tensor:
        """x: (B, H, W, C) → (B, H, W, C).

        scratch (inference only, no autograd): the (B·heads, HW, HW) attention matrix (or
        the sdpa bias) is written into this reused buffer and updated in place — the
        same element-wise operations in the same order, so "exact" stays bit-identical
        to the reference, without allocating (and page-faulting) fresh matrices.
        """
        b, h, w, _ = x.shape
        nh = self.num_heads
        qkv = self.qkv(x).reshape(b, h * w, 3, nh, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, b * nh, h * w, -1).unbind(0)
        n = h * w
        if self.impl == "exact":
            qs, kt = q * self.scale, k.transpose(-2, -1)
            if scratch is None:
                attn = qs @ kt
            else:
                attn = torch.matmul(qs, kt, out=scratch.tensor((b * nh, n, n), q.dtype, q.device))
            if self.use_rel_pos:
                rel_h, rel_w = rel_pos_terms(q, self.rel_pos_h, self.rel_pos_w, (h, w), (h, w))
                if scratch is None:
                    attn = attn.view(-1, h, w, h, w) + rel_h[..., None] + rel_w[..., None, :]
                    attn = attn.reshape(-1, n, n)
                else:  # (attn + rel_h) + rel_w, in place
                    attn.view(-1, h, w, h, w).add_(rel_h[..., None]).add_(rel_w[..., None, :])
            if scratch is None:
                attn = attn.softmax(dim=-1)
            else:
                attn = torch.ops.aten._softmax.out(attn, -1, False, out=attn)
            out = attn @ v
        else:
            bias = None
            if self.use_rel_pos:
                rel_h, rel_w = rel_pos_terms(q, self.rel_pos_h, self.rel_pos_w, (h, w), (h, w))
                rel_h, rel_w = rel_h.to(q.dtype), rel_w.to(q.dtype)
                if scratch is None:
                    bias = rel_h[..., None] + rel_w[..., None, :]
                else:
                    bias = scratch.tensor((b * nh, h, w, h, w), q.dtype, q.device)
                    torch.add(rel_h[..., None], rel_w[..., None, :], out=bias)
                bias = bias.reshape(-1, n, n)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
        out = out.reshape(b, nh, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
        return self.proj(out)


def window_partition(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """(B, H, W, C) → (B * nWin, window, window, C), zero-padding H, W up to multiples.

    Returns the windows and the padded (Hp, Wp).
    """
    b, h, w, c = x.shape
    pad_h = (window - h % window) % window
    pad_w = (window - w % window) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window, window, wp // window, window, c)
    windows = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window, window, c)
    return windows, (hp, wp)


def window_unpartition(
    windows: torch.Tensor, window: int, padded: tuple[int, int], size: tuple[int, int]
) -> torch.Tensor:
    """Inverse of :func:`window_partition`: → (B, H, W, C) with padding removed."""
    hp, wp = padded
    h, w = size
    b = windows.shape[0] // (hp * wp // window // window)
    x = windows.view(b, hp // window, wp // window, window, window, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
    if hp > h or wp > w:
        x = x[:, :h, :w, :].contiguous()
    return x


def get_rel_pos(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """Relative-position embeddings for every (query, key) pair along one axis.

    rel_pos: (L, C) table, resized linearly when L != 2 * max(q_size, k_size) - 1.
    Returns (q_size, k_size, C).
    """
    max_dist = 2 * max(q_size, k_size) - 1
    if rel_pos.shape[0] != max_dist:
        table = F.interpolate(
            rel_pos.reshape(1, rel_pos.shape[0], -1).permute(0, 2, 1),
            size=max_dist,
            mode="linear",
        )
        table = table.reshape(-1, max_dist).permute(1, 0)
    else:
        table = rel_pos
    q_coords = torch.arange(q_size)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size)[None, :] * max(q_size / k_size, 1.0)
    rel = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return table[rel.long()]


def rel_pos_terms(
    q: torch.Tensor,
    rel_pos_h: torch.Tensor,
    rel_pos_w: torch.Tensor,
    q_size: tuple[int, int],
    k_size: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decomposed relative-position terms of the attention logits.

    q: (B, q_h * q_w, C) unscaled queries. Returns rel_h (B, q_h, q_w, k_h) and
    rel_w (B, q_h, q_w, k_w); the bias for key (kh, kw) is rel_h[..., kh] + rel_w[..., kw].
    """
    q_h, q_w = q_size
    k_h, k_w = k_size
    rh = get_rel_pos(q_h, k_h, rel_pos_h)
    rw = get_rel_pos(q_w, k_w, rel_pos_w)
    b, _, dim = q.shape
    r_q = q.reshape(b, q_h, q_w, dim)
    rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, rh.to(q.dtype))
    rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, rw.to(q.dtype))
    return rel_h, rel_w
