"""Recent recordings: where they are, what each holds, and a thumbnail of the run itself.

A recording's root attributes say which preset it ran, when, how far and how it ended
(``docs/recording-format.md``); they are read with :class:`dynlab.recording.Recording`
(read-only) and shown as plain text. The thumbnail draws the recording's own first
loss-like scalar (else vector, up to five series) from a strided read (a few hundred rows), so it costs milliseconds even
for a long run. Both are cached by the file's size and modification time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from PySide6 import QtCore, QtGui

from dynlab.recording import Recording, RecordingError

#: Points drawn in a thumbnail (a strided read of the stream).
THUMB_POINTS = 400
THUMB_SIZE = (96, 40)


@dataclass(frozen=True)
class RecordingInfo:
    """What the recent list shows about one recording."""

    path: str
    preset: str = ""
    started: str = ""
    steps: int | None = None
    status: str = ""
    error: str = ""

    def summary(self) -> str:
        """One plain-text line: preset · date · steps · status (or what is wrong with the file)."""
        if self.error:
            return f"unreadable: {self.error}"
        parts = [self.preset or "unknown preset"]
        if self.started:
            parts.append(self.started)
        if self.steps is not None:
            parts.append(f"{self.steps:,} steps")
        if self.status:
            parts.append(self.status)
        return " · ".join(parts)


_info_cache: dict[tuple[str, int, int], RecordingInfo] = {}
_thumb_cache: dict[tuple[str, int, int, int, int], QtGui.QImage | None] = {}


def _key(path: str) -> tuple[str, int, int] | None:
    try:
        st = Path(path).stat()
    except OSError:
        return None
    return (str(path), st.st_mtime_ns, st.st_size)


def _local_time(iso: str) -> str:
    try:
        t = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    if t.tzinfo is not None:
        t = t.astimezone()  # the user's clock, not UTC
    return t.strftime("%Y-%m-%d %H:%M")


def read_info(path: str) -> RecordingInfo:
    """Preset, start time, steps and status of a recording (never raises)."""
    key = _key(path)
    if key is None:
        return RecordingInfo(path, error="missing")
    if key in _info_cache:
        return _info_cache[key]
    try:
        with Recording(path) as rec:
            a = rec.attrs
            last = a.get("last_step")
            if last is None:
                rng = rec.step_range()
                last = None if rng is None else rng[1]
            info = RecordingInfo(
                path,
                preset=str(a.get("preset_name") or a.get("engine") or ""),
                started=_local_time(str(a.get("started_at", ""))),
                steps=None if last is None or int(last) < 0 else int(last),
                status=str(a.get("status", "")),
            )
    except (RecordingError, OSError, ValueError, KeyError) as exc:
        info = RecordingInfo(path, error=str(exc).replace(str(path), "").strip(": ") or type(exc).__name__)
    _info_cache[key] = info
    return info


def _thumb_stream(streams: dict) -> str | None:
    """The stream a thumbnail draws: a loss-like scalar, else a loss-like vector, else the first of either."""
    kinds = ("scalar", "vector")
    named = [(n, s.kind) for n, s in streams.items() if s.kind in kinds and n != "probe_seconds"]
    for kind in kinds:
        for n, k in named:
            if k == kind and "loss" in n:
                return n
    for kind in kinds:
        for n, k in named:
            if k == kind:
                return n
    return None


def _strided(path: str, name: str) -> np.ndarray | None:
    """About ``THUMB_POINTS`` evenly spaced rows of a stream, shape ``(n, columns)``."""
    import h5py

    try:
        f = h5py.File(path, "r", libver="latest", swmr=True)
    except OSError:
        f = h5py.File(path, "r")
    with f:
        ds = f["streams"][name].get("value")
        if ds is None or ds.shape[0] == 0:
            return None
        stride = max(1, ds.shape[0] // THUMB_POINTS)
        rows = np.asarray(ds[::stride], dtype=np.float64)
        return rows.reshape(rows.shape[0], -1)


def thumbnail(path: str, size: tuple[int, int] = THUMB_SIZE) -> QtGui.QImage | None:
    """The recording's first loss-like scalar as a small line drawing, or None if it has none."""
    key = _key(path)
    if key is None:
        return None
    ckey = (*key, *size)
    if ckey in _thumb_cache:
        return _thumb_cache[ckey]
    img = None
    try:
        with Recording(path) as rec:
            name = _thumb_stream(rec.streams)
        y = None if name is None else _strided(path, name)
        if y is not None:
            img = draw_line(y, size, log=_wants_log(y))
    except (RecordingError, OSError, KeyError, ValueError):
        img = None
    _thumb_cache[ckey] = img
    return img


def _wants_log(y: np.ndarray) -> bool:
    ok = y[np.isfinite(y)]
    return bool(len(ok)) and ok.min() > 0 and ok.max() / ok.min() > 100


#: Series colours of a thumbnail (the views' palette; at most this many columns are drawn).
THUMB_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd")


def draw_line(y: np.ndarray, size: tuple[int, int], *, log: bool = False) -> QtGui.QImage | None:
    """``y`` (``(n,)`` or ``(n, k)``: k series) drawn as lines on white; NaNs leave gaps.

    Returns None if nothing is finite.
    """
    w, h = size
    y = np.asarray(y, dtype=np.float64)
    y = y.reshape(len(y), -1)[:, : len(THUMB_COLOURS)]
    if log:
        with np.errstate(divide="ignore", invalid="ignore"):
            y = np.log10(y)
    finite = np.isfinite(y)
    if not finite.any():
        return None
    lo, hi = float(y[finite].min()), float(y[finite].max())
    span = hi - lo if hi > lo else 1.0
    img = QtGui.QImage(w, h, QtGui.QImage.Format.Format_RGB32)
    img.fill(QtGui.QColor("white"))
    p = QtGui.QPainter(img)
    try:
        p.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing)
        p.setPen(QtGui.QPen(QtGui.QColor("#cccccc"), 1))
        p.drawRect(0, 0, w - 1, h - 1)
        n = len(y)
        for k in range(y.shape[1]):
            p.setPen(QtGui.QPen(QtGui.QColor(THUMB_COLOURS[k]), 1.4))
            path = QtGui.QPainterPath()
            drawing = False
            for i, v in enumerate(y[:, k].tolist()):
                if not math.isfinite(v):
                    drawing = False
                    continue
                pt = QtCore.QPointF(3 + (w - 6) * i / max(n - 1, 1), h - 4 - (h - 8) * (v - lo) / span)
                if drawing:
                    path.lineTo(pt)
                else:
                    path.moveTo(pt)
                    drawing = True
            p.drawPath(path)
    finally:
        p.end()
    return img


def find_recordings(folder: Path, limit: int = 30) -> list[str]:
    """The newest ``*.h5`` files in ``folder`` (newest first)."""
    try:
        files = [p for p in folder.glob("*.h5") if p.is_file()]
    except OSError:
        return []
    files.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    return [str(p) for p in files[:limit]]
