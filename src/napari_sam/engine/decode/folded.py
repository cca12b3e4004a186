"""Mask decoder for many prompts on one image embedding (the AMG grid, interactive clicks).

Computes what :class:`napari_sam.model.mask_decoder.MaskDecoder` computes for B prompts
that share one image embedding and no mask input, with less work:

* prompt-independent image-side work is done once per embedding, not once per prompt:
  ``src = embedding + no-mask embedding``, its positional encoding, and in the first
  two-way block the k / v projections (token→image) and the q projection (image→token);
* in the later attentions the per-prompt 4096 × 128 projections of the image tokens are
  folded into the (few) prompt tokens: ``softmax(Q (W_k X)ᵀ) (W_v X)`` is computed as
  ``softmax((Q W_k) Xᵀ) X W_vᵀ`` (the key bias is constant along the softmax axis and
  the value bias passes through because softmax rows sum to one), and the image→token
  output projection is folded into the token values. Same mathematics, ~3× fewer
  multiply-adds (vit_b), float results equal to rounding (tests/engine/test_amg_parity);
* IoU predictions come first: the final token→image attention (independent per token)
  runs for the IoU token of every prompt, and for the mask tokens only of the prompts
  and outputs whose masks are needed (AMG: a mask above the IoU threshold; multimask:
  not the single-mask token; never the point tokens), so does the output upscaling —
  the same masks as running it for all; its 2×2 / stride-2 transposed convolutions are
  matrix products on the token-layout pixels.

All shapes follow the official code: tokens = [iou, 4 mask tokens, point, pad point].
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from ...model.mask_decoder import MaskDecoder
from ...model.transformer import Attention, TwoWayAttentionBlock

_CHUNK_BYTES = 4 * 2**20  # activations per decoder call (see prompt_chunk)


@dataclass
class ImageContext:
    """Prompt-independent decoder inputs for one embedding (computed once).

    keys: (1, HW, C) ``src`` tokens; key_pe: (1, HW, C); kp: keys + key_pe;
    k0, v0: first block token→image key / value heads (1, H, HW, d);
    q0: first block image→token query heads (1, H, HW, d); grid: (h, w).
    """

    keys: torch.Tensor
    key_pe: torch.Tensor
    kp: torch.Tensor
    k0: torch.Tensor
    v0: torch.Tensor
    q0: torch.Tensor
    grid: tuple[int, int]


@dataclass
class Decoded:
    """Two-way transformer output for B prompts (from :meth:`FoldedDecoder.tokens`).

    iou: (B, M) float32 predicted IoU of all M mask outputs (0 = single-mask output);
    queries, query_pe: (B, N, C) tokens before the final attention and their positional
    part; keys, kp: (B, HW, C) image tokens after the blocks, and + positional encoding.
    """

    iou: torch.Tensor
    queries: torch.Tensor
    query_pe: torch.Tensor
    keys: torch.Tensor
    kp: torch.Tensor


def _heads(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    """(B, N, Ci) → (B, H, N, d)."""
    b, n, c = x.shape
    return x.reshape(b, n, attn.num_heads, c // attn.num_heads).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    """(B, H, N, d) → (B, N, H * d)."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


def _w_heads(w: torch.Tensor, heads: int) -> torch.Tensor:
    """Projection weight (Ci, C) → per-head (H, d, C)."""
    ci, c = w.shape
    return w.reshape(heads, ci // heads, c)


class FoldedDecoder:
    """Batched mask decoding of prompts without a mask input on one embedding (the AMG
    point grid; the Predictor's points / boxes outside fp32 mode).

    Use :meth:`context` once per embedding, then :meth:`tokens` per batch of prompts (IoU
    predictions) and :meth:`masks` for the prompts / mask outputs that are needed.
    """

    def __init__(
        self,
        decoder: MaskDecoder,
        no_mask_embed: torch.Tensor,
        grid: tuple[int, int],
        bf16: bool = False,
    ) -> None:
        self.dtype = torch.bfloat16 if bf16 else torch.float32
        # bf16: a bfloat16 copy of the decoder, activations in bfloat16 throughout (no
        # per-call casts, unlike autocast); the IoU head stays the fp32 original
        self.dec = copy.deepcopy(decoder).to(self.dtype) if bf16 else decoder
        self._iou_head = decoder.iou_prediction_head
        self.no_mask = no_mask_embed.reshape(-1).to(self.dtype)
        self.grid = tuple(grid)
        self._orders: dict[tuple, torch.Tensor] = {}
        first = decoder.transformer.layers[0]
        if not first.skip_first_layer_pe:
            raise ValueError("the first two-way block must skip the positional encoding")
        for conv in (decoder.output_upscaling[0], decoder.output_upscaling[3]):
            if conv.kernel_size != (2, 2) or conv.stride != (2, 2) or conv.padding != (0, 0):
                raise ValueError("the decoder's upscaling must be 2×2 / stride-2 convolutions")

    @torch.inference_mode()
    def context(self, features: torch.Tensor, dense_pe: torch.Tensor) -> ImageContext:
        """features, dense_pe: (1, C, h, w) → :class:`ImageContext`."""
        h, w = features.shape[-2:]
        features, dense_pe = features.to(self.dtype), dense_pe.to(self.dtype)
        src = features + self.no_mask[None, :, None, None]
        # token-major and contiguous: (1, C, h, w) permuted views make every later
        # elementwise op on the image tokens a strided gather (~10× slower)
        keys = src.flatten(2).transpose(1, 2).contiguous()
        key_pe = dense_pe.flatten(2).transpose(1, 2).contiguous()
        kp = keys + key_pe
        first = self.dec.transformer.layers[0]
        t2i, i2t = first.cross_attn_token_to_image, first.cross_attn_image_to_token
        return ImageContext(
            keys=keys,
            key_pe=key_pe,
            kp=kp,
            k0=_heads(t2i, t2i.k_proj(kp)),
            v0=_heads(t2i, t2i.v_proj(keys)),
            q0=_heads(i2t, i2t.q_proj(kp)),
            grid=(int(h), int(w)),
        )

    @torch.inference_mode()
    def tokens(self, ctx: ImageContext, sparse: torch.Tensor) -> Decoded:
        """sparse (B, N, C) prompt embeddings → :class:`Decoded`: both two-way blocks for
        every prompt, the final attention for the IoU token only (the IoU predictions
        of all mask outputs); the mask tokens' final attention waits for :meth:`masks`.

        With ``bf16`` everything but the IoU head runs in bfloat16."""
        dec = self.dec
        sparse = sparse.to(self.dtype)
        out_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
        tok = torch.cat([out_tokens[None].expand(sparse.shape[0], -1, -1), sparse], dim=1)
        queries, keys = tok, ctx.keys
        for i, layer in enumerate(dec.transformer.layers):
            queries, keys = self._block(layer, i == 0, ctx, queries, keys, tok)
        kp = keys + ctx.key_pe
        hs = self._final(queries[:, :1], tok[:, :1], kp, keys)
        iou = self._iou_head(hs[:, 0].float())
        return Decoded(iou, queries, tok, keys, kp)

    def _final(
        self, queries: torch.Tensor, query_pe: torch.Tensor, kp: torch.Tensor, keys: torch.Tensor
    ) -> torch.Tensor:
        """Final token→image attention + norm of some tokens (b, n, C): each token's is
        independent of the others', so tokens nobody needs are skipped."""
        t = self.dec.transformer
        att = _token_to_image(t.final_attn_token_to_image, queries + query_pe, kp, keys)
        return t.norm_final_attn(queries + att)

    def _block(
        self,
        layer: TwoWayAttentionBlock,
        first: bool,
        ctx: ImageContext,
        queries: torch.Tensor,
        keys: torch.Tensor,
        query_pe: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if first:
            queries = layer.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + layer.self_attn(q, q, queries)
        queries = layer.norm1(queries)
        t2i, i2t = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
        q = queries + query_pe
        if first:  # image side shared by all prompts: plain attention, heads as batch
            qh = _heads(t2i, t2i.q_proj(q))  # (B, H, N, d)
            b, heads, n, d = qh.shape
            qh = qh.transpose(0, 1).reshape(heads, b * n, d)
            attn = (qh @ ctx.k0[0].transpose(-1, -2) / math.sqrt(d)).softmax(dim=-1)
            out = (attn @ ctx.v0[0]).reshape(heads, b, n, d).transpose(0, 1)
            att = t2i.out_proj(_merge(out))
            kp = ctx.kp
        else:
            kp = keys + ctx.key_pe
            att = _token_to_image(t2i, q, kp, keys)
        queries = layer.norm2(queries + att)
        queries = layer.norm3(queries + layer.mlp(queries))
        q = queries + query_pe
        out = _image_to_token(i2t, kp, q, queries, ctx.q0 if first else None)
        keys = layer.norm4(out.add_(keys))
        return queries, keys

    @property
    def prompt_chunk(self) -> int:
        """Prompts per :meth:`tokens` call: image-token activations of ~4 MB (on a CPU
        much larger batches are slower, not faster: page faults and cache misses)."""
        h, w = self.grid
        return max(1, _CHUNK_BYTES // (h * w * self.dec.transformer_dim * 4))

    @torch.inference_mode()
    def masks(
        self,
        ctx: ImageContext,
        decoded: Decoded,
        which: slice,
        prompts: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Low-res mask logits (b, len(which), 4h, 4w) float32 for mask outputs ``which``
        of the ``prompts`` (indices into the batch; all when None): the final attention
        of those mask tokens, the hypernetworks and the upscaling (a few prompts at a
        time: the upscaled activations are 16× the grid)."""
        h, w = ctx.grid
        c = self.dec.output_upscaling[3].out_channels
        step = max(1, _CHUNK_BYTES // (16 * h * w * c * 4))
        idx = list(range(self.dec.num_mask_tokens)[which])
        tokens = [1 + i for i in idx]  # token 0 is the IoU token
        if prompts is not None:
            prompts = prompts.to(decoded.keys.device)
        out = []
        for s in range(0, len(decoded.keys) if prompts is None else len(prompts), step):
            if prompts is None:  # slices are views: no copies of the image tokens
                keys, kp = decoded.keys[s : s + step], decoded.kp[s : s + step]
                q, pe = decoded.queries[s : s + step], decoded.query_pe[s : s + step]
            else:
                r = prompts[s : s + step]
                keys, kp = decoded.keys.index_select(0, r), decoded.kp.index_select(0, r)
                q, pe = decoded.queries.index_select(0, r), decoded.query_pe.index_select(0, r)
            hs = self._final(q[:, tokens], pe[:, tokens], kp, keys)
            out.append(self._masks(ctx, hs, keys, idx).float())
        return torch.cat(out)

    def _masks(
        self, ctx: ImageContext, mask_tokens: torch.Tensor, keys: torch.Tensor, idx: list[int]
    ) -> torch.Tensor:
        """mask_tokens (b, M, C) of mask outputs ``idx`` → logits (b, M, 4h, 4w)."""
        dec = self.dec
        mlps = dec.output_hypernetworks_mlps
        hyper = torch.stack([mlps[i](mask_tokens[:, j]) for j, i in enumerate(idx)], dim=1)
        b = keys.shape[0]
        h, w = ctx.grid
        ct1, ln, act1, ct2, act2 = dec.output_upscaling
        # 2×2 / stride-2 transposed convolutions are matrix products per pixel; pixels
        # stay in (i, j, ki, kj, ki2, kj2) order (layer norm and GELU are per pixel) and
        # only the final M-channel masks are put in raster order
        y = _deconv_2x2(keys, ct1)  # (b, hw * 4, C1)
        y = _gelu_(F.layer_norm(y, y.shape[-1:], ln.weight, ln.bias, ln.eps), act1)
        y = _gelu_(_deconv_2x2(y, ct2), act2)  # (b, hw * 16, C')
        m = len(idx)
        # (b, M, C') @ (b, C', P): y is read transposed in place (no copy of it); the
        # pixels go to raster order by one gather along the last axis (an 8-d permute
        # copy of the same data is ~4× slower)
        masks = (hyper @ y.transpose(1, 2)).reshape(b * m, -1)
        masks = masks.index_select(1, self._raster_order(h, w, masks.device))
        return masks.reshape(b, m, 4 * h, 4 * w)

    def _raster_order(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        """(16hw,) index: raster pixel → its position in the upscaling's
        (i, j, ki, kj, ki2, kj2) order, cached per grid."""
        key = (h, w, str(device))
        if key not in self._orders:
            order = torch.arange(16 * h * w, device=device).reshape(h, w, 2, 2, 2, 2)
            self._orders[key] = order.permute(0, 2, 4, 1, 3, 5).reshape(-1)
        return self._orders[key]


def _deconv_2x2(x: torch.Tensor, conv: torch.nn.ConvTranspose2d) -> torch.Tensor:
    """(b, P, Cin) pixels → (b, 4P, Cout): ConvTranspose2d(kernel 2, stride 2) with each
    input pixel's four outputs next to each other in (ki, kj) order."""
    cin, cout = conv.in_channels, conv.out_channels
    wt = conv.weight.permute(0, 2, 3, 1).reshape(cin, 4 * cout)
    y = torch.addmm(conv.bias.repeat(4), x.reshape(-1, cin), wt)
    return y.reshape(x.shape[0], -1, cout)


def _gelu_(x: torch.Tensor, act: torch.nn.Module) -> torch.Tensor:
    """The decoder's exact GELU, in place (saves a large allocation per call)."""
    if isinstance(act, torch.nn.GELU) and x.dtype in (torch.float32, torch.bfloat16):
        return torch.ops.aten.gelu_(x, approximate=act.approximate)
    return act(x)


def _token_to_image(
    attn: Attention, q: torch.Tensor, kp: torch.Tensor, keys: torch.Tensor
) -> torch.Tensor:
    """Attention of prompt tokens q (B, N, C) over image tokens, projections folded.

    Equals ``attn(q, kp, keys)`` with kp = keys + pe (B or 1, HW, C).
    """
    heads = attn.num_heads
    qh = _heads(attn, attn.q_proj(q))  # (B, H, N, d)
    b, _, n, d = qh.shape
    wk = _w_heads(attn.k_proj.weight, heads)  # (H, d, C)
    qk = torch.einsum("bhnd,hdc->bhnc", qh / math.sqrt(d), wk).reshape(b, heads * n, -1)
    # the key bias cancels in the softmax, which runs over the image tokens as the
    # last axis (~10× faster than over dim 1)
    if kp.dtype == torch.float32:
        # scores (B, H*N, HW) straight away: fp32 BLAS reads kp transposed in place
        weights = (qk @ kp.transpose(1, 2)).softmax(dim=-1)
    else:
        # bf16 would copy a transposed kp: scores with the image tokens first, then only
        # the few token rows are transposed
        weights = (kp @ qk.transpose(1, 2)).transpose(1, 2).softmax(dim=-1)
    ctx = weights @ keys  # (B, H*N, C)
    wv = _w_heads(attn.v_proj.weight, heads)
    vh = torch.einsum("bhnc,hdc->bhnd", ctx.reshape(b, heads, n, -1), wv)
    vh = vh + attn.v_proj.bias.reshape(1, heads, 1, d)
    return attn.out_proj(_merge(vh))


def _image_to_token(
    attn: Attention,
    kp: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    shared_q: torch.Tensor | None,
) -> torch.Tensor:
    """Attention of image tokens kp (B or 1, HW, C) over prompt tokens k, v (B, N, C),
    output projection folded into the token values. Equals ``attn(kp, k, v)``.

    shared_q: precomputed ``q_proj(kp)`` heads (1, H, HW, d) when kp is shared.
    """
    heads = attn.num_heads
    kh = _heads(attn, attn.k_proj(k))  # (B, H, N, d)
    vh = _heads(attn, attn.v_proj(v))
    b, _, n, d = kh.shape
    kh = kh / math.sqrt(d)  # scale the few token keys, not the HW × N scores
    # The softmax runs over the N prompt tokens with another axis innermost (heads or
    # prompts): torch's softmax vectorises along the inner axis, ~4× faster than over a
    # short last axis.
    if shared_q is not None and b == 1:
        # one prompt (a click): scores (H, N, HW) with the image tokens innermost — the
        # product writes HW-long rows (not N = 7 columns) and the softmax over N
        # vectorises along HW; q is read transposed in place
        p = (kh[0] @ shared_q[0].transpose(1, 2)).softmax(dim=1)  # (H, N, HW)
        p = p.reshape(1, heads * n, -1).transpose(1, 2)  # (1, HW, H*N) view, heads major
        vo_order = "bhnc"
    elif shared_q is not None:  # (H, HW, d) @ (H, d, N*B): heads as batch, no broadcast copy
        kt = kh.permute(1, 3, 2, 0).reshape(heads, d, n * b)
        p = (shared_q[0] @ kt).reshape(heads, -1, n, b).softmax(dim=2)  # (H, HW, N, B)
        p = p.permute(3, 1, 0, 2).reshape(b, -1, heads * n)  # (B, HW, H*N), heads major
        vo_order = "bhnc"
    else:
        wq = _w_heads(attn.q_proj.weight, heads)  # (H, d, C)
        m = torch.einsum("hdc,bhnd->bcnh", wq, kh).reshape(b, -1, n * heads)
        bias = (attn.q_proj.bias.reshape(1, heads, 1, d) * kh).sum(-1)  # (B, H, N)
        bias = bias.transpose(1, 2).reshape(b, 1, -1)
        scores = torch.baddbmm(bias, kp.expand(b, -1, -1), m)  # (B, HW, N*H), tokens major
        p = scores.reshape(b, -1, n, heads).softmax(dim=2).reshape(b, -1, n * heads)
        vo_order = "bnhc"
    wo = attn.out_proj.weight.reshape(-1, heads, d)  # (C, H, d)
    vo = torch.einsum(f"bhnd,chd->{vo_order}", vh, wo).reshape(b, heads * n, -1)
    # each head's softmax row sums to one, so bias / H on every token value adds the bias
    return p @ (vo + attn.out_proj.bias / heads)
