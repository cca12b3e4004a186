"""Provenance of the Labels layers the widget writes: napari's side of
:class:`~napari_sam.session.provenance.ProvenanceLog`.

Every change of a Labels layer's data that enters its undo history (a napari-sam write
through ``data_setitem`` in ``block_history``, or a stroke of napari's paint / fill /
erase tools, polygon included) emits ``layer.events.paint`` with the history item's
atoms (napari ≥ 0.5; checked with 0.9). Each item becomes one step of the layer's log:
the action the widget announced with :meth:`Recorder.expect`, else an ``edited``
action with the changed voxels. Undo / redo (the widget's bindings, and napari's own
when the layer is visible: ``events.set_data`` after each) are followed by the length
of the layer's undo history. The document is kept in
``layer.metadata[PROVENANCE_KEY]``, so it follows the layer into File > Save and the
widget's Export.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
from napari.layers import Labels

from ..export import PROVENANCE_KEY
from ..session.provenance import Edit, ProvenanceLog, Record


class Recorder:
    """The provenance logs of the labels layers one widget writes."""

    def __init__(self) -> None:
        self._logs: dict[int, tuple[Labels, ProvenanceLog, list[int]]] = {}

    def attach(self, layer: Labels, session, rgb: bool, channel_axis: int | None) -> None:
        """Start recording ``layer`` (labels made with ``session``), once per layer.
        Changes made before are not recorded (a provenance document the layer already
        carries is continued when it was made with the same model and image)."""
        if id(layer) in self._logs:
            return
        log = ProvenanceLog.start(
            session, rgb=rgb, channel_axis=channel_axis,
            existing=layer.metadata.get(PROVENANCE_KEY),
            history_limit=layer._history_limit,
        )  # fmt: skip
        offset = [len(layer._undo_history)]  # history items older than the log
        self._logs[id(layer)] = (layer, log, offset)
        layer.events.paint.connect(self._on_paint)
        layer.events.set_data.connect(self._on_set_data)
        _publish(layer, log)

    def log(self, layer: Labels) -> ProvenanceLog | None:
        entry = self._logs.get(id(layer))
        return None if entry is None else entry[1]

    @contextlib.contextmanager
    def expect(self, layer: Labels, record: Record | None, session) -> Iterator[None]:
        """Around a napari-sam write of ``layer``: its history item is ``record``'s
        action — or an edit when the layer's actions were made with another model,
        precision, normalisation or image (replay could not re-create it)."""
        entry = self._logs.get(id(layer))
        if entry is None:
            yield
            return
        log = entry[1]
        with log.expect(record if session is not None and log.matches(session) else None):
            yield

    def sync(self, layer: Labels) -> None:
        """Follow the layer's undo / redo (cheap when nothing changed)."""
        entry = self._logs.get(id(layer))
        if entry is not None:
            layer, log, offset = entry
            if log.sync(max(len(layer._undo_history) - offset[0], 0)):
                _publish(layer, log)

    def release(self) -> None:
        for layer, _log, _ in self._logs.values():
            for signal, slot in (
                (layer.events.paint, self._on_paint),
                (layer.events.set_data, self._on_set_data),
            ):
                with contextlib.suppress(TypeError, ValueError, RuntimeError):
                    signal.disconnect(slot)
        self._logs.clear()

    # ---------------------------------------------------------------- events
    def _on_paint(self, event) -> None:
        layer = event.source
        entry = self._logs.get(id(layer))
        if entry is None:
            return
        _, log, offset = entry
        before = len(layer._undo_history) - 1 - offset[0]  # items of the log before this
        if before < 0:  # older items were undone meanwhile
            offset[0] += before
            before = 0
        log.sync(before)
        item = list(event.value)
        log.on_item(written_ids(item), lambda: edits_of(item))
        _publish(layer, log)

    def _on_set_data(self, event) -> None:
        self.sync(event.source)


def _publish(layer: Labels, log: ProvenanceLog) -> None:
    layer.metadata[PROVENANCE_KEY] = log.document()


def written_ids(item: list) -> list[int]:
    """The non-zero ids a history item wrote."""
    ids: set[int] = set()
    for atom in item:
        new = atom.new_value if hasattr(atom, "slice_key") else atom[2]
        ids |= {int(v) for v in np.unique(np.asarray(new)) if v}
    return sorted(ids)


def edits_of(item: list) -> list[Edit]:
    """The changes of a napari history item (in order): per atom and painted value, the
    bool mask over its bounding box."""
    edits: list[Edit] = []
    for atom in item:
        if hasattr(atom, "slice_key"):  # napari's _MaskedPaintAtom (paint, fill, polygon)
            origin = tuple(int(s.start or 0) for s in atom.slice_key)
            old = np.asarray(atom.old_values)
            mask = np.ones(old.shape, bool) if atom.mask is None else np.asarray(atom.mask, bool)
            value = int(atom.new_value)
            touched = {value, *(int(v) for v in np.unique(old))} - {0}
            edits.append(Edit(origin, mask, value, tuple(sorted(touched))))
            continue
        indices, old, new = atom  # data_setitem: fancy index, old values, new value(s)
        idx = tuple(np.asarray(a).ravel() for a in indices)
        if idx[0].size == 0:
            continue
        old = np.asarray(old).ravel()
        new = np.broadcast_to(np.asarray(new), idx[0].shape)
        for value in np.unique(new):
            sel = new == value
            coords = [a[sel] for a in idx]
            lo = tuple(int(c.min()) for c in coords)
            mask = np.zeros(tuple(int(c.max()) - o + 1 for c, o in zip(coords, lo, strict=True)),
                            bool)
            mask[tuple(c - o for c, o in zip(coords, lo, strict=True))] = True
            touched = {int(value), *(int(v) for v in np.unique(old[sel]))} - {0}
            edits.append(Edit(lo, mask, int(value), tuple(sorted(touched))))
    return edits
