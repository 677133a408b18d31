"""``PlotView``: a StreamView drawn in one pyqtgraph plot (SVG export, time-axis markers).

Each plot view carries a small tool row: copy the image to the clipboard, export the
view's data to CSV and, where the view supports them, log/linear toggles (all of which
pyqtgraph otherwise hides in its right-click menu).
"""

from __future__ import annotations

import contextlib
import csv
import math
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np
import pyqtgraph as pg
from PySide6 import QtWidgets

from dynlab.frames import Event, Stream
from dynlab.viewspec import ViewSpec

from . import style, textfit
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
    #: whether the tool row offers log/linear toggles (views drawn with pyqtgraph's log mode)
    log_toggles: bool = False
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
        self.plot = style.make_plot(view.title, self.x_label, self._y_label(), units, scale=self.text_scale)
        self.item: pg.PlotItem = self.plot.getPlotItem()
        self._event_lines: list[pg.InfiniteLine] = []
        self._cursor_line: pg.InfiniteLine | None = None
        #: the axes' current scale (the preset's, until the user toggles them)
        self.log_x, self.log_y = view.log_x, view.log_y
        self._finish_layout(self.plot)
        self._build_toolbar()
        self.item.getViewBox().sigResized.connect(self._fit_axis_labels)
        self.item.getViewBox().sigResized.connect(self._fit_title)
        #: the plot's title in full (shown elided when the plot is narrower)
        self.title = view.title

    def _y_label(self) -> str:
        return self.stream_names[0] if len(self.stream_names) == 1 else ""

    def set_title(self, title: str) -> None:
        """Show ``title`` over the plot (elided to the plot's width)."""
        self.title = title
        self._fit_title()

    def _fit_title(self, *_: object) -> None:
        # The title spans the data's column: elide it to that width, never widen the plot.
        vb = self.item.getViewBox()
        room = vb.width() if vb.width() > 0 else self.plot.width()
        textfit.fit_title(self.item, self.title, room, self.text_scale)

    def _fit_axis_labels(self, *_: object) -> None:
        """Elide axis labels longer than their axis (a short dock, presentation mode)."""
        vb = self.item.getViewBox()
        textfit.fit_axis_label(self.item.getAxis("left"), vb.height())
        textfit.fit_axis_label(self.item.getAxis("bottom"), vb.width())

    # --------------------------------------------------------------- time axis
    def x_pos(self, step: float) -> float | None:
        """Where ``step`` sits in view coordinates (log10 on a log x axis; None if it can't)."""
        if self.log_x:
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
        line = textfit.vline(pos, colour, event.label, label_pos=label_pos, scale=self.text_scale)
        line.setToolTip(style.plain_tip(f"step {event.step}: {event.label}"))
        self.item.addItem(line, ignoreBounds=True)
        self._event_lines.append(line)

    def place_event_labels(self) -> None:
        """Move event labels off the legend and inside the plot (after the legend moved)."""
        for line in self._event_lines:
            if line.label is not None:
                line.label.updatePosition()

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
            self._cursor_line = textfit.vline(pos, style.CURSOR_COLOUR, dashed=False)
            self._cursor_line.setPen(pg.mkPen(style.CURSOR_COLOUR, width=2))
            self.item.addItem(self._cursor_line, ignoreBounds=True)
        self._cursor_line.setValue(pos)
        self._cursor_line.show()

    # ------------------------------------------------------------------ export
    def _export_svg(self, path: str) -> None:
        # pyqtgraph 0.14's SVGExporter cannot parse the path data PySide6 6.11 writes
        # (ValueError in its coordinate fix-up), so paint the widget into a QSvgGenerator:
        # curves, bars and text stay vectors.
        with self.full_resolution():
            self._write_svg(path)

    @contextlib.contextmanager
    def full_resolution(self) -> Iterator[None]:
        """Draw every row while inside (an export holds the data, not the screen's summary)."""
        self._exporting = True
        self.redraw_all()
        try:
            yield
        finally:
            self._exporting = False
            self.redraw_all()

    def redraw_all(self) -> None:
        """Mark everything stale and redraw now (subclasses drop their caches here)."""
        self._dirty = True
        self.refresh()

    def _write_svg(self, path: str) -> None:
        from PySide6 import QtCore, QtGui, QtSvg

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

    # ------------------------------------------------------------------ tool row
    def _build_toolbar(self) -> None:
        self.toolbar = QtWidgets.QHBoxLayout()
        self.toolbar.setContentsMargins(0, 0, 0, 0)
        self.toolbar.setSpacing(2)
        self.toolbar.addStretch(1)
        self.log_x_button = self.log_y_button = None
        if self.log_toggles:
            self.log_x_button = self.tool_button(
                "log x", "Logarithmic step axis", lambda on: self.set_log(x=on)
            )
            self.log_y_button = self.tool_button(
                "log y", "Logarithmic value axis", lambda on: self.set_log(y=on)
            )
            for b, on in ((self.log_x_button, self.log_x), (self.log_y_button, self.log_y)):
                b.setCheckable(True)
                b.blockSignals(True)  # the preset's scale is already set: no redraw mid-construction
                b.setChecked(on)
                b.blockSignals(False)
        self.csv_button = self.tool_button(
            "CSV…", "Export this view's data to a CSV file", self._ask_csv_path
        )
        self.copy_button = self.tool_button(
            "Copy", "Copy this view as an image to the clipboard", self.copy_image
        )
        self._layout.insertLayout(self._layout.indexOf(self.plot), self.toolbar)

    def tool_button(
        self, text: str, tip: str, slot: Callable[..., object], *, toggle: bool = False, index: int = -1
    ) -> QtWidgets.QToolButton:
        """A small flat button in the view's tool row, at ``index`` (-1: last).

        With ``toggle`` the button is checkable and ``slot`` gets the new state.
        """
        b = QtWidgets.QToolButton()
        b.setText(text)
        b.setToolTip(tip)
        b.setAutoRaise(True)
        b.setStyleSheet(self._tool_style())
        if toggle or text.startswith("log"):
            b.setCheckable(True)
            b.toggled.connect(slot)
        else:
            b.clicked.connect(lambda *_: slot())
        self.toolbar.insertWidget(index, b)
        return b

    def _tool_style(self) -> str:
        return f"QToolButton {{ font-size: {style.pt(style.SMALL_PT, self.text_scale)}pt; padding: 0 3px; }}"

    def _plot_axes(self) -> tuple[pg.AxisItem, ...]:
        """Axes besides left and bottom whose texts scale (a colour bar's)."""
        return ()

    def _apply_text_scale(self) -> None:
        super()._apply_text_scale()
        style.scale_plot_texts(self.item, self.text_scale, self._plot_axes())
        self._fit_title()
        for i in range(self.toolbar.count()):
            w = self.toolbar.itemAt(i).widget()
            if isinstance(w, QtWidgets.QToolButton):
                w.setStyleSheet(self._tool_style())
        for line in self._event_lines:
            if line.label is not None:
                line.label.setFont(style.font(style.TEXT_PT, self.text_scale))
                line.label.updatePosition()
        self._fit_axis_labels()

    def set_log(self, x: bool | None = None, y: bool | None = None) -> None:
        """Switch the axes between log and linear; event markers and the cursor follow."""
        self.log_x = self.log_x if x is None else bool(x)
        self.log_y = self.log_y if y is None else bool(y)
        for button, on in ((self.log_x_button, self.log_x), (self.log_y_button, self.log_y)):
            if button is not None and button.isChecked() != on:
                button.blockSignals(True)
                button.setChecked(on)
                button.blockSignals(False)
        self.item.setLogMode(x=self.log_x, y=self.log_y)
        self._clear_events()
        for event in self.events:
            self._draw_event(event)
        self._draw_cursor(self.cursor)
        self._dirty = True
        self.refresh()

    def copy_image(self) -> None:
        """Put the view (as drawn now) on the clipboard as an image."""
        self.refresh()
        QtWidgets.QApplication.clipboard().setPixmap(self._grab())

    def _ask_csv_path(self) -> None:
        path, _ = QtWidgets.QFileDialog.getSaveFileName(
            self, "Export data", f"{self.view.title}.csv", "CSV (*.csv)"
        )
        if not path:
            return
        try:
            self.export_csv(path)
        except (OSError, ValueError) as exc:
            QtWidgets.QMessageBox.warning(self, "Export failed", str(exc))

    def export_csv(self, path: str) -> None:
        """Write the view's data as CSV: a header row, then one row per data point."""
        header, columns = self.data_columns()
        if not columns:
            raise ValueError(f"{self.view.title}: no data to export yet")
        write_csv(path, header, columns)

    def data_columns(self) -> tuple[list[str], list[np.ndarray]]:
        """The data drawn, as named columns (shorter ones padded with NaN).

        The generic version reads the plot's items: ``x``/``y`` of each curve, the
        edges and heights of bars, one column per image column. Views override it
        with their own buffers (``LinesView``: one column per series, by step).
        """
        header: list[str] = []
        cols: list[np.ndarray] = []
        legend = self.item.legend
        named = {id(sample.item): label.text for sample, label in legend.items} if legend is not None else {}
        for i, it in enumerate(self.item.items):
            name = named.get(id(it)) or (it.name() if hasattr(it, "name") else None) or f"item{i}"
            if isinstance(it, pg.PlotDataItem) and it.xData is not None and len(it.xData):
                header += [f"{name} x", f"{name} y"]
                cols += [np.asarray(it.xData, float), np.asarray(it.yData, float)]
            elif isinstance(it, pg.BarGraphItem):
                o = it.opts
                x0, x1 = o.get("x0"), o.get("x1")
                top = o.get("y1") if o.get("y1") is not None else o.get("height")
                if x0 is not None and x1 is not None and top is not None:
                    header += [f"{name} left", f"{name} right", f"{name} height"]
                    cols += [np.ravel(np.asarray(a, float)) for a in (x0, x1, top)]
            elif isinstance(it, pg.ImageItem) and it.image is not None:
                img = np.asarray(it.image, float)
                img = img.reshape(img.shape[0], -1)
                header += ["row"] + [f"col {j}" for j in range(img.shape[1])]
                cols += [np.arange(img.shape[0], dtype=float)] + [img[:, j] for j in range(img.shape[1])]
        return header, cols


def write_csv(path: str, header: Sequence[str], columns: Sequence[np.ndarray]) -> None:
    """Write columns as CSV under a header row; short columns are padded with ``nan``."""
    n = max((len(c) for c in columns), default=0)
    table = np.full((n, len(columns)), np.nan)
    for j, c in enumerate(columns):
        table[: len(c), j] = c
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerow(header)  # quotes labels that hold commas
        # %.10g: short, and ten significant digits keep 2.22e-16 and 1e12 as they are.
        np.savetxt(f, table, fmt="%.10g", delimiter=",")
