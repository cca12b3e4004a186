"""The image encoder's output for one slice, and the encoder step that makes it.

:class:`Encoder` is the expensive half of SAM: normalise a slice to uint8 RGB
(:mod:`.image`), resize its longest side to the model's input size (:mod:`.transforms`),
pad, run the image encoder. Its :class:`Embedding` is what the mask decoder needs
(:mod:`.decode`), what the embedding store keeps (``napari_sam.store``) and what the
automatic mask generator and the propagator take per slice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .image import Normalization, to_uint8_rgb
from .loader import SamModel, short_hash
from .transforms import resize_rgb, resized_shape


@dataclass(frozen=True)
class Embedding:
    """What the mask decoder needs from the image encoder for one slice.

    features: (1, C, h, w) float32 image embedding.
    original_size: (H, W) of the slice. input_size: (h', w') of the resized slice
    before padding. model_hash: weights hash of the model that computed it.
    """

    features: torch.Tensor
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    model_hash: str


class Encoder:
    """Slice → :class:`Embedding` with one model and one intensity normalisation.

    Stateless apart from its settings: one encoder may serve several threads.
    """

    def __init__(self, model: SamModel, normalization: Normalization | None = None) -> None:
        self.model = model
        self.normalization = normalization or Normalization()

    def prepare_input(
        self, image: np.ndarray, resize: bool = True
    ) -> tuple[torch.Tensor, tuple[int, int]]:
        """Slice (H, W) / (H, W, 3|4) of any dtype → preprocessed model input
        (1, 3, S, S) on the model's device, and the slice's (H, W).

        resize=False: a region no larger than the model input (a tile, docs/tiling.md)
        is only zero-padded, at native resolution (ValueError when it does not fit)."""
        rgb = to_uint8_rgb(image, self.normalization)
        size = self.model.sam.image_size
        if resize:
            rgb_in = resize_rgb(rgb, size)
        elif max(rgb.shape[:2]) > size:
            raise ValueError(
                f"a region of {rgb.shape[:2]} px does not fit the model input of {size} px "
                "without resizing"
            )
        else:
            rgb_in = rgb
        x = torch.as_tensor(rgb_in, device=self.model.device).permute(2, 0, 1)[None]
        return self.model.sam.preprocess(x.float()), (rgb.shape[0], rgb.shape[1])

    def __call__(self, image: np.ndarray, resize: bool = True) -> Embedding:
        """Run the image encoder on a slice (the expensive step); resize: see
        :meth:`prepare_input` (False: a tile at native resolution, its input size is
        its own size)."""
        return self.many([image], resize)[0]

    def many(self, images: Sequence[np.ndarray], resize: bool = True) -> list[Embedding]:
        """The slices' embeddings from ONE encoder call (a batch; slices of any sizes —
        each is resized (or, resize=False, only padded) to the model input). Outside the
        exact mode batching changes results only by float rounding (matrix-product
        blocking); callers keep one slice per call in the exact mode
        (:func:`~.plan.precompute_batch`)."""
        if not images:
            return []
        prepared = [self.prepare_input(image, resize) for image in images]
        features = self.model.encode(torch.cat([x for x, _ in prepared]))
        size = self.model.sam.image_size
        # each embedding its own tensor (a view would keep the whole batch alive)
        parts = features.split(1) if len(prepared) > 1 else (features,)
        return [
            Embedding(part.clone() if len(prepared) > 1 else part, original,
                      resized_shape(*original, size) if resize else original,
                      self.model.weights_hash)
            for part, (_, original) in zip(parts, prepared, strict=True)
        ]  # fmt: skip


def for_model(embedding: Embedding, model: SamModel) -> Embedding:
    """``embedding`` checked against ``model`` (feature shape (1, C, h, w) and weights
    hash; ValueError naming the difference) with its features float32 on the model's
    device."""
    grid = model.sam.embedding_size
    expected = (1, model.config.prompt_embed_dim, *grid)
    if tuple(embedding.features.shape) != expected:
        raise ValueError(
            f"embedding features have shape {tuple(embedding.features.shape)}, "
            f"this model needs {expected}"
        )
    if embedding.model_hash != model.weights_hash:
        raise ValueError(
            "embedding was computed with other model weights "
            f"({short_hash(embedding.model_hash)} ≠ {short_hash(model.weights_hash)}); recompute it"
        )
    return Embedding(
        embedding.features.to(model.device, torch.float32),
        tuple(embedding.original_size),
        tuple(embedding.input_size),
        embedding.model_hash,
    )
