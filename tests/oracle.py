"""Test helpers around the official ``segment-anything`` package (the oracle).

Builds the official model for any :class:`SamConfig`, randomises its weights
deterministically and hands the state dict to our implementation.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from napari_sam.engine.loader import SamModel, wrap_model
from napari_sam.model.build import SamConfig
from napari_sam.model.checkpoint import sam_from_state_dict


def build_official(cfg: SamConfig, seed: int = 0) -> nn.Module:
    """The official Sam with ``cfg``'s architecture and randomised (seeded) weights."""
    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    assert cfg.encoder == "vit"
    torch.manual_seed(seed)
    grid = cfg.image_size // cfg.patch_size
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=cfg.depth,
            embed_dim=cfg.embed_dim,
            img_size=cfg.image_size,
            mlp_ratio=cfg.mlp_ratio,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            num_heads=cfg.num_heads,
            patch_size=cfg.patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=tuple(cfg.global_attn_indexes),
            window_size=cfg.window_size,
            out_chans=cfg.prompt_embed_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=cfg.prompt_embed_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(cfg.image_size, cfg.image_size),
            mask_in_chans=cfg.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=cfg.num_multimask_outputs,
            transformer=TwoWayTransformer(
                depth=cfg.decoder_depth,
                embedding_dim=cfg.prompt_embed_dim,
                mlp_dim=cfg.decoder_mlp_dim,
                num_heads=cfg.decoder_num_heads,
            ),
            transformer_dim=cfg.prompt_embed_dim,
            iou_head_depth=cfg.iou_head_depth,
            iou_head_hidden_dim=cfg.iou_head_hidden_dim,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    randomise_(sam, seed)
    return sam.eval()


@torch.no_grad()
def randomise_(module: nn.Module, seed: int) -> None:
    """Perturb every parameter (zero-initialised ones too: pos_embed, rel_pos) so that
    each of them influences the output."""
    g = torch.Generator().manual_seed(seed + 1)
    for p in module.parameters():
        p.add_(torch.randn(p.shape, generator=g) * 0.02)


def ours_from_official(
    official: nn.Module, cfg: SamConfig | None = None, precision: str = "fp32"
) -> SamModel:
    """Our model with the official model's state dict, loaded with a strict key check."""
    sam, config = sam_from_state_dict(official.state_dict(), cfg)
    return wrap_model(sam, config, "oracle-random", device="cpu", precision=precision)
