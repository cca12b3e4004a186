"""Helpers for the store tests: the tiny random-weight SAM config, test volumes and a
read-recording array."""

from __future__ import annotations

import numpy as np
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
    torch.manual_seed(seed)
    return wrap_model(build_sam(TINY), TINY, "tiny", "cpu", precision)


def volume(shape=(6, 40, 50), seed: int = 0, dtype=np.uint16) -> np.ndarray:
    """Blobby uint16 volume, different in every slice."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 4000, shape).astype(dtype)


class CountingArray:
    """Array-like that records every key it is indexed with (laziness checks)."""

    def __init__(self, data: np.ndarray) -> None:
        self.data, self.shape, self.dtype, self.ndim = data, data.shape, data.dtype, data.ndim
        self.keys: list = []

    def __getitem__(self, key):
        self.keys.append(key)
        return self.data[key]
