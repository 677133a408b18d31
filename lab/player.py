"""Replay: push a recording's frames through the same pipe a live run uses.

The player is a clock over steps and a :class:`~dynlab.source.Source`. The UI calls
:meth:`Player.drain` on its display timer; the player reads only the rows between the old
and the new cursor (range reads, no full load) and returns them as ``Frame``/``Event``
objects, exactly as ``Run.drain`` does for a live run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dynlab.engines.spec import Event, Frame, Param, Stream
from dynlab.recording import Recording
from dynlab.recording_reader import MAX_EVENTS
from dynlab.source import Control, Item, Ready, RunState, UnsupportedControl

SPEEDS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
#: Rows per stream a seek hands the views at most (the history before the cursor is thinned).
SEEK_MAX_ROWS = 20_000
#: Rows per stream one display tick reads at most while playing. A tick that falls behind
#: (a slow redraw, a fast speed on a long recording) skips ahead through thinned rows
#: instead of delivering everything due, so each tick costs a bounded amount.
TICK_MAX_ROWS = 2_000
#: Bytes of values one thinned tick reads at most, over all streams (wide heatmaps get fewer rows).
TICK_MAX_BYTES = 4 << 20


class Player:
    """Plays a recording.

    Parameters
    ----------
    path
        The HDF5 recording.
    duration
        Seconds that a full play-through takes at speed 1 (the base rate is
        ``steps / duration`` steps per second).
    """

    controls = frozenset({Control.PAUSE, Control.RESUME, Control.STEP, Control.STOP, Control.SEEK})
    param_specs: dict[str, Param] = {}
    message = ""

    def __init__(self, path: str, *, duration: float = 30.0, label: str = "") -> None:
        self.file = Recording(path)
        self.recording: str | None = str(path)
        self.label = label or ""
        self._ready_sent = False
        self._stepped: list[Item] = []  # rows passed by single_step(), handed out by drain()
        rng = self.file.step_range()
        self.first, self.last = rng if rng else (0, -1)
        # Markers and event navigation use at most MAX_EVENTS events (the first); a recording
        # with more is still replayed, its later events read by step range as the cursor passes.
        self._events = sorted(self.file.events(limit=MAX_EVENTS), key=lambda e: e.step)
        self._events_complete = self.file.event_count <= len(self._events)
        if self._events:  # the end event sits one step past the last frame
            self.last = max(self.last, self._events[-1].step)
        self.cursor = self.first - 1  # last step already delivered
        self.playing = False
        self.speed = 1.0
        self.base_rate = max(1.0, (self.last - self.first + 1) / max(duration, 1e-3))
        self._clock = time.monotonic()
        self._carry = 0.0
        self.state = RunState.PAUSED

    # -------------------------------------------------------------- metadata
    @property
    def streams(self) -> tuple[Stream, ...]:
        return tuple(self.file.streams.values())

    @property
    def step(self) -> int:
        return max(self.cursor, 0)

    @property
    def total_steps(self) -> int:
        return max(self.last, 0)

    @property
    def device(self) -> str:
        return f"{self.file.attrs.get('device', '')} (recorded)"

    @property
    def params(self) -> dict[str, Any]:
        raw = self.file.attrs.get("hyperparameters", "{}")
        try:
            params = json.loads(raw) if isinstance(raw, str) else {}
        except ValueError:
            return {}
        return params if isinstance(params, dict) else {}

    @property
    def events(self) -> list[Event]:
        return list(self._events)

    @property
    def preset_text(self) -> str:
        return self.file.preset_text

    @property
    def steps_per_second(self) -> float:
        return self.base_rate * self.speed if self.playing else 0.0

    # -------------------------------------------------------------- controls
    def start(self) -> Player:
        """A recording is ready at once; nothing to start."""
        return self

    def play(self) -> None:
        if self.cursor >= self.last:
            self.cursor = self.first - 1
        self.playing, self.state = True, RunState.PLAYING
        self._clock = time.monotonic()

    def pause(self) -> None:
        self.playing, self.state = False, RunState.PAUSED

    def resume(self) -> None:
        self.play()

    def stop(self) -> None:
        self.pause()

    def single_step(self, n: int = 1) -> None:
        self._stepped.extend(self.step_by(n))

    def set(self, name: str, value: Any) -> Any:
        raise UnsupportedControl("a recording cannot be changed; branch from it to try another value")

    def toggle(self) -> None:
        self.pause() if self.playing else self.play()

    def set_speed(self, speed: float) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be positive, got {speed}")
        self.speed = float(speed)

    def faster(self) -> float:
        bigger = [s for s in SPEEDS if s > self.speed]
        self.speed = bigger[0] if bigger else self.speed
        return self.speed

    def slower(self) -> float:
        smaller = [s for s in SPEEDS if s < self.speed]
        self.speed = smaller[-1] if smaller else self.speed
        return self.speed

    def next_event_step(self, after: int | None = None) -> int | None:
        """Step of the first event after ``after`` (default: the cursor), skipping start/end."""
        after = self.cursor if after is None else after
        for e in self._events:
            if e.step > after and e.kind not in ("start", "end"):
                return e.step
        return None

    def prev_event_step(self, before: int | None = None) -> int | None:
        before = self.cursor if before is None else before
        steps = [e.step for e in self._events if e.step < before and e.kind not in ("start", "end")]
        return steps[-1] if steps else None

    # -------------------------------------------------------------- data
    def seek(self, step: int) -> list[Frame | Event]:
        """Move the cursor to ``step``; return everything from the start up to it.

        The caller clears its views and pushes these, so every view shows the state
        at ``step`` (time series up to it, per-step views the newest frame).
        """
        step = max(self.first - 1, min(int(step), self.last))
        self.cursor = step
        self._carry = 0.0
        self._clock = time.monotonic()
        # History is thinned for long recordings (views draw ~1000 px anyway); the frame
        # at the cursor itself is exact, so per-step views show the true state.
        return self._between(self.first - 1, step, max_rows=SEEK_MAX_ROWS)

    def step_by(self, n: int) -> list[Frame | Event]:
        """Advance the cursor by ``n`` steps (n > 0) and return what was passed."""
        old = self.cursor
        self.cursor = min(self.last, self.cursor + max(1, int(n)))
        return self._between(old, self.cursor)

    def advance(self, now: float | None = None) -> list[Frame | Event]:
        """Called on the display timer: deliver the steps due since the last call."""
        now = time.monotonic() if now is None else now
        dt, self._clock = now - self._clock, now
        if not self.playing:
            return []
        self._carry += dt * self.base_rate * self.speed
        n = int(self._carry)
        if n <= 0:
            return []
        self._carry -= n
        old = self.cursor
        self.cursor = min(self.last, self.cursor + n)
        if self.cursor >= self.last:
            self.pause()
            self.state = RunState.FINISHED
        capped = TICK_MAX_ROWS if self.cursor - old > TICK_MAX_ROWS else None
        return self._between(old, self.cursor, max_rows=capped, max_bytes=TICK_MAX_BYTES)

    def _between(
        self, after: int, upto: int, max_rows: int | None = None, max_bytes: int | None = None
    ) -> list[Frame | Event]:
        """Frames with after < step <= upto, and events interleaved at their steps."""
        if upto <= after:
            return []
        budget = {} if max_bytes is None else {"max_bytes": max_bytes}
        frames: Iterator[Frame] = self.file.frames(after + 1, upto + 1, max_rows=max_rows, **budget)
        if self._events_complete:
            evs = [e for e in self._events if after < e.step <= upto]
        else:
            evs = sorted(self.file.events(after + 1, upto + 1, limit=TICK_MAX_ROWS), key=lambda e: e.step)
        out: list[Frame | Event] = []
        k = 0
        for f in frames:
            while k < len(evs) and evs[k].step <= f.step:
                out.append(evs[k])
                k += 1
            out.append(f)
        out.extend(evs[k:])
        return out

    def drain(self) -> list[Item]:
        """Same as ``Run.drain``: ``Ready`` first, then what is due now."""
        items: list[Item] = []
        if not self._ready_sent:
            self._ready_sent = True
            items.append(Ready(self.streams, self.params, self.device))
        items.extend(self._stepped)
        self._stepped.clear()
        items.extend(self.advance())
        return items

    @property
    def name(self) -> str:
        return Path(self.recording or "").name

    def close(self) -> None:
        self.file.close()
