"""The widget's controls (Qt only): the layer choosers, the tabs Model / Interactive /
Propagate / Automatic in a scroll area, a row per running job (with its one Cancel) and
the status line — both always visible below the scroll area.

Behaviour lives in :mod:`napari_sam._napari.widget`; this base class only builds the
form and keeps the layer choosers in sync with the viewer.
"""

from __future__ import annotations

from napari.layers import Image, Labels
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from .constants import KEY_CLEAR, KEY_COMMIT, KEY_TOGGLE_POLARITY

NEW_LABELS = "<new labels layer>"
TILING_AUTO = "auto (large slices)"
TILING_OFF = "off (shrink slices)"


class JobRow(QWidget):
    """One running job: its message, progress bar and Cancel button (hidden when idle).

    The progress bar is ours, not napari's activity-dock bar: creating that one runs a
    nested ``processEvents`` (a canvas redraw) on the GUI thread at every job start
    (measured: the longest GUI gap of a propagation, docs/benchmarks.md)."""

    def __init__(self, title: str, cancel) -> None:
        super().__init__()
        self.title = title
        self.label = QLabel(title, wordWrap=True)
        self.bar = QProgressBar()
        self.bar.setMaximumHeight(14)
        self.cancel_button = QPushButton("Cancel", clicked=cancel, enabled=False)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        row.addWidget(self.bar, 1)
        row.addWidget(self.cancel_button)
        lay.addWidget(self.label)
        lay.addLayout(row)
        self.setVisible(False)

    def running(self, on: bool, total: int = 0) -> None:
        self.setVisible(on)
        self.cancel_button.setEnabled(on)
        if on:
            self.label.setText(f"{self.title} …")
            self.bar.setRange(0, max(int(total), 0))  # 0: busy indicator
            self.bar.setValue(0)

    def progress(self, done: int, text: str = "") -> None:
        if self.bar.maximum() > 0:
            # QProgressBar.setValue repaints at once (synchronously: in napari's window
            # that redraws the GL canvas too); with updates off it only schedules one
            self.bar.setUpdatesEnabled(False)
            self.bar.setValue(min(int(done), self.bar.maximum()))
            self.bar.setUpdatesEnabled(True)
        if text:
            self.label.setText(f"{self.title}: {text}")


class ControlsBase(QWidget):
    """Form + buttons; subclasses implement load_model, commit, clear_prompts,
    undo_commit, redo_commit, precompute, cancel_precompute, _on_layers_changed and
    _on_choice_changed."""

    def _build_ui(self) -> None:
        from .. import weights

        self.image_combo = QComboBox()
        self.labels_combo = QComboBox()
        self.channel_combo = QComboBox()
        self.channel_combo.addItems(["none", "axis 0"])
        self.channel_combo.setToolTip(
            "non-RGB multichannel stack: the channel axis (first axis). The channel shown "
            "is segmented; labels have no channel axis."
        )
        self.overwrite_check = QCheckBox("overwrite existing objects")
        self.overwrite_check.setToolTip(
            "commits and automatic segmentation replace pixels of existing objects "
            "(propagation never does)"
        )
        self.model_combo = QComboBox()
        names = weights.available_models()
        self.model_combo.addItems(sorted(names, key=lambda n: (n != "demo", n)))
        self.checkpoint_edit = QLineEdit(placeholderText="optional: checkpoint file")
        browse = QPushButton("…", clicked=self._browse_checkpoint)
        ck = QHBoxLayout()
        ck.addWidget(self.checkpoint_edit)
        ck.addWidget(browse)
        self.device_combo = QComboBox()
        self.device_combo.addItems(["auto", "cpu", "cuda", "mps"])
        self.precision_combo = QComboBox()
        self.precision_combo.addItems(["auto", "fp32", "bf16"])
        self.model_hint = QLabel(wordWrap=True)
        self.model_hint.setVisible(False)
        self.model_combo.currentTextChanged.connect(self._update_model_hint)
        self.device_combo.currentTextChanged.connect(self._update_model_hint)
        self.store_edit = QLineEdit(placeholderText="embedding store: default user cache")
        self.ram_only = QCheckBox("keep embeddings in RAM only (no zarr store)")
        self.prefetch_check = QCheckBox("prefetch neighbouring slices / tiles", checked=True)
        self.tiling_combo = QComboBox()
        self.tiling_combo.addItems([TILING_AUTO, TILING_OFF])
        self.tiling_combo.setToolTip(
            "auto: a slice larger than the model input is answered tile by tile at native "
            "resolution (docs/tiling.md); off: every slice is shrunk into the input"
        )
        self.load_button = QPushButton("Load model", clicked=self.load_model)
        self.precompute_button = QPushButton("Precompute all slices", clicked=self.precompute)
        self.commit_button = QPushButton(f"Commit [{KEY_COMMIT}]", clicked=self.commit)
        self.clear_button = QPushButton(f"Clear [{KEY_CLEAR}]", clicked=self.clear_prompts)
        self.undo_button = QPushButton("Undo commit [Ctrl+Z]", clicked=self.undo_commit)
        self.redo_button = QPushButton("Redo [Ctrl+Shift+Z]", clicked=self.redo_commit)
        self.status = QLabel("Load a model to start.", wordWrap=True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        header = QFormLayout()
        header.addRow("image", self.image_combo)
        header.addRow("channel axis", self.channel_combo)
        header.addRow("labels", self.labels_combo)
        header.addRow(self.overwrite_check)

        model_tab = QWidget()
        form = QFormLayout(model_tab)
        form.addRow("model", self.model_combo)
        form.addRow(self.model_hint)
        form.addRow("", ck)
        form.addRow("device", self.device_combo)
        form.addRow("precision", self.precision_combo)
        form.addRow("tiles", self.tiling_combo)
        form.addRow("store", self.store_edit)
        form.addRow(self.ram_only)
        form.addRow(self.prefetch_check)
        form.addRow(self.load_button)
        form.addRow(self.precompute_button)

        interactive = QWidget()
        lay = QVBoxLayout(interactive)
        for pair in ((self.commit_button, self.clear_button), (self.undo_button, self.redo_button)):
            row = QHBoxLayout()
            for b in pair:
                row.addWidget(b)
            lay.addLayout(row)
        lay.addWidget(
            QLabel(
                "Click on the image (SAM points) or draw a box (SAM boxes); the magenta "
                f"outline is the preview. [{KEY_TOGGLE_POLARITY}] next clicks negative / "
                "positive.",
                wordWrap=True,
            )
        )
        lay.addStretch()

        self.tabs = QTabWidget()
        self.tabs.addTab(model_tab, "Model")
        self.tabs.addTab(interactive, "Interactive")
        content = QWidget()
        inner = QVBoxLayout(content)
        inner.addLayout(header)
        inner.addWidget(self.tabs)
        inner.addStretch()
        self.scroll = QScrollArea(widgetResizable=True)
        self.scroll.setWidget(content)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.jobs = QVBoxLayout()
        outer = QVBoxLayout(self)
        outer.addWidget(self.scroll, 1)
        outer.addLayout(self.jobs)
        outer.addWidget(self.status)
        self.precompute_row = self.job_row("precomputing embeddings", self.cancel_precompute)
        self.cancel_button = self.precompute_row.cancel_button
        self._fit_width()
        self._update_model_hint()

    def add_tab(self, widget: QWidget, title: str) -> None:
        """A section of the panel (Propagate, Automatic)."""
        self.tabs.addTab(widget, title)
        self._fit_width()

    def job_row(self, title: str, cancel) -> JobRow:
        """A row for a job (shown while it runs), below the scroll area."""
        row = JobRow(title, cancel)
        self.jobs.addWidget(row)
        return row

    def _update_model_hint(self, *_: object) -> None:
        """Suggest vit_t (with the measured times) when the chosen model is a ViT that
        would run on a CPU without native bfloat16 (:func:`~napari_sam.engine.expected
        .vit_t_suggestion`); hidden otherwise. The user's choice is never changed."""
        from .. import weights
        from ..engine.cpu import cpu_info
        from ..engine.device import resolve_device
        from ..engine.expected import vit_t_suggestion

        try:
            model_type = weights.get_model_info(self.model_combo.currentText()).model_type
            device = resolve_device(self.device_combo.currentText()).type
        except ValueError:  # unknown name, a device not present here
            model_type, device = "", ""
        hint = vit_t_suggestion(model_type, device, cpu_info())
        self.model_hint.setText(hint or "")
        self.model_hint.setVisible(hint is not None)

    def _fit_width(self) -> None:
        """Only vertical scrolling: the scroll area is as wide as its content needs."""
        content = self.scroll.widget()
        bar = self.scroll.verticalScrollBar().sizeHint().width()
        frame = 2 * self.scroll.frameWidth()
        self.scroll.setMinimumWidth(content.minimumSizeHint().width() + bar + frame)

    def _browse_checkpoint(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "SAM checkpoint", "", "*.pt *.pth")
        if path:
            self.checkpoint_edit.setText(path)

    def _refresh_layer_lists(self, event=None) -> None:
        """Called from napari's layer-list events: only combos change here (their
        signals schedule the real work for the next event-loop turn)."""
        self._on_layers_changed()
        for combo, kind, extra in (
            (self.image_combo, Image, []),
            (self.labels_combo, Labels, [NEW_LABELS]),
        ):
            current = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(extra + [ly.name for ly in self.viewer.layers if isinstance(ly, kind)])
            if current and combo.findText(current) >= 0:
                combo.setCurrentText(current)
            combo.blockSignals(False)
        self._on_choice_changed()

    def _on_layers_changed(self) -> None:
        """Hook called before the layer lists are refreshed (overridden)."""

    def _on_choice_changed(self, *_args) -> None:
        """Hook: the image / channel choice may have changed (overridden)."""

    def set_status(self, text: str) -> None:
        self.status.setText(text)
