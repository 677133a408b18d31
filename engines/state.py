"""Capture and restore an engine's whole state as plain arrays plus JSON, generically.

A checkpoint must be storable in a recording that strangers open, so it holds no pickle
and nothing that runs code when read: every tensor and array becomes a named numpy array,
everything else a JSON value. :func:`capture` walks the engine's attributes once and
collects what it knows how to save:

* ``torch.nn.Module`` — its ``state_dict()`` (parameters and buffers);
* ``torch.optim.Optimizer`` — per-parameter state tensors, and its ``param_groups``
  (hyperparameters such as a live-edited ``lr``) as JSON;
* ``torch.Tensor`` and ``numpy.ndarray`` attributes;
* ``torch.Generator``, ``numpy.random.Generator``/``RandomState`` and ``random.Random`` —
  the data order and any sampling an engine owns;
* JSON-able plain values (numbers, strings, lists and dicts of them): counters, EMAs,
  histories kept by probes;
* small helper objects defined in ``dynlab.engines`` (a tuner, a probe with memory),
  attribute by attribute;
* plus the process-wide torch, numpy and Python RNG states, which :meth:`Engine.start` seeds.

Restoring writes tensors back *in place*, so an attribute that aliases a model's weight
stays the same object. An engine with state that none of these cover declares it with
two small hooks, ``extra_state() -> (arrays, json)`` and ``load_extra_state(arrays, json)``;
attributes it wants left alone go in ``state_exclude``. Anything else is an error that
names the attribute: a checkpoint never silently misses state.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from typing import Any, cast

import numpy as np
import torch

#: Attributes of the Engine base class that are configuration or transient, not state.
_BASE_SKIP = frozenset(
    {"spec", "seed", "device", "cadence", "_events", "_probe_seconds", "_started", "guarded", "_budget"}
)
_JSON_SCALARS = (bool, int, float, str, type(None))


class StateError(RuntimeError):
    """An engine attribute that cannot be captured, or a checkpoint that does not fit the engine."""


def _jsonable(value: Any) -> bool:
    if isinstance(value, _JSON_SCALARS):
        return True
    if isinstance(value, (list, tuple)):
        return all(_jsonable(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _jsonable(v) for k, v in value.items())
    return False


def _to_json(value: Any) -> Any:
    """Floats that JSON cannot spell (nan, inf) are tagged so they round-trip exactly."""
    if isinstance(value, float) and not np.isfinite(value):
        return {"__float__": repr(value)}
    if isinstance(value, (list, tuple)):
        return (
            {"__tuple__": [_to_json(v) for v in value]}
            if isinstance(value, tuple)
            else [_to_json(v) for v in value]
        )
    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    return value


def _from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__float__"}:
            return float(value["__float__"])
        if set(value) == {"__tuple__"}:
            return tuple(_from_json(v) for v in value["__tuple__"])
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


def _tensor_array(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu").clone().numpy()


class _Collector:
    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self.meta: dict[str, Any] = {}

    def add(self, path: str, value: Any, seen: dict[int, str]) -> None:
        """Record ``value`` found at attribute ``path``; raise if it cannot be stored."""
        if isinstance(value, (torch.nn.Module, torch.optim.Optimizer, torch.Tensor)) and id(value) in seen:
            self.meta[path] = {"type": "alias", "of": seen[id(value)]}
            return
        if isinstance(value, (torch.nn.Module, torch.optim.Optimizer, torch.Tensor)):
            seen[id(value)] = path
        if isinstance(value, torch.nn.Module):
            sd = value.state_dict()
            for k, t in sd.items():
                self.arrays[f"{path}/{k}"] = _tensor_array(t)
            self.meta[path] = {"type": "module", "keys": list(sd)}
        elif isinstance(value, torch.optim.Optimizer):
            sd = value.state_dict()
            state: dict[str, dict[str, Any]] = {}
            for idx, slots in sd["state"].items():
                entry: dict[str, Any] = {}
                for k, v in slots.items():
                    if isinstance(v, torch.Tensor):
                        self.arrays[f"{path}/state/{idx}/{k}"] = _tensor_array(v)
                        entry[k] = {"tensor": True}
                    else:
                        entry[k] = _to_json(v)
                state[str(idx)] = entry
            self.meta[path] = {
                "type": "optimizer",
                "state": state,
                "param_groups": _to_json(sd["param_groups"]),
            }
        elif isinstance(value, torch.Tensor):
            self.arrays[path] = _tensor_array(value)
            self.meta[path] = {"type": "tensor"}
        elif isinstance(value, np.ndarray) and value.dtype != object:
            self.arrays[path] = value.copy()
            self.meta[path] = {"type": "ndarray"}
        elif isinstance(value, torch.Generator):
            self.arrays[path] = value.get_state().numpy().copy()
            self.meta[path] = {"type": "torch_generator"}
        elif isinstance(value, np.random.Generator):
            self.meta[path] = {"type": "numpy_generator", "state": _to_json(value.bit_generator.state)}
        elif isinstance(value, np.random.RandomState):
            name, keys, pos, has_gauss, gauss = value.get_state()
            self.arrays[path] = np.asarray(keys).copy()
            self.meta[path] = {
                "type": "random_state",
                "name": name,
                "pos": int(pos),
                "has_gauss": int(has_gauss),
                "gauss": float(gauss),
            }
        elif isinstance(value, random.Random):
            self.meta[path] = {"type": "python_random", "state": _to_json(value.getstate())}
        elif isinstance(value, np.generic):
            self.meta[path] = {"type": "json", "value": _to_json(value.item())}
        elif _jsonable(value):
            self.meta[path] = {"type": "json", "value": _to_json(value)}
        elif isinstance(value, (list, tuple)) and value:
            self.meta[path] = {"type": "list", "tuple": isinstance(value, tuple), "n": len(value)}
            for i, v in enumerate(value):
                self.add(f"{path}[{i}]", v, seen)
        elif isinstance(value, dict) and value and all(isinstance(k, str) for k in value):
            self.meta[path] = {"type": "dict", "keys": list(value)}
            for k, v in value.items():
                self.add(f"{path}[{k}]", v, seen)
        elif type(value).__module__.startswith("dynlab.engines") and hasattr(value, "__dict__"):
            # A small helper object of an engine (a tuner, a probe with memory): its attributes.
            self.meta[path] = {"type": "object", "keys": sorted(vars(value))}
            for k in sorted(vars(value)):
                self.add(f"{path}[{k}]", getattr(value, k), seen)
        elif callable(value) or isinstance(value, (type, torch.device, torch.dtype)):
            self.meta[path] = {"type": "keep"}  # functions, classes, devices: rebuilt by setup()
        else:
            raise StateError(
                f"cannot capture attribute {path!r} of type {type(value).__name__}: declare it in "
                "the engine's state_exclude or save it with extra_state()/load_extra_state()"
            )


def capture(engine: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The engine's state as ``(arrays, json)``: plain numpy arrays and a JSON-able dict."""
    col = _Collector()
    seen: dict[int, str] = {}
    skip = _BASE_SKIP | set(getattr(engine, "state_exclude", ()))
    for name in sorted(vars(engine)):
        if name in skip:
            continue
        col.add(name, getattr(engine, name), seen)
    col.arrays["__rng__/torch"] = torch.get_rng_state().numpy().copy()
    # The global RandomState is an MT19937: legacy get_state() is always the 5-tuple.
    np_state = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state(legacy=True))
    col.arrays["__rng__/numpy_keys"] = np.asarray(np_state[1]).copy()
    col.meta["__rng__"] = {
        "numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": _to_json(random.getstate()),
    }
    hook = getattr(engine, "extra_state", None)
    if hook is not None:
        arrays, extra = hook()
        for k, v in arrays.items():
            col.arrays[f"__extra__/{k}"] = np.asarray(v)
        col.meta["__extra__"] = _to_json(extra)
    return col.arrays, col.meta


def restore(engine: Any, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
    """Put a state captured by :func:`capture` back into an engine that has run ``setup()``."""
    roots = sorted({k for k in meta if not k.startswith("__") and "[" not in k and "/" not in k})
    for name in roots:
        value = _restore(engine, getattr(engine, name, None), name, arrays, meta)
        setattr(engine, name, value)
    torch.set_rng_state(torch.from_numpy(np.asarray(arrays["__rng__/torch"], dtype=np.uint8).copy()))
    name, pos, has_gauss, gauss = meta["__rng__"]["numpy"]
    np.random.set_state(
        (name, np.asarray(arrays["__rng__/numpy_keys"], dtype=np.uint32), pos, has_gauss, gauss)
    )
    random.setstate(_python_state(meta["__rng__"]["python"]))
    hook = getattr(engine, "load_extra_state", None)
    if "__extra__" in meta:
        if hook is None:
            raise StateError("checkpoint has extra state but the engine has no load_extra_state()")
        extra = {k[len("__extra__/") :]: v for k, v in arrays.items() if k.startswith("__extra__/")}
        hook(extra, _from_json(meta["__extra__"]))


def _python_state(raw: Any) -> tuple:
    version, internal, gauss = _from_json(raw)
    return (version, tuple(internal), gauss)


def _copy_into(t: torch.Tensor, arr: np.ndarray, path: str) -> torch.Tensor:
    src = torch.from_numpy(np.ascontiguousarray(arr))
    if tuple(t.shape) != tuple(src.shape) or t.dtype != src.dtype:
        # A buffer the engine re-creates as it goes (a shuffled order, a growing history):
        # replace it rather than writing into the old one.
        return src.clone().to(t.device)
    with torch.no_grad():
        t.copy_(src.to(t.dtype))
    return t


def _restore(
    engine: Any, current: Any, path: str, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]
) -> Any:
    m = meta[path]
    kind = m["type"]
    if kind == "alias":
        return _resolve(engine, m["of"])
    if kind == "module":
        sd = {k: torch.from_numpy(np.ascontiguousarray(arrays[f"{path}/{k}"])) for k in m["keys"]}
        current.load_state_dict(sd)
        return current
    if kind == "optimizer":
        params_of = current.state_dict()["param_groups"]
        groups = _from_json(m["param_groups"])
        if len(groups) != len(params_of):
            raise StateError(
                f"{path}: checkpoint has {len(groups)} parameter groups, engine {len(params_of)}"
            )
        state: dict[int, dict[str, Any]] = {}
        for idx, slots in m["state"].items():
            state[int(idx)] = {
                k: torch.from_numpy(np.ascontiguousarray(arrays[f"{path}/state/{idx}/{k}"]))
                if isinstance(v, dict) and v.get("tensor")
                else _from_json(v)
                for k, v in slots.items()
            }
        current.load_state_dict({"state": state, "param_groups": groups})
        return current
    if kind == "tensor":
        arr = arrays[path]
        if isinstance(current, torch.Tensor):
            return _copy_into(current, arr, path)
        return torch.from_numpy(np.ascontiguousarray(arr)).to(engine.device)
    if kind == "ndarray":
        arr = np.array(arrays[path])
        if isinstance(current, np.ndarray) and current.shape == arr.shape and current.flags.writeable:
            current[...] = arr
            return current
        return arr
    if kind == "torch_generator":
        gen = current if isinstance(current, torch.Generator) else torch.Generator()
        gen.set_state(torch.from_numpy(np.asarray(arrays[path], dtype=np.uint8).copy()))
        return gen
    if kind == "numpy_generator":
        rng = current if isinstance(current, np.random.Generator) else np.random.default_rng()
        rng.bit_generator.state = _from_json(m["state"])
        return rng
    if kind == "random_state":
        rs = current if isinstance(current, np.random.RandomState) else np.random.RandomState()
        rs.set_state(
            (m["name"], np.asarray(arrays[path], dtype=np.uint32), m["pos"], m["has_gauss"], m["gauss"])
        )
        return rs
    if kind == "python_random":
        rnd = current if isinstance(current, random.Random) else random.Random()
        rnd.setstate(_python_state(m["state"]))
        return rnd
    if kind == "json":
        return _from_json(m["value"])
    if kind == "list":
        cur = (
            list(current)
            if isinstance(current, (list, tuple)) and len(current) == m["n"]
            else [None] * m["n"]
        )
        out = [_restore(engine, cur[i], f"{path}[{i}]", arrays, meta) for i in range(m["n"])]
        if isinstance(current, list) and len(current) == len(out):
            current[:] = out  # keep the same list object (others may hold it)
            return current
        return tuple(out) if m["tuple"] else out
    if kind == "dict":
        old = current if isinstance(current, dict) else {}
        new = {k: _restore(engine, old.get(k), f"{path}[{k}]", arrays, meta) for k in m["keys"]}
        if isinstance(current, dict):
            current.clear()
            current.update(new)
            return current
        return new
    if kind == "keep":
        return current
    if kind == "object":
        if current is None:
            raise StateError(f"{path}: the engine has no object here to restore into (setup() makes it)")
        for k in m["keys"]:
            setattr(current, k, _restore(engine, getattr(current, k, None), f"{path}[{k}]", arrays, meta))
        return current
    raise StateError(f"{path}: unknown state kind {kind!r}")


def _resolve(engine: Any, path: str) -> Any:
    """The object at an attribute path such as ``models[0]`` or ``opt``."""
    head, _, rest = path.partition("[")
    obj = getattr(engine, head)
    while rest:
        key, _, rest = rest.partition("]")
        rest = rest.lstrip("[")
        if isinstance(obj, (list, tuple)):
            obj = obj[int(key)]
        elif isinstance(obj, dict):
            obj = obj[key]
        else:
            obj = getattr(obj, key)
    return obj


def to_json_text(meta: Mapping[str, Any]) -> str:
    """The JSON half of a checkpoint as text (strict: no NaN literals)."""
    return json.dumps(meta, allow_nan=False, sort_keys=True)
