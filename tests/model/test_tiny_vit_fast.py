"""TinyViT's fast CPU path (model/tiny_vit_fast.py): banded MBConv blocks and chunked,
biased window attention give the reference path's embeddings to float rounding — with
several bands (a partial last one), several attention chunks, padded windows and a batch
of two — leave the input alone, and really run outside the exact mode only."""

from __future__ import annotations

import pytest
import torch
from test_tiny_vit import SMALL_320, _randomise

from napari_sam.model import tiny_vit_fast as tvf
from napari_sam.model.tiny_vit import TinyViT, set_fast_path


def _model(seed: int = 0) -> TinyViT:
    torch.manual_seed(seed)
    m = TinyViT(**SMALL_320).eval()
    m.load_state_dict(_randomise(m.state_dict(), seed), strict=True)
    return m


def test_mbconv_bands_equal_the_whole_image() -> None:
    blk = _model().layers[0].blocks[0]
    set_fast_path(blk, True)
    x = torch.randn(2, 16, 64, 40).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        whole = blk(x)
        for rows in (1, 7, 16, 63):  # 64 rows: bands with a partial last one
            banded = tvf.mbconv_forward(blk, x, rows)
            torch.testing.assert_close(banded, whole, atol=1e-5, rtol=1e-5)
    assert banded.shape == x.shape


def test_window_attention_chunks_equal_one_chunk(monkeypatch) -> None:
    # 3 heads, window 14 on a 16 × 16 grid: 4 padded windows per image, batch 2
    attn = _model().layers[2].blocks[0].attn
    set_fast_path(attn, True)
    x = torch.randn(2, 16, 16, 48)
    with torch.no_grad():
        one = tvf.window_attention(attn, x, 14)
        per_window = 3 * 196 * 196 * 4
        monkeypatch.setattr(tvf, "CHUNK_BYTES", per_window * 3)  # chunks of 3, then 2
        chunked = tvf.window_attention(attn, x, 14)
    torch.testing.assert_close(chunked, one, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("band_bytes", [tvf.BAND_BYTES, 4096])
def test_fast_encoder_equals_the_exact_encoder(monkeypatch, band_bytes) -> None:
    monkeypatch.setattr(tvf, "BAND_BYTES", band_bytes)
    monkeypatch.setattr(tvf, "CHUNK_BYTES", 200_000)  # several attention chunks per block
    calls = {"bands": 0, "attend": 0}
    real_mb, real_att = tvf.mbconv_forward, tvf.attend

    def mb(*a):
        calls["bands"] += 1
        return real_mb(*a)

    def att(*a):
        calls["attend"] += 1
        return real_att(*a)

    monkeypatch.setattr(tvf, "mbconv_forward", mb)
    monkeypatch.setattr(tvf, "attend", att)
    m = _model(1)
    x = torch.randn(2, 3, 256, 256)
    x_before = x.clone()
    with torch.no_grad():
        exact = m(x)
        assert calls == {"bands": 0, "attend": 0}  # the exact mode never takes it
        set_fast_path(m, True)
        fast = m(x)
    assert calls["bands"] == 1 and calls["attend"] == 4  # one MBConv block, 4 attention blocks
    assert fast.shape == exact.shape == (2, 256, 16, 16)
    torch.testing.assert_close(fast, exact, atol=1e-4 * exact.abs().max().item(), rtol=1e-4)
    assert torch.equal(x, x_before)
    with torch.enable_grad():  # autograd keeps the reference order
        m(x[:1])
    assert calls["attend"] == 4
