"""What kind of CPU this is, for choosing the engine's fast paths by CPU class.

Classes, from the most capable (docs/benchmarks.md has the measurements per class):

* ``amx``          — x86 with AMX tiles for bfloat16 (Intel Sapphire Rapids and newer);
* ``avx512_bf16``  — x86 with AVX-512 and native bfloat16 dot products (AMD Zen 4/5,
  Intel Cooper Lake), no AMX;
* ``avx512``       — x86 with AVX-512 (F) but no bfloat16 instructions;
* ``avx2``         — x86 with AVX2 + FMA only (AMD Zen 1–3, Intel Haswell … most laptops);
* ``apple_arm64``  — Apple silicon (macOS arm64);
* ``other``        — anything else (older x86, Linux arm64, …).

Detection asks PyTorch first (``torch.cpu._is_*_supported``: what its kernels will really
use, on every OS), then the Linux ``/proc/cpuinfo`` flags. ``NAPARI_SAM_CPU_CLASS=<class>``
overrides the result (forcing another class's plan on this machine, e.g. for tests —
the results stay correct, only the speed differs).
"""

from __future__ import annotations

import functools
import os
import platform
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

CPU_CLASSES = ("amx", "avx512_bf16", "avx512", "avx2", "apple_arm64", "other")
OVERRIDE_ENV = "NAPARI_SAM_CPU_CLASS"

# /proc/cpuinfo flags → capability (any of the listed flags)
_FLAG_CAPS = {
    "amx": ("amx_bf16",),
    "avx512_bf16": ("avx512_bf16",),
    "avx512": ("avx512f",),
    "avx2": ("avx2",),
}
# the same capabilities as PyTorch reports them
_TORCH_CAPS = {
    "amx": "_is_amx_tile_supported",
    "avx512_bf16": "_is_avx512_bf16_supported",
    "avx512": "_is_avx512_supported",
    "avx2": "_is_avx2_supported",
}


@dataclass(frozen=True)
class CpuInfo:
    """The CPU class and what it was derived from.

    cpu_class: one of :data:`CPU_CLASSES`. native_bf16: bfloat16 matrix products run
    natively (AMX or AVX512-BF16). source: ``"torch"``, ``"cpuinfo"``, ``"platform"`` or
    ``"override"``. name: the CPU model name when known. logical_cores: ``os.cpu_count()``.
    """

    cpu_class: str
    native_bf16: bool
    source: str
    name: str
    logical_cores: int

    def describe(self) -> str:
        """One line, e.g. ``"avx2 (AMD EPYC, 2 logical cores; from torch)"``."""
        return (
            f"{self.cpu_class} ({self.name or 'unknown CPU'}, {self.logical_cores} logical "
            f"cores; from {self.source})"
        )


def classify(caps: Iterable[str], machine: str, system: str) -> str:
    """CPU class from capability names (keys of the tables above), the machine
    (``platform.machine()``) and the OS (``sys.platform``)."""
    caps = set(caps)
    m = machine.lower()
    if m in ("arm64", "aarch64") and system == "darwin":
        return "apple_arm64"
    if m not in ("x86_64", "amd64", "i686", "x86"):
        return "other"
    for cls in ("amx", "avx512_bf16", "avx512", "avx2"):
        if cls in caps:
            return cls
    return "other"


def caps_from_flags(flags: Iterable[str]) -> set[str]:
    """Capabilities from /proc/cpuinfo flag names."""
    flags = set(flags)
    return {cap for cap, names in _FLAG_CAPS.items() if flags & set(names)}


def _torch_caps() -> set[str] | None:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return None
    out = set()
    for cap, fn_name in _TORCH_CAPS.items():
        fn: Callable[[], bool] | None = getattr(torch.cpu, fn_name, None)
        if fn is None:
            return None  # an older torch: fall back to the flags
        if fn():
            out.add(cap)
    return out


def _cpuinfo() -> tuple[set[str], str]:
    """(flags, model name) from /proc/cpuinfo; empty on other systems."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set(), ""
    flags: set[str] = set()
    name = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "flags" and not flags:
            flags = set(value.split())
        elif key == "model name" and not name:
            name = value.strip()
    return flags, name


def detect(
    environ: dict[str, str] | None = None,
    *,
    torch_caps: Callable[[], set[str] | None] = _torch_caps,
    cpuinfo: Callable[[], tuple[set[str], str]] = _cpuinfo,
    machine: str | None = None,
    system: str | None = None,
) -> CpuInfo:
    """Detect the CPU class (see the module docstring). The keyword arguments exist for
    tests; call :func:`cpu_info` for the cached answer of this process."""
    env = os.environ if environ is None else environ
    machine = platform.machine() if machine is None else machine
    system = sys.platform if system is None else system
    flags, name = cpuinfo()
    if not name and system == "darwin":
        name = platform.processor()
    cores = os.cpu_count() or 1
    forced = env.get(OVERRIDE_ENV, "").strip().lower()
    if forced:
        if forced not in CPU_CLASSES:
            raise ValueError(
                f"{OVERRIDE_ENV}={forced!r} is not a CPU class; use one of {', '.join(CPU_CLASSES)}"
            )
        return CpuInfo(forced, forced in ("amx", "avx512_bf16"), "override", name, cores)
    caps = torch_caps()
    source = "torch"
    if caps is None:
        caps, source = caps_from_flags(flags), "cpuinfo" if flags else "platform"
    cls = classify(caps, machine, system)
    return CpuInfo(cls, cls in ("amx", "avx512_bf16"), source, name, cores)


@functools.cache
def cpu_info() -> CpuInfo:
    """This process's CPU class (detected once; ``NAPARI_SAM_CPU_CLASS`` overrides)."""
    return detect()
