"""Memory while clicking on lazy large inputs (issue 18): a 20000² uint16 plane and a
50 × 8192² uint16 stack, zarr on disk (chunks 512², zstd).

The input is written chunk by chunk (``tiled_large.lazy_array``): synthetic nuclei only
in a 1536² patch around each place clicked, the rest the array's fill value (never
written: nothing on disk). Then, in a fresh process: the demo model loaded (fp32) and
warmed up outside the session, the peak-RSS counter reset (``/proc/self/clear_refs``),
and a ``SegmentationSession(tiling="auto")`` with an embedding store clicks once at each
place (``--clicks``, each on a different tile; the stack: spread over the slices too),
reading the image through a wrapper that records every read's shape. Printed: peak RSS
(VmHWM) above the start-up RSS after the first / middle / last click, the RSS at the
end, the largest read — asserted to be one tile's outer region — and the tiles embedded
(asserted: one per click).

Usage::

    python benchmarks/tiled_click_memory.py plane|stack [--clicks 20]
        [--data /tmp/napari-sam-clicks] [--threads 1] [--keep]

Linux only (``/proc``); the data folder is deleted at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from tiled_large import FILL, RecordingReader, lazy_array, patches, site_origins


def rss_kib(field: str = "VmRSS") -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


# --------------------------------------------------------------------------- memory
def memory_sites(kind: str, n: int) -> tuple[tuple[int, ...], list[tuple[int, ...]]]:
    """The input's shape and ``n`` site origins ((slice...,) row, col)."""
    if kind == "plane":
        shape: tuple[int, ...] = (20000, 20000)
        return shape, site_origins(shape[-2:], n)
    shape = (50, 8192, 8192)
    places = site_origins(shape[-2:], n)
    slices = np.linspace(0, shape[0] - 1, n).round().astype(int)
    return shape, [(int(z), *rc) for z, rc in zip(slices, places, strict=True)]


def memory(args: argparse.Namespace) -> None:
    """Runs in a fresh process (the input exists): see the module docstring."""
    import zarr

    from napari_sam.engine.decode.predictor import Predictor
    from napari_sam.engine.loader import load_model
    from napari_sam.session import SegmentationSession

    shape, sites = memory_sites(args.kind, args.clicks)
    points = np.load(args.data / "clicks.npy")
    image = RecordingReader(zarr.open_array(str(args.data / "input.zarr"), mode="r"))
    model = load_model("demo", device="cpu", precision=args.precision)
    p = Predictor(model)  # warm-up, outside the session: nothing of it is cached there
    p.set_embedding(p.compute_embedding(np.full((256, 256), FILL, np.uint16), resize=False))
    p.predict(points=np.array([[128.0, 128.0]]), labels=np.ones(1, int), multimask=True)
    del p
    start = rss_kib()
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to now
    t = time.perf_counter()
    s = SegmentationSession(model, image, False, args.data / "store.zarr", tiling="auto")
    grid = s.grid
    assert grid is not None
    peaks, tiles, masked = [], set(), 0
    for k, (site, pt) in enumerate(zip(sites, points, strict=True)):
        index = tuple(site[:-2])
        pre = s.prompt(index, pt[None], np.ones(1, int), None, k)
        r0, c0, r1, c1 = pre.region
        masked += int(pre.mask[r0:r1, c0:c1].sum())
        tiles.add((*index, *pre.tile))
        assert s.embeddings.computed == len(tiles) == k + 1, "one tile embedded per click"
        peaks.append(rss_kib("VmHWM") - start)
        del pre
    dt = time.perf_counter() - t
    r0, c0, r1, c1 = grid.outer((0, 0))
    outer = (r1 - r0, c1 - c0)
    assert image.largest_shape == outer, (
        f"largest read {image.largest_shape} ≠ one outer region {outer}"
    )
    mid = len(peaks) // 2
    print(
        f"| {' × '.join(map(str, shape))} uint16 | {len(peaks)} clicks, {len(tiles)} tiles, "
        f"{len({t[:-2] for t in tiles})} slice(s) | {dt:.1f} s | "
        f"{peaks[0] / 1024:.0f} / {peaks[mid] / 1024:.0f} / {peaks[-1] / 1024:.0f} MiB "
        f"(start-up {start / 1024:.0f} MiB) | {rss_kib() / 1024:.0f} MiB "
        f"| {image.largest_shape} ({image.reads} reads) | {masked / len(peaks):.0f} px |"
    )


def memory_parent(args: argparse.Namespace) -> None:
    shape, sites = memory_sites(args.kind, args.clicks)
    pts = lazy_array(args.data / "input.zarr", shape, sites, patches(4))
    np.save(args.data / "clicks.npy", np.asarray(pts, float))
    disk = subprocess.run(
        ["du", "-sh", str(args.data / "input.zarr")], capture_output=True, text=True
    )
    print(f"input on disk: {disk.stdout.split()[0]}", flush=True)
    print(
        "| input (lazy zarr) | clicks | time | peak RSS above start-up after click 1 / "
        f"{len(sites) // 2 + 1} / {len(sites)} | RSS at the end | largest read (reads) "
        "| mean mask |"
    )
    print("|---|---|---:|---|---:|---|---:|", flush=True)
    cmd = [sys.executable, __file__, args.kind, "--child", "--data", str(args.data)]
    cmd += ["--threads", str(args.threads), "--clicks", str(args.clicks)]
    subprocess.run([*cmd, "--precision", args.precision], check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("kind", choices=("plane", "stack"))
    ap.add_argument("--data", type=Path, default=Path("/tmp/napari-sam-clicks"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--clicks", type=int, default=20)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.child:
        memory(args)
        return
    if args.data.exists():
        raise SystemExit(f"{args.data} exists: remove it or give another --data")
    args.data.mkdir(parents=True)
    try:
        memory_parent(args)
    finally:
        if not args.keep:
            shutil.rmtree(args.data)


if __name__ == "__main__":
    main()
