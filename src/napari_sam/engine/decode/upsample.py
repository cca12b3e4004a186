"""Low-res mask logits → thresholded masks and pixel counts at slice size.

The official pipeline resizes the low-res logits (k, 4h, 4w) bilinearly to the padded
model size, crops the padding, resizes to the slice size and compares with thresholds
(the mask at 0; the stability counts at ±offset). :func:`upsample_chunk` does exactly
that (dense; the exact paths use it).

:class:`MaskUpsampler` gets the same masks and counts without full-size float logits.
Each output is a convex combination of the low-res logits in a small window (2 × 2 for
SAM's 4× resize, at most 3 × 3 for any slice size), so where the whole window lies on
one side of a threshold, so does the output pixel. Output rows (columns) are grouped
into blocks by their window; per mask and block the window's minimum and maximum decide
the block, and only blocks whose window straddles a threshold — the mask boundary, ~1 %
of the blocks for real masks — are interpolated exactly, with the composite 1-D weights
of the two resizes. Results equal thresholding :func:`upsample_chunk` up to float
rounding (an output within ~1e-6 of a threshold may differ; tests/engine/
test_mask_upsample.py). When more than ``DENSE_FRACTION`` of the blocks straddle (noisy
logits, e.g. random weights), the dense path is faster and is used instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch.nn import functional as F

DENSE_FRACTION = 0.1  # straddling blocks above which the dense resize is faster
_CHUNK_BYTES = 8 * 2**20  # float logits per dense resize


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(k, H, W) bool → (k, 4) int64 inclusive boxes, zeros for empty masks."""
    h, w = masks.shape[-2:]
    u = masks.view(torch.uint8)  # max over uint8 is much faster than any() on CPU
    rows, cols = u.amax(-1).bool(), u.amax(-2).bool()
    r = torch.arange(h, device=masks.device)
    c = torch.arange(w, device=masks.device)
    big = max(h, w)
    out = torch.stack(
        [
            torch.where(rows, r, big).amin(-1),
            torch.where(cols, c, big).amin(-1),
            torch.where(rows, r, -1).amax(-1),
            torch.where(cols, c, -1).amax(-1),
        ],
        dim=-1,
    )
    empty = ~rows.any(-1)
    out[empty] = 0
    return out


def upsample_chunk(
    low_res: torch.Tensor,
    image_size: int,
    input_size: tuple[int, int],
    original_size: tuple[int, int],
) -> torch.Tensor:
    """Low-res logits (k, 4h, 4w) → logits at the crop size (k, H, W).

    The same two bilinear resizes as the official ``postprocess_masks`` (to the padded
    model size, crop the padding, to the original size); the second is the identity
    when the sizes already agree and is skipped.
    """
    x = F.interpolate(
        low_res[:, None], (image_size, image_size), mode="bilinear", align_corners=False
    )
    x = x[..., : input_size[0], : input_size[1]]
    if tuple(input_size) != tuple(original_size):
        x = F.interpolate(x, original_size, mode="bilinear", align_corners=False)
    return x[:, 0]


@dataclass(frozen=True)
class _Axis:
    """One axis of the composite resize, as blocks of output pixels.

    The outputs whose low-res support starts in the same window w … w + K - 1 (K = the
    widest support) are contiguous; they form one block, or several of at most L
    outputs each where there are more (the clamped ends of the axis): blocks of one
    size make the exact interpolation of straddling blocks a dense (B, L, L) array.
    win: (G,) window start of each block; starts, lengths: (G,) first output index and
    size of each block; weights: (G, L, K) weight of window entry k for the block's
    l-th output (0 outside its support or beyond the block); valid: (G, L) l < length;
    pad: (G, L) float, 0 where valid and -inf beyond the block (added to interpolated
    values, it keeps non-outputs below every threshold); group: (n_out,) block of each
    output index.
    """

    win: torch.Tensor
    starts: torch.Tensor
    lengths: torch.Tensor
    weights: torch.Tensor
    valid: torch.Tensor
    pad: torch.Tensor
    group: torch.Tensor

    @property
    def k(self) -> int:
        return self.weights.shape[2]

    def to(self, device: torch.device | str) -> _Axis:
        return _Axis(*(getattr(self, f.name).to(device) for f in fields(self)))


def _axis(n_low: int, image_size: int, input_len: int, out_len: int) -> _Axis:
    """Composite 1-D weights of resize n_low → image_size, crop to input_len, resize to
    out_len (the official ``postprocess_masks`` on one axis), grouped into blocks."""
    impulses = torch.eye(n_low, dtype=torch.float64)[None]  # (1, n_low, n_low)
    x = F.interpolate(impulses, size=image_size, mode="linear", align_corners=False)
    x = x[..., :input_len]
    if input_len != out_len:
        x = F.interpolate(x, size=out_len, mode="linear", align_corners=False)
    a = x[0].T  # (out_len, n_low): output y = sum_i a[y, i] * low[i]
    nz = a > 0
    idx = torch.arange(n_low)
    first = torch.where(nz, idx, n_low).amin(1)
    last = torch.where(nz, idx, -1).amax(1)
    k = min(int((last - first).max()) + 1, n_low)
    window_of = torch.clamp(first, max=n_low - k)  # window start of each output (monotone)
    per_window = torch.bincount(window_of, minlength=n_low - k + 1)
    # block length: the most common non-empty window size (interior windows)
    n_l = int(torch.mode(per_window[per_window > 0]).values) if out_len else 1
    n_l = max(n_l, 1)
    # outputs of a window → blocks of ≤ n_l: block id = (window, rank // n_l)
    rank = torch.arange(out_len) - (torch.cumsum(per_window, 0) - per_window)[window_of]
    key = window_of * (out_len + 1) + rank // n_l
    _, group, lengths = torch.unique_consecutive(key, return_inverse=True, return_counts=True)
    starts = torch.cumsum(lengths, 0) - lengths
    win = window_of[starts]
    out_idx = torch.clamp(starts[:, None] + torch.arange(n_l), max=max(out_len - 1, 0))
    valid = torch.arange(n_l)[None] < lengths[:, None]  # (G, L)
    window = win[:, None] + torch.arange(k)  # (G, K)
    w = a[out_idx[:, :, None], window[:, None, :]]  # (G, L, K); 0 outside the support
    w = torch.where(valid[:, :, None], w, 0.0)
    pad = torch.where(valid, 0.0, float("-inf"))
    return _Axis(win, starts, lengths, w.float(), valid, pad, group)


class MaskUpsampler:
    """Thresholded upsampling for one geometry.

    low_shape: (4h, 4w) of the low-res logits; image_size: the model's square input;
    input_size: (h', w') of the resized slice before padding; original_size: (H, W) of
    the slice (or crop).
    """

    def __init__(
        self,
        low_shape: tuple[int, int],
        image_size: int,
        input_size: tuple[int, int],
        original_size: tuple[int, int],
        device: torch.device | str = "cpu",
    ) -> None:
        self.low_shape = (int(low_shape[0]), int(low_shape[1]))
        self.image_size = int(image_size)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.original_size = (int(original_size[0]), int(original_size[1]))
        self.rows = _axis(self.low_shape[0], image_size, input_size[0], original_size[0])
        self.cols = _axis(self.low_shape[1], image_size, input_size[1], original_size[1])
        self.rows, self.cols = self.rows.to(device), self.cols.to(device)

    def threshold(
        self,
        low: torch.Tensor,
        count_thresholds: Sequence[float] = (),
        mask_threshold: float = 0.0,
        dense: bool = False,
    ) -> Thresholded:
        """low (M, 4h, 4w) logits → :class:`Thresholded`: per-mask counts of upsampled
        pixels above each of ``count_thresholds`` and the masks above ``mask_threshold``.
        ``dense``: always the official dense resize (bit-identical to it)."""
        low = low.float()
        th = (*(float(t) for t in count_thresholds), float(mask_threshold))
        if dense:
            return _Dense(self, low, th)
        r, c = self.rows, self.cols
        # window extrema, then per block (a window's blocks share its extrema)
        lo = _sliding(_sliding(low, r.k, 1, torch.minimum), c.k, 2, torch.minimum)
        hi = _sliding(_sliding(low, r.k, 1, torch.maximum), c.k, 2, torch.maximum)
        lo = lo.index_select(1, r.win).index_select(2, c.win)
        hi = hi.index_select(1, r.win).index_select(2, c.win)
        mixed = (lo <= max(th)) & (hi > min(th))
        if int(mixed.sum()) > DENSE_FRACTION * mixed.numel():
            return _Dense(self, low, th)
        return _Blocks(self, low, th, lo > max(th), mixed)

    def masks(self, low: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
        """low (M, 4h, 4w) → (M, H, W) bool: upsampled logits > threshold."""
        return self.threshold(low, (), threshold).masks()


class MaskUpsamplers:
    """One :class:`MaskUpsampler` per geometry, built on first use (a generator or a
    predictor sees few distinct slice / crop sizes)."""

    def __init__(self, image_size: int, device: torch.device | str = "cpu") -> None:
        self.image_size, self.device = int(image_size), device
        self._cache: dict[tuple, MaskUpsampler] = {}

    def get(
        self,
        low_shape: tuple[int, int],
        input_size: tuple[int, int],
        original_size: tuple[int, int],
    ) -> MaskUpsampler:
        key = (tuple(low_shape), tuple(input_size), tuple(original_size))
        if key not in self._cache:
            self._cache[key] = MaskUpsampler(key[0], self.image_size, key[1], key[2], self.device)
        return self._cache[key]


class Thresholded:
    """Result of :meth:`MaskUpsampler.threshold`.

    counts: (M, T) int32, pixels above each count threshold; :meth:`masks` the masks.
    """

    counts: torch.Tensor

    def masks(self, which: torch.Tensor | None = None) -> torch.Tensor:
        """(k, H, W) bool masks for the masks ``which`` (indices; all when None)."""
        raise NotImplementedError

    def boxes(self, which: torch.Tensor | None = None) -> torch.Tensor:
        """(k, 4) int64 inclusive boxes (row_min, col_min, row_max, col_max) of the
        masks ``which`` (all when None), zeros for empty masks."""
        return mask_boxes(self.masks(which))

    def crops(self, which: torch.Tensor, boxes: np.ndarray) -> list[np.ndarray]:
        """Box-sized bool crops (numpy) of the masks ``which``; ``boxes`` (k, 4) are
        theirs (from :meth:`boxes`)."""
        masks = self.masks(which).cpu().numpy()
        return [
            m[r0 : r1 + 1, c0 : c1 + 1]
            for m, (r0, c0, r1, c1) in zip(masks, boxes.tolist(), strict=True)
        ]


class _Blocks(Thresholded):
    """Blocks above every threshold are "up"; blocks that straddle any threshold get
    their exact outputs (B, L, L) once; all others lie at or below every threshold."""

    def __init__(
        self,
        up: MaskUpsampler,
        low: torch.Tensor,
        th: tuple[float, ...],
        above: torch.Tensor,
        mixed: torch.Tensor,
    ) -> None:
        r, c = up.rows, up.cols
        self.rows, self.cols, self.mask_threshold, self.above = r, c, th[-1], above
        self.m, self.g, self.h = torch.nonzero(mixed, as_tuple=True)
        windows = low.unfold(1, r.k, 1).unfold(2, c.k, 1)
        window = windows[self.m, r.win[self.g], c.win[self.h]]  # (B, K, K)
        # wr @ window @ wcᵀ for (B, L, K) × (B, K, K) × (B, K, L), as broadcast
        # multiply-adds (faster than batched products of such tiny matrices); outputs
        # beyond a block get -inf (the axes' pad), so they pass no threshold
        wr, wc = r.weights[self.g], c.weights[self.h]
        rows = wr[:, :, 0, None] * window[:, None, 0, :]
        for k in range(1, r.k):
            rows = rows + wr[:, :, k, None] * window[:, None, k, :]  # (B, L, K)
        values = r.pad[self.g][:, :, None] + c.pad[self.h][:, None, :]
        for k in range(c.k):
            values = values + rows[:, :, None, k] * wc[:, None, :, k]
        self.values = values  # (B, L, L)
        sizes = r.lengths[:, None] * c.lengths[None, :]  # (Gr, Gc)
        base = (self.above * sizes).sum((1, 2))  # (M,)
        counts = base[:, None].repeat(1, len(th) - 1)
        for i, t in enumerate(th[:-1]):
            counts[:, i].index_add_(0, self.m, (values > t).sum((1, 2)))
        self.counts = counts.int()
        self._hits: tuple[torch.Tensor, ...] | None = None

    def _mask_hits(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pixels of straddling blocks above the mask threshold: (mask, row, col)."""
        if self._hits is None:
            b, li, lj = torch.nonzero(self.values > self.mask_threshold, as_tuple=True)
            rows = self.rows.starts[self.g[b]] + li
            cols = self.cols.starts[self.h[b]] + lj
            self._hits = (self.m[b], rows, cols)
        return self._hits

    def boxes(self, which: torch.Tensor | None = None) -> torch.Tensor:
        """Boxes from the blocks, without building the masks (see the base class)."""
        r, c = self.rows, self.cols
        dev = self.above.device
        big = 1 << 30
        gr = torch.arange(self.above.shape[1], device=dev)
        gc = torch.arange(self.above.shape[2], device=dev)
        any_r, any_c = self.above.any(2), self.above.any(1)  # (M, Gr), (M, Gc)
        first_r = r.starts[torch.where(any_r, gr, big).amin(1).clamp(max=len(gr) - 1)]
        last_gr = torch.where(any_r, gr, -1).amax(1).clamp(min=0)
        last_r = r.starts[last_gr] + r.lengths[last_gr] - 1
        first_c = c.starts[torch.where(any_c, gc, big).amin(1).clamp(max=len(gc) - 1)]
        last_gc = torch.where(any_c, gc, -1).amax(1).clamp(min=0)
        last_c = c.starts[last_gc] + c.lengths[last_gc] - 1
        has = any_r.any(1)
        lo_r = torch.where(has, first_r, big)
        lo_c = torch.where(has, first_c, big)
        hi_r = torch.where(has, last_r, -1)
        hi_c = torch.where(has, last_c, -1)
        m, rows, cols = self._mask_hits()
        lo_r = lo_r.scatter_reduce(0, m, rows, "amin")
        lo_c = lo_c.scatter_reduce(0, m, cols, "amin")
        hi_r = hi_r.scatter_reduce(0, m, rows, "amax")
        hi_c = hi_c.scatter_reduce(0, m, cols, "amax")
        out = torch.stack([lo_r, lo_c, hi_r, hi_c], dim=1)
        out[hi_r < 0] = 0
        return out if which is None else out[which.to(dev).long()]

    def crops(self, which: torch.Tensor, boxes: np.ndarray) -> list[np.ndarray]:
        """Each crop straight from the blocks: the "up" blocks expanded over the box
        only, then the mask's interpolated pixels (no full-size array)."""
        above = self.above.cpu().numpy()
        rg, cg = self.rows.group.cpu().numpy(), self.cols.group.cpu().numpy()
        m, rows, cols = (t.cpu().numpy() for t in self._mask_hits())
        which = which.cpu().numpy()
        # hits come in mask order (nonzero over (mask, block), then over each block)
        first = np.searchsorted(m, which, "left")
        end = np.searchsorted(m, which, "right")
        out = []
        for j, (r0, c0, r1, c1), a, b in zip(which, boxes.tolist(), first, end, strict=True):
            crop = above[j][rg[r0 : r1 + 1]][:, cg[c0 : c1 + 1]]
            crop[rows[a:b] - r0, cols[a:b] - c0] = True
            out.append(crop)
        return out

    def masks(self, which: torch.Tensor | None = None) -> torch.Tensor:
        n, dev = self.above.shape[0], self.above.device
        which = torch.arange(n, device=dev) if which is None else which.to(dev).long()
        pos = torch.full((n,), -1, dtype=torch.long, device=dev)
        pos[which] = torch.arange(len(which), device=dev)
        # blocks → pixels: columns on the small array first, then whole rows
        out = self.above.index_select(0, which).index_select(2, self.cols.group)
        out = out.index_select(1, self.rows.group)  # (k, H, W), a fresh tensor
        m, rows, cols = self._mask_hits()
        k = pos[m]
        sel = k >= 0
        out[k[sel], rows[sel], cols[sel]] = True
        return out


class _Dense(Thresholded):
    """The official dense resize, a few masks at a time (bounded memory), counts as the
    official stability score makes them; keeps only the bool masks."""

    def __init__(self, up: MaskUpsampler, low: torch.Tensor, th: tuple[float, ...]) -> None:
        h, w = up.original_size
        step = max(1, _CHUNK_BYTES // (4 * (up.image_size**2 + h * w)))
        counts, masks = [], []
        for s in range(0, low.shape[0], step):
            x = upsample_chunk(low[s : s + step], up.image_size, up.input_size, (h, w))
            n = [_count_pixels(x > t) for t in th[:-1]]
            counts.append(torch.stack(n, -1) if n else x.new_zeros((len(x), 0), dtype=torch.int))
            masks.append(x > th[-1])
        self.counts = torch.cat(counts)
        self._masks = torch.cat(masks)

    def masks(self, which: torch.Tensor | None = None) -> torch.Tensor:
        if which is None:
            return self._masks
        return self._masks.index_select(0, which.to(self._masks.device).long())


def _sliding(x: torch.Tensor, k: int, dim: int, op) -> torch.Tensor:
    """Extremum (``op`` = torch.minimum / maximum) over windows of k along ``dim``
    (n → n - k + 1): k - 1 elementwise ops on shifted slices — contiguous and
    vectorised, unlike a reduction over an ``unfold`` view."""
    n = x.shape[dim] - k + 1
    out = x.narrow(dim, 0, n)
    for i in range(1, k):
        out = op(out, x.narrow(dim, i, n))
    return out


def _count_pixels(masks: torch.Tensor) -> torch.Tensor:
    """(k, H, W) bool → (k,) int32 pixel counts (column sums first: CPU-vectorised)."""
    dtype = torch.int16 if masks.shape[-2] < 2**15 else torch.int32
    return masks.view(torch.uint8).sum(-2, dtype=dtype).sum(-1, dtype=torch.int32)
