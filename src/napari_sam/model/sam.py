"""The SAM module: image encoder + prompt encoder + mask decoder, plus pre/post-processing
of tensors that does not depend on the prompt."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


class Sam(nn.Module):
    """Segment Anything model.

    ``pixel_mean`` / ``pixel_std`` are non-persistent buffers, so the state dict holds
    exactly the keys of the official checkpoints.
    """

    mask_threshold: float = 0.0

    def __init__(
        self,
        image_encoder: nn.Module,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
        pixel_mean: tuple[float, float, float] = PIXEL_MEAN,
        pixel_std: tuple[float, float, float] = PIXEL_STD,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @property
    def image_size(self) -> int:
        """Side of the square, padded model input (1024 for SAM)."""
        return int(self.prompt_encoder.input_image_size[0])

    @property
    def embedding_size(self) -> tuple[int, int]:
        """(h, w) token grid of the image embedding (64 × 64 for SAM)."""
        return tuple(self.prompt_encoder.image_embedding_size)  # type: ignore[return-value]

    @property
    def low_res_size(self) -> tuple[int, int]:
        """(h, w) of the low-res mask logits = 4 × the embedding grid (256 × 256 for SAM)."""
        return tuple(self.prompt_encoder.mask_input_size)  # type: ignore[return-value]

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) float RGB in [0, 255], h, w ≤ image_size → normalised, zero-padded
        (bottom/right) to (B, 3, image_size, image_size)."""
        x = (x - self.pixel_mean) / self.pixel_std
        h, w = x.shape[-2:]
        return F.pad(x, (0, self.image_size - w, 0, self.image_size - h))

    def postprocess_masks(
        self,
        masks: torch.Tensor,
        input_size: tuple[int, int],
        original_size: tuple[int, int],
    ) -> torch.Tensor:
        """Low-res logits (B, M, 4h, 4w) → logits at the original slice size (B, M, H, W).

        input_size: (h, w) of the resized image before padding; original_size: (H, W).
        """
        masks = F.interpolate(
            masks, (self.image_size, self.image_size), mode="bilinear", align_corners=False
        )
        masks = masks[..., : input_size[0], : input_size[1]]
        return F.interpolate(masks, original_size, mode="bilinear", align_corners=False)
