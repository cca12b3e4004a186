"""Which image the widget segments, with which model: loading, (re)building the
session, the store-mismatch question, the target labels of each image.

The session belongs to one *binding* — (image layer, channel axis) with that layer's
data — and one model. When the user picks another image or channel axis, replaces the
layer's data or removes the layer, the session is dropped at once (its workers' results
are dropped from then on: :class:`~napari_sam._napari.workers.WorkerOwner`) and, on the
next event-loop turn (never inside a napari layer or dims event), the prompt layers are
re-created for the new image, the labels chooser moves to that image's labels and — if a
model is loaded — a session for it is opened in a worker.
"""

from __future__ import annotations

from dataclasses import dataclass

from napari.layers import Image, Labels
from qtpy.QtWidgets import QMessageBox

from ..session import SegmentationSession
from . import adapters, commit
from .constants import MEMORY_CACHE_SLICES, MEMORY_CACHE_TILES
from .controls import NEW_LABELS, TILING_OFF

REPLACE, RAM_ONLY, CANCEL = "replace", "ram", "cancel"


@dataclass(frozen=True)
class StoreConflict:
    """The store at ``path`` was made for something else (``differences``)."""

    path: str
    differences: str


class BindingMixin:
    """Part of :class:`SamWidget`: model, session and the image they belong to."""

    # ------------------------------------------------------------------ choices
    def _chosen(self) -> tuple[Image | None, int | None]:
        """(image layer, channel axis) chosen in the combos now."""
        name = self.image_combo.currentText()
        layer = self.viewer.layers[name] if name in self.viewer.layers else None
        layer = layer if isinstance(layer, Image) else None
        return layer, None if self.channel_combo.currentText() == "none" else 0

    def _on_choice_changed(self, *_args) -> None:
        """The image / channel choice or the layer list changed: drop a session that no
        longer fits now, rebuild on the next event-loop turn."""
        if self._released:
            return
        if self._binding is not None and not self._binding_valid():
            self._drop_session()
        self._sync_timer.start()

    def _binding_valid(self) -> bool:
        layer, channel, data = self._binding
        return (
            (layer, channel) == self._chosen()
            and layer in self.viewer.layers
            and layer.data is data
        )

    def _on_layers_changed(self) -> None:
        if self._binding is not None and self._binding[0] not in self.viewer.layers:
            self._drop_session()
            self._binding = None
            self.set_status("the image layer was removed: choose an image and load again")

    def _drop_session(self) -> None:
        """Forget the session (no layer is touched: this may run inside napari events)."""
        self.workers.invalidate()
        self.session, self.preview = None, None
        self._embedding_jobs.clear()
        self._tile_jobs.clear()
        self._stop_tile_prefetch()
        self._opening = False

    def _sync(self) -> None:
        """Event-loop turn after a change: prompt layers, labels target, session."""
        if self._released:
            return
        image, channel = self._chosen()
        if self._binding is not None and self._binding_valid():
            if self.session is not None:
                self.layers.ensure(image, self.preview_window())  # a deleted layer comes back
            return
        first = self._binding is None
        if not first or self.session is not None or self._opening:
            # nothing was bound: the workers running now (e.g. an export) are not the
            # session's — a new layer in the list must not cancel them
            self._drop_session()
        self.layers.remove()
        self._binding = None if image is None else (image, channel, image.data)
        self._retarget_labels(keep_choice=first)
        if image is not None and self.model is not None:
            self._open_session()

    def _retarget_labels(self, keep_choice: bool = False) -> None:
        """The labels chooser shows the labels layer used with the bound image before,
        else — for a first binding, when ``keep_choice`` — the user's choice if it fits
        the image, else a new one. Another image never inherits the previous image's
        labels layer implicitly."""
        target = self._labels_for.get(self._binding_key())
        if target is not None and target in self.viewer.layers:
            self.labels_combo.setCurrentText(target.name)
            return
        name = self.labels_combo.currentText()
        if keep_choice and self._binding is not None and name in self.viewer.layers:
            image, channel, _ = self._binding
            try:
                commit.check_compatible(self.viewer.layers[name], image, channel)
                return
            except (ValueError, AttributeError):
                pass
        self.labels_combo.setCurrentText(NEW_LABELS)

    def _binding_key(self) -> tuple | None:
        return None if self._binding is None else (id(self._binding[0]), self._binding[1])

    def _remember_labels(self, labels: Labels) -> None:
        self._labels_for[self._binding_key()] = labels

    # ------------------------------------------------------------------- loading
    def load_model(self) -> None:
        """Load the chosen model in a worker (kept while only the image changes), then
        open a session for the chosen image."""
        image, channel = self._chosen()
        problem = _check_image(image, channel)
        if problem:
            self.set_status(problem)
            return
        key = (
            self.model_combo.currentText(),
            self.checkpoint_edit.text().strip() or None,
            self.device_combo.currentText(),
            self.precision_combo.currentText(),
        )
        previous = self._binding
        self._drop_session()
        self._binding = (image, channel, image.data)
        self._retarget_labels(keep_choice=previous is None or previous[:2] == (image, channel))
        if self.model is not None and key == self._model_key:
            self._open_session()
            return
        name, ckpt, device, precision = key

        def job():
            from ..engine.loader import load_model

            return load_model(name, checkpoint=ckpt, device=device, precision=precision)

        self.load_button.setEnabled(False)
        self.set_status(f"Loading {name} …")
        self.workers.start(
            job,
            on_result=lambda model: self._on_model(model, key),
            done=lambda: self.load_button.setEnabled(True),
            guard=False,  # a model stays useful when the image changed meanwhile
        )

    def _on_tiling_changed(self, *_args) -> None:
        """Tiles on / off: a loaded model's session is opened again with the choice."""
        if self._released or self.model is None or self._binding is None:
            return
        if self._binding_valid():
            self._drop_session()
            self._open_session()

    def _on_model(self, model, key: tuple) -> None:
        self.model, self._model_key = model, key
        self.amg_panel.model_loaded(model.name if key[1] is None else None)
        if self._binding is None or not self._binding_valid():
            self._sync()
            if self._binding is None:
                self.set_status(
                    f"{model.name} loaded; the image layer was removed: choose an image"
                )
            return
        self._open_session()

    def _open_session(self, on_mismatch: str = "error", ram_only: bool | None = None) -> None:
        """Open a session for the bound image in a worker (the store is opened there)."""
        image, channel, data = self._binding
        problem = _check_image(image, channel)
        if problem:
            self.set_status(problem)
            return
        model = self.model
        # a multiscale layer (e.g. an OME-Zarr opened by napari-ome-zarr) is segmented
        # on its level 0 — the layer's own scale / translate are level 0's — read slice
        # by slice in the workers like any lazy image
        data = data[0] if image.multiscale else data
        ram = self.ram_only.isChecked() if ram_only is None else ram_only
        store = None if ram else (self.store_edit.text().strip() or "")
        tiling = "off" if self.tiling_combo.currentText() == TILING_OFF else "auto"

        def job():
            path = store
            if path == "":  # the default cache: found again from the data's content
                from ..engine.tiling import TileGrid
                from ..store import SliceLayout
                from ..store.paths import default_store_path_for

                layout = SliceLayout.for_shape(data.shape, rgb=bool(image.rgb))
                grid = TileGrid.for_model(layout.slice_size, model.sam.image_size, tiling)
                path = default_store_path_for(
                    data,
                    layout,
                    model.name,
                    model.precision,
                    weights=model.weights_hash,
                    source_path=image.source.path,
                    tiling=None if grid is None else grid.to_dict(),
                )
            from ..store import StoreMismatchError

            try:
                session = SegmentationSession(
                    model, data, bool(image.rgb), path, on_mismatch=on_mismatch,
                    ram_slices=MEMORY_CACHE_SLICES, tiling=tiling,
                    ram_tiles=MEMORY_CACHE_TILES,
                )  # fmt: skip
            except StoreMismatchError as err:
                return StoreConflict(str(path), _differences(err))
            if store == "":
                _cap_default_cache(path)
            return session

        self._opening = True
        self.set_status(f"opening a session for {image.name!r} …")
        self.workers.start(job, on_result=self._on_session, on_error=self._on_session_error)

    def _on_session_error(self, err: Exception) -> None:
        self._opening = False
        self._on_error(err)

    def _on_session(self, result) -> None:
        self._opening = False
        if isinstance(result, StoreConflict):
            choice = self.ask_store_mismatch(result.path, result.differences)
            if choice == REPLACE:
                self._open_session(on_mismatch="overwrite")
            elif choice == RAM_ONLY:
                self._open_session(ram_only=True)
            else:
                self.set_status(
                    f"not started: the embedding store {result.path} was left unchanged; "
                    "choose another store path or RAM only",
                    notify=True,
                )
            return
        self.session = result
        image = self._binding[0]
        self.layers.ensure(image, self.preview_window())
        try:  # created now, not at the first commit (napari's layer creation is slow)
            self.target_labels()
        except ValueError as err:
            self.set_status(str(err))
            return
        m = result.model
        where = result.store.path if result.store is not None else "RAM"
        grid = result.grid
        tiles = (
            ""
            if grid is None
            else f"; tiled: {grid.shape[0]} × {grid.shape[1]} tiles of "
            f"{grid.tile[0]} × {grid.tile[1]} px (+ halo {grid.halo[0]} px) per slice, "
            "each embedded when a prompt needs it"
        )
        self.set_status(
            f"{m.name} on {m.device} ({m.precision}) for {image.name!r}; embeddings: "
            f"{where}{tiles}",
            notify=True,
        )
        self.schedule_preview()

    def preview_window(self) -> tuple[int, int] | None:
        """(h, w) of the preview layer on a tiled session (a tile's outer region), None
        when the session's slices are whole."""
        grid = None if self.session is None else self.session.grid
        if grid is None:
            return None
        r0, c0, r1, c1 = grid.outer((0, 0))
        return r1 - r0, c1 - c0

    def ask_store_mismatch(self, path: str, differences: str) -> str:
        """Ask whether to replace a store made for something else: returns
        :data:`REPLACE`, :data:`RAM_ONLY` or :data:`CANCEL` (tests replace this)."""
        box = QMessageBox(self)
        box.setIcon(QMessageBox.Icon.Warning)
        box.setWindowTitle("napari-sam: embedding store")
        box.setText(
            f"The embedding store {path} was made for something else: {differences}.\n\n"
            "Replace it?"
        )
        replace = box.addButton("Replace", QMessageBox.ButtonRole.DestructiveRole)
        ram = box.addButton("Use RAM only", QMessageBox.ButtonRole.AcceptRole)
        cancel = box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(cancel)
        box.exec()
        clicked = box.clickedButton()
        return REPLACE if clicked is replace else RAM_ONLY if clicked is ram else CANCEL


def _check_image(image: Image | None, channel: int | None) -> str:
    """A one-line problem with the chosen image, or ""."""
    if image is None:
        return "Add an image layer first."
    if min(adapters.spatial_shape(image)) < 2:
        return f"image {image.name!r} is too small to segment (needs ≥ 2×2 pixels)"
    if channel is not None and adapters.spatial_ndim(image) < 3:
        return "a channel axis needs an image with at least 3 axes"
    return ""


def _differences(err) -> str:
    """The differences named by a StoreMismatchError (its problem, without the API's
    advice: the dialog offers its own ways out)."""
    _head, sep, rest = err.problem.partition("was made for something else: ")
    return rest if sep else err.problem


def _cap_default_cache(keep) -> None:
    """Worker thread: least-recently-used default stores beyond the cap
    (``NAPARI_SAM_CACHE_MAX_GB``, docs/cache.md) are removed; stores in use never."""
    from ..store.cache_dir import enforce_cap

    try:
        enforce_cap(keep=(keep,))
    except ValueError as err:  # a malformed NAPARI_SAM_CACHE_MAX_GB: say so, go on
        import warnings

        warnings.warn(f"embedding cache not capped: {err}", stacklevel=2)
