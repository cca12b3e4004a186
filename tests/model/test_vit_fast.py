"""The ViT encoder's fast inference path (model/vit_fast.py): the same embeddings as the
reference path up to float rounding (windows with padding, global attention in chunks of
pairs and of query rows), new weights take effect, autograd and the exact mode
keep the reference path, and the plan turns it on only outside the exact mode for fp32 on
a CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_image_encoder import encoder as shared_encoder

from napari_sam.engine.decode import Predictor
from napari_sam.engine.loader import load_model, wrap_model
from napari_sam.engine.plan import resolve_plan
from napari_sam.model import vit_fast
from napari_sam.model.common import set_attention_impl
from napari_sam.model.image_encoder import ImageEncoderViT, set_fast_path
from napari_sam.synthetic import nuclei_2d


def encoder(seed: int = 0) -> ImageEncoderViT:
    """The encoder of test_image_encoder with random weights of the scale of trained ones."""
    return shared_encoder(seed, weights_std=0.1)


def _both(enc: ImageEncoderViT, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(reference, fast) embeddings of x, no autograd."""
    set_attention_impl(enc, "exact")
    with torch.inference_mode():
        set_fast_path(enc, False)
        ref = enc(x)
        set_fast_path(enc, True)
        fast = enc(x)
    return ref, fast


@pytest.mark.parametrize("chunk", [vit_fast.CHUNK_BYTES, 4 * 144 * 4, 40])
def test_fast_embeddings_equal_the_reference_to_rounding(monkeypatch, chunk):
    # 10 × 10 grid: windows of 4 pad it to 12 × 12; block 1 is global. The chunk sizes
    # give one chunk, chunks of (batch · head) pairs, and single query rows of one pair.
    monkeypatch.setattr(vit_fast, "CHUNK_BYTES", chunk)
    enc = encoder()
    x = torch.randn(2, 3, 80, 80)
    x_before = x.clone()
    ref, fast = _both(enc, x)
    assert fast.shape == ref.shape == (2, 16, 10, 10)
    assert torch.allclose(fast, ref, atol=1e-5, rtol=1e-4)
    assert torch.equal(x, x_before)  # the in-place residual adds leave the input alone


def test_fast_path_follows_loaded_weights():
    enc, other = encoder(0), encoder(1)
    x = torch.randn(1, 3, 80, 80)
    _, before = _both(enc, x)
    enc.load_state_dict(other.state_dict())
    ref, fast = _both(enc, x)
    assert torch.allclose(fast, ref, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(fast, before, atol=1e-3)
    assert all(
        k.split(".")[-1] in {"weight", "bias", "rel_pos_h", "rel_pos_w", "pos_embed"}
        for k in enc.state_dict()
    )  # nothing derived enters the state dict


def test_autograd_keeps_the_reference_path():
    enc = encoder()
    set_attention_impl(enc, "exact")
    x = torch.randn(1, 3, 80, 80)
    with torch.enable_grad():
        set_fast_path(enc, False)
        ref = enc(x)
        set_fast_path(enc, True)
        out = enc(x)
        out.sum().backward()
    assert torch.equal(out, ref)
    assert enc.blocks[0].mlp.lin1.weight.grad is not None


def test_plan_turns_it_on_for_fp32_auto_on_a_cpu_only(monkeypatch, tiny_model):
    from napari_sam.engine import device as dev_mod

    monkeypatch.setattr(dev_mod, "cpu_has_native_bf16", lambda: False)
    cpu = torch.device("cpu")
    assert resolve_plan(cpu, "auto").fast_vit
    assert not resolve_plan(cpu, "fp32").fast_vit
    with pytest.warns(UserWarning):
        assert not resolve_plan(cpu, "bf16").fast_vit
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert not resolve_plan(torch.device("cuda"), "auto").fast_vit
    assert not tiny_model.sam.image_encoder.fast  # exact mode
    auto = wrap_model(tiny_model.sam, tiny_model.config, "tiny", "cpu", "auto")
    assert auto.sam.image_encoder.fast
    assert "ViT encoder" in auto.plan.describe() and auto.plan.to_dict()["fast_vit"]


def test_demo_model_masks_and_embedding_match_the_exact_mode():
    exact = load_model("demo", device="cpu", precision="fp32")
    auto = load_model("demo", device="cpu", precision="auto")
    assert auto.sam.image_encoder.fast and not exact.sam.image_encoder.fast
    img, _ = nuclei_2d(seed=3)
    pe, pa = Predictor(exact), Predictor(auto)
    pe.set_image(img)
    pa.set_image(img)
    emb_e, emb_a = pe.embedding.features, pa.embedding.features
    assert float((emb_e - emb_a).abs().max()) < 1e-3 * float(emb_e.abs().max())
    ious = []
    for r, c in [(64, 64), (128, 100), (200, 180), (40, 210)]:
        a = pe.predict(points=[[r, c]], labels=[1]).masks
        b = pa.predict(points=[[r, c]], labels=[1]).masks
        for i in range(a.shape[0]):
            union = np.count_nonzero(a[i] | b[i])
            ious.append(1.0 if union == 0 else np.count_nonzero(a[i] & b[i]) / union)
    assert np.mean(ious) >= 0.98
