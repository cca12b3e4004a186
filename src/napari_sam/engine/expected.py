"""How long one slice's image embedding takes per CPU class, as measured, and when to
suggest the small vit_t (MobileSAM) encoder instead of a ViT.

The figures are the project's own side-by-side runs (``benchmarks/engine_speed.py``,
1024² image, precision ``"auto"``; docs/benchmarks.md has each run with its command).
A class without a measurement gives None: nothing is guessed.
"""

from __future__ import annotations

from dataclasses import dataclass

from .cpu import CpuInfo


@dataclass(frozen=True)
class Measured:
    """seconds: one 1024² slice's embedding (``set_image``, precision auto); threads:
    the thread count of that run; where: which run (docs/benchmarks.md)."""

    seconds: float
    threads: int
    where: str

    def describe(self) -> str:
        """E.g. ``"≈ 25.7 s per slice (measured, 1 thread)"``."""
        unit = "thread" if self.threads == 1 else "threads"
        return f"≈ {self.seconds:.3g} s per slice (measured, {self.threads} {unit})"


# (CPU class, model type) → measurement
MEASURED: dict[tuple[str, str], Measured] = {
    ("avx2", "vit_b"): Measured(8.41, 2, "AMD EPYC Zen 3, 2026-12-03, session 9"),
    ("avx2", "vit_t"): Measured(0.85, 2, "AMD EPYC Zen 3, 2026-12-03, session 9"),
    ("avx512_bf16", "vit_b"): Measured(3.71, 2, "AMD EPYC avx512_bf16, session 3 run 6"),
    ("amx", "vit_b"): Measured(4.66, 1, "Intel Xeon AMX, issue 20"),
}
# the ViTs whose encoder is slow on a CPU without native bf16
_LARGE = ("vit_b", "vit_l", "vit_h")


def expected_embedding(model_type: str, cpu_class: str) -> Measured | None:
    """The measured embedding time of ``model_type`` on a CPU of ``cpu_class``, or None."""
    return MEASURED.get((cpu_class, model_type))


def vit_t_suggestion(model_type: str, device_type: str, cpu: CpuInfo) -> str | None:
    """One line suggesting vit_t / vit_t_lm when a ViT encoder (vit_b / l / h) would run
    on a CPU without native bfloat16 (no GPU in use), with the measured times where the
    class has them; None when there is nothing to suggest (a GPU, a bf16 CPU, vit_t
    already, a custom or demo model)."""
    if device_type != "cpu" or cpu.native_bf16 or model_type not in _LARGE:
        return None
    big = expected_embedding(model_type, cpu.cpu_class)
    small = expected_embedding("vit_t", cpu.cpu_class)
    times, faster = "", "several times faster"
    if big is not None and small is not None:
        times = f": {model_type} {big.describe()}, vit_t {small.describe()}"
        ratio = (big.seconds * big.threads) / (small.seconds * small.threads)
        faster = f"about {ratio:.0f}× faster (per core)"
    return (
        f"No GPU and no native bfloat16 on this CPU ({cpu.cpu_class}): {model_type} is slow "
        f"here{times}. vit_t (MobileSAM) or vit_t_lm (microscopy) embeds a slice "
        f"{faster}; the choice is yours."
    )
