"""``LinesView``: scalar and vector streams over steps, several series in one plot."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pyqtgraph as pg
from PySide6 import QtWidgets

from dynlab.frames import Stream
from dynlab.viewspec import ViewSpec

from . import style
from .buffers import SeriesBuffer
from .plotview import PlotView

#: EMA weight of the smoothed line (TensorBoard's slider at 0.9).
SMOOTH_WEIGHT = 0.9
#: Rows kept per series before the oldest half is decimated 2:1 (min/max pairs).
BUFFER_CAP = 1 << 20


#: Series longer than this are drawn without antialiasing (see ``_redraw``).
ANTIALIAS_MAX_POINTS = 20_000


class _Series:
    """One run's buffer of one stream and the curves drawing its columns."""

    def __init__(self, buffer: SeriesBuffer) -> None:
        self.buffer = buffer
        self.raw: list[pg.PlotDataItem] = []
        self.smooth: list[pg.PlotDataItem] = []
        self.drawn_n = -1  # rows drawn at the last refresh (skip unchanged series)


class LinesView(PlotView):
    """Lines of scalar/vector streams against the step.

    Each scalar stream is one series and each entry of a vector stream is one series
    (named by the stream's labels); overlaid runs reuse the series colour with a
    dashed/dotted pen and a ``[run]`` suffix. The reference stream is a dashed black
    line. Curves use pyqtgraph's peak (min/max per pixel) downsampling and clip to the
    visible range, so a million points per series redraw quickly and spikes stay visible.
    With ``smooth`` the raw line is drawn faint and an EMA bold on top.
    """

    time_axis = True

    def __init__(
        self, view: ViewSpec, streams: Mapping[str, Stream], parent: QtWidgets.QWidget | None = None
    ) -> None:
        super().__init__(view, streams, parent)
        self.item.setLogMode(x=view.log_x, y=view.log_y)
        self.legend = style.add_legend(self.item)
        self._series: dict[tuple[str, str], _Series] = {}
        # Colour index of each (stream, column) so runs of one series share a colour.
        self._colour_of: dict[tuple[str, int], int] = {}
        n = 0
        for name in self.stream_names:
            for k in range(self._width(self.streams[name])):
                self._colour_of[(name, k)] = n
                n += 1
        self.n_series = n
        self._legend_corner = 0
        # Re-place the legend when the axes change (autorange after new data, zoom, resize).
        vb = self.item.getViewBox()
        vb.sigRangeChanged.connect(self._place_legend)
        vb.sigResized.connect(self._place_legend)

    @staticmethod
    def _width(stream: Stream) -> int:
        return int(np.prod(stream.shape)) if stream.kind == "vector" and stream.shape else 1

    def series_names(self, name: str) -> list[str]:
        """Legend names of a stream's columns (vector labels, prefixed if several streams)."""
        s = self.streams[name]
        width = self._width(s)
        if s.kind != "vector":
            return [name]
        labels = list(s.labels) if len(s.labels) == width else [f"{name}[{i}]" for i in range(width)]
        if len(self.stream_names) > 1:
            labels = [f"{name}: {lab}" for lab in labels]
        return labels

    # ------------------------------------------------------------------ buffers
    def _append(self, run: str, name: str, step: int, value: np.ndarray) -> None:
        key = (run, name)
        series = self._series.get(key)
        if series is None:
            width = value.size if name == self.reference else self._width(self.streams[name])
            ema = SMOOTH_WEIGHT if self.view.smooth and name != self.reference else None
            series = self._series[key] = _Series(SeriesBuffer(width, BUFFER_CAP, ema))
            self._make_curves(run, name, series)
        series.buffer.append(step, value)

    def push_series(self, name: str, steps: np.ndarray, values: np.ndarray, run: str = "") -> None:
        """Append many steps of one stream at once (replay of a recording, benchmarks).

        Equivalent to pushing one frame per step with only ``name`` in it, but vectorised:
        a million steps take milliseconds instead of seconds.
        """
        if name not in self.streams:
            return
        if run not in self.runs:
            self.add_run(run, run)
        values = np.asarray(values, dtype=np.float64).reshape(len(steps), -1)
        if len(steps) == 0:
            return
        self._append(run, name, int(steps[0]), values[0])
        self._series[(run, name)].buffer.extend(np.asarray(steps)[1:], values[1:])
        self._run_data.add(run)
        self._dirty = True

    def _make_curves(self, run: str, name: str, series: _Series) -> None:
        r = self.run_index(run)
        if name == self.reference:
            pen = pg.mkPen(style.REFERENCE_COLOUR, width=1.5, style=pg.QtCore.Qt.PenStyle.DashLine)
            curve = style.add_fast_curve(self.item, pen, f"{name} (reference){self.run_suffix(run)}")
            curve.setZValue(20)
            series.raw.append(curve)
            return
        n = self.n_series
        for k, label in enumerate(self.series_names(name)):
            c = self._colour_of.get((name, k), k)
            smooth = series.buffer.ema_weight is not None
            raw_pen = (
                style.series_pen(c, r, width=1.0, alpha=70, n=n) if smooth else style.series_pen(c, r, n=n)
            )
            if n > style.RAMP_ABOVE and c not in (0, n - 1):
                label = ""  # a ramp of many series: the legend names its two ends only
            raw = style.add_fast_curve(
                self.item, raw_pen, None if smooth or not label else label + self.run_suffix(run)
            )
            series.raw.append(raw)
            if smooth:
                curve = style.add_fast_curve(
                    self.item,
                    style.series_pen(c, r, width=2.0, n=n),
                    f"{label} (EMA){self.run_suffix(run)}" if label else None,
                )
                curve.setZValue(10)
                series.smooth.append(curve)

    def _clear_data(self) -> None:
        for series in self._series.values():
            for curve in (*series.raw, *series.smooth):
                self.item.removeItem(curve)
        self._series.clear()
        self.legend.clear()

    # ------------------------------------------------------------------ drawing
    def _redraw(self) -> None:
        for series in self._series.values():
            buf = series.buffer
            if buf.n == series.drawn_n:
                continue
            series.drawn_n = buf.n
            x, values, ema = buf.steps, buf.values, buf.ema
            # Antialiased wide lines cost ~10x in Qt's raster painter once a series is
            # dense (thousands of segments per pixel column after peak downsampling);
            # past that point the eye cannot tell, so draw them aliased.
            aa = buf.n < ANTIALIAS_MAX_POINTS
            for curve in (*series.raw, *series.smooth):
                if curve.opts.get("antialias") != aa:
                    curve.opts["antialias"] = aa
                    curve.curve.opts["antialias"] = aa
            for k, curve in enumerate(series.raw):
                curve.setData(x=x, y=values[:, k])
            for k, curve in enumerate(series.smooth):
                curve.setData(x=x, y=ema[:, k])
        # One entry repeats the axis label: show the legend only when it tells series apart.
        self.legend.setVisible(len(self.legend.items) > 1)
        self._place_legend()

    def _place_legend(self, *_: object) -> None:
        self._legend_corner = style.place_legend(self.legend, self.item, self._legend_corner)

    def series_data(self, name: str, run: str = "") -> tuple[np.ndarray, np.ndarray]:
        """Buffered ``(steps, values)`` of a stream (values ``(n, width)``), for tests and export."""
        series = self._series.get((run, name))
        if series is None:
            return np.empty(0), np.empty((0, 1))
        return series.buffer.steps.copy(), series.buffer.values.copy()
