"""Export memory: a lazy label volume larger than 2 GB (a zarr array on disk) exported to
OME-Zarr (with its pyramid) and to OME-TIFF (BigTIFF), each with its object table, in a
fresh process that records its peak RSS above the RSS it started the export with, and
the time. Prints a Markdown table (docs/benchmarks.md).

The volume (default 128 × 2048 × 2048 uint32 = 2 GiB, chunks 16 × 256 × 256) holds
synthetic box objects, written slab by slab (never whole in memory); objects cross
chunk and slab borders. It is made once in --work and reused.

Run::

    .venv/bin/python benchmarks/export_memory.py [--work /tmp/napari-sam-export-bench]
        [--shape 128 2048 2048] [--objects 3000] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CHUNKS = (16, 256, 256)


def make_volume(path: Path, shape: tuple[int, int, int], n_objects: int, seed: int = 0) -> None:
    """Box objects of 4–24 slices × 20–120² px, written per slab of CHUNKS[0] slices."""
    import zarr

    rng = np.random.default_rng(seed)
    z0 = rng.integers(0, shape[0], n_objects)
    dz = rng.integers(4, 25, n_objects)
    r0 = rng.integers(0, shape[1] - 20, n_objects)
    c0 = rng.integers(0, shape[2] - 20, n_objects)
    h = rng.integers(20, 121, n_objects)
    w = rng.integers(20, 121, n_objects)
    arr = zarr.create_array(str(path), shape=shape, chunks=CHUNKS, dtype="uint32",
                            fill_value=0, overwrite=True)
    for s in range(0, shape[0], CHUNKS[0]):
        e = min(s + CHUNKS[0], shape[0])
        slab = np.zeros((e - s, *shape[1:]), np.uint32)
        for i in np.flatnonzero((z0 < e) & (z0 + dz > s)):
            slab[max(z0[i] - s, 0): min(z0[i] + dz[i] - s, e - s),
                 r0[i]: r0[i] + h[i], c0[i]: c0[i] + w[i]] = i + 1
        arr[s:e] = slab
        del slab


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(src: str, out: str) -> None:
    """In a fresh process: export, print JSON with start RSS, peak RSS and time."""
    # the libraries the export uses, imported before the start RSS is taken
    import dask.array  # noqa: F401
    import ngff_zarr  # noqa: F401
    import pandas  # noqa: F401
    import skimage.measure  # noqa: F401
    import tifffile
    import zarr

    from napari_sam.export import Calibration, export_labels

    labels = zarr.open_array(src, mode="r")
    cal = Calibration.create(3, (2.0, 0.5, 0.5), (10.0, 100.0, -50.0), ["micrometer"] * 3)
    start = rss_mb()
    t0 = time.perf_counter()
    written = export_labels(out, labels, cal, overwrite=True)
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    size = sum(f.stat().st_size for p in written for f in
               ([p] if p.is_file() else p.rglob("*")) if f.is_file())
    big = None
    if out.endswith(".tif"):
        with tifffile.TiffFile(out) as tif:
            big = tif.is_bigtiff
    print(json.dumps({"start_mb": start, "peak_mb": peak, "seconds": dt, "bigtiff": big,
                      "bytes": size, "written": [str(p) for p in written]}))


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="/tmp/napari-sam-export-bench")
    p.add_argument("--shape", type=int, nargs=3, default=[128, 2048, 2048])
    p.add_argument("--objects", type=int, default=3000)
    p.add_argument("--keep", action="store_true", help="keep the outputs")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(*args.child)
        return
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    src = work / f"labels_{'x'.join(map(str, args.shape))}.zarr"
    if not (src / "zarr.json").exists():
        t0 = time.perf_counter()
        make_volume(src, tuple(args.shape), args.objects)
        print(f"volume made in {time.perf_counter() - t0:.0f} s: {src}", file=sys.stderr)
    nbytes = int(np.prod(args.shape)) * 4
    print(f"labels: {tuple(args.shape)} uint32 = {nbytes / 2**30:.2f} GiB, zarr chunks "
          f"{CHUNKS}; CPU: {cpu_name()}, {os.cpu_count()} cores")
    print()
    print("| export | time (s) | peak RSS above start (MB) | RSS at start (MB) | on disk (MB) |")
    print("|---|---:|---:|---:|---:|")
    for fmt, name in (("OME-Zarr + pyramid + table", "out.ome.zarr"),
                      ("OME-TIFF + table", "out.tif")):
        out = work / name
        r = subprocess.run([sys.executable, __file__, "--child", str(src), str(out)],
                           capture_output=True, text=True, check=True)
        res = json.loads(r.stdout.strip().splitlines()[-1])
        if res["bigtiff"]:
            fmt = fmt.replace("OME-TIFF", "OME-TIFF (BigTIFF)")
        print(f"| {fmt} | {res['seconds']:.0f} | {res['peak_mb'] - res['start_mb']:.0f} | "
              f"{res['start_mb']:.0f} | {res['bytes'] / 2**20:.1f} |", flush=True)
        if not args.keep:
            for w in res["written"]:
                path = Path(w)
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
