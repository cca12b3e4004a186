"""Regenerate the export screenshots of docs/export.md (napari under a virtual display).

    xvfb-run -a .venv/bin/python docs/make_export_screenshots.py

Opens the synthetic 3D nuclei sample, loads the demo model in the napari-sam widget,
commits six nuclei, shows the Export tab and its file dialog, exports to a temporary
folder through the tab and opens napari's features table on the labels layer. Writes
docs/images/export_tab.png, export_dialog.png and export_features.png.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "images"


def wait(app, cond, timeout=120.0):
    t0 = time.time()
    while not cond():
        app.processEvents()
        time.sleep(0.02)
        if time.time() - t0 > timeout:
            raise TimeoutError("napari-sam did not answer in time")


def settle(app, seconds=0.4):
    t0 = time.time()
    while time.time() - t0 < seconds:
        app.processEvents()
        time.sleep(0.02)


def main() -> int:
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QApplication, QFileDialog

    import napari
    from napari_sam._napari.export_panel import FILTERS
    from napari_sam._napari.sample_data import nuclei_3d
    from napari_sam._napari.widget import SamWidget
    from napari_sam.engine.metrics import interior_point

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1700, 1000)
    (image, image_meta, _), (truth, _truth_meta, _) = nuclei_3d()
    layer = viewer.add_image(image, **image_meta)
    widget = SamWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segment Anything")
    app = QApplication.instance()
    widget.image_combo.setCurrentText(layer.name)
    widget.model_combo.setCurrentText("demo")
    widget.ram_only.setChecked(True)
    widget.load_model()
    wait(app, lambda: widget.session is not None)
    viewer.reset_view()
    z = image.shape[0] // 2
    viewer.dims.set_point(0, layer.data_to_world((z, 0, 0))[0])
    for obj in [i for i in np.unique(truth[z]) if i][:6]:
        r, c = interior_point(truth[z] == obj)
        widget.points.add([z, r, c])
        wait(app, lambda: widget.preview is not None)
        widget.commit()
    panel = widget.export_panel
    widget.tabs.setCurrentWidget(panel)
    settle(app)
    viewer.screenshot(str(OUT / "export_tab.png"), canvas_only=False)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "experiment"
        folder.mkdir()
        dialog = QFileDialog(panel, "Export labels", str(folder / "nuclei.ome.zarr"),
                             FILTERS)
        dialog.setOption(QFileDialog.Option.DontUseNativeDialog)
        dialog.setAcceptMode(QFileDialog.AcceptMode.AcceptSave)
        dialog.selectFile("nuclei.ome.zarr")
        dialog.resize(900, 520)
        dialog.show()
        settle(app)
        dialog.grab().save(str(OUT / "export_dialog.png"))
        dialog.close()

        panel.export(folder / "nuclei.ome.zarr")
        wait(app, lambda: panel.worker is None)
        labels = viewer.layers["SAM labels"]
        viewer.layers.selection.active = labels
        dock, _ = viewer.window.add_plugin_dock_widget("napari", "Features table widget")
        qt_window = viewer.window._qt_window
        qt_window.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, dock)  # full width
        qt_window.resizeDocks([dock], [300], Qt.Orientation.Vertical)
        settle(app, 1.0)
        viewer.screenshot(str(OUT / "export_features.png"), canvas_only=False)
        print(widget.status.text())
    widget.release()
    viewer.close()
    print("wrote", *(OUT / f"export_{n}.png" for n in ("tab", "dialog", "features")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
