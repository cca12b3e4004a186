"""Propagate objects through a volume: from masks on one or more slices, segment each
object on the neighbouring slices, prompting each slice from the previous slice's result.

Pure numpy / torch (no napari, no zarr): the caller supplies ``embedding(z)``, the
embedding of slice ``z`` (the widget reads its session's store, the CLI a store or a
plain encoder). See docs/propagation.md. Main names::

    p = Propagator(model, embedding, seeds, objects=[3, 7])
    for done, total, message in p.run(): ...      # generator; p.result afterwards
    labels = propagate(model, embedding, seeds)   # the same, run to the end

Algorithm. Each object's *annotated* slices are those where ``seeds == id``. From every
annotated slice a track goes up (+z) and one goes down (−z), until the object's next
annotated slice in that direction (so a gap between two annotated slices is filled
from both sides), the volume edge, ``max_slices`` from its source, a stop slice, or a
stop rule: the mask vanishes (< ``min_area`` px), its IoU with the previous slice's
mask drops below ``iou_stop``, its area grows by more than ``area_factor``, or it
shrinks below ``shrink_stop`` × the largest area on the track (the end cap of a
blurred object, where SAM keeps seeing it). The slice that breaks a rule is not kept.
The volume is swept twice, upwards then downwards; at each slice all tracks of that
sweep are decoded in ONE batched decoder call on that slice's embedding (so at most two
decoder calls per slice).

Prompts for slice z from the track's mask on the previous slice (``mode``): ``box``
(its bounding box grown by ``box_margin``), ``mask`` (the previous low-res logits; for
a seed mask, which only exists at full resolution, the mask is area-downsampled into
SAM's low-res frame as ±6.9 logits: no extra decoder call), ``points`` (one positive
click at the interior-most pixel), or a ``+`` combination.

Combining (``assemble``): in a gap, the prediction from the nearer annotated slice wins
(ties: higher predicted IoU). A pixel claimed by several objects goes to the object
whose annotated slice is nearer (ties: higher predicted IoU). A track also stops when
more than ``overlap_stop`` of its mask lies on another object with a better claim (a
seed, or an object nearer to its annotated slice): it drifted into a neighbour.
Pixels labelled in ``seeds`` (any object, propagated or not) are never overwritten.

Prefetch: while slice z is decoded, the embedding of the next slice of the sweep is
requested in one background thread (``prefetch=True``), so missing embeddings are
computed (and stored, by the caller's function) ahead of the front.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..decode.predictor import Predictor
from ..embedding import Embedding
from ..loader import SamModel
from ..progress import Progress, run_to_end
from .prompts import build_prompts, parse_mode

DEFAULT_MODE = "mask+points"  # chosen by benchmarks/propagate_eval.py (docs/propagation.md)
ALL_OBJECTS = 0  # key of ``stop_slices`` that applies to every object


@dataclass
class Stop:
    """Why a track ended: object id, direction (+1 / −1), the slice it did not keep
    (or could not enter) and the reason (``vanished``, ``iou``, ``area``, ``shrink``,
    ``overlap``, ``stop-slice``, ``max-slices``, ``annotated``, ``edge``)."""

    obj: int
    direction: int
    z: int
    reason: str


@dataclass
class _Track:
    obj: int
    direction: int
    source: int
    end: int  # first slice it may not enter (next annotated slice or -1 / Z)
    mask: np.ndarray  # (H, W) bool on slice ``pos``
    logits: np.ndarray | None
    pos: int
    peak: int = 0  # largest area of the object along this track (seed included)
    alive: bool = True

    @property
    def area(self) -> int:
        return int(self.mask.sum())


def check_seeds(seeds: np.ndarray) -> np.ndarray:
    """``seeds`` as a numpy (Z, H, W) integer label volume, else ValueError naming the
    problem."""
    seeds = np.asarray(seeds)
    if seeds.ndim != 3:
        raise ValueError(f"seeds must be a (Z, H, W) label volume, got shape {seeds.shape}")
    if seeds.dtype.kind not in "iu":
        raise ValueError(f"seeds must hold integer labels, got dtype {seeds.dtype}")
    return seeds


class Propagator:
    """One propagation of several objects through a (Z, H, W) volume.

    model: the SAM model; embedding: ``z → Embedding`` of slice z (may be called from a
    background thread when ``prefetch``); seeds: (Z, H, W) integer labels (committed
    objects and/or current prompts' masks); objects: ids to propagate (default: every
    id in ``seeds``); stop_slices: ``{id: {z, ...}}`` slices an object's tracks must not
    enter (key ``0``: every object), e.g. where the user put only negative clicks.
    """

    def __init__(
        self,
        model: SamModel,
        embedding: Callable[[int], Embedding],
        seeds: np.ndarray,
        objects: Iterable[int] | None = None,
        *,
        mode: str = DEFAULT_MODE,
        iou_stop: float = 0.5,
        area_factor: float = 2.5,
        min_area: int = 8,
        overlap_stop: float = 0.5,
        shrink_stop: float = 0.5,
        max_slices: int | None = None,
        stop_slices: Mapping[int, Iterable[int]] | None = None,
        box_margin: float = 0.1,
        prefetch: bool = True,
    ) -> None:
        seeds = check_seeds(seeds)
        self.model, self.seeds, self._embedding_fn = model, seeds, embedding
        present = set(np.unique(seeds).tolist()) - {0}
        self.objects = sorted(present if objects is None else {int(o) for o in objects})
        missing = set(self.objects) - present
        if missing:
            raise ValueError(f"object(s) {sorted(missing)} have no pixel in the seeds")
        self.parts = parse_mode(mode)
        self.mode = mode
        self.iou_stop, self.area_factor, self.min_area = iou_stop, area_factor, min_area
        self.overlap_stop, self.shrink_stop = overlap_stop, shrink_stop
        if max_slices is not None and max_slices < 1:
            raise ValueError(f"max_slices must be ≥ 1 or None, got {max_slices}")
        self.max_slices, self.box_margin, self.prefetch = max_slices, box_margin, prefetch
        self.stop_slices = {int(k): {int(z) for z in v} for k, v in (stop_slices or {}).items()}
        self.stops: list[Stop] = []
        self.decode_calls: list[tuple[int, int, int, float]] = []  # (z, dir, batch, s)
        # z → {obj: (distance to its annotated slice, predicted IoU, row0, col0, crop)}
        self._kept: dict[int, dict[int, tuple[int, float, int, int, np.ndarray]]] = {}
        self._predictor = Predictor(model)
        self.result: np.ndarray | None = None

    @property
    def total(self) -> int:
        """Progress steps: two sweeps over the slices."""
        return 2 * self.seeds.shape[0]

    # ----------------------------------------------------------------------- run
    def run(self) -> Generator[Progress, None, np.ndarray]:
        """Yields Progress after every slice of each sweep; returns (and stores in
        ``result``) the label volume. Closing the generator early stops cleanly;
        :meth:`assemble` then gives what was done so far."""
        pool = ThreadPoolExecutor(1, thread_name_prefix="sam-prefetch") if self.prefetch else None
        futures: dict[int, Future] = {}
        done = 0
        try:
            for direction in (1, -1):
                tracks = self._tracks(direction)
                n = self.seeds.shape[0]
                order = range(n) if direction == 1 else range(n - 1, -1, -1)
                for z in order:
                    active = [t for t in tracks if t.alive and t.pos + direction == z]
                    active = [t for t in active if self._may_enter(t, z)]
                    if active:
                        emb = self._get(z, futures)
                        nxt = z + direction
                        if pool is not None and 0 <= nxt < n and nxt not in futures:
                            futures[nxt] = pool.submit(self._embedding_fn, nxt)
                        self._step(z, direction, active, emb)
                    futures.pop(z, None)
                    done += 1
                    yield Progress(done, self.total, f"slice {z}: {len(active)} object(s)")
                for t in tracks:
                    if t.alive:  # reached the last slice of the sweep
                        self._stop(t, t.pos + direction, "edge")
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        self.result = self.assemble()
        return self.result

    def _get(self, z: int, futures: dict[int, Future]) -> Embedding:
        f = futures.pop(z, None)
        return f.result() if f is not None else self._embedding_fn(z)

    def _tracks(self, direction: int) -> list[_Track]:
        tracks = []
        n = self.seeds.shape[0]
        for obj in self.objects:
            zs = np.flatnonzero((self.seeds == obj).any(axis=(1, 2))).tolist()
            for i, z in enumerate(zs):
                if direction == 1:
                    end = zs[i + 1] if i + 1 < len(zs) else n
                else:
                    end = zs[i - 1] if i > 0 else -1
                if abs(end - z) > 1 and 0 <= z + direction < n:
                    mask = self.seeds[z] == obj
                    tracks.append(_Track(obj, direction, z, end, mask, None, z, int(mask.sum())))
                elif not 0 <= z + direction < n:
                    self.stops.append(Stop(obj, direction, z + direction, "edge"))
        return tracks

    def _may_enter(self, t: _Track, z: int) -> bool:
        reason = None
        if z == t.end:
            reason = "edge" if z in (-1, self.seeds.shape[0]) else "annotated"
        elif z in self.stop_slices.get(t.obj, ()) or z in self.stop_slices.get(ALL_OBJECTS, ()):
            reason = "stop-slice"
        elif self.max_slices is not None and abs(z - t.source) > self.max_slices:
            reason = "max-slices"
        if reason is not None:
            self._stop(t, z, reason)
        return reason is None

    def _stop(self, t: _Track, z: int, reason: str) -> None:
        t.alive = False
        self.stops.append(Stop(t.obj, t.direction, z, reason))

    def _step(self, z: int, direction: int, active: list[_Track], emb: Embedding) -> None:
        """Decode all active tracks on slice z in one batched call; apply stop rules."""
        sam = self.model.sam
        kw = build_prompts(
            self.parts,
            [t.mask for t in active],
            [t.logits for t in active],
            sam.image_size,
            tuple(sam.low_res_size),
            self.box_margin,
        )
        self._predictor.set_embedding(emb)
        t0 = time.perf_counter()
        r = self._predictor.predict_batch(multimask=False, **kw)
        self.decode_calls.append((z, direction, len(active), time.perf_counter() - t0))
        masks, scores = r.masks[:, 0], r.scores[:, 0].astype(float)
        rank = [(abs(z - t.source), -scores[i]) for i, t in enumerate(active)]
        for i, t in enumerate(active):
            mask, score = masks[i], float(scores[i])
            area, prev = int(mask.sum()), t.area
            inter = np.count_nonzero(mask & t.mask)
            reason = None
            if area < self.min_area:
                reason = "vanished"
            elif inter / (area + prev - inter) < self.iou_stop:
                reason = "iou"
            elif area > self.area_factor * max(prev, 1):
                reason = "area"
            elif area < self.shrink_stop * t.peak:
                reason = "shrink"
            elif self._drifted(z, t, mask, area, rank[i], masks, rank, active):
                reason = "overlap"
            if reason is not None:
                self._stop(t, z, reason)
                continue
            t.mask, t.logits, t.pos, t.peak = mask, r.logits[i, 0], z, max(t.peak, area)
            self._keep(z, t, score)

    def _drifted(self, z, t, mask, area, rank, masks, ranks, active) -> bool:
        """True when more than ``overlap_stop`` of the mask lies on another object that
        has a better claim: its seed pixels, or (this sweep's batch, or masks kept by the
        earlier sweep) an object nearer to its own annotated slice."""
        limit = self.overlap_stop * area
        other = self.seeds[z]
        if np.count_nonzero(mask & (other != 0) & (other != t.obj)) > limit:
            return True
        for j, u in enumerate(active):
            if u.obj != t.obj and ranks[j] < rank and np.count_nonzero(mask & masks[j]) > limit:
                return True
        for obj, (dist, _s, r0, c0, crop) in self._kept.get(z, {}).items():
            if obj == t.obj or dist >= rank[0]:
                continue
            win = mask[r0 : r0 + crop.shape[0], c0 : c0 + crop.shape[1]]
            if np.count_nonzero(win & crop) > limit:
                return True
        return False

    def _keep(self, z: int, t: _Track, score: float) -> None:
        dist = abs(z - t.source)
        old = self._kept.get(z, {}).get(t.obj)
        if old is not None and (old[0], -old[1]) <= (dist, -score):
            return
        rows = np.flatnonzero(t.mask.any(axis=1))
        cols = np.flatnonzero(t.mask.any(axis=0))
        crop = t.mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].copy()
        self._kept.setdefault(z, {})[t.obj] = (dist, score, int(rows[0]), int(cols[0]), crop)

    # ------------------------------------------------------------------ results
    def assemble(self) -> np.ndarray:
        """Seeds plus every propagated mask kept so far, as a label volume (seeds'
        dtype). A pixel claimed by several objects goes to the one nearest (in slices)
        to its own annotated slice, then to the higher predicted IoU; seed pixels are
        never changed."""
        out = self.seeds.copy()
        for z, kept in self._kept.items():
            free = self.seeds[z] == 0
            items = [
                (d, score, obj, r0, c0, crop) for obj, (d, score, r0, c0, crop) in kept.items()
            ]
            # weakest claim first, so the strongest is painted last and wins
            items.sort(key=lambda x: (-x[0], x[1], -x[2]))
            for _d, _score, obj, r0, c0, crop in items:
                win = (slice(r0, r0 + crop.shape[0]), slice(c0, c0 + crop.shape[1]))
                sel = crop & free[win]
                out[z][win][sel] = obj
        return out

    def kept_slices(self, obj: int) -> list[int]:
        """Slices where ``obj`` got a propagated mask (before conflict resolution)."""
        return sorted(z for z, kept in self._kept.items() if obj in kept)


def propagate(
    model: SamModel,
    embedding: Callable[[int], Embedding],
    seeds: np.ndarray,
    objects: Iterable[int] | None = None,
    **kwargs: object,
) -> np.ndarray:
    """Run a :class:`Propagator` to the end and return its label volume (Z, H, W)."""
    return run_to_end(Propagator(model, embedding, seeds, objects, **kwargs).run())  # type: ignore[arg-type]
