"""Tiled automatic masks on a Dask cluster: one task per tile, merged on the driver
(docs/tiling.md section 2.5).

The driver opens (or creates) the store ONCE for the :class:`~.tiled_layout.TiledLayout`
(one entry per tile), with the model signature one worker reports (the driver never
loads the model), and checks it, as :mod:`.amg_dask` does for whole slices. Each task
segments one tile: the worker loads the model once per process
(:func:`.cluster.worker_model`), builds an :class:`~.provider.EmbeddingProvider` on the
checked store opened ``"r+"`` (it can never create, replace or delete a store), gets
the tile's outer-region embedding (store, else encoded at native resolution and written
back), runs the 2D generator on it and returns the tile's label image and object
records (not its masks). The driver merges the tiles of each slice with
:class:`napari_sam.engine.amg.tile_merge.TileMerge` — the merge step of the local
:class:`~napari_sam.engine.amg.tiled.TiledAmg` — in the same row-major order, so the
labels equal the local tiled result exactly.

Memory: tasks are submitted in a sliding window of ``window`` tiles past the next tile
to merge; a tile finished early waits, as a (outer-region labels, records) pair, until
the tiles before it are merged. So the driver holds at most ``window`` tile results
(the local path holds one), never a whole plane's, plus the label planes it returns; a
result read is released on the cluster (its future is dropped).
"""

from __future__ import annotations

from collections.abc import Generator, Iterable
from typing import Any

import numpy as np

from ..engine.amg.result import AmgResult
from ..engine.amg.tile_merge import DEFAULT_TOLERANCE, TileMerge
from ..engine.image import Normalization
from ..engine.progress import Progress
from .amg_dask import generate_on_worker
from .cluster import (
    Loader,
    ModelSpec,
    Payload,
    dask_client,
    load_spec,
    payload,
    signature_task,
    task_key,
)
from .embeddings import EmbeddingStore
from .slicing import Index
from .tiled_layout import TiledLayout

RegionKey = tuple[int, ...]


def amg_tiles(
    image: Any,
    layout: TiledLayout,
    indices: Iterable[Index],
    spec: ModelSpec,
    params: dict[str, Any],
    *,
    scheduler: Any,
    store: str | None = None,
    normalization: Normalization | None = None,
    load: Loader = load_spec,
    overwrite: bool = False,
    keep: str = "centre",
    tolerance: float = DEFAULT_TOLERANCE,
    window: int | None = None,
) -> Generator[Progress, None, dict[Index, np.ndarray]]:
    """Segment the slices ``indices`` of ``image`` tile by tile (``layout.grid``) on the
    cluster ``scheduler`` (an address, a ``distributed.Client`` or an int →
    LocalCluster). params: :class:`AutomaticMaskGenerator` keyword arguments (they set
    the merge's ``min_object_area`` and rim rule too). store: path of an embedding store
    for this tiled layout that the workers read and fill; one made for something else
    raises :class:`~.files.StoreMismatchError` unless ``overwrite`` (only when the user
    asked). keep / tolerance: the merge rule. window: most tiles submitted past the next
    one to merge (default: 2 × the cluster's worker threads). Yields Progress in tiles;
    returns ``{index: (H, W) uint32 labels}`` (ids 1..n per slice), equal to
    :class:`~napari_sam.engine.amg.tiled.TiledAmg` on the same tiles. Closing the
    generator cancels the pending tasks."""
    grid = layout.grid
    todo = [layout.slices.check_index(i) for i in indices]
    keys = [(*idx, *tile) for idx in todo for tile in grid.tiles()]
    norm = normalization or Normalization()
    merges: dict[Index, TileMerge] = {}
    out: dict[Index, np.ndarray] = {}
    total = len(keys)
    if window is not None and (isinstance(window, bool) or int(window) < 1):
        raise ValueError(f"window must be ≥ 1 tiles, got {window!r}")
    if todo:  # checks the parameters of the merge before any work
        TileMerge.for_params(grid, params, keep=keep, tolerance=tolerance)
    yield Progress(0, total, "submitting")
    with dask_client(scheduler) as client:
        from distributed import as_completed

        if store is not None:  # checked once, here; workers only open it "r+"
            sig = client.submit(signature_task, spec, load, pure=False).result()
            EmbeddingStore.open(
                store, sig, layout=layout, normalization=norm, mode="a",
                on_mismatch="overwrite" if overwrite else "error",
            )  # fmt: skip
        if window is None:
            window = 2 * max(1, sum(client.nthreads().values()))
        args = (spec, load, params, store, layout, norm, overwrite)
        running = as_completed()
        pending: set[Any] = set()  # futures not yet read (finished ones are dropped, so
        # the workers do not keep every tile's result)
        buffered: dict[RegionKey, AmgResult] = {}
        submitted = merged = 0

        def submit_more() -> None:
            nonlocal submitted
            while submitted < total and submitted - merged < window:
                key = keys[submitted]
                part = payload(image, layout, key)  # type: ignore[arg-type]
                fut = client.submit(
                    _tile_task, *args, key, part, pure=False, key=task_key("amg-tile", key)
                )
                pending.add(fut)
                running.add(fut)
                submitted += 1

        try:
            submit_more()
            for fut in running:
                key, result = fut.result()  # a worker's error is re-raised here
                pending.discard(fut)
                buffered[key] = result
                while merged < total and keys[merged] in buffered:
                    key = keys[merged]
                    idx, tile = layout.split(key)
                    if idx not in merges:
                        merges[idx] = TileMerge.for_params(
                            grid, params, keep=keep, tolerance=tolerance
                        )
                    n = merges[idx].add_tile(tile, buffered.pop(key))
                    merged += 1
                    if len(merges[idx].done) == grid.n_tiles:
                        out[idx] = merges.pop(idx).labels
                    yield Progress(merged, total, f"slice {idx} tile {tile}: {n} objects")
                submit_more()
        finally:
            client.cancel(list(pending))
    return out


def _tile_task(
    spec: ModelSpec,
    load: Loader,
    params: dict[str, Any],
    store_path: str | None,
    layout: TiledLayout,
    normalization: Normalization,
    overwrite: bool,
    key: RegionKey,
    part: Payload,
) -> tuple[RegionKey, AmgResult]:
    """Worker side: one tile → its AMG result on its outer region (labels (h, w)
    uint32 and records; masks dropped: the merge does not use them), by
    :func:`~.amg_dask.generate_on_worker`."""
    result = generate_on_worker(
        spec, load, params, store_path, layout, normalization, key, part, overwrite
    )
    return key, AmgResult(result.labels, result.records, [])
