"""The widget's controls (Qt only): model / device / store choices, buttons, status.

Behaviour lives in :mod:`napari_sam._napari.widget`; this base class only builds the
form and keeps the layer choosers in sync with the viewer.
"""

from __future__ import annotations

from napari.layers import Image, Labels
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .constants import KEY_CLEAR, KEY_COMMIT

NEW_LABELS = "<new labels layer>"


class ControlsBase(QWidget):
    """Form + buttons; subclasses implement load_model, commit, clear_prompts,
    precompute, cancel_precompute and _on_layers_changed."""

    def _build_ui(self) -> None:
        from .. import weights

        self.image_combo = QComboBox()
        self.labels_combo = QComboBox()
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
        self.store_edit = QLineEdit(placeholderText="embedding store: default user cache")
        self.ram_only = QCheckBox("keep embeddings in RAM only (no zarr store)")
        self.channel_combo = QComboBox()
        self.channel_combo.addItems(["none", "axis 0"])
        self.channel_combo.setToolTip(
            "non-RGB multichannel stack: the channel axis (first axis). The channel shown "
            "is segmented; labels have no channel axis."
        )
        self.prefetch_check = QCheckBox("prefetch neighbouring slices", checked=True)
        self.load_button = QPushButton("Load model", clicked=self.load_model)
        self.overwrite_check = QCheckBox("overwrite existing objects")
        self.commit_button = QPushButton(f"Commit [{KEY_COMMIT}]", clicked=self.commit)
        self.clear_button = QPushButton(f"Clear [{KEY_CLEAR}]", clicked=self.clear_prompts)
        self.precompute_button = QPushButton("Precompute all slices", clicked=self.precompute)
        self.cancel_button = QPushButton("Cancel", clicked=self.cancel_precompute)
        self.status = QLabel("Load a model to start.", wordWrap=True)

        form = QFormLayout()
        form.addRow("image", self.image_combo)
        form.addRow("labels", self.labels_combo)
        form.addRow("model", self.model_combo)
        form.addRow("", ck)
        form.addRow("device", self.device_combo)
        form.addRow("precision", self.precision_combo)
        form.addRow("channel axis", self.channel_combo)
        form.addRow("store", self.store_edit)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.ram_only)
        lay.addWidget(self.prefetch_check)
        lay.addWidget(self.load_button)
        row = QHBoxLayout()
        row.addWidget(self.commit_button)
        row.addWidget(self.clear_button)
        lay.addLayout(row)
        lay.addWidget(self.overwrite_check)
        row2 = QHBoxLayout()
        row2.addWidget(self.precompute_button)
        row2.addWidget(self.cancel_button)
        lay.addLayout(row2)
        lay.addWidget(self.status)
        lay.addStretch()
        self.cancel_button.setEnabled(False)

    def _browse_checkpoint(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "SAM checkpoint", "", "*.pt *.pth")
        if path:
            self.checkpoint_edit.setText(path)

    def _refresh_layer_lists(self, event=None) -> None:
        self._on_layers_changed()
        for combo, kind, extra in (
            (self.image_combo, Image, []),
            (self.labels_combo, Labels, [NEW_LABELS]),
        ):
            current = combo.currentText()
            combo.clear()
            combo.addItems(extra + [ly.name for ly in self.viewer.layers if isinstance(ly, kind)])
            if current and combo.findText(current) >= 0:
                combo.setCurrentText(current)

    def _on_layers_changed(self) -> None:
        """Hook called before the layer lists are refreshed (overridden)."""

    def set_status(self, text: str) -> None:
        self.status.setText(text)
