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
    with pytest.warns(UserWarning, match="emulated"):  # still honoured, but said
        assert resolve_precision("bf16", cpu) == "bf16"
    assert resolve_precision("auto", torch.device("mps")) == "fp32"
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp16", cpu)


def test_bf16_on_a_native_bf16_cpu_does_not_warn(monkeypatch):
    import warnings

    monkeypatch.setattr(dev_mod, "cpu_has_native_bf16", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_precision("bf16", torch.device("cpu")) == "bf16"


@pytest.mark.filterwarnings("ignore:precision 'bf16' on a CPU")
def test_bf16_model_gives_float32_embeddings(tiny_model):
    from napari_sam.engine.decode.predictor import Predictor
    from napari_sam.engine.loader import wrap_model

    m = wrap_model(tiny_model.sam, tiny_model.config, "tiny", "cpu", "bf16")
    p = Predictor(m)
    emb = p.set_image(torch.rand(40, 40).numpy())
    assert emb.features.dtype == torch.float32
    r = p.predict(points=[[5, 5]], labels=[1])
    assert r.masks.shape == (3, 40, 40)


def test_no_float64_coordinates_for_mps():
    from napari_sam.engine.device import coordinate_dtype

    assert coordinate_dtype(torch.device("mps")) == torch.float32
    assert coordinate_dtype(torch.device("cpu")) == torch.float64  # official AMG rounding
    assert coordinate_dtype("cuda") == torch.float64


def test_amg_grid_coordinates_use_the_device_dtype(monkeypatch):
    """The AMG's prompt coordinates get coordinate_dtype(device): float32 for MPS."""
    import numpy as np

    import napari_sam.engine.amg.generator as amg_mod

    from tiny import make_tiny

    seen = []
    real = amg_mod.coordinate_dtype

    def spy(device):
        dt = real(device)
        seen.append(dt)
        return torch.float32 if device.type == "cpu" else dt  # pretend: MPS rule

    monkeypatch.setattr(amg_mod, "coordinate_dtype", spy)
    model = make_tiny(0)
    captured = []
    pe = model.sam.prompt_encoder
    real_fwd = pe.forward

    def capture(points=None, boxes=None, masks=None):
        captured.append(points[0].dtype)
        return real_fwd(points=points, boxes=boxes, masks=masks)

    monkeypatch.setattr(pe, "forward", capture)
    amg = amg_mod.AutomaticMaskGenerator(model, points_per_side=4)
    amg.generate(np.zeros((32, 32), np.uint8))
    assert seen and captured and set(captured) == {torch.float32}


_FAULTS = """
import resource, sys, torch
from napari_sam.engine.device import tune_cpu_allocator
tuned = tune_cpu_allocator()
def run():
    for _ in range(10):
        a = torch.ones(10 * 2**20)  # 40 MB, like vit_b's MLP activations (50 MB)
        b = a + 1
        del a, b
run()  # warm: the first round faults in any case
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
run()
print(tuned, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(
    not __import__("sys").platform.startswith("linux")
    or __import__("platform").libc_ver()[0] != "glibc",
    reason="glibc only",
)
def test_allocator_tuning_stops_page_faults_on_reused_activations():
    """With the tuning, freed 40 MB activations are reused instead of being returned
    to the kernel and faulted in again (glibc's own adaptive threshold stops at 32 MB);
    NAPARI_SAM_MALLOC_TUNING=0 leaves glibc alone."""
    import os
    import subprocess
    import sys

    def faults(env_value: str) -> tuple[str, int]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
        env["NAPARI_SAM_MALLOC_TUNING"] = env_value
        out = subprocess.run(
            [sys.executable, "-c", _FAULTS], env=env, capture_output=True, text=True, check=True
        ).stdout.split()
        return out[0], int(out[1])

    tuned, n_tuned = faults("1")
    plain, n_plain = faults("0")
    assert (tuned, plain) == ("True", "False")
    # 10 × 2 × 40 MB = 800 MB of fresh pages without it (~200 000 faults)
    assert n_plain > 100_000
    assert n_tuned < n_plain / 20
