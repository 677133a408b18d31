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

This module is the writer and the public face of recordings: :class:`Recording` (the
reader, :mod:`dynlab.recording_reader`) treats every file as untrusted, and
:func:`finalise` (:mod:`dynlab.recording_repair`) makes a killed writer's file final.
"""

from __future__ import annotations

import atexit
import json
import os
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from dynlab import __version__, checkpoint
from dynlab.frames import Event, Frame, Stream
from dynlab.h5safe import RecordingError, WriterLock, describe_holder, lock_holder, read_superblock, show
from dynlab.recording_reader import FORMAT_VERSION, LABEL_ATTRS, Recording
from dynlab.recording_repair import finalise, needs_finalise

__all__ = [
    "FINAL_STATUSES",
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

_STR = h5py.string_dtype("utf-8")
_HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5")
#: Final statuses; ``recording`` means open (or its writer was killed), ``interrupted`` ended by force.
FINAL_STATUSES = ("finished", "stopped", "failed", "diverged", "interrupted", "completed")

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
                f = self._f = h5py.File(self.path, "w", libver="latest")
            except OSError as exc:
                raise RecordingError(f"cannot create recording {self.path}: {exc}") from None
            self._init_file(f, streams, meta)
            self._maybe_swmr(f)
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

    def _init_file(self, f: h5py.File, streams: Sequence[Stream], meta: Mapping[str, Any]) -> None:
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
            for attr in LABEL_ATTRS:
                vals = getattr(s, attr)
                if vals:
                    sg.attrs.create(attr, np.array(vals, dtype=object), dtype=_STR)
            shape = self._known_shape(s)
            if shape is not None:
                self._create(f, s, shape)
        e = f.create_group("events")
        e.attrs["description"] = "One row per event: live changes, pauses, phases, warnings, divergence, end."
        for name, dt in (("step", "i8"), ("time", "f8"), ("kind", _STR), ("payload", _STR)):
            e.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dt, chunks=(256,))
        checkpoint.create_tables(f)  # before SWMR: a SWMR writer may only append to existing datasets

    @staticmethod
    def _known_shape(s: Stream) -> tuple[int, ...] | None:
        if s.kind in ("histogram", "points") and not s.shape:
            return None
        return tuple(s.shape)

    def _create(self, f: h5py.File, s: Stream, shape: tuple[int, ...]) -> None:
        sg = f["streams"][s.name]
        row = int(np.prod(shape)) if shape else 1
        rows = max(1, min(4096, (1 << 16) // max(row, 1)))
        # Compression pays for wide rows (spectra, heatmaps); scalars stay raw for speed.
        comp = {"compression": "gzip", "compression_opts": 1, "shuffle": True} if row >= 64 else {}
        sg.create_dataset("step", shape=(0,), maxshape=(None,), dtype="i8", chunks=(rows,))
        sg.create_dataset(
            "value", shape=(0, *shape), maxshape=(None, *shape), dtype="f8", chunks=(rows, *shape), **comp
        )
        sg["value"].attrs["shape_per_step"] = np.array(shape, dtype="i8")

    def _maybe_swmr(self, f: h5py.File) -> None:
        if not self._swmr and all("value" in f["streams"][n] for n in self._streams):
            f.swmr_mode = True
            self._swmr = True

    def _check_open(self) -> h5py.File:
        if self.error is not None:
            raise self.error
        if self._f is None:
            raise RecordingError(f"writing {self.path} failed: the recording is closed")
        return self._f

    def write(self, frame: Frame) -> None:
        """Queue one frame; appends happen at the flush interval."""
        with self._lock:
            self._check_open()
            for name, value in frame.data.items():
                if name in self._pending:
                    self._pending[name].append((frame.step, value))
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
                        self._create(f, self._streams[name], rows[0][1].shape)
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
                self._maybe_swmr(f)
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

    def checkpoint(self, step: int, arrays: Mapping[str, np.ndarray], state: Mapping[str, Any]) -> int:
        """Store the engine's state at ``step`` (pending rows are written first); return its bytes."""
        with self._lock:
            f = self._check_open()
            self.flush()
            try:
                n = checkpoint.append(f, step, arrays, state)
                f.flush()
            except (OSError, ValueError, TypeError) as exc:
                raise RecordingError(f"writing a checkpoint to {self.path} failed: {exc}") from None
            return n

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

    @property
    def last_flush(self) -> float:
        """``time.monotonic()`` of the last flush (a host flushing on its own clock reads it)."""
        return self._last_flush


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
