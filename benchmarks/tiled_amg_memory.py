"""Memory of tiled automatic masks on a lazy 20000 × 20000 uint16 plane (zarr).

1. Once: ``nuclei_large((20000, 20000), (8, 40), seed=20000)`` is rendered block by
   block into ``DATA/nuclei_20000.zarr`` (arrays ``image`` uint16 and ``labels`` int32,
   chunks 512², zstd) — a few minutes, a few hundred MB on disk.
2. In a fresh process (so start-up and generation do not count): the demo model is
   loaded (fp32, ``DEMO_PARAMS``), one tile is segmented to warm up, then the peak-RSS
   counter is reset (``/proc/self/clear_refs``) and ``TiledAmg`` segments every tile of
   a region (``--region 4096`` = the 4096² square at the plane's centre, or ``full``)
   reading the image through a wrapper that records the largest read, writing into a
   zarr labels array (uint32, chunks 512²). Printed: tiles, time, objects, peak RSS
   above the start-up RSS, the largest read / write, and the F1 inside the region
   (``object_f1`` on the region minus a 64-px margin, computed after the peak).

Usage::

    python benchmarks/tiled_amg_memory.py [--data /tmp/napari-sam-bench] [--region 4096|full]
        [--threads 1]

Linux only (``/proc``); prints a Markdown table row.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SHAPE = (20000, 20000)
SEED = 20000
CHUNK = 512


def rss_kib(field: str = "VmRSS") -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def generate(path: Path) -> None:
    import zarr

    from napari_sam.synthetic_large import LargeNuclei

    t = time.perf_counter()
    scene = LargeNuclei(SHAPE, (8, 40), SEED)
    print(f"geometry: {scene.n_nuclei} nuclei in {time.perf_counter() - t:.0f} s", flush=True)
    tmp = path.with_name(path.name + ".partial")
    group = zarr.open_group(str(tmp), mode="w")
    image = group.create_array("image", shape=SHAPE, chunks=(CHUNK, CHUNK), dtype="uint16")
    labels = group.create_array("labels", shape=SHAPE, chunks=(CHUNK, CHUNK), dtype="int32")
    for done, total in scene.write(image, labels):
        if done % 100 == 0 or done == total:
            print(f"  blocks {done}/{total}, {time.perf_counter() - t:.0f} s", flush=True)
    tmp.rename(path)


class RecordingReader:
    """Read-only array-like over a zarr array that records the largest read."""

    def __init__(self, array) -> None:
        self.array, self.shape, self.dtype = array, array.shape, array.dtype
        self.largest = 0

    def __getitem__(self, key):
        out = np.asarray(self.array[key])
        self.largest = max(self.largest, out.size)
        return out


def measure(path: Path, region_arg: str, threads: int) -> None:
    import torch
    import zarr

    from napari_sam.engine.amg import DEMO_PARAMS, AutomaticMaskGenerator
    from napari_sam.engine.amg.tiled import TiledAmg
    from napari_sam.engine.decode.predictor import Predictor
    from napari_sam.engine.loader import load_model
    from napari_sam.engine.metrics import object_f1
    from napari_sam.engine.tiling import TileGrid

    torch.set_num_threads(threads)
    group = zarr.open_group(str(path), mode="r")
    image = RecordingReader(group["image"])
    out_path = path.with_name("labels_out.zarr")
    out = zarr.create_array(
        str(out_path),
        shape=SHAPE,
        chunks=(CHUNK, CHUNK),
        dtype="uint32",
        fill_value=0,
        overwrite=True,
    )
    model = load_model("demo", device="cpu", precision="fp32")
    amg = AutomaticMaskGenerator(model, **DEMO_PARAMS)
    p = Predictor(model)
    grid = TileGrid.for_model(SHAPE, model.sam.image_size)
    assert grid is not None
    amg.generate(p.compute_embedding(grid.read(image, (0, 0)), resize=False))  # warm-up
    if region_arg == "full":
        region = (0, 0, *SHAPE)
    else:
        n = int(region_arg)
        r0 = (SHAPE[0] - n) // 2
        region = (r0, r0, r0 + n, r0 + n)
    tiles = grid.tiles_in(region)
    start = rss_kib()
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to now
    t = time.perf_counter()
    run = TiledAmg(
        amg,
        grid,
        lambda tile: p.compute_embedding(grid.read(image, tile), resize=False),
        out=out,
        tiles=tiles,
    )
    for done, total, _ in run.run():
        if done and done % 200 == 0:
            print(
                f"  tiles {done}/{total}, {time.perf_counter() - t:.0f} s, "
                f"peak +{(rss_kib('VmHWM') - start) / 1024:.0f} MiB",
                flush=True,
            )
    dt = time.perf_counter() - t
    peak = rss_kib("VmHWM") - start
    m = 64
    r0, c0, r1, c1 = region
    inner = np.s_[r0 + m : r1 - m, c0 + m : c1 - m]
    f1 = "–"
    if (r1 - r0) * (c1 - c0) <= 8192**2:
        tp, npred, ntrue = object_f1(np.asarray(out[inner]), np.asarray(group["labels"][inner]))
        f1 = f"{2 * tp / (npred + ntrue):.3f} ({tp}/{npred}/{ntrue})"
    outer = (grid.tile[0] + 2 * grid.halo[0]) * (grid.tile[1] + 2 * grid.halo[1])
    print(
        "| region | tiles | time | objects | peak RSS above start-up | largest image read "
        "| F1@0.5 in the region |"
    )
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {r1 - r0} × {c1 - c0} | {len(tiles)} | {dt / 60:.1f} min ({dt / len(tiles):.2f} s "
        f"/ tile) | {run.n_objects} | {peak / 1024:.0f} MiB (start-up {start / 1024:.0f} MiB) "
        f"| {image.largest} px (one outer region: {outer} px) | {f1} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=Path("/tmp/napari-sam-bench"))
    ap.add_argument("--region", default="4096", help="side of the central square, or 'full'")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    path = args.data / "nuclei_20000.zarr"
    if args.measure:
        measure(path, args.region, args.threads)
        return
    if not path.exists():
        args.data.mkdir(parents=True, exist_ok=True)
        generate(path)
    cmd = [
        sys.executable,
        __file__,
        "--measure",
        "--data",
        str(args.data),
        "--region",
        args.region,
        "--threads",
        str(args.threads),
    ]
    subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()
