"""Tests for the TinyViT (MobileSAM, ``vit_t``) image encoder.

Parity tests load the randomised state dict of the reference implementation (the
``mobilesam-mirror`` package, module ``mobile_sam``) into ours with a strict key check and
compare outputs. Tolerance: ``atol = 1e-4 * max|reference|``, ``rtol = 1e-4`` (float32;
measured differences are around 1e-6 of the output scale).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
import torch
from torch import nn

from napari_sam.model.build import CONFIGS, TINY_VIT_TEST_CONFIG, build_sam, infer_config
from napari_sam.model.tiny_vit import TinyViT, attention_bias_index, infer_tiny_vit_config

from requires import require

pytestmark = [
    pytest.mark.filterwarnings("ignore:Importing from timm:FutureWarning"),
    pytest.mark.filterwarnings("ignore:Overwriting tiny_vit:UserWarning"),
]

ATOL_REL = 1e-4
RTOL = 1e-4

# The small config of the brief (TINY_VIT_TEST_CONFIG): its last width is not one the
# reference recognises for its stride-1 last merge, so the reference needs a patch (see
# _ref_tiny_vit).
SMALL_SAM = TINY_VIT_TEST_CONFIG
SMALL: dict[str, Any] = dict(
    img_size=SMALL_SAM.image_size,
    embed_dims=SMALL_SAM.tv_embed_dims,
    depths=SMALL_SAM.tv_depths,
    num_heads=SMALL_SAM.tv_num_heads,
    window_sizes=SMALL_SAM.tv_window_sizes,
)
# Width 320: the reference picks the stride-1 last merge itself (the patch is a no-op);
# window 14 on the 16 × 16 grid of stage 2 exercises padding.
SMALL_320: dict[str, Any] = dict(
    img_size=256,
    embed_dims=(16, 32, 48, 320),
    depths=(1, 1, 2, 1),
    num_heads=(1, 2, 3, 10),
    window_sizes=(7, 7, 14, 7),
)


def _randomise(sd: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Random values for every float tensor, so that batch-norm statistics, affine
    parameters, biases and attention biases all matter (variance-preserving weights)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, t in sd.items():
        if not t.is_floating_point():
            out[k] = t.clone()
        elif k.endswith("running_var"):
            out[k] = torch.rand(t.shape, generator=g) + 0.5
        elif k.endswith("running_mean"):
            out[k] = 0.2 * torch.randn(t.shape, generator=g)
        elif t.ndim == 1 and k.endswith("weight"):
            out[k] = 1 + 0.2 * torch.randn(t.shape, generator=g)
        elif t.ndim == 1:
            out[k] = 0.1 * torch.randn(t.shape, generator=g)
        elif k.endswith("attention_biases"):
            out[k] = torch.randn(t.shape, generator=g)
        else:
            out[k] = torch.randn(t.shape, generator=g) / math.sqrt(t[0].numel())
    return out


def _ref_tiny_vit(cfg: dict[str, Any]) -> nn.Module:
    """Reference TinyViT for ``cfg``.

    The reference picks the stride-1 last merge by width (320/448/576 only); for other
    widths its last stage would not fit, so the stride is set the way ours always has it.
    """
    ms = require("mobile_sam.modeling")
    ref = ms.TinyViT(
        img_size=cfg["img_size"],
        embed_dims=list(cfg["embed_dims"]),
        depths=list(cfg["depths"]),
        num_heads=list(cfg["num_heads"]),
        window_sizes=list(cfg["window_sizes"]),
        drop_path_rate=0.0,
    )
    ref.layers[-2].downsample.conv2.c.stride = (1, 1)
    return ref


def _ref_encode(ref: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Reference encoder output; its own ``forward`` hard-codes a 64 × 64 grid (1024 input)."""
    if x.shape[-1] == 1024:
        return ref(x)
    y = ref.patch_embed(x)
    for layer in ref.layers:
        y = layer(y)
    b, n, c = y.shape
    g = math.isqrt(n)
    return ref.neck(y.view(b, g, g, c).permute(0, 3, 1, 2))


def _ref_sam_small() -> nn.Module:
    ms = require("mobile_sam.modeling")
    c, grid = SMALL_SAM, SMALL_SAM.embedding_size
    return ms.Sam(
        image_encoder=_ref_tiny_vit(SMALL),
        prompt_encoder=ms.PromptEncoder(
            embed_dim=c.prompt_embed_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(c.image_size, c.image_size),
            mask_in_chans=c.mask_in_chans,
        ),
        mask_decoder=ms.MaskDecoder(
            num_multimask_outputs=3,
            transformer=ms.TwoWayTransformer(
                depth=c.decoder_depth,
                embedding_dim=c.prompt_embed_dim,
                mlp_dim=c.decoder_mlp_dim,
                num_heads=c.decoder_num_heads,
            ),
            transformer_dim=c.prompt_embed_dim,
            iou_head_depth=c.iou_head_depth,
            iou_head_hidden_dim=c.iou_head_hidden_dim,
        ),
    )


def _ref_sam_vit_t() -> nn.Module:
    require("mobile_sam.modeling")
    from mobile_sam.build_sam import build_sam_vit_t

    return build_sam_vit_t()


def _assert_same_keys(ours: nn.Module, ref: nn.Module) -> None:
    a, b = ours.state_dict(), ref.state_dict()
    assert set(a) == set(b)
    assert {k: a[k].shape for k in a} == {k: b[k].shape for k in b}


def _assert_close(ours: torch.Tensor, ref: torch.Tensor) -> None:
    assert ours.shape == ref.shape
    atol = ATOL_REL * ref.abs().max().item()
    torch.testing.assert_close(ours, ref, atol=atol, rtol=RTOL)


def _load_ref(ref: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    sd = _randomise(ref.state_dict(), seed)
    ref.load_state_dict(sd, strict=True)
    ref.eval()
    return sd


# ---------------------------------------------------------------------------- own model


def test_output_shape_and_out_chans() -> None:
    torch.manual_seed(0)
    model = TinyViT(**SMALL, out_chans=32).eval()
    with torch.no_grad():
        y = model(torch.randn(2, 3, 256, 256))
    assert y.shape == (2, 32, 16, 16)
    assert torch.isfinite(y).all()


def test_attention_bias_index() -> None:
    w = 5
    idx = attention_bias_index(w)
    assert idx.shape == (w * w, w * w)
    assert set(idx.unique().tolist()) == set(range(w * w))
    assert torch.equal(idx, idx.T)
    for (y1, x1), (y2, x2) in [((0, 0), (4, 4)), ((1, 3), (2, 0)), ((4, 1), (0, 2))]:
        assert idx[y1 * w + x1, y2 * w + x2] == abs(y1 - y2) * w + abs(x1 - x2)


def test_state_dict_holds_no_derived_buffers() -> None:
    keys = TinyViT(**SMALL).state_dict()
    assert not [k for k in keys if "attention_bias_idxs" in k]
    assert "layers.1.blocks.0.attn.attention_biases" in keys
    assert "layers.0.blocks.0.conv1.bn.num_batches_tracked" in keys
    assert {"norm_head.weight", "head.weight", "neck.0.weight"} <= set(keys)


def test_batch_norm_uses_running_stats_in_train_mode() -> None:
    torch.manual_seed(0)
    model = TinyViT(**SMALL)
    model.load_state_dict(_randomise(model.state_dict(), 1))
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        train_out = model.train()(x)
        eval_out = model.eval()(x)
    assert torch.equal(train_out, eval_out)


def test_rejects_inconsistent_stage_lists() -> None:
    with pytest.raises(ValueError, match="one entry per stage"):
        TinyViT(embed_dims=(16, 32), depths=(1, 1, 1))
    with pytest.raises(ValueError, match="multiple of 16"):
        TinyViT(**{**SMALL, "img_size": 250})


def test_infer_config_round_trip_own_models() -> None:
    assert infer_config(build_sam("vit_t").state_dict()) == CONFIGS["vit_t"]
    small = build_sam(SMALL_SAM).state_dict()
    assert infer_config(small, image_size=256) == SMALL_SAM
    # the input size is not in the weights: the default is MobileSAM's
    assert infer_config(small) == dataclasses.replace(SMALL_SAM, image_size=1024)


def test_infer_missing_tensor() -> None:
    sd = build_sam(SMALL_SAM).state_dict()
    del sd["image_encoder.layers.2.blocks.0.attn.attention_biases"]
    with pytest.raises(KeyError, match="attention_biases"):
        infer_tiny_vit_config(sd)
    with pytest.raises(ValueError, match="attention_biases"):
        infer_config(sd)


# ------------------------------------------------------------------------------ parity


@pytest.mark.parity
@pytest.mark.parametrize("cfg", [SMALL, SMALL_320], ids=["small", "small_320"])
def test_tiny_vit_parity_small(cfg: dict[str, Any]) -> None:
    torch.manual_seed(0)
    ref = _ref_tiny_vit(cfg)
    sd = _load_ref(ref, seed=1)
    ours = TinyViT(**cfg)
    _assert_same_keys(ours, ref)
    ours.load_state_dict(sd, strict=True)
    ours.eval()
    x = torch.randn(2, 3, cfg["img_size"], cfg["img_size"])
    with torch.no_grad():
        _assert_close(ours(x), _ref_encode(ref, x))
    ref_bufs = dict(ref.named_buffers())
    idxs = {k: b for k, b in ours.named_buffers() if k.endswith("attention_bias_idxs")}
    assert idxs
    for k, b in idxs.items():
        assert torch.equal(b, ref_bufs[k])


def _decode(model: nn.Module, emb: torch.Tensor, size: int) -> tuple[torch.Tensor, ...]:
    """Masks and IoU of one point + one box prompt on an image embedding."""
    points = (torch.tensor([[[0.3 * size, 0.6 * size]]]), torch.tensor([[1]]))
    boxes = torch.tensor([[0.1 * size, 0.2 * size, 0.7 * size, 0.9 * size]])
    sparse, dense = model.prompt_encoder(points=points, boxes=boxes, masks=None)
    return model.mask_decoder(
        image_embeddings=emb,
        image_pe=model.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=True,
    )


def _compare_sam(ours: nn.Module, ref: nn.Module, x: torch.Tensor) -> None:
    """Image embeddings, then the decoder outputs, each model on its own embedding."""
    with torch.no_grad():
        emb_ref = _ref_encode(ref.image_encoder, x)
        emb = ours.image_encoder(x)
        _assert_close(emb, emb_ref)
        size = x.shape[-1]
        for a, b in zip(_decode(ours, emb, size), _decode(ref, emb_ref, size), strict=True):
            _assert_close(a, b)


@pytest.mark.parity
def test_mobile_sam_parity_small() -> None:
    torch.manual_seed(0)
    ref = _ref_sam_small()
    sd = _load_ref(ref, seed=2)
    ours = build_sam(SMALL_SAM)
    _assert_same_keys(ours, ref)
    ours.load_state_dict(sd, strict=True)
    _compare_sam(ours, ref, torch.randn(1, 3, 256, 256))
    assert infer_config(sd, image_size=256) == SMALL_SAM


@pytest.mark.parity
def test_mobile_sam_parity_vit_t() -> None:
    """Published vit_t at 1024 × 1024, one image (the reference's own forward)."""
    torch.manual_seed(0)
    ref = _ref_sam_vit_t()
    sd = _load_ref(ref, seed=3)
    assert infer_config(sd) == CONFIGS["vit_t"]
    ours = build_sam("vit_t")
    _assert_same_keys(ours, ref)
    ours.load_state_dict(sd, strict=True)
    _compare_sam(ours, ref, torch.randn(1, 3, 1024, 1024))


@pytest.mark.parity
@pytest.mark.parametrize("cfg", [SMALL, SMALL_320], ids=["small", "small_320"])
def test_fast_path_agrees_with_the_reference(cfg: dict[str, Any]) -> None:
    """Folded batch norms + channels-last convolutions (outside the exact mode): the
    reference's output to float rounding; the state dict (names, values) is untouched and
    switching back gives the reference operation order again."""
    from napari_sam.model.tiny_vit import set_fast_path

    torch.manual_seed(0)
    ref = _ref_tiny_vit(cfg)
    sd = _load_ref(ref, seed=4)
    ours = TinyViT(**cfg)
    ours.load_state_dict(sd, strict=True)
    ours.eval()
    x = torch.randn(1, 3, cfg["img_size"], cfg["img_size"])
    with torch.no_grad():
        exact = ours(x)
        set_fast_path(ours, True)
        fast = ours(x)
        set_fast_path(ours, False)
        again = ours(x)
    _assert_close(fast, _ref_encode(ref, x))
    assert torch.equal(again, exact)
    assert not torch.equal(fast, exact)  # the fast path really ran
    assert {k: v for k, v in ours.state_dict().items()}.keys() == sd.keys()


def test_load_model_uses_the_fast_path_outside_the_exact_mode() -> None:
    from napari_sam.engine.loader import wrap_model
    from napari_sam.model.tiny_vit import Conv2dBN

    def folded(model) -> set[bool]:
        return {m._folded is not None for m in model.sam.modules() if isinstance(m, Conv2dBN)}

    torch.manual_seed(0)
    assert folded(wrap_model(build_sam(SMALL_SAM), SMALL_SAM, "t", "cpu", "fp32")) == {False}
    assert folded(wrap_model(build_sam(SMALL_SAM), SMALL_SAM, "t", "cpu", "auto")) == {True}


def test_every_convolution_takes_the_fused_path(monkeypatch) -> None:
    """Fast path on a CPU with oneDNN: every folded convolution, the stem's 3-channel one
    included, runs as one fused oneDNN convolution — its output stays channels-last, so
    the next convolution is fused too (a stem answered in NCHW once sent all 26 later
    convolutions to the plain path, 1.5× slower)."""
    from napari_sam.model import tiny_vit as tv

    if not torch.backends.mkldnn.is_available():  # pragma: no cover - CPU builds have it
        pytest.skip("no oneDNN in this torch build")
    taken: list[bool] = []
    real = tv.fused_conv

    def spy(x, *args):
        y = real(x, *args)
        taken.append(y is not None)
        if y is not None:
            assert y.is_contiguous(memory_format=torch.channels_last)
        return y

    monkeypatch.setattr(tv, "fused_conv", spy)
    torch.manual_seed(0)
    ours = TinyViT(**SMALL).eval()
    tv.set_fast_path(ours, True)
    with torch.no_grad():
        ours(torch.randn(1, 3, SMALL["img_size"], SMALL["img_size"]))
    n_convs = sum(isinstance(m, tv.Conv2dBN) for m in ours.modules())
    assert len(taken) == n_convs and all(taken)
    # the stem on an image as the engine hands it over: an (H, W, 3) array seen as
    # (1, 3, H, W) — channels-last, batch stride 3 — which oneDNN answered in NCHW
    stem = tv.Conv2dBN(3, 32, 3, 2).eval()
    stem.fold(True)
    taken.clear()
    x = torch.randn(256, 256, 3).permute(2, 0, 1)[None]
    assert x.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        y = stem(x, act="gelu")
    assert taken == [True] and y.is_contiguous(memory_format=torch.channels_last)
