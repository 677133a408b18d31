"""Checkpoints inside a recording: plain bytes, a JSON index and a checksum. Opening one never runs code.

Layout (created with the recording, before SWMR starts, because a SWMR writer may only
append to datasets that already exist)::

    /checkpoints/step     int64 (n,)    the engine's step count when it was taken
    /checkpoints/offset   int64 (n,)    where its bytes start in ``data``
    /checkpoints/nbytes   int64 (n,)    how many bytes it has there
    /checkpoints/sha256   str   (n,)    hex digest of those bytes and of its ``index`` text
    /checkpoints/index    str   (n,)    JSON: {"arrays": {name: [dtype, shape, offset, nbytes]},
                                               "state": <the engine state's JSON half>}
    /checkpoints/data     uint8 (total,) every checkpoint's arrays, raw, one after another

Arrays are stored as raw little-endian bytes of a plain numeric dtype; reading checks the
checksum, the declared sizes against the bytes present, and the dtypes against a short
allow-list before anything is handed to an engine.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np

_STR = h5py.string_dtype("utf-8")
#: dtypes a checkpoint may hold (no objects, no structured or string arrays).
_DTYPES = frozenset(
    {
        "<f2",
        "<f4",
        "<f8",
        "<i1",
        "<i2",
        "<i4",
        "<i8",
        "|i1",
        "|u1",
        "<u1",
        "<u2",
        "<u4",
        "<u8",
        "|b1",
        "<c8",
        "<c16",
    }
)
#: A checkpoint larger than this is refused on read (a hostile index cannot make us allocate more).
MAX_CHECKPOINT_BYTES = 8 << 30


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, damaged or tampered with; the message says which and why."""


@dataclass(frozen=True)
class CheckpointInfo:
    """One checkpoint as listed by :func:`index` (no bytes read)."""

    step: int
    nbytes: int
    row: int


def create_tables(f: h5py.File) -> None:
    """Create the empty ``/checkpoints`` datasets (call before SWMR mode starts)."""
    g = f.create_group("checkpoints")
    g.attrs["description"] = "Engine state for branching: raw arrays in data, a JSON index, a sha256 each."
    for name, dt in (("step", "i8"), ("offset", "i8"), ("nbytes", "i8"), ("sha256", _STR), ("index", _STR)):
        g.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dt, chunks=(64,))
    g.create_dataset(
        "data",
        shape=(0,),
        maxshape=(None,),
        dtype="u1",
        chunks=(1 << 20,),
        compression="gzip",
        compression_opts=1,
    )


def append(f: h5py.File, step: int, arrays: Mapping[str, np.ndarray], state: Mapping[str, Any]) -> int:
    """Append one checkpoint; return its size in bytes (before compression)."""
    g = f["checkpoints"]
    entries: dict[str, list[Any]] = {}
    chunks = []
    pos = 0
    for name, arr in arrays.items():
        a = np.ascontiguousarray(arr)
        if a.dtype.byteorder == ">":
            a = a.astype(a.dtype.newbyteorder("<"))
        raw = a.tobytes()
        entries[name] = [a.dtype.str, list(a.shape), pos, len(raw)]
        chunks.append(raw)
        pos += len(raw)
    blob = b"".join(chunks)
    index_text = json.dumps({"arrays": entries, "state": state}, allow_nan=False, sort_keys=True)
    digest = hashlib.sha256(blob + index_text.encode()).hexdigest()
    data = g["data"]
    start = data.shape[0]
    data.resize((start + len(blob),))
    if blob:
        data[start:] = np.frombuffer(blob, dtype=np.uint8)
    n = g["step"].shape[0]
    for name, value in (
        ("step", step),
        ("offset", start),
        ("nbytes", len(blob)),
        ("sha256", digest),
        ("index", index_text),
    ):
        g[name].resize((n + 1,))
        g[name][n] = value
    return len(blob)


def _checked_group(f: h5py.File) -> h5py.Group | None:
    """``/checkpoints`` with every dataset checked (no links out, no external data, bounded chunks)."""
    from dynlab.h5safe import RecordingError, check_dataset, hard_child

    try:
        g = hard_child(f, "checkpoints", "/checkpoints")
        if g is None:
            return None
        for name, kinds in (
            ("step", "iu"),
            ("offset", "iu"),
            ("nbytes", "iu"),
            ("sha256", "str"),
            ("index", "str"),
            ("data", "u"),
        ):
            ds = hard_child(g, name, f"/checkpoints/{name}")
            if ds is None:
                raise CheckpointError(f"/checkpoints/{name} is missing")
            check_dataset(ds, f"/checkpoints/{name}", kinds)
    except RecordingError as exc:
        raise CheckpointError(str(exc)) from None
    return g


def index(f: h5py.File) -> list[CheckpointInfo]:
    """The checkpoints a recording holds, in step order (none if it has no ``/checkpoints``)."""
    g = _checked_group(f)
    if g is None:
        return []
    steps, sizes = g["step"][()], g["nbytes"][()]
    if steps.ndim != 1 or sizes.shape != steps.shape:
        raise CheckpointError("/checkpoints: step and nbytes have different lengths")
    return sorted(
        (CheckpointInfo(int(s), int(b), i) for i, (s, b) in enumerate(zip(steps, sizes))),
        key=lambda c: c.step,
    )


def nearest(f: h5py.File, step: int) -> CheckpointInfo | None:
    """The last checkpoint taken at or before ``step``."""
    before = [c for c in index(f) if c.step <= step]
    return before[-1] if before else None


def load(f: h5py.File, info: CheckpointInfo) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read and verify one checkpoint: ``(arrays, state json)``. Raises :class:`CheckpointError`."""
    g = f["checkpoints"]
    row = info.row
    offset, nbytes = int(g["offset"][row]), int(g["nbytes"][row])
    data = g["data"]
    if nbytes < 0 or offset < 0 or offset + nbytes > data.shape[0] or nbytes > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(f"checkpoint at step {info.step}: its byte range does not fit the stored data")
    index_raw = g["index"][row]
    index_text = index_raw.decode() if isinstance(index_raw, bytes) else str(index_raw)
    expected = g["sha256"][row]
    expected = expected.decode() if isinstance(expected, bytes) else str(expected)
    blob = data[offset : offset + nbytes].tobytes()
    if hashlib.sha256(blob + index_text.encode()).hexdigest() != expected:
        raise CheckpointError(
            f"checkpoint at step {info.step} fails its checksum: the file was damaged or edited"
        )
    try:
        doc = json.loads(index_text)
        entries, state = doc["arrays"], doc["state"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"checkpoint at step {info.step}: unreadable index ({exc})") from None
    arrays: dict[str, np.ndarray] = {}
    for name, (dtype, shape, pos, size) in entries.items():
        if dtype not in _DTYPES:
            raise CheckpointError(
                f"checkpoint at step {info.step}: array {name!r} has a refused dtype {dtype!r}"
            )
        dt = np.dtype(dtype)
        count = int(np.prod(shape)) if shape else 1
        if pos < 0 or size != count * dt.itemsize or pos + size > nbytes:
            raise CheckpointError(f"checkpoint at step {info.step}: array {name!r} does not fit its bytes")
        arrays[name] = np.frombuffer(blob, dtype=dt, count=count, offset=pos).reshape(shape).copy()
    return arrays, state
