"""Device and precision resolution."""

from __future__ import annotations

import pytest
import torch

from napari_sam.engine import device as dev_mod
from napari_sam.engine.device import resolve_device, resolve_precision


def test_auto_device_is_cpu_without_accelerators(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")


def test_explicit_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_precision_auto_follows_cpu_bf16(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(dev_mod, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("auto", cpu) == "bf16"
    monkeypatch.setattr(dev_mod, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision("auto", cpu) == "fp32"
    assert resolve_precision("fp32", cpu) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16"
    assert resolve_precision("auto", torch.device("mps")) == "fp32"
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp16", cpu)


def test_bf16_model_gives_float32_embeddings(tiny_model):
    from napari_sam.engine.loader import wrap_model
    from napari_sam.engine.predictor import Predictor

    m = wrap_model(tiny_model.sam, tiny_model.config, "tiny", "cpu", "bf16")
    p = Predictor(m)
    emb = p.set_image(torch.rand(40, 40).numpy())
    assert emb.features.dtype == torch.float32
    r = p.predict(points=[[5, 5]], labels=[1])
    assert r.masks.shape == (3, 40, 40)
