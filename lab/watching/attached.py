"""A running watched script as a :class:`~dynlab.source.Source` (torch-free, Qt-free).

:class:`WatchedSource` logs in to a session, reads the history so far from the script's
own recording (SWMR: readable while written), then takes the live frames that come
after it. ``drain()`` hands out ``Ready``, ``Frame`` and ``Event`` objects exactly as a
live run does, so the workspace shows it through the same views. Closing it only
disconnects: the script goes on.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import numpy as np

from dynlab.engines.spec import Event, Frame, Param, SpecError, Stream, suggest
from dynlab.source import Control, Item, Ready, RunState
from dynlab.watching.channel import ChannelError, Connection, SessionInfo
from dynlab.watching.wire import event_from_dict, param_from_dict, stream_from_dict

#: Rows per stream read from the recording when attaching (older history is thinned).
HISTORY_MAX_ROWS = 20_000


class WatchedSource:
    """A session of ``dynlab.watch`` in another process, seen and steered from here.

    Parameters
    ----------
    info
        The session (from :func:`dynlab.watching.channel.session_infos`).
    label
        Shown beside its series.
    history
        Read what was recorded before attaching from the recording file.
    """

    controls = frozenset({Control.PAUSE, Control.RESUME, Control.STEP, Control.SET, Control.STOP})

    def __init__(
        self, info: SessionInfo, *, label: str = "", history: bool = True, timeout: float = 3.0
    ) -> None:
        self.info = info
        self.label = label
        self.conn = Connection(info, timeout=timeout)
        w = self.conn.welcome
        self.recording: str | None = w.get("recording") or None
        self.streams: tuple[Stream, ...] = ()
        self.params: dict[str, Any] = dict(w.get("params", {}))
        self.param_specs: dict[str, Param] = {}
        self.views: list[dict[str, Any]] = list(w.get("views", []))
        self._status(w)
        self._history = history
        self._items: queue.Queue[Item] = queue.Queue()
        self._history_until = -1
        self._history_due: tuple[str, int] | None = None  # (recording, last step) to read
        self._seen_events: set[tuple[int, str, float]] = set()
        self._closing = threading.Event()
        self._ended = False
        self.conn.send({"type": "subscribe"})
        if w.get("streams_known"):
            # The views can be built at once: wait for the streams (they come first).
            deadline = time.monotonic() + timeout
            while not self.streams and time.monotonic() < deadline:
                msg = self.conn.recv(max(0.0, deadline - time.monotonic()))
                if msg is None:
                    break
                self._on_message(msg)
        self._thread = threading.Thread(target=self._read, name=f"dynlab-watched-{info.name}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ Source attributes
    @property
    def total_steps(self) -> int:
        return self._total

    def _status(self, s: dict[str, Any]) -> None:
        try:
            self.state = RunState(s.get("state", "running"))
        except ValueError:
            self.state = RunState.RUNNING
        self.step = int(s.get("step", 0))
        self.steps_per_second = float(s.get("steps_per_second", 0.0))
        self.device = str(s.get("device", ""))
        self.message = str(s.get("message", ""))
        self._total = int(s.get("total_steps", 0) or 0)
        if "params" in s:
            self.params = dict(s["params"])
        if s.get("param_specs"):
            self.param_specs = {p.name: p for p in map(param_from_dict, s["param_specs"])}

    # ------------------------------------------------------------------ controls
    def start(self) -> WatchedSource:
        """The script is already running; nothing to start."""
        return self

    def pause(self) -> None:
        self._command("pause")

    def resume(self) -> None:
        self._command("resume")

    def single_step(self, n: int = 1) -> None:
        self._command("step", n=int(n))

    def stop(self) -> None:
        """Stop the script's run (its ``with`` block ends; the recording closes as stopped)."""
        self._command("stop")

    def set(self, name: str, value: Any) -> Any:
        """Validate here (a clear error at once), then ask the script to apply it at its next step."""
        if name not in self.param_specs:
            raise SpecError(
                f"the optimizer has no live hyperparameter {name!r}{suggest(name, list(self.param_specs))}"
            )
        value = self.param_specs[name].coerce(value)
        self._command("set", name=name, value=value)
        return value

    def _command(self, cmd: str, **fields: Any) -> None:
        if self._ended:
            return
        try:
            self.conn.send(
                {"type": "command", "cmd": cmd, "by": "app", "id": f"{cmd}-{time.time()}", **fields}
            )
        except ChannelError as exc:
            self._items.put(Event(self.step, "warning", {"message": str(exc)}, time.time()))

    # ------------------------------------------------------------------ data
    def drain(self) -> list[Item]:
        """Everything received since the last call: ``Ready`` first, then frames and events."""
        out: list[Item] = []
        while True:
            try:
                out.append(self._items.get_nowait())
            except queue.Empty:
                return out

    def close(self) -> None:
        """Disconnect (the script goes on)."""
        self._closing.set()
        self.conn.close()
        if self._thread is not threading.current_thread():
            self._thread.join(5)
        if not self.state.ended:
            self.message = "detached"

    # ------------------------------------------------------------------ the reader thread
    def _read(self) -> None:
        try:
            while not self._closing.is_set():
                if self._history_due is not None:
                    (path, until), self._history_due = self._history_due, None
                    self._read_history(path, until)
                msg = self.conn.recv(0.2)
                if msg is not None:
                    self._on_message(msg)
        except ChannelError as exc:
            if not self._closing.is_set() and not self.state.ended:
                # The script went away without saying goodbye (killed, crashed).
                self.state = RunState.FAILED
                self.message = f"lost the script (pid {self.info.pid}): {exc}"
                self._items.put(Event(self.step, "failed", {"message": self.message}, time.time()))
        finally:
            self._ended = True

    def _on_message(self, msg: dict[str, Any]) -> None:
        kind = msg["type"]
        if kind == "ready":
            self._on_ready(msg)
        elif kind == "frames":
            for f in _frames(msg.get("streams", {}), after=self._history_until):
                self._items.put(f)
        elif kind == "events":
            for d in msg.get("items", []):
                ev = event_from_dict(d)
                if (ev.step, ev.kind, ev.time) in self._seen_events:
                    continue  # already read from the recording
                if ev.kind == "set":
                    self.params[str(ev.payload.get("name"))] = ev.payload.get("new")
                self._items.put(ev)
        elif kind == "status":
            self._status(msg)
        elif kind == "reply" and msg.get("ok") is False:
            payload = {"message": str(msg.get("message", "refused"))}
            self._items.put(Event(self.step, "refused", payload, time.time()))
        elif kind == "error":
            self.message = str(msg.get("message", ""))

    def _on_ready(self, msg: dict[str, Any]) -> None:
        self.streams = tuple(stream_from_dict(s) for s in msg.get("streams", []))
        self.params = dict(msg.get("params", self.params))
        self.param_specs = {p.name: p for p in map(param_from_dict, msg.get("param_specs", []))}
        self.recording = msg.get("recording") or self.recording
        self._items.put(
            Ready(
                self.streams, dict(self.params), str(msg.get("device", "")), tuple(self.param_specs.values())
            )
        )
        until = int(msg.get("history_until", -1))
        if self._history and self.recording and until >= 0:
            self._history_due = (self.recording, until)  # read by the reader thread, not the caller's
        self._history_until = until

    def _read_history(self, path: str, until: int) -> None:
        from dynlab.recording import Recording, RecordingError

        try:
            with Recording(path) as rec:
                events = rec.events()
                frames = list(rec.frames(None, until + 1, max_rows=HISTORY_MAX_ROWS))
        except (RecordingError, OSError, KeyError) as exc:
            self._items.put(Event(self.step, "warning", {"message": f"history not read: {exc}"}, time.time()))
            return
        for e in events:
            self._seen_events.add((e.step, e.kind, e.time))
        merged: list[Item] = []
        k = 0
        for f in frames:
            while k < len(events) and events[k].step <= f.step:
                merged.append(events[k])
                k += 1
            merged.append(f)
        merged.extend(events[k:])
        for item in merged:
            self._items.put(item)


def _frames(columns: dict[str, Any], after: int) -> list[Frame]:
    """Frames (merged by step) from ``{stream: {steps, values}}``, keeping steps > ``after``."""
    by_step: dict[int, dict[str, np.ndarray]] = {}
    for name, col in columns.items():
        steps, values = np.asarray(col["steps"]), np.asarray(col["values"])
        for i in np.flatnonzero(steps > after):
            by_step.setdefault(int(steps[i]), {})[name] = values[i]
    return [Frame(step, by_step[step]) for step in sorted(by_step)]
