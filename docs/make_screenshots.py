"""Regenerate the user-guide screenshots (napari under a virtual display).

    xvfb-run -a .venv/bin/python docs/make_screenshots.py

Opens the synthetic 3D nuclei sample, loads the demo model in the napari-sam widget,
shows its Interactive tab, clicks on a nucleus, waits for the preview (magenta outline),
takes a screenshot, commits, moves on and takes a second one. Writes
docs/images/widget_preview.png and widget_committed.png.
"""

from __future__ import annotations

import sys
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


def main() -> int:
    from qtpy.QtWidgets import QApplication

    import napari
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
    widget.tabs.setCurrentIndex(1)  # Interactive

    viewer.reset_view()
    z = image.shape[0] // 2
    viewer.dims.set_point(0, layer.data_to_world((z, 0, 0))[0])
    ids = [i for i in np.unique(truth[z]) if i]
    for k, obj in enumerate(ids[:6]):
        r, c = interior_point(truth[z] == obj)
        widget.points.add([z, r, c])
        wait(app, lambda: widget.preview is not None)
        t0 = time.time()
        while time.time() - t0 < 0.3:  # let napari draw the preview
            app.processEvents()
            time.sleep(0.02)
        if k == 0:
            viewer.reset_view()
            time.sleep(0.3)
            app.processEvents()
            viewer.screenshot(str(OUT / "widget_preview.png"), canvas_only=False)
        widget.commit()
    time.sleep(0.3)
    app.processEvents()
    viewer.screenshot(str(OUT / "widget_committed.png"), canvas_only=False)
    widget.release()
    viewer.close()
    print("wrote", OUT / "widget_preview.png", OUT / "widget_committed.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
