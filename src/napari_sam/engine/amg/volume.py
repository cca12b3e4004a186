"""Automatic mask generation through a volume: "segment everything" on every slice of a
(Z, H, W) stack, then link the 2D objects of adjacent slices into 3D objects.

Pure numpy / torch (no napari, no zarr, no Dask): the caller supplies ``embedding(z)``,
the embedding of slice ``z`` (read from its cache, computing missing ones), exactly as
for :mod:`.propagate`. For (T, Z, H, W) run one volume per time point. See
docs/amg_volumes.md. Main names::

    vol = VolumeAmg(amg, embedding, n_slices=Z)          # amg: AutomaticMaskGenerator
    for done, total, message in vol.run(): ...           # generator; closing it cancels
    labels = vol.result                                  # (Z, H, W) uint32, ids 1..N
    labels = link_slices(per_slice_labels, link_iou=0.5) # linking alone (no model)

**Linking rule.** Slices are linked pairwise, z to z + 1, in increasing z. Between the
objects of slice z (already carrying 3D ids) and those of slice z + 1, the one-to-one
assignment maximising the total IoU is found (``scipy.optimize.linear_sum_assignment``
on the IoU matrix); an assigned pair is linked — the object on z + 1 takes the 3D id of
its partner — only when its IoU ≥ ``link_iou`` (default :data:`DEFAULT_LINK_IOU`).
Every object left unlinked starts a new 3D id. Then 3D objects present on fewer than
``min_slices`` slices are dropped (default 1: none; 3 removes the one- or two-slice
false objects the demo model finds in noise and out-of-focus light, see the docs).
3D ids are numbered 1..N in order of first appearance (lowest z, then the slice's own
id order), so they are consecutive.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..embedding import Embedding
from ..labels import renumber
from ..metrics import iou_matrix
from ..progress import Progress, within_step
from .generator import AutomaticMaskGenerator

__all__ = [
    "DEFAULT_LINK_IOU",
    "DEMO_MIN_SLICES",
    "DEMO_PARAMS",
    "PANEL_PARAMS",
    "VolumeAmg",
    "amg_volume",
    "drop_short",
    "link_pair",
    "link_slices",
]

DEFAULT_LINK_IOU = 0.5  # chosen by measurement (docs/amg_volumes.md)
# AMG parameters tuned for the small packaged demo model on synthetic nuclei (measured in
# docs/amg_volumes.md); the official defaults keep too few of its (less confident) masks.
DEMO_PARAMS: dict[str, Any] = {
    "points_per_side": 16,
    "pred_iou_thresh": 0.6,
    "stability_score_thresh": 0.9,
    "min_mask_region_area": 20,
    "min_object_area": 30,
}
DEMO_MIN_SLICES = 3  # drop linked objects on fewer slices (demo model, docs/amg_volumes.md)
# The parameters the widget panel and the CLI expose (official defaults elsewhere).
PANEL_PARAMS = ("points_per_side", "pred_iou_thresh", "stability_score_thresh")


def link_pair(
    prev: np.ndarray, cur: np.ndarray, link_iou: float = DEFAULT_LINK_IOU
) -> dict[int, int]:
    """The links between the objects of ``prev`` and of ``cur`` (adjacent slices):
    ``{id in cur: id in prev}`` by the one-to-one max-IoU assignment, pairs with
    IoU ≥ ``link_iou`` only (see the module docstring)."""
    ids_p, ids_c, iou = iou_matrix(prev, cur)
    if iou.size == 0:
        return {}
    rows, cols = linear_sum_assignment(iou, maximize=True)
    return {
        int(ids_c[c]): int(ids_p[r])
        for r, c in zip(rows, cols, strict=True)
        if iou[r, c] > 0 and iou[r, c] >= link_iou
    }


class _Linker:
    """Incremental linking: feed slices in z order, get them back with 3D ids."""

    def __init__(self, link: bool, link_iou: float) -> None:
        if not 0.0 <= link_iou <= 1.0:
            raise ValueError(f"link_iou must be in [0, 1], got {link_iou!r}")
        self.link, self.link_iou = link, float(link_iou)
        self.prev: np.ndarray | None = None
        self.n = 0  # 3D ids used so far

    def add(self, labels: np.ndarray) -> np.ndarray:
        labels = np.asarray(labels)
        ids = np.unique(labels)
        ids = ids[ids != 0]
        if not self.link:
            return _consecutive(labels)
        links = {} if self.prev is None else link_pair(self.prev, labels, self.link_iou)
        lut = np.zeros(int(ids.max()) + 1 if ids.size else 1, np.uint32)
        for i in ids.tolist():
            if i in links:
                lut[i] = links[i]
            else:
                self.n += 1
                lut[i] = self.n
        out = lut[labels]
        self.prev = out
        return out


def _consecutive(labels: np.ndarray) -> np.ndarray:
    """Ids renumbered 1..n in their order, uint32."""
    return renumber(labels).astype(np.uint32, copy=False)


def link_slices(
    stack: np.ndarray,
    link_iou: float = DEFAULT_LINK_IOU,
    *,
    link: bool = True,
    min_slices: int = 1,
) -> np.ndarray:
    """(Z, H, W) per-slice label images (each slice its own ids) → uint32 3D ids 1..N by
    the linking rule of the module docstring; ``link=False``: each slice renumbered
    1..n on its own (``min_slices`` ignored)."""
    stack = np.asarray(stack)
    if stack.ndim != 3:
        raise ValueError(f"need a (Z, H, W) stack of label images, got shape {stack.shape}")
    linker = _Linker(link, link_iou)
    out = np.stack([linker.add(s) for s in stack]).astype(np.uint32, copy=False)
    return drop_short(out, min_slices) if link else out


def drop_short(volume: np.ndarray, min_slices: int) -> np.ndarray:
    """Remove 3D objects present on fewer than ``min_slices`` slices of ``volume``
    (Z, H, W) and renumber the rest 1..N keeping their order."""
    if isinstance(min_slices, bool) or not isinstance(min_slices, int) or min_slices < 1:
        raise ValueError(f"min_slices must be an integer ≥ 1, got {min_slices!r}")
    n = int(volume.max()) if volume.size else 0
    counts = np.zeros(n + 1, np.int64)
    for plane in volume:
        counts[np.unique(plane)] += 1
    keep = counts >= min_slices
    keep[0] = False
    return _consecutive(np.where(keep[volume], volume, 0))


class VolumeAmg:
    """AMG on every slice of a (Z, H, W) volume, linked into 3D objects.

    amg: the 2D generator (its parameters apply to every slice); embedding: ``z →
    Embedding`` of slice z (the caller's cache; it may compute and store missing ones);
    n_slices: Z; image: ``z → slice`` (only needed with ``amg.crop_n_layers > 0``);
    slices: the slices to segment (default all; others stay 0); link: link in z (else
    per-slice ids 1..n); link_iou: the minimum IoU of a link; min_slices: drop linked 3D
    objects on fewer slices (applied to :attr:`result`).
    """

    def __init__(
        self,
        amg: AutomaticMaskGenerator,
        embedding: Callable[[int], Embedding],
        n_slices: int,
        *,
        image: Callable[[int], np.ndarray] | None = None,
        slices: list[int] | None = None,
        link: bool = True,
        link_iou: float = DEFAULT_LINK_IOU,
        min_slices: int = 1,
    ) -> None:
        if n_slices < 1:
            raise ValueError(f"n_slices must be ≥ 1, got {n_slices}")
        self.amg, self.embedding, self.image = amg, embedding, image
        self.n_slices = int(n_slices)
        self.slices = sorted(set(range(n_slices) if slices is None else slices))
        if any(not 0 <= z < n_slices for z in self.slices):
            raise ValueError(f"slices must lie in [0, {n_slices}), got {slices}")
        self._linker = _Linker(link, link_iou)
        drop_short(np.zeros((1, 1, 1), np.uint32), min_slices)  # validates
        self.link, self.min_slices = link, min_slices
        self.planes: dict[int, np.ndarray] = {}  # z → linked slice, filled as it runs
        self.records: dict[int, list] = {}  # z → that slice's ObjectRecords (2D ids)

    @property
    def total(self) -> int:
        return len(self.slices)

    def run(self) -> Generator[Progress, None, np.ndarray]:
        """Segment slice after slice; yields Progress in slices (done, total, message
        with the 2D generator's own step). Returns the label volume (:attr:`result`).
        Closing the generator cancels; the slices done so far stay in :attr:`planes`."""
        total = self.total
        yield Progress(0, total, "starting")
        for done, z in enumerate(self.slices):
            emb = self.embedding(z)
            img = None if self.image is None or self.amg.crop_n_layers == 0 else self.image(z)
            gen = self.amg.iter_generate(emb, image=img)
            result = yield from within_step(gen, done, total, f"slice {z}")
            self.add_slice(z, result.labels, result.records)
            yield Progress(done + 1, total, f"slice {z}: {len(result.records)} objects")
        return self.result

    def add_slice(self, z: int, labels: np.ndarray, records: list | None = None) -> None:
        """Link one slice's 2D labels (slices must come in increasing z; used by
        :meth:`run` and by drivers that segment slices elsewhere, e.g. on Dask)."""
        self.planes[z] = self._linker.add(labels)
        self.records[z] = records or []

    @property
    def result(self) -> np.ndarray:
        """The label volume so far (Z, H, W) uint32, ids 1..N (after ``min_slices``);
        slices not done are 0."""
        if not self.planes:
            raise RuntimeError("no slice segmented yet")
        shape = next(iter(self.planes.values())).shape
        out = np.zeros((self.n_slices, *shape), np.uint32)
        for z, plane in self.planes.items():
            out[z] = plane
        return drop_short(out, self.min_slices) if self.link else out


def amg_volume(
    amg: AutomaticMaskGenerator,
    embedding: Callable[[int], Embedding],
    n_slices: int,
    **kwargs: Any,
) -> np.ndarray:
    """:class:`VolumeAmg` run to the end; returns the (Z, H, W) uint32 label volume."""
    vol = VolumeAmg(amg, embedding, n_slices, **kwargs)
    for _ in vol.run():
        pass
    return vol.result
