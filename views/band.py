"""``BandView``: a stream across a sweep — one line per grid point, mean ± 1 s.d. over seeds.

The data come from the sweep reader (``dynlab.sweep_view.Band``) or anything with the same
attributes: ``label``, ``steps``, ``mean``, ``sd``, ``n`` and ``seeds`` (``(label, steps,
values)`` per seed). The individual seeds are drawn on demand, thin, in their point's colour.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtWidgets

from . import style

#: Alpha of the ±1 s.d. band and of the individual seeds' lines.
BAND_ALPHA = 55
SEED_ALPHA = 110


class BandView(QtWidgets.QWidget):
    """Mean over seeds with a ±1 s.d. band, one colour per grid point."""

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.plot = style.make_plot("", "step", "")
        self.item: pg.PlotItem = self.plot.getPlotItem()
        self.legend = style.add_legend(self.item)
        self.caption = QtWidgets.QLabel()
        self.caption.setWordWrap(True)
        self.caption.setTextFormat(QtCore.Qt.TextFormat.PlainText)
        self.caption.setStyleSheet("color: #444; font-size: 9pt;")
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.addWidget(self.plot, 1)
        lay.addWidget(self.caption)
        self.show_seeds = False
        self.bands: list[Any] = []
        self._seed_curves: list[pg.PlotDataItem] = []
        self._legend_corner = 0
        # Move the legend to the corner where it hides the least data, as the line views do.
        vb = self.item.getViewBox()
        vb.sigRangeChanged.connect(self._place_legend)
        vb.sigResized.connect(self._place_legend)

    def _place_legend(self, *_: object) -> None:
        self._legend_corner = style.place_legend(self.legend, self.item, self._legend_corner)

    def set_bands(
        self,
        bands: Sequence[Any],
        *,
        title: str = "",
        y_label: str = "",
        units: str = "",
        log_y: bool = False,
        caption: str = "",
    ) -> None:
        """Draw ``bands`` (replacing what was shown)."""
        self.item.clear()
        self.legend.clear()
        self._seed_curves = []
        self.bands = list(bands)
        self.item.setTitle(html.escape(title), color=style.FOREGROUND, size="10pt")
        text = f"{y_label} [{units}]" if y_label and units else (y_label or units)
        self.item.setLabel("left", html.escape(text), color=style.FOREGROUND)
        self.item.setLogMode(x=False, y=log_y)
        n = len(self.bands)
        for i, band in enumerate(self.bands):
            colour = style.ramp_colour(i, n) if n > style.RAMP_ABOVE else style.colour(i)
            self._draw_band(band, colour, log_y)
        self.legend.setVisible(n > 0)
        self.caption.setText(caption)
        self.caption.setVisible(bool(caption))
        self.item.enableAutoRange()

    def _draw_band(self, band: Any, colour: str, log_y: bool) -> None:
        steps = np.asarray(band.steps, dtype=float)
        mean = np.asarray(band.mean, dtype=float)
        sd = np.asarray(band.sd, dtype=float)
        lower, upper = mean - sd, mean + sd
        if log_y:
            # A log axis cannot show a band reaching zero: clip its lower edge to the data.
            positive = mean[np.isfinite(mean) & (mean > 0)]
            floor = positive.min() * 1e-3 if len(positive) else 1e-12
            lower = np.maximum(lower, floor)
        c = pg.mkColor(colour)
        fill = pg.mkColor(colour)
        fill.setAlpha(BAND_ALPHA)
        # The band's edges are drawn, in the fill's colour: FillBetweenItem fills between
        # the edge curves' painted paths, and a curve with pen=None has none.
        lo = pg.PlotDataItem(steps, lower, pen=pg.mkPen(fill, width=1), connect="finite")
        hi = pg.PlotDataItem(steps, upper, pen=pg.mkPen(fill, width=1), connect="finite")
        for edge in (lo, hi):
            self.item.addItem(edge)
        self.item.addItem(pg.FillBetweenItem(lo, hi, brush=pg.mkBrush(fill)))
        seeds_pen = pg.mkColor(colour)
        seeds_pen.setAlpha(SEED_ALPHA)
        for _, s_steps, s_values in band.seeds:
            curve = pg.PlotDataItem(s_steps, s_values, pen=pg.mkPen(seeds_pen, width=0.8), connect="finite")
            curve.setVisible(self.show_seeds)
            self.item.addItem(curve)
            self._seed_curves.append(curve)
        n = int(np.max(band.n)) if len(band.n) else 0
        line = pg.PlotDataItem(
            steps, mean, pen=pg.mkPen(c, width=2), name=f"{band.label} (n={n})", connect="finite"
        )
        line.setZValue(10)
        self.item.addItem(line)

    def set_show_seeds(self, on: bool) -> None:
        """Draw every seed's own line under the bands."""
        self.show_seeds = bool(on)
        for curve in self._seed_curves:
            curve.setVisible(self.show_seeds)

    def export_image(self, path: str) -> None:
        """Save the view as PNG (or any Qt image format, by suffix)."""
        if not self.grab().save(str(Path(path))):
            raise OSError(f"could not write image {path!r}")
