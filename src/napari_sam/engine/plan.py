"""The decode plan: which of the engine's paths a loaded model takes, decided in ONE place
from (device, requested precision).

The requested precision is ``"auto"``, ``"fp32"`` or ``"bf16"`` (:data:`.device.PRECISIONS`).
``"fp32"`` is the **exact** mode — parity with the official implementation, every step in
the official operation order. ``"auto"`` is *not* exact even where it resolves to fp32
(a CPU without native bfloat16): it keeps the fp32 encoder but takes the faster paths
whose results equal the official ones only up to float rounding. The matrix
(docs/architecture.md, "Decode plan"):

============================ ========= ========= ========== =========== =========== ==========
requested → concrete         exact     attention predictor  predictor   AMG decoder upsampling
                                                 decoder    decoder dtype
============================ ========= ========= ========== =========== =========== ==========
fp32 → fp32                  yes       exact     official   fp32        fp32        dense
auto → fp32 (no native bf16) no        exact     folded     fp32        fp32        blocks
auto / bf16 → bf16, CPU      no        exact*    folded     bf16        fp32        blocks
auto / bf16 → bf16, GPU      no        sdpa      folded     bf16        fp32        blocks
============================ ========= ========= ========== =========== =========== ==========

``exact*``: the materialised attention in bfloat16 (measured faster than sdpa on a CPU).
Outside the exact mode TinyViT (vit_t) also folds its batch norms (``fold_tiny_vit``).
The prompt encoder and the official mask decoder always run in fp32; the automatic mask
generator keeps an fp32 folded decoder (no faster for small decoders, and masks at its
thresholds would flip — docs/amg.md).

:class:`~napari_sam.engine.loader.SamModel` carries its plan; the ``Predictor``, the
``AutomaticMaskGenerator`` and ``load_model`` read it instead of deciding themselves (their
explicit arguments still override it per object).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .device import resolve_precision


@dataclass(frozen=True)
class DecodePlan:
    """How a model encodes and decodes (see the module docstring for the matrix).

    requested: the precision asked for (``"auto"``, ``"fp32"``, ``"bf16"``);
    precision: the concrete encoder precision (``"fp32"`` / ``"bf16"``);
    exact: the parity mode (requested ``"fp32"``); attention: the encoder's attention
    implementation (``"exact"`` materialised / ``"sdpa"`` fused);
    fast_decoder: the ``Predictor`` decodes prompts without a mask input with the folded
    decoder (else the official decoder); decoder_precision: that folded decoder's dtype;
    amg_decoder_precision: the automatic mask generator's folded decoder dtype;
    upsampling: ``"dense"`` (the official full-size resize) or ``"blocks"`` (blockwise
    thresholding, equal to rounding) for the ``Predictor``'s fast path and automatic masks;
    fold_tiny_vit: TinyViT's fast path (batch norms folded, channels-last convolutions).
    """

    requested: str
    precision: str
    exact: bool
    attention: str
    fast_decoder: bool
    decoder_precision: str
    amg_decoder_precision: str
    upsampling: str
    fold_tiny_vit: bool


def resolve_plan(device: torch.device, precision: str = "auto") -> DecodePlan:
    """The :class:`DecodePlan` for a model on ``device`` loaded with ``precision``
    (``"auto"`` | ``"fp32"`` | ``"bf16"``; ValueError otherwise, a warning for bf16 on a
    CPU that only emulates it — :func:`~napari_sam.engine.device.resolve_precision`)."""
    device = torch.device(device)
    concrete = resolve_precision(precision, device)
    exact = precision == "fp32"
    # bf16 on a CPU: the materialised attention in a reused buffer measured ~15 % faster
    # than sdpa with the rel-pos bias as mask (docs/benchmarks.md); GPUs use sdpa
    fused = concrete == "bf16" and device.type != "cpu"
    return DecodePlan(
        requested=precision,
        precision=concrete,
        exact=exact,
        attention="sdpa" if fused else "exact",
        fast_decoder=not exact,
        decoder_precision="bf16" if concrete == "bf16" else "fp32",
        amg_decoder_precision="fp32",
        upsampling="dense" if exact else "blocks",
        fold_tiny_vit=not exact,
    )
