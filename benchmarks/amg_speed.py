"""Automatic mask generation: official SamAutomaticMaskGenerator vs ours, side by side.

One run, same image, same model weights. Each variant runs in its own subprocess so its
peak RSS (``resource.getrusage``) is its own:

* ``official``: segment-anything's generator (fp32);
* ``fp32``: ours, exact mode (same masks as the official);
* ``auto``: ours with ``precision="auto"`` (bf16 image encoder where the CPU has native
  bf16; the mask decoder stays fp32 unless ``--bf16-decoder``).

Times: ``embed`` = image encoder alone; ``decode+post`` = the generator run from that
embedding (the part the issue measured; with crop layers: the whole run minus one
embedding); ``total`` = their sum. Memory: peak RSS of the process during decode+post
(the kernel's peak mark is reset just before it) and that peak minus the RSS at its
start (model, image and embedding already in memory). Masks of every variant are
matched one-to-one with the official ones (IoU). Optionally a large slice (``--big``) is
run with ours only, to show bounded memory.

Usage::

    python benchmarks/amg_speed.py [--model demo|vit_b] [--size 512] [--points-per-side 32]
        [--threads 1] [--big 2048] [--pred-iou-thresh 0.88 ...] [--rounds 3]
        [--same-allocator]

``--model demo``: the packaged demo checkpoint (a trained small SAM; default thresholds
let its masks through). ``--model vit_b``: random weights, published vit_b decoder at
1024² input with a 2-block encoder (thresholds must be lowered, the official decoder
takes ~0.3 s per point on a small CPU: use a small ``--points-per-side``).
Prints a Markdown table (docs/amg.md).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

AMG_KEYS = ("points_per_side", "pred_iou_thresh", "stability_score_thresh", "crop_n_layers")


# ----------------------------------------------------------------------- child side
def load_pair(name: str, checkpoint: str | None = None):
    """(official module, config) for the benchmark model."""
    import dataclasses

    import torch

    from napari_sam.model.build import CONFIGS, SamConfig

    from oracle import build_official

    if name == "demo":
        from napari_sam import weights
        from napari_sam.model.checkpoint import extract_state_dict, read_checkpoint

        path = checkpoint or weights.fetch_weights("demo", progress=False)
        sd, stored = extract_state_dict(read_checkpoint(path), source=str(path))
        cfg = SamConfig.from_dict(stored)
        official = build_official(cfg)
        official.load_state_dict(sd)
    else:
        cfg = dataclasses.replace(CONFIGS["vit_b"], depth=2, global_attn_indexes=(1,))
        official = build_official(cfg, seed=0)
        with torch.no_grad():  # random IoU predictions ≈ -0.1: shift them above 0
            official.mask_decoder.iou_prediction_head.layers[-1].bias += 0.2
    return official.eval(), cfg


def bench_image(size: int, seed: int = 1) -> np.ndarray:
    from napari_sam.engine.image import to_uint8_rgb
    from napari_sam.synthetic import nuclei_2d

    img, _ = nuclei_2d((size, size), seed=seed)
    return to_uint8_rgb(img)


def child(args: argparse.Namespace) -> None:
    """One variant: time the embedding, then decode+post-processing from that embedding
    (crop layers: the whole generate minus one embedding), peak RSS of the latter."""
    import torch

    torch.set_num_threads(args.threads)
    official, cfg = load_pair(args.model, args.checkpoint)
    image = bench_image(args.size)
    kw = {k: getattr(args, k) for k in AMG_KEYS if getattr(args, k) is not None}
    kw["points_per_batch"] = args.points_per_batch
    crops = bool(kw.get("crop_n_layers"))
    if args.variant == "official":
        from segment_anything import SamAutomaticMaskGenerator

        gen = SamAutomaticMaskGenerator(official, **kw)
        embed = lambda: gen.predictor.set_image(image)  # noqa: E731
        run = lambda: gen.generate(image)  # noqa: E731
    else:
        from napari_sam.engine.amg import AutomaticMaskGenerator
        from napari_sam.engine.decode.predictor import Predictor

        from oracle import ours_from_official

        model = ours_from_official(official, cfg, precision=args.variant)
        if args.bf16_decoder and args.variant == "auto":
            kw["decoder_precision"] = "bf16"
        gen = AutomaticMaskGenerator(model, **kw)
        emb = [None]
        embed = lambda: emb.__setitem__(0, Predictor(model).compute_embedding(image))  # noqa: E731
        run = lambda: gen.generate(image if crops else emb[0])  # noqa: E731
    with torch.inference_mode():
        embed()  # warm-up (lazy init, allocator)
        t = time.perf_counter()
        embed()
        t_embed = time.perf_counter() - t
    if args.variant == "official" and not crops:
        # keep the embedding just computed: generate() would encode the image again
        gen.predictor.set_image = lambda *a, **k: None
        gen.predictor.reset_image = lambda: None
    base = reset_peak_rss()
    t = time.perf_counter()
    out = run()
    t_decode = time.perf_counter() - t
    peak = peak_rss_mb()
    for _ in range(args.repeats - 1):
        t = time.perf_counter()
        run()
        t_decode = min(t_decode, time.perf_counter() - t)
    if crops:
        t_decode -= t_embed
    shape = image.shape[:2]
    if args.variant == "official":
        masks = [o["segmentation"] for o in out]
        n_labels = None
    else:
        masks = [m.dense(shape) for m in out.masks]
        n_labels = len(out.records)
    packed = np.packbits(np.stack(masks).reshape(len(masks), -1), axis=1) if masks else None
    np.savez(args.out, masks=packed if packed is not None else np.zeros((0, 0), np.uint8))
    Path(args.out).with_suffix(".json").write_text(
        json.dumps(
            dict(
                embed=t_embed,
                total=t_embed + t_decode,
                n=len(masks),
                labels=n_labels,
                rss_mb=peak,
                rss_gen_mb=peak - base,
                precision=getattr(getattr(gen, "model", None), "precision", "fp32"),
            )
        )
    )


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def reset_peak_rss() -> float:
    """Reset the kernel's peak-RSS mark (Linux ``clear_refs``) so that the peak covers
    only what follows; returns the current RSS in MB."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_mb("VmRSS")
    except OSError:  # not Linux: fall back to getrusage (peak since process start)
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_rss_mb() -> float:
    try:
        return _status_mb("VmHWM")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------- parent side
def match(a: np.ndarray, b: np.ndarray, npix: int) -> tuple[int, float]:
    """One-to-one matching of packed masks: (#pairs with IoU ≥ 0.99, min IoU)."""
    from scipy.optimize import linear_sum_assignment

    if len(a) == 0 or len(b) == 0:
        return 0, float("nan")
    fa = np.unpackbits(a, axis=1)[:, :npix].astype(np.float32)
    fb = np.unpackbits(b, axis=1)[:, :npix].astype(np.float32)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None] - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    r, c = linear_sum_assignment(-iou)
    return int((iou[r, c] >= 0.99).sum()), float(iou[r, c].min())


def run_variant(args: argparse.Namespace, variant: str, size: int, tmp: Path) -> dict:
    import os

    env = dict(os.environ)
    if args.same_allocator:  # every variant, the official included, gets glibc's setting
        from napari_sam.engine.device import MMAP_THRESHOLD, TRIM_THRESHOLD

        env["MALLOC_MMAP_THRESHOLD_"] = str(MMAP_THRESHOLD)
        env["MALLOC_TRIM_THRESHOLD_"] = str(TRIM_THRESHOLD)
    out = tmp / f"{variant}_{size}.npz"
    cmd = [sys.executable, __file__, "--child", variant, "--out", str(out), "--size", str(size)]
    for k in (*AMG_KEYS, "model", "checkpoint", "threads", "points_per_batch", "repeats"):
        v = getattr(args, k)
        if v is not None:
            cmd += [f"--{k.replace('_', '-')}", str(v)]
    if args.bf16_decoder:
        cmd.append("--bf16-decoder")
    subprocess.run(cmd, check=True, env=env)
    res = json.loads(out.with_suffix(".json").read_text())
    res["masks"] = np.load(out)["masks"]
    return res


def decode_s(r: dict) -> float:
    """Seconds of decode + post-processing (the generator run minus the embedding)."""
    return r["total"] - r["embed"]


def fmt(s: float) -> str:
    return f"{s * 1000:.0f} ms" if s < 1 else f"{s:.2f} s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=("demo", "vit_b"), default="demo")
    ap.add_argument("--checkpoint", default=None, help="demo-like checkpoint file")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--points-per-side", type=int, default=None)
    ap.add_argument("--points-per-batch", type=int, default=64)
    ap.add_argument("--pred-iou-thresh", type=float, default=None)
    ap.add_argument("--stability-score-thresh", type=float, default=None)
    ap.add_argument("--crop-n-layers", type=int, default=None)
    ap.add_argument("--bf16-decoder", action="store_true")
    ap.add_argument("--repeats", type=int, default=1, help="time = min over repeats")
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run official, fp32, auto this many times in turn; the table keeps each "
        "variant's fastest round, and the speed-ups of every round are printed (the "
        "ratio within a round is the least sensitive to machine load)",
    )
    ap.add_argument(
        "--same-allocator",
        action="store_true",
        help="give every variant, the official included, the glibc setting our "
        "load_model applies (MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_)",
    )
    ap.add_argument("--big", type=int, default=0, help="also run ours on a big² slice")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        args.variant = args.child
        child(args)
        return
    import torch

    from napari_sam.engine.device import cpu_has_native_bf16

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        rounds = []
        for _ in range(args.rounds):
            rounds.append(
                {v: run_variant(args, v, args.size, tmp) for v in ("official", "fp32", "auto")}
            )
        res = {v: min((r[v] for r in rounds), key=decode_s) for v in rounds[0]}
        big = {v: run_variant(args, v, args.big, tmp) for v in ("fp32",)} if args.big else {}
    npix = args.size**2
    base = res["official"]
    settings = {k: getattr(args, k) for k in AMG_KEYS if getattr(args, k) is not None}
    print(
        f"\nmodel {args.model}, nuclei image {args.size}², generator settings: "
        f"{settings or 'official defaults'}; torch {torch.__version__}, "
        f"{platform.machine()}, {args.threads} thread(s), native bf16: {cpu_has_native_bf16()}, "
        f"auto = {res['auto']['precision']} encoder, "
        f"{'bf16' if args.bf16_decoder else 'fp32'} decoder\n"
    )
    print(
        "| variant | embed | decode+post | total | speed-up (decode+post) | masks | "
        "= official (IoU ≥ 0.99) | min IoU | objects | peak RSS | peak − start |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    t0 = decode_s(base)
    for name, r in res.items():
        dp = decode_s(r)
        same, worst = match(base["masks"], r["masks"], npix)
        print(
            f"| {name} | {fmt(r['embed'])} | {fmt(dp)} | {fmt(r['total'])} | {t0 / dp:.1f}× | "
            f"{r['n']} | {same} | {worst:.4f} | {r['labels'] if r['labels'] is not None else '–'} "
            f"| {r['rss_mb']:.0f} MB | {r['rss_gen_mb']:.0f} MB |"
        )
    for name, r in big.items():
        print(
            f"| {name}, {args.big}² slice | {fmt(r['embed'])} | {fmt(r['total'] - r['embed'])} | "
            f"{fmt(r['total'])} | – | {r['n']} | – | – | {r['labels']} | {r['rss_mb']:.0f} MB | "
            f"{r['rss_gen_mb']:.0f} MB |"
        )
    if args.rounds > 1:
        ratios = {
            v: [decode_s(r["official"]) / decode_s(r[v]) for r in rounds] for v in ("fp32", "auto")
        }
        for v, rs in ratios.items():
            print(
                f"\n{v}: speed-up per round "
                + ", ".join(f"{x:.1f}×" for x in rs)
                + f"; median {float(np.median(rs)):.1f}×",
                end="",
            )
        print(f"\n(table: each variant's fastest of {args.rounds} rounds)")
    if args.same_allocator:
        print("all variants ran with the same glibc allocator setting (--same-allocator)")


if __name__ == "__main__":
    main()
