"""Embedding-cache speed: reading a cached slice, precompute throughput, size on disk.

Three Markdown tables (paste into docs/benchmarks.md):

1. **Cached slice → ready to predict**: ``store.get(index)`` + ``Predictor.set_embedding``
   for a ViT-B-shaped embedding (256 × 64 × 64, 1024² model input) stored as float16 and
   as float32, median / p90 over the slices of a stack (target ≤ 20 ms), with a
   breakdown of ``get`` and, for reference, ``put`` and the first single-point
   ``predict`` after ``set_embedding``. The two dtypes are measured interleaved, slice
   by slice, so machine load affects both alike.
2. **Precompute throughput**: :func:`napari_sam.store.precompute` on a small stack with a
   small model, locally (``scheduler=None``) and on a 2-worker ``LocalCluster``
   (``scheduler=2``, and a cluster started and loaded beforehand), with and without the
   start-up cost.
3. **Store size per slice** (float16 / float32), from the store directories.

Model: the ViT-B architecture with random weights and reduced depth (2 blocks, 1 global)
— the embedding, prompt encoder and mask decoder are exactly ViT-B's, only the encoder
is shallower, which does not matter for the read path. The store is filled with
random-valued embeddings carrying the model's weights hash (the point is the store's
read path, not the encoder). The precompute model is the same architecture at a small
input size (default 256², embedding 256 × 16 × 16), saved as a checkpoint and loaded
through a :class:`~napari_sam.store.ModelSpec`, as the Dask workers do.

Run::

    .venv/bin/python benchmarks/store_speed.py [--slices 30] [--size 1024]
        [--pre-slices 8] [--pre-size 256] [--pre-image-size 256] [--workers 2]
        [--threads N]

On a machine shared with other work, pass ``--threads 1``: with more torch threads than
free cores, PyTorch's OpenMP threads wait for each other and timings become erratic.

Reads come from the OS page cache (the chunks were just written); a cold read adds the
disk's time for one 2 / 4 MiB file.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import zarr

from napari_sam.engine.decode.predictor import Predictor
from napari_sam.engine.embedding import Embedding
from napari_sam.engine.loader import SamModel, wrap_model
from napari_sam.engine.transforms import resized_shape
from napari_sam.model.build import CONFIGS, SamConfig, build_sam
from napari_sam.store import EmbeddingStore, ModelSpec, fingerprint, precompute
from napari_sam.store.cluster import worker_model
from napari_sam.store.schema import chunk_checksum

DTYPES = ("float16", "float32")


# ----------------------------------------------------------------------------- helpers
def ms(seconds: list[float]) -> tuple[float, float]:
    """(median, p90) in milliseconds."""
    a = np.asarray(seconds) * 1e3
    return float(np.median(a)), float(np.percentile(a, 90))


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def clock(fn: Callable[[], object]) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def reduced_vit_b(image_size: int = 1024) -> SamConfig:
    return dataclasses.replace(
        CONFIGS["vit_b"], image_size=image_size, depth=2, global_attn_indexes=(1,)
    )


def make_model(cfg: SamConfig, name: str, seed: int = 0) -> SamModel:
    torch.manual_seed(seed)
    return wrap_model(build_sam(cfg), cfg, name, "cpu", "fp32")


def disk_usage(path: Path) -> tuple[int, int]:
    """(apparent bytes, allocated bytes) of the files under ``path``."""
    apparent = allocated = 0
    for root, _, files in os.walk(path):
        for f in files:
            st = os.stat(os.path.join(root, f))
            apparent += st.st_size
            allocated += st.st_blocks * 512
    return apparent, allocated


def load_line(label: str) -> str:
    one, five, fifteen = os.getloadavg()
    cores = os.cpu_count() or 1
    busy = "under load" if one > 0.5 * cores else "mostly idle"
    return (
        f"{label}: load average {one:.2f} / {five:.2f} / {fifteen:.2f} "
        f"(1 / 5 / 15 min) on {cores} cores — {busy}"
    )


# ------------------------------------------------------------------- 1. read path
def bench_read(args: argparse.Namespace, tmp: Path) -> dict[str, Path]:
    cfg = reduced_vit_b(1024)
    model = make_model(cfg, "vit_b-depth2")
    predictor = Predictor(model)
    rng = np.random.default_rng(0)
    n, size = args.slices, args.size
    stack = rng.integers(0, 40000, size=(n, size, size), dtype=np.uint16)
    input_size = resized_shape(size, size, cfg.image_size)
    shape = (1, cfg.prompt_embed_dim, cfg.embedding_size, cfg.embedding_size)

    paths = {dt: tmp / f"read-{dt}.zarr" for dt in DTYPES}
    stores = {dt: EmbeddingStore.open(p, model, image=stack, dtype=dt) for dt, p in paths.items()}
    put_t: dict[str, list[float]] = {dt: [] for dt in DTYPES}
    g = torch.Generator().manual_seed(1)
    for i in range(n):
        feats = torch.randn(shape, generator=g) * 0.5
        emb = Embedding(feats, (size, size), input_size, model.weights_hash)
        for dt in DTYPES:
            put_t[dt].append(clock(lambda dt=dt, i=i, emb=emb: stores[dt].put((i,), emb))[0])

    # reopen as the GUI would; warm up the decoder once
    stores = {dt: EmbeddingStore.open(p, model, image=stack, mode="r") for dt, p in paths.items()}
    arrays = {dt: zarr.open_array(p / "embeddings", mode="r") for dt, p in paths.items()}
    predictor.set_embedding(stores["float32"].get((0,)))
    point = dict(points=[[size * 0.4, size * 0.6]], labels=[1])
    predictor.predict(**point)

    keys = ("get", "set", "ready", "predict", "fp", "read", "checksum", "astype")
    t: dict[str, dict[str, list[float]]] = {dt: {k: [] for k in keys} for dt in DTYPES}
    for i in range(n):
        for dt in DTYPES:
            r = t[dt]
            dg, emb = clock(lambda dt=dt, i=i: stores[dt].get((i,)))
            assert emb is not None, f"slice {i} missing from the {dt} store"
            ds, _ = clock(lambda emb=emb: predictor.set_embedding(emb))
            dp, _ = clock(lambda: predictor.predict(**point))
            r["get"].append(dg)
            r["set"].append(ds)
            r["ready"].append(dg + ds)
            r["predict"].append(dp)
            # breakdown of get (same steps, timed one by one)
            r["fp"].append(clock(lambda i=i: fingerprint(stack[i]))[0])
            dr, values = clock(lambda dt=dt, i=i: np.asarray(arrays[dt][i]))
            r["read"].append(dr)
            r["checksum"].append(clock(lambda v=values: chunk_checksum(v))[0])
            r["astype"].append(
                clock(lambda v=values: torch.from_numpy(v.astype(np.float32))[None])[0]
            )

    print(
        f"\n### 1. Cached slice → ready to predict ({n} slices of {size}×{size} uint16, "
        f"embedding {shape[1]}×{shape[2]}×{shape[3]}; median / p90 ms)\n"
    )
    print("| step | float16 | float32 |")
    print("|---|---|---|")

    def row(label: str, key: str, bold: bool = False) -> None:
        cells = []
        for dt in DTYPES:
            med, p90 = ms(t[dt][key] if key else put_t[dt])
            cell = f"{med:.1f} / {p90:.1f}"
            cells.append(f"**{cell}**" if bold else cell)
        print(f"| {label} | " + " | ".join(cells) + " |")

    row("**`store.get` + `set_embedding`** (target ≤ 20)", "ready", bold=True)
    row("`store.get(index)`", "get")
    row("  · fingerprint of the slice (xxh3-128)", "fp")
    row("  · zarr chunk read", "read")
    row("  · chunk checksum (xxh3-64)", "checksum")
    row("  · to float32 tensor", "astype")
    row("`Predictor.set_embedding(emb)`", "set")
    row("first `predict` after it (1 point, 3 masks)", "predict")
    row("`store.put(index, emb)` (for reference)", "")
    return paths


# ------------------------------------------------------------- 2. precompute
def timed_precompute(path: Path, image: np.ndarray, spec: ModelSpec, scheduler: object) -> dict:
    t0 = time.perf_counter()
    first = last = None
    done = 0
    for p in precompute(path, image, spec, scheduler=scheduler, dtype="float16"):
        now = time.perf_counter()
        if first is None:
            first = now
        last, done = now, p.done
    end = time.perf_counter()
    assert done == len(image), f"{done} of {len(image)} slices computed"
    return {"startup": first - t0, "compute": last - first, "shutdown": end - last}


def bench_precompute(args: argparse.Namespace, tmp: Path) -> None:
    from distributed import Client, LocalCluster

    cfg = reduced_vit_b(args.pre_image_size)
    model = make_model(cfg, "vit_b-small")
    ckpt = tmp / "vit_b_small.pt"
    torch.save({"config": cfg.to_dict(), "model": model.sam.state_dict()}, ckpt)
    spec = ModelSpec("vit_b_small", str(ckpt), "cpu", "fp32")
    n, size = args.pre_slices, args.pre_size
    rng = np.random.default_rng(2)
    stack = rng.integers(0, 40000, size=(n, size, size), dtype=np.uint16)

    rows = []
    r = timed_precompute(tmp / "pre-local.zarr", stack, spec, None)
    rows.append(("local, `scheduler=None`", r, "model load + store creation"))

    w = args.workers
    r = timed_precompute(tmp / "pre-cluster.zarr", stack, spec, w)
    rows.append(
        (
            f"{w}-worker LocalCluster, `scheduler={w}`",
            r,
            "cluster start + model load on 1 worker (the other loads in its first task)",
        )
    )

    # same cluster settings as precompute's, started and loaded before timing
    threads = str(max(1, (os.cpu_count() or 1) // w))
    t0 = time.perf_counter()
    cluster = LocalCluster(
        n_workers=w,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        env={"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads},
    )
    client = Client(cluster, timeout="20s")
    t1 = time.perf_counter()
    client.run(worker_model, spec)  # load the model once in every worker
    t2 = time.perf_counter()
    try:
        r = timed_precompute(tmp / "pre-warm.zarr", stack, spec, client)
    finally:
        t3 = time.perf_counter()
        client.close()
        cluster.close()
        t4 = time.perf_counter()
    r["startup"] += t2 - t0
    r["shutdown"] = t4 - t3
    rows.append(
        (
            f"{w}-worker LocalCluster, started beforehand (`scheduler=client`)",
            r,
            f"cluster start {t1 - t0:.1f} s + model load on all workers {t2 - t1:.1f} s",
        )
    )

    print(
        f"\n### 2. Precompute throughput ({n} slices of {size}×{size} uint16, ViT-B "
        f"architecture at {cfg.image_size}² input, 2 blocks; embedding "
        f"{cfg.prompt_embed_dim}×{cfg.embedding_size}×{cfg.embedding_size}, float16 store)\n"
    )
    print(
        "| run | start-up s | compute s | shutdown s | total s | slices/s excl. start-up "
        "| slices/s incl. start-up | start-up is |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for label, r, what in rows:
        total = r["startup"] + r["compute"] + r["shutdown"]
        print(
            f"| {label} | {r['startup']:.2f} | {r['compute']:.2f} | {r['shutdown']:.2f} | "
            f"{total:.2f} | {n / r['compute']:.2f} | {n / total:.2f} | {what} |"
        )
    print(
        f"\nLocal run: {plural(torch.get_num_threads(), 'torch thread')}; each of the {w} "
        f"workers: {plural(int(threads), 'thread')} (cpu_count // workers). On a "
        f"{os.cpu_count()}-core machine {w} workers share the same cores as one local "
        "process, so they cannot beat local by much, and the cluster adds start-up cost "
        "(new processes importing torch, loading the model) and per-task overhead "
        "(scheduling, opening the store, each worker's first forward pass); a cluster pays "
        "off with more cores / GPUs per worker, or many nodes."
    )


# ------------------------------------------------------------------------ 3. sizes
def bench_size(paths: dict[str, Path], n: int) -> None:
    print(f"\n### 3. Store size per slice (the stores of part 1, {n} slices)\n")
    print(
        "| storage dtype | embedding chunk / slice | marker / slice | metadata / store "
        "| total / slice (apparent) | total / slice (allocated on disk) |"
    )
    print("|---|---|---|---|---|---|")
    for dt, p in paths.items():
        emb, _ = disk_usage(p / "embeddings")
        mark, _ = disk_usage(p / "complete")
        meta = sum(f.stat().st_size for f in p.rglob("zarr.json"))
        apparent, allocated = disk_usage(p)
        print(
            f"| {dt} | {(emb - (p / 'embeddings' / 'zarr.json').stat().st_size) / n:,.0f} B | "
            f"{(mark - (p / 'complete' / 'zarr.json').stat().st_size) / n:,.0f} B | "
            f"{meta:,} B | {apparent / n / 2**20:.3f} MiB | {allocated / n / 2**20:.3f} MiB |"
        )


# ---------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--slices", type=int, default=30, help="slices for the read path")
    ap.add_argument("--size", type=int, default=1024, help="slice side for the read path")
    ap.add_argument("--pre-slices", type=int, default=8, help="slices to precompute")
    ap.add_argument("--pre-size", type=int, default=256, help="slice side to precompute")
    ap.add_argument("--pre-image-size", type=int, default=256, help="precompute model input")
    ap.add_argument("--workers", type=int, default=2, help="LocalCluster workers")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--skip-precompute", action="store_true")
    ap.add_argument("--tmp", default=None, help="directory for the stores (default: a temp dir)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    print("### Machine\n")
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__} with {plural(torch.get_num_threads(), 'thread')}, "
        f"zarr {zarr.__version__}, Python {platform.python_version()}, {sys.platform}"
    )
    print(f"\n{load_line('start')}")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="napari-sam-store-speed-", dir=args.tmp) as d:
        tmp = Path(d)
        paths = bench_read(args, tmp)
        if not args.skip_precompute:
            bench_precompute(args, tmp)
        bench_size(paths, args.slices)
    print(f"\n{load_line('end')}; whole run {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
