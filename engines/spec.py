"""The contract between an engine and everything else: specs, streams and frames.

This module is deliberately free of torch, Qt and h5py so that the lab, the recorder,
the views and remote hosts can all speak it. Everything crossing a thread or process
boundary is plain data: numbers, strings and numpy arrays.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

StreamKind = Literal["scalar", "vector", "histogram", "heatmap", "points"]
STREAM_KINDS: tuple[str, ...] = ("scalar", "vector", "histogram", "heatmap", "points")
ParamType = Literal["float", "int", "bool", "str"]


class SpecError(ValueError):
    """A value does not satisfy an engine's spec (bad name, type or range)."""


@dataclass(frozen=True)
class Param:
    """One hyperparameter of an engine.

    Parameters
    ----------
    name
        PyTorch/paper name (``lr``, ``momentum``, ``weight_decay``, ``batch_size``...).
    type
        ``"float"``, ``"int"``, ``"bool"`` or ``"str"``.
    default
        Value used when the preset does not set it.
    low, high
        Inclusive bounds for numbers (``None`` = unbounded).
    choices
        Allowed values for strings.
    unit
        Human-readable unit (may be empty).
    live
        Whether the value may be changed while the run is going.
    help
        One sentence for tooltips and ``dynlab inspect``.
    log
        Hint for widgets: the natural scale is logarithmic.
    """

    name: str
    type: ParamType
    default: Any
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    unit: str = ""
    live: bool = False
    help: str = ""
    log: bool = False

    def coerce(self, value: Any, *, where: str = "", from_text: bool = False) -> Any:
        """Return ``value`` converted to this parameter's type, or raise ``SpecError``.

        Integers are accepted for floats; with ``from_text`` strings are parsed (the
        CLI's ``--set lr=0.1``). Booleans are never accepted as numbers.
        """
        prefix = f"{where}: " if where else ""
        name = self.name
        if from_text and isinstance(value, str) and self.type != "str":
            value = _parse_text(value, self.type, f"{prefix}{name}")
        if self.type == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise SpecError(f"{prefix}{name} must be a number, got {value!r}")
            value = float(value)
            if not math.isfinite(value):
                raise SpecError(f"{prefix}{name} must be finite, got {value!r}")
        elif self.type == "int":
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                if isinstance(value, float) and value.is_integer():
                    value = int(value)
                else:
                    raise SpecError(f"{prefix}{name} must be an integer, got {value!r}")
            value = int(value)
        elif self.type == "bool":
            if not isinstance(value, (bool, np.bool_)):
                raise SpecError(f"{prefix}{name} must be true or false, got {value!r}")
            value = bool(value)
        elif self.type == "str":
            if not isinstance(value, str):
                raise SpecError(f"{prefix}{name} must be a string, got {value!r}")
            if self.choices and value not in self.choices:
                raise SpecError(f"{prefix}{name} must be one of {', '.join(self.choices)}; got {value!r}")
        if self.type in ("float", "int"):
            if self.low is not None and value < self.low:
                raise SpecError(f"{prefix}{name} = {value} is below its minimum {self.low}")
            if self.high is not None and value > self.high:
                raise SpecError(f"{prefix}{name} = {value} is above its maximum {self.high}")
        return value

    def describe_bounds(self) -> str:
        """Short text such as ``float in [0, 10] (1/step)``."""
        if self.choices:
            return f"one of {', '.join(self.choices)}"
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        rng = f" in [{lo}, {hi}]" if self.type in ("float", "int") else ""
        unit = f" ({self.unit})" if self.unit else ""
        return f"{self.type}{rng}{unit}"


def _parse_text(text: str, type_: str, what: str) -> Any:
    t = text.strip()
    try:
        if type_ == "float":
            return float(t)
        if type_ == "int":
            return int(t)
        if type_ == "bool":
            low = t.lower()
            if low in ("true", "1", "yes", "on"):
                return True
            if low in ("false", "0", "no", "off"):
                return False
    except ValueError:
        pass
    raise SpecError(f"{what}: cannot read {text!r} as {type_}")


@dataclass(frozen=True)
class Stream:
    """A named quantity an engine emits, one array per recorded step.

    Kinds and the shape of one frame's value:

    * ``scalar``: shape ``()``.
    * ``vector``: shape ``(K,)``; ``labels`` names the K items (series).
    * ``histogram``: shape ``(3, B)``; rows are the left edges, right edges and the
      weight (density or mass) of B bins. Bins may be non-uniform and change each step.
    * ``heatmap``: shape ``(R, C)``; ``rows`` and ``cols`` name the axes' entries.
    * ``points``: shape ``(N, 2)`` or ``(N, 3)``; ``labels`` names each point and
      ``groups`` (same length, optional) says which set a point belongs to
      (``"mean"``, ``"classifier"``...), so a view can colour and connect them.

    ``description`` says what the stream shows; ``theory`` what the paper predicts.
    """

    name: str
    kind: StreamKind
    shape: tuple[int, ...] = ()
    units: str = ""
    description: str = ""
    theory: str = ""
    labels: tuple[str, ...] = ()
    rows: tuple[str, ...] = ()
    cols: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    log_scale: bool = False

    def __post_init__(self) -> None:
        if self.kind not in STREAM_KINDS:
            raise SpecError(f"stream {self.name!r}: unknown kind {self.kind!r}")

    def check(self, value: np.ndarray) -> np.ndarray:
        """Return ``value`` as a float array of this stream's shape, or raise ``SpecError``."""
        arr = np.asarray(value)
        if arr.dtype.kind not in "fiub":
            raise SpecError(f"stream {self.name!r}: values must be numeric, got {arr.dtype}")
        if self.kind == "histogram":
            ok = arr.ndim == 2 and arr.shape[0] == 3
        elif self.kind == "points":
            ok = arr.ndim == 2 and arr.shape[1] in (2, 3)
        else:
            ok = arr.shape == tuple(self.shape)
        if not ok:
            raise SpecError(
                f"stream {self.name!r} ({self.kind}): frame has shape {arr.shape}, expected {self.shape}"
            )
        return arr


@dataclass(frozen=True)
class EngineSpec:
    """What an engine is: its name, the paper, its hyperparameters and its streams.

    ``streams`` here are the declared streams; an engine instance may refine labels
    and shapes that depend on hyperparameters (``Engine.streams``).
    ``probes`` maps an expensive measurement's name to its default cadence in steps
    (a preset's ``[probes]`` table overrides it).
    """

    name: str
    title: str
    description: str
    paper: str
    params: tuple[Param, ...]
    streams: tuple[Stream, ...]
    probes: Mapping[str, int] = field(default_factory=dict)
    version: str = "1"

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise SpecError(
            f"engine {self.name!r} has no hyperparameter {name!r}{suggest(name, self.param_names())}"
        )

    def param_names(self) -> list[str]:
        return [p.name for p in self.params]

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def validate(self, values: Mapping[str, Any], *, where: str = "") -> dict[str, Any]:
        """Full hyperparameter dict: defaults overridden by ``values``, all checked."""
        out = self.defaults()
        for key, value in values.items():
            out[key] = self.param(key).coerce(value, where=where)
        return out


def suggest(name: str, options: list[str]) -> str:
    """Text like ``" (did you mean 'lr'?)"`` for a misspelt name, else ``""``."""
    import difflib

    close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


@dataclass(frozen=True)
class Frame:
    """The measurements of one step. Immutable; arrays are private copies.

    ``data`` maps stream names to numpy arrays; a stream measured at its own cadence
    is simply absent from the frames in between.
    """

    step: int
    data: Mapping[str, np.ndarray]
    time: float = 0.0

    @staticmethod
    def make(step: int, data: Mapping[str, Any], time: float = 0.0) -> Frame:
        """Build a frame from any array-likes, copying so no live buffer leaks out."""
        copied = {}
        for k, v in data.items():
            a = np.array(v, copy=True)
            a.setflags(write=False)
            copied[k] = a
        return Frame(int(step), copied, float(time))


@dataclass(frozen=True)
class Event:
    """Something that happened at a step: a live change, pause, phase, warning, end.

    ``kind`` is one of ``set``, ``pause``, ``resume``, ``phase``, ``warning``,
    ``diverged``, ``failed``, ``start``, ``end``, ``info``; ``payload`` is JSON-able.
    """

    step: int
    kind: str
    payload: Mapping[str, Any]
    time: float = 0.0

    @property
    def label(self) -> str:
        """Short text for a marker on a time axis."""
        p = self.payload
        if self.kind == "set":
            return f"{p.get('name')}: {p.get('old')} → {p.get('new')}"
        if "name" in p:
            return f"{self.kind}: {p['name']}"
        if "message" in p:
            return f"{self.kind}: {p['message']}"
        return self.kind
