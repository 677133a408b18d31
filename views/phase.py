"""``PhaseView``: one summary number per trial over a sweep's grid — a phase diagram.

One swept parameter: a line of the mean over seeds with ±1 s.d. error bars, an optional
dashed reference curve (2/η beside the final sharpness) and a vertical boundary line (a
critical value of the parameter). Two: a heatmap over the grid (rows: the second parameter),
each cell labelled with its value; cells where the event never fired are grey and say so.
"""

from __future__ import annotations

import html
import numbers
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtGui, QtWidgets

from . import style

NEVER_COLOUR = "#d9d9d9"


def _numeric(values: Sequence[Any]) -> bool:
    return all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values)


def _fmt(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"


def _tick(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


class PhaseView(QtWidgets.QWidget):
    """A summary over a 1-D grid (line with error bars) or a 2-D grid (heatmap)."""

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.plot = style.make_plot("", "", "")
        self.item: pg.PlotItem = self.plot.getPlotItem()
        self.legend = style.add_legend(self.item)
        self.colourbar: pg.ColorBarItem | None = None
        self.image: pg.ImageItem | None = None
        self.cell_text: dict[tuple[int, int], str] = {}
        self.boundary_x: float | None = None
        self.caption = QtWidgets.QLabel()
        self.caption.setWordWrap(True)
        self.caption.setTextFormat(QtCore.Qt.TextFormat.PlainText)
        self.caption.setStyleSheet("color: #444; font-size: 9pt;")
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.addWidget(self.plot, 1)
        lay.addWidget(self.caption)

    def _reset(self, title: str, caption: str) -> None:
        self.item.clear()
        self.legend.clear()
        self.legend.setVisible(False)
        if self.colourbar is not None:
            self.item.layout.removeItem(self.colourbar)
            self.colourbar.setParentItem(None)
            self.colourbar = None
        self.image = None
        self.cell_text = {}
        self.boundary_x = None
        self.item.setTitle(html.escape(title), color=style.FOREGROUND, size="10pt")
        self.caption.setText(caption)
        self.caption.setVisible(bool(caption))
        for axis in ("left", "bottom"):
            self.item.getAxis(axis).setTicks(None)
        self.item.invertY(False)
        self.item.setLogMode(x=False, y=False)
        self.item.setMouseEnabled(x=True, y=True)

    # ------------------------------------------------------------------ 1-D
    def set_line(
        self,
        x_label: str,
        xs: Sequence[Any],
        mean: np.ndarray,
        sd: np.ndarray,
        fired: np.ndarray,
        total: np.ndarray,
        *,
        y_label: str,
        title: str = "",
        never: str = "never",
        reference: np.ndarray | None = None,
        reference_label: str = "",
        boundary: float | None = None,
        boundary_label: str = "",
        log_x: bool = False,
        log_y: bool = False,
        caption: str = "",
    ) -> None:
        """Mean ± s.d. over seeds at each grid value; points where some seeds never fired say how many did."""
        self._reset(title, caption)
        numeric = _numeric(xs)
        x = np.array(xs, dtype=float) if numeric else np.arange(len(xs), dtype=float)
        log_x = log_x and numeric and bool(np.all(x > 0))
        px = np.log10(x) if log_x else x  # error bars and text sit in view coordinates
        mean, sd = np.asarray(mean, float), np.asarray(sd, float)
        ok = np.isfinite(mean)
        py = mean.copy()
        if log_y:
            ok &= mean > 0
            py = np.where(ok, np.log10(np.where(ok, mean, 1.0)), np.nan)
        self.item.setLabel("bottom", html.escape(x_label), color=style.FOREGROUND)
        self.item.setLabel("left", html.escape(y_label), color=style.FOREGROUND)
        if not numeric:
            self.item.getAxis("bottom").setTicks([[(i, _tick(v)) for i, v in enumerate(xs)]])
        self.item.setLogMode(x=log_x, y=log_y)
        pen = pg.mkPen(style.colour(0), width=2)
        self.item.addItem(
            pg.PlotDataItem(
                x[ok],
                mean[ok],
                pen=pen,
                symbol="o",
                symbolBrush=style.colour(0),
                symbolPen=None,
                name=y_label,
            )
        )
        if np.any(ok):
            if log_y:
                top = np.log10(mean[ok] + sd[ok]) - py[ok]
                low = mean[ok] - sd[ok]
                bottom = py[ok] - np.log10(np.where(low > 0, low, mean[ok] * 1e-3))
            else:
                top = bottom = sd[ok]
            bars = pg.ErrorBarItem(x=px[ok], y=py[ok], top=top, bottom=bottom, beam=0.0, pen=pen)
            self.item.addItem(bars)
        if reference is not None:
            r = np.asarray(reference, float)
            good = np.isfinite(r) & ((r > 0) if log_y else True)
            dashed = pg.mkPen(style.REFERENCE_COLOUR, width=1.5, style=QtCore.Qt.PenStyle.DashLine)
            self.item.addItem(
                pg.PlotDataItem(x[good], r[good], pen=dashed, name=reference_label or "reference")
            )
        for i in range(len(xs)):
            if total[i] and fired[i] < total[i]:
                text = never if fired[i] == 0 else f"{fired[i]}/{total[i]} fired"
                label = pg.TextItem(text, color="#a00", anchor=(0.5, 1.2))
                label.setPos(px[i], py[i] if ok[i] else 0.0)
                self.item.addItem(label)
                self.cell_text[(0, i)] = text
        if boundary is not None and numeric:
            pos = np.log10(boundary) if log_x and boundary > 0 else boundary
            self._boundary_line(float(pos), boundary_label)
        self.legend.setVisible(reference is not None)  # one series alone needs no legend
        self.item.enableAutoRange()

    # ------------------------------------------------------------------ 2-D
    def set_grid(
        self,
        x_label: str,
        xs: Sequence[Any],
        y_label: str,
        ys: Sequence[Any],
        mean: np.ndarray,
        sd: np.ndarray,
        fired: np.ndarray,
        total: np.ndarray,
        *,
        value_label: str,
        title: str = "",
        never: str = "never",
        boundary: float | None = None,
        boundary_label: str = "",
        log_colour: bool = False,
        caption: str = "",
    ) -> None:
        """A heatmap: cell (row y, column x) holds the mean over seeds; grey where none fired."""
        self._reset(title, caption)
        mean = np.asarray(mean, float)
        ny, nx = mean.shape
        shown = np.log10(np.where(mean > 0, mean, np.nan)) if log_colour else mean
        finite = shown[np.isfinite(shown)]
        lo, hi = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
        if hi <= lo:
            hi = lo + 1.0
        self.image = pg.ImageItem(np.where(np.isfinite(shown), shown, lo), axisOrder="row-major")
        self.image.setRect(QtCore.QRectF(-0.5, -0.5, nx, ny))
        self.item.addItem(self.image)
        cmap = pg.colormap.get("viridis")
        self.colourbar = pg.ColorBarItem(values=(lo, hi), colorMap=cmap, interactive=False, width=14)
        self.colourbar.setImageItem(self.image, insert_in=self.item)
        style.style_colourbar(self.colourbar, f"log10 {value_label}" if log_colour else value_label)
        for iy in range(ny):
            for ix in range(nx):
                self._cell(iy, ix, mean, sd, fired, total, never, shown, lo, hi)
        bottom, left = self.item.getAxis("bottom"), self.item.getAxis("left")
        bottom.setTicks([[(i, _tick(v)) for i, v in enumerate(xs)]])
        left.setTicks([[(i, _tick(v)) for i, v in enumerate(ys)]])
        style.fit_axis_to_labels(left, [_tick(v) for v in ys])
        self.item.setLabel("bottom", html.escape(x_label), color=style.FOREGROUND)
        self.item.setLabel("left", html.escape(y_label), color=style.FOREGROUND)
        self.item.setMouseEnabled(x=False, y=False)
        if boundary is not None and _numeric(xs) and len(xs) > 1:
            self._boundary_line(self._index_of(np.array(xs, float), boundary), boundary_label)
        self.item.getViewBox().setRange(xRange=(-0.5, nx - 0.5), yRange=(-0.5, ny - 0.5), padding=0)

    def _cell(
        self, iy: int, ix: int, mean, sd, fired, total, never: str, shown, lo: float, hi: float
    ) -> None:  # noqa: ANN001
        n, k = int(total[iy, ix]), int(fired[iy, ix])
        if n == 0:
            text = "no trials"
        elif k == 0:
            text = never
        else:
            text = _fmt(mean[iy, ix]) + (f" ± {_fmt(sd[iy, ix])}" if k > 1 else "")
            if k < n:
                text += f"\n{n - k}/{n} {never}"
        if n == 0 or k == 0:
            rect = QtWidgets.QGraphicsRectItem(ix - 0.5, iy - 0.5, 1.0, 1.0)
            rect.setBrush(QtGui.QBrush(QtGui.QColor(NEVER_COLOUR)))
            rect.setPen(pg.mkPen("#ffffff", width=0))
            rect.setZValue(5)
            self.item.addItem(rect)
        # Dark text on the light end of viridis, white on the dark end.
        light = k == 0 or n == 0 or (shown[iy, ix] - lo) / (hi - lo) > 0.6
        label = pg.TextItem(text, color="#111" if light else "#fff", anchor=(0.5, 0.5))
        label.setPos(ix, iy)
        label.setZValue(10)
        self.item.addItem(label)
        self.cell_text[(iy, ix)] = text

    @staticmethod
    def _index_of(xs: np.ndarray, value: float) -> float:
        """Where ``value`` falls on the column axis (linear between neighbouring grid values)."""
        order = np.argsort(xs)
        pos = np.interp(value, xs[order], order.astype(float), left=np.nan, right=np.nan)
        if np.isnan(pos):
            return -0.5 if value < xs.min() else len(xs) - 0.5
        return float(pos)

    def _boundary_line(self, pos: float, label: str) -> None:
        line = style.vline(pos, "#d62728", label, label_pos=0.95)
        line.setPen(pg.mkPen("#d62728", width=2, style=QtCore.Qt.PenStyle.DashLine))
        line.setZValue(20)
        self.item.addItem(line, ignoreBounds=True)
        self.boundary_x = pos

    def export_image(self, path: str) -> None:
        """Save the view as PNG (or any Qt image format, by suffix)."""
        if not self.grab().save(str(Path(path))):
            raise OSError(f"could not write image {path!r}")
