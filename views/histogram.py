"""Spectrum views: the newest histogram as bars, and histograms (or vectors) over time.

A histogram frame is ``(3, B)``: left edges, right edges and weight of B bins, which
may be non-uniform and move from step to step (a Lanczos spectrum's range grows as
sharpness rises).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtWidgets

from dynlab.frames import Event, Stream
from dynlab.viewspec import ViewSpec

from . import style, textfit
from .buffers import SnapshotViewMixin
from .plotview import PlotView

#: Rows of the waterfall's common bin grid and most columns drawn (steps are resampled).
WATERFALL_BINS = 160
#: Most row labels on a waterfall of a vector stream (evenly thinned beyond).
WATERFALL_MAX_LABELS = 16
WATERFALL_MAX_COLUMNS = 1200


class HistogramView(SnapshotViewMixin, PlotView):
    """The newest (or cursor-step) spectrum of each stream as bars.

    ``log_y`` draws log10 of the weight so a handful of outlier eigenvalues stay visible
    beside a bulk of thousands; the reference scalar (e.g. 2/η) is a vertical dashed line.
    Overlaid runs are drawn as outlines in the run's pen style.
    """

    x_label = "value"

    def __init__(
        self, view: ViewSpec, streams: Mapping[str, Stream], parent: QtWidgets.QWidget | None = None
    ) -> None:
        super().__init__(view, streams, parent)
        first = self.streams[self.stream_names[0]] if self.stream_names else None
        self.item.setLabel(
            "bottom",
            html.escape(
                f"{self.stream_names[0]} [{first.units}]"
                if first and first.units
                else (self.stream_names[0] if first else "value")
            ),
            color=style.FOREGROUND,
        )
        self.item.setLabel("left", "log10 weight" if view.log_y else "weight", color=style.FOREGROUND)
        self.legend = style.add_legend(self.item, self.text_scale)
        self._bars: dict[tuple[str, str], pg.BarGraphItem] = {}
        self._ref_lines: dict[str, pg.InfiniteLine] = {}
        self._step_label = pg.TextItem(color=style.FOREGROUND, anchor=(0, 0))
        self._step_label.setParentItem(self.item.getViewBox())
        self._step_label.setPos(4, 2)
        self._step_label.setFont(style.font(style.TEXT_PT, self.text_scale))

    def _y_label(self) -> str:
        return ""

    def _apply_text_scale(self) -> None:
        super()._apply_text_scale()
        style.scale_legend(self.legend, self.text_scale)
        self._step_label.setFont(style.font(style.TEXT_PT, self.text_scale))
        for line in self._ref_lines.values():
            line.label.setFont(style.font(style.TEXT_PT, self.text_scale))
            line.label.updatePosition()

    def heights(self, weight: np.ndarray) -> tuple[np.ndarray, float]:
        """Bar heights and baseline: log10 of positive weights when ``log_y`` (empty bins at the floor)."""
        w = np.asarray(weight, dtype=float)
        if not self.view.log_y:
            return w, 0.0
        pos = w[w > 0]
        floor = math.log10(pos.min()) - 0.5 if pos.size else 0.0
        with np.errstate(divide="ignore", invalid="ignore"):
            h = np.where(w > 0, np.log10(np.where(w > 0, w, 1.0)), floor)
        return h, floor

    def _redraw(self) -> None:
        shown_step = None
        for key, snaps in self.snaps.items():
            run, name = key
            if name == self.reference:
                continue
            got = snaps.at(self.cursor)
            bars = self._bars.get(key)
            if got is None:
                if bars is not None:
                    bars.hide()
                continue
            step, value = got
            shown_step = step if shown_step is None else max(shown_step, step)
            left, right, weight = value[0], value[1], value[2]
            if self.view.log_y:
                keep = weight > 0  # log10(0) has no bar; empty bins are simply not drawn
                left, right, weight = left[keep], right[keep], weight[keep]
            height, base = self.heights(weight)
            c = self.stream_names.index(name) if name in self.stream_names else 0
            r = self.run_index(run)
            fill = pg.mkColor(style.colour(c))
            fill.setAlpha(160)
            # Later runs are outlines in their run's pen style, so overlaid spectra stay readable.
            brush = pg.mkBrush(fill) if r == 0 else pg.mkBrush(None)
            pen = style.series_pen(c, r, width=1.0 if r == 0 else 1.8)
            if bars is None:
                bars = pg.BarGraphItem(x0=left, x1=right, y0=base, y1=height, brush=brush, pen=pen)
                self._bars[key] = bars
                self.item.addItem(bars)
                self.legend.addItem(bars, html.escape(name + self.run_suffix(run), quote=False))
            else:
                bars.setOpts(x0=left, x1=right, y0=base, y1=height, brush=brush, pen=pen)
            bars.show()
        self._draw_reference()
        self._step_label.setText("" if shown_step is None else f"step {shown_step}")

    def _draw_reference(self) -> None:
        if not self.reference:
            return
        for (run, name), snaps in self.snaps.items():
            if name != self.reference:
                continue
            got = snaps.at(self.cursor)
            line = self._ref_lines.get(run)
            if got is None or not np.isfinite(got[1]).all():
                if line is not None:
                    line.hide()
                continue
            value = float(np.asarray(got[1]).reshape(-1)[0])
            label = f"{name}{self.run_suffix(run)} = {value:.4g}"
            if line is None:
                r = self.run_index(run)
                line = textfit.vline(
                    value,
                    style.reference_colour(r),
                    label,
                    label_pos=0.85 - 0.1 * (r % 4),
                    scale=self.text_scale,
                )
                line.setPen(style.reference_pen(r, width=1.2))
                self.item.addItem(line)  # not ignoreBounds: keep the threshold in view
                self._ref_lines[run] = line
            line.setValue(value)
            line.label.setFormat(label)
            line.show()

    def _clear_data(self) -> None:
        super()._clear_data()
        for bars in self._bars.values():
            self.item.removeItem(bars)
        for line in self._ref_lines.values():
            self.item.removeItem(line)
        self._bars.clear()
        self._ref_lines.clear()
        self.legend.clear()


class WaterfallView(SnapshotViewMixin, PlotView):
    """A histogram (or vector) stream over time as an image: x = step, y = bin or item.

    Histograms with moving, non-uniform edges are rebinned (mass-conserving) onto one
    common grid spanning every frame seen; colour is log10 of the weight (``log_y``
    chooses log for vectors too). Shows the first stream of one run (selector when
    several runs are pushed).
    """

    time_axis = True
    single_run = True
    y_units_on_axis = False

    def __init__(
        self, view: ViewSpec, streams: Mapping[str, Stream], parent: QtWidgets.QWidget | None = None
    ) -> None:
        super().__init__(view, streams, parent)
        self.stream = self.stream_names[0] if self.stream_names else ""
        s = self.streams.get(self.stream)
        self.is_histogram = s is not None and s.kind == "histogram"
        self.log_colour = self.is_histogram or view.log_y
        self.image = pg.ImageItem(axisOrder="row-major")
        self.item.addItem(self.image)
        self.colourbar = pg.ColorBarItem(colorMap="viridis", interactive=False, width=14)
        self.colourbar.setImageItem(self.image, insert_in=self.item)
        style.style_colourbar(self.colourbar, "log10 weight" if self.log_colour else "value", self.text_scale)
        self.item.showGrid(x=False, y=False)
        unit = f" [{s.units}]" if s and s.units else ""
        if self.is_histogram:
            self.item.setLabel("left", html.escape(f"{self.stream}{unit}"), color=style.FOREGROUND)
        #: row names of a vector waterfall (thinned to fit on the axis)
        self.row_names: tuple[str, ...] = ()
        self._rows_shown: list[tuple[float, str]] = []
        if not self.is_histogram and s is not None:
            self.row_names = s.labels or tuple(
                f"{self.stream}[{i}]" for i in range(int(np.prod(s.shape or (1,))))
            )
            self.item.setLabel("left", "")
            self._set_row_ticks()
            self.item.getViewBox().sigResized.connect(self._set_row_ticks)
        self._levels: tuple[float, float] | None = None
        self.data: np.ndarray | None = None  # the last image drawn, (rows, cols)
        self.scale = SymlogScale(0.0)  # identity until a spectrum with non-uniform bins arrives
        self._ref_curve = pg.PlotDataItem(pen=pg.mkPen("w", width=2, style=pg.QtCore.Qt.PenStyle.DashLine))
        self._ref_curve.setZValue(30)
        self.item.addItem(self._ref_curve)
        # The reference is named at the line's end, not in a legend box that would hide
        # the very part of the image where the spectrum meets it.
        self._ref_text = pg.TextItem(color="w", anchor=(1, 1), fill=pg.mkBrush(0, 0, 0, 120))
        self._ref_text.setZValue(31)
        self._ref_text.setFont(style.font(style.TEXT_PT, self.text_scale))
        self._ref_text.hide()
        self.item.addItem(self._ref_text, ignoreBounds=True)
        self._ref_end: tuple[float, float] | None = None
        vb = self.item.getViewBox()
        vb.sigResized.connect(self.place_reference_badge)
        vb.sigRangeChanged.connect(self.place_reference_badge)

    def _y_label(self) -> str:
        return ""

    def _plot_axes(self) -> tuple[pg.AxisItem, ...]:
        return (self.colourbar.getAxis("right"),)

    def _apply_text_scale(self) -> None:
        super()._apply_text_scale()
        self._ref_text.setFont(style.font(style.TEXT_PT, self.text_scale))
        self.place_reference_badge()
        self._rows_shown = []
        self._set_row_ticks()
        textfit.fit_colourbar(self.colourbar)

    def _set_row_ticks(self, *_: object) -> None:
        """A vector's row names, thinned so they do not overlap (49 labels on 60 pixels are a smear)."""
        if not self.row_names:
            return
        vb = self.item.getViewBox()
        ticks = textfit.cell_ticks(
            self.row_names, len(self.row_names), vb.height(), self.text_scale, most=WATERFALL_MAX_LABELS
        )
        if ticks != self._rows_shown:
            self._rows_shown = ticks
            left = self.item.getAxis("left")
            left.setTicks([ticks])
            style.fit_axis_to_labels(left, [t for _, t in ticks])

    def _redraw(self) -> None:
        snaps = self.snaps.get(self.shown_run(), self.stream)
        if snaps is None or len(snaps) == 0:
            self.image.clear()
            self.data = None
            self._ref_curve.setData([], [])
            return
        steps = np.asarray(snaps.steps, dtype=float)
        # Resample columns on a uniform step grid: uneven probe cadences stay true to x,
        # and very long runs are capped at WATERFALL_MAX_COLUMNS columns.
        n_cols = min(len(steps), WATERFALL_MAX_COLUMNS)
        if n_cols == 1:
            grid_steps, dx = steps, 1.0
        else:
            dx = (steps[-1] - steps[0]) / (n_cols - 1)
            grid_steps = steps[0] + dx * np.arange(n_cols)
        idx = np.clip(
            np.searchsorted(steps, grid_steps + 1e-9 * max(dx, 1.0), side="right") - 1, 0, len(steps) - 1
        )
        if self.is_histogram:
            lo, hi = _occupied_range(snaps.values)
            self._set_scale(snaps.values[-1], lo, hi)
            edges = self.scale.inverse(np.linspace(self.scale(lo), self.scale(hi), WATERFALL_BINS + 1))
            cache: dict[int, np.ndarray] = {}
            cols = []
            for i in idx:
                if i not in cache:
                    cache[i] = rebin(snaps.values[i], edges)
                cols.append(cache[i])
            y0, height = float(self.scale(lo)), float(self.scale(hi) - self.scale(lo))
        else:
            cols = [np.asarray(snaps.values[i], dtype=float).reshape(-1) for i in idx]
            y0, height = 0.0, float(cols[0].size)
        img = np.stack(cols, axis=1)  # rows = bins/items, cols = steps
        if self.log_colour:
            with np.errstate(divide="ignore", invalid="ignore"):
                img = np.where(img > 0, np.log10(np.abs(img) + (img <= 0)), np.nan)
        self.data = img
        finite = img[np.isfinite(img)]
        vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        if vmax <= vmin:
            vmax = vmin + 1.0
        # Empty bins (NaN) go below the colour range: drawn in the map's darkest colour.
        self.image.setImage(np.nan_to_num(img, nan=vmin), autoLevels=False)
        self.colourbar.setLevels((vmin, vmax))
        if (vmin, vmax) != self._levels:
            self._levels = (vmin, vmax)
            textfit.fit_colourbar(self.colourbar)
        x0 = float(steps[0])
        self.image.setRect(pg.QtCore.QRectF(x0 - dx / 2, y0, dx * n_cols, height))
        self._draw_reference()

    def _set_scale(self, hist: np.ndarray, lo: float, hi: float) -> None:
        scale = SymlogScale.for_bins(hist, lo, hi) if self.is_histogram else SymlogScale(0.0)
        if scale.c != self.scale.c:
            self.scale = scale
            axis = self.item.getAxis("left")
            axis.setTicks(None if scale.c == 0 else [scale.ticks(lo, hi)])
            unit = self.streams[self.stream].units
            text = self.stream + (f" [{unit}]" if unit else "") + (", symmetric-log axis" if scale.c else "")
            self.item.setLabel("left", html.escape(text), color=style.FOREGROUND)

    def _draw_reference(self) -> None:
        """The reference scalar (e.g. 2/η) as a white dashed line over the image."""
        snaps = self.snaps.get(self.shown_run(), self.reference) if self.reference else None
        if snaps is None or len(snaps) == 0:
            self._ref_curve.setData([], [])
            self._ref_text.hide()
            return
        x = np.asarray(snaps.steps, dtype=float)
        raw = np.array([float(np.asarray(v).reshape(-1)[0]) for v in snaps.values])
        y = self.scale(raw) if self.is_histogram else raw
        self._ref_curve.setData(x, y, connect="finite")
        self._ref_text.setText(f"{self.reference} = {raw[-1]:.4g}")
        self._ref_end = (float(x[-1]), float(y[-1]))
        self._ref_text.setVisible(bool(np.isfinite(y[-1])))
        self.place_reference_badge()

    def _draw_event(self, event: Event) -> None:
        super()._draw_event(event)
        self.place_reference_badge()

    def _draw_cursor(self, step: int | None) -> None:
        super()._draw_cursor(step)
        self.place_reference_badge()

    def place_reference_badge(self, *_: object) -> None:
        """Put the reference's name at the end of its line, inside the plot and uncrossed.

        Above the line's end (below it when there is no room above), its right edge just
        left of the end; moved further left while a marker (the replay cursor at the last
        step, an event) would cross it.
        """
        badge, end = self._ref_text, self._ref_end
        vb = self.item.getViewBox()
        if end is None or not badge.isVisible() or vb.width() <= 0:
            return
        box = vb.sceneBoundingRect()
        size = badge.textItem.boundingRect()
        p = vb.mapViewToScene(QtCore.QPointF(*end))
        right = min(p.x() - 4, box.right() - 2)
        lines = [*self._event_lines, *([self._cursor_line] if self._cursor_line is not None else [])]
        marks = sorted(
            (ln.mapToScene(QtCore.QPointF(0, 0)).x() for ln in lines if ln.isVisible()), reverse=True
        )
        for mx in marks:  # right to left: each marker in the way pushes the badge past it
            if right - size.width() - 3 <= mx <= right + 3:
                right = mx - 5
        right = max(right, box.left() + size.width() + 2)
        top = p.y() - size.height() - 2 if p.y() - size.height() - 2 >= box.top() else p.y() + 2
        top = min(max(top, box.top() + 1), box.bottom() - size.height() - 1)
        badge.setAnchor((1, 0))
        badge.setPos(vb.mapSceneToView(QtCore.QPointF(right, top)))

    def x_pos(self, step: float) -> float | None:
        # An image is drawn on a linear step axis; log_x is not applied to waterfalls.
        return float(step)


class SymlogScale:
    """y ↦ sign(y)·log10(1 + |y|/c): linear within ±c, logarithmic beyond (identity if c = 0).

    Spectra binned finely near 0 and logarithmically beyond (a bulk at 0 and outliers
    decades away) lose their bulk on a linear axis; on this one both show.
    """

    def __init__(self, c: float) -> None:
        self.c = float(c)

    @classmethod
    def for_bins(cls, hist: np.ndarray, lo: float, hi: float) -> SymlogScale:
        """A symlog scale when the bins' widths span more than a factor 50, else identity."""
        widths = np.asarray(hist[1], dtype=float) - np.asarray(hist[0], dtype=float)
        widths = widths[widths > 0]
        if widths.size < 2 or widths.max() < 50 * widths.min():
            return cls(0.0)
        # Linear part of the size of the finer bins, but never below 1e-4 of the range:
        # a grid that refines down to round-off would spend the axis on nothing.
        c = max(float(np.percentile(widths, 25)), 1e-4 * max(abs(lo), abs(hi)))
        return cls(float(f"{c:.1g}"))

    def __call__(self, y: np.ndarray | float) -> np.ndarray:
        y = np.asarray(y, dtype=float)
        if self.c == 0:
            return y
        return np.sign(y) * np.log10(1.0 + np.abs(y) / self.c)

    def inverse(self, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=float)
        if self.c == 0:
            return t
        return np.sign(t) * self.c * (10.0 ** np.abs(t) - 1.0)

    def ticks(self, lo: float, hi: float) -> list[tuple[float, str]]:
        """Tick positions and labels: 0 and ±10^k from c up to the range's ends."""
        out = [(0.0, "0")] if lo <= 0 <= hi else []
        k = math.ceil(math.log10(self.c))
        while 10.0**k <= max(abs(lo), abs(hi)) * 1.0001:
            v = 10.0**k
            text = f"{v:g}"
            for sv in (v, -v):
                if lo <= sv <= hi:
                    out.append((float(self(sv)), ("−" + text) if sv < 0 else text))
            k += 1
        return out


def _occupied_range(values: list[np.ndarray]) -> tuple[float, float]:
    """Smallest and largest edge of the bins that hold any weight, over all frames."""
    lo, hi = math.inf, -math.inf
    for v in values:
        w = np.nan_to_num(np.asarray(v[2], dtype=float))
        full = np.nonzero(w > 0)[0]
        if full.size:
            lo = min(lo, float(v[0][full[0]]))
            hi = max(hi, float(v[1][full[-1]]))
    if not math.isfinite(lo):
        lo = min(float(v[0].min()) for v in values)
        hi = max(float(v[1].max()) for v in values)
    if not hi > lo:
        hi = lo + 1.0
    return lo, hi


def rebin(hist: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Mass of a ``(3, B)`` histogram falling in each bin of ``edges`` (uniform within a bin).

    Parameters
    ----------
    hist
        Rows: left edges, right edges, weight (treated as the bin's mass).
    edges
        Increasing edges of the target grid, ``G + 1`` values.

    Returns
    -------
    Array of ``G`` masses; the total is preserved for the part inside ``edges``.
    """
    left, right, weight = (np.asarray(r, dtype=float) for r in hist)
    width = np.maximum(right - left, 1e-300)
    # Overlap of every source bin with every target bin: B x G, cheap for spectra (B, G ~ 100).
    lo = np.maximum(left[:, None], edges[None, :-1])
    hi = np.minimum(right[:, None], edges[None, 1:])
    overlap = np.clip(hi - lo, 0.0, None) / width[:, None]
    zero_width = right <= left  # a delta (e.g. an exact eigenvalue): put it in its target bin
    if zero_width.any():
        j = np.clip(np.searchsorted(edges, left[zero_width], side="right") - 1, 0, len(edges) - 2)
        overlap[zero_width] = 0.0
        overlap[np.nonzero(zero_width)[0], j] = 1.0
    return np.nan_to_num(weight) @ overlap
