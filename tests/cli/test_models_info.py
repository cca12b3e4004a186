"""``napari-sam models --info`` (the CPU class, the decode plan per precision, measured
times, the vit_t suggestion) and the plan recorded in embedding stores."""

from __future__ import annotations

import numpy as np
import torch

from napari_sam.cli import main
from napari_sam.engine.expected import MEASURED
from napari_sam.store.files import read_attrs


def _plan_block(text: str, precision: str) -> dict[str, str]:
    """The 'precision P:' block of the output as {choice: value}."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"precision {precision}:"))
    out = {}
    for line in lines[start + 1 :]:
        if not line.startswith("  "):
            break
        key, value = line[2:26].strip(), line[26:].strip()
        out[key] = value
    return out


def test_models_info_on_an_avx2_cpu(force_cpu_class, capsys):
    force_cpu_class("avx2")
    assert main(["models", "--info", "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("CPU:     avx2 (") and "native bf16: no" in text
    auto = _plan_block(text, "auto")
    assert auto["precision"] == "auto -> fp32, fast" and auto["cpu class"] == "avx2"
    assert auto["click decoder"] == "folded, fp32" and auto["encoder attention"] == "exact"
    exact = _plan_block(text, "fp32")
    assert exact["precision"].endswith("exact (parity with the official code)")
    assert exact["click decoder"] == "official, fp32" and exact["mask upsampling"] == "dense"
    assert "precision bf16:  (emulated here: slow)" in text
    seconds = MEASURED[("avx2", "vit_b")].seconds
    assert f"vit_b                   ≈ {seconds:.3g} s per slice (measured, 2 threads)" in text
    assert "vit_t (MobileSAM) or vit_t_lm" in text


def test_models_info_on_an_amx_cpu(force_cpu_class, capsys):
    force_cpu_class("amx")
    assert main(["models", "--info", "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    auto = _plan_block(text, "auto")
    assert auto["precision"] == "auto -> bf16, fast" and auto["encoder attention"] == "sdpa"
    assert auto["click decoder"] == "folded, bf16"
    assert "emulated" not in text and "vit_t (MobileSAM)" not in text  # nothing to suggest
    assert "vit_t                   not measured" in text


def test_models_info_bad_cpu_class_is_one_line(force_cpu_class, capsys):
    force_cpu_class("pentium")
    assert main(["models", "--info"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "NAPARI_SAM_CPU_CLASS" in err and "avx2" in err


def test_store_records_the_plan_it_was_made_with(
    force_cpu_class, tmp_path, tiny_checkpoint, capsys
):
    force_cpu_class("avx512")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        np.save(tmp_path / "img.npy", np.random.default_rng(0).integers(0, 200, (2, 32, 40)))
        out = tmp_path / "img.zarr"
        args = ["embed", str(tmp_path / "img.npy"), "--model", "tiny", "--checkpoint",
                str(tiny_checkpoint), "--device", "cpu", "--out", str(out)]
        assert main([*args, "--precision", "auto"]) == 0
    finally:
        torch.set_num_threads(n)
    plan = read_attrs(out)["model"]["plan"]
    assert plan["cpu_class"] == "avx512" and plan["requested"] == "auto"
    assert plan["precision"] == "fp32" and not plan["exact"]
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "made with:     CPU class avx512, precision auto → fp32, attention exact" in text
    # the plan is recorded, not compared: another machine (class) with the same weights
    # and precision is served by the store
    force_cpu_class("avx2")
    assert main([*args, "--precision", "auto"]) == 0
    assert "2/2 slices complete" in capsys.readouterr().out
    assert read_attrs(out)["model"]["plan"]["cpu_class"] == "avx512"  # the creator's
