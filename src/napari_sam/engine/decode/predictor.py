"""Interactive prediction on one 2D slice: set an image (or a cached embedding), then
predict masks from points / boxes / a previous mask.

Public coordinates are napari order: points (row, col), boxes
(row_min, col_min, row_max, col_max), in pixels of the slice. They are flipped to SAM's
(x, y) only in :func:`napari_sam.engine.transforms.rc_to_model_xy`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..embedding import Embedding, Encoder, for_model
from ..image import Normalization
from ..loader import SamModel
from .folded import FoldedDecoder, ImageContext
from .prompts import Prompts, validate_prompts
from .upsample import MaskUpsamplers


@dataclass(frozen=True)
class PredictResult:
    """masks (C, H, W) bool; scores (C,) float32 predicted IoU; logits (C, 4h, 4w)
    float32 low-res logits (256 × 256 for SAM), usable as the next ``mask_input``."""

    masks: np.ndarray
    scores: np.ndarray
    logits: np.ndarray

    @property
    def best(self) -> int:
        """Index of the mask with the highest predicted IoU."""
        return int(np.argmax(self.scores))


class Predictor:
    """SAM predictor for 2D slices.

    Example::

        p = Predictor(load_model("vit_b"))
        p.set_image(img)                     # (H, W) or (H, W, 3), any dtype
        r = p.predict(points=[[row, col]], labels=[1])
        r.masks, r.scores, r.logits
    """

    def __init__(
        self,
        model: SamModel,
        normalization: Normalization | None = None,
        fast_decoder: bool | None = None,
        decoder_precision: str | None = None,
    ) -> None:
        """fast_decoder: decode prompts without a ``mask_input`` with the folded decoder
        (:class:`~napari_sam.engine.decode.folded.FoldedDecoder`: image-side work of the first
        block done once per embedding, projections folded into the few prompt tokens —
        same mathematics, logits equal to float rounding, ~2× faster) and threshold the
        masks blockwise at slice size (:class:`~napari_sam.engine.decode.upsample.MaskUpsampler`,
        equal to rounding) instead of resizing full-size float logits. None → the model's
        plan (:mod:`napari_sam.engine.plan`): on unless the model was loaded with
        ``precision="fp32"`` (the exact parity mode).

        decoder_precision: "fp32" or "bf16" for the folded decoder (bf16: a bfloat16
        copy of the decoder, ~2× faster matrix products where bf16 is native, masks
        within a few boundary pixels of fp32 — docs/benchmarks.md). None → the model's
        plan (bf16 for ``precision="auto"`` on bf16-capable hardware)."""
        if decoder_precision not in (None, "fp32", "bf16"):
            raise ValueError(
                f"decoder_precision must be 'fp32' or 'bf16', got {decoder_precision!r}"
            )
        self.model = model
        self.normalization = normalization or Normalization()
        self._encoder = Encoder(model, self.normalization)
        self._embedding: Embedding | None = None
        self._context: ImageContext | None = None
        plan = model.plan
        self.fast_decoder = plan.fast_decoder if fast_decoder is None else bool(fast_decoder)
        self.decoder_precision = decoder_precision or plan.decoder_precision
        self._folded_decoder: FoldedDecoder | None = None
        self._upsamplers = MaskUpsamplers(model.sam.image_size, model.device)

    # ---------------------------------------------------------------- image / embedding
    def prepare_input(
        self, image: np.ndarray, resize: bool = True
    ) -> tuple[torch.Tensor, tuple[int, int]]:
        """Slice → preprocessed model input (1, 3, S, S) on the device, and its (H, W);
        resize=False: a region ≤ the model input only zero-padded (a tile)."""
        return self._encoder.prepare_input(image, resize)

    def compute_embedding(self, image: np.ndarray, resize: bool = True) -> Embedding:
        """Run the image encoder on a slice (the expensive step) without changing state.

        resize=False: embed a region (H, W ≤ the model input) at native resolution,
        zero-padded (a tile of a large plane); its input size is its own size."""
        return self._encoder(image, resize)

    def set_image(self, image: np.ndarray) -> Embedding:
        """Encode a 2D slice (H, W) gray or (H, W, 3) RGB and make it current."""
        self._embedding = self.compute_embedding(image)
        self._context = None
        return self._embedding

    def set_embedding(self, embedding: Embedding) -> None:
        """Use an embedding computed earlier (e.g. from the cache); ValueError when it
        was made by another model (other weights or feature shape)."""
        self._embedding = for_model(embedding, self.model)
        self._context = None

    @property
    def embedding(self) -> Embedding | None:
        """The current slice's embedding, or None before set_image / set_embedding."""
        return self._embedding

    def reset(self) -> None:
        """Forget the current slice."""
        self._embedding = None
        self._context = None

    # ------------------------------------------------------------------------ predict
    def predict(
        self,
        points: np.ndarray | list | None = None,
        labels: np.ndarray | list | None = None,
        box: np.ndarray | list | None = None,
        mask_input: np.ndarray | None = None,
        multimask: bool = True,
        best_only: bool = False,
    ) -> PredictResult:
        """Masks for one object.

        points: (N, 2) (row, col); labels: (N,) 1 = positive, 0 = negative;
        box: (4,) (row_min, col_min, row_max, col_max); mask_input: (4h, 4w) low-res
        logits of a previous result. Returns 3 masks if ``multimask`` else 1;
        ``best_only``: only the mask with the highest predicted IoU (C = 1), and only it
        is upsampled to slice size (what an interactive preview needs; faster on big
        slices).
        """
        emb = self._require_embedding()
        prompts = validate_prompts(
            points,
            labels,
            box,
            mask_input,
            emb.original_size,
            self.model.sam.low_res_size,
            batched=False,
        )
        r = self._decode(emb, prompts, multimask, best_only)
        return PredictResult(r.masks[0], r.scores[0], r.logits[0])

    def predict_batch(
        self,
        points: np.ndarray | list | None = None,
        labels: np.ndarray | list | None = None,
        boxes: np.ndarray | list | None = None,
        mask_inputs: np.ndarray | None = None,
        multimask: bool = True,
    ) -> PredictResult:
        """B objects on the current embedding in one decoder call.

        points: (B, N, 2) (row, col); labels: (B, N); boxes: (B, 4)
        (row_min, col_min, row_max, col_max); mask_inputs: (B, 4h, 4w).
        Returns masks (B, C, H, W), scores (B, C), logits (B, C, 4h, 4w), where C is 3
        if ``multimask`` else 1. B = 0 (e.g. points (0, N, 2) with labels (0, N), or
        boxes (0, 4)) gives empty arrays of those shapes without running the decoder.
        """
        emb = self._require_embedding()
        prompts = validate_prompts(
            points,
            labels,
            boxes,
            mask_inputs,
            emb.original_size,
            self.model.sam.low_res_size,
            batched=True,
        )
        if prompts.batch_size == 0:
            return self._empty_result(emb, 3 if multimask else 1)
        return self._decode(emb, prompts, multimask)

    def _empty_result(self, emb: Embedding, channels: int) -> PredictResult:
        """The result of a batch of zero objects (shapes as for B > 0)."""
        h, w = emb.original_size
        lh, lw = self.model.sam.low_res_size
        return PredictResult(
            np.zeros((0, channels, h, w), bool),
            np.zeros((0, channels), np.float32),
            np.zeros((0, channels, lh, lw), np.float32),
        )

    def _require_embedding(self) -> Embedding:
        if self._embedding is None:
            raise RuntimeError("no image set: call set_image() or set_embedding() first")
        return self._embedding

    @torch.inference_mode()
    def _decode(
        self, emb: Embedding, prompts: Prompts, multimask: bool, best_only: bool = False
    ) -> PredictResult:
        sam, dev = self.model.sam, self.model.device
        pts = prompts.model_points(emb.original_size, emb.input_size, dev)
        boxes = prompts.model_boxes(emb.original_size, emb.input_size, dev)
        masks_in = None
        if prompts.mask_input is not None:
            masks_in = torch.as_tensor(prompts.mask_input, dtype=torch.float32, device=dev)
            masks_in = masks_in[:, None]
        sparse, dense = sam.prompt_encoder(points=pts, boxes=boxes, masks=masks_in)
        if masks_in is None and self.fast_decoder:
            low_res, iou = self._decode_folded(emb, sparse, multimask, best_only)
            best_only = False  # done: only the best outputs were decoded
        else:
            low_res, iou = sam.mask_decoder(
                image_embeddings=emb.features,
                image_pe=self.model.dense_pe,
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask,
            )
        if best_only:
            rows = torch.arange(iou.shape[0], device=iou.device)
            best = iou.argmax(dim=1)
            low_res, iou = low_res[rows, best][:, None], iou[rows, best][:, None]
        if self.fast_decoder:  # blockwise: equal to rounding, no full-size float logits
            b, m, h, w = low_res.shape
            up = self._upsamplers.get((h, w), emb.input_size, emb.original_size)
            masks = up.masks(low_res.reshape(b * m, h, w), sam.mask_threshold)
            masks = masks.reshape(b, m, *masks.shape[-2:])
        else:
            up = upscale_masks(sam, low_res, emb.input_size, emb.original_size)
            masks = up > sam.mask_threshold
        return PredictResult(
            masks.cpu().numpy(),
            iou.float().cpu().numpy(),
            low_res.float().cpu().numpy(),
        )

    def _decode_folded(
        self, emb: Embedding, sparse: torch.Tensor, multimask: bool, best_only: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """sparse (B, N, C) → low-res logits (B, M, 4h, 4w) and IoU (B, M) without a mask
        input; the image context is computed once per embedding. ``best_only``: M = 1,
        the output with the highest predicted IoU — chosen before the masks are decoded,
        so only its mask token goes through the final attention and the upscaling."""
        sam = self.model.sam
        if self._folded_decoder is None:
            self._folded_decoder = FoldedDecoder(
                sam.mask_decoder,
                sam.prompt_encoder.no_mask_embed.weight,
                sam.embedding_size,
                bf16=self.decoder_precision == "bf16",
            )
        fd = self._folded_decoder
        if self._context is None:
            self._context = fd.context(emb.features, self.model.dense_pe)
        which = slice(1, None) if multimask else slice(0, 1)
        decoded = fd.tokens(self._context, sparse)
        iou = decoded.iou[:, which]
        if not best_only:
            return fd.masks(self._context, decoded, which), iou
        best = iou.argmax(dim=1)  # (B,) index into the outputs of `which`
        first = which.start
        low = None
        for k in best.unique().tolist():  # one decode per distinct best output
            rows = torch.nonzero(best == k)[:, 0]
            sel = None if len(rows) == len(best) else rows  # all: views, no gather
            part = fd.masks(self._context, decoded, slice(first + k, first + k + 1), sel)
            if low is None:
                low = part.new_empty((len(best), *part.shape[1:]))
            low[rows] = part
        return low, iou.gather(1, best[:, None])


def upscale_masks(
    sam: torch.nn.Module,
    low_res: torch.Tensor,
    input_size: tuple[int, int],
    original_size: tuple[int, int],
) -> torch.Tensor:
    """Low-res logits (B, M, 4h, 4w) → logits at slice size (B, M, H, W).

    Same result as ``Sam.postprocess_masks``; the second resize is skipped when it would
    be the identity (slice already at model size).
    """
    if tuple(input_size) == tuple(original_size):
        size = sam.image_size
        up = torch.nn.functional.interpolate(
            low_res, (size, size), mode="bilinear", align_corners=False
        )
        return up[..., : input_size[0], : input_size[1]]
    return sam.postprocess_masks(low_res, input_size, original_size)
