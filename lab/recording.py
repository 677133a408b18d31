"""HDF5 recording: one file per run, one writer, readable while written (SWMR).

Layout (documented for other tools in ``docs/recording-format.md``)::

    /                       attrs: format_version, engine, engine_version, preset, preset_name,
                                   seed, device, dynlab_version, started_at, hyperparameters,
                                   status, ended_at, last_step
    /streams/<name>/step    int64 (rows,)            increasing step of each recorded row
    /streams/<name>/value   float (rows, *shape)     one row per recorded step
                            attrs: kind, units, description, theory, [labels|rows|cols|groups]
    /events/step, /events/time, /events/kind, /events/payload (JSON text)

The writer buffers rows and events in memory and appends them at most every
``flush_interval`` seconds, then flushes the file: a crash loses at most the last
interval. ``<file>.lock`` beside the file names the one process writing it.

The reader treats every file as untrusted (see :mod:`dynlab.h5safe`): it reads a file
only from itself, inflates a bounded amount, fails fast on damage with a
:class:`RecordingError`, and never loads more rows than it is asked for.
"""

from __future__ import annotations

import atexit
import json
import os
import threading
import time
import weakref
from bisect import bisect_right
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from dynlab import __version__
from dynlab.frames import STREAM_KINDS, Event, Frame, Stream
from dynlab.h5safe import (
    RecordingError,
    WriterLock,
    check_dataset,
    clear_flags,
    describe_holder,
    hard_child,
    lock_holder,
    open_readonly,
    read_superblock,
    show,
)

__all__ = [
    "FORMAT_VERSION",
    "Recorder",
    "Recording",
    "RecordingError",
    "abort_open_recorders",
    "check_record_target",
    "discard_recording",
    "finalise",
    "needs_finalise",
    "recording_status",
]

FORMAT_VERSION = 1
_STR = h5py.string_dtype("utf-8")
_LABEL_ATTRS = ("labels", "rows", "cols", "groups")
_HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5")
#: Final statuses; ``recording`` means open (or its writer was killed), ``interrupted`` finalised after a kill.
FINAL_STATUSES = ("finished", "stopped", "failed", "diverged", "interrupted", "completed")
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
#: Most bytes ``finalise`` loads to reorder one stream.
_REPAIR_MAX_BYTES = 1 << 30

_OPEN: weakref.WeakSet[Recorder] = weakref.WeakSet()


# =============================================================================== writing
def check_record_target(path: str | Path, *, overwrite: bool = False) -> Path:
    """Check that a recording may be created at ``path``, before anything is built.

    Refuses a missing or unwritable folder, a directory, a file that is being written by
    another run, an existing file unless ``overwrite``, and, even with ``overwrite``, an
    existing file that is not HDF5 (a preset, a script...): replacing a recording is a
    choice, replacing anything else is an accident.
    """
    p = _check_place(path)
    holder = lock_holder(p)
    if holder is not None:
        raise RecordingError(f"{p} is being written by another run ({describe_holder(holder)})")
    _check_existing(p, overwrite)
    return p


def discard_recording(path: str | Path) -> None:
    """Delete an existing recording at ``path`` (under its lock), for ``--overwrite``."""
    p = check_record_target(path, overwrite=True)
    if not p.exists():
        return
    lock = WriterLock.acquire(p)
    try:
        p.unlink()
    finally:
        lock.release()


def recording_status(path: str | Path) -> str | None:
    """The ``status`` a recording's file says, or ``None`` if it is missing or unreadable."""
    try:
        with Recording(path) as rec:
            return rec.status
    except RecordingError:
        return None


def _check_place(path: str | Path) -> Path:
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if p.is_dir():
        raise RecordingError(f"cannot create recording {p}: it is a directory")
    if not parent.is_dir():
        raise RecordingError(f"cannot create recording {p}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise RecordingError(f"cannot create recording {p}: folder {parent} is not writable")
    return p


def _check_existing(p: Path, overwrite: bool) -> None:
    if not (p.exists() or p.is_symlink()):
        return
    if not p.is_file():
        raise RecordingError(f"cannot create recording {p}: it exists and is not a regular file")
    if not _replaceable(p):
        raise RecordingError(
            f"cannot create recording {p}: the file exists and is not a dynlab recording; "
            "refusing to replace it (even with --overwrite)"
        )
    if not overwrite:
        raise RecordingError(f"cannot create recording {p}: the file exists (use --overwrite to replace it)")


def _replaceable(p: Path) -> bool:
    """An existing file may be overwritten only if it is HDF5 (and, without an HDF5 suffix, a recording)."""
    try:
        if read_superblock(p) is None:
            return False
    except OSError:
        return False
    if p.suffix.lower() in _HDF5_SUFFIXES:
        return True
    try:
        with h5py.File(p, "r", locking=False) as f:
            return "format_version" in f.attrs and "streams" in f
    except (OSError, RuntimeError, ValueError):
        return False


class Recorder:
    """Writes frames and events of one run to an HDF5 file.

    Parameters
    ----------
    path
        The file to create. It is locked (``<path>.lock``) while written.
    streams
        The engine instance's streams. Histogram and points streams should declare their
        full shape; if one does not, its dataset is created from its first frame and
        SWMR mode starts once every stream has a dataset.
    meta
        Root attributes: ``engine``, ``engine_version``, ``preset`` (TOML text),
        ``preset_name``, ``seed``, ``device``, ``hyperparameters`` (dict).
    flush_interval
        Seconds between appends/flushes (rows and events alike).
    overwrite
        Replace an existing recording at ``path``; without it an existing file is refused.

    Thread safety: every method may be called from any thread (one lock), so a clock
    thread (:meth:`start_clock`) can flush while the writer's thread is stuck in a step.
    """

    def __init__(
        self,
        path: str | Path,
        streams: Sequence[Stream],
        meta: Mapping[str, Any],
        *,
        flush_interval: float = 1.0,
        overwrite: bool = False,
    ) -> None:
        self.path = str(path)
        self.flush_interval = float(flush_interval)
        self._streams = {s.name: s for s in streams}
        self._pending: dict[str, list[tuple[int, np.ndarray]]] = {n: [] for n in self._streams}
        self._pending_events: list[Event] = []
        self._last_flush = time.monotonic()
        self._swmr = False
        self._lock = threading.RLock()
        self._clock: threading.Thread | None = None
        self._clock_stop = threading.Event()
        self.error: RecordingError | None = None  # a failure on the clock thread, raised by the next write
        self.last_step = -1
        self._f: h5py.File | None = None
        p = _check_place(self.path)
        self._writer_lock = WriterLock.acquire(self.path)  # one writer per file, or a clear error
        try:
            _check_existing(p, overwrite)
            try:
                self._f = h5py.File(self.path, "w", libver="latest")
            except OSError as exc:
                raise RecordingError(f"cannot create recording {self.path}: {exc}") from None
            self._init_file(streams, meta)
            self._maybe_swmr()
        except BaseException as exc:
            created = self._f is not None
            if self._f is not None:
                try:
                    self._f.close()
                except Exception:
                    pass
                self._f = None
            if created:
                Path(self.path).unlink(missing_ok=True)  # never leave a half-made file behind
            self._writer_lock.release()
            if isinstance(exc, (TypeError, ValueError, OverflowError)):
                raise RecordingError(f"cannot create recording {self.path}: {exc}") from None
            raise
        _OPEN.add(self)

    def _init_file(self, streams: Sequence[Stream], meta: Mapping[str, Any]) -> None:
        f = self._f
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["dynlab_version"] = __version__
        f.attrs["started_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        f.attrs["status"] = "recording"
        for key, value in meta.items():
            try:
                f.attrs[key] = json.dumps(value) if isinstance(value, (dict, list)) else value
            except (TypeError, ValueError, OverflowError) as exc:
                raise RecordingError(
                    f"cannot create recording {self.path}: {key} = {show(value)} cannot be stored ({exc})"
                ) from None
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

    def _check_open(self) -> None:
        if self.error is not None:
            raise self.error
        if self._f is None:
            raise RecordingError(f"writing {self.path} failed: the recording is closed")

    def write(self, frame: Frame, events: Sequence[Event] = ()) -> None:
        """Queue one frame (and events); appends happen at the flush interval."""
        with self._lock:
            self._check_open()
            for name, value in frame.data.items():
                if name in self._pending:
                    self._pending[name].append((frame.step, value))
            self._pending_events.extend(events)
            self.last_step = max(self.last_step, frame.step)
            if time.monotonic() - self._last_flush >= self.flush_interval:
                self.flush()

    def event(self, event: Event) -> None:
        """Queue an event; it is written with the rows, on the flush clock (and on close)."""
        with self._lock:
            self._check_open()
            self._pending_events.append(event)
            if time.monotonic() - self._last_flush >= self.flush_interval:
                self.flush()

    def flush_if_due(self) -> bool:
        """Flush if a flush interval has passed since the last one; True if it flushed.

        The writer calls this on its own clock, so rows reach the disk even when no
        new frame arrives (a slow or stuck step). A closed recorder does nothing.
        """
        with self._lock:
            if self._f is None or time.monotonic() - self._last_flush < self.flush_interval:
                return False
            self.flush()
            return True

    def start_clock(self) -> None:
        """Flush on a background thread every flush interval, until :meth:`close` or :meth:`abort`.

        With it, rows and events written before a step that never returns still reach the
        disk within one interval. A failure is kept in :attr:`error` and raised by the next
        :meth:`write` or :meth:`event`.
        """
        if self._clock is not None or self._f is None:
            return
        self._clock = threading.Thread(
            target=self._clock_main, name=f"dynlab-recorder-{Path(self.path).name}", daemon=True
        )
        self._clock.start()

    def _clock_main(self) -> None:
        while not self._clock_stop.wait(max(0.02, self.flush_interval / 2)):
            try:
                self.flush_if_due()
            except RecordingError as exc:
                self.error = exc
                return

    def _stop_clock(self) -> None:
        self._clock_stop.set()
        t = self._clock
        if t is not None and t is not threading.current_thread():
            t.join(5.0)

    def flush(self) -> None:
        """Append everything pending and flush the file to disk."""
        with self._lock:
            f = self._f
            if f is None:
                raise RecordingError(f"writing {self.path} failed: the recording is closed")
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
                    # Values first, steps last: a reader counts rows by ``step``.
                    vs.resize((n + len(rows), *vs.shape[1:]))
                    vs[n:] = values
                    ds.resize((n + len(rows),))
                    ds[n:] = steps
                    rows.clear()
                self._maybe_swmr()
                if self._pending_events:
                    e = f["events"]
                    evs = self._pending_events
                    n = e["step"].shape[0]
                    cols = {
                        "time": [ev.time for ev in evs],
                        "kind": [ev.kind for ev in evs],
                        "payload": [json.dumps(dict(ev.payload), default=_jsonable) for ev in evs],
                        "step": [ev.step for ev in evs],
                    }
                    for key, col in cols.items():
                        e[key].resize((n + len(evs),))
                        e[key][n:] = col
                    evs.clear()
                f.flush()
            except (OSError, ValueError, TypeError) as exc:
                raise RecordingError(f"writing {self.path} failed: {exc}") from None
            self._last_flush = time.monotonic()

    def close(self, status: str = "completed") -> None:
        """Flush, close, stamp the final status (reopening once outside SWMR), release the lock."""
        self._stop_clock()
        with self._lock:
            if self._f is None:
                return
            try:
                self.flush()
            finally:
                self._f.close()
                self._f = None
                _OPEN.discard(self)
                try:
                    self._stamp(status)
                finally:
                    self._writer_lock.release()

    def abort(self, status: str = "interrupted", timeout: float = 2.0) -> bool:
        """Close as well as possible after a failure or a forced stop; never raises.

        Pending rows are flushed if the file still takes them, the status is stamped, the
        lock released. Returns False if another thread held the recorder past ``timeout``
        (it is then left alone: the file is finalised later, see :func:`finalise`).
        """
        self._clock_stop.set()
        if not self._lock.acquire(timeout=timeout):
            return False
        try:
            if self._f is None:
                return True
            try:
                self.flush()
            except Exception:
                pass
            try:
                self._f.close()
            except Exception:
                pass
            self._f = None
            _OPEN.discard(self)
            try:
                self._stamp(status)
            except Exception:
                pass
            self._writer_lock.release()
            return True
        finally:
            self._lock.release()

    def _stamp(self, status: str) -> None:
        try:
            with h5py.File(self.path, "r+") as f:
                f.attrs["status"] = status
                f.attrs["ended_at"] = datetime.now(UTC).isoformat(timespec="seconds")
                f.attrs["last_step"] = self.last_step
        except OSError as exc:
            raise RecordingError(f"closing {self.path} failed: {exc}") from None

    @property
    def closed(self) -> bool:
        return self._f is None


def abort_open_recorders(status: str = "interrupted", timeout: float = 2.0) -> list[str]:
    """Close every recorder still open in this process (a forced stop); returns their paths.

    For a run whose engine step never returns: its thread cannot close the file, so the
    process does it before it exits.
    """
    done = []
    for rec in list(_OPEN):
        if rec.abort(status, timeout=timeout):
            done.append(rec.path)
    return done


atexit.register(abort_open_recorders)


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


# =============================================================================== reading
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
        self.status = _s(a.get("status", ""))
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
            hp = json.loads(_s(raw))
        except (ValueError, RecursionError):
            hp = None
        if not isinstance(hp, dict):
            raise RecordingError(f"{self.path}: hyperparameters is {show(_s(raw))}, expected a JSON object")
        return hp

    def _validate_stream(self, streams: h5py.Group, name: str) -> None:
        where = f"{self.path}: stream {name!r}"
        g = hard_child(streams, name, where)
        if not isinstance(g, h5py.Group):
            raise RecordingError(f"{where} is not a group")
        a = g.attrs
        kind = _s(a.get("kind", ""))
        if kind not in STREAM_KINDS:
            raise RecordingError(f"{where}: kind is {show(kind)}, expected one of {', '.join(STREAM_KINDS)}")
        labels = {}
        for k in _LABEL_ATTRS:
            if k in a:
                arr = np.asarray(a[k])
                if arr.ndim != 1:
                    raise RecordingError(
                        f"{where}: attribute {k!r} is {show(a[k])}, expected a list of names"
                    )
                labels[k] = tuple(_s(x) for x in arr)
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
                self._ends[name] = _check_order(st, rows, where)
        try:
            self._streams[name] = Stream(
                name,
                kind,
                shape,
                units=_s(a.get("units", "")),
                description=_s(a.get("description", "")),
                theory=_s(a.get("theory", "")),
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
            out[k] = _s(v) if isinstance(v, bytes) else (v.item() if isinstance(v, np.generic) else v)
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
                i = 0 if start is None else self._event_index(start - 1)
                j = n if stop is None else self._event_index(stop - 1)
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

    def _event_index(self, step: int) -> int:
        ds = self._events["step"]
        lo, hi = 0, self._event_count
        while hi - lo > 4096:
            mid = (lo + hi) // 2
            if int(ds[mid]) <= step:
                lo = mid + 1
            else:
                hi = mid
        return lo + int(np.searchsorted(ds[lo:hi], step, side="right"))

    def _event(self, row: int, step: Any, t: Any, kind: Any, payload: Any) -> Event:
        text = _s(payload)
        if len(text) > MAX_PAYLOAD:
            raise RecordingError(f"{self.path}: event {row}: payload of {len(text):,} characters is too long")
        try:
            p = json.loads(text)
        except (ValueError, RecursionError):
            raise RecordingError(f"{self.path}: event {row}: payload is not JSON: {show(text)}") from None
        if not isinstance(p, dict):
            raise RecordingError(f"{self.path}: event {row}: payload is {show(p)}, expected a JSON object")
        return Event(int(step), _s(kind), p, float(t))

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


def _check_order(ds: h5py.Dataset, n: int, where: str) -> tuple[int, int]:
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
    return int(first), int(prev)


def _s(x: Any) -> str:
    if isinstance(x, bytes):
        return x.decode("utf-8", errors="replace")
    if isinstance(x, np.ndarray) and x.shape == ():
        return _s(x.item())
    return str(x)


# =============================================================================== finalising
def needs_finalise(path: str | Path) -> bool:
    """True when ``path`` was never closed by its writer and no live process is writing it.

    Such a file (its writer was killed) opens only in dynlab and other SWMR readers until
    :func:`finalise` makes it an ordinary, final HDF5 file. Ask the user before finalising:
    it writes to the file.
    """
    try:
        if lock_holder(path) is not None:
            return False
        sb = read_superblock(path)
        if sb is None:
            return False
        if sb.open_for_write:
            return True
        with h5py.File(path, "r", locking=False) as f:
            return _s(f.attrs.get("status", "")) == "recording"
    except (OSError, RuntimeError, ValueError):
        return False


def finalise(path: str | Path) -> str:
    """Make a recording whose writer is gone final and readable by every HDF5 tool.

    Clears the HDF5 write/SWMR flags a killed writer left set (as ``h5clear`` does), trims
    streams and events a killed writer left half-appended, sorts steps out of order (the
    last row written wins for a repeated step), and sets ``status = "interrupted"``,
    ``last_step`` and ``finalised_at`` when the file was never closed.

    Returns what was done, in words. Raises ``RecordingError`` while a live writer holds
    the file, or if it is too damaged to finalise.
    """
    p = str(path)
    if not Path(p).is_file():
        raise RecordingError(f"{p}: no such file")
    sb = read_superblock(p)
    if sb is None:
        raise RecordingError(f"{p}: not an HDF5 file (is it a dynlab recording?)")
    lock = WriterLock.acquire(p)  # refuses while a live writer holds it, and keeps others out
    done: list[str] = []
    try:
        if sb.truncated:
            raise RecordingError(
                f"{p}: truncated ({sb.size:,} of {sb.base + sb.eoa:,} bytes): too damaged to finalise"
            )
        if sb.open_for_write and clear_flags(p):
            done.append("cleared the HDF5 write flags its killed writer left")
        try:
            with h5py.File(p, "r+", locking=False) as f:
                _finalise_open(p, f, done)
        except RecordingError:
            raise
        except (OSError, RuntimeError, KeyError, ValueError, TypeError) as exc:
            raise RecordingError(f"{p}: cannot finalise: truncated or corrupt ({exc})") from None
        with Recording(p):
            pass  # it must open now
    finally:
        lock.release()
    return f"{p}: " + ("; ".join(done) if done else "already final, nothing to do")


def _finalise_open(p: str, f: h5py.File, done: list[str]) -> None:
    if "format_version" not in f.attrs or "streams" not in f:
        raise RecordingError(f"{p}: an HDF5 file, but not a dynlab recording (no format_version / streams)")
    streams = hard_child(f, "streams", "/streams")
    last = -1
    for name in list(streams):
        where = f"{p}: stream {name!r}"
        g = hard_child(streams, name, where)
        if not isinstance(g, h5py.Group) or "step" not in g or "value" not in g:
            continue
        st, va = hard_child(g, "step", f"{where}/step"), hard_child(g, "value", f"{where}/value")
        check_dataset(st, f"{where}/step", "iu")
        check_dataset(va, f"{where}/value", "iufb")
        n = min(st.shape[0], va.shape[0])
        if st.shape[0] != va.shape[0]:
            st.resize((n,))
            va.resize((n, *va.shape[1:]))
            done.append(f"trimmed stream {name!r} to its {n:,} complete rows")
        if n == 0:
            continue
        try:
            _check_order(st, n, where)
        except RecordingError:
            kept = _sort_stream(p, name, st, va, n)
            done.append(f"sorted stream {name!r} by step ({n - kept:,} repeated rows dropped)")
            n = kept
        last = max(last, int(st[n - 1]))
    e = hard_child(f, "events", "/events")
    if isinstance(e, h5py.Group) and all(k in e for k in ("step", "time", "kind", "payload")):
        lens = {k: e[k].shape[0] for k in ("step", "time", "kind", "payload")}
        n = min(lens.values())
        if len(set(lens.values())) > 1:
            for k in lens:
                hard_child(e, k, f"/events/{k}").resize((n,))
            done.append(f"trimmed events to their {n:,} complete rows")
    if _s(f.attrs.get("status", "recording")) == "recording":
        f.attrs["status"] = "interrupted"
        f.attrs["last_step"] = last
        f.attrs["finalised_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        done.append(f"status set to interrupted at step {last}")


def _sort_stream(p: str, name: str, st: h5py.Dataset, va: h5py.Dataset, n: int) -> int:
    row_bytes = 8 * max(1, int(np.prod(va.shape[1:])))
    if n * (row_bytes + 8) > _REPAIR_MAX_BYTES:
        raise RecordingError(f"{p}: stream {name!r} is too large to reorder ({n:,} rows)")
    steps = st[:n].astype(np.int64)
    order = np.argsort(steps, kind="stable")
    srt = steps[order]
    keep = order[np.r_[srt[1:] != srt[:-1], True]]  # the last row written of each step
    values = va[:n][keep]
    st.resize((len(keep),))
    va.resize((len(keep), *va.shape[1:]))
    st[:] = steps[keep]
    va[:] = values
    return len(keep)
