"""The wire format of the watch channel: length-prefixed JSON plus raw numpy bytes.

One message is ``>II`` (JSON length, binary length), the JSON text (UTF-8), then the
binary blob. A numpy array anywhere in the message travels as
``{"__nd__": [dtype, shape, offset]}`` pointing into the blob. Nothing received is
unpickled or evaluated: JSON is parsed by :mod:`json`, arrays are rebuilt with
``np.frombuffer`` from a whitelisted numeric dtype, and every length is bounded.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import asdict, fields
from typing import Any

import numpy as np

from dynlab.engines.spec import Event, Param, Stream

_HEAD = struct.Struct(">II")
#: Largest JSON part and blob a peer may send (a display batch is far smaller).
MAX_JSON = 16 << 20
MAX_BLOB = 256 << 20
_DTYPE = re.compile(r"^[<>|=]?[biuf][1248]$")


class ProtocolError(ValueError):
    """A peer sent something that is not a well-formed message of this protocol."""


def encode(msg: dict[str, Any]) -> bytes:
    """One message as bytes (arrays go into the blob, the rest into JSON)."""
    blob = bytearray()

    def walk(x: Any) -> Any:
        if isinstance(x, np.ndarray):
            arr = np.ascontiguousarray(x)
            if arr.dtype.kind not in "biuf":
                arr = arr.astype(np.float64)
            ref = {"__nd__": [arr.dtype.str, list(arr.shape), len(blob)]}
            blob.extend(arr.tobytes())
            return ref
        if isinstance(x, dict):
            return {str(k): walk(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [walk(v) for v in x]
        if isinstance(x, np.generic):
            return x.item()
        return x

    text = json.dumps(walk(msg), default=str).encode("utf-8")
    return _HEAD.pack(len(text), len(blob)) + text + bytes(blob)


def _rebuild(x: Any, blob: bytes) -> Any:
    if isinstance(x, dict):
        ref = x.get("__nd__")
        if ref is not None and len(x) == 1:
            return _array(ref, blob)
        return {k: _rebuild(v, blob) for k, v in x.items()}
    if isinstance(x, list):
        return [_rebuild(v, blob) for v in x]
    return x


def _array(ref: Any, blob: bytes) -> np.ndarray:
    if not (isinstance(ref, list) and len(ref) == 3):
        raise ProtocolError("bad array reference")
    dtype, shape, offset = ref
    if not isinstance(dtype, str) or not _DTYPE.match(dtype):
        raise ProtocolError(f"array dtype {dtype!r} is not a plain number type")
    if not isinstance(shape, list) or not all(isinstance(n, int) and 0 <= n < 2**31 for n in shape):
        raise ProtocolError("bad array shape")
    if not isinstance(offset, int) or offset < 0:
        raise ProtocolError("bad array offset")
    dt = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if offset + count * dt.itemsize > len(blob):
        raise ProtocolError("array runs past the end of the message")
    return np.frombuffer(blob, dtype=dt, count=count, offset=offset).reshape(shape)


class Decoder:
    """Cuts a byte stream into messages; ``limit`` bounds one message (smaller before login)."""

    def __init__(self, limit: int = MAX_JSON + MAX_BLOB) -> None:
        self.buf = bytearray()
        self.limit = limit

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        """Append received bytes; return the complete messages (raises ``ProtocolError``)."""
        self.buf.extend(data)
        out = []
        while len(self.buf) >= _HEAD.size:
            n_json, n_blob = _HEAD.unpack_from(self.buf)
            if n_json > MAX_JSON or n_blob > MAX_BLOB or n_json + n_blob > self.limit:
                raise ProtocolError(f"message of {n_json + n_blob} bytes is over the limit")
            end = _HEAD.size + n_json + n_blob
            if len(self.buf) < end:
                break
            text = bytes(self.buf[_HEAD.size : _HEAD.size + n_json])
            blob = bytes(self.buf[_HEAD.size + n_json : end])
            del self.buf[:end]
            try:
                msg = json.loads(text.decode("utf-8"))
            except (UnicodeDecodeError, ValueError, RecursionError) as exc:
                raise ProtocolError(f"not JSON: {exc}") from None
            if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
                raise ProtocolError("a message is a JSON object with a 'type'")
            try:
                out.append(_rebuild(msg, blob))
            except RecursionError:
                raise ProtocolError("message nested too deeply") from None
        return out


# ---------------------------------------------------------------------------- the contract as plain data
def stream_to_dict(s: Stream) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(s).items()}


def stream_from_dict(d: dict[str, Any]) -> Stream:
    """Rebuild a :class:`Stream` from a peer's dict (unknown keys ignored, types checked by Stream)."""
    kw = {k: d[k] for k in _STREAM_FIELDS if k in d}
    for k in ("shape", "labels", "rows", "cols", "groups"):
        if k in kw:
            kw[k] = tuple(int(x) if k == "shape" else str(x) for x in kw[k])
    return Stream(**kw)


def param_to_dict(p: Param) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(p).items()}


def param_from_dict(d: dict[str, Any]) -> Param:
    kw = {k: d[k] for k in _PARAM_FIELDS if k in d}
    if "choices" in kw:
        kw["choices"] = tuple(str(c) for c in kw["choices"])
    return Param(**kw)


def event_to_dict(e: Event) -> dict[str, Any]:
    return {"step": e.step, "kind": e.kind, "payload": dict(e.payload), "time": e.time}


def event_from_dict(d: dict[str, Any]) -> Event:
    payload = d.get("payload", {})
    return Event(
        int(d["step"]),
        str(d["kind"]),
        payload if isinstance(payload, dict) else {},
        float(d.get("time", 0.0)),
    )


_STREAM_FIELDS = tuple(f.name for f in fields(Stream))
_PARAM_FIELDS = tuple(f.name for f in fields(Param))
