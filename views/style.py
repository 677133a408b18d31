"""Colours, pens and small pyqtgraph helpers shared by the views.

The views draw dark on white so screenshots drop straight into slides and papers.
Colours are set per widget (never through ``pg.setConfigOptions``) so the views do not
change the look of plots the shell owns.
"""

from __future__ import annotations

import html
import math

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtGui

# Tableau 10: distinct, colour-blind-tolerant, readable on white.
PALETTE: tuple[str, ...] = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
# Run 0 solid, run 1 dashed, run 2 dotted...: overlaid runs share a series' colour.
RUN_STYLES: tuple[QtCore.Qt.PenStyle, ...] = (
    QtCore.Qt.PenStyle.SolidLine,
    QtCore.Qt.PenStyle.DashLine,
    QtCore.Qt.PenStyle.DotLine,
    QtCore.Qt.PenStyle.DashDotLine,
)
#: Reference lines (2/lr, a bound) per run: dark, and each overlaid run in its own dash.
REFERENCE_COLOURS: tuple[str, ...] = ("#222222", "#7a5c00", "#00606f", "#6f005f")
REFERENCE_STYLES: tuple[QtCore.Qt.PenStyle, ...] = (
    QtCore.Qt.PenStyle.DashLine,
    QtCore.Qt.PenStyle.DotLine,
    QtCore.Qt.PenStyle.DashDotLine,
    QtCore.Qt.PenStyle.DashDotDotLine,
)
EVENT_COLOUR = "#555555"
CURSOR_COLOUR = "#d62728"
REFERENCE_COLOUR = "#222222"
FOREGROUND = "k"


#: Point sizes of the views' texts at scale 1; presentation mode multiplies them all.
TITLE_PT, TEXT_PT, SMALL_PT = 10.0, 9.0, 8.0
_text_scale = 1.0


def text_scale() -> float:
    """The factor every view text is drawn at (1; 1.5 in presentation mode)."""
    return _text_scale


def set_text_scale(factor: float) -> None:
    """Set the factor views made from now on draw their texts at (``StreamView.set_text_scale``
    rescales views that already exist)."""
    global _text_scale
    if not factor > 0:
        raise ValueError(f"text scale must be > 0, got {factor!r}")
    _text_scale = float(factor)


def pt(base: float, scale: float | None = None) -> float:
    """``base`` points at the current text scale (or at ``scale``)."""
    return round(base * (_text_scale if scale is None else scale), 2)


def font(base: float, scale: float | None = None, bold: bool = False) -> QtGui.QFont:
    """The application's font at ``base`` points times the text scale."""
    f = QtGui.QFont(QtGui.QGuiApplication.font())
    f.setPointSizeF(pt(base, scale))
    f.setBold(bold)
    return f


def colour(i: int) -> str:
    """The ``i``-th series colour (cycles)."""
    return PALETTE[i % len(PALETTE)]


#: Beyond this many series in one plot the palette would repeat: use a colour ramp instead.
RAMP_ABOVE = len(PALETTE)


def ramp_colour(i: int, n: int) -> str:
    """Colour ``i`` of ``n`` ordered series (λ1 ... λ20) on a dark-to-light ramp."""
    # plasma without its pale yellow end, which vanishes on white.
    rgba = pg.colormap.get("plasma").map(0.85 * i / max(n - 1, 1), mode="byte")
    return "#{:02x}{:02x}{:02x}".format(*(int(v) for v in rgba[:3]))


def series_pen(i: int, run_index: int = 0, width: float = 1.5, alpha: int = 255, n: int = 0) -> pg.QtGui.QPen:
    """Pen for series ``i`` (of ``n`` in the plot) of the ``run_index``-th run (style encodes the run).

    With more than ``RAMP_ABOVE`` series the colours follow a ramp, so an ordered family
    (top eigenvalues, per-class values) reads as one gradient instead of a repeating palette.
    """
    c = pg.mkColor(ramp_colour(i, n) if n > RAMP_ABOVE else colour(i))
    c.setAlpha(alpha)
    pen = pg.mkPen(c, width=width)
    pen.setStyle(RUN_STYLES[run_index % len(RUN_STYLES)])
    return pen


def reference_colour(run_index: int = 0) -> str:
    """Colour of the ``run_index``-th run's reference line (cycles)."""
    return REFERENCE_COLOURS[run_index % len(REFERENCE_COLOURS)]


def reference_pen(run_index: int = 0, width: float = 1.5) -> pg.QtGui.QPen:
    """Pen of the ``run_index``-th run's reference line: runs differ in colour and dash."""
    pen = pg.mkPen(reference_colour(run_index), width=width)
    pen.setStyle(REFERENCE_STYLES[run_index % len(REFERENCE_STYLES)])
    return pen


class ReadableAxis(pg.AxisItem):
    """An axis whose log mode labels only what a reader needs.

    pyqtgraph labels every minor tick of a log axis (0.09 0.08 0.07 ... 0.01), which
    turns a tall log axis into a wall of digits. Here the minor ticks stay as ticks, and
    only the mantissas in ``mantissas(span)`` get a label: all of 1-9 inside one decade,
    1-2-5 over a few decades, decades only beyond that.
    """

    @staticmethod
    def mantissas(span: float) -> tuple[int, ...]:
        """Mantissas labelled when the axis shows ``span`` decades."""
        if span < 0.8:
            return (1, 2, 3, 4, 5, 6, 7, 8, 9)
        if span < 3.0:
            return (1, 2, 5)
        return (1,)

    def logTickStrings(self, values: list[float], scale: float, spacing: float) -> list[str | None]:  # noqa: N802
        strings = super().logTickStrings(values, scale, spacing)
        keep = self.mantissas(abs(float(self.range[1]) - float(self.range[0])))
        out: list[str | None] = []
        for v, s in zip(values, strings, strict=False):
            m = 10 ** (float(v) - math.floor(float(v)))
            r = round(m)
            # A tick that is not k·10^n (e.g. a major level at a fractional spacing) keeps its label.
            if abs(m - r) > 1e-6 or r in keep or r == 10:
                x = 10 ** float(v) * scale
                # Plain numbers where they are short (50, not 5·10¹); powers of ten beyond.
                whole = abs(x) >= 1 and abs(x - round(x)) < 1e-9 * abs(x)
                short = str(round(x)) if whole else f"{x:.3g}"
                out.append(short if 1e-3 <= abs(x) < 1e4 else s)
            else:
                out.append(None)
        return out


def make_plot(
    title: str = "", x_label: str = "step", y_label: str = "", y_units: str = "", scale: float | None = None
) -> pg.PlotWidget:
    """A white ``PlotWidget`` with black labelled axes, its texts at ``scale`` (default: the current)."""
    axes = {name: ReadableAxis(name) for name in ("left", "bottom")}  # right/top stay hidden
    pw = pg.PlotWidget(background="w", axisItems=axes)
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
        # With no name (several series share the axis) the units alone are the label.
        text = f"{y_label} [{y_units}]" if y_label and y_units else (y_label or y_units)
        item.setLabel("left", html.escape(text), color=FOREGROUND)
    if title:
        # pyqtgraph titles are HTML: "(<= n = 6)" would otherwise swallow the rest.
        item.setTitle(html.escape(title), color=FOREGROUND, size=f"{pt(TITLE_PT, scale)}pt")
    # No grid: pyqtgraph replays every grid line from a QPicture on each repaint, and
    # measured beside a training run (bench/bench_ui.py) it doubled the event-loop p99.
    item.showGrid(x=False, y=False)
    scale_plot_texts(item, scale)
    return pw


def scale_plot_texts(
    item: pg.PlotItem, scale: float | None = None, axes: tuple[pg.AxisItem, ...] = ()
) -> None:
    """Draw a plot's title, axis labels and tick labels (and those of ``axes``) at ``scale``.

    pyqtgraph renders axis labels as HTML in a font fixed when they were made, so they are
    given an explicit size; tick labels get an explicit font for the same reason.
    """
    for axis in (*(item.getAxis(n) for n in ("left", "bottom")), *axes):
        axis.labelStyle = {**axis.labelStyle, "font-size": f"{pt(TEXT_PT, scale)}pt"}
        axis.setTickFont(font(TEXT_PT, scale))
        axis._updateLabel()  # noqa: SLF001 - re-renders the label with the new style
    if item.titleLabel.text:
        item.titleLabel.setText(item.titleLabel.text, size=f"{pt(TITLE_PT, scale)}pt")


def scale_legend(legend: pg.LegendItem, scale: float | None = None) -> None:
    """Draw a legend's labels at ``scale`` (new entries take the size too)."""
    size = f"{pt(TEXT_PT, scale)}pt"
    legend.opts["labelTextSize"] = size
    for _, label in legend.items:
        label.setAttr("size", size)
        label.setText(label.text)
    legend.updateSize()


def fit_axis_to_labels(axis: pg.AxisItem, labels: list[str] | tuple[str, ...]) -> None:
    """Widen a vertical axis for its tick labels now.

    pyqtgraph widens an axis only after a paint that found its labels too wide, and
    skips those labels in that paint (a first screenshot or export shows none).
    """
    font = axis.style.get("tickFont") or axis.font()
    metrics = pg.QtGui.QFontMetrics(font)
    widest = max((metrics.horizontalAdvance(str(t)) for t in labels), default=0)
    axis.setWidth(max(35, widest + 18))


def add_legend(item: pg.PlotItem, scale: float | None = None) -> pg.LegendItem:
    """A legend with a translucent white box and black text at ``scale``."""
    return item.addLegend(
        offset=(-10, 10),
        labelTextColor=FOREGROUND,
        labelTextSize=f"{pt(TEXT_PT, scale)}pt",
        brush=pg.mkBrush(255, 255, 255, 210),
        pen=pg.mkPen("#999999"),
    )


#: Legend corners tried by ``place_legend``: (item anchor, parent anchor, offset).
LEGEND_CORNERS: tuple[tuple[tuple[int, int], tuple[int, int], tuple[int, int]], ...] = (
    ((1, 0), (1, 0), (-10, 10)),  # top right (the default)
    ((0, 0), (0, 0), (10, 10)),  # top left
    ((1, 1), (1, 1), (-10, -10)),  # bottom right
    ((0, 1), (0, 1), (10, -10)),  # bottom left
    ((1, 0.5), (1, 0.5), (-10, 0)),  # right, half way up
    ((0, 0.5), (0, 0.5), (10, 0)),  # left, half way up
)
#: Points per curve sampled when counting what a legend would hide.
LEGEND_SAMPLE = 2000


def place_legend(legend: pg.LegendItem, item: pg.PlotItem, current: int = 0) -> int:
    """Move ``legend`` to the plot corner where it hides the fewest data points.

    Counts, for each corner, the (subsampled) points of every visible curve that fall
    under the legend's rectangle in view coordinates. Keeps ``current`` unless another
    corner hides clearly less (a quarter fewer points), so the legend does not jump
    about while a live run adds data. Returns the chosen corner's index.
    """
    vb = item.getViewBox()
    if not legend.isVisible() or vb.width() <= 0 or vb.height() <= 0:
        return current
    xs, ys = [], []
    for curve in item.listDataItems():
        if not curve.isVisible():
            continue
        x, y = curve.getData()
        if x is None or len(x) == 0:
            continue
        # Resample along the polyline, so a sparse curve's segments count too.
        t = np.linspace(0, len(x) - 1, LEGEND_SAMPLE)
        i = np.arange(len(x))
        xs.append(np.interp(t, i, np.asarray(x, dtype=float)))
        ys.append(np.interp(t, i, np.asarray(y, dtype=float)))
    if not xs:
        return current
    x, y = np.concatenate(xs), np.concatenate(ys)
    # Map data to the view box's pixel frame (log axes already applied by getData).
    (x0, x1), (y0, y1) = vb.viewRange()
    if not (x1 > x0 and y1 > y0):
        return current
    px = (x - x0) / (x1 - x0) * vb.width()
    py = (y1 - y) / (y1 - y0) * vb.height()
    w, h = legend.width() + 10, legend.height() + 10
    W, H = vb.width(), vb.height()
    boxes = (
        (W - w, 0, W, h),
        (0, 0, w, h),
        (W - w, H - h, W, H),
        (0, H - h, w, H),
        (W - w, (H - h) / 2, W, (H + h) / 2),
        (0, (H - h) / 2, w, (H + h) / 2),
    )
    with np.errstate(invalid="ignore"):
        counts = [
            int(np.count_nonzero((px >= a) & (px <= c) & (py >= b) & (py <= d))) for a, b, c, d in boxes
        ]
    best = int(np.argmin(counts))
    if counts[best] < 0.75 * counts[current]:
        current = best
    item_pos, parent_pos, offset = LEGEND_CORNERS[current]
    legend.anchor(itemPos=item_pos, parentPos=parent_pos, offset=offset)
    return current


def plain_tip(text: str) -> str:
    """A tooltip that shows ``text`` literally: Qt renders tooltips that look like HTML as HTML."""
    return "<p style='white-space:pre-wrap'>" + html.escape(text) + "</p>"


def style_colourbar(bar: pg.ColorBarItem, label: str, scale: float | None = None) -> None:
    """Black axis, ticks and label on a ``ColorBarItem`` (its defaults are for dark themes)."""
    axis = bar.getAxis("right")
    axis.setPen(pg.mkPen(FOREGROUND))
    axis.setTextPen(pg.mkPen(FOREGROUND))
    axis.enableAutoSIPrefix(False)
    axis.setLabel(html.escape(label), color=FOREGROUND, **{"font-size": f"{pt(TEXT_PT, scale)}pt"})
    axis.setTickFont(font(TEXT_PT, scale))


def add_fast_curve(plot: pg.PlotItem, pen: pg.QtGui.QPen, name: str | None = None) -> pg.PlotDataItem:
    """Add an empty ``PlotDataItem`` on pyqtgraph's fast path for long live series.

    Peak (min/max per pixel) downsampling keeps spikes visible; clip-to-view draws only
    the visible range. The options are set on the item *after* ``addItem`` on purpose:
    ``PlotItem.addItem`` overwrites a curve's downsampling and clipping with the plot's
    own (off) settings, so keyword arguments alone are silently lost (measured: 3 x 1e6
    points painted in 2.5 s per frame instead of 0.07 s).
    """
    # A legend entry is rendered as HTML: a series name from a file is escaped.
    curve = pg.PlotDataItem(pen=pen, name=None if name is None else html.escape(name, quote=False))
    plot.addItem(curve)
    curve.setDownsampling(auto=True, method="peak")
    curve.setClipToView(True)
    curve.setSkipFiniteCheck(True)
    if pen.style() == QtCore.Qt.PenStyle.SolidLine and pen.color().alphaF() == 1.0:
        # One line per segment rather than one stroked path: Qt strokes a long antialiased
        # path of a 1.5 px pen about 3x slower (measured: 23 vs 7 ms to paint two 2000-point
        # curves). Dashed pens keep the path (their dashes would restart at every segment),
        # and so do translucent ones (the overlaps at the joins would show).
        curve.curve.setSegmentedLineMode("on")
        curve.segmented = True  # an SVG export turns it off: one path per curve there
    return curve
