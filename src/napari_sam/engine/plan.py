"""The decode plan: which of the engine's paths a loaded model takes, decided in ONE place
from (device, requested precision, CPU class).

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

``exact*``: the materialised attention in bfloat16 on CPUs of class ``avx512_bf16``
(measured ~15 % faster than sdpa there) and wherever bf16 is forced on a CPU without
native bfloat16; ``sdpa`` (PyTorch's fused flash attention, no materialised
4096 × 4096 scores) on ``amx`` CPUs, whose bfloat16 matrix products are ~8× faster than
fp32 so that the memory-bound materialised softmax dominates (expected, not yet measured
on an AMX machine here — ``benchmarks/plan_choices.py`` measures both on the machine it
runs on and says which this table should hold).

The CPU class (:mod:`napari_sam.engine.cpu`; ``NAPARI_SAM_CPU_CLASS`` forces one) decides
what ``"auto"`` resolves to (bf16 on ``amx`` / ``avx512_bf16``, fp32 elsewhere) and the
bf16 attention above; every class's plan gives masks within the IoU bound of the exact
mode on any CPU (tests/engine/test_plan_classes.py forces each one), only the speed
differs.
Outside the exact mode TinyViT (vit_t) also folds its batch norms (``fold_tiny_vit``),
and an fp32 ViT encoder on a CPU takes its fast path (``fast_vit``,
:mod:`napari_sam.model.vit_fast`: contiguous residual stream, global attention in
cache-sized chunks — equal to float rounding; docs/benchmarks.md); TinyViT's fast path
(:mod:`napari_sam.model.tiny_vit_fast`) runs its MBConv blocks in bands of rows and its
window attention in cache-sized chunks with the offset bias added in place.
The prompt encoder and the official mask decoder always run in fp32; the automatic mask
generator keeps an fp32 folded decoder (no faster for small decoders, and masks at its
thresholds would flip — docs/amg.md).

:class:`~napari_sam.engine.loader.SamModel` carries its plan; the ``Predictor``, the
``AutomaticMaskGenerator`` and ``load_model`` read it instead of deciding themselves (their
explicit arguments still override it per object).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from .device import resolve_precision

# the bf16 attention implementation per CPU class (see the module docstring)
_CPU_BF16_ATTENTION = {"amx": "sdpa"}


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
    fold_tiny_vit: TinyViT's fast path (batch norms folded, channels-last convolutions,
    convolution + activation fused in oneDNN where available);
    cpu_class: the CPU class the plan was chosen for (:data:`.cpu.CPU_CLASSES`), None
    for a GPU / MPS device;
    fast_vit: the ViT encoder's fast inference path (:mod:`napari_sam.model.vit_fast`),
    outside the exact mode for fp32 on a CPU.
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
    cpu_class: str | None = None
    fast_vit: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The plan as plain JSON values (recorded in embedding stores' attributes)."""
        return asdict(self)

    def describe(self) -> str:
        """Several lines, one choice each (``napari-sam models --info``)."""
        mode = "exact (parity with the official code)" if self.exact else "fast"
        rows = [
            ("precision", f"{self.requested} -> {self.precision}, {mode}"),
            ("cpu class", self.cpu_class or "- (not a CPU)"),
            ("encoder attention", self.attention),
            (
                "click decoder",
                f"folded, {self.decoder_precision}" if self.fast_decoder else "official, fp32",
            ),
            ("automatic-mask decoder", f"folded, {self.amg_decoder_precision}"),
            ("mask upsampling", self.upsampling),
            (
                "TinyViT (vit_t)",
                "folded, channels-last, banded" if self.fold_tiny_vit else "reference",
            ),
            ("ViT encoder", "fast (chunked attention)" if self.fast_vit else "reference"),
        ]
        return "\n".join(f"  {k:24s}{v}" for k, v in rows)


def resolve_plan(device: torch.device, precision: str = "auto") -> DecodePlan:
    """The :class:`DecodePlan` for a model on ``device`` loaded with ``precision``
    (``"auto"`` | ``"fp32"`` | ``"bf16"``; ValueError otherwise, a warning for bf16 on a
    CPU that only emulates it — :func:`~napari_sam.engine.device.resolve_precision`).
    On a CPU the plan depends on its class (:func:`~napari_sam.engine.cpu.cpu_info`)."""
    from .cpu import cpu_info

    device = torch.device(device)
    concrete = resolve_precision(precision, device)
    exact = precision == "fp32"
    cpu_class = cpu_info().cpu_class if device.type == "cpu" else None
    if concrete != "bf16":
        attention = "exact"
    elif cpu_class is None:
        attention = "sdpa"  # GPUs: the fused kernel
    else:
        # bf16 on a CPU: the materialised attention in a reused buffer measured ~15 %
        # faster than sdpa with the rel-pos bias as mask on avx512_bf16 (docs/benchmarks.md)
        attention = _CPU_BF16_ATTENTION.get(cpu_class, "exact")
    return DecodePlan(
        requested=precision,
        precision=concrete,
        exact=exact,
        attention=attention,
        fast_decoder=not exact,
        decoder_precision="bf16" if concrete == "bf16" else "fp32",
        amg_decoder_precision="fp32",
        upsampling="dense" if exact else "blocks",
        fold_tiny_vit=not exact,
        cpu_class=cpu_class,
        # measured on the avx2 class only; bf16 CPUs and GPUs keep the reference order
        fast_vit=not exact and concrete == "fp32" and device.type == "cpu",
    )


# slices per encoder call in precompute, for inputs up to this size (see precompute_batch)
SMALL_INPUT = 512
SMALL_INPUT_BATCH = 4


def precompute_batch(plan: DecodePlan, image_size: int) -> int:
    """Slices (or tiles) per encoder call when precomputing many: 1 in the exact mode
    (every embedding bit-identical to one computed alone, as parity needs) and for
    inputs above :data:`SMALL_INPUT` px (large inputs fill the cores with one slice:
    vit_t at 1024² gave 0.71× / 0.64× the slices per second at 2 / 4 per call, its
    activations then faulted in afresh each call; four 1024² vit_b slices would also
    need ~3 GB of attention scratch);
    :data:`SMALL_INPUT_BATCH` for small inputs — their matrix products are too small to
    use a CPU well one slice at a time (the demo model, 256²: 1.57× the slices per second
    at 4 per call on an AVX2 CPU, one thread; ``benchmarks/batched_embedding.py``,
    docs/benchmarks.md)."""
    if plan.exact or image_size > SMALL_INPUT:
        return 1
    return SMALL_INPUT_BATCH
