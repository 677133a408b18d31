"""Colours, pens and small pyqtgraph helpers shared by the views.

The views draw dark on white so screenshots drop straight into slides and papers.
Colours are set per widget (never through ``pg.setConfigOptions``) so the views do not
change the look of plots the shell owns.
"""

from __future__ import annotations

import pyqtgraph as pg
from PySide6 import QtCore

# Tableau 10: distinct, colour-blind-tolerant, readable on white.
PALETTE: tuple[str, ...] = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)
# Run 0 solid, run 1 dashed, run 2 dotted...: overlaid runs share a series' colour.
RUN_STYLES: tuple[QtCore.Qt.PenStyle, ...] = (
    QtCore.Qt.PenStyle.SolidLine,
    QtCore.Qt.PenStyle.DashLine,
    QtCore.Qt.PenStyle.DotLine,
    QtCore.Qt.PenStyle.DashDotLine,
)
EVENT_COLOUR = "#555555"
CURSOR_COLOUR = "#d62728"
REFERENCE_COLOUR = "#222222"
FOREGROUND = "k"


def colour(i: int) -> str:
    """The ``i``-th series colour (cycles)."""
    return PALETTE[i % len(PALETTE)]


def series_pen(i: int, run_index: int = 0, width: float = 1.5, alpha: int = 255) -> pg.QtGui.QPen:
    """Pen for series ``i`` of the ``run_index``-th run (style encodes the run)."""
    c = pg.mkColor(colour(i))
    c.setAlpha(alpha)
    pen = pg.mkPen(c, width=width)
    pen.setStyle(RUN_STYLES[run_index % len(RUN_STYLES)])
    return pen


def make_plot(title: str = "", x_label: str = "step", y_label: str = "", y_units: str = "") -> pg.PlotWidget:
    """A white ``PlotWidget`` with black labelled axes and a grid."""
    pw = pg.PlotWidget(background="w")
    item = pw.getPlotItem()
    for name in ("left", "bottom", "right", "top"):
        axis = item.getAxis(name)
        axis.setPen(pg.mkPen(FOREGROUND))
        axis.setTextPen(pg.mkPen(FOREGROUND))
        # "(x0.001)" prefixes confuse more than they help on dimensionless science axes.
        axis.enableAutoSIPrefix(False)
    item.setLabel("bottom", x_label, color=FOREGROUND)
    if y_label or y_units:
        # Units go in brackets ourselves: pyqtgraph's SI prefixing mangles units like "1/step".
        item.setLabel("left", f"{y_label} [{y_units}]" if y_units else y_label, color=FOREGROUND)
    if title:
        item.setTitle(title, color=FOREGROUND, size="10pt")
    item.showGrid(x=True, y=True, alpha=0.15)
    return pw


def add_legend(item: pg.PlotItem) -> pg.LegendItem:
    """A legend with a translucent white box and black text."""
    return item.addLegend(
        offset=(-10, 10), labelTextColor=FOREGROUND, brush=pg.mkBrush(255, 255, 255, 210),
        pen=pg.mkPen("#999999"),
    )


def vline(pos: float, colour_: str, label: str = "", dashed: bool = True, label_pos: float = 0.92) -> pg.InfiniteLine:
    """A vertical marker line with an optional label near the top of the plot."""
    pen = pg.mkPen(colour_, width=1.2)
    if dashed:
        pen.setStyle(QtCore.Qt.PenStyle.DashLine)
    # Horizontal text just right of the line: readable, and long labels are not clipped.
    opts = {"position": label_pos, "color": colour_, "movable": False,
            "anchors": [(0, 0.5), (0, 0.5)], "fill": pg.mkBrush(255, 255, 255, 200)}
    line = pg.InfiniteLine(pos=pos, angle=90, pen=pen, movable=False, label=label or None,
                           labelOpts=opts if label else None)
    line.setZValue(50)
    return line


def style_colourbar(bar: pg.ColorBarItem, label: str) -> None:
    """Black axis, ticks and label on a ``ColorBarItem`` (its defaults are for dark themes)."""
    axis = bar.getAxis("right")
    axis.setPen(pg.mkPen(FOREGROUND))
    axis.setTextPen(pg.mkPen(FOREGROUND))
    axis.enableAutoSIPrefix(False)
    axis.setLabel(label, color=FOREGROUND)


def add_fast_curve(plot: pg.PlotItem, pen: pg.QtGui.QPen, name: str | None = None) -> pg.PlotDataItem:
    """Add an empty ``PlotDataItem`` on pyqtgraph's fast path for long live series.

    Peak (min/max per pixel) downsampling keeps spikes visible; clip-to-view draws only
    the visible range. The options are set on the item *after* ``addItem`` on purpose:
    ``PlotItem.addItem`` overwrites a curve's downsampling and clipping with the plot's
    own (off) settings, so keyword arguments alone are silently lost (measured: 3 x 1e6
    points painted in 2.5 s per frame instead of 0.07 s).
    """
    curve = pg.PlotDataItem(pen=pen, name=name)
    plot.addItem(curve)
    curve.setDownsampling(auto=True, method="peak")
    curve.setClipToView(True)
    curve.setSkipFiniteCheck(True)
    return curve
