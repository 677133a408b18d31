"""Reading a sweep: bands over seeds per grid point, and one summary number per trial.

Qt-free; the sweep window (``dynlab.ui.sweep``) draws what this computes. A sweep is a
folder with ``sweep.json`` and one recording per trial (see ``dynlab.sweep``); only
trials that finished (or diverged) and whose recordings open are read.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dynlab.engines.spec import Stream
from dynlab.recording import Recording, RecordingError
from dynlab.sweep import DONE, Manifest, Trial
from dynlab.sweepspec import Summary

#: Steps per band at most (a long recording's band is thinned; the eye sees ~1000 px).
BAND_MAX_POINTS = 20_000


@dataclass(frozen=True)
class Band:
    """One grid point of one stream: mean and s.d. over seeds at each step.

    ``n`` is how many seeds have a row at each step; ``sd`` is the sample standard
    deviation (0 where one seed). ``seeds`` holds each seed's own ``(label, steps, values)``.
    """

    label: str
    steps: np.ndarray
    mean: np.ndarray
    sd: np.ndarray
    n: np.ndarray
    seeds: tuple[tuple[str, np.ndarray, np.ndarray], ...]


@dataclass(frozen=True)
class Phase:
    """A summary over the grid: mean and s.d. over seeds per grid point.

    With one swept parameter ``mean`` has shape ``(len(xs),)``; with two, ``(len(ys), len(xs))``
    (rows: the second parameter). ``fired`` counts the seeds with a value (an event that
    never fired has none), ``total`` the seeds read. ``reference`` is the summary's
    reference stream reduced the same way (mean over seeds), ``boundary`` the value of
    ``x_name`` at which the boundary stream puts its line (``None`` without one).
    """

    summary: Summary
    x_name: str
    xs: tuple[Any, ...]
    y_name: str
    ys: tuple[Any, ...]
    mean: np.ndarray
    sd: np.ndarray
    fired: np.ndarray
    total: np.ndarray
    reference: np.ndarray | None = None
    boundary: float | None = None


def point_label(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


class Sweep:
    """A sweep folder, read lazily.

    Parameters
    ----------
    folder
        The folder holding ``sweep.json``. Raises ``SweepError`` when it is not a sweep.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.manifest = Manifest.load(self.folder)
        self._cache: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
        self._events: dict[str, list[Any]] = {}
        self._streams: dict[str, Stream] | None = None
        self._preset_text: str | None = None
        #: recordings that could not be opened, with the reason
        self.unreadable: dict[str, str] = {}
        self._checked: set[str] = set()

    # ------------------------------------------------------------------ what it holds
    @property
    def grid(self) -> dict[str, list[Any]]:
        return self.manifest.grid

    @property
    def points(self) -> list[dict[str, Any]]:
        """The grid points in manifest order."""
        seen: dict[str, dict[str, Any]] = {}
        for t in self.manifest.trials:
            seen.setdefault(json.dumps(t.params, sort_keys=True), t.params)
        return list(seen.values())

    def trials(self, params: dict[str, Any] | None = None) -> list[Trial]:
        """Trials that are done and readable, at ``params`` (or all)."""
        out = []
        for t in self.manifest.trials:
            if t.status not in DONE or (params is not None and t.params != params):
                continue
            if self._readable(t):
                out.append(t)
        return out

    def _readable(self, t: Trial) -> bool:
        if t.recording not in self._checked:
            rec = self._open(t)
            if rec is not None:
                rec.close()
            self._checked.add(t.recording)
        return t.recording not in self.unreadable

    @property
    def streams(self) -> dict[str, Stream]:
        """The streams of the first readable trial (every trial of a sweep has the same ones)."""
        if self._streams is None:
            self._streams = {}
            for t in self.manifest.trials:
                if t.status in DONE and (rec := self._open(t)) is not None:
                    with rec:
                        self._streams = rec.streams
                        self._preset_text = rec.preset_text
                    break
        return self._streams

    @property
    def preset_text(self) -> str:
        _ = self.streams
        return self._preset_text or ""

    def summaries(self) -> tuple[Summary, ...]:
        """The summaries the sweep's preset declares (from the text stored in its recordings)."""
        from dynlab.presets import PresetError, parse

        try:
            preset = parse(self.preset_text, name=self.manifest.preset, check_engine=False)
        except PresetError:
            return ()
        return preset.sweep.summaries if preset.sweep else ()

    def _open(self, t: Trial) -> Recording | None:
        if t.recording in self.unreadable:
            return None
        try:
            return Recording(self.folder / t.recording)
        except RecordingError as exc:
            self.unreadable[t.recording] = str(exc)
            return None

    def read(self, t: Trial, stream: str) -> tuple[np.ndarray, np.ndarray]:
        """Steps and values ``(rows, width)`` of one stream of one trial (cached)."""
        key = (t.recording, stream)
        if key not in self._cache:
            rec = self._open(t)
            if rec is None or stream not in rec.streams:
                steps, values = np.zeros(0, np.int64), np.zeros((0, 1))
            else:
                with rec:
                    steps, values = rec.read(stream)
            self._cache[key] = (steps, values.reshape(len(steps), -1))
        return self._cache[key]

    def events(self, t: Trial) -> list[Any]:
        if t.recording not in self._events:
            rec = self._open(t)
            self._events[t.recording] = [] if rec is None else rec.events()
            if rec is not None:
                rec.close()
        return self._events[t.recording]

    # ------------------------------------------------------------------ bands
    def band(self, stream: str, params: dict[str, Any], column: int = 0) -> Band:
        """Mean ± s.d. over the seeds of one grid point, on the union of their steps."""
        per = []
        for t in self.trials(params):
            steps, values = self.read(t, stream)
            if len(steps) and column < values.shape[1]:
                per.append((f"seed {t.seed}", steps, values[:, column]))
        if not per:
            empty = np.zeros(0)
            return Band(point_label(params), empty, empty, empty, empty, ())
        steps = np.unique(np.concatenate([s for _, s, _ in per]))
        if len(steps) > BAND_MAX_POINTS:
            steps = steps[:: math.ceil(len(steps) / BAND_MAX_POINTS)]
        table = np.full((len(per), len(steps)), np.nan)
        for i, (_, s, v) in enumerate(per):
            idx = np.searchsorted(s, steps)
            ok = (idx < len(s)) & (s[np.minimum(idx, len(s) - 1)] == steps)
            table[i, ok] = v[idx[ok]]
        n = np.sum(np.isfinite(table), axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            total = np.nansum(table, axis=0)
            mean = np.where(n > 0, total / np.maximum(n, 1), np.nan)
            dev = np.nansum((table - mean) ** 2, axis=0)
            sd = np.where(n > 1, np.sqrt(dev / np.maximum(n - 1, 1)), 0.0)
        return Band(point_label(params), steps, mean, sd, n, tuple(per))

    def bands(self, stream: str, column: int = 0) -> list[Band]:
        """One band per grid point, in grid order (points with no readable trial left out)."""
        out = [self.band(stream, p, column) for p in self.points]
        return [b for b in out if len(b.steps)]

    # ------------------------------------------------------------------ summaries
    def value(self, t: Trial, summary: Summary) -> float | None:
        """One trial's summary: a reduced stream value, or the step an event first fired
        (``None``: it never fired, or the stream is empty)."""
        if summary.event:
            for ev in self.events(t):
                if ev.kind == summary.event_kind and (
                    not summary.event_name or ev.payload.get("name") == summary.event_name
                ):
                    return float(ev.step)
            return None
        return self._reduce(t, summary.stream, summary.column, summary.reduce)

    def _reduce(self, t: Trial, stream: str, column: int, how: str) -> float | None:
        _, values = self.read(t, stream)
        if not len(values) or column >= values.shape[1]:
            return None
        v = values[:, column]
        v = v[np.isfinite(v)]
        if not len(v):
            return None
        if how == "max":
            return float(v.max())
        if how == "min":
            return float(v.min())
        if how == "median_tail":
            return float(np.median(v[-max(1, len(v) // 4) :]))
        return float(v[-1])

    def phase(self, summary: Summary, x: str | None = None) -> Phase:
        """The summary over the grid: a line (one swept parameter) or a heatmap (two).

        ``x`` picks the parameter on the x axis (default: the first of the grid); with more
        than two swept parameters the rest are averaged over with the seeds.
        """
        names = list(self.grid)
        if not names:
            raise ValueError("this sweep has no grid")
        x_name = x or (summary.boundary_param if summary.boundary_param in names else names[0])
        others = [n for n in names if n != x_name]
        y_name = others[0] if others else ""
        xs = tuple(self.grid[x_name])
        ys = tuple(self.grid[y_name]) if y_name else (None,)
        cells: dict[tuple[int, int], list[float | None]] = {}
        refs: dict[tuple[int, int], list[float]] = {}
        bounds: list[float] = []
        for t in self.trials():
            ix = xs.index(t.params[x_name])
            iy = ys.index(t.params[y_name]) if y_name else 0
            cells.setdefault((iy, ix), []).append(self.value(t, summary))
            if summary.reference:
                r = self._reduce(t, summary.reference, 0, summary.reduce)
                if r is not None:
                    refs.setdefault((iy, ix), []).append(r)
            if summary.boundary:
                b = self._reduce(t, summary.boundary, 0, "final")
                if b is not None:
                    bounds.append(b)
        shape = (len(ys), len(xs))
        mean, sd = np.full(shape, np.nan), np.full(shape, np.nan)
        fired, total = np.zeros(shape, int), np.zeros(shape, int)
        ref = np.full(shape, np.nan) if summary.reference else None
        for (iy, ix), vals in cells.items():
            got = np.array([v for v in vals if v is not None], dtype=float)
            total[iy, ix], fired[iy, ix] = len(vals), len(got)
            if len(got):
                mean[iy, ix] = got.mean()
                sd[iy, ix] = got.std(ddof=1) if len(got) > 1 else 0.0
            if ref is not None and refs.get((iy, ix)):
                ref[iy, ix] = float(np.mean(refs[(iy, ix)]))
        if not y_name:
            mean, sd, fired, total = mean[0], sd[0], fired[0], total[0]
            ref = None if ref is None else ref[0]
        boundary = float(np.median(bounds)) if bounds else None
        return Phase(summary, x_name, xs, y_name, ys if y_name else (), mean, sd, fired, total, ref, boundary)

    def final_value_summary(self, stream: str, column: int = 0) -> Summary:
        """A summary the preset need not declare: a stream's final value."""
        return Summary(name=f"final {stream}", stream=stream, column=column)


def stream_columns(stream: Stream) -> Sequence[str]:
    """Column names of a stream a band can show (one per vector entry; a scalar has one)."""
    if stream.kind == "vector":
        width = int(np.prod(stream.shape)) if stream.shape else 1
        return list(stream.labels) if len(stream.labels) == width else [f"[{i}]" for i in range(width)]
    return [stream.name]
