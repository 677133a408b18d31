"""Frame rate of ``LinesView`` with 10^6 points per series vs bare pyqtgraph.

Each "frame" appends one step to every series (as a live run does) and then redraws
and paints the plot once, as the shell's 30 Hz timer would. Three setups, same data:

* ``LinesView``: our view (preallocated buffers, a min/max pyramid kept up to date as
  rows arrive, cut to the plot's width, then pyqtgraph's clip to view).
* bare pyqtgraph with the same fast-path options (peak downsampling, clip to view, no
  finite check) on preallocated buffers: the floor of what pyqtgraph itself does.
* the same, growing its arrays by concatenation each frame (a naive live plot).
* bare pyqtgraph, default ``PlotDataItem`` options, concatenating.

The setups take turns (``--rounds`` rounds), so a busy machine slows them alike; the
median frame rate of each is printed. Run:
``QT_QPA_PLATFORM=offscreen python bench/bench_lines.py [--points 1000000] [--series 3]``.
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
from PySide6 import QtWidgets  # noqa: E402

from dynlab.frames import Frame, Stream  # noqa: E402
from dynlab.presets import ViewSpec  # noqa: E402
from dynlab.views import LinesView  # noqa: E402

W, H = 900, 500


def paint(widget: QtWidgets.QWidget) -> None:
    """Paint the widget once offscreen (``grab``): the cost of one screen update, on any platform."""
    widget.grab()


def data(n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    steps = np.arange(n, dtype=float)
    values = np.cumsum(rng.normal(size=(n, k)), axis=0)
    values[n // 3, :] += 500.0  # one spike per series: must stay visible
    return steps, values


class ViewSetup:
    """``LinesView`` holding the series; each frame appends one row and paints."""

    def __init__(self, steps: np.ndarray, values: np.ndarray) -> None:
        k = values.shape[1]
        labels = tuple(f"s{i}" for i in range(k))
        stream = Stream("x", "vector", shape=(k,), labels=labels)
        self.view = LinesView(ViewSpec("bench", ("x",)), {"x": stream})
        self.view.push_series("x", steps, values)
        self.view.resize(W, H)
        self.view.refresh()
        paint(self.view)
        self.next, self.row = len(steps), values[-1]

    def frame(self) -> None:
        self.view.push([Frame.make(self.next, {"x": self.row})])
        self.next += 1
        self.view.refresh()
        paint(self.view)


class BareSetup:
    """A bare ``pg.PlotWidget``: fast options or defaults, preallocated arrays or concatenation."""

    def __init__(self, steps: np.ndarray, values: np.ndarray, fast: bool, grow: bool) -> None:
        k = values.shape[1]
        self.pw = pg.PlotWidget(background="w")
        self.curves = [self.pw.plot(pen=pg.mkPen(pg.intColor(i), width=1.5)) for i in range(k)]
        if fast:
            for c in self.curves:  # after addItem: PlotItem.addItem resets downsampling/clipping
                c.setDownsampling(auto=True, method="peak")
                c.setClipToView(True)
                c.setSkipFiniteCheck(True)
        self.pw.resize(W, H)
        self.grow = grow
        self.n = len(steps)
        if grow:
            self.x, self.y = steps, values
        else:  # room for every frame to come, as scrollingPlots.py does
            self.x = np.empty(self.n + 10_000)
            self.y = np.empty((self.n + 10_000, k))
            self.x[: self.n], self.y[: self.n] = steps, values
        self._set()
        paint(self.pw)

    def _set(self) -> None:
        for i, c in enumerate(self.curves):
            c.setData(self.x[: self.n], self.y[: self.n, i])

    def frame(self) -> None:
        if self.grow:  # a naive live plot grows its arrays by concatenation every frame
            self.x = np.append(self.x, self.n)
            self.y = np.vstack([self.y, self.y[-1:]])
        else:
            self.x[self.n], self.y[self.n] = self.n, self.y[self.n - 1]
        self.n += 1
        self._set()
        paint(self.pw)


def frames_per_second(setup: ViewSetup | BareSetup, frames: int) -> float:
    t0 = time.perf_counter()
    for _ in range(frames):
        setup.frame()
    return frames / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--series", type=int, default=3)
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])  # noqa: F841 - keeps Qt alive
    steps, values = data(args.points, args.series)
    setups = {
        "LinesView": ViewSetup(steps, values),
        "bare pyqtgraph, same fast options, preallocated": BareSetup(steps, values, fast=True, grow=False),
        "bare pyqtgraph, same fast options, concatenating": BareSetup(steps, values, fast=True, grow=True),
        "bare pyqtgraph, defaults, concatenating": BareSetup(steps, values, fast=False, grow=True),
    }
    rates: dict[str, list[float]] = {name: [] for name in setups}
    for _ in range(args.rounds):
        for name, setup in setups.items():
            n = args.frames if "defaults" not in name else max(2, args.frames // 10)
            rates[name].append(frames_per_second(setup, n))
    fps = {name: float(np.median(r)) for name, r in rates.items()}
    floor = fps["bare pyqtgraph, same fast options, preallocated"]
    print(f"{args.series} series x {args.points:,} points, {W}x{H} px, one append + redraw + paint per frame")
    print(f"(median of {args.rounds} interleaved rounds)")
    for name, f in fps.items():
        print(f"  {name:50s} {f:7.1f} frames/s  LinesView / it: {fps['LinesView'] / f:6.2f}x")
    print(
        f"\nGoal: LinesView >= 1.0 of bare pyqtgraph with the same options ({fps['LinesView'] / floor:.2f})."
    )


if __name__ == "__main__":
    main()
