"""The "Segment everything" panel of the napari-sam widget (docs/amg_volumes.md).

Automatic mask generation on the current slice, or on every slice of the current
(Z, Y, X) volume (4D: of the current time point) linked in z into 3D objects. Runs in a
napari worker with progress and cancel, on the session's embeddings (cached / computed
as needed). The worker also plans the write (``session.commit.plan_automatic_write``: ids
offset above the layer's largest id; existing objects kept unless the widget's
"overwrite existing objects" is checked — then the new objects win where they
overlap); the GUI thread writes only the changed pixels into the target Labels layer
(a new one with "<new labels layer>") as ONE undo step (:func:`commit.apply_write`).
"""

from __future__ import annotations

import inspect

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

from ..engine.amg import AutomaticMaskGenerator
from ..engine.amg.volume import DEFAULT_LINK_IOU, DEMO_MIN_SLICES, DEMO_PARAMS, VolumeAmg
from ..engine.progress import whole_steps
from ..session.commit import automatic_scores, plan_automatic_write
from ..session.provenance import automatic
from . import adapters, commit
from .job_panel import JobPanel, Outcome, cancellable

MAX_VIEW_TILES = 64  # automatic masks on a tiled slice: at most this many tiles in view
LARGE_VOLUME_BYTES = 1 << 30  # a tiled volume's uint32 labels above this: not at once

# the generator's own defaults (= the official SamAutomaticMaskGenerator's)
OFFICIAL = {
    name: p.default
    for name, p in inspect.signature(AutomaticMaskGenerator.__init__).parameters.items()
    if p.default is not inspect.Parameter.empty
}
OFFICIAL_PRESET, DEMO_PRESET = "official defaults", "demo model (tuned)"
_PRESET_KEYS = ("points_per_side", "pred_iou_thresh", "stability_score_thresh")
_PRESET_KEYS += ("min_mask_region_area", "min_object_area")
PRESETS: dict[str, dict] = {
    OFFICIAL_PRESET: {**{k: OFFICIAL[k] for k in _PRESET_KEYS}, "min_slices": 1},
    DEMO_PRESET: {**DEMO_PARAMS, "min_slices": DEMO_MIN_SLICES},
}


class AmgPanel(JobPanel, QWidget):
    """The "Automatic" tab of the :class:`SamWidget` it belongs to (its session,
    layers, status)."""

    what = "segmentation"
    title = "segment everything"

    def __init__(self, widget) -> None:
        super().__init__()
        self._init_job(widget)
        self.preset_combo = QComboBox()
        self.preset_combo.addItems(list(PRESETS))
        self.preset_combo.setToolTip(
            "official: SamAutomaticMaskGenerator's defaults; demo model: tuned for the "
            "packaged demo model (chosen automatically when it is loaded)"
        )
        self.preset_combo.currentTextChanged.connect(self.apply_preset)
        # values: apply_preset(OFFICIAL_PRESET) at the end
        self.points_spin = QSpinBox(minimum=1, maximum=256)
        self.iou_spin = QDoubleSpinBox(minimum=0.0, maximum=1.0, singleStep=0.01)
        self.stab_spin = QDoubleSpinBox(minimum=0.0, maximum=1.0, singleStep=0.01)
        self.area_spin = QSpinBox(minimum=0, maximum=10**7)
        self.area_spin.setToolTip("remove holes / islands smaller than this (pixels)")
        self.link_spin = QDoubleSpinBox(
            minimum=0.0, maximum=1.0, singleStep=0.05, value=DEFAULT_LINK_IOU
        )
        self.link_spin.setToolTip("link objects of adjacent slices when their IoU is ≥ this")
        self.min_slices_spin = QSpinBox(minimum=1, maximum=10**4)
        self.min_slices_spin.setToolTip(
            "all slices: drop linked 3D objects found on fewer slices than this "
            f"(1 keeps all; {DEMO_MIN_SLICES} suits the demo model)"
        )
        # the other official parameters, folded away under "advanced"
        self.batch_spin = QSpinBox(minimum=1, maximum=4096, value=OFFICIAL["points_per_batch"])
        self.offset_spin = QDoubleSpinBox(
            minimum=0.0, maximum=100.0, singleStep=0.1, value=OFFICIAL["stability_score_offset"]
        )
        self.box_nms_spin = QDoubleSpinBox(
            minimum=0.01, maximum=1.0, singleStep=0.05, value=OFFICIAL["box_nms_thresh"]
        )
        self.crop_layers_spin = QSpinBox(minimum=0, maximum=4, value=OFFICIAL["crop_n_layers"])
        self.crop_nms_spin = QDoubleSpinBox(
            minimum=0.01, maximum=1.0, singleStep=0.05, value=OFFICIAL["crop_nms_thresh"]
        )
        self.crop_overlap_spin = QDoubleSpinBox(
            minimum=0.0, maximum=0.99, singleStep=0.05, decimals=4
        )  # shows 512 / 1500 rounded: see _crop_overlap
        self.crop_overlap_spin.setValue(OFFICIAL["crop_overlap_ratio"])
        self.crop_downscale_spin = QSpinBox(
            minimum=1, maximum=16, value=OFFICIAL["crop_n_points_downscale_factor"]
        )
        self.min_object_spin = QSpinBox(minimum=0, maximum=10**7)
        self.min_object_spin.setToolTip("drop objects smaller than this (pixels)")
        self.advanced_check = QCheckBox("advanced parameters")
        self.advanced = QWidget()
        adv = QFormLayout(self.advanced)
        adv.setContentsMargins(0, 0, 0, 0)
        for label, spin in (
            ("points per batch", self.batch_spin),
            ("stability offset", self.offset_spin),
            ("box NMS thresh", self.box_nms_spin),
            ("crop layers", self.crop_layers_spin),
            ("crop NMS thresh", self.crop_nms_spin),
            ("crop overlap", self.crop_overlap_spin),
            ("crop points downscale", self.crop_downscale_spin),
            ("min object area", self.min_object_spin),
        ):
            adv.addRow(label, spin)
        self.advanced.setVisible(False)
        self.advanced_check.toggled.connect(self.advanced.setVisible)
        self.overwrite_check = widget.overwrite_check  # the widget's one setting
        self.slice_button = QPushButton("Segment this slice", clicked=lambda: self.segment())
        self.volume_button = QPushButton(
            "Segment all slices (link in z)", clicked=lambda: self.segment(volume=True)
        )
        self.run_buttons = (self.slice_button, self.volume_button)
        form = QFormLayout(self)
        form.addRow("preset", self.preset_combo)
        form.addRow("points per side", self.points_spin)
        form.addRow("pred IoU thresh", self.iou_spin)
        form.addRow("stability thresh", self.stab_spin)
        form.addRow("min area", self.area_spin)
        form.addRow("link IoU (z)", self.link_spin)
        form.addRow("min slices (z)", self.min_slices_spin)
        form.addRow(self.advanced_check)
        form.addRow(self.advanced)
        form.addRow(self.slice_button)
        form.addRow(self.volume_button)
        self.apply_preset(OFFICIAL_PRESET)

    def params(self) -> dict:
        """AutomaticMaskGenerator keyword arguments from the controls."""
        return {
            "points_per_side": self.points_spin.value(),
            "pred_iou_thresh": self.iou_spin.value(),
            "stability_score_thresh": self.stab_spin.value(),
            "min_mask_region_area": self.area_spin.value(),
            "points_per_batch": self.batch_spin.value(),
            "stability_score_offset": self.offset_spin.value(),
            "box_nms_thresh": self.box_nms_spin.value(),
            "crop_n_layers": self.crop_layers_spin.value(),
            "crop_nms_thresh": self.crop_nms_spin.value(),
            "crop_overlap_ratio": _crop_overlap(self.crop_overlap_spin.value()),
            "crop_n_points_downscale_factor": self.crop_downscale_spin.value(),
            "min_object_area": self.min_object_spin.value(),
        }

    def apply_preset(self, name: str) -> None:
        """Set the controls to a preset (:data:`PRESETS`); the combo shows it."""
        preset = PRESETS[name]
        if self.preset_combo.currentText() != name:
            self.preset_combo.setCurrentText(name)  # re-enters with the same name
            return
        self.points_spin.setValue(preset["points_per_side"])
        self.iou_spin.setValue(preset["pred_iou_thresh"])
        self.stab_spin.setValue(preset["stability_score_thresh"])
        self.area_spin.setValue(preset["min_mask_region_area"])
        self.min_object_spin.setValue(preset["min_object_area"])
        self.min_slices_spin.setValue(preset["min_slices"])

    def model_loaded(self, name: str | None) -> None:
        """Called by the widget when a model is loaded (``name``: its registry name, None
        for a checkpoint file): the packaged demo model gets its preset."""
        self.apply_preset(DEMO_PRESET if name == "demo" else OFFICIAL_PRESET)

    # ------------------------------------------------------------------ actions
    def segment(self, volume: bool = False):
        """Start AMG on this slice (or all slices of this volume). Returns the worker,
        or None with a status message."""
        w = self.widget
        try:
            job, total, labels, overwrite = self._prepare(volume)
        except ValueError as err:
            w.set_status(str(err))
            return None
        return self._launch(
            job,
            lambda out: self._write(labels, out, overwrite),
            total=total,
        )

    # ---------------------------------------------------------------- internals
    def _prepare(self, volume: bool):
        w = self.widget
        image, session = self._ready()
        ctx = w.current_slice()
        amg = AutomaticMaskGenerator(
            session.model, normalization=session.normalization, **self.params()
        )
        labels = w.target_labels()
        data, ids = labels.data, commit.id_snapshot(labels)
        overwrite = w.overwrite_existing()
        crops = amg.crop_n_layers > 0  # crops are encoded from the slice itself
        params = self.params()

        def slice_image(index: tuple[int, ...]) -> np.ndarray | None:
            return session.slice(index) if crops else None

        def finish(run, key: tuple[int, ...], cancel, index, vol_params=None, origin=None):
            result, cancelled = yield from cancellable(whole_steps(run), cancel)
            if cancelled:
                return Outcome(cancelled=True)
            result = getattr(result, "array", result)  # a tiled run's PlaneWindow
            found = np.asarray(getattr(result, "labels", result), np.uint32)
            plan = plan_automatic_write(data, found, key, overwrite, ids, origin)
            records = getattr(result, "records", None)
            scores = None if records is None else automatic_scores(found, plan, records)
            # tiled: recorded as an edit (exact voxels; replay has no tiled AMG yet)
            tiled = session.grid is not None
            record = None if tiled else automatic(index, params, overwrite, vol_params, scores)
            return Outcome(plan=plan, found=int(found.max(initial=0)), record=record)

        if session.grid is not None:
            return self._prepare_tiled(amg, ctx, volume, finish, labels, overwrite)
        if not volume:

            def one_slice(cancel):
                def run():
                    emb = session.embedding(ctx.index)
                    return (yield from amg.iter_generate(emb, image=slice_image(ctx.index)))

                return (yield from finish(run(), ctx.labels_index, cancel, ctx.index))

            return one_slice, amg.n_steps(ctx.shape), labels, overwrite
        if image.rgb or adapters.spatial_ndim(image) - (w.channel_axis is not None) < 3:
            raise ValueError("'all slices' needs a 3D (Z, Y, X) or 4D (T, Z, Y, X) image")
        lead, lead_labels = ctx.index[:-1], ctx.labels_index[:-1]
        nz = labels.data.shape[len(lead_labels)]
        vol = VolumeAmg(
            amg,
            lambda z: session.embedding((*lead, z)),
            nz,
            image=lambda z: slice_image((*lead, z)),
            link=True,
            link_iou=self.link_spin.value(),
            min_slices=self.min_slices_spin.value(),
        )

        volume = {"link": True, "link_iou": self.link_spin.value(),
                  "min_slices": self.min_slices_spin.value()}

        def all_slices(cancel):
            return (yield from finish(vol.run(), lead_labels, cancel, lead, volume))

        return all_slices, nz, labels, overwrite

    def _prepare_tiled(self, amg, ctx, volume: bool, finish, labels, overwrite):
        """A tiled slice: the tiles in view (at most :data:`MAX_VIEW_TILES`), segmented
        tile by tile and merged across their borders (engine/amg/tiled.py) into a
        window of the plane that holds their outer regions; ``volume``: every tile of
        every slice of the volume, linked in z (when its labels fit in RAM)."""
        from ..engine.amg.tiled import TiledAmg, TiledVolumeAmg
        from ..session.tiled import PlaneWindow, tiles_window

        w, session = self.widget, self.widget.session
        grid = session.grid
        crops = amg.crop_n_layers > 0
        if not volume:
            tiles = w.tiles_in_view() or [grid.tile_at(*(s // 2 for s in grid.plane))]
            if len(tiles) > MAX_VIEW_TILES:
                raise ValueError(
                    f"{len(tiles)} tiles in view (of {grid.n_tiles}): zoom in to at most "
                    f"{MAX_VIEW_TILES} tiles — automatic masks on a tiled slice segment the "
                    "tiles in view — or run `napari-sam amg --tiling auto` on the whole plane"
                )
            index = ctx.index
            window = tiles_window(grid, tiles)

            def in_view(cancel):
                out = PlaneWindow(grid.plane, window)
                run = TiledAmg(
                    amg, grid, lambda t: session.tile_embedding(index, t),
                    read=(lambda t: session.embeddings.read((*index, *t))) if crops else None,
                    out=out, tiles=tiles,
                )  # fmt: skip
                return (
                    yield from finish(run.run(), ctx.labels_index, cancel, index, None, window[:2])
                )

            return in_view, len(tiles), labels, overwrite
        if adapters.spatial_ndim(w.image_layer) - (w.channel_axis is not None) < 3:
            raise ValueError("'all slices' needs a 3D (Z, Y, X) or 4D (T, Z, Y, X) image")
        lead, lead_labels = ctx.index[:-1], ctx.labels_index[:-1]
        nz = labels.data.shape[len(lead_labels)]
        if nz * grid.plane[0] * grid.plane[1] * 4 > LARGE_VOLUME_BYTES:
            raise ValueError(
                f"{nz} slices of {grid.plane[0]} × {grid.plane[1]} px are too large to "
                "segment at once here: segment the tiles in view slice by slice, or run "
                "`napari-sam amg --tiling auto` on the volume"
            )
        vol = TiledVolumeAmg(
            amg, grid, lambda z, t: session.tile_embedding((*lead, z), t), nz,
            read=(lambda z, t: session.embeddings.read((*lead, z, *t))) if crops else None,
            link=True, link_iou=self.link_spin.value(),
            min_slices=self.min_slices_spin.value(),
        )  # fmt: skip

        def all_slices(cancel):  # recorded as an edit: no volume parameters needed
            return (yield from finish(vol.run(), lead_labels, cancel, lead))

        return all_slices, vol.total, labels, overwrite

    def _write(self, labels, out: Outcome, overwrite: bool) -> None:
        w = self.widget
        if out.cancelled:
            w.set_status("segmentation cancelled: labels unchanged", notify=True)
            return
        if self._labels_gone(labels):
            return
        if out.found == 0:
            w.set_status("segment everything: no object found", notify=True)
            return
        with w.recorder.expect(labels, out.record, w.session):
            changed = commit.apply_write(labels, out.plan, overwrite=overwrite)
        w.set_status(
            f"segment everything: {out.found} objects found, {out.plan.objects} new, "
            f"{changed} pixels labelled (one undo step)",
            notify=True,
        )


def _crop_overlap(shown: float) -> float:
    """The spin box rounds to 4 decimals: its rounded official default (512 / 1500) means
    exactly that value (crop boxes would differ from the official ones otherwise)."""
    official = OFFICIAL["crop_overlap_ratio"]
    return official if abs(shown - official) < 5e-5 else shown
