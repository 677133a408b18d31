"""``LinesView``: scalar and vector streams over steps, several series in one plot.

Hovering the plot shows every series' value at the step under the cursor; a smoothing
control draws a debiased EMA (TensorBoard's) computed on the full-resolution rows as
they arrive, before any thinning, so the smoothed past never changes when more data
comes (tensorboard#1518). With several seeds of one preset open, a band (mean ± s.d.
across the seeds, per series) is drawn over the faded runs; the tool row's "band"
button turns it off.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtGui, QtWidgets

from dynlab.frames import Stream
from dynlab.viewspec import ViewSpec

from . import style, textfit
from .buffers import PeakPyramid, SeriesBuffer
from .follow import RangeFollower
from .plotview import PlotView
from .seedband import RUN_OPACITY_UNDER_BAND, BandItems, seed_band

#: EMA weight of the smoothed line (TensorBoard's slider at 0.9).
SMOOTH_WEIGHT = 0.9
#: Rows kept per series before the oldest half is decimated 2:1 (min/max pairs).
BUFFER_CAP = 1 << 20


#: Opacity of a ghost run's curves (a branch's parent, drawn behind the branch).
GHOST_OPACITY = 0.3

#: Series longer than this are drawn without antialiasing (see ``_redraw``).
ANTIALIAS_MAX_POINTS = 20_000


class _Series:
    """One run's buffer of one stream and the curves drawing its columns."""

    def __init__(self, buffer: SeriesBuffer) -> None:
        self.buffer = buffer
        self.raw: list[pg.PlotDataItem] = []
        self.smooth: list[pg.PlotDataItem] = []
        self.drawn_n = -1  # rows drawn at the last refresh (skip unchanged series)
        self.pyramids: tuple[PeakPyramid, PeakPyramid | None] | None = None  # made when long
        self.drawn: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None = None  # handed to the curves


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
    log_toggles = True

    def __init__(
        self, view: ViewSpec, streams: Mapping[str, Stream], parent: QtWidgets.QWidget | None = None
    ) -> None:
        #: EMA weight of the smoothed lines (0 = off); the preset's ``smooth`` turns it on
        self.smooth_weight = SMOOTH_WEIGHT if view.smooth else 0.0
        super().__init__(view, streams, parent)
        self.item.setLogMode(x=view.log_x, y=view.log_y)
        self._build_smoothing_control()
        self._build_hover()
        self.legend = style.add_legend(self.item, self.text_scale)
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
        self._bands: dict[tuple[str, int], BandItems] = {}
        self._band_stamp: dict[str, tuple[int, ...]] = {}  # rows per seed when last computed
        self._band_choice: bool | None = None  # the user's toggle; None: on with >= 2 seeds
        self._legend_key: tuple = ()
        self._legend_samples: list[pg.PlotDataItem] = []
        self.band_button = self.tool_button(
            "band",
            "Mean ± s.d. across the seeds of this preset (aligned by step: only steps every seed has)",
            self.set_band,
            toggle=True,
            index=2,  # after the smoothing box
        )
        self.band_button.setVisible(False)
        # Re-place the legend when the axes change (autorange after new data, zoom, resize).
        vb = self.item.getViewBox()
        vb.sigRangeChanged.connect(self._place_legend)
        vb.sigResized.connect(self._place_legend)

        vb.sigXRangeChanged.connect(self._on_x_range_changed)
        self._follower = RangeFollower(vb)
        self._legend_rows = 0  # rows in the plot when the legend was last placed

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
            ema = self.smooth_weight if self.smooth_weight > 0 and name != self.reference else None
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
            # Each run's reference in its own colour and dash: seeds added with "+ Seed"
            # (or overlaid recordings) each keep a threshold of their own.
            pen = style.reference_pen(r)
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
        if run in self.ghosts:
            for curve in (*series.raw, *series.smooth):
                curve.setOpacity(GHOST_OPACITY)

    def set_ghost(self, run_id: str, ghost: bool = True) -> None:
        super().set_ghost(run_id, ghost)
        for (run, _), series in self._series.items():
            if run == run_id:
                for curve in (*series.raw, *series.smooth):
                    curve.setOpacity(GHOST_OPACITY if ghost else 1.0)

    def _clear_data(self) -> None:
        for series in self._series.values():
            for curve in (*series.raw, *series.smooth):
                self.item.removeItem(curve)
        self._series.clear()
        self._remove_bands()
        self.legend.clear()
        self._legend_key = ()

    # ------------------------------------------------------------------ seed band
    def set_seed_runs(self, runs: Sequence[str]) -> None:
        super().set_seed_runs(runs)
        self.band_button.setVisible(len(self.seed_runs) >= 2)
        self._sync_band_button()
        self._band_stamp.clear()

    def band_shown(self) -> bool:
        """Whether the band is drawn: on with two or more seeds unless the user turned it off."""
        return len(self.seed_runs) >= 2 and self._band_choice is not False

    def set_band(self, on: bool) -> None:
        """Show or hide the seed band (the runs are drawn full again when it is off)."""
        self._band_choice = bool(on)
        self._sync_band_button()
        self._band_stamp.clear()
        self._dirty = True
        self.refresh()

    def _sync_band_button(self) -> None:
        self.band_button.blockSignals(True)
        self.band_button.setChecked(self.band_shown())
        self.band_button.blockSignals(False)

    def band_data(self, name: str, k: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """``(steps, mean, s.d.)`` of column ``k`` of a stream across the seeds, as drawn (or None)."""
        items = self._bands.get((name, k))
        if items is None or items.band is None:
            return None
        b = items.band
        return b.steps.copy(), b.mean.copy(), b.sd.copy()

    def _draw_bands(self) -> None:
        if not self.band_shown():
            if self._bands:
                self._remove_bands()
                self._fade_seed_runs(False)
            return
        for name in self.stream_names:
            parts = [self._series.get((r, name)) for r in self.seed_runs]
            seeds = [p.buffer for p in parts if p is not None and p.buffer.n]
            stamp = tuple(b.n for b in seeds)
            if len(seeds) < 2 or self._band_stamp.get(name) == stamp:
                continue
            self._band_stamp[name] = stamp
            labels = self.series_names(name)
            for k in range(seeds[0].width):
                # With smoothing on, the band spreads the smoothed runs (what the eye compares).
                cols = [(b.ema if b.ema is not None else b.values)[:, k] for b in seeds]
                band = seed_band([b.steps for b in seeds], cols)
                items = self._bands.get((name, k))
                if items is None:
                    c = self._colour_of.get((name, k), k)
                    label = labels[k] if k < len(labels) else ""
                    if self.n_series > style.RAMP_ABOVE and c not in (0, self.n_series - 1):
                        label = ""
                    items = BandItems(
                        self.item,
                        c,
                        self.n_series,
                        (label + (" (EMA)" if self.smooth_weight > 0 else "")) if label else None,
                    )
                    self._bands[(name, k)] = items
                items.set_data(band, self.log_y)
        self._fade_seed_runs(True)

    def _fade_seed_runs(self, fade: bool) -> None:
        """Under a band the single seeds are drawn faint (the legend then names the band)."""
        for (run, _), series in self._series.items():
            if run in self.seed_runs and run not in self.ghosts:
                for curve in (*series.raw, *series.smooth):
                    curve.setOpacity(RUN_OPACITY_UNDER_BAND if fade else 1.0)

    def _remove_bands(self) -> None:
        for items in self._bands.values():
            items.remove()
        self._bands.clear()
        self._band_stamp.clear()

    # ------------------------------------------------------------------ legend
    def _plain_entries(self) -> list[tuple[pg.PlotDataItem, str]]:
        """One entry per named curve (``sgd [run]``), the band's means instead of banded seeds."""
        banded = set(self.seed_runs) if self._bands else set()
        out = [
            (curve, curve.name())
            for (run, _), series in self._series.items()
            if run not in banded
            for curve in (*series.raw, *series.smooth)
            if curve.name()
        ]
        out += [(b.mean, b.mean.name()) for b in self._bands.values() if b.mean.name()]
        if self._bands:
            out.append(self._band_entry())
        return out

    def _band_entry(self) -> tuple[pg.PlotDataItem, str]:
        """The legend line that says what the bold lines and the shading are."""
        n = len([r for r in self.seed_runs if r in self._run_data])
        sample = pg.PlotDataItem(pen=pg.mkPen("#555555", width=2.2))
        return sample, f"mean ± s.d. over {n} seeds"

    def _factored_entries(self) -> list[tuple[pg.PlotDataItem, str]]:
        """One entry per series (its colour) and one per run (its dash): 5 + 3, not 5 x 3."""
        smooth = self.smooth_weight > 0
        out: list[tuple[pg.PlotDataItem, str]] = []
        seen: set[int] = set()
        for _, name in self._series:
            if name == self.reference:
                continue
            for k, label in enumerate(self.series_names(name)):
                c = self._colour_of.get((name, k), k)
                if c in seen or (self.n_series > style.RAMP_ABOVE and c not in (0, self.n_series - 1)):
                    continue
                seen.add(c)
                pen = style.series_pen(c, 0, width=2.0 if smooth else 1.5, n=self.n_series)
                out.append((pg.PlotDataItem(pen=pen), label + (" (EMA)" if smooth else "")))
        banded = set(self.seed_runs) if self._bands else set()
        grey = pg.mkColor("#555555")
        runs = [r for r in self.runs if r in self._run_data and r not in banded]
        for r in runs:
            pen = pg.mkPen(grey, width=1.5, style=style.RUN_STYLES[self.run_index(r) % len(style.RUN_STYLES)])
            item = pg.PlotDataItem(pen=pen)
            if r in self.ghosts:
                item.setOpacity(GHOST_OPACITY)
            out.append((item, html.escape(self.runs.get(r) or r or "run", quote=False)))
        if self._bands:
            out.append(self._band_entry())
        for (run, name), series in self._series.items():
            if name == self.reference and run not in banded:
                out += [(curve, curve.name()) for curve in series.raw if curve.name()]
        return out

    def _sync_legend(self) -> None:
        """Rebuild the legend when what it lists changed (a run, a series, the band).

        Overlaid runs list each series once (colour) and each run once (dash) when that
        takes no more entries than naming every series of every run (``sgd [run]``).
        """
        plain = self._plain_entries()
        with_data = [r for r in self.runs if r in self._run_data]
        entries = plain
        if len(with_data) > 1:
            # Factored whenever it lists no more entries (its entries are shorter too).
            per_run = self._factored_entries()
            if len(per_run) <= len(plain):
                entries = per_run
        factored = entries is not plain
        key = (factored, tuple(name for _, name in entries), tuple(id(i) for i, _ in plain))
        if key == self._legend_key and len(self.legend.items) == len(entries):
            return
        self._legend_key = key
        self._legend_samples = [item for item, _ in entries]  # unattached samples live here
        self.legend.clear()
        for item, name in entries:
            self.legend.addItem(item, name)
        style.scale_legend(self.legend, self.text_scale)

    def set_log(self, x: bool | None = None, y: bool | None = None) -> None:
        self._band_stamp.clear()  # a band's lower edge is drawn differently on a log axis
        super().set_log(x, y)

    # ------------------------------------------------------------------ drawing
    def _redraw(self) -> None:
        for series in self._series.values():
            buf = series.buffer
            if buf.n == series.drawn_n:
                continue
            series.drawn_n = buf.n
            x, values, ema = self._rows_to_draw(series)
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
        self._draw_bands()
        self._sync_legend()
        # One entry repeats the axis label: show the legend only when it tells series apart.
        self.legend.setVisible(len(self.legend.items) > 1)
        self._place_legend()

    def _rows_to_draw(self, series: _Series) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The rows of a series to hand to its curves: all of them when few, else a min/max
        summary cut to the visible steps at about two blocks per pixel (``PeakPyramid``).

        pyqtgraph's own peak downsampling walks every row on every redraw; the summary is
        kept up to date incrementally, so a redraw costs what the plot's width costs.
        A log step axis gets every row (its pixels cover uneven step ranges).
        """
        buf = series.buffer
        vb = self.item.getViewBox()
        pixels = int(vb.width()) if vb.width() > 0 else 1000
        if self.log_x or buf.n <= 4 * pixels or getattr(self, "_exporting", False):
            series.drawn = (buf.steps, buf.values, buf.ema)
            return series.drawn
        if series.pyramids is None:
            series.pyramids = (PeakPyramid(buf), PeakPyramid(buf, ema=True) if buf.ema is not None else None)
        raw, smooth = series.pyramids
        x0, x1 = (-np.inf, np.inf) if self._following_steps() else vb.viewRange()[0]
        x, values = raw.lod(x0, x1, pixels)
        ema = smooth.lod(x0, x1, pixels)[1] if smooth is not None else None
        series.drawn = (x, values, ema)
        return series.drawn

    def redraw_all(self) -> None:
        exporting = getattr(self, "_exporting", False)
        for series in self._series.values():
            series.drawn_n = -1
            for curve in (*series.raw, *series.smooth):
                if getattr(curve, "segmented", False):  # a vector export holds one path per curve
                    curve.curve.setSegmentedLineMode("off" if exporting else "on")
        super().redraw_all()

    def _following_steps(self) -> bool:
        vb = self.item.getViewBox()
        return self._follower.follow[0] or vb.state["autoRange"][0] is not False

    def refresh(self) -> None:
        """Redraw what changed, then let the axes follow the data (in steps: ``RangeFollower``)."""
        if not self._dirty:
            return
        super().refresh()
        xs, ys = [], []
        for series in self._series.values():
            if series.drawn is not None and len(series.drawn[0]):
                x, values, ema = series.drawn
                xs.append(x[[0, -1]])
                ys.append(values)
                if ema is not None and series.smooth:
                    ys.append(ema)
        if xs:
            self._follower.update(xs, ys, self.log_x, self.log_y)

    def clear(self) -> None:
        super().clear()
        self._legend_rows = 0
        self._follower.reset()

    def _on_x_range_changed(self, *_: object) -> None:
        """A zoom or pan (the step axis no longer follows the data): re-cut long series to it."""
        if self._following_steps() or self.log_x:
            return
        long = [s for s in self._series.values() if s.pyramids is not None]
        if long:
            for s in long:
                s.drawn_n = -1
            self._dirty = True
            self.refresh()

    def _place_legend(self, *args: object) -> None:
        # Called with arguments by a range change or a resize: always re-placed. Called after
        # a redraw: only once the rows grew by a twentieth since the last placement, since
        # the placement reads every curve (about 1 ms a view, 30 times a second otherwise).
        rows = sum(s.buffer.n for s in self._series.values())
        if not args and self._legend_rows and rows < 1.05 * self._legend_rows:
            return
        self._legend_rows = rows
        vb = self.item.getViewBox()
        if self.legend.isVisible():
            textfit.fit_legend_columns(self.legend, vb.width(), vb.height())
        self._legend_corner = style.place_legend(self.legend, self.item, self._legend_corner)
        self.place_event_labels()

    def _apply_text_scale(self) -> None:
        super()._apply_text_scale()
        style.scale_legend(self.legend, self.text_scale)
        self.hover_label.setStyleSheet(self._hover_style())
        self.smooth_box.setStyleSheet(f"font-size: {style.pt(style.SMALL_PT, self.text_scale)}pt;")
        self._place_legend(True)  # text size changed: place it again whatever the rows did

    def series_data(self, name: str, run: str = "") -> tuple[np.ndarray, np.ndarray]:
        """Buffered ``(steps, values)`` of a stream (values ``(n, width)``), for tests and export."""
        series = self._series.get((run, name))
        if series is None:
            return np.empty(0), np.empty((0, 1))
        return series.buffer.steps.copy(), series.buffer.values.copy()

    def smoothed_data(self, name: str, run: str = "") -> tuple[np.ndarray, np.ndarray] | None:
        """Buffered ``(steps, ema)`` of a stream, or ``None`` when smoothing is off."""
        series = self._series.get((run, name))
        if series is None or series.buffer.ema is None:
            return None
        return series.buffer.steps.copy(), series.buffer.ema.copy()

    # ------------------------------------------------------------------ smoothing
    def _build_smoothing_control(self) -> None:
        self.smooth_box = _ToolSpin(self.text_scale)
        self.smooth_box.setRange(0.0, 0.999)
        self.smooth_box.setDecimals(3)
        self.smooth_box.setSingleStep(0.05)
        self.smooth_box.setPrefix("smooth ")
        self.smooth_box.setSpecialValueText("smooth off")
        self.smooth_box.setValue(self.smooth_weight)
        self.smooth_box.setToolTip(
            "EMA weight of a smoothed line drawn over the raw one (TensorBoard's slider; 0 = off).\n"
            "Computed on every recorded row as it arrives, so the smoothed past does not move."
        )
        self.smooth_box.setKeyboardTracking(False)
        self.smooth_box.valueChanged.connect(self.set_smoothing)
        self.toolbar.insertWidget(1, self.smooth_box)

    def set_smoothing(self, weight: float) -> None:
        """Draw a debiased EMA of weight ``weight`` over every series (0 turns it off).

        The EMA is recomputed from the buffered rows, which are full resolution unless
        the buffer has thinned a very long history (over ``BUFFER_CAP`` rows); new rows
        then extend it step by step.
        """
        weight = float(min(max(weight, 0.0), 0.999))
        if weight == self.smooth_weight:
            return
        self.smooth_weight = weight
        if self.smooth_box.value() != weight:
            self.smooth_box.blockSignals(True)
            self.smooth_box.setValue(weight)
            self.smooth_box.blockSignals(False)
        old = dict(self._series)
        self._clear_data()
        for (run, name), series in old.items():
            buf = series.buffer
            ema = weight if weight > 0 and name != self.reference else None
            new = _Series(SeriesBuffer(buf.width, BUFFER_CAP, ema))
            if buf.n:
                new.buffer.extend(buf.steps, buf.values)
            self._series[(run, name)] = new
            self._make_curves(run, name, new)
        self._dirty = True
        self.refresh()

    # ------------------------------------------------------------------ hover
    def _build_hover(self) -> None:
        # Plain text floating over the plot, beside the cursor; it never moves the layout.
        self.hover_label = QtWidgets.QLabel(self.plot)
        self.hover_label.setTextFormat(QtCore.Qt.TextFormat.PlainText)
        self.hover_label.setStyleSheet(self._hover_style())
        self.hover_label.setAttribute(QtCore.Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self.hover_label.hide()
        self._hover_line = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen("#888888", width=1))
        self._hover_line.setZValue(40)
        self._hover_line.hide()
        self.item.addItem(self._hover_line, ignoreBounds=True)
        self.plot.scene().sigMouseMoved.connect(self._on_mouse_moved)
        # The theory tooltip stays on the caption and title: over the data the values speak.
        self.plot.viewport().installEventFilter(self)

    def eventFilter(self, obj: QtCore.QObject, event: QtCore.QEvent) -> bool:  # noqa: N802 - Qt API
        if obj is self.plot.viewport():
            if event.type() == QtCore.QEvent.Type.Leave:
                self.hide_hover()
            elif event.type() == QtCore.QEvent.Type.ToolTip:
                pos = event.pos()
                # Event markers keep their own tooltips; nothing else pops up over the data.
                return not any(it.toolTip() for it in self.plot.items(pos) if it is not self._hover_line)
        return super().eventFilter(obj, event)

    def _hover_style(self) -> str:
        return (
            "QLabel { background: rgba(255, 255, 255, 225); color: #111; border: 1px solid #999;"
            f" padding: 2px 4px; font-family: monospace; font-size: {style.pt(style.SMALL_PT, self.text_scale)}pt; }}"
        )

    def hide_hover(self) -> None:
        self.hover_label.hide()
        self._hover_line.hide()

    def _on_mouse_moved(self, pos: QtCore.QPointF) -> None:
        vb = self.item.getViewBox()
        if not vb.sceneBoundingRect().contains(pos):
            self.hide_hover()
            return
        x = vb.mapSceneToView(pos).x()
        step = 10.0**x if self.log_x else x
        found = self.values_at(step)
        if found is None:
            self.hide_hover()
            return
        at, rows = found
        self.hover_label.setText(self.hover_text(at, rows))
        self.hover_label.adjustSize()
        xp = self.x_pos(at)
        if xp is not None:
            self._hover_line.setValue(xp)
            self._hover_line.show()
        # Beside the cursor, flipped to the other side near the right/bottom edge.
        p = self.plot.mapFromScene(pos)
        w, h = self.hover_label.width(), self.hover_label.height()
        left = p.x() + 14 if p.x() + 14 + w < self.plot.width() else p.x() - 14 - w
        top = min(max(0, p.y() + 14), max(0, self.plot.height() - h))
        self.hover_label.move(int(max(0, left)), int(top))
        self.hover_label.raise_()
        self.hover_label.show()

    def values_at(self, step: float) -> tuple[int, list[tuple[str, float, int, float | None]]] | None:
        """Every series' row at ``step``: the step snapped to the nearest recorded one, and
        ``(label, value, row_step, ema)`` per series (its newest row at or before that step;
        ``ema`` is None when smoothing is off). ``None`` when there is no data yet.
        """
        keys = [k for k, s in self._series.items() if s.buffer.n]
        if not keys:
            return None
        # Snap to the nearest step any series has, so the label reads one real step.
        best = None
        for k in keys:
            st = self._series[k].buffer.steps
            i = int(np.clip(np.searchsorted(st, step), 1, len(st) - 1)) if len(st) > 1 else 0
            cand = min((st[j] for j in {max(i - 1, 0), i}), key=lambda s: abs(s - step))
            if best is None or abs(cand - step) < abs(best - step):
                best = cand
        at = int(best)
        rows = []
        for run, name in keys:
            buf = self._series[(run, name)].buffer
            i = int(np.searchsorted(buf.steps, at, side="right")) - 1
            if i < 0:
                continue
            labels = [f"{name} (reference)"] if name == self.reference else self.series_names(name)
            for k in range(buf.width):
                label = (labels[k] if k < len(labels) else f"{name}[{k}]") + self.run_suffix(run)
                ema = None if buf.ema is None else float(buf.ema[i, k])
                rows.append((label, float(buf.values[i, k]), int(buf.steps[i]), ema))
        return at, rows

    @staticmethod
    def hover_text(at: int, rows: list[tuple[str, float, int, float | None]]) -> str:
        """Plain text: the step, then one line per series (NaN shown as NaN, never dropped)."""
        width = max((len(r[0]) for r in rows), default=0)
        vwidth = max((len(_fmt(r[1])) for r in rows), default=0)
        lines = [f"step {at:,}"]
        for label, value, row_step, ema in rows:
            text = f"{label:<{width}}  {_fmt(value):>{vwidth}}"  # monospace: the numbers line up
            if ema is not None:
                text += f"  (EMA {_fmt(ema)})"
            if row_step != at:
                text += f"  @{row_step:,}"
            lines.append(text)
        return "\n".join(lines)

    # ------------------------------------------------------------------ export
    def data_columns(self) -> tuple[list[str], list[np.ndarray]]:
        """``step`` and one column per series (and its EMA when smoothing), aligned by step."""
        keys = [k for k, s in self._series.items() if s.buffer.n]
        if not keys:
            return [], []
        steps = np.unique(np.concatenate([self._series[k].buffer.steps for k in keys]))
        header, cols = ["step"], [steps]
        for run, name in keys:
            buf = self._series[(run, name)].buffer
            labels = [f"{name} (reference)"] if name == self.reference else self.series_names(name)
            where = np.searchsorted(steps, buf.steps)
            for k in range(buf.width):
                label = (labels[k] if k < len(labels) else f"{name}[{k}]") + self.run_suffix(run)
                for suffix, data in (("", buf.values), (f" (EMA {self.smooth_weight:g})", buf.ema)):
                    if data is None:
                        continue
                    col = np.full(len(steps), np.nan)
                    col[where] = data[:, k]
                    header.append(label + suffix)
                    cols.append(col)
        return header, cols


def _fmt(v: float) -> str:
    return "NaN" if v != v else f"{v:.6g}"


class _ToolSpin(QtWidgets.QDoubleSpinBox):
    """A small spin box for the tool row that takes the wheel only when focused."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.setFocusPolicy(QtCore.Qt.FocusPolicy.StrongFocus)
        self.setStyleSheet(f"font-size: {style.pt(style.SMALL_PT, scale)}pt;")

    def wheelEvent(self, event: QtGui.QWheelEvent) -> None:  # noqa: N802 - Qt API
        if not self.hasFocus():
            event.ignore()
            return
        super().wheelEvent(event)
