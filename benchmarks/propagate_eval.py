"""Propagation through a volume (napari_sam.engine.propagate) on held-out synthetic 3D
nuclei with the demo model: prompt-mode comparison, 3D IoU from one and two annotated
slices per nucleus (anisotropic and isotropic), and per-slice decode time for 1, 10 and
50 objects in one batched call.

    python benchmarks/propagate_eval.py                 # everything (a few minutes, 1 CPU thread)
    python benchmarks/propagate_eval.py --volumes 1     # quicker
    python benchmarks/propagate_eval.py --modes box+mask points --iou-stop 0.3 0.5

Seeds: one slice per nucleus = the middle slice of its z extent; two slices = the
slices at 1/4 and 3/4 of its extent. The 3D IoU of a nucleus compares the whole
predicted object (seed slices included) with the ground truth; every nucleus of the
volume counts (mean over nuclei, pooled over volumes). Results: docs/propagation.md.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from napari_sam.training.evaluate import ious_3d, seed_slices

# held-out 3D volumes: the demo model was trained on 2D images (data seed 1) only
CASES = {
    "anisotropic": {"shape": (24, 128, 128), "z_step": 2.5, "seed": 31_000},
    "isotropic": {"shape": (48, 128, 128), "z_step": 1.0, "seed": 32_000},
}


def volume(case: str, i: int) -> tuple[np.ndarray, np.ndarray]:
    from napari_sam.synthetic import nuclei_3d

    c = CASES[case]
    return nuclei_3d(c["shape"], seed=c["seed"] + i, z_step=c["z_step"])


class Embeddings:
    """z → embedding of one volume, computed once (encoder time recorded)."""

    def __init__(self, model, image: np.ndarray) -> None:
        from napari_sam.engine.decode.predictor import Predictor

        self.p, self.image, self.cache, self.seconds = Predictor(model), image, {}, 0.0

    def __call__(self, z: int):
        if z not in self.cache:
            t0 = time.perf_counter()
            self.cache[z] = self.p.compute_embedding(self.image[z])
            self.seconds += time.perf_counter() - t0
        return self.cache[z]


def run_case(model, case: str, n_volumes: int, n_seed: int, **kwargs) -> tuple[list[float], float]:
    """Pooled per-nucleus 3D IoUs and the mean propagation time per volume (s,
    embeddings precomputed)."""
    from napari_sam.engine.propagate import propagate

    ious, seconds = [], []
    for i in range(n_volumes):
        if (case, i) not in VOLUMES:
            VOLUMES[case, i] = volume(case, i)
        image, truth = VOLUMES[case, i]
        if (case, i) not in EMB:
            EMB[case, i] = Embeddings(model, image)
        emb = EMB[case, i]
        for z in range(image.shape[0]):
            emb(z)
        t0 = time.perf_counter()
        result = propagate(
            model,
            emb,
            seed_slices(truth, {1: (0.5,), 2: (0.25, 0.75)}[n_seed]),
            prefetch=False,
            **kwargs,
        )
        seconds.append(time.perf_counter() - t0)
        ious += ious_3d(result, truth)
    return ious, float(np.mean(seconds))


VOLUMES: dict = {}
EMB: dict = {}


def decode_times(model, counts=(1, 10, 50), repeats=9) -> dict[int, float]:
    """Median seconds of one batched decoder call (default-mode prompts) for B objects
    on one slice (prompt building included, as in the propagation loop)."""
    from napari_sam.engine.decode.predictor import Predictor
    from napari_sam.engine.propagate import DEFAULT_MODE
    from napari_sam.engine.propagate.prompts import build_prompts, parse_mode

    image, _ = volume("anisotropic", 0)
    z = image.shape[0] // 2
    p = Predictor(model)
    p.set_image(image[z])
    rng = np.random.default_rng(0)
    h, w = image.shape[1:]
    out = {}
    for b in counts:
        masks = []
        for _ in range(b):
            r, c = rng.integers(10, h - 30), rng.integers(10, w - 30)
            m = np.zeros((h, w), bool)
            m[r : r + 20, c : c + 20] = True
            masks.append(m)
        sam = model.sam
        parts, low = parse_mode(DEFAULT_MODE), sam.low_res_size
        logits = [None] * b
        kw = build_prompts(parts, masks, logits, sam.image_size, low, 0.1)
        p.predict_batch(multimask=False, **kw)  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            kw = build_prompts(parts, masks, logits, sam.image_size, low, 0.1)
            p.predict_batch(multimask=False, **kw)
            times.append(time.perf_counter() - t0)
        out[b] = float(np.median(times))
    return out


def main() -> None:
    import torch

    from napari_sam.engine.loader import load_model
    from napari_sam.engine.propagate.prompts import MODES

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="demo")
    ap.add_argument("--volumes", type=int, default=3, help="volumes per case")
    ap.add_argument("--modes", nargs="*", default=list(MODES))
    ap.add_argument("--iou-stop", type=float, nargs="*", default=[0.5])
    ap.add_argument("--shrink-stop", type=float, nargs="*", default=[0.5])
    ap.add_argument("--area-factor", type=float, default=2.5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-timing", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model, device="cpu", precision="fp32")

    print("## Prompt modes (1 annotated slice per nucleus, mean 3D IoU)\n")
    print("| mode | iou_stop | shrink_stop | anisotropic | isotropic | s / volume (an., iso.) |")
    print("|---|---|---|---|---|---|")
    for mode in args.modes:
        for stop in args.iou_stop:
            for shrink in args.shrink_stop:
                kw = {"mode": mode, "iou_stop": stop, "shrink_stop": shrink}
                kw["area_factor"] = args.area_factor
                a, ta = run_case(model, "anisotropic", args.volumes, 1, **kw)
                i, ti = run_case(model, "isotropic", args.volumes, 1, **kw)
                print(
                    f"| {mode} | {stop} | {shrink} | {np.mean(a):.3f} | {np.mean(i):.3f} "
                    f"| {ta:.2f}, {ti:.2f} |",
                    flush=True,
                )

    print("\n## Default mode: 3D IoU from 1 and 2 annotated slices per nucleus\n")
    print("| case | nuclei | 1 slice: mean | median | ≥ 0.8 | 2 slices: mean | median | ≥ 0.8 |")
    print("|---|---|---|---|---|---|---|---|")
    for case in CASES:
        one, _ = run_case(model, case, args.volumes, 1)
        two, _ = run_case(model, case, args.volumes, 2)
        cells = [
            f"{np.mean(x):.3f} | {np.median(x):.3f} | {np.mean(np.asarray(x) >= 0.8):.0%}"
            for x in (one, two)
        ]
        print(f"| {case} | {len(one)} | {cells[0]} | {cells[1]} |", flush=True)

    if not args.skip_timing:
        print("\n## Decoder time per slice (one batched call, default mode, CPU)\n")
        t = decode_times(model)
        print("| objects | ms / slice | ms / object | × the 1-object time |")
        print("|---|---|---|---|")
        for b, s in t.items():
            print(f"| {b} | {1e3 * s:.1f} | {1e3 * s / b:.2f} | {s / t[1]:.1f} |")
        enc = [e.seconds / len(e.cache) for e in EMB.values() if e.cache]
        if enc:
            print(f"\nimage encoder: {1e3 * np.mean(enc):.0f} ms / slice (for comparison)")


if __name__ == "__main__":
    main()
