"""Finalising a recording whose writer was killed, so every HDF5 tool reads it again."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import h5py
import numpy as np

from dynlab.h5safe import (
    RecordingError,
    WriterLock,
    check_dataset,
    clear_flags,
    hard_child,
    lock_holder,
    read_superblock,
)
from dynlab.recording_reader import Recording, check_order, text

#: Most bytes ``finalise`` loads to reorder one stream.
_REPAIR_MAX_BYTES = 1 << 30


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
            return text(f.attrs.get("status", "")) == "recording"
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
            check_order(st, n, where)
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
    if text(f.attrs.get("status", "recording")) == "recording":
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
