"""The "Propagate through volume" panel of the napari-sam widget (docs/propagation.md).

Objects are the target Labels layer's objects (committed) plus the current preview
(uncommitted prompts on this slice, which becomes a new object). The propagation runs
in a napari worker with progress and cancel; the worker also reads the seeds, picks the
new id and plans the write; the GUI thread writes only the changed pixels as ONE undo
step (:func:`commit.apply_write`, never overwriting existing labels). Slices where the
points layer holds only negative clicks stop the propagation. 3D (Z, Y, X) images, and
4D (T, Z, Y, X) at the current time point.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QPushButton,
    QSpinBox,
    QWidget,
)

from ..engine.propagate import ALL_OBJECTS, DEFAULT_MODE, Propagator
from ..engine.propagate.prompts import MODES
from ..engine.propagate.tiled import TiledPropagator
from ..session.commit import known_max_id, plan_write
from ..session.provenance import propagated
from . import adapters, commit
from .job_panel import JobPanel, Outcome, cancellable


class PropagatePanel(JobPanel, QWidget):
    """The "Propagate" tab of the :class:`SamWidget` it belongs to (its session, layers,
    status)."""

    what = "propagation"
    title = "propagating"

    def __init__(self, widget) -> None:
        super().__init__()
        self._init_job(widget)
        self.mode_combo = QComboBox()
        self.mode_combo.addItems(list(MODES))
        self.mode_combo.setCurrentText(DEFAULT_MODE)
        self.iou_spin = QDoubleSpinBox(minimum=0.0, maximum=1.0, singleStep=0.05, value=0.5)
        self.iou_spin.setToolTip("stop an object when its IoU with the previous slice is lower")
        self.max_spin = QSpinBox(minimum=0, maximum=100000, value=0)
        self.max_spin.setSpecialValueText("no limit")
        self.keep_check = QCheckBox("on cancel, keep the slices done so far")
        self.selected_button = QPushButton("Propagate selected object", clicked=self.propagate)
        self.slice_button = QPushButton(
            "Propagate all objects on this slice", clicked=lambda: self.propagate(True)
        )
        self.run_buttons = (self.selected_button, self.slice_button)
        form = QFormLayout(self)
        form.addRow("prompt mode", self.mode_combo)
        form.addRow("IoU stop", self.iou_spin)
        form.addRow("max slices", self.max_spin)
        form.addRow(self.keep_check)
        form.addRow(self.selected_button)
        form.addRow(self.slice_button)
        self.propagator: Propagator | TiledPropagator | None = None
        self._keep_partial = False

    # ------------------------------------------------------------------ actions
    def propagate(self, all_on_slice: bool = False):
        """Start propagating (the selected object / the preview, or every object on
        the current slice). Returns the worker, or None with a status message."""
        w = self.widget
        try:
            job, total, labels = self._prepare(all_on_slice)
        except ValueError as err:
            w.set_status(str(err))
            return None
        self.propagator = None
        return self._launch(job, lambda out: self._write(labels, out), total=total)

    def cancel(self) -> None:
        self._keep_partial = self.keep_check.isChecked()
        super().cancel()

    # ---------------------------------------------------------------- internals
    def _prepare(self, all_on_slice: bool):
        """Checks and cheap reads on the GUI thread; the job reads the labels."""
        w = self.widget
        image, session = self._ready()
        nd = adapters.spatial_ndim(image)
        if image.rgb or nd not in (3, 4) or w.channel_axis is not None:
            raise ValueError("propagation needs a 3D (Z, Y, X) or 4D (T, Z, Y, X) image")
        ctx = w.current_slice()
        labels = w.target_labels()
        lead, z0 = ctx.labels_index[:-1], ctx.labels_index[-1]
        data, ids = labels.data, commit.id_snapshot(labels)
        preview = w.preview
        seed_preview = preview if preview is not None and preview.index == ctx.index else None
        selected = int(labels.selected_label)
        stops = self._negative_only_slices(lead, z0)
        settings = {
            "mode": self.mode_combo.currentText(),
            "iou_stop": self.iou_spin.value(),
            "max_slices": self.max_spin.value() or None,
            "stop_slices": {ALL_OBJECTS: stops},
        }
        image_lead = ctx.index[:-1]

        def embedding(z: int):
            return session.embedding((*image_lead, z))

        def job(cancel):
            seeds = np.array(data[lead] if lead else data)  # this worker reads the volume
            mask = None if seed_preview is None else seed_preview.mask  # at slice size
            base = known_max_id(data, ids)
            objects: set[int] = set()
            seed = None
            if mask is not None and (mask & (seeds[z0] == 0)).any():
                seeds[z0][mask & (seeds[z0] == 0)] = base + 1
                objects.add(base + 1)
                seed = (z0, seed_preview)
            if all_on_slice:
                objects |= set(np.unique(seeds[z0]).tolist()) - {0}
                if not objects:
                    return Outcome(message="no object on this slice: commit one or add prompts")
            elif not objects:
                if not (seeds == selected).any():
                    return Outcome(
                        message=f"the selected label {selected} has no pixel: select an object"
                    )
                objects.add(selected)
            if session.grid is None:
                prop = Propagator(session.model, embedding, seeds, sorted(objects), **settings)
            else:  # one group of objects per tile (engine/propagate/tiled.py)
                prop = TiledPropagator(
                    session.model, session.grid,
                    lambda z, t: session.tile_embedding((*image_lead, z), t),
                    seeds, sorted(objects), **settings,
                )  # fmt: skip
            self.propagator = prop
            result, cancelled = yield from cancellable(prop.run(), cancel)
            if cancelled:
                if not self._keep_partial:
                    return Outcome(cancelled=True)
                result = prop.assemble()  # a part: recorded as an edit (not replayable)
            plan = plan_write(data, result, lead, base, False, ids.writes)
            # tiled: recorded as an edit (exact voxels; replay has no tiled propagation yet)
            replayable = not cancelled and session.grid is None
            record = propagated(image_lead, sorted(objects), settings, seed) if replayable else None
            return Outcome(plan=plan, cancelled=cancelled, found=len(objects), record=record)

        per = 2 * int(data.shape[len(lead)])
        return job, per if session.grid is None else 0, labels

    def _negative_only_slices(self, lead: tuple[int, ...], z0: int) -> set[int]:
        """Slices (of this time point) where the points layer has only negative clicks."""
        coords, positive = self.widget.prompts_in_image_coords()
        idx = np.round(coords[:, :-2]).astype(int)
        by_slice: dict[int, bool] = {}
        for i, p in zip(idx, positive, strict=True):
            if tuple(i[:-1]) == tuple(lead):
                by_slice[int(i[-1])] = by_slice.get(int(i[-1]), False) or bool(p)
        return {z for z, anyp in by_slice.items() if not anyp and z != z0}

    def _write(self, labels, out: Outcome) -> None:
        w = self.widget
        if out.message:
            w.set_status(out.message)
            return
        if out.cancelled and out.plan is None:
            w.set_status("propagation cancelled: labels unchanged", notify=True)
            return
        if self._labels_gone(labels):
            return
        with w.recorder.expect(labels, out.record, w.session):
            n = commit.apply_write(labels, out.plan)
        w.clear_prompts()
        if out.cancelled:
            w.set_status(
                f"propagation cancelled: slices done so far were kept ({n} pixels, one "
                "undo step)",
                notify=True,
            )
        else:
            w.set_status(f"propagation done: {n} pixels labelled (one undo step)", notify=True)
