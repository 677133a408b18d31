"""``PlotView``: a StreamView drawn in one pyqtgraph plot (SVG export, time-axis markers)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import pyqtgraph as pg
from PySide6 import QtWidgets

from dynlab.frames import Event, Stream
from dynlab.viewspec import ViewSpec

from . import style
from .base import StreamView

#: Events every run has at its first and last step: a marker there says nothing (the
#: axis ends already show it) and its label covers the first data points.
LIFECYCLE_EVENTS = ("start", "end")


class PlotView(StreamView):
    """A view whose main widget is one ``pg.PlotWidget`` (``self.plot``).

    With ``time_axis = True`` the x axis is the step: events become labelled vertical
    lines and the replay cursor a red line, both placed correctly on a log x axis.
    """

    time_axis: bool = False
    x_label: str = "step"
    #: whether the first stream's units label the y axis (not for images, whose y axis
    #: holds rows or bins and whose colour bar carries the units)
    y_units_on_axis: bool = True

    def __init__(
        self, view: ViewSpec, streams: Mapping[str, Stream], parent: QtWidgets.QWidget | None = None
    ) -> None:
        super().__init__(view, streams, parent)
        first = self.streams[self.stream_names[0]] if self.stream_names else None
        units = first.units if first and self.y_units_on_axis else ""
        self.plot = style.make_plot(view.title, self.x_label, self._y_label(), units)
        self.item: pg.PlotItem = self.plot.getPlotItem()
        self._event_lines: list[pg.InfiniteLine] = []
        self._cursor_line: pg.InfiniteLine | None = None
        self._finish_layout(self.plot)

    def _y_label(self) -> str:
        return self.stream_names[0] if len(self.stream_names) == 1 else ""

    # --------------------------------------------------------------- time axis
    def x_pos(self, step: float) -> float | None:
        """Where ``step`` sits in view coordinates (log10 on a log x axis; None if it can't)."""
        if self.view.log_x:
            return math.log10(step) if step > 0 else None
        return float(step)

    def _draw_event(self, event: Event) -> None:
        if not self.time_axis or event.kind in LIFECYCLE_EVENTS:
            return
        pos = self.x_pos(event.step)
        if pos is None:
            return
        colour = (
            style.CURSOR_COLOUR if event.kind in ("diverged", "failed", "warning") else style.EVENT_COLOUR
        )
        # Stagger labels so markers close together stay readable.
        label_pos = 0.92 - 0.12 * (len(self._event_lines) % 4)
        line = style.vline(pos, colour, event.label, label_pos=label_pos)
        line.setToolTip(style.plain_tip(f"step {event.step}: {event.label}"))
        self.item.addItem(line, ignoreBounds=True)
        self._event_lines.append(line)

    def _clear_events(self) -> None:
        for line in self._event_lines:
            self.item.removeItem(line)
        self._event_lines.clear()

    def _draw_cursor(self, step: int | None) -> None:
        if not self.time_axis:
            return
        pos = None if step is None else self.x_pos(step)
        if pos is None:
            if self._cursor_line is not None:
                self._cursor_line.hide()
            return
        if self._cursor_line is None:
            self._cursor_line = style.vline(pos, style.CURSOR_COLOUR, dashed=False)
            self._cursor_line.setPen(pg.mkPen(style.CURSOR_COLOUR, width=2))
            self.item.addItem(self._cursor_line, ignoreBounds=True)
        self._cursor_line.setValue(pos)
        self._cursor_line.show()

    # ------------------------------------------------------------------ export
    def _export_svg(self, path: str) -> None:
        # pyqtgraph 0.14's SVGExporter cannot parse the path data PySide6 6.11 writes
        # (ValueError in its coordinate fix-up), so paint the widget into a QSvgGenerator:
        # curves, bars and text stay vectors.
        from PySide6 import QtCore, QtGui, QtSvg

        self.refresh()
        gen = QtSvg.QSvgGenerator()
        gen.setFileName(path)
        gen.setSize(self.size())
        gen.setViewBox(QtCore.QRect(QtCore.QPoint(0, 0), self.size()))
        gen.setTitle(self.view.title)
        gen.setDescription(self.toolTip())
        painter = QtGui.QPainter()
        if not painter.begin(gen):
            raise OSError(f"could not write SVG {path!r}")
        try:
            self.render(painter, QtCore.QPoint(0, 0))
        finally:
            painter.end()
