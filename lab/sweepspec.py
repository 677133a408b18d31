"""A preset's ``[sweep]`` table: the grid, the seeds, and the summaries of each trial.

Light on purpose (no h5py, no torch): ``dynlab.presets`` parses it with every preset. The
format is documented in ``docs/presets.md``::

    [sweep]
    seeds = "0-2"                      # a range "0-4", a list "0,3,7", or an array [0, 3, 7]
    steps = 1500                       # optional: overrides [run].steps for every trial
    [sweep.grid]                       # hyperparameter -> values (the first is the x axis)
    train_fraction = [0.1, 0.2, 0.3]
    weight_decay = [1e-4, 1e-3]
    [[sweep.summaries]]                # one number per trial, drawn as a phase diagram
    name = "epoch of grokking"
    event = "phase:generalisation"     # the step at which this event first fires...
    never = "never"                    # ...and what to call a trial where it never does
    boundary = "critical_fraction"     # optional: a stream whose value is drawn as a line
    boundary_param = "train_fraction"  #   across the diagram at that value of this parameter
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dynlab.engines.spec import suggest

REDUCTIONS = ("final", "max", "min", "median_tail")
_SWEEP_KEYS = ("grid", "seeds", "steps", "summaries")
_SUMMARY_KEYS = {
    "name": str,
    "stream": str,
    "column": int,
    "reduce": str,
    "event": str,
    "never": str,
    "log": bool,
    "reference": str,
    "boundary": str,
    "boundary_param": str,
}


class SweepSpecError(ValueError):
    """A malformed ``[sweep]`` table or ``--seeds``/``--grid`` argument."""


@dataclass(frozen=True)
class Summary:
    """One number per trial.

    Either a stream's value (``stream``, column ``column``, reduced by ``reduce``: the
    final row, the max, the min, or the median of the last quarter of the rows) or the
    step at which an event first fires (``event``: ``"diverged"``, or ``"phase:NAME"``
    for a phase event named NAME); a trial where the event never fires is ``never``.
    ``reference`` is a stream reduced the same way and drawn beside the summary (2/η
    beside the final sharpness); ``boundary`` is a stream whose final value is a value of
    the parameter ``boundary_param``, drawn as a line across the diagram there.
    """

    name: str
    stream: str = ""
    column: int = 0
    reduce: str = "final"
    event: str = ""
    never: str = "never"
    log: bool = False
    reference: str = ""
    boundary: str = ""
    boundary_param: str = ""

    @property
    def event_kind(self) -> str:
        return self.event.split(":", 1)[0]

    @property
    def event_name(self) -> str:
        return self.event.split(":", 1)[1] if ":" in self.event else ""

    def streams(self) -> tuple[str, ...]:
        """The streams this summary reads."""
        return tuple(s for s in (self.stream, self.reference, self.boundary) if s)


@dataclass(frozen=True)
class SweepSpec:
    """What ``dynlab sweep PRESET`` runs when no ``--grid``/``--seeds`` are given."""

    grid: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    seeds: tuple[int, ...] = (0,)
    steps: int | None = None
    summaries: tuple[Summary, ...] = ()


def parse_seeds(text: str | list[int] | tuple[int, ...]) -> tuple[int, ...]:
    """Seeds from ``"0-4"``, ``"0,3,7"`` or a list of integers (non-negative, no repeats)."""
    if isinstance(text, (list, tuple)):
        if not all(isinstance(s, int) and not isinstance(s, bool) for s in text):
            raise SweepSpecError(f"seeds: expected integers, got {list(text)!r}")
        seeds = tuple(text)
    else:
        seeds = _seed_text(str(text).strip())
    if not seeds:
        raise SweepSpecError("seeds: expected at least one seed")
    if any(s < 0 for s in seeds):
        raise SweepSpecError(f"seeds: expected non-negative integers, got {list(seeds)}")
    if len(set(seeds)) != len(seeds):
        raise SweepSpecError(f"seeds: a seed is repeated in {list(seeds)}")
    return seeds


def _seed_text(text: str) -> tuple[int, ...]:
    try:
        if "-" in text and "," not in text:
            lo, hi = (int(x) for x in text.split("-", 1))
            if hi < lo:
                raise SweepSpecError(f"seeds: range {text!r} ends before it starts")
            return tuple(range(lo, hi + 1))
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise SweepSpecError(f"seeds: expected a range like 0-4 or a list like 0,3,7, got {text!r}") from None


def parse_sweep(raw: Any, err: Any) -> SweepSpec:
    """Validate a preset's ``[sweep]`` table (names are checked against the engine later).

    ``err(key, message)`` builds the preset's error (file, key, expectation).
    """
    if not isinstance(raw, dict):
        raise err("sweep", "expected a table")
    for key in raw:
        if key not in _SWEEP_KEYS:
            raise err(
                f"sweep.{key}",
                f"unknown key{suggest(key, list(_SWEEP_KEYS))}; expected one of {', '.join(_SWEEP_KEYS)}",
            )
    grid_raw = raw.get("grid", {})
    if not isinstance(grid_raw, dict):
        raise err("sweep.grid", "expected a table of hyperparameter = [values]")
    grid: dict[str, tuple[Any, ...]] = {}
    for name, values in grid_raw.items():
        if not isinstance(values, list) or not values:
            raise err(f"sweep.grid.{name}", f"expected a non-empty array of values, got {values!r}")
        grid[name] = tuple(values)
    try:
        seeds = parse_seeds(raw.get("seeds", [0]))
    except SweepSpecError as exc:
        raise err("sweep.seeds", str(exc).removeprefix("seeds: ")) from None
    steps = raw.get("steps")
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 1):
        raise err("sweep.steps", f"expected an integer >= 1, got {steps!r}")
    items = raw.get("summaries", [])
    if not isinstance(items, list):
        raise err("sweep.summaries", "expected an array of tables ([[sweep.summaries]])")
    return SweepSpec(grid, seeds, steps, tuple(_summary(i, s, err) for i, s in enumerate(items)))


def _summary(i: int, raw: Any, err: Any) -> Summary:
    where = f"sweep.summaries[{i}]"
    if not isinstance(raw, dict):
        raise err(where, "expected a table")
    for key, value in raw.items():
        if key not in _SUMMARY_KEYS:
            raise err(
                f"{where}.{key}",
                f"unknown key{suggest(key, list(_SUMMARY_KEYS))}; expected one of {', '.join(_SUMMARY_KEYS)}",
            )
        kind = _SUMMARY_KEYS[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise err(f"{where}.{key}", f"expected {kind.__name__}, got {value!r}")
    if not raw.get("name", "").strip():
        raise err(f"{where}.name", "expected a non-empty string")
    if bool(raw.get("stream")) == bool(raw.get("event")):
        raise err(
            where, "expected exactly one of stream (a value per trial) or event (the step it first fires)"
        )
    if raw.get("reduce", "final") not in REDUCTIONS:
        raise err(f"{where}.reduce", f"expected one of {', '.join(REDUCTIONS)}, got {raw['reduce']!r}")
    if bool(raw.get("boundary")) != bool(raw.get("boundary_param")):
        raise err(
            where, "boundary and boundary_param go together (a stream, and the parameter it is a value of)"
        )
    return Summary(**raw)


def check_against_engine(spec: SweepSpec, engine_spec: Any, streams: set[str], path: str) -> None:
    """Grid names and values against the engine's hyperparameters; summary streams against its streams.

    Raises ``ValueError`` subclasses via the caller's error type (``PresetError``); here a
    plain ``SweepSpecError`` that names the file and the key.
    """
    names = engine_spec.param_names()
    for name, values in spec.grid.items():
        if name not in names:
            raise SweepSpecError(
                f"{path}: sweep.grid.{name}: unknown hyperparameter{suggest(name, names)}; "
                f"expected one of {', '.join(names)}"
            )
        for v in values:
            try:
                engine_spec.param(name).coerce(v)
            except ValueError as exc:
                raise SweepSpecError(f"{path}: sweep.grid.{exc}") from None
    for i, s in enumerate(spec.summaries):
        for name in s.streams():
            if name not in streams:
                raise SweepSpecError(
                    f"{path}: sweep.summaries[{i}]: no stream {name!r}{suggest(name, sorted(streams))}"
                )
        if s.boundary_param and s.boundary_param not in names:
            raise SweepSpecError(
                f"{path}: sweep.summaries[{i}].boundary_param: unknown hyperparameter {s.boundary_param!r}"
            )
