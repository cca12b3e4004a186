"""The widget on a large plane (docs/tiling.md section 8), made under a virtual display:

    xvfb-run -a .venv/bin/python docs/make_tile_screenshot.py

A 2048² uint16 plane of small synthetic nuclei (8–40 px), the demo model (256-px input:
an 11 × 11 grid of 192-px tiles + 32-px halo), a view of about 3 × 3 tiles;
clicks on a few nuclei — one cut by an inner tile border — each committed, then one more
left as a preview; the "SAM tiles" layer outlines the tiles embedded. Writes
docs/images/widget_tiles.png.
"""

from __future__ import annotations

import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "images"


def pump(app, cond=lambda: True, timeout: float = 120.0, settle: float = 0.0) -> None:
    """Run the event loop until ``cond()``, then ``settle`` seconds more."""
    t0 = time.time()
    while not cond():
        app.processEvents()
        time.sleep(0.02)
        if time.time() - t0 > timeout:
            raise TimeoutError("napari-sam did not answer in time")
    t1 = time.time()
    while time.time() - t1 < settle:
        app.processEvents()
        time.sleep(0.02)


def main() -> int:
    from qtpy.QtWidgets import QApplication
    from scipy import ndimage as ndi

    import napari
    from napari_sam._napari.widget import SamWidget
    from napari_sam.engine.metrics import interior_point
    from napari_sam.synthetic import nuclei_2d

    image, truth = nuclei_2d((2048, 2048), seed=7, dtype="uint16", radius=(4.0, 20.0))
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1700, 1000)
    layer = viewer.add_image(image, name="plane 2048²", contrast_limits=(0, int(image.max())))
    widget = SamWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segment Anything")
    app = QApplication.instance()
    widget.image_combo.setCurrentText(layer.name)
    widget.model_combo.setCurrentText("demo")
    widget.ram_only.setChecked(True)
    widget.load_model()
    pump(app, lambda: widget.session is not None)
    widget.tabs.setCurrentIndex(1)  # Interactive
    grid = widget.session.grid
    # a view of about 3 × 3 tiles around the border between tiles (4, 4) and (4, 5)
    border = grid.tile[1] * 5
    centre = (grid.tile[0] * 4.5, float(border))
    viewer.scene.camera.center = tuple(layer.data_to_world(centre))
    viewer.scene.camera.zoom = 1.5
    pump(app, settle=0.5)
    objs = ndi.find_objects(truth)
    near = [
        i
        for i, sl in enumerate(objs, 1)
        if sl is not None
        and abs((sl[0].start + sl[0].stop) / 2 - centre[0]) < 200
        and abs((sl[1].start + sl[1].stop) / 2 - centre[1]) < 260
        and (truth[sl] == i).sum() > 60
    ]
    across = [i for i in near if objs[i - 1][1].start < border < objs[i - 1][1].stop]
    picks = (across[:1] + [i for i in near if i not in across])[:6]
    for k, obj in enumerate(picks):
        r, c = interior_point(truth == obj)
        widget.points.add([r, c])
        pump(app, lambda: widget.preview is not None, settle=0.3)
        if k < len(picks) - 1:
            widget.commit()
    pump(app, lambda: not widget._tile_jobs, settle=3.0)  # neighbours outlined
    OUT.mkdir(exist_ok=True)
    viewer.screenshot(str(OUT / "widget_tiles.png"), canvas_only=False)
    widget.release()
    viewer.close()
    print("wrote", OUT / "widget_tiles.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
