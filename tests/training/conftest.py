from __future__ import annotations

import pytest

from napari_sam.model.build import SamConfig

TINY = SamConfig(
    image_size=64,
    patch_size=8,
    embed_dim=32,
    depth=2,
    num_heads=2,
    window_size=4,
    global_attn_indexes=(1,),
    prompt_embed_dim=32,
    mask_in_chans=4,
    decoder_mlp_dim=64,
    decoder_num_heads=4,
    iou_head_hidden_dim=32,
)


@pytest.fixture
def tiny_config() -> SamConfig:
    return TINY


@pytest.fixture(autouse=True)
def one_thread():
    """Training tests use one torch thread: on a shared 2-core machine two threads are
    several times slower (oversubscription)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
