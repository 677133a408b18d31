"""``HeatmapView``: a 2-D array per step (layer x group element, frequency x neuron)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtWidgets

from dynlab.frames import Stream
from dynlab.viewspec import SORT_ORDERS, ViewSpec

from . import style, textfit
from .buffers import SnapshotViewMixin
from .plotview import PlotView

#: Most tick labels drawn per axis; longer label lists are thinned evenly.
MAX_TICKS = 24


class HeatmapView(SnapshotViewMixin, PlotView):
    """The newest (or cursor-step) matrix as an image with labelled rows and columns.

    ``kind = "heatmap"`` shows the first heatmap stream, ``(R, C)`` with the stream's
    ``rows``/``cols`` as tick labels. ``kind = "vector-heatmap"`` stacks the view's
    vector streams as rows (row labels = stream names, columns = the first stream's
    labels). Signed data get a diverging map centred on 0, otherwise viridis; ``log_y``
    colours by log10 of the value. Hovering shows ``row, col = value``.
    ``sort_cols = "argmax"`` orders the columns by the row of their maximum at the step
    shown (ties keep the stream's order); the column labels follow their columns.
    """

    single_run = True
    x_label = ""
    y_units_on_axis = False

    def __init__(
        self, view: ViewSpec, streams: Mapping[str, Stream], parent: QtWidgets.QWidget | None = None
    ) -> None:
        if view.sort_cols and view.sort_cols not in SORT_ORDERS:
            raise ValueError(
                f"unknown sort_cols {view.sort_cols!r}; expected one of {', '.join(SORT_ORDERS)}"
            )
        super().__init__(view, streams, parent)
        self.vector_mode = view.kind == "vector-heatmap" or (
            bool(self.stream_names) and self.streams[self.stream_names[0]].kind == "vector"
        )
        self.image = pg.ImageItem(axisOrder="row-major")
        self.item.addItem(self.image)
        self.item.invertY(True)  # row 0 on top, as a matrix is read
        self.item.setMouseEnabled(x=False, y=False)
        self.item.showGrid(x=False, y=False)
        first = self.streams.get(self.stream_names[0]) if self.stream_names else None
        label = "log10 value" if view.log_y else (first.units if first and first.units else "value")
        self.colourbar = pg.ColorBarItem(colorMap="viridis", interactive=False, width=14)
        self.colourbar.setImageItem(self.image, insert_in=self.item)
        style.style_colourbar(self.colourbar, label, self.text_scale)
        self.hover = QtWidgets.QLabel(" ")
        self.hover.setTextFormat(QtCore.Qt.TextFormat.PlainText)  # row/column names come from files
        self.hover.setStyleSheet(self._hover_style())
        self._layout.insertWidget(self._layout.count() - 1, self.hover)
        self.plot.scene().sigMouseMoved.connect(self._on_mouse_moved)
        self.data: np.ndarray | None = None  # the matrix drawn (after log), for hover and tests
        self.shown_step: int | None = None
        self.row_labels: tuple[str, ...] = ()
        self.col_labels: tuple[str, ...] = ()
        #: the stream's column index of each drawn column (``None`` when drawn in stream order)
        self.col_order: np.ndarray | None = None
        if view.sort_cols == "argmax":
            self.item.setLabel(
                "bottom", "columns ordered by the row of their maximum", color=style.FOREGROUND
            )
        self._signed: bool | None = None
        self._shape: tuple[int, ...] = ()
        self._levels: tuple[float, float] | None = None
        self._ticks_shown: tuple = ()
        self.item.getViewBox().sigResized.connect(self._set_ticks)

    def _y_label(self) -> str:
        return ""

    def _hover_style(self) -> str:
        return f"color: #222; font-size: {style.pt(style.TEXT_PT, self.text_scale)}pt;"

    def _plot_axes(self) -> tuple[pg.AxisItem, ...]:
        return (self.colourbar.getAxis("right"),)

    def _apply_text_scale(self) -> None:
        super()._apply_text_scale()
        self.hover.setStyleSheet(self._hover_style())
        self._set_ticks()
        textfit.fit_colourbar(self.colourbar)

    def _clear_data(self) -> None:
        super()._clear_data()
        self.data = None
        self._signed = None

    # ------------------------------------------------------------------ drawing
    def _current(self) -> tuple[int, np.ndarray, tuple[str, ...], tuple[str, ...]] | None:
        run = self.shown_run()
        if not self.vector_mode:
            name = self.stream_names[0] if self.stream_names else ""
            got = self.snaps.at(run, name, self.cursor)
            if got is None:
                return None
            s = self.streams[name]
            return got[0], np.asarray(got[1], dtype=float), s.rows, s.cols
        rows, names, step = [], [], None
        for name in self.stream_names:
            got = self.snaps.at(run, name, self.cursor)
            if got is None:
                continue
            step = got[0] if step is None else max(step, got[0])
            rows.append(np.asarray(got[1], dtype=float).reshape(-1))
            names.append(name)
        if not rows:
            return None
        width = max(r.size for r in rows)
        mat = np.full((len(rows), width), np.nan)
        for i, r in enumerate(rows):
            mat[i, : r.size] = r
        return step, mat, tuple(names), self.streams[names[0]].labels

    def _redraw(self) -> None:
        cur = self._current()
        if cur is None:
            self.image.clear()
            self.data = None
            self.shown_step = None
            return
        step, mat, rows, cols = cur
        self.col_order = None
        if self.view.sort_cols == "argmax":
            self.col_order = order = argmax_order(mat)
            names = list(cols) if len(cols) == mat.shape[1] else [str(j) for j in range(mat.shape[1])]
            mat, cols = mat[:, order], tuple(names[j] for j in order)
        # A cell not measured yet (NaN) is left blank; with log colour a cell that is exactly
        # 0 is drawn at the bottom of the scale (it is the smallest value, not a gap).
        missing = ~np.isfinite(mat)
        if self.view.log_y:
            with np.errstate(divide="ignore", invalid="ignore"):
                mat = np.where(mat > 0, np.log10(np.where(mat > 0, mat, 1.0)), np.nan)
        self.data, self.shown_step = mat, step
        finite = mat[np.isfinite(mat)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        signed = lo < 0 < hi and not self.view.log_y
        if signed != self._signed:
            self._signed = signed
            self.colourbar.setColorMap(pg.colormap.get("CET-D1" if signed else "viridis"))
        if signed:
            m = max(abs(lo), abs(hi))
            lo, hi = -m, m
        if hi <= lo:
            hi = lo + 1.0
        # NaN is drawn transparent by pyqtgraph: the white background shows through.
        self.image.setImage(np.where(missing, np.nan, np.nan_to_num(mat, nan=lo)), autoLevels=False)
        self.colourbar.setLevels((lo, hi))
        self.image.setRect(QtCore.QRectF(0, 0, mat.shape[1], mat.shape[0]))
        if (rows, cols, mat.shape) != (self.row_labels, self.col_labels, self._shape):
            self.row_labels, self.col_labels, self._shape = rows, cols, mat.shape
            self._set_ticks()
        if (lo, hi) != self._levels:
            self._levels = (lo, hi)
            textfit.fit_colourbar(self.colourbar)
        self.item.setRange(xRange=(0, mat.shape[1]), yRange=(0, mat.shape[0]), padding=0)
        self.set_title(f"{self.view.title} — step {step}")

    def _set_ticks(self, *_: object) -> None:
        """Row and column labels, as many as fit without overlapping (redone on resize)."""
        if not self._shape:
            return
        vb = self.item.getViewBox()
        rows = textfit.cell_ticks(
            self.row_labels, self._shape[0], vb.height(), self.text_scale, most=MAX_TICKS
        )
        cols = textfit.cell_ticks(
            self.col_labels, self._shape[1], vb.width(), self.text_scale, vertical=False, most=MAX_TICKS
        )
        if (rows, cols) == self._ticks_shown:
            return
        self._ticks_shown = (rows, cols)
        left = self.item.getAxis("left")
        left.setTicks([rows])
        style.fit_axis_to_labels(left, [t for _, t in rows])
        self.item.getAxis("bottom").setTicks([cols])

    def value_at(self, row: int, col: int) -> str:
        """Hover text for a cell: ``row, col = value``."""
        if self.data is None or not (0 <= row < self.data.shape[0] and 0 <= col < self.data.shape[1]):
            return " "
        r = self.row_labels[row] if row < len(self.row_labels) else str(row)
        c = self.col_labels[col] if col < len(self.col_labels) else str(col)
        return f"{r}, {c} = {self.data[row, col]:.4g}" + (" (log10)" if self.view.log_y else "")

    def _on_mouse_moved(self, pos: QtCore.QPointF) -> None:
        if self.data is None or not self.item.sceneBoundingRect().contains(pos):
            return
        p = self.item.getViewBox().mapSceneToView(pos)
        self.hover.setText(self.value_at(int(np.floor(p.y())), int(np.floor(p.x()))))


def argmax_order(mat: np.ndarray) -> np.ndarray:
    """Column order that sorts columns by the row of their maximum (NaN-only columns last).

    Ties keep the original order, so a column moves only when its peak row changes.
    """
    finite = np.isfinite(mat)
    peak = np.argmax(np.where(finite, mat, -np.inf), axis=0)
    peak = np.where(finite.any(axis=0), peak, mat.shape[0])
    return np.argsort(peak, kind="stable")
