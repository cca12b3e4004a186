"""The matrix-product floor of the ViT image encoder on this machine.

Counts the multiply-adds of every matrix product in one ``ImageEncoderViT`` forward pass
(linear layers, the attention's two batched products, the patch / neck convolutions) and
times each distinct GEMM shape alone (best of ``--repeats``, after a warm-up) with the
kernels the encoder uses (``F.linear`` → MKL ``addmm``; ``torch.matmul`` → ``bmm``), plus
oneDNN's pre-packed linear (``mkldnn._linear_pointwise`` on a weight reordered once)
for comparison. The floor is Σ count × time per shape: what the encoder needs for its
matrix products alone, with everything else (softmax, norms, GELU, copies) free.

Usage::

    python benchmarks/encoder_roofline.py [--model vit_b] [--size 1024] [--threads 2]
        [--repeats 5] [--cpu-time]

``--cpu-time`` times with the process CPU clock (meaningful at one thread on a loaded
machine: time spent descheduled is not counted).
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import torch
import torch.nn.functional as F

from napari_sam.engine.cpu import cpu_info
from napari_sam.model.build import CONFIGS


def shapes(cfg, size: int) -> tuple[Counter, Counter]:
    """(linear shapes (M, K, N) → count, attention bmm shapes (batch, M, K, N) → count)."""
    dim, heads, ws = cfg.embed_dim, cfg.num_heads, cfg.window_size
    grid = size // cfg.patch_size
    hd = dim // heads
    mlp = int(dim * cfg.mlp_ratio)
    lin: Counter = Counter()
    bmm: Counter = Counter()
    for i in range(cfg.depth):
        if i in cfg.global_attn_indexes:
            t, n, tw = grid * grid, heads, grid * grid
        else:
            wp = -(-grid // ws) * ws  # padded grid
            t, n, tw = wp * wp, heads * (wp // ws) ** 2, ws * ws
        lin[(t, dim, 3 * dim)] += 1
        lin[(t, dim, dim)] += 1
        lin[(grid * grid, dim, mlp)] += 1
        lin[(grid * grid, mlp, dim)] += 1
        bmm[(n, tw, hd, tw)] += 1  # q kᵀ
        bmm[(n, tw, tw, hd)] += 1  # softmax · v
    return lin, bmm


def best(fn, repeats: int, clock) -> float:
    fn()
    out = float("inf")
    for _ in range(repeats):
        t = clock()
        fn()
        out = min(out, clock() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="vit_b")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cpu-time", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    clock = time.process_time if args.cpu_time else time.perf_counter
    lin, bmm = shapes(CONFIGS[args.model], args.size)
    print(f"{args.model} at {args.size}², CPU class {cpu_info().describe()}, ")
    print(f"{torch.get_num_threads()} threads, clock {'CPU' if args.cpu_time else 'wall'}\n")
    print("| product | shape | count | GMAC each | addmm / bmm ms | GMAC/s | oneDNN packed ms |")
    print("|---|---|---|---|---|---|---|")
    total = packed_total = macs_total = 0.0
    with torch.inference_mode():
        for (m, k, n), c in sorted(lin.items()):
            x, w, b = torch.randn(m, k), torch.randn(n, k) * 0.02, torch.randn(n)
            wp = torch.ops.mkldnn._reorder_linear_weight(w, m)
            t = best(lambda x=x, w=w, b=b: F.linear(x, w, b), args.repeats, clock)
            tp = best(
                lambda x=x, wp=wp, b=b: torch.ops.mkldnn._linear_pointwise(
                    x, wp, b, "none", [], ""
                ),
                args.repeats,
                clock,
            )
            g = m * k * n / 1e9
            total, packed_total, macs_total = (
                total + c * t,
                packed_total + c * tp,
                macs_total + c * g,
            )
            print(
                f"| linear | {m}×{k} @ {k}×{n} | {c} | {g:.2f} | {t * 1e3:.1f} | "
                f"{g / t:.1f} | {tp * 1e3:.1f} |"
            )
        for (nb, m, k, n), c in sorted(bmm.items()):
            a, bb = torch.randn(nb, m, k), torch.randn(nb, k, n)
            out = torch.empty(nb, m, n)
            t = best(lambda a=a, bb=bb, out=out: torch.matmul(a, bb, out=out), args.repeats, clock)
            g = nb * m * k * n / 1e9
            total, packed_total, macs_total = (
                total + c * t,
                packed_total + c * t,
                macs_total + c * g,
            )
            print(
                f"| attention bmm | {nb}×({m}×{k} @ {k}×{n}) | {c} | {g:.2f} | "
                f"{t * 1e3:.1f} | {g / t:.1f} | – |"
            )
    print(
        f"\nmatrix products: {macs_total:.0f} GMAC; floor (addmm + bmm) {total:.2f} s, "
        f"with oneDNN packed linears {packed_total:.2f} s"
    )


if __name__ == "__main__":
    main()
