"""ViT encoder attention paths: the in-place inference path (one reused scratch buffer)
is bit-identical to the plain one, sdpa agrees within float tolerance, training
(autograd) still works, and the scratch buffer is reused rather than re-allocated."""

from __future__ import annotations

import torch

from napari_sam.model.common import Scratch, set_attention_impl
from napari_sam.model.image_encoder import ImageEncoderViT


def encoder(seed: int = 0, weights_std: float | None = None) -> ImageEncoderViT:
    """img 80 / patch 8 → 10 × 10 grid; window 4 pads to 12 × 12; block 1 is global.
    weights_std: also redraw every other parameter with this std (the scale of trained
    weights)."""
    torch.manual_seed(seed)
    enc = ImageEncoderViT(
        img_size=80,
        patch_size=8,
        embed_dim=32,
        depth=3,
        num_heads=4,
        out_chans=16,
        window_size=4,
        global_attn_indexes=(1,),
    ).eval()
    with torch.no_grad():  # non-zero rel-pos tables and position embedding
        for name, p in enc.named_parameters():
            if "rel_pos" in name or "pos_embed" in name:
                p.normal_(0, 0.5)
            elif weights_std is not None:
                p.normal_(0, weights_std)
    return enc


def test_inplace_inference_is_bit_identical_to_the_plain_path():
    enc = encoder()
    set_attention_impl(enc, "exact")
    x = torch.randn(2, 3, 80, 80)
    with torch.enable_grad():  # grad mode → no scratch, out-of-place ops
        plain = enc(x).detach()
    with torch.inference_mode():
        inplace = enc(x)
    assert torch.equal(plain, inplace)


def test_sdpa_matches_exact_within_tolerance():
    enc = encoder(1)
    x = torch.randn(1, 3, 80, 80)
    with torch.inference_mode():
        set_attention_impl(enc, "exact")
        exact = enc(x)
        set_attention_impl(enc, "sdpa")
        fused = enc(x)
    with torch.enable_grad():
        fused_plain = enc(x).detach()
    torch.testing.assert_close(fused, exact, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fused_plain, exact, atol=1e-5, rtol=1e-5)


def test_training_backward_still_works():
    enc = encoder(2).train()
    set_attention_impl(enc, "exact")
    out = enc(torch.randn(1, 3, 80, 80))
    out.square().mean().backward()
    grads = [p.grad for p in enc.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert enc.blocks[1].attn.rel_pos_h.grad.abs().sum() > 0


def test_scratch_reuses_and_grows_one_buffer():
    s = Scratch()
    a = s.tensor((4, 10, 10), torch.float32, torch.device("cpu"))
    b = s.tensor((2, 5), torch.bfloat16, torch.device("cpu"))
    assert a.data_ptr() == b.data_ptr() and b.dtype == torch.bfloat16 and b.shape == (2, 5)
    c = s.tensor((8, 10, 10), torch.float32, torch.device("cpu"))  # larger: new buffer
    d = s.tensor((1,), torch.float32, torch.device("cpu"))
    assert c.shape == (8, 10, 10) and d.data_ptr() == c.data_ptr()
