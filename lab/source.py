"""What the UI can show: one Qt-free protocol over every kind of run source.

A :class:`Source` is a live run hosted in a thread or a child process (``dynlab.runner.Run``),
a recording played back (``dynlab.player.Player``), and later a user's own script attached
through ``dynlab.watch``, an engine on a Ray actor, or a sweep. The workspace holds
``Source`` objects only and never asks which kind it has: what a source can do is in
:attr:`Source.controls`, and what it produced comes out of :meth:`Source.drain` as plain
data — a :class:`Ready` once its streams are known, then ``Frame`` and ``Event`` items.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from dynlab.engines.spec import Event, Frame, Param, Stream


class RunState(StrEnum):
    """The state of a source, as the worker, the CLI, the controls and the status bar spell it."""

    IDLE = "idle"
    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    DIVERGED = "diverged"
    PLAYING = "playing"
    FINISHED = "finished"
    STOPPED = "stopped"
    FAILED = "failed"

    @property
    def ended(self) -> bool:
        """True once nothing more will come (the run is over, or the replay reached its end)."""
        return self in (RunState.FINISHED, RunState.STOPPED, RunState.FAILED)

    @property
    def waiting(self) -> bool:
        """True while the source holds still until told to go on (paused, or paused by divergence)."""
        return self in (RunState.PAUSED, RunState.DIVERGED)


class Control(StrEnum):
    """A command a source may support; :attr:`Source.controls` lists the ones it does."""

    PAUSE = "pause"
    RESUME = "resume"
    STEP = "step"
    SET = "set"
    STOP = "stop"
    PACE = "pace"  # a live run: hold N steps per second
    SEEK = "seek"  # a recording: move the cursor, play faster or slower, jump between events
    CONTINUE_UNRECORDED = "continue_unrecorded"


class UnsupportedControl(RuntimeError):
    """A command the source does not support (check :attr:`Source.controls` first)."""


@dataclass(frozen=True)
class Ready:
    """Handed out by ``drain()`` once, when the source knows what it emits.

    Attributes
    ----------
    streams
        The streams this source emits (views are built from them).
    params
        Current hyperparameter values.
    device
        Where the engine runs (``"cpu (recorded)"`` for a replay).
    param_specs
        The spec of each hyperparameter (bounds, live or not); empty for a replay.
    """

    streams: tuple[Stream, ...]
    params: dict[str, Any]
    device: str
    param_specs: tuple[Param, ...] = ()


@dataclass(frozen=True)
class Status:
    """A periodic report from a worker (plain data, crosses processes and machines)."""

    state: RunState
    step: int
    steps_per_second: float
    device: str = ""
    message: str = ""


@dataclass(frozen=True)
class CheckpointData:
    """An engine's state at ``step`` as plain arrays plus JSON, sent to the side that records.

    Only hosts whose recording is written away from the engine (a Ray actor) send these;
    the source that receives them stores them in its recording and never hands them out.
    """

    step: int
    arrays: dict[str, Any]
    state: dict[str, Any]


Item = Frame | Event | Ready


@runtime_checkable
class Source(Protocol):
    """Anything the UI can show. Every method returns at once; none touches Qt.

    Attributes ``label`` (shown beside its series) and ``recording`` (the file it writes
    or replays, or ``None``) are plain attributes.
    """

    label: str
    recording: str | None

    @property
    def streams(self) -> tuple[Stream, ...]: ...
    @property
    def state(self) -> RunState: ...
    @property
    def step(self) -> int: ...
    @property
    def total_steps(self) -> int: ...
    @property
    def steps_per_second(self) -> float: ...
    @property
    def device(self) -> str: ...
    @property
    def params(self) -> dict[str, Any]: ...
    @property
    def param_specs(self) -> dict[str, Param]: ...
    @property
    def controls(self) -> frozenset[Control]: ...
    @property
    def message(self) -> str: ...

    def start(self) -> Any: ...
    def drain(self) -> list[Item]: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...
    def single_step(self, n: int = 1) -> None: ...
    def set(self, name: str, value: Any) -> Any: ...
    def stop(self) -> None: ...
    def close(self) -> Any: ...


@runtime_checkable
class Seekable(Source, Protocol):
    """A source with :attr:`Control.SEEK`: a recording with a cursor the timeline moves."""

    first: int
    last: int
    speed: float

    def seek(self, step: int) -> list[Item]: ...
    def faster(self) -> float: ...
    def slower(self) -> float: ...
    def next_event_step(self, after: int | None = None) -> int | None: ...
    def prev_event_step(self, before: int | None = None) -> int | None: ...


def require(source: Source, control: Control) -> None:
    """Raise :class:`UnsupportedControl` unless ``source`` supports ``control``."""
    if control not in source.controls:
        raise UnsupportedControl(f"{type(source).__name__} does not support {control.value}")
