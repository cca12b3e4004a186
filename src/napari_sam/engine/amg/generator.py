"""Automatic mask generation (SAM "segment everything") into an instance label image.

Same parameters, defaults and pipeline as the official ``SamAutomaticMaskGenerator``
(grid of single positive points → 3 masks each → predicted-IoU filter → stability
filter → drop masks cut by a crop edge → box NMS per crop → NMS across crops →
optional small-region clean-up with NMS), so in fp32 it returns the same set of masks.
It is faster because it does less, not something else (see :mod:`..decode.folded` and
docs/amg.md): IoU filtering before the decoder's upscaling and any full-size
upsampling, survivors upsampled in bounded chunks, batched stability / boxes, compact
box-sized masks instead of full-size ones or RLEs, torchvision's batched NMS.

The output is an instance label image (uint32, 0 = background, ids 1..N) plus one
:class:`ObjectRecord` per id. **Overlap rule**: masks are painted from the lowest to the
highest quality, so where masks overlap the higher-quality one wins; quality is
``predicted_iou × stability_score`` (``paint_order="quality"``, default) or, with
``paint_order="area"``, larger masks are painted first so smaller (nested) ones stay
visible. **Rim rule** (:class:`~.labels.RimRule`): a mask partly covered by
higher-priority ones is dropped when what is left of it is less than
``min_uncovered_fraction`` of its pixels or only a rim at most ``rim_width`` pixels
thick (the crescents a slightly larger mask leaves around a nucleus); its pixels stay
free for the masks below. Objects left empty (or smaller than ``min_object_area``) are
dropped; ids are consecutive, id 1 = first in paint priority. The rule concerns only
the label image: :attr:`AmgResult.masks` / :meth:`generate_masks` are the official set.
"""

from __future__ import annotations

from collections.abc import Generator

import numpy as np
import torch
from torchvision.ops import batched_nms, box_area

from ..decode.folded import FoldedDecoder, ImageContext
from ..decode.upsample import MaskUpsamplers
from ..device import coordinate_dtype
from ..embedding import Embedding, Encoder, for_model
from ..image import Normalization, to_uint8_rgb
from ..labels import DEFAULT_MIN_UNCOVERED_FRACTION, DEFAULT_RIM_WIDTH, RimRule
from ..loader import SamModel
from ..progress import Progress, run_to_end
from ..transforms import rc_to_model_xy
from .masks import (
    CompactMask,
    clean_small_regions,
    crop_boxes,
    near_crop_edge,
    place_crops,
)
from .result import (
    PAINT_ORDERS,
    AmgResult,
    build_grids,
    build_result,
    check_int,
    check_range,
)

_UPSAMPLE_BYTES = 8 * 2**20  # full-size bool masks per upsampling chunk (cache-sized)


class AutomaticMaskGenerator:
    """Segment everything in a 2D slice.

    Parameters and defaults are the official ones (see ``SamAutomaticMaskGenerator``);
    ``point_grids`` are normalised (row, col) in [0, 1]² (one per crop layer).
    Additions: ``min_object_area`` drops objects smaller than this many pixels in the
    final label image; ``paint_order`` ("quality" | "area") is the overlap rule;
    ``normalization`` maps non-uint8 slices to uint8 RGB (as the ``Predictor``);
    ``decoder_precision="bf16"`` runs the folded decoder as a bfloat16 copy (IoU head in
    fp32; no faster for small decoders, and masks near the thresholds come and go — see
    docs/amg.md; the image encoder follows the model's own precision); None → the
    model's plan (:mod:`napari_sam.engine.plan`: fp32).
    ``upsampling``: "dense" resizes every IoU survivor's logits to full size as the
    official code does; "blocks" thresholds them blockwise
    (:class:`~napari_sam.engine.decode.upsample.MaskUpsampler`: exact interpolation only
    where a mask boundary or a stability threshold passes, equal to rounding); "auto"
    (default) = the model's plan: "dense" for an fp32 (exact) model, "blocks" otherwise.

    Example::

        amg = AutomaticMaskGenerator(load_model("vit_b"))
        result = amg.generate(image)           # or amg.generate(embedding)
        result.labels, result.records
    """

    def __init__(
        self,
        model: SamModel,
        points_per_side: int | None = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: list[np.ndarray] | None = None,
        min_mask_region_area: int = 0,
        min_object_area: int = 0,
        paint_order: str = "quality",
        min_uncovered_fraction: float = DEFAULT_MIN_UNCOVERED_FRACTION,
        rim_width: int = DEFAULT_RIM_WIDTH,
        normalization: Normalization | None = None,
        decoder_precision: str | None = None,
        upsampling: str = "auto",
    ) -> None:
        check_int("points_per_batch", points_per_batch, 1)
        check_int("crop_n_layers", crop_n_layers, 0)
        check_int("crop_n_points_downscale_factor", crop_n_points_downscale_factor, 1)
        check_int("min_mask_region_area", min_mask_region_area, 0)
        check_int("min_object_area", min_object_area, 0)
        for name, v in (
            ("pred_iou_thresh", pred_iou_thresh),
            ("stability_score_thresh", stability_score_thresh),
        ):
            check_range(name, v, 0.0, 1.0)
        for name, v in (("box_nms_thresh", box_nms_thresh), ("crop_nms_thresh", crop_nms_thresh)):
            check_range(name, v, 0.0, 1.0, low_open=True)
        check_range("crop_overlap_ratio", crop_overlap_ratio, 0.0, 1.0, high_open=True)
        check_range("stability_score_offset", stability_score_offset, 0.0, float("inf"))
        decoder_precision = decoder_precision or model.plan.amg_decoder_precision
        if decoder_precision not in ("fp32", "bf16"):
            raise ValueError(
                f"decoder_precision must be 'fp32' or 'bf16', got {decoder_precision!r}"
            )
        if upsampling not in ("auto", "dense", "blocks"):
            raise ValueError(f"upsampling must be 'auto', 'dense' or 'blocks', got {upsampling!r}")
        if paint_order not in PAINT_ORDERS:
            raise ValueError(f"paint_order must be one of {PAINT_ORDERS}, got {paint_order!r}")
        self.point_grids = build_grids(
            points_per_side, point_grids, crop_n_layers, crop_n_points_downscale_factor
        )
        self.model = model
        self.points_per_side = points_per_side
        self.points_per_batch = points_per_batch
        self.pred_iou_thresh = float(pred_iou_thresh)
        self.stability_score_thresh = float(stability_score_thresh)
        self.stability_score_offset = float(stability_score_offset)
        self.box_nms_thresh = float(box_nms_thresh)
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = float(crop_nms_thresh)
        self.crop_overlap_ratio = float(crop_overlap_ratio)
        self.min_mask_region_area = min_mask_region_area
        self.min_object_area = min_object_area
        self.paint_order = paint_order
        self.rim_rule = RimRule(min_uncovered_fraction, rim_width)  # validates
        self.normalization = normalization or Normalization()
        sam = model.sam
        self.decoder_precision = decoder_precision
        if upsampling == "auto":
            upsampling = model.plan.upsampling
        self.upsampling = upsampling
        self._upsamplers = MaskUpsamplers(sam.image_size, model.device)
        self._decoder = FoldedDecoder(
            sam.mask_decoder,
            sam.prompt_encoder.no_mask_embed.weight,
            sam.embedding_size,
            bf16=decoder_precision == "bf16",
        )
        self._crops = Encoder(model)  # default normalisation: crops are uint8 RGB already

    # ------------------------------------------------------------------------ public
    def generate(
        self, source: np.ndarray | Embedding, *, image: np.ndarray | None = None
    ) -> AmgResult:
        """Label image and records for one slice.

        source: the slice (H, W) / (H, W, 3), or its :class:`Embedding` (e.g. from the
        cache). With an embedding and ``crop_n_layers > 0`` the slice must be given as
        ``image`` too (crops are encoded from it).
        """
        return run_to_end(self.iter_generate(source, image=image))

    def iter_generate(
        self, source: np.ndarray | Embedding, *, image: np.ndarray | None = None
    ) -> Generator[Progress, None, AmgResult]:
        """:meth:`generate` as a generator of :class:`Progress`; returns the result.
        Closing the generator cancels."""
        emb, rgb, shape = self._inputs(source, image)
        masks = yield from self._masks(emb, rgb, shape)
        return build_result(
            masks, shape, self.paint_order, self.min_object_area, self.rim_rule
        )

    def generate_masks(
        self, source: np.ndarray | Embedding, *, image: np.ndarray | None = None
    ) -> list[CompactMask]:
        """The masks the official generator would return (same order), compact."""
        return run_to_end(self.iter_masks(source, image=image))

    def iter_masks(
        self, source: np.ndarray | Embedding, *, image: np.ndarray | None = None
    ) -> Generator[Progress, None, list[CompactMask]]:
        """:meth:`generate_masks` as a generator of :class:`Progress`."""
        emb, rgb, shape = self._inputs(source, image)
        return (yield from self._masks(emb, rgb, shape))

    def n_steps(self, shape: tuple[int, int]) -> int:
        """Progress steps of :meth:`iter_generate` on an (H, W) slice: one per crop
        embedding plus one per batch of points."""
        crops = crop_boxes(shape, self.crop_n_layers, self.crop_overlap_ratio)
        n = self.points_per_batch
        return len(crops) + sum(-(-len(self.point_grids[layer]) // n) for _, layer in crops)

    # ---------------------------------------------------------------------- pipeline
    def _masks(
        self, emb: Embedding | None, rgb: np.ndarray | None, shape: tuple[int, int]
    ) -> Generator[Progress, None, list[CompactMask]]:
        crops = crop_boxes(shape, self.crop_n_layers, self.crop_overlap_ratio)
        total, done = self.n_steps(shape), 0
        masks: list[CompactMask] = []
        for i, (crop, layer) in enumerate(crops):
            if i > 0 or emb is None:
                r0, c0, r1, c1 = crop
                emb = self._crops(rgb[r0:r1, c0:c1])
            done += 1
            yield Progress(done, total, f"crop {i + 1}/{len(crops)}: embedding")
            crop_masks: list[CompactMask] = []
            for b, n in enumerate(self._crop_batches(emb, crop, layer, shape, crop_masks)):
                done += 1
                yield Progress(done, total, f"crop {i + 1}/{len(crops)}: batch {b + 1}/{n}")
            masks += self._nms(
                crop_masks, self.box_nms_thresh, [m.predicted_iou for m in crop_masks]
            )
        if len(crops) > 1 and masks:
            area = box_area(torch.tensor([m.crop_box for m in masks]))
            masks = self._nms(masks, self.crop_nms_thresh, (1 / area).tolist())
        if self.min_mask_region_area > 0 and masks:
            masks = self._clean(masks, shape)
        return masks

    def _inputs(
        self, source: np.ndarray | Embedding, image: np.ndarray | None
    ) -> tuple[Embedding | None, np.ndarray | None, tuple[int, int]]:
        if isinstance(source, Embedding):
            emb = for_model(source, self.model)  # validates shape and weights hash
            rgb = None if image is None else to_uint8_rgb(image, self.normalization)
            if rgb is not None and rgb.shape[:2] != tuple(emb.original_size):
                raise ValueError(
                    f"image shape {rgb.shape[:2]} does not match the embedding's slice "
                    f"shape {tuple(emb.original_size)}"
                )
            if self.crop_n_layers > 0 and rgb is None:
                raise ValueError("crop_n_layers > 0 needs the slice: pass image=... too")
            return emb, rgb, tuple(emb.original_size)
        if image is not None:
            raise ValueError("pass the slice either as source or as image=, not both")
        rgb = to_uint8_rgb(np.asarray(source), self.normalization)
        return None, rgb, rgb.shape[:2]

    def _crop_batches(
        self,
        emb: Embedding,
        crop: tuple[int, int, int, int],
        layer: int,
        shape: tuple[int, int],
        out: list[CompactMask],
    ) -> Generator[int, None, None]:
        """Decode the crop's point grid batch by batch into ``out``; yields #batches."""
        model, sam = self.model, self.model.sam
        r0, c0, r1, c1 = crop
        size = (r1 - r0, c1 - c0)
        points = self.point_grids[layer] * np.array(size, dtype=np.float64)
        ctx = self._decoder.context(emb.features, model.dense_pe)
        n = -(-len(points) // self.points_per_batch)
        for start in range(0, len(points), self.points_per_batch):
            pts = points[start : start + self.points_per_batch]
            xy = rc_to_model_xy(pts, size, emb.input_size)
            dt = coordinate_dtype(model.device)
            coords = torch.as_tensor(xy, dtype=dt, device=model.device)[:, None]
            labels = torch.ones((len(pts), 1), dtype=torch.int, device=model.device)
            with torch.inference_mode():
                sparse, _ = sam.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
            low, ious, rows = self._decode(ctx, sparse)
            if len(low):
                rc = pts[rows.cpu().numpy()] + np.array([r0, c0], dtype=np.float64)
                out += self._survivors(low, ious, rc, emb, crop, shape)
            yield n

    def _decode(
        self, ctx: ImageContext, sparse: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Prompts (B, N, C) → low-res logits (n, 4h, 4w), predicted IoU (n,) and prompt
        index (n,) of the n multimask outputs above the IoU threshold, in official order
        (prompt-major). Prompts go through the decoder in memory-sized sub-batches."""
        lows, ious, rows = [], [], []
        for s in range(0, len(sparse), self._decoder.prompt_chunk):
            decoded = self._decoder.tokens(ctx, sparse[s : s + self._decoder.prompt_chunk])
            iou = decoded.iou[:, 1:]  # multimask outputs
            keep = torch.ones_like(iou, dtype=torch.bool)
            if self.pred_iou_thresh > 0:
                keep = iou > self.pred_iou_thresh
            prompts = torch.nonzero(keep.any(1)).flatten()
            if len(prompts) == 0:
                continue
            low = self._decoder.masks(ctx, decoded, slice(1, None), prompts)
            sel = keep[prompts]
            lows.append(low[sel])
            ious.append(iou[prompts][sel])
            rows.append(s + prompts[torch.nonzero(sel)[:, 0]])
        if not lows:
            empty = torch.empty(0)
            return empty, empty, torch.empty(0, dtype=torch.long)
        return torch.cat(lows), torch.cat(ious), torch.cat(rows)

    def _survivors(
        self,
        low: torch.Tensor,
        ious: torch.Tensor,
        points: np.ndarray,
        emb: Embedding,
        crop: tuple[int, int, int, int],
        shape: tuple[int, int],
    ) -> list[CompactMask]:
        """Upsample IoU survivors in chunks, filter on stability and crop edges."""
        out: list[CompactMask] = []
        ious_h = ious.float().cpu().numpy()
        offset = torch.tensor(crop[:2] * 2, device=low.device)
        for s, stab, idx, res, boxes in self._threshold(low, emb):
            inside = ~near_crop_edge(boxes + offset, crop, shape)
            if not bool(inside.all()):
                idx, boxes = idx[inside], boxes[inside]
            stab_h = stab[idx].cpu().numpy()
            rows = (s + idx).tolist()
            boxes_h = boxes.cpu().numpy()
            compact = place_crops(res.crops(idx, boxes_h), boxes_h, crop[:2])
            for j, st, (m, box) in zip(rows, stab_h, compact, strict=True):
                point = (float(points[j, 0]), float(points[j, 1]))
                out.append(CompactMask(m, box, float(ious_h[j]), float(st), point, crop))
        return out

    def _threshold(self, low: torch.Tensor, emb: Embedding) -> Generator[tuple, None, None]:
        """Low-res logits (n, 4h, 4w) in chunks → (chunk start, stability (k,), indices
        (j,) in the chunk passing the stability filter, the chunk's
        :class:`~napari_sam.engine.decode.upsample.Thresholded` (their masks, built only
        as box-sized crops), their boxes (j, 4))."""
        sam = self.model.sam
        thr, off = sam.mask_threshold, self.stability_score_offset
        up = self._upsamplers.get(low.shape[-2:], emb.input_size, emb.original_size)
        h, w = emb.original_size
        k = max(1, _UPSAMPLE_BYTES // (h * w))  # bool masks of a chunk
        for s in range(0, len(low), k):
            res = up.threshold(
                low[s : s + k], (thr + off, thr - off), thr, dense=self.upsampling == "dense"
            )
            stab = res.counts[:, 0] / res.counts[:, 1]  # int32 / int32, as the official
            idx = torch.arange(len(stab), device=stab.device)
            if self.stability_score_thresh > 0:
                idx = idx[stab >= self.stability_score_thresh]
            if len(idx):
                yield s, stab, idx, res, res.boxes(idx)

    @staticmethod
    def _nms(masks: list[CompactMask], thresh: float, scores: list[float]) -> list[CompactMask]:
        """torchvision batched NMS (one category); survivors in decreasing score order."""
        if not masks:
            return []
        boxes = torch.tensor([m.box for m in masks], dtype=torch.float)
        keep = batched_nms(
            boxes, torch.as_tensor(scores, dtype=torch.float), torch.zeros(len(masks)), thresh
        )
        return [masks[i] for i in keep.tolist()]

    def _clean(self, masks: list[CompactMask], shape: tuple[int, int]) -> list[CompactMask]:
        """Official ``postprocess_small_regions``: clean each mask, then NMS preferring
        unchanged masks."""
        cleaned = [clean_small_regions(m, self.min_mask_region_area, shape) for m in masks]
        new = [
            CompactMask(crop, box, m.predicted_iou, m.stability_score, m.point, m.crop_box)
            for m, (crop, box, _) in zip(masks, cleaned, strict=True)
        ]
        scores = [0.0 if changed else 1.0 for _, _, changed in cleaned]
        thresh = max(self.box_nms_thresh, self.crop_nms_thresh)
        return self._nms(new, thresh, scores)
