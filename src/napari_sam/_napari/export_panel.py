"""The "Export" tab of the napari-sam widget (docs/export.md, docs/usage.md).

"Export…" writes the target Labels layer — as OME-Zarr (``.ome.zarr`` / ``.zarr``) or
OME-TIFF (``.tif`` / ``.tiff``), chosen by the file name's extension — with its
calibration (the layer's scale and translate), its provenance
(``layer.metadata[PROVENANCE_KEY]``, recorded by the widget) and the object table (CSV
beside it). When the image was opened from an OME-Zarr image, "Export into the image"
writes ``<image>.ome.zarr/labels/<layer name>``.

The export runs in the widget's workers (the object table is measured chunk by chunk
with progress and cancel, then the files are written atomically): the GUI thread never
reads the label volume. An existing export is replaced only after the user confirmed it;
a failed export (full disk, read-only folder) leaves the previous files and the labels
in napari as they were. Afterwards the table is the layer's ``features`` (napari's
features table shows it).
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtWidgets import QFileDialog, QLabel, QMessageBox, QPushButton, QVBoxLayout, QWidget

from ..export import PROVENANCE_KEY, TIFF_SUFFIXES, ZARR_SUFFIXES, Calibration, ExportError
from .job_panel import JobPanel, Outcome, cancellable

FILTERS = "OME-Zarr (*.ome.zarr *.zarr);;OME-TIFF (*.ome.tif *.tif *.tiff)"


class ExportPanel(JobPanel, QWidget):
    """The "Export" tab of the :class:`SamWidget` it belongs to."""

    what = "export"
    title = "exporting labels"

    def __init__(self, widget) -> None:
        super().__init__()
        self._init_job(widget)
        self.export_button = QPushButton("Export labels…", clicked=lambda: self.export())
        self.into_image_button = QPushButton(
            "Export into the image's OME-Zarr", clicked=self.export_into_image
        )
        self.into_image_button.setToolTip(
            "the image came from an OME-Zarr: write <image>.ome.zarr/labels/<labels name>"
        )
        self.run_buttons = (self.export_button, self.into_image_button)
        lay = QVBoxLayout(self)
        lay.addWidget(self.export_button)
        lay.addWidget(self.into_image_button)
        lay.addWidget(
            QLabel(
                "The labels layer chosen above, with its scale, its provenance (how each "
                "object was made: `napari-sam replay` re-creates it) and an object table "
                "(shown in napari's features table). Format by extension: .ome.zarr or "
                ".tif.",
                wordWrap=True,
            )
        )
        lay.addStretch()

    # ------------------------------------------------------------------ actions
    def source_ome_zarr(self) -> Path | None:
        """The OME-Zarr image the image layer was opened from, else None."""
        from ..export.ome_zarr import enclosing_image

        image = self.widget.image_layer
        src = getattr(getattr(image, "source", None), "path", None)
        if not src:
            return None
        return enclosing_image(Path(src) / "labels" / "x")

    def labels_layer(self):
        """The labels layer to export (the widget's target), or None with a message."""
        w = self.widget
        layer = w.chosen_labels()
        if layer is None:
            w.set_status("export: choose a labels layer (nothing to export yet)")
        return layer

    def export(self, path: str | Path | None = None):
        """Export the labels layer to ``path`` (None: ask with a file dialog). Returns
        the worker, or None (cancelled dialog, refused replacement, a problem)."""
        w = self.widget
        layer = self.labels_layer()
        if layer is None:
            return None
        if path is None:
            path = self.ask_path(layer)
            if not path:
                return None
        target = Path(path)
        low = target.name.lower()
        from ..export.ome_zarr import enclosing_image

        if not low.endswith(ZARR_SUFFIXES + TIFF_SUFFIXES) and enclosing_image(target) is None:
            w.set_status(f"export: {target.name}: use .ome.zarr or .tif as extension")
            return None
        overwrite = False
        if _exists(target):
            if not self.confirm_replace(target):
                w.set_status(f"export: {target} kept (not replaced)")
                return None
            overwrite = True
        return self._start(layer, target, overwrite)

    def export_into_image(self):
        image = self.source_ome_zarr()
        layer = self.labels_layer()
        if layer is None:
            return None
        if image is None:
            self.widget.set_status("export: the image was not opened from an OME-Zarr image")
            return None
        from ..export.ome_zarr import labels_path

        return self.export(labels_path(image, _safe_name(layer.name)))

    def ask_path(self, layer) -> str:
        """File dialog (replacement is confirmed by :meth:`confirm_replace`)."""
        image = self.source_ome_zarr()
        if image is not None:
            start = str(image / "labels" / _safe_name(layer.name))
        else:
            src = getattr(getattr(self.widget.image_layer, "source", None), "path", None)
            folder = Path(src).parent if src else Path.home()
            start = str(folder / f"{_safe_name(layer.name)}.ome.zarr")
        path, _ = QFileDialog.getSaveFileName(
            self, "Export labels", start, FILTERS,
            options=QFileDialog.Option.DontConfirmOverwrite,
        )  # fmt: skip
        return path

    def confirm_replace(self, target: Path) -> bool:
        answer = QMessageBox.question(
            self, "Replace export?", f"{target} exists. Replace it (and its object table)?"
        )
        return answer == QMessageBox.StandardButton.Yes

    # ---------------------------------------------------------------- internals
    def _start(self, layer, target: Path, overwrite: bool):
        w = self.widget
        if self.worker is not None:
            w.set_status("an export is already running")
            return None
        w.sync_provenance(layer)
        data = layer.data[0] if layer.multiscale else layer.data
        try:
            cal = Calibration.from_layer_meta(layer.as_layer_data_tuple()[1], data.ndim)
        except ValueError as err:
            w.set_status(f"export: {err}")
            return None
        prov = layer.metadata.get(PROVENANCE_KEY)
        if prov is not None:  # replay's output gets the export's calibration
            prov = {**prov, "image": {**prov["image"], "calibration": cal.to_dict()}}
        name = layer.name

        def job(cancel):
            from ..export import export_labels
            from ..export.provenance import Provenance
            from ..export.table import iter_object_table

            doc = None if prov is None else Provenance.from_dict(prov)
            table, cancelled = yield from cancellable(iter_object_table(data, cal, doc), cancel)
            if cancelled:
                return Outcome(cancelled=True)
            try:
                written = export_labels(
                    target, data, cal, name=_safe_name(name), provenance=doc,
                    overwrite=overwrite, table=table,
                )  # fmt: skip
            except (ExportError, ValueError) as err:
                return Outcome(message=f"export failed: {err}")
            return Outcome(found=len(table), message=", ".join(map(str, written))), table

        return self._launch(job, lambda out: self._done(layer, out), total=0)

    def _done(self, layer, result) -> None:
        w = self.widget
        out, table = result if isinstance(result, tuple) else (result, None)
        if out.cancelled:
            w.set_status("export cancelled: nothing written", notify=True)
            return
        if table is None:
            w.set_status(out.message, notify=True)
            return
        if layer in w.viewer.layers:
            from ..export.table import features

            layer.features = features(table)
        w.set_status(f"exported {out.found} objects: {out.message}", notify=True)


def _exists(target: Path) -> bool:
    from ..export.table import table_path

    return target.exists() or table_path(target).exists()


def _safe_name(name: str) -> str:
    """A layer name usable as a file / label-group name."""
    keep = "".join(c if c.isalnum() or c in "-_" else "_" for c in name.strip())
    return keep.strip("_") or "labels"
