"""Model configurations (published and small ones) and the builder.

Hyper-parameters live only here. A :class:`SamConfig` fully describes the architecture;
:func:`infer_config` recovers it from a state dict's tensor shapes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from .image_encoder import ImageEncoderViT
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .sam import Sam
from .transformer import TwoWayTransformer


@dataclass(frozen=True)
class SamConfig:
    """Architecture of a SAM model.

    ``encoder`` is ``"vit"`` (SAM ViT) or ``"tiny_vit"`` (MobileSAM). For ``"vit"``:
    ``embed_dim``, ``depth``, ``num_heads``, ``global_attn_indexes``, ``window_size``,
    ``patch_size``, ``mlp_ratio``. For ``"tiny_vit"``: ``tv_embed_dims``, ``tv_depths``,
    ``tv_num_heads``, ``tv_window_sizes``. The embedding grid is
    ``image_size // patch_size`` (ViT) or ``image_size // 16`` (TinyViT).
    """

    encoder: str = "vit"
    image_size: int = 1024
    patch_size: int = 16
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    window_size: int = 14
    global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    tv_embed_dims: tuple[int, ...] = (64, 128, 160, 320)
    tv_depths: tuple[int, ...] = (2, 2, 6, 2)
    tv_num_heads: tuple[int, ...] = (2, 4, 5, 10)
    tv_window_sizes: tuple[int, ...] = (7, 7, 14, 7)
    prompt_embed_dim: int = 256
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_num_heads: int = 8
    decoder_mlp_dim: int = 2048
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def embedding_size(self) -> int:
        """Side of the square image-embedding grid."""
        stride = self.patch_size if self.encoder == "vit" else 16
        return self.image_size // stride

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON / checkpoint friendly: tuples become lists)."""
        d = dataclasses.asdict(self)
        d.pop("extra")
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SamConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown SAM config keys: {sorted(unknown)}")
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**kw)


CONFIGS: Mapping[str, SamConfig] = {
    "vit_b": SamConfig(),
    "vit_l": SamConfig(embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23)),
    "vit_h": SamConfig(embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31)),
    "vit_t": SamConfig(encoder="tiny_vit"),
}
"""The published architectures (checkpoints of these types are downloadable)."""

DEMO_CONFIG = SamConfig(
    image_size=256,
    patch_size=16,
    embed_dim=128,
    depth=4,
    num_heads=4,
    window_size=8,
    global_attn_indexes=(1, 3),
    prompt_embed_dim=128,
    decoder_mlp_dim=512,
    iou_head_hidden_dim=128,
)
"""The packaged demo model (``napari-sam train --arch demo``): a standard SAM ViT, just
small (256² input, 16 × 16 token grid)."""

TINY_CONFIG = SamConfig(
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
"""The tiny random-weight SAM of the unit tests (64² input, 8 × 8 token grid):
milliseconds per slice on a CPU."""

TINY_VIT_TEST_CONFIG = SamConfig(
    encoder="tiny_vit",
    image_size=256,
    tv_embed_dims=(16, 32, 48, 64),
    tv_depths=(1, 1, 2, 1),
    tv_num_heads=(1, 2, 3, 4),
    tv_window_sizes=(7, 7, 7, 7),
    decoder_depth=1,
    decoder_mlp_dim=64,
    iou_head_hidden_dim=64,
)
"""A small TinyViT (MobileSAM) SAM for the encoder's parity tests (256² input)."""

SMALL_CONFIGS: Mapping[str, SamConfig] = {
    "demo": DEMO_CONFIG,
    "tiny": TINY_CONFIG,
    "tiny_vit_test": TINY_VIT_TEST_CONFIG,
}
"""Architectures without a published checkpoint (training from scratch, tests)."""


def build_sam(config: SamConfig | str) -> Sam:
    """Build a randomly initialised SAM from a config or a published type name."""
    if isinstance(config, str):
        if config not in CONFIGS:
            raise ValueError(f"unknown model type {config!r}; known: {sorted(CONFIGS)}")
        config = CONFIGS[config]
    grid = config.embedding_size
    if config.encoder == "vit":
        encoder: torch.nn.Module = ImageEncoderViT(
            img_size=config.image_size,
            patch_size=config.patch_size,
            embed_dim=config.embed_dim,
            depth=config.depth,
            num_heads=config.num_heads,
            mlp_ratio=config.mlp_ratio,
            out_chans=config.prompt_embed_dim,
            window_size=config.window_size,
            global_attn_indexes=tuple(config.global_attn_indexes),
        )
    elif config.encoder == "tiny_vit":
        from .tiny_vit import TinyViT

        encoder = TinyViT(
            img_size=config.image_size,
            embed_dims=list(config.tv_embed_dims),
            depths=list(config.tv_depths),
            num_heads=list(config.tv_num_heads),
            window_sizes=list(config.tv_window_sizes),
            out_chans=config.prompt_embed_dim,
        )
    else:
        raise ValueError(f"unknown encoder {config.encoder!r}; expected 'vit' or 'tiny_vit'")
    dim = config.prompt_embed_dim
    prompt_encoder = PromptEncoder(
        embed_dim=dim,
        image_embedding_size=(grid, grid),
        input_image_size=(config.image_size, config.image_size),
        mask_in_chans=config.mask_in_chans,
    )
    decoder = MaskDecoder(
        transformer_dim=dim,
        transformer=TwoWayTransformer(
            depth=config.decoder_depth,
            embedding_dim=dim,
            num_heads=config.decoder_num_heads,
            mlp_dim=config.decoder_mlp_dim,
        ),
        num_multimask_outputs=config.num_multimask_outputs,
        iou_head_depth=config.iou_head_depth,
        iou_head_hidden_dim=config.iou_head_hidden_dim,
    )
    return Sam(encoder, prompt_encoder, decoder).eval()


def _count(prefix: str, keys: list[str]) -> int:
    """Number of numbered children ``prefix.N.`` present in ``keys``."""
    idx = {int(k[len(prefix) :].split(".")[0]) for k in keys if k.startswith(prefix)}
    return max(idx) + 1 if idx else 0


def infer_config(state_dict: Mapping[str, torch.Tensor], **overrides: Any) -> SamConfig:
    """Recover the architecture from tensor shapes of a (prefix-free) SAM state dict.

    Attention head counts of the decoder cannot be seen in shapes; they default to SAM's
    (8) unless given in ``overrides`` (or stored in the checkpoint's ``config``).
    Raises ``ValueError`` when the dict does not look like a SAM model.
    """
    keys = list(state_dict)
    try:
        dec: dict[str, Any] = {
            "prompt_embed_dim": state_dict["prompt_encoder.no_mask_embed.weight"].shape[1],
            "mask_in_chans": state_dict["prompt_encoder.mask_downscaling.3.weight"].shape[0],
            "decoder_depth": _count("mask_decoder.transformer.layers.", keys),
            "decoder_mlp_dim": state_dict[
                "mask_decoder.transformer.layers.0.mlp.lin1.weight"
            ].shape[0],
            "num_multimask_outputs": state_dict["mask_decoder.mask_tokens.weight"].shape[0] - 1,
            "iou_head_depth": _count("mask_decoder.iou_prediction_head.layers.", keys),
            "iou_head_hidden_dim": state_dict[
                "mask_decoder.iou_prediction_head.layers.0.weight"
            ].shape[0],
        }
        if "image_encoder.patch_embed.proj.weight" in state_dict:
            enc = _infer_vit(state_dict, keys)
        elif any(k.startswith("image_encoder.layers.") for k in keys):
            from .tiny_vit import infer_tiny_vit_config

            enc = infer_tiny_vit_config(state_dict)
        else:
            raise KeyError("image_encoder.patch_embed.proj.weight")
    except KeyError as err:
        raise ValueError(
            f"this is not a SAM state dict: tensor {err.args[0]!r} is missing"
        ) from None
    return SamConfig(**{**enc, **dec, **overrides})


def _infer_vit(state_dict: Mapping[str, torch.Tensor], keys: list[str]) -> dict[str, Any]:
    embed_dim, _, patch, _ = state_dict["image_encoder.patch_embed.proj.weight"].shape
    depth = _count("image_encoder.blocks.", keys)
    grid = state_dict["image_encoder.pos_embed"].shape[1]
    head_dim = state_dict["image_encoder.blocks.0.attn.rel_pos_h"].shape[1]
    hidden = state_dict["image_encoder.blocks.0.mlp.lin1.weight"].shape[0]
    global_idx, window = [], 14
    for i in range(depth):
        n = state_dict[f"image_encoder.blocks.{i}.attn.rel_pos_h"].shape[0]
        if n == 2 * grid - 1:
            global_idx.append(i)
        else:
            window = (n + 1) // 2
    return {
        "encoder": "vit",
        "image_size": int(grid * patch),
        "patch_size": int(patch),
        "embed_dim": int(embed_dim),
        "depth": depth,
        "num_heads": int(embed_dim // head_dim),
        "mlp_ratio": hidden / embed_dim,
        "window_size": window,
        "global_attn_indexes": tuple(global_idx),
    }


def config_name(config: SamConfig) -> str | None:
    """The published type name whose architecture equals ``config``, else None."""
    for name, c in CONFIGS.items():
        if c == config:
            return name
    return None
