"""Reading a recording that may be hostile, damaged, long, or still being written.

:class:`Recording` validates the structure when it opens a file and refuses, naming the
dataset or field, what dynlab's writer never produces (see :mod:`dynlab.h5safe` for
external data, plugins and inflation bounds); nothing else is loaded up front. Reads are
by step range (binary search on disk), and thinned reads select strided rows, so memory
is bounded at any length. Layout: ``docs/recording-format.md``.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import h5py
import numpy as np

from dynlab.frames import STREAM_KINDS, Event, Frame, Stream, StreamKind
from dynlab.h5safe import (
    RecordingError,
    check_dataset,
    hard_child,
    lock_holder,
    open_readonly,
    read_superblock,
    show,
)

FORMAT_VERSION = 1
LABEL_ATTRS = ("labels", "rows", "cols", "groups")
#: Most streams a reader accepts in one file.
MAX_STREAMS = 10_000
#: Most events one ``Recording.events`` call loads without a ``limit``.
MAX_EVENTS = 100_000
#: Longest event payload (JSON text) a reader parses.
MAX_PAYLOAD = 1 << 20
#: Bytes of values ``Recording.frames(max_rows=...)`` loads at most, all streams together.
FRAMES_MAX_BYTES = 256 << 20
#: Steps are checked for order in blocks of this many rows (bounded memory at any length).
_ORDER_BLOCK = 1 << 20


class Recording:
    """Read access to a recording: metadata, streams, events, rows by step range.

    Opening validates the structure (and refuses what a dynlab recording never holds,
    naming it); nothing else is loaded up front. ``read`` touches only the rows asked for
    (binary search on the step dataset), so seeking is independent of file length.

    Attributes
    ----------
    writer_alive
        A live process holds the file's lock: it is being written now.
    repairs
        What was repaired on read (e.g. a killed writer's last, half-appended rows), in words.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        p = Path(self.path)
        if not p.exists():
            raise RecordingError(f"{self.path}: no such file")
        if not p.is_file():
            raise RecordingError(f"{self.path}: not a regular file")
        try:
            sb = read_superblock(p)
        except OSError as exc:
            raise RecordingError(f"{self.path}: cannot read: {exc.strerror or exc}") from None
        if sb is None:
            raise RecordingError(f"{self.path}: not an HDF5 file (is it a dynlab recording?)")
        self.writer_alive = lock_holder(p) is not None
        self._f, self._sb = open_readonly(self.path, writer_alive=self.writer_alive)
        self.repairs: list[str] = []
        self._rows: dict[str, int] = {}
        self._ends: dict[str, tuple[int, int]] = {}
        self._streams: dict[str, Stream] = {}
        self._groups: dict[str, h5py.Group] = {}
        self._step_cache: dict[str, np.ndarray] = {}
        self._events: h5py.Group | None = None
        self._event_count = 0
        self._events_sorted = True
        try:
            self._validate()
        except RecordingError:
            self._f.close()
            raise
        except (OSError, RuntimeError, KeyError, ValueError, TypeError, IndexError) as exc:
            self._f.close()
            raise RecordingError(f"{self.path}: truncated or corrupt recording ({exc})") from None

    # -------------------------------------------------------------- validation
    def _validate(self) -> None:
        f = self._f
        a = f.attrs
        if "format_version" not in a or "streams" not in f:
            raise RecordingError(
                f"{self.path}: an HDF5 file, but not a dynlab recording (no format_version / streams)"
            )
        v = _one_int(a["format_version"])
        if v is None:
            raise RecordingError(
                f"{self.path}: format_version is {show(a['format_version'])}, expected one integer"
            )
        if v > FORMAT_VERSION:
            raise RecordingError(
                f"{self.path}: recording format {v} is newer than this dynlab reads ({FORMAT_VERSION}); upgrade dynlab"
            )
        if v < 1:
            raise RecordingError(f"{self.path}: format_version {v} is not a dynlab recording format")
        self.status = text(a.get("status", ""))
        self._open_writer = self.status == "recording"
        self._hyper = self._parse_hyperparameters()
        streams = hard_child(f, "streams", "/streams")
        if not isinstance(streams, h5py.Group):
            raise RecordingError(f"{self.path}: /streams is not a group")
        names = list(streams)
        if len(names) > MAX_STREAMS:
            raise RecordingError(
                f"{self.path}: {len(names):,} streams, more than a recording holds ({MAX_STREAMS:,})"
            )
        for name in names:
            self._validate_stream(streams, name)
        self._validate_events()

    def _parse_hyperparameters(self) -> dict[str, Any]:
        raw = self._f.attrs.get("hyperparameters")
        if raw is None:
            return {}
        try:
            hp = json.loads(text(raw))
        except (ValueError, RecursionError):
            hp = None
        if not isinstance(hp, dict):
            raise RecordingError(f"{self.path}: hyperparameters is {show(text(raw))}, expected a JSON object")
        return hp

    def _validate_stream(self, streams: h5py.Group, name: str) -> None:
        where = f"{self.path}: stream {name!r}"
        g = hard_child(streams, name, where)
        if not isinstance(g, h5py.Group):
            raise RecordingError(f"{where} is not a group")
        a = g.attrs
        kind = text(a.get("kind", ""))
        if kind not in STREAM_KINDS:
            raise RecordingError(f"{where}: kind is {show(kind)}, expected one of {', '.join(STREAM_KINDS)}")
        labels = {}
        for k in LABEL_ATTRS:
            if k in a:
                arr = np.asarray(a[k])
                if arr.ndim != 1:
                    raise RecordingError(
                        f"{where}: attribute {k!r} is {show(a[k])}, expected a list of names"
                    )
                labels[k] = tuple(text(x) for x in arr)
        st, va = hard_child(g, "step", f"{where}/step"), hard_child(g, "value", f"{where}/value")
        shape: tuple[int, ...] = ()
        rows = 0
        if (st is None) != (va is None):
            raise RecordingError(f"{where}: has {'step' if va is None else 'value'} without the other")
        if st is not None:
            check_dataset(st, f"{where}/step", "iu")
            check_dataset(va, f"{where}/value", "iufb")
            if st.ndim != 1:
                raise RecordingError(f"{where}/step has shape {st.shape}, expected one dimension")
            if va.ndim < 1:
                raise RecordingError(f"{where}/value is a scalar, expected one row per step")
            shape = tuple(int(x) for x in va.shape[1:])
            _check_shape(where, kind, shape)
            ns, nv = st.shape[0], va.shape[0]
            rows = min(ns, nv)
            if ns != nv:
                msg = f"stream {name!r}: step has {ns:,} rows but value has {nv:,}"
                if not self._open_writer:
                    raise RecordingError(f"{self.path}: {msg}")
                self.repairs.append(f"{msg}; reading the first {rows:,} (a writer stopped mid-append)")
            if rows:
                self._ends[name] = check_order(st, rows, where)
        try:
            self._streams[name] = Stream(
                name,
                cast(StreamKind, kind),  # checked against STREAM_KINDS above
                shape,
                units=text(a.get("units", "")),
                description=text(a.get("description", "")),
                theory=text(a.get("theory", "")),
                log_scale=bool(np.asarray(a.get("log_scale", False)).any()),
                **labels,
            )
        except (ValueError, TypeError) as exc:
            raise RecordingError(f"{where}: {exc}") from None
        self._groups[name] = g
        self._rows[name] = rows

    def _validate_events(self) -> None:
        e = hard_child(self._f, "events", f"{self.path}: /events")
        if e is None:
            return
        if not isinstance(e, h5py.Group):
            raise RecordingError(f"{self.path}: /events is not a group")
        kinds = {"step": "iu", "time": "fiu", "kind": "str", "payload": "str"}
        lengths = {}
        for key, dk in kinds.items():
            ds = hard_child(e, key, f"{self.path}: /events/{key}")
            if ds is None:
                raise RecordingError(f"{self.path}: /events has no {key!r} dataset")
            check_dataset(ds, f"{self.path}: /events/{key}", dk)
            if ds.ndim != 1:
                raise RecordingError(
                    f"{self.path}: /events/{key} has shape {ds.shape}, expected one dimension"
                )
            lengths[key] = ds.shape[0]
        n = min(lengths.values())
        if len(set(lengths.values())) > 1:
            msg = "events: " + ", ".join(f"{k} has {v:,}" for k, v in lengths.items())
            if not self._open_writer:
                raise RecordingError(f"{self.path}: {msg} rows")
            self.repairs.append(f"{msg} rows; reading the first {n:,}")
        self._events, self._event_count = e, n
        # Sorted event steps allow range reads by binary search; unsorted ones are allowed
        # (an engine may report a phase at an earlier step) but are then read whole.
        prev = None
        for i in range(0, n, _ORDER_BLOCK):
            block = e["step"][i : min(n, i + _ORDER_BLOCK)]
            if (prev is not None and block[0] < prev) or np.any(np.diff(block) < 0):
                self._events_sorted = False
                break
            prev = block[-1]

    # -------------------------------------------------------------- lifetime
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
            out[k] = text(v) if isinstance(v, bytes) else (v.item() if isinstance(v, np.generic) else v)
        return out

    @property
    def engine(self) -> str:
        return str(self.attrs.get("engine", "?"))

    @property
    def preset_text(self) -> str:
        return str(self.attrs.get("preset", ""))

    @property
    def hyperparameters(self) -> dict[str, Any]:
        """The hyperparameters at the start (a JSON object; checked when the file was opened)."""
        return dict(self._hyper)

    @property
    def needs_finalise(self) -> bool:
        """The writer is gone but never closed the file: :func:`finalise` would make it final."""
        return not self.writer_alive and (
            self.status == "recording" or bool(self._sb and self._sb.open_for_write)
        )

    @property
    def streams(self) -> dict[str, Stream]:
        return dict(self._streams)

    def _group(self, name: str) -> h5py.Group:
        try:
            return self._groups[name]
        except KeyError:
            raise RecordingError(f"{self.path}: no stream {name!r}") from None

    def rows(self, name: str) -> int:
        """Rows of ``name`` (as of opening the file)."""
        self._group(name)
        return self._rows[name]

    def step_range(self, name: str | None = None) -> tuple[int, int] | None:
        """(first, last) recorded step of a stream, or of the whole recording."""
        if name is not None:
            self._group(name)
        ends = [self._ends[n] for n in ([name] if name else self._ends) if n in self._ends]
        if not ends:
            return None
        return min(a for a, _ in ends), max(b for _, b in ends)

    # -------------------------------------------------------------- rows
    def _index(self, name: str, step: int) -> int:
        """Number of rows with step <= ``step`` (binary search on disk, O(log n) reads)."""
        ds = self._group(name)["step"]
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
        self, name: str, start: int | None = None, stop: int | None = None, *, max_rows: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Steps and values of ``name`` with ``start <= step < stop`` (None = open end).

        ``max_rows`` thins the range evenly to at most that many rows (the last row always
        kept), reading only those rows from the file: memory is bounded at any length.
        """
        try:
            return self._read(name, start, stop, max_rows)
        except (OSError, RuntimeError) as exc:
            raise RecordingError(f"{self.path}: stream {name!r} is truncated or corrupt ({exc})") from None

    def _read(
        self, name: str, start: int | None, stop: int | None, max_rows: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        g = self._group(name)
        n = self.rows(name)
        shape = self._streams[name].shape
        if n == 0:
            return np.zeros(0, np.int64), np.zeros((0, *shape))
        i = 0 if start is None else self._index(name, start - 1)
        j = n if stop is None else self._index(name, stop - 1)
        if j <= i:
            return np.zeros(0, np.int64), np.zeros((0, *shape))
        st, va = g["step"], g["value"]
        if max_rows is None or j - i <= max_rows:
            return st[i:j].astype(np.int64, copy=False), va[i:j].astype(np.float64, copy=False)
        # A strided hyperslab: HDF5 reads the selected rows only (chunks touched are
        # inflated one at a time through its small chunk cache), never the whole range.
        stride = -(-(j - 1 - i) // max(1, max_rows - 1))
        steps, values = st[i:j:stride], va[i:j:stride]
        if i + (len(steps) - 1) * stride != j - 1:
            steps = np.concatenate([steps, st[j - 1 : j]])
            values = np.concatenate([values, va[j - 1 : j]])
        return steps.astype(np.int64, copy=False), values.astype(np.float64, copy=False)

    def value_at(self, name: str, step: int) -> tuple[int, np.ndarray] | None:
        """The newest row of ``name`` at or before ``step``."""
        k = self._index(name, step)
        if k == 0:
            return None
        g = self._group(name)
        return int(g["step"][k - 1]), np.asarray(g["value"][k - 1], dtype=np.float64)

    # -------------------------------------------------------------- events
    @property
    def event_count(self) -> int:
        return self._event_count

    def events(
        self, start: int | None = None, stop: int | None = None, *, limit: int | None = None
    ) -> list[Event]:
        """Events with ``start <= step < stop`` (None = open end), in file order.

        ``limit`` returns at most that many (the first). Without it, a range of more than
        ``MAX_EVENTS`` events is refused with a ``RecordingError``: read such a file by
        step range.
        """
        e, n = self._events, self._event_count
        if e is None or n == 0:
            return []
        try:
            if start is None and stop is None:
                idx: np.ndarray | slice = slice(0, n)
                count = n
            elif self._events_sorted:
                i = 0 if start is None else self._event_index(e["step"], start - 1)
                j = n if stop is None else self._event_index(e["step"], stop - 1)
                idx, count = slice(i, max(i, j)), max(0, j - i)
            else:
                if n > MAX_EVENTS:
                    raise RecordingError(
                        f"{self.path}: {n:,} events out of step order: more than dynlab reads at once ({MAX_EVENTS:,})"
                    )
                steps = e["step"][:n]
                lo = -np.inf if start is None else start
                hi = np.inf if stop is None else stop
                idx = np.flatnonzero((steps >= lo) & (steps < hi))
                count = len(idx)
            if limit is None and count > MAX_EVENTS:
                raise RecordingError(
                    f"{self.path}: {count:,} events, more than dynlab loads at once ({MAX_EVENTS:,}); "
                    "read them by step range or with a limit"
                )
            take = count if limit is None else max(0, min(limit, count))
            if isinstance(idx, slice):
                sel: Any = slice(idx.start, idx.start + take)
                base = idx.start
            else:
                sel, base = idx[:take], 0
            if take == 0:
                return []
            cols = {k: e[k][sel] for k in ("step", "time", "kind", "payload")}
        except (OSError, RuntimeError) as exc:
            raise RecordingError(f"{self.path}: events are truncated or corrupt ({exc})") from None
        out = []
        for k in range(take):
            row = (base + k) if isinstance(sel, slice) else int(sel[k])
            out.append(
                self._event(row, cols["step"][k], cols["time"][k], cols["kind"][k], cols["payload"][k])
            )
        return out

    def _event_index(self, ds: h5py.Dataset, step: int) -> int:
        lo, hi = 0, self._event_count
        while hi - lo > 4096:
            mid = (lo + hi) // 2
            if int(ds[mid]) <= step:
                lo = mid + 1
            else:
                hi = mid
        return lo + int(np.searchsorted(ds[lo:hi], step, side="right"))

    def _event(self, row: int, step: Any, t: Any, kind: Any, payload: Any) -> Event:
        raw = text(payload)
        if len(raw) > MAX_PAYLOAD:
            raise RecordingError(f"{self.path}: event {row}: payload of {len(raw):,} characters is too long")
        try:
            p = json.loads(raw)
        except (ValueError, RecursionError):
            raise RecordingError(f"{self.path}: event {row}: payload is not JSON: {show(raw)}") from None
        if not isinstance(p, dict):
            raise RecordingError(f"{self.path}: event {row}: payload is {show(p)}, expected a JSON object")
        return Event(int(step), text(kind), p, float(t))

    # -------------------------------------------------------------- frames
    def frames(
        self,
        start: int | None = None,
        stop: int | None = None,
        *,
        max_rows: int | None = None,
        max_bytes: int = FRAMES_MAX_BYTES,
    ) -> Iterator[Frame]:
        """Frames with ``start <= step < stop``, merged across streams, in step order.

        ``max_rows`` thins each stream evenly to at most that many rows (its last row
        always kept), and further so that all streams' values together stay under
        ``max_bytes``: a seek into a 10^6-step recording reads a decimated history, never
        the million rows. ``None`` gives every row.
        """
        per = {}
        names = list(self._streams)
        for name in names:
            cap = max_rows
            if max_rows is not None:
                row_bytes = 8 * max(1, int(np.prod(self._streams[name].shape)))
                cap = max(2, min(max_rows, max_bytes // max(1, len(names)) // row_bytes))
            per[name] = self.read(name, start, stop, max_rows=cap)
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


def _one_int(x: Any) -> int | None:
    arr = np.asarray(x)
    if arr.shape != () or arr.dtype.kind not in "iu":
        return None
    return int(arr)


def _check_shape(where: str, kind: str, shape: tuple[int, ...]) -> None:
    ok = {
        "scalar": len(shape) == 0,
        "vector": len(shape) == 1,
        "histogram": len(shape) == 2 and shape[0] == 3,
        "heatmap": len(shape) == 2,
        "points": len(shape) == 2 and shape[1] in (2, 3),
    }[kind]
    if not ok:
        raise RecordingError(f"{where}: a {kind} stream with rows of shape {shape}")


def check_order(ds: h5py.Dataset, n: int, where: str) -> tuple[int, int]:
    """Check that the first ``n`` steps strictly increase (in blocks); return (first, last)."""
    prev: int | None = None
    first = None
    for i in range(0, n, _ORDER_BLOCK):
        block = ds[i : min(n, i + _ORDER_BLOCK)].astype(np.int64)
        if first is None:
            first = int(block[0])
        bad = np.flatnonzero(np.diff(block) <= 0)
        if prev is not None and block[0] <= prev:
            k, a, b = i, prev, int(block[0])
        elif bad.size:
            k, a, b = i + int(bad[0]) + 1, int(block[bad[0]]), int(block[bad[0] + 1])
        else:
            prev = int(block[-1])
            continue
        what = "repeated" if a == b else "out of order"
        raise RecordingError(
            f"{where}: steps are {what} (row {k:,}: step {b} after {a}); refused. "
            "`dynlab inspect --repair FILE` sorts them, keeping the last row written for a repeated step"
        )
    if first is None or prev is None:  # callers check only streams with rows
        raise ValueError(f"{where}: no steps to check")
    return first, prev


def text(x: Any) -> str:
    if isinstance(x, bytes):
        return x.decode("utf-8", errors="replace")
    if isinstance(x, np.ndarray) and x.shape == ():
        return text(x.item())
    return str(x)
