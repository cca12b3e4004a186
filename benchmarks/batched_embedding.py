"""Batched encoder calls for precompute, and per-call allocations of the encoder.

For a model, N slices are encoded one per call and in batches of 2 and 4 (same
preprocessed inputs, same process, alternating rounds); prints slices/s per batch size
and the ratio to batch 1, and the minor page faults per call after warm-up (a measure
of the memory the encoder allocates afresh per call: with the allocator tuned by
``load_model``, freed activations are reused and the count stays low).

Usage::

    python benchmarks/batched_embedding.py --model demo [--slices 8] [--threads 1]
    python benchmarks/batched_embedding.py --model vit_t --slices 4

``demo`` is the shipped model (256² input); ``vit_t`` / ``vit_b`` use random weights at
the official architecture (1024² input). Precision ``auto``. Results: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from napari_sam.engine.cpu import cpu_info
from napari_sam.engine.loader import load_model, wrap_model
from napari_sam.model.build import CONFIGS, build_sam


def _model(name: str):
    if name == "demo":
        return load_model("demo", device="cpu", precision="auto")
    torch.manual_seed(0)
    return wrap_model(build_sam(CONFIGS[name]), CONFIGS[name], name, "cpu", "auto")


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="demo", choices=["demo", "vit_t", "vit_b"])
    ap.add_argument("--slices", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = _model(args.model)
    size = model.sam.image_size
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(args.slices, 3, size, size, generator=gen) * 255
    x = model.sam.preprocess(x)
    sizes = [b for b in (1, 2, 4) if b <= args.slices]
    best = {b: float("inf") for b in sizes}
    faults = {b: 0.0 for b in sizes}
    with torch.inference_mode():
        ref = torch.cat([model.encode(x[i : i + 1]) for i in range(args.slices)])
        for _ in range(args.rounds):
            for b in sizes:
                model.encode(x[:b])  # warm-up at this batch size
                f0, t0 = _faults(), time.perf_counter()
                out = torch.cat([model.encode(x[i : i + b]) for i in range(0, args.slices, b)])
                best[b] = min(best[b], time.perf_counter() - t0)
                faults[b] = (_faults() - f0) / (args.slices / b)
                err = float((out - ref).abs().max() / ref.abs().max())
                assert err < 1e-3, f"batch {b} differs from one-by-one: {err}"
    print(
        f"model {args.model} ({size}² input), {args.slices} slices, precision auto, "
        f"CPU class {cpu_info().describe()}, {torch.get_num_threads()} threads\n"
    )
    print("| slices per call | slices/s | vs 1 per call | minor page faults per call |")
    print("|---|---|---|---|")
    for b in sizes:
        rate = args.slices / best[b]
        print(f"| {b} | {rate:.2f} | {best[1] / best[b]:.2f}× | {faults[b]:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
