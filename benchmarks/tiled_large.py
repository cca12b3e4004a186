"""Large tiled images (issue 18): click latency and whole-plane precompute.

Inputs are lazy zarr arrays on disk (uint16, chunks 512², zstd), written chunk by chunk:
real synthetic nuclei (``LargeNuclei``, 8–40 px) are rendered only in patches around the
places clicked (3 × 3 chunks each); the rest of the plane is the array's constant fill
value (chunks never written: nothing on disk). ``precompute`` renders its whole plane.
Demo model (256-px input, tiles 192 + halo 32), fp32 unless ``--precision``. Memory
while clicking on 20000² planes and 50 × 8192² stacks: ``tiled_click_memory.py``.

``clicks`` — click → preview on a never-embedded 8192² plane, fresh session with an empty
store: per site (``--sites``, each its own tile) the wall time of ``session.prompt`` for
one point beside, in the same run on the same tile, the outer region's read alone, one
tile embedding alone, one decode alone (``set_embedding`` + ``predict``, as the session
does for a new tile), the same click in a RAM-only session and the widget's ``outline``
of the returned (plane-sized) mask; then a 2nd click on the same tile (embedding cached)
and, after ``tiles_around`` (the tile's ring of 8 neighbours), a click on a neighbour
tile. Asserted: a click on a new tile embeds one tile, the neighbour click none.
Medians over the sites.

``precompute`` — every tile of a ``--size``² plane into a store: locally
(``EmbeddingProvider.precompute``, ``--threads`` torch threads) and on a Dask
LocalCluster (``store.precompute(..., scheduler=--workers)``, what ``napari-sam embed
--workers N`` runs: N processes × 1 thread), first with Dask's own allocator setting
(as before commit e0e2f0d), then with ours; tiles/s of each, then each Dask store
compared with the local one entry by entry.

``worker-encode`` — one tile embedding per call (1 thread) here vs in a LocalCluster
worker with Dask's allocator setting vs with ours, ``--rounds`` times alternated:
ms per call and minor page faults per call.

Usage::

    python benchmarks/tiled_large.py clicks|precompute|worker-encode
        [--data /tmp/napari-sam-large] [--threads 1] [--sites 8] [--size 4096]
        [--workers 2] [--rounds 3] [--keep]

The data folder is deleted at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path
from statistics import median

import numpy as np

CHUNK = 512
PATCH = 1536  # rendered square around each click (3 × 3 chunks)
FILL = 300  # constant value of the never-written chunks


class RecordingReader:
    """Read-only array-like over a zarr array that records the largest read (in pixels
    and its shape); a whole-array conversion is recorded as a read of everything."""

    def __init__(self, array) -> None:
        self.array, self.shape, self.dtype = array, array.shape, array.dtype
        self.ndim = len(self.shape)
        self.largest, self.largest_shape, self.reads = 0, (), 0

    def _record(self, out: np.ndarray) -> np.ndarray:
        self.reads += 1
        if out.size > self.largest:
            self.largest, self.largest_shape = out.size, out.shape
        return out

    def __getitem__(self, key):
        return self._record(np.asarray(self.array[key]))

    def __array__(self, dtype=None, copy=None):
        return self._record(np.asarray(self.array[...], dtype=dtype))


# --------------------------------------------------------------------------- inputs
def patches(n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` different rendered nuclei patches (image uint16, labels) of PATCH²."""
    from napari_sam.synthetic_large import LargeNuclei

    return [
        LargeNuclei((PATCH, PATCH), (8, 40), seed=100 + k).region(0, 0, PATCH, PATCH)
        for k in range(n)
    ]


def site_origins(plane: tuple[int, int], n: int) -> list[tuple[int, int]]:
    """``n`` chunk-aligned patch origins spread over the plane (row-major grid)."""
    rows = int(np.ceil(np.sqrt(n)))
    cols = int(np.ceil(n / rows))
    r = np.linspace(CHUNK, plane[0] - PATCH - CHUNK, rows) // CHUNK * CHUNK
    c = np.linspace(CHUNK, plane[1] - PATCH - CHUNK, cols) // CHUNK * CHUNK
    return [(int(a), int(b)) for a in r for b in c][:n]


def central_nucleus(labels: np.ndarray, origin: tuple[int, int], within: int = 64) -> np.ndarray:
    """Plane (row, col) of the interior point of the nucleus nearest the patch centre
    (its interior point within ``within`` px of the centre on both axes)."""
    from napari_sam.engine.metrics import interior_point

    c = PATCH // 2
    win = labels[c - within : c + within, c - within : c + within]
    ids, counts = np.unique(win[win > 0], return_counts=True)
    for k in ids[np.argsort(-counts)]:
        p = interior_point(labels == k)
        if abs(p[0] - c) < within and abs(p[1] - c) < within:
            return p + np.asarray(origin)
    raise RuntimeError("no nucleus near the patch centre")


def nucleus_in(labels: np.ndarray, origin: tuple[int, int], region, avoid=None) -> np.ndarray:
    """Plane (row, col) of the interior point of the largest nucleus lying wholly in
    ``region`` (plane coordinates, inside the patch), other than the one under ``avoid``."""
    from napari_sam.engine.metrics import interior_point

    r0, c0, r1, c1 = (v - o for v, o in zip(region, (*origin, *origin), strict=True))
    crop = labels[r0:r1, c0:c1]
    ids, counts = np.unique(crop[crop > 0], return_counts=True)
    skip = None if avoid is None else labels[tuple(np.asarray(avoid, int) - origin)]
    for k in ids[np.argsort(-counts)]:
        if k != skip and (crop == k).sum() == (labels == k).sum():
            return interior_point(crop == k) + np.array([r0 + origin[0], c0 + origin[1]])
    raise RuntimeError(f"no whole nucleus in {region}")


def lazy_array(path: Path, shape: tuple[int, ...], sites: list[tuple], rendered) -> list:
    """A zarr uint16 array of ``shape`` with a rendered patch at each site ((slice...,
    row, col) origins); returns the click (plane row, col) of each site."""
    import zarr

    chunks = (1,) * (len(shape) - 2) + (CHUNK, CHUNK)
    arr = zarr.create_array(str(path), shape=shape, chunks=chunks, dtype="uint16", fill_value=FILL)
    clicks = []
    for k, site in enumerate(sites):
        img, lab = rendered[k % len(rendered)]
        *index, r0, c0 = site
        arr[(*index, slice(r0, r0 + PATCH), slice(c0, c0 + PATCH))] = img
        clicks.append(central_nucleus(lab, (r0, c0)))
    return clicks


def timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


# --------------------------------------------------------------------------- clicks
def clicks(args: argparse.Namespace) -> None:
    import zarr

    from napari_sam._napari.preview import outline
    from napari_sam.engine.decode.predictor import Predictor
    from napari_sam.engine.loader import load_model
    from napari_sam.session import SegmentationSession

    plane = (8192, 8192)
    origins = site_origins(plane, args.sites + 1)  # the first: warm-up
    rendered = patches(4)
    clicked = lazy_array(args.data / "plane_8192.zarr", plane, origins, rendered)
    image = RecordingReader(zarr.open_array(str(args.data / "plane_8192.zarr"), mode="r"))
    model = load_model("demo", device="cpu", precision=args.precision)
    one = np.ones(1, int)
    warm = SegmentationSession(model, image, False, None, tiling="auto")
    outline(warm.prompt((), clicked[0][None], one, None, 0).mask)
    s = SegmentationSession(model, image, False, args.data / "store.zarr", tiling="auto")
    ram = SegmentationSession(model, image, False, None, tiling="auto")  # no store
    grid = s.grid
    assert grid is not None
    rows: dict[str, list[float]] = {}
    for k in range(1, len(origins)):
        lab = rendered[k % len(rendered)][1]
        pt = clicked[k]
        before = s.embeddings.computed
        pre, t_prompt = timed(s.prompt, (), pt[None], one, None, k)
        assert s.embeddings.computed == before + 1, "a click embedded more than one tile"
        _, t_outline = timed(outline, pre.mask)
        _, t_ram = timed(ram.prompt, (), pt[None], one, None, k)
        pixels, t_read = timed(grid.read, image, pre.tile)
        p = Predictor(model)
        emb, t_embed = timed(p.compute_embedding, pixels, resize=False)
        r0, c0 = grid.outer(pre.tile)[:2]
        t = time.perf_counter()
        p.set_embedding(emb)
        p.predict(points=pt[None] - (r0, c0), labels=one, multimask=True, best_only=True)
        t_decode = time.perf_counter() - t
        second = nucleus_in(lab, origins[k], grid.inner(pre.tile), avoid=pt)
        _, t_cached = timed(s.prompt, (), second[None], one, None, k)
        before = s.embeddings.computed
        _, t_around = timed(list, s.tiles_around((), pre.tile, limit=9))
        n_around = s.embeddings.computed - before
        nb = (pre.tile[0], pre.tile[1] + 1)
        third = nucleus_in(lab, origins[k], grid.inner(nb))
        post, t_nb = timed(s.prompt, (), third[None], one, None, k)
        assert post.tile == nb and s.embeddings.computed == before + n_around
        for name, v in (
            ("click on a new tile: session.prompt", t_prompt),
            ("  outer region read alone (zarr)", t_read),
            ("  one tile embedding alone", t_embed),
            ("  one decode alone (set_embedding + predict)", t_decode),
            ("  read + embedding + decode", t_read + t_embed + t_decode),
            ("  the same click, RAM-only session (no store write)", t_ram),
            ("  (widget's outline() of the plane-sized mask: not on tiles yet)", t_outline),
            ("2nd click, same tile (embedding cached)", t_cached),
            (f"tiles_around(limit=9): {n_around} tiles embedded", t_around),
            ("click on a neighbour tile after tiles_around", t_nb),
        ):
            rows.setdefault(name, []).append(v)
    print(
        f"8192² uint16 lazy zarr, grid {grid.shape} of {grid.tile} + halo {grid.halo}; "
        f"{args.sites} sites; {args.threads} thread(s); {args.precision}; "
        f"largest read {image.largest_shape}"
    )
    print("| step | median (ms) | min – max (ms) |")
    print("|---|---:|---:|")
    for name, v in rows.items():
        print(f"| {name} | {1e3 * median(v):.1f} | {1e3 * min(v):.1f} – {1e3 * max(v):.1f} |")


# ----------------------------------------------------------------------- precompute
def precompute(args: argparse.Namespace) -> None:
    import zarr

    from napari_sam.engine.loader import load_model
    from napari_sam.engine.tiling import TileGrid
    from napari_sam.store import EmbeddingProvider, ModelSpec, SliceLayout, TiledLayout
    from napari_sam.store import precompute as dask_precompute
    from napari_sam.synthetic import nuclei_large

    n = args.size
    path = args.data / f"plane_{n}.zarr"
    img, _ = nuclei_large((n, n), (8, 40), seed=4096)
    zarr.create_array(str(path), data=img, chunks=(CHUNK, CHUNK))
    del img
    image = zarr.open_array(str(path), mode="r")
    model = load_model("demo", device="cpu", precision=args.precision)
    grid = TileGrid.for_model((n, n), model.sam.image_size)
    assert grid is not None
    layout = TiledLayout(SliceLayout.for_shape(image.shape), grid)
    local = EmbeddingProvider(model, image, layout, store=args.data / "local.zarr")
    t0 = t_half = time.perf_counter()
    for step in local.precompute():
        if step.done == grid.n_tiles // 2:
            t_half = time.perf_counter()
    t_local = time.perf_counter() - t0
    spec = ModelSpec("demo", None, "cpu", args.precision)
    nt = grid.n_tiles
    half = t_half - t0
    rows = [
        (
            "local `provider.precompute`",
            f"{args.threads} torch threads",
            t_local,
            f"; {(nt - nt // 2) / (t_local - half):.1f} over the 2nd half",
        )
    ]
    ref = _entries(args.data / "local.zarr", nt)
    compared = []
    for name, dask_env in (("dask_default", True), ("dask", False)):
        saved = dict(os.environ)  # the nanny writes its pre-spawn variables here
        if dask_env:  # Dask's MALLOC_TRIM_THRESHOLD_=65536, as before commit e0e2f0d
            os.environ["NAPARI_SAM_MALLOC_TUNING"] = "0"
        t = time.perf_counter()
        first, at = 0, t
        path = args.data / f"{name}.zarr"
        for step in dask_precompute(path, image, spec, layout=layout, scheduler=args.workers):
            if not first and step.done >= nt // 2:
                first, at = step.done, time.perf_counter()
        dt, steady = time.perf_counter() - t, time.perf_counter() - at
        os.environ.clear()
        os.environ.update(saved)
        how = "Dask's allocator setting (before e0e2f0d)" if dask_env else "ours"
        rows.append(
            (
                f"Dask LocalCluster (`--workers {args.workers}`), {how}",
                f"{args.workers} workers × 1 thread",
                dt,
                f"; {(nt - first) / steady:.1f} over the 2nd half",
            )
        )
        done, emb = _entries(path, nt)
        diff = np.abs(emb - ref[1])
        compared.append(
            f"{how}: {done}/{nt} entries complete; identical to local: "
            f"{np.array_equal(emb, ref[1])}; max |Δ| {diff.max():.3g} "
            f"(max |value| {np.abs(ref[1]).max():.3g}); "
            f"tiles differing {int((diff.reshape(nt, -1).max(1) > 0).sum())}"
        )
    print(f"{n}² uint16 zarr, {nt} tiles {grid.shape}; {args.precision}; stores float16")
    print("| run | threads | wall (incl. start-up) | tiles/s |")
    print("|---|---|---:|---:|")
    for name, threads, dt, extra in rows:
        print(f"| {name} | {threads} | {dt:.1f} s | {nt / dt:.1f}{extra} |")
    print(f"local store: {ref[0]}/{nt} entries complete")
    for line in compared:
        print("store compare, Dask", line)


def _entries(path: Path, n: int) -> tuple[int, np.ndarray]:
    """(complete entries, every embedding as float32) of a tiled store of one plane."""
    import zarr

    g = zarr.open_group(str(path), mode="r")
    done = int(np.asarray(g["complete"]).any(-1).sum())
    return done, np.asarray(g["embeddings"]).astype(np.float32).reshape(n, -1)


def _encode_calls(precision: str, n: int) -> tuple[float, float]:
    """(ms per tile embedding, minor page faults per call) of the demo model here (in a
    Dask worker: the worker's cached model), after one warm-up call."""
    import resource

    from napari_sam.engine.decode.predictor import Predictor
    from napari_sam.store import ModelSpec, load_spec
    from napari_sam.store.cluster import worker_model

    p = Predictor(worker_model(ModelSpec("demo", None, "cpu", precision), load_spec))
    x = patches(1)[0][0][:256, :256]
    p.compute_embedding(x, resize=False)
    f0, t = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
    for _ in range(n):
        p.compute_embedding(x, resize=False)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
    return 1e3 * (time.perf_counter() - t) / n, faults / n


def worker_encode(args: argparse.Namespace) -> None:
    """One tile embedding per call, 1 thread: here vs in a ``--workers 1`` LocalCluster
    worker with Dask's allocator setting and with ours, alternated ``--rounds`` times."""
    from napari_sam.store.cluster import dask_client

    rows: dict[str, list[tuple[float, float]]] = {}
    for _ in range(args.rounds):
        rows.setdefault("here (main process)", []).append(_encode_calls(args.precision, 20))
        for how, off in (("Dask's MALLOC_TRIM_THRESHOLD_=65536", True), ("ours", False)):
            saved = dict(os.environ)
            if off:
                os.environ["NAPARI_SAM_MALLOC_TUNING"] = "0"
            with dask_client(1) as client:
                fut = client.submit(_encode_calls, args.precision, 20, pure=False)
                rows.setdefault(f"Dask worker, {how}", []).append(fut.result())
            os.environ.clear()
            os.environ.update(saved)
    print("| where | ms per tile embedding (each round) | minor page faults per call |")
    print("|---|---|---:|")
    for name, v in rows.items():
        ms = " / ".join(f"{a:.1f}" for a, _ in v)
        print(f"| {name} | {ms} | {median(b for _, b in v):.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "kind",
        choices=("clicks", "precompute", "worker-encode"),
    )
    ap.add_argument("--data", type=Path, default=Path("/tmp/napari-sam-large"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--sites", type=int, default=8)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.data.exists():
        raise SystemExit(f"{args.data} exists: remove it or give another --data")
    args.data.mkdir(parents=True)
    try:
        kinds = {"clicks": clicks, "precompute": precompute, "worker-encode": worker_encode}
        kinds[args.kind](args)
    finally:
        if not args.keep:
            shutil.rmtree(args.data)


if __name__ == "__main__":
    main()
