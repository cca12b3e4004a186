"""Commit decisions without napari: which pixels a committed mask takes, and the label
writes that long jobs (propagation, automatic masks) plan in their worker.

Rules (docs/usage.md): a committed object gets the next free id (1 + the largest id)
and never takes the pixels of existing objects unless ``overwrite``. A long job reads
the labels block in its worker and keeps only the pixels that change
(:func:`plan_write`); the GUI thread of the widget applies the plan as ONE undo step
(``napari_sam._napari.commit.apply_write``), the command line writes its numpy array.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..engine.labels import merge_new_objects, paint_mask


def commit_pixels(
    current: np.ndarray, mask: np.ndarray, overwrite: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the pixels a committed mask (H, W) bool takes on a slice whose
    labels are ``current`` (H, W): the mask's pixels, without those of existing objects
    unless ``overwrite``. Empty arrays: nothing to commit."""
    rows, cols = np.nonzero(mask)
    if rows.size and not overwrite:
        free = np.asarray(current)[rows, cols] == 0
        rows, cols = rows[free], cols[free]
    return rows, cols


def commit_mask(plane: np.ndarray, mask: np.ndarray, overwrite: bool = False) -> int | None:
    """Write ``mask`` into the numpy label image ``plane`` (same shape) as a new object
    (id 1 + its largest id, the pixels of :func:`commit_pixels`). Returns the id, or None
    when nothing was written."""
    label_id, written = paint_mask(plane, mask, overwrite=overwrite)
    return label_id if written.any() else None


@dataclass(frozen=True)
class IdSnapshot:
    """Taken on the GUI thread when a job starts: the lazy-array id counter (None for
    numpy labels or when unknown) and how many napari-sam writes the layer had."""

    max_id: int | None
    writes: int


@dataclass(frozen=True)
class LabelWrite:
    """Pixels to write into a labels layer, planned in a worker.

    indices: one int array per labels axis (fancy index, N pixels); values (N,): the
    ids to write; base: the largest id in use when planned — values above it are new
    objects, renumbered by :func:`apply_write` above the ids that napari-sam writes
    took meanwhile (those after the first ``since`` writes); objects: how many new ids.
    """

    indices: tuple[np.ndarray, ...]
    values: np.ndarray
    base: int
    since: int = 0
    objects: int = 0

    @property
    def size(self) -> int:
        return int(self.values.size)


def known_max_id(data, snapshot: IdSnapshot) -> int:
    """Worker thread: the largest id of a labels array (numpy: read whole, here in the
    worker; lazy arrays: the layer's counter, else chunk-wise once)."""
    if isinstance(data, np.ndarray):
        return int(data.max(initial=0))
    if snapshot.max_id is not None:
        return int(snapshot.max_id)
    import dask.array as da

    return int(da.from_array(data, chunks=getattr(data, "chunks", "auto")).max().compute())


def plan_write(
    data,
    result: np.ndarray,
    key: tuple[int, ...],
    base: int,
    overwrite: bool = False,
    since: int = 0,
    origin: tuple[int, int] | None = None,
) -> LabelWrite:
    """Worker thread: the pixels of ``data[key]`` that ``result`` changes (0 in
    ``result`` leaves a pixel as it is; existing objects are kept unless
    ``overwrite``). Reads the block one leading slice at a time. origin: ``result``
    covers only the window of its (h, w) whose top-left pixel is origin (row, col) in
    each plane (only that window is read)."""
    key = tuple(int(k) for k in key)
    expected = tuple(data.shape[len(key) :])
    r0, c0 = (0, 0) if origin is None else (int(origin[0]), int(origin[1]))
    h, w = result.shape[-2:]
    if origin is not None:
        fits = r0 >= 0 and c0 >= 0 and r0 + h <= expected[-2] and c0 + w <= expected[-1]
        if not fits or result.shape[:-2] != expected[:-2]:
            raise ValueError(f"a {result.shape} window at {origin} leaves the {expected} block")
    elif result.shape != expected:
        raise ValueError(f"result shape {result.shape} ≠ labels block shape {expected}")
    window = (slice(r0, r0 + h), slice(c0, c0 + w))
    parts: list[tuple[np.ndarray, ...]] = []
    values: list[np.ndarray] = []
    for lead in np.ndindex(*result.shape[:-2]):
        res = result[lead]
        target = res > 0
        if not target.any():
            continue
        cur = np.asarray(data[(*key, *lead, *window)])
        target &= res != cur
        if not overwrite:
            target &= cur == 0
        rows, cols = np.nonzero(target)
        if rows.size:
            lead_idx = (np.full(rows.size, k, np.intp) for k in (*key, *lead))
            parts.append((*lead_idx, rows + r0, cols + c0))
            values.append(res[rows, cols])
    ndim = len(key) + result.ndim
    if not parts:
        empty = tuple(np.zeros(0, np.intp) for _ in range(ndim))
        return LabelWrite(empty, np.zeros(0, np.int64), base, since)
    indices = tuple(np.concatenate([p[a] for p in parts]) for a in range(ndim))
    vals = np.concatenate(values)
    return LabelWrite(indices, vals, base, since, len(np.unique(vals[vals > base])))


def plan_automatic_write(
    data,
    found: np.ndarray,
    key: tuple[int, ...],
    overwrite: bool,
    snapshot: IdSnapshot,
    origin: tuple[int, int] | None = None,
) -> LabelWrite:
    """Worker thread: automatic-mask objects ``found`` (ids 1..n, the shape of
    ``data[key]``; with ``origin``, a 2D window of it whose top-left pixel is origin
    (row, col) — only that window is read) as new objects of the labels ``data``:
    consecutive ids above its largest id; existing objects kept unless ``overwrite``
    (then the new ones win), and a new object whose part outside existing objects is
    only a rim or a small share of it is not added
    (:func:`~napari_sam.engine.labels.merge_new_objects`, docs/amg.md)."""
    base = known_max_id(data, snapshot)
    sub = key
    if origin is not None:
        h, w = found.shape
        sub = (*key, slice(origin[0], origin[0] + h), slice(origin[1], origin[1] + w))
    existing = np.asarray(data[sub]) if sub else np.asarray(data)
    block, _n = merge_new_objects(existing, found, overwrite=overwrite, first_id=base + 1)
    return plan_write(data, block, key, base, overwrite, snapshot.writes, origin)


def automatic_scores(
    found: np.ndarray, write: LabelWrite, records: Sequence[Any]
) -> list[tuple[float, float]] | None:
    """(predicted IoU, stability score) of the automatic objects a 2D ``write`` adds, in
    the order of their new ids — :func:`~napari_sam.engine.labels.merge_new_objects`
    keeps the order of the ids in ``found`` (the generator's label image, (H, W)) —
    from the generator's ``records`` (``label``, ``predicted_iou``, ``stability_score``);
    None when a written object has no record."""
    if found.ndim != 2 or not write.size:
        return None
    rows, cols = write.indices[-2], write.indices[-1]
    new = write.values > write.base
    kept = np.unique(found[rows[new], cols[new]])
    by_label = {int(r.label): r for r in records}
    if any(int(k) not in by_label for k in kept if k):
        return None
    return [(float(by_label[int(k)].predicted_iou), float(by_label[int(k)].stability_score))
            for k in kept if k]  # fmt: skip
