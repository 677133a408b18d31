"""Replay: push a recording's frames through the same pipe a live run uses.

The player is a clock over steps. The UI calls :meth:`Player.advance` on its display
timer; the player reads only the rows between the old and the new cursor (range reads,
no full load) and returns them as ``Frame``/``Event`` objects, exactly as
``Run.drain`` does for a live run.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from dynlab.engines.spec import Event, Frame, Stream
from dynlab.recording import Recording

SPEEDS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
#: Rows per stream a seek hands the views at most (the history before the cursor is thinned).
SEEK_MAX_ROWS = 20_000


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

    def __init__(self, path: str, *, duration: float = 30.0) -> None:
        self.recording = Recording(path)
        rng = self.recording.step_range()
        self.first, self.last = rng if rng else (0, -1)
        self._events = sorted(self.recording.events(), key=lambda e: e.step)
        if self._events:  # the end event sits one step past the last frame
            self.last = max(self.last, self._events[-1].step)
        self.cursor = self.first - 1  # last step already delivered
        self.playing = False
        self.speed = 1.0
        self.base_rate = max(1.0, (self.last - self.first + 1) / max(duration, 1e-3))
        self._clock = time.monotonic()
        self._carry = 0.0
        self.state = "paused"

    # -------------------------------------------------------------- metadata
    @property
    def streams(self) -> tuple[Stream, ...]:
        return tuple(self.recording.streams.values())

    @property
    def events(self) -> list[Event]:
        return list(self._events)

    @property
    def preset_text(self) -> str:
        return self.recording.preset_text

    @property
    def steps_per_second(self) -> float:
        return self.base_rate * self.speed if self.playing else 0.0

    # -------------------------------------------------------------- controls
    def play(self) -> None:
        if self.cursor >= self.last:
            self.cursor = self.first - 1
        self.playing, self.state = True, "playing"
        self._clock = time.monotonic()

    def pause(self) -> None:
        self.playing, self.state = False, "paused"

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
            self.state = "finished"
        return self._between(old, self.cursor)

    def _between(self, after: int, upto: int, max_rows: int | None = None) -> list[Frame | Event]:
        """Frames with after < step <= upto, and events interleaved at their steps."""
        if upto <= after:
            return []
        frames: Iterator[Frame] = self.recording.frames(after + 1, upto + 1, max_rows=max_rows)
        evs = [e for e in self._events if after < e.step <= upto]
        out: list[Frame | Event] = []
        k = 0
        for f in frames:
            while k < len(evs) and evs[k].step <= f.step:
                out.append(evs[k])
                k += 1
            out.append(f)
        out.extend(evs[k:])
        return out

    def drain(self) -> list[Frame | Event]:
        """Same name as ``Run.drain``: what is due now."""
        return self.advance()

    def close(self) -> None:
        self.recording.close()
