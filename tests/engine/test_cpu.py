"""CPU class detection (engine/cpu.py): classes from capabilities, torch first, the
/proc/cpuinfo fallback, the override, and what precision="auto" makes of each class."""

from __future__ import annotations

import pytest
import torch

from napari_sam.engine import cpu as cpu_mod
from napari_sam.engine import device as dev_mod
from napari_sam.engine.cpu import CPU_CLASSES, caps_from_flags, classify, detect

ZEN3 = "fpu sse sse2 avx fma avx2 bmi2 sha_ni vaes".split()
ZEN4 = ZEN3 + "avx512f avx512bw avx512vl avx512_bf16 avx512_vnni".split()
SKX = ZEN3 + "avx512f avx512bw avx512vl".split()
SPR = ZEN4 + "amx_bf16 amx_tile amx_int8".split()


@pytest.mark.parametrize(
    ("flags", "want"),
    [(ZEN3, "avx2"), (SKX, "avx512"), (ZEN4, "avx512_bf16"), (SPR, "amx"), (["sse2"], "other")],
)
def test_flags_give_the_class(flags, want):
    assert classify(caps_from_flags(flags), "x86_64", "linux") == want
    info = detect(
        {}, torch_caps=lambda: None, cpuinfo=lambda: (set(flags), "X"), machine="x86_64",
        system="linux",
    )
    assert (info.cpu_class, info.source) == (want, "cpuinfo")
    assert info.native_bf16 == (want in ("amx", "avx512_bf16"))


def test_arm_machines():
    assert classify(set(), "arm64", "darwin") == "apple_arm64"
    assert classify({"avx2"}, "aarch64", "linux") == "other"


def test_torch_is_asked_first():
    """PyTorch's own answer (what its kernels use) wins over the flags."""
    info = detect(
        {}, torch_caps=lambda: {"avx2", "avx512"}, cpuinfo=lambda: (set(SPR), "X"),
        machine="x86_64", system="linux",
    )
    assert (info.cpu_class, info.source) == ("avx512", "torch")


def test_this_machine_agrees_with_torch():
    info = detect()
    assert info.cpu_class in CPU_CLASSES
    if torch.cpu._is_amx_tile_supported():
        assert info.cpu_class == "amx"
    elif torch.cpu._is_avx2_supported() and not torch.cpu._is_avx512_supported():
        assert info.cpu_class == "avx2"


def test_override_forces_a_class_and_bad_values_are_named():
    for cls in CPU_CLASSES:
        info = detect({cpu_mod.OVERRIDE_ENV: cls})
        assert (info.cpu_class, info.source) == (cls, "override")
    with pytest.raises(ValueError, match=r"NAPARI_SAM_CPU_CLASS=.pentium.*avx2"):
        detect({cpu_mod.OVERRIDE_ENV: "pentium"})


@pytest.mark.parametrize(("cls", "want"), [("amx", "bf16"), ("avx512_bf16", "bf16"),
                                          ("avx512", "fp32"), ("avx2", "fp32")])
def test_auto_precision_follows_the_class(monkeypatch, cls, want):
    monkeypatch.setattr(cpu_mod, "cpu_info", lambda: detect({cpu_mod.OVERRIDE_ENV: cls}))
    assert dev_mod.resolve_precision("auto", torch.device("cpu")) == want
