"""Text that fits: labels, legends, ticks and titles placed or thinned so nothing is clipped.

pyqtgraph lays text out once and lets it run past a plot's edges: an event label at the
right edge, a legend taller than a short dock, forty-nine row labels on sixty pixels, a
colour bar's label beyond the widget, a long title that widens its plot. The helpers here
measure the text (at the view's text scale) and place, thin, elide or hide it instead.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

import pyqtgraph as pg
from PySide6 import QtCore, QtGui

from .style import FOREGROUND, TEXT_PT, TITLE_PT, font, pt


def cell_ticks(
    labels: Sequence[str],
    n: int,
    pixels: float,
    scale: float | None = None,
    vertical: bool = True,
    most: int = 24,
) -> list[tuple[float, str]]:
    """Centred tick labels for ``n`` cells on an axis ``pixels`` long, thinned evenly so they
    never overlap (at most ``most``).

    On a vertical axis each label needs a line height; on a horizontal one, the widest
    label's width. ``pixels`` <= 0 (not laid out yet) thins to ``most``.
    """
    names = list(labels) if len(labels) == n else [str(i) for i in range(n)]
    if n == 0:
        return []
    metrics = QtGui.QFontMetricsF(font(TEXT_PT, scale))
    need = metrics.height() * 1.15 if vertical else max(metrics.horizontalAdvance(t) for t in names) + 10
    fit = int(pixels // need) if pixels > 0 else most
    every = max(1, math.ceil(n / max(1, min(most, fit))))
    return [(i + 0.5, names[i]) for i in range(0, n, every)]


def fit_colourbar(bar: pg.ColorBarItem) -> None:
    """Widen a colour bar's axis for its tick labels and its label, now.

    ``ColorBarItem`` fixes its axis at 45 pixels: "0.0025" or a label in a larger font
    is then cut off at the widget's edge.
    """
    axis = bar.getAxis("right")
    lo, hi = (float(v) for v in bar.levels())
    strings: list[str] = []
    for spacing, values in axis.tickValues(lo, hi, max(axis.height(), 100.0)):
        strings += [str(t) for t in axis.tickStrings(values, 1.0, spacing)]
    metrics = QtGui.QFontMetricsF(axis.style.get("tickFont") or axis.font())
    widest = max((metrics.horizontalAdvance(t) for t in strings), default=0.0)
    label = axis.label.boundingRect().height() if axis.label.isVisible() else 0.0
    offset = axis.style["tickTextOffset"][0] + max(0, axis.style["tickLength"])
    axis.setWidth(int(math.ceil(widest + offset + label + 8)))


#: A legend taller than this share of its plot is laid out in more columns.
LEGEND_MAX_HEIGHT = 0.45


def fit_legend_columns(legend: pg.LegendItem, width: float, height: float) -> int:
    """Lay a legend out in as few columns as keep it under ``LEGEND_MAX_HEIGHT`` of the plot.

    A five-series legend in a short dock otherwise runs past the plot's bottom edge
    (clipped) and hides half the data. Returns the column count chosen.
    """
    n = len(legend.items)
    if n == 0 or width <= 0 or height <= 0:
        return legend.columnCount
    entry_h = max(max(s.height(), lab.height()) for s, lab in legend.items)
    entry_w = max(s.width() + lab.width() + 6 for s, lab in legend.items)
    cols = 1
    while (
        cols < n
        and math.ceil(n / cols) * entry_h > LEGEND_MAX_HEIGHT * height
        and (cols + 1) * entry_w <= 0.95 * width
    ):
        cols += 1
    if cols != legend.columnCount:
        legend.setColumnCount(cols)
    # Too tall or too wide even so (a plot squeezed to a sliver): show none rather than a
    # clipped one (rows take a little more than their text: the layout's spacing; the
    # legend sits 10 pixels in). Opacity, not visibility: the legend stays "visible" for
    # the next fit when the plot grows.
    fits = math.ceil(n / cols) * entry_h * 1.1 + 10 <= height and cols * entry_w + 10 <= width
    legend.setOpacity(1.0 if fits else 0.0)
    return cols


def fit_title(item: pg.PlotItem, title: str, width: float, scale: float | None = None) -> None:
    """Show ``title`` (plain text) over the plot, elided in the middle to ``width`` pixels.

    A pyqtgraph title sets its plot's minimum width: a long one (a heatmap's title with
    its step) pushes the colour bar and its label off the widget's right edge.
    """
    if not title:
        return
    size = pt(TITLE_PT, scale)
    shown = title
    if width > 0:
        f = font(TITLE_PT, scale)
        shown = QtGui.QFontMetrics(f).elidedText(title, QtCore.Qt.TextElideMode.ElideMiddle, int(width) - 12)
    item.setTitle(html.escape(shown), color=FOREGROUND, size=f"{size}pt")
    item.titleLabel.setMinimumWidth(0)  # the plot's width is the view's to decide, not the title's


def fit_axis_label(axis: pg.AxisItem, length: float) -> None:
    """Elide an axis label (``…``) that is longer than its axis, instead of letting it be clipped.

    The full label is kept on the axis; it comes back when the axis grows again.
    """
    if length <= 0:
        return
    full = getattr(axis, "_full_label", None)
    if full is None or axis.labelText != getattr(axis, "_shown_label", None):
        full = axis.labelText  # set (again) since the last fit
    if not full:
        return
    f = font(TEXT_PT, 1.0)
    size = str(axis.labelStyle.get("font-size", ""))
    if size.endswith("pt"):
        f.setPointSizeF(float(size[:-2]))
    plain = html.unescape(full)
    shown = QtGui.QFontMetrics(f).elidedText(plain, QtCore.Qt.TextElideMode.ElideRight, int(length) - 14)
    text = full if shown == plain else html.escape(shown)
    axis._full_label, axis._shown_label = full, text  # noqa: SLF001 - our own bookkeeping
    if text != axis.labelText:
        axis.labelText = text
        axis._updateLabel()  # noqa: SLF001


class MarkerLabel(pg.InfLineLabel):
    """A vertical marker's label that stays inside the plot, off its legend and uncrossed.

    It sits right of its line, or left of it where the text would run past the view's
    right edge. Where it would overlap a legend, leave the view at the top or bottom, or
    be crossed by another marker (an event line, the replay cursor) or cover another
    marker's label, it tries the other side of its line and other heights, a label height
    apart, nearest first. ``orthoPos`` stays the preferred height, so the label returns
    there when the obstacle moves away.
    """

    def updatePosition(self) -> None:  # noqa: N802 - pyqtgraph API
        super().updatePosition()
        vb = self.getViewBox()
        if not isinstance(vb, pg.ViewBox) or not self.isVisible() or not self.format:
            return
        box = vb.sceneBoundingRect()
        pt1, pt2 = self.getEndpoints()
        if box.width() <= 0 or box.height() <= 0 or pt1 is None:
            return
        # pyqtgraph places the label before it refreshes the transform that undoes the view's
        # scaling; measuring needs that transform now.
        self.updateTransform(force=True)
        self.setAnchor((0, 0.5))
        rect = self.sceneBoundingRect()
        x = self.scenePos().x()
        sides = [(0, 0.5), (1, 0.5)]
        if rect.right() > box.right() - 1:  # no room on the right: left first
            sides.reverse()
        legends = [
            c.sceneBoundingRect()
            for c in vb.childItems()
            if isinstance(c, pg.LegendItem) and c.isVisible() and c.opacity() > 0
        ]
        marks, labels = [], []
        for item in vb.childGroup.childItems():
            if item is self.line or not isinstance(item, pg.InfiniteLine) or not item.isVisible():
                continue
            if item.angle % 180 == 90:
                mx = item.mapToScene(pg.QtCore.QPointF(0, 0)).x()
                if abs(mx - x) > 1:
                    marks.append(QtCore.QRectF(mx - 1.5, box.top(), 3, box.height()))
            label = getattr(item, "label", None)
            if isinstance(label, MarkerLabel) and label.isVisible() and label.opacity() > 0:
                labels.append(label.sceneBoundingRect())
        inner = box.adjusted(0, 1, 0, -1)
        step = (rect.height() + 2) / box.height()
        heights = [self.orthoPos] + [
            self.orthoPos + sign * k * step for k in range(1, int(1 / step) + 2) for sign in (-1, 1)
        ]
        heights = [o for o in heights if 0.0 <= o <= 1.0]
        # Inside the view and off the legend always; then over as few other labels, then
        # across as few other markers as possible (a vertical line crosses every height on
        # its side), nearest place first.
        best: tuple[tuple[int, int], tuple[float, float], float] | None = None
        for o in heights:
            for anchor in sides:
                self.setAnchor(anchor)
                self.setPos(pt2 * o + pt1 * (1 - o))
                r = self.sceneBoundingRect()
                if not inner.contains(r) or any(r.intersects(ob) for ob in legends):
                    continue
                cost = (sum(r.intersects(m) for m in labels), sum(r.intersects(m) for m in marks))
                if best is None or cost < best[0]:
                    best = (cost, anchor, o)
                if cost == (0, 0):
                    self.setOpacity(1.0)
                    return
        anchor, o = (sides[0], self.orthoPos) if best is None else best[1:]
        self.setAnchor(anchor)
        self.setPos(pt2 * o + pt1 * (1 - o))
        # No place free of the legend, the edges and other labels (a plot squeezed to a
        # sliver): no text rather than text over text; the marker's tooltip still says.
        # Opacity, not visibility, so the label is placed again when the plot grows.
        self.setOpacity(0.0 if best is None or best[0][0] > 0 else 1.0)


def vline(
    pos: float,
    colour_: str,
    label: str = "",
    dashed: bool = True,
    label_pos: float = 0.92,
    scale: float | None = None,
) -> pg.InfiniteLine:
    """A vertical marker line with an optional label near the top of the plot (text at ``scale``)."""
    pen = pg.mkPen(colour_, width=1.2)
    if dashed:
        pen.setStyle(QtCore.Qt.PenStyle.DashLine)
    # Horizontal text just right of the line: readable, and long labels are not clipped.
    opts = {
        "position": label_pos,
        "color": colour_,
        "movable": False,
        # A faint fill: the label stays readable without blanking the curves under it.
        "anchors": [(0, 0.5), (0, 0.5)],
        "fill": pg.mkBrush(255, 255, 255, 110),
    }
    # pyqtgraph runs str.format on a marker's label: braces from a file's text
    # (an HDF5 error quoting a heap id) must reach it escaped.
    fmt = label.replace("{", "{{").replace("}", "}}")
    line = pg.InfiniteLine(pos=pos, angle=90, pen=pen, movable=False)
    line.label = None
    if label:
        line.label = MarkerLabel(line, text=fmt, **opts)
        line.label.setFont(font(TEXT_PT, scale))
    line.setZValue(50)
    return line
