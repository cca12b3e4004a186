"""GUI latency of the napari-sam widget: the longest gap between processed Qt events
while its workers run (preview clicks, propagation, automatic masks), with the demo
model on a synthetic nuclei volume. Target: ≤ 100 ms.

A QTimer ticks every ``--tick-ms`` ms on the GUI thread; the gap between two ticks is
the time the event loop could not process events (a GUI-thread callback running, or
the GIL held by a worker). The script drives a real :class:`SamWidget` in a real napari
window as a user would (clicks → previews → commits, then "Propagate all objects on
this slice", "Segment this slice", "Segment all slices") and prints, per phase, the
number of ticks, the median / 99th percentile / largest gap.

``--trace``: a watchdog thread samples the Python stacks of all threads whenever the
GUI thread is late by more than ``--trace-ms``, and prints the most frequent innermost
frames — where the GUI thread was, and what the other threads were doing (a worker in a
long C call that holds the GIL shows up there).

Run (needs a display; a virtual one is fine)::

    xvfb-run -a .venv/bin/python benchmarks/gui_latency.py [--shape 16 192 192]
        [--tick-ms 5] [--trace]
"""

from __future__ import annotations

import argparse
import collections
import os
import platform
import sys
import threading
import time
import traceback
from typing import ClassVar

import numpy as np


class TickRecorder:
    """Timestamps of a QTimer on the GUI thread; gaps per named phase."""

    def __init__(self, tick_ms: int) -> None:
        from qtpy.QtCore import QTimer

        self.ticks: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(tick_ms)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))
        self.phases: list[tuple[str, int, int]] = []

    def start(self) -> None:
        self.timer.start()

    def mark(self, name: str, first: int) -> None:
        self.phases.append((name, first, len(self.ticks)))

    def gaps(self, first: int, last: int) -> np.ndarray:
        t = np.asarray(self.ticks[first:last])
        return np.diff(t) * 1000.0 if t.size > 1 else np.zeros(1)


class Watchdog(threading.Thread):
    """Samples every thread's stack while the GUI thread is late (``--trace``)."""

    def __init__(self, rec: TickRecorder, late_ms: float) -> None:
        super().__init__(daemon=True)
        self.rec, self.late = rec, late_ms / 1000.0
        self.main = threading.main_thread().ident
        self.where: collections.Counter[str] = collections.Counter()
        self.others: collections.Counter[str] = collections.Counter()
        self.samples: list[tuple[float, str]] = []  # (time, GUI-thread stack)
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.005):
            if not self.rec.ticks or time.perf_counter() - self.rec.ticks[-1] < self.late:
                continue
            for ident, frame in sys._current_frames().items():
                if ident == threading.get_ident():
                    continue
                stack = traceback.extract_stack(frame)[-3:]
                text = " <- ".join(
                    f"{os.path.basename(f.filename)}:{f.lineno} {f.name}" for f in stack[::-1]
                )
                (self.where if ident == self.main else self.others)[text] += 1
                if ident == self.main:
                    full = traceback.extract_stack(frame)[-12:]
                    deep = " <- ".join(
                        f"{os.path.basename(f.filename)}:{f.lineno} {f.name}" for f in full[::-1]
                    )
                    self.samples.append((time.perf_counter(), deep))


class CallbackTimes:
    """Durations of the widget's own GUI-thread callbacks (``--trace``): tells the
    widget's share of a gap from napari's (drawing, layer list)."""

    NAMES: ClassVar[dict[str, tuple[str, ...]]] = {
        "SamWidget": (
            "update_preview",
            "_on_preview",
            "commit",
            "clear_prompts",
            "target_labels",
            "set_status",
            "_sync",
        ),
        "PropagatePanel": ("propagate", "_write"),
        "AmgPanel": ("segment", "_write"),
        "OwnLayers": ("show", "ensure", "follow_zoom"),
    }

    def __init__(self) -> None:
        self.worst: dict[str, float] = collections.defaultdict(float)
        self.calls: list[tuple[float, float, str]] = []  # (start, end, label)

    def install(self) -> None:
        from napari_sam._napari import amg_panel, commit, own_layers, propagate_panel, widget

        classes = {
            "SamWidget": widget.SamWidget,
            "PropagatePanel": propagate_panel.PropagatePanel,
            "AmgPanel": amg_panel.AmgPanel,
            "OwnLayers": own_layers.OwnLayers,
        }
        for name in ("commit_slice_mask", "apply_write"):
            setattr(commit, name, self._timed(f"commit.{name}", getattr(commit, name)))
        for cls_name, names in self.NAMES.items():
            cls = classes[cls_name]
            for name in names:
                setattr(cls, name, self._timed(f"{cls_name}.{name}", getattr(cls, name)))

    def _timed(self, label, fn):
        def timed(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                t1 = time.perf_counter()
                self.worst[label] = max(self.worst[label], (t1 - t0) * 1000.0)
                if threading.current_thread() is threading.main_thread():
                    self.calls.append((t0, t1, label))

        return timed


def wait(app, cond, timeout: float = 600.0) -> None:
    t0 = time.time()
    while not cond():
        app.processEvents()
        time.sleep(0.002)
        if time.time() - t0 > timeout:
            raise TimeoutError("the widget did not answer in time")


def pause(app, seconds: float) -> None:
    """Let the event loop run, as between a user's actions (reaction time)."""
    t0 = time.time()
    while time.time() - t0 < seconds:
        app.processEvents()
        time.sleep(0.002)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", type=int, nargs=3, default=(16, 192, 192))
    ap.add_argument("--objects", type=int, default=4, help="clicked + committed nuclei")
    ap.add_argument("--tick-ms", type=int, default=5)
    ap.add_argument("--think", type=float, default=0.3, help="s between a user's actions")
    ap.add_argument("--trace", action="store_true")
    ap.add_argument("--trace-ms", type=float, default=40.0)
    args = ap.parse_args()

    from qtpy.QtWidgets import QApplication

    import napari
    from napari_sam._napari.widget import SamWidget
    from napari_sam.engine.metrics import interior_point
    from napari_sam.synthetic import nuclei_3d

    times = CallbackTimes()
    if args.trace:
        times.install()
    image, truth = nuclei_3d(tuple(args.shape), seed=2024, z_step=2.5)
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1366, 768)
    layer = viewer.add_image(image, name="nuclei", scale=(2.5, 1.0, 1.0))
    widget = SamWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segment Anything")
    app = QApplication.instance()
    widget.image_combo.setCurrentText("nuclei")
    widget.model_combo.setCurrentText("demo")
    widget.ram_only.setChecked(True)
    widget.load_model()
    wait(app, lambda: widget.session is not None)

    rec = TickRecorder(args.tick_ms)
    dog = Watchdog(rec, args.trace_ms)
    rec.start()
    if args.trace:
        dog.start()

    z = args.shape[0] // 2
    viewer.dims.set_point(0, layer.data_to_world((z, 0, 0))[0])
    app.processEvents()

    # 0. reference: napari alone — points added to a plain Points layer, no worker runs
    plain = viewer.add_points(ndim=3, name="reference points", size=4, scale=layer.scale)
    viewer.layers.selection.active = widget.points
    pause(app, args.think)
    first = len(rec.ticks)
    for k in range(args.objects):
        plain.add([z, 10 + 5 * k, 10])
        pause(app, args.think)
    rec.mark("reference: napari adds a point (no widget work)", first)
    viewer.layers.remove(plain)
    viewer.dims.set_point(0, layer.data_to_world((z, 0, 0))[0])
    pause(app, args.think)

    # 1. clicks → previews (encoder of this slice + prefetch of neighbours) → commits
    first = len(rec.ticks)
    ids = [i for i in np.unique(truth[z]) if i][: args.objects]
    for obj in ids:
        r, c = interior_point(truth[z] == obj)
        widget.points.add(widget.points.world_to_data(layer.data_to_world((z, r, c))))
        wait(app, lambda: widget.preview is not None, timeout=120)
        pause(app, args.think)
        widget.commit()
        pause(app, args.think)
    wait(app, lambda: not widget._embedding_jobs)
    rec.mark("clicks → preview → commit (+ prefetch)", first)

    # 2. propagate every object of this slice through the volume
    first = len(rec.ticks)
    panel = widget.propagate_panel
    panel.propagate(all_on_slice=True)
    wait(app, lambda: panel.worker is None)
    rec.mark("propagate all objects of the slice", first)

    # 3. automatic masks on this slice, then on every slice (linked in z)
    amg = widget.amg_panel
    for name, volume in (("segment everything: this slice", False), ("… all slices", True)):
        first = len(rec.ticks)
        amg.segment(volume=volume)
        wait(app, lambda: amg.worker is None)
        rec.mark(name, first)
    status = widget.status.text()
    dog.stop.set()
    rec.timer.stop()

    cpu = platform.processor() or platform.machine()
    with open("/proc/cpuinfo") as f:
        names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
    import torch

    print(f"CPU: {names[0] if names else cpu} × {os.cpu_count()}, torch threads "
          f"{torch.get_num_threads()}, volume {tuple(args.shape)}, tick {args.tick_ms} ms")
    print(f"last status: {status}\n")
    print("| phase | ticks | median gap ms | p99 gap ms | max gap ms |")
    print("|---|---|---|---|---|")
    worst = 0.0
    for name, a, b in rec.phases:
        g = rec.gaps(a, b)
        worst = max(worst, float(g.max()))
        print(f"| {name} | {b - a} | {np.median(g):.1f} | {np.percentile(g, 99):.1f} | "
              f"{g.max():.1f} |")
    print(f"\nlongest gap over all phases: {worst:.1f} ms")
    if args.trace:
        for title, counter in (("GUI thread", dog.where), ("other threads", dog.others)):
            print(f"\n{title} while late (> {args.trace_ms:.0f} ms), most frequent:")
            for text, n in counter.most_common(12):
                print(f"  {n:5d}  {text}")
        print("\ngaps > 80 ms and the widget's callbacks inside them (ms):")
        for name, a, b in rec.phases:
            t = np.asarray(rec.ticks[a:b])
            for i in np.nonzero(np.diff(t) > 0.08)[0]:
                inside = [
                    f"{lab} {1000 * (e - s0):.0f}"
                    for s0, e, lab in times.calls
                    if s0 < t[i + 1] and e > t[i] and e - s0 > 0.005
                ]
                print(f"  {name[:24]:24s} {1000 * (t[i + 1] - t[i]):6.0f}  {', '.join(inside)}")
                if t[i + 1] - t[i] > 0.1:
                    stacks = collections.Counter(
                        st for ts, st in dog.samples if t[i] < ts < t[i + 1]
                    )
                    for st, n in stacks.most_common(3):
                        print(f"      {n:3d}  {st}")
        print("\nlongest run of the widget's own GUI-thread callbacks (ms):")
        for label, ms in sorted(times.worst.items(), key=lambda kv: -kv[1]):
            print(f"  {ms:8.1f}  {label}")
    widget.release()
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
