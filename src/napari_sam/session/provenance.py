"""Provenance recorded while a user works: a :class:`ProvenanceLog` per label image
keeps the actions that made it (phase-1 schema, :mod:`napari_sam.export.provenance`) in
step with the label image's undo history, so an undone action is not replayed and a
redone one is.

The history (napari's Labels undo stack, or any other) is seen as a sequence of
*items*: every change of the labels is one item, and :meth:`ProvenanceLog.on_item` is
called once per new item. Before a napari-sam write the caller says what it is
(:meth:`ProvenanceLog.expect` with one of :func:`prompted`, :func:`automatic`,
:func:`propagated`); an item that arrives without such a description (a manual paint,
fill or erase, or a write that replay could not re-create) is recorded as ``edited``
with its changed voxels (:class:`Edit`). :meth:`ProvenanceLog.sync` follows undo / redo
by the length of the history. Qt-free: ``_napari/recording.py`` adapts napari's layer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..export.provenance import PromptRound, Provenance

Record = Callable[[Provenance, list[int]], None]  # adds the action(s) given the ids written


@dataclass(frozen=True)
class Edit:
    """A manual change: ``value`` (0 = erase) written over the bool ``mask`` whose first
    voxel is at ``origin`` in the label image; ``touched``: the ids it changed (the
    painted one and those painted over)."""

    origin: tuple[int, ...]
    mask: np.ndarray
    value: int
    touched: tuple[int, ...]


class ProvenanceLog:
    """The provenance of one label image, step by step.

    header: a :class:`Provenance` whose actions are the permanent part (e.g. the
    provenance the layer had when recording started; steps that fell out of a bounded
    history join it). ``steps``: one list of action dicts per undoable history item, in
    order; ``redone``: the undone ones (last undone last). history_limit: how many
    items the history keeps (napari: 100), None = unbounded."""

    def __init__(self, header: Provenance, history_limit: int | None = None) -> None:
        self.header = header
        self.steps: list[list[dict[str, Any]]] = []
        self.undone: list[list[dict[str, Any]]] = []
        self.history_limit = history_limit
        self._pending: Record | None = None

    # ------------------------------------------------------------------ creation
    @classmethod
    def start(
        cls,
        session: Any,
        *,
        rgb: bool = False,
        channel_axis: int | None = None,
        existing: Mapping[str, Any] | None = None,
        history_limit: int | None = None,
    ) -> ProvenanceLog:
        """A log for labels made with ``session`` (its model, precision, normalisation
        and image shape), continuing ``existing`` (a provenance document the labels
        already carry) when it was made with the same ones."""
        header = Provenance.create(
            session.model, session.normalization, image_shape=session.image.shape,
            rgb=rgb, channel_axis=channel_axis, tiling=_tiling(session),
        )  # fmt: skip
        if existing is not None:
            old = Provenance.from_dict(existing)
            if _same_setup(old, header):
                header = old
        return cls(header, history_limit)

    def matches(self, session: Any) -> bool:
        """True when ``session`` has the model, precision, normalisation and image shape
        the log's actions were made with (then its actions can be replayed)."""
        other = Provenance.create(
            session.model, session.normalization, image_shape=session.image.shape,
            tiling=_tiling(session),
        )  # fmt: skip
        return _same_setup(self.header, other)

    # ------------------------------------------------------------------ recording
    @contextlib.contextmanager
    def expect(self, record: Record | None) -> Iterator[None]:
        """Within the block, the next history item is the action ``record`` describes
        (None: record it as an edit)."""
        self._pending = record
        try:
            yield
        finally:
            self._pending = None

    def on_item(self, written: Sequence[int], edits: Callable[[], list[Edit]]) -> None:
        """A new history item: ``written`` the non-zero ids it wrote; ``edits`` its
        changes (called only when no action was expected)."""
        scratch = Provenance(self.header.model, self.header.normalization, self.header.image)
        record, self._pending = self._pending, None
        if record is not None:
            record(scratch, sorted({int(i) for i in written if i}))
        else:
            for e in edits():
                scratch.add_edited(e.origin, e.mask, e.value, ids=e.touched)
        self.undone.clear()
        self.steps.append(scratch.actions)
        if self.history_limit is not None:
            while len(self.steps) > self.history_limit:  # no longer undoable: permanent
                self.header.actions.extend(self.steps.pop(0))

    def sync(self, undoable: int) -> bool:
        """Follow undo / redo: the history now holds ``undoable`` items. Returns True
        when the active actions changed."""
        changed = False
        while len(self.steps) > undoable:
            self.undone.append(self.steps.pop())
            changed = True
        while len(self.steps) < undoable and self.undone:
            self.steps.append(self.undone.pop())
            changed = True
        return changed

    # ------------------------------------------------------------------ output
    def actions(self) -> list[dict[str, Any]]:
        """The actions that made the labels as they are now (undone ones left out)."""
        return [*self.header.actions, *(a for step in self.steps for a in step)]

    def document(self) -> dict[str, Any]:
        """The provenance document (JSON-able dict) of the labels as they are now."""
        doc = self.header.to_dict()
        doc["actions"] = self.actions()
        return doc


# ---------------------------------------------------------------------- action records
def rounds_of(chain: Sequence[tuple]) -> list[PromptRound]:
    """Prompt rounds from a preview's chain of prompt keys ((points, labels, box), …)."""
    return [PromptRound.create(list(p) or None, list(lab) or None, box) for p, lab, box in chain]


def prompted(preview: Any, overwrite: bool) -> Record | None:
    """A commit of ``preview`` (a :class:`~napari_sam.session.preview.Preview`; on a
    tiled slice with the tile that answered it); None when the preview does not say
    which prompts made it (then an edit is recorded)."""
    if not getattr(preview, "chain", ()):
        return None
    rounds = rounds_of(preview.chain)

    def record(prov: Provenance, ids: list[int]) -> None:
        prov.add_prompted(preview.index, rounds, ids, overwrite=overwrite,
                          predicted_iou=preview.score, tile=preview.tile)

    return record


def automatic(
    index: Sequence[int], params: Mapping[str, Any], overwrite: bool,
    volume: Mapping[str, Any] | None = None,
    scores: Sequence[tuple[float, float]] | None = None,
) -> Record:  # fmt: skip
    """Automatic masks on slice ``index`` (or, with ``volume``, the volume at leading
    index ``index``). scores: (predicted IoU, stability score) of the written objects in
    the order of their new ids (:func:`~.commit.automatic_scores`), when known."""

    def record(prov: Provenance, ids: list[int]) -> None:
        ordered = sorted(ids)
        known = dict(zip(ordered, scores, strict=True)) if scores and len(scores) == len(
            ordered) else None  # fmt: skip
        prov.add_automatic(index, params, ids, overwrite=overwrite, volume=volume,
                           scores=known)

    return record


def propagated(
    index: Sequence[int], objects: Sequence[int], params: Mapping[str, Any],
    seed: tuple[int, Any] | None = None,
) -> Record:  # fmt: skip
    """Propagation of ``objects`` through the volume at leading index ``index``; seed:
    (z, preview) when an uncommitted preview was propagated as a new object."""
    seed_rounds = None if seed is None else (seed[0], rounds_of(seed[1].chain))

    def record(prov: Provenance, _ids: list[int]) -> None:
        prov.add_propagated(index, objects, params, list(objects), seed=seed_rounds)

    return record


def _same_setup(a: Provenance, b: Provenance) -> bool:
    keys = ("name", "weights_hash", "precision")
    return (
        all(a.model.get(k) == b.model.get(k) for k in keys)
        and a.normalization == b.normalization
        and list(a.image.get("shape", [])) == list(b.image.get("shape", []))
        and a.tiling == b.tiling
    )


def _tiling(session: Any) -> dict[str, Any] | None:
    """The session's tile grid as a dict (None: whole slices)."""
    grid = getattr(session, "grid", None)
    return None if grid is None else grid.to_dict()
