"""Device and precision choice.

Precision ``"auto"`` means bfloat16 where the hardware does it natively (CUDA with bf16
support, x86 CPUs with AVX512-BF16 or AMX) and float32 elsewhere. ``"fp32"`` is the exact
mode (parity with the official implementation); ``"bf16"`` forces bfloat16 autocast for
the image encoder. The prompt encoder and mask decoder always run in float32: they are
cheap and the mask threshold is sensitive.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import sys
import warnings

import torch

PRECISIONS = ("auto", "fp32", "bf16")


def cpu_has_native_bf16() -> bool:
    """True on CPUs whose class does bfloat16 matrix products natively (AMX or
    AVX512-BF16; :mod:`napari_sam.engine.cpu`, ``NAPARI_SAM_CPU_CLASS`` overrides)."""
    from .cpu import cpu_info

    return cpu_info().native_bf16


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → cuda > mps > cpu; otherwise the named device, checked to exist."""
    if isinstance(device, torch.device):
        dev = device
    elif device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    else:
        try:
            dev = torch.device(device)
        except (RuntimeError, ValueError):
            raise ValueError(
                f"unknown device {device!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"
            ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available here")
    if dev.type == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise ValueError(f"device {device!r} requested but MPS is not available here")
    return dev


def resolve_precision(precision: str, device: torch.device) -> str:
    """Map ``"auto" | "fp32" | "bf16"`` to the concrete ``"fp32"`` or ``"bf16"``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        warnings.warn(
            "precision 'bf16' on a CPU without native bfloat16 (no AVX512-BF16 / AMX): "
            "bfloat16 arithmetic is emulated here and the image encoder runs many times "
            "slower than in fp32 (measured ~40× for its matrix products); use 'auto' or "
            "'fp32'",
            UserWarning,
            stacklevel=3,
        )
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_native_bf16() else "fp32"
    return "fp32"


def coordinate_dtype(device: torch.device) -> torch.dtype:
    """dtype for prompt coordinates sent to ``device``: float64 (the official automatic
    mask generator passes its grid points in float64, and parity needs the same
    rounding), float32 on MPS, which has no float64."""
    return torch.float32 if torch.device(device).type == "mps" else torch.float64


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 64 * 2**20
TRIM_THRESHOLD = 256 * 2**20


@functools.cache
def tune_cpu_allocator() -> bool:
    """Let glibc keep freed blocks of up to 64 MB for reuse (once per process).

    By default glibc returns large freed blocks to the kernel (blocks above its
    mmap threshold, which adapts up to 32 MB, and the heap top above twice that), so
    every fresh activation of a few MB is paid again in page faults — on a CPU the
    encoder's and the mask decoder's per-call activations (4–50 MB) spent up to a
    third of their time faulting pages in (docs/benchmarks.md). With an mmap threshold
    of 64 MB and a trim threshold of 256 MB they are reused; the cost is that up to
    256 MB of freed memory may stay with the process. The same setting as
    ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` in the environment.

    Applied by :func:`~napari_sam.engine.loader.load_model` for CPU models. Does nothing
    (returns False) outside Linux / glibc, when ``NAPARI_SAM_MALLOC_TUNING=0`` is set,
    or when the user set glibc's own ``MALLOC_MMAP_THRESHOLD_`` (their choice wins).
    """
    if os.environ.get("NAPARI_SAM_MALLOC_TUNING", "1") == "0":
        return False
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    return bool(ok and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)


def allocator_environ() -> dict[str, str]:
    """The environment giving a process spawned by us the allocator setting of
    :func:`tune_cpu_allocator` from its start (glibc reads it at start-up).

    For the Dask workers of ``--workers N``: Dask's nanny sets
    ``MALLOC_TRIM_THRESHOLD_=65536`` in every worker it spawns, so
    :func:`tune_cpu_allocator` stands back there (the variable looks like the user's
    choice) and every encoder call faults its activations in afresh (measured: the demo
    model's tile embedding 2× slower in a worker, docs/benchmarks.md). Empty where
    :func:`tune_cpu_allocator` would do nothing here (``NAPARI_SAM_MALLOC_TUNING=0``,
    the user's own ``MALLOC_*_`` variables, not Linux / glibc)."""
    if os.environ.get("NAPARI_SAM_MALLOC_TUNING", "1") == "0":
        return {}
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return {}
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return {}
    return {
        "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD),
        "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD),
    }
