"""HDF5 recording: one file per run, one writer, readable while written (SWMR).

Layout (documented for other tools in ``docs/recording-format.md``)::

    /                       attrs: format_version, engine, engine_version, preset, preset_name,
                                   seed, device, dynlab_version, started_at, hyperparameters,
                                   status, ended_at, last_step
    /streams/<name>/step    int64 (rows,)            increasing step of each recorded row
    /streams/<name>/value   float (rows, *shape)     one row per recorded step
                            attrs: kind, units, description, theory, [labels|rows|cols|groups]
    /events/step, /events/time, /events/kind, /events/payload (JSON text)

The writer buffers rows in memory and appends them at most every ``flush_interval``
seconds, then flushes the file: a crash loses at most the last interval.
"""

from __future__ import annotations

import json
import time
from bisect import bisect_right
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from dynlab import __version__, checkpoint
from dynlab.frames import Event, Frame, Stream

FORMAT_VERSION = 1
_STR = h5py.string_dtype("utf-8")
_LABEL_ATTRS = ("labels", "rows", "cols", "groups")


class RecordingError(RuntimeError):
    """A recording that cannot be written or read; the message says which file and why."""


class Recorder:
    """Writes frames and events of one run to an HDF5 file.

    Parameters
    ----------
    path
        The file to create (overwritten).
    streams
        The engine instance's streams. Histogram and points streams should declare their
        full shape; if one does not, its dataset is created from its first frame and
        SWMR mode starts once every stream has a dataset.
    meta
        Root attributes: ``engine``, ``engine_version``, ``preset`` (TOML text),
        ``preset_name``, ``seed``, ``device``, ``hyperparameters`` (dict).
    flush_interval
        Seconds between appends/flushes.
    """

    def __init__(
        self,
        path: str | Path,
        streams: Sequence[Stream],
        meta: Mapping[str, Any],
        *,
        flush_interval: float = 1.0,
    ) -> None:
        self.path = str(path)
        self.flush_interval = float(flush_interval)
        self._streams = {s.name: s for s in streams}
        self._pending: dict[str, list[tuple[int, np.ndarray]]] = {n: [] for n in self._streams}
        self._pending_events: list[Event] = []
        self._last_flush = time.monotonic()
        self._swmr = False
        self.last_step = -1
        try:
            self._f = h5py.File(self.path, "w", libver="latest")
        except OSError as exc:
            raise RecordingError(f"cannot create recording {self.path}: {exc}") from None
        f = self._f
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["dynlab_version"] = __version__
        f.attrs["started_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        f.attrs["status"] = "recording"
        for key, value in meta.items():
            f.attrs[key] = json.dumps(value) if isinstance(value, (dict, list)) else value
        g = f.create_group("streams")
        for s in streams:
            sg = g.create_group(s.name)
            sg.attrs["kind"] = s.kind
            sg.attrs["units"] = s.units
            sg.attrs["description"] = s.description
            sg.attrs["theory"] = s.theory
            sg.attrs["log_scale"] = s.log_scale
            for attr in _LABEL_ATTRS:
                vals = getattr(s, attr)
                if vals:
                    sg.attrs.create(attr, np.array(vals, dtype=object), dtype=_STR)
            if self._known_shape(s) is not None:
                self._create(s, self._known_shape(s))
        e = f.create_group("events")
        e.attrs["description"] = "One row per event: live changes, pauses, phases, warnings, divergence, end."
        for name, dt in (("step", "i8"), ("time", "f8"), ("kind", _STR), ("payload", _STR)):
            e.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dt, chunks=(256,))
        checkpoint.create_tables(f)
        self._maybe_swmr()

    @staticmethod
    def _known_shape(s: Stream) -> tuple[int, ...] | None:
        if s.kind in ("histogram", "points") and not s.shape:
            return None
        return tuple(s.shape)

    def _create(self, s: Stream, shape: tuple[int, ...]) -> None:
        sg = self._f["streams"][s.name]
        row = int(np.prod(shape)) if shape else 1
        rows = max(1, min(4096, (1 << 16) // max(row, 1)))
        # Compression pays for wide rows (spectra, heatmaps); scalars stay raw for speed.
        comp = {"compression": "gzip", "compression_opts": 1, "shuffle": True} if row >= 64 else {}
        sg.create_dataset("step", shape=(0,), maxshape=(None,), dtype="i8", chunks=(rows,))
        sg.create_dataset(
            "value", shape=(0, *shape), maxshape=(None, *shape), dtype="f8", chunks=(rows, *shape), **comp
        )
        sg["value"].attrs["shape_per_step"] = np.array(shape, dtype="i8")

    def _maybe_swmr(self) -> None:
        if not self._swmr and all("value" in self._f["streams"][n] for n in self._streams):
            self._f.swmr_mode = True
            self._swmr = True

    def write(self, frame: Frame) -> None:
        """Queue one frame; appends happen at the flush interval."""
        for name, value in frame.data.items():
            if name in self._pending:
                self._pending[name].append((frame.step, value))
        self.last_step = max(self.last_step, frame.step)
        if time.monotonic() - self._last_flush >= self.flush_interval:
            self.flush()

    def event(self, event: Event) -> None:
        """Queue an event; events are flushed at once (they are rare and precious)."""
        self._pending_events.append(event)
        self.flush()

    def flush(self) -> None:
        """Append everything pending and flush the file to disk."""
        f = self._f
        try:
            for name, rows in self._pending.items():
                if not rows:
                    continue
                sg = f["streams"][name]
                if "value" not in sg:
                    self._create(self._streams[name], rows[0][1].shape)
                steps = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
                values = np.stack([r[1] for r in rows]).astype(np.float64, copy=False)
                ds, vs = sg["step"], sg["value"]
                n = ds.shape[0]
                ds.resize((n + len(rows),))
                vs.resize((n + len(rows), *vs.shape[1:]))
                ds[n:] = steps
                vs[n:] = values
                rows.clear()
            self._maybe_swmr()
            if self._pending_events:
                e = f["events"]
                evs = self._pending_events
                n = e["step"].shape[0]
                for key in ("step", "time", "kind", "payload"):
                    e[key].resize((n + len(evs),))
                e["step"][n:] = [ev.step for ev in evs]
                e["time"][n:] = [ev.time for ev in evs]
                e["kind"][n:] = [ev.kind for ev in evs]
                e["payload"][n:] = [json.dumps(dict(ev.payload), default=_jsonable) for ev in evs]
                evs.clear()
            f.flush()
        except (OSError, ValueError) as exc:
            raise RecordingError(f"writing {self.path} failed: {exc}") from None
        self._last_flush = time.monotonic()

    def close(self, status: str = "completed") -> None:
        """Flush, close, and stamp the final status (reopening once outside SWMR)."""
        if self._f is None:
            return
        try:
            self.flush()
        finally:
            self._f.close()
            self._f = None
        with h5py.File(self.path, "r+") as f:
            f.attrs["status"] = status
            f.attrs["ended_at"] = datetime.now(UTC).isoformat(timespec="seconds")
            f.attrs["last_step"] = self.last_step

    @property
    def closed(self) -> bool:
        return self._f is None

    @property
    def last_flush(self) -> float:
        """``time.monotonic()`` of the last flush (the worker's flush clock reads it)."""
        return self._last_flush

    def checkpoint(self, step: int, arrays: Mapping[str, np.ndarray], state: Mapping[str, Any]) -> int:
        """Store the engine's state at ``step`` (rows pending are written first); return its bytes."""
        self.flush()
        try:
            n = checkpoint.append(self._f, step, arrays, state)
            self._f.flush()
        except (OSError, ValueError) as exc:
            raise RecordingError(f"writing a checkpoint to {self.path} failed: {exc}") from None
        return n

    def abort(self) -> None:
        """Close the file without another write (it failed, or its writer is giving up)."""
        f, self._f = self._f, None
        if f is not None:
            try:
                f.close()
            except Exception:
                pass


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


class Recording:
    """Read access to a recording: metadata, streams, events, rows by step range.

    Nothing is loaded up front beyond attributes; ``read`` touches only the rows asked
    for (binary search on the step dataset), so seeking is independent of file length.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        p = Path(self.path)
        if not p.is_file():
            raise RecordingError(f"{self.path}: no such file")
        if not h5py.is_hdf5(self.path):
            raise RecordingError(f"{self.path}: not an HDF5 file (is it a dynlab recording?)")
        try:
            self._f = h5py.File(self.path, "r", libver="latest", swmr=True)
        except OSError:
            try:
                self._f = h5py.File(self.path, "r")
            except OSError as exc:
                raise RecordingError(
                    f"{self.path}: cannot open: truncated or corrupt HDF5 file ({exc})"
                ) from None
        self._step_cache: dict[str, np.ndarray] = {}
        try:
            self._check()
            # Touch every piece of metadata now, so damage shows here as one clear error
            # rather than later inside a view.
            _ = self.attrs, self.streams, self.events()
            for name in self._f["streams"]:
                self.step_range(name)
        except RecordingError:
            self._f.close()
            raise
        except (OSError, RuntimeError, KeyError, ValueError) as exc:
            self._f.close()
            raise RecordingError(f"{self.path}: truncated or corrupt recording ({exc})") from None

    def _check(self) -> None:
        a = self._f.attrs
        if "format_version" not in a or "streams" not in self._f:
            raise RecordingError(
                f"{self.path}: an HDF5 file, but not a dynlab recording (no format_version / streams)"
            )
        v = int(a["format_version"])
        if v > FORMAT_VERSION:
            raise RecordingError(
                f"{self.path}: recording format {v} is newer than this dynlab reads ({FORMAT_VERSION}); upgrade dynlab"
            )

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> Recording:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------- metadata
    @property
    def attrs(self) -> dict[str, Any]:
        out = {}
        for k, v in self._f.attrs.items():
            out[k] = v.decode() if isinstance(v, bytes) else (v.item() if isinstance(v, np.generic) else v)
        return out

    @property
    def engine(self) -> str:
        return str(self.attrs.get("engine", "?"))

    @property
    def preset_text(self) -> str:
        return str(self.attrs.get("preset", ""))

    @property
    def streams(self) -> dict[str, Stream]:
        out = {}
        for name, g in self._f["streams"].items():
            a = g.attrs
            labels = {k: tuple(_s(x) for x in a[k]) for k in _LABEL_ATTRS if k in a}
            shape = tuple(int(x) for x in g["value"].shape[1:]) if "value" in g else ()
            out[name] = Stream(
                name,
                _s(a["kind"]),
                shape,
                units=_s(a.get("units", "")),
                description=_s(a.get("description", "")),
                theory=_s(a.get("theory", "")),
                log_scale=bool(a.get("log_scale", False)),
                **labels,
            )
        return out

    def rows(self, name: str) -> int:
        g = self._f["streams"][name]
        return 0 if "step" not in g else g["step"].shape[0]

    def step_range(self, name: str | None = None) -> tuple[int, int] | None:
        """(first, last) recorded step of a stream, or of the whole recording."""
        names = [name] if name else list(self._f["streams"])
        lo, hi = None, None
        for n in names:
            r = self.rows(n)
            if r == 0:
                continue
            ds = self._f["streams"][n]["step"]
            a, b = int(ds[0]), int(ds[r - 1])
            lo = a if lo is None else min(lo, a)
            hi = b if hi is None else max(hi, b)
        return None if lo is None else (lo, hi)

    def _index(self, name: str, step: int) -> int:
        """Number of rows with step <= ``step`` (binary search on disk, O(log n) reads)."""
        ds = self._f["streams"][name]["step"]
        n = self.rows(name)
        if n <= 65536:  # small: cache the steps, one read
            cached = self._step_cache.get(name)
            if cached is None or len(cached) != n:
                cached = ds[:n]
                self._step_cache[name] = cached
            return int(np.searchsorted(cached, step, side="right"))
        lo, hi = 0, n
        while hi - lo > 1024:
            mid = (lo + hi) // 2
            if int(ds[mid]) <= step:
                lo = mid + 1
            else:
                hi = mid
        block = ds[lo:hi]
        return lo + bisect_right(block.tolist(), step)

    def read(
        self, name: str, start: int | None = None, stop: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Steps and values of ``name`` with ``start <= step < stop`` (None = open end)."""
        try:
            return self._read(name, start, stop)
        except (OSError, RuntimeError) as exc:
            raise RecordingError(f"{self.path}: stream {name!r} is truncated or corrupt ({exc})") from None

    def _read(self, name: str, start: int | None, stop: int | None) -> tuple[np.ndarray, np.ndarray]:
        g = self._f["streams"][name]
        n = self.rows(name)
        i = 0 if start is None else self._index(name, start - 1)
        j = n if stop is None else self._index(name, stop - 1)
        if n == 0 or j <= i:
            shape = g["value"].shape[1:] if "value" in g else ()
            return np.zeros(0, np.int64), np.zeros((0, *shape))
        return g["step"][i:j], g["value"][i:j]

    def value_at(self, name: str, step: int) -> tuple[int, np.ndarray] | None:
        """The newest row of ``name`` at or before ``step``."""
        k = self._index(name, step)
        if k == 0:
            return None
        g = self._f["streams"][name]
        return int(g["step"][k - 1]), g["value"][k - 1]

    def events(self) -> list[Event]:
        e = self._f["events"]
        n = e["step"].shape[0]
        steps, times = e["step"][:n], e["time"][:n]
        kinds, payloads = e["kind"][:n], e["payload"][:n]
        return [
            Event(int(s), _s(k), json.loads(_s(p)), float(t))
            for s, t, k, p in zip(steps, times, kinds, payloads)
        ]

    def frames(
        self, start: int | None = None, stop: int | None = None, *, max_rows: int | None = None
    ) -> Iterator[Frame]:
        """Frames with ``start <= step < stop``, merged across streams, in step order.

        ``max_rows`` thins each stream evenly to at most that many rows (its last row
        always kept), so a seek into a 10^6-step recording hands the views a decimated
        history instead of a million frames; ``None`` gives every row.
        """
        per = {}
        for name in self._f["streams"]:
            st, vals = self.read(name, start, stop)
            if max_rows is not None and len(st) > max_rows:
                keep = np.unique(np.linspace(0, len(st) - 1, max_rows).round().astype(np.int64))
                st, vals = st[keep], vals[keep]
            per[name] = (st, vals)
        steps = np.unique(np.concatenate([s for s, _ in per.values()] or [np.zeros(0, np.int64)]))
        pos = dict.fromkeys(per, 0)
        for step in steps:
            data = {}
            for name, (st, vals) in per.items():
                k = pos[name]
                if k < len(st) and st[k] == step:
                    data[name] = vals[k]
                    pos[name] = k + 1
            yield Frame.make(int(step), data)


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)
