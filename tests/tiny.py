"""The tiny random-weight SAM used by unit tests (64² input, 8×8 token grid):
milliseconds per slice on a CPU."""

from __future__ import annotations

import torch

from napari_sam.engine.loader import SamModel, wrap_model
from napari_sam.model.build import SamConfig, build_sam

TINY = SamConfig(
    image_size=64,
    patch_size=8,
    embed_dim=32,
    depth=2,
    num_heads=2,
    window_size=4,
    global_attn_indexes=(1,),
    prompt_embed_dim=32,
    decoder_mlp_dim=64,
    decoder_num_heads=2,
    iou_head_hidden_dim=32,
)


def make_tiny(seed: int = 0, precision: str = "fp32") -> SamModel:
    """A fresh tiny model with seeded random weights on the CPU."""
    torch.manual_seed(seed)
    return wrap_model(build_sam(TINY), TINY, "tiny", "cpu", precision)
