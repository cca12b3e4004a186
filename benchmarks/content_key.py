"""Cost of the default store's content key (``napari_sam.store.paths.content_key``).

Writes a uint16 ZYX stack (default 200 × 2048 × 2048, random data) as zarr arrays with
several chunkings into a temporary directory, then times ``content_key`` on the zarr
array (re-opened each repeat, so nothing is cached in the array object), on a dask array
over it, and on the stack in RAM (numpy). Prints the median of the repeats in ms.

Run::

    .venv/bin/python benchmarks/content_key.py [--shape 200 2048 2048] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import dask.array as da
import numpy as np
import zarr

from napari_sam.store.paths import CONTENT_SAMPLES, content_key
from napari_sam.store.slicing import SliceLayout


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=(200, 2048, 2048))
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    shape = tuple(args.shape)
    layout = SliceLayout.for_shape(shape)
    n, h, w = shape
    chunkings = [(1, h, w), (1, min(h, 512), min(w, 512)), (min(n, 16), min(h, 256), min(w, 256))]
    rng = np.random.default_rng(0)
    print(f"content_key of a {shape} uint16 stack, {CONTENT_SAMPLES} sampled slices")
    print(f"{'array':32s} {'ms':>8s}")
    with tempfile.TemporaryDirectory() as tmp:
        for chunks in chunkings:
            path = Path(tmp) / f"stack-{'x'.join(map(str, chunks))}.zarr"
            arr = zarr.create_array(path, shape=shape, chunks=chunks, dtype="uint16")
            block = rng.integers(0, 4000, (chunks[0], h, w), dtype=np.uint16)
            for z in range(0, n, chunks[0]):
                arr[z : z + chunks[0]] = block[: min(chunks[0], n - z)]

            def on_zarr(path=path):
                content_key(zarr.open_array(path, mode="r"), layout)

            lazy = da.from_zarr(zarr.open_array(path, mode="r"))
            print(f"{'zarr chunks ' + str(chunks):32s} {_median_ms(on_zarr, args.repeats):8.0f}")
            ms = _median_ms(lambda lazy=lazy: content_key(lazy, layout), args.repeats)
            print(f"{'dask over zarr ' + str(chunks):32s} {ms:8.0f}")
        ram = np.asarray(zarr.open_array(path, mode="r")[:])
        print(f"{'numpy (in RAM)':32s} {_median_ms(lambda: content_key(ram, layout), 3):8.0f}")


if __name__ == "__main__":
    main()
