"""Frame rate of ``LinesView`` with 10^6 points per series vs bare pyqtgraph.

Each "frame" appends one step to every series (as a live run does) and then redraws
and paints the plot once, as the shell's 30 Hz timer would. Three setups, same data:

* ``LinesView``: our view (peak downsampling, clip to view, preallocated buffers).
* bare pyqtgraph, default ``PlotDataItem`` options, data re-concatenated each frame
  (what a naive live plot does).
* bare pyqtgraph with the same fast-path options (how close the view is to the floor).

Run: ``QT_QPA_PLATFORM=offscreen python bench/bench_lines.py [--points 1000000] [--series 3]``.
Ratios are printed side by side from one run; absolute numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pyqtgraph as pg  # noqa: E402
from PySide6 import QtGui, QtWidgets  # noqa: E402

from dynlab.frames import Frame, Stream  # noqa: E402
from dynlab.presets import ViewSpec  # noqa: E402
from dynlab.views import LinesView  # noqa: E402

W, H = 900, 500


def paint(widget: QtWidgets.QWidget, target: QtGui.QImage | None = None) -> None:
    """Paint the widget once offscreen (``grab``): the cost of one screen update, on any platform."""
    widget.grab()


def data(n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    steps = np.arange(n, dtype=float)
    values = np.cumsum(rng.normal(size=(n, k)), axis=0)
    values[n // 3, :] += 500.0  # one spike per series: must stay visible
    return steps, values


def bench_view(steps: np.ndarray, values: np.ndarray, frames: int) -> float:
    k = values.shape[1]
    labels = tuple(f"s{i}" for i in range(k))
    stream = Stream("x", "vector", shape=(k,), labels=labels)
    view = LinesView(ViewSpec("bench", ("x",)), {"x": stream})
    view.push_series("x", steps, values)
    view.resize(W, H)
    target = QtGui.QImage(W, H, QtGui.QImage.Format.Format_ARGB32)
    view.refresh()
    paint(view, target)
    n = len(steps)
    t0 = time.perf_counter()
    for i in range(frames):
        view.push([Frame.make(n + i, {"x": values[-1]})])
        view.refresh()
        paint(view, target)
    return frames / (time.perf_counter() - t0)


def bench_bare(steps: np.ndarray, values: np.ndarray, frames: int, fast: bool) -> float:
    k = values.shape[1]
    pw = pg.PlotWidget(background="w")
    curves = [pw.plot(pen=pg.mkPen(pg.intColor(i), width=1.5)) for i in range(k)]
    if fast:
        for c in curves:  # after addItem: PlotItem.addItem resets a curve's downsampling/clipping
            c.setDownsampling(auto=True, method="peak")
            c.setClipToView(True)
            c.setSkipFiniteCheck(True)
    pw.resize(W, H)
    target = QtGui.QImage(W, H, QtGui.QImage.Format.Format_ARGB32)
    x, y = steps, values
    for i, c in enumerate(curves):
        c.setData(x, y[:, i])
    paint(pw, target)
    n = len(steps)
    t0 = time.perf_counter()
    for f in range(frames):
        # A naive live plot grows its arrays by concatenation every frame.
        x = np.append(x, n + f)
        y = np.vstack([y, y[-1:]])
        for i, c in enumerate(curves):
            c.setData(x, y[:, i])
        paint(pw, target)
    return frames / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--series", type=int, default=3)
    ap.add_argument("--frames", type=int, default=20)
    args = ap.parse_args()
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])  # noqa: F841 - keeps Qt alive
    steps, values = data(args.points, args.series)
    fps_view = bench_view(steps, values, args.frames)
    fps_fast = bench_bare(steps, values, args.frames, fast=True)
    fps_bare = bench_bare(steps, values, max(3, args.frames // 5), fast=False)
    print(f"{args.series} series x {args.points:,} points, {W}x{H} px, one append + redraw + paint per frame")
    print(f"  LinesView                         {fps_view:7.1f} frames/s")
    print(f"  bare pyqtgraph, same fast options {fps_fast:7.1f} frames/s")
    print(f"  bare pyqtgraph, defaults          {fps_bare:7.1f} frames/s")
    print(f"  ratio LinesView / bare defaults      {fps_view / fps_bare:6.2f}x")
    print(f"  ratio LinesView / bare fast options  {fps_view / fps_fast:6.2f}x")


if __name__ == "__main__":
    main()
