"""The decode plan: one function decides the engine's paths from (device, precision);
"auto" resolving to fp32 is not the exact mode; Predictor, AutomaticMaskGenerator and
load_model follow the model's plan."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from napari_sam.engine import device as dev_mod
from napari_sam.engine.amg import AutomaticMaskGenerator
from napari_sam.engine.decode import Predictor
from napari_sam.engine.loader import wrap_model
from napari_sam.engine.plan import DecodePlan, resolve_plan
from napari_sam.model.common import SwitchableAttention

CPU, GPU = torch.device("cpu"), torch.device("cuda")


def row(plan: DecodePlan) -> tuple:
    return (plan.precision, plan.exact, plan.attention, plan.fast_decoder,
            plan.decoder_precision, plan.amg_decoder_precision, plan.upsampling,
            plan.fold_tiny_vit)


@pytest.mark.filterwarnings("ignore:precision 'bf16' on a CPU")
def test_the_matrix(monkeypatch, force_cpu_class):
    # the CPU rows are those of class avx512_bf16, whatever this CPU is (the other
    # classes: tests/engine/test_plan_classes.py)
    force_cpu_class("avx512_bf16")
    monkeypatch.setattr(dev_mod, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    exact = ("fp32", True, "exact", False, "fp32", "fp32", "dense", False)
    assert row(resolve_plan(CPU, "fp32")) == exact
    assert row(resolve_plan(GPU, "fp32")) == exact
    # auto on a CPU without native bf16: fp32 weights, but NOT the exact mode
    assert row(resolve_plan(CPU, "auto")) == (
        "fp32", False, "exact", True, "fp32", "fp32", "blocks", True)
    assert row(resolve_plan(CPU, "bf16")) == (
        "bf16", False, "exact", True, "bf16", "fp32", "blocks", True)
    assert row(resolve_plan(GPU, "auto")) == (
        "bf16", False, "sdpa", True, "bf16", "fp32", "blocks", True)
    monkeypatch.setattr(dev_mod, "cpu_has_native_bf16", lambda: True)
    assert row(resolve_plan(CPU, "auto")) == row(resolve_plan(CPU, "bf16"))
    assert resolve_plan(CPU, "auto").requested == "auto"
    with pytest.raises(ValueError, match="precision"):
        resolve_plan(CPU, "fp16")


def test_models_carry_their_plan(monkeypatch, tiny_model):
    monkeypatch.setattr(dev_mod, "cpu_has_native_bf16", lambda: False)
    assert tiny_model.exact and tiny_model.plan == resolve_plan(CPU, "fp32")
    auto = wrap_model(tiny_model.sam, tiny_model.config, "tiny", "cpu", "auto")
    assert auto.precision == "fp32" and not auto.exact
    attn = {m.impl for m in auto.sam.modules() if isinstance(m, SwitchableAttention)}
    assert attn == {"exact"}


def test_predictor_and_generator_read_the_plan(tiny_model):
    assert not Predictor(tiny_model).fast_decoder
    assert AutomaticMaskGenerator(tiny_model).upsampling == "dense"
    plan = dataclasses.replace(
        tiny_model.plan, fast_decoder=True, decoder_precision="bf16",
        amg_decoder_precision="bf16", upsampling="blocks",
    )
    model = dataclasses.replace(tiny_model, plan=plan)
    p = Predictor(model)
    assert p.fast_decoder and p.decoder_precision == "bf16"
    amg = AutomaticMaskGenerator(model)
    assert amg.upsampling == "blocks" and amg.decoder_precision == "bf16"
    # explicit arguments still win over the plan
    assert not Predictor(model, fast_decoder=False).fast_decoder
    assert AutomaticMaskGenerator(model, upsampling="dense").upsampling == "dense"
