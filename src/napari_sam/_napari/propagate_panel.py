"""The "Propagate through volume" panel of the napari-sam widget (docs/propagation.md).

Objects are the target Labels layer's objects (committed) plus the current preview
(uncommitted prompts on this slice, which becomes a new object). The propagation runs
in a napari worker with progress and cancel; its result is written as ONE undo step
(:func:`commit.write_volume`, never overwriting existing labels). Slices where the
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
    QGroupBox,
    QPushButton,
    QSpinBox,
)

from ..engine.labels import next_free_id
from ..engine.propagate import ALL_OBJECTS, DEFAULT_MODE, Propagator
from ..engine.propagate_prompts import MODES
from . import adapters, commit
from .constants import POSITIVE_FEATURE
from .job_panel import JobPanel


class PropagatePanel(JobPanel, QGroupBox):
    """Built with the :class:`SamWidget` it belongs to (its session, layers, status)."""

    what = "propagation"

    def __init__(self, widget) -> None:
        super().__init__("Propagate through volume")
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
        form.addRow(self._button_row())
        self.propagator: Propagator | None = None

    # ------------------------------------------------------------------ actions
    def propagate(self, all_on_slice: bool = False):
        """Start propagating (the selected object / the preview, or every object on
        the current slice). Returns the worker, or None with a status message."""
        w = self.widget
        try:
            job = self._prepare(all_on_slice)
        except ValueError as err:
            w.set_status(str(err))
            return None
        prop, labels, lead = job
        self.propagator = prop
        return self._launch(
            prop.run,
            lambda result: self._write(labels, lead, result),
            total=prop.total,
            desc="SAM propagate",
            verb="propagating",
            on_abort=lambda: self._aborted(labels, lead, prop),
        )

    # ---------------------------------------------------------------- internals
    def _prepare(self, all_on_slice: bool):
        w = self.widget
        image, session = self._ready()
        nd = adapters.spatial_ndim(image)
        if image.rgb or nd not in (3, 4) or w.channel_axis is not None:
            raise ValueError("propagation needs a 3D (Z, Y, X) or 4D (T, Z, Y, X) image")
        ctx = w._ctx()
        labels = w.target_labels()
        lead, z0 = ctx.labels_index[:-1], ctx.labels_index[-1]
        seeds = np.array(labels.data[lead])
        objects: set[int] = set()
        preview = w.preview
        if preview is not None and preview.index == ctx.index:
            new_id = next_free_id(np.asarray(labels.data))
            seeds[z0][preview.mask & (seeds[z0] == 0)] = new_id
            objects.add(new_id)
        if all_on_slice:
            objects |= set(np.unique(seeds[z0]).tolist()) - {0}
            if not objects:
                raise ValueError("no object on this slice: commit one or add prompts first")
        elif not objects:
            sel = int(labels.selected_label)
            if not (seeds == sel).any():
                raise ValueError(f"the selected label {sel} has no pixel: select an object")
            objects.add(sel)
        stops = self._negative_only_slices(lead, z0)

        def embedding(z: int, lead=ctx.index[:-1]):
            return session.embedding((*lead, z))

        prop = Propagator(
            session.model,
            embedding,
            seeds,
            sorted(objects),
            mode=self.mode_combo.currentText(),
            iou_stop=self.iou_spin.value(),
            max_slices=self.max_spin.value() or None,
            stop_slices={ALL_OBJECTS: stops},
        )
        return prop, labels, lead

    def _negative_only_slices(self, lead: tuple[int, ...], z0: int) -> set[int]:
        """Slices (of this time point) where the points layer has only negative clicks."""
        w = self.widget
        pts = w.points
        if pts is None or len(pts.data) == 0:
            return set()
        coords = adapters._to_image_data(pts, w.image_layer, np.asarray(pts.data))
        idx = np.round(coords[:, :-2]).astype(int)
        positive = np.asarray(pts.features[POSITIVE_FEATURE], bool)
        by_slice: dict[int, bool] = {}
        for i, p in zip(idx, positive, strict=True):
            if tuple(i[:-1]) == tuple(lead):
                by_slice[int(i[-1])] = by_slice.get(int(i[-1]), False) or bool(p)
        return {z for z, anyp in by_slice.items() if not anyp and z != z0}

    def _write(self, labels, lead: tuple[int, ...], result: np.ndarray) -> None:
        n = commit.write_volume(labels, np.asarray(result), key=lead)
        self.widget.clear_prompts()
        self.widget.set_status(f"propagation done: {n} pixels labelled (one undo step)")

    def _aborted(self, labels, lead, prop: Propagator) -> None:
        if self.keep_check.isChecked():
            self._write(labels, lead, prop.assemble())
            self.widget.set_status("propagation cancelled: slices done so far were kept")
        else:
            self.widget.set_status("propagation cancelled: labels unchanged")

