"""The run loop that owns an engine: commands in, frames out, recorder beside.

It is host-agnostic: a :class:`Worker` runs in a thread of the app or in a child process
(see ``dynlab.runner``); it only needs two queue-like objects and plain-data messages.
Nothing here touches Qt.
"""

from __future__ import annotations

import queue
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dynlab.engines.spec import Event, SpecError
from dynlab.recording import Recorder, RecordingError
from dynlab.source import CheckpointData, Ready, RunState, Status

#: How long a worker blocked on a paused run waits for a command before it reports again.
_IDLE_POLL_S = 0.1


@dataclass
class RunConfig:
    """Everything the worker needs, as plain data (picklable for a child process).

    ``steps`` is the total to run; ``None`` runs until stopped.
    """

    engine: str
    params: dict[str, Any]
    steps: int | None
    seed: int = 0
    device: str = "auto"
    probes: dict[str, int] = field(default_factory=dict)
    #: Fraction of training time the probes may take (cadences stretch to hold it); None: fixed.
    probe_budget: float | None = None
    record: str | None = None
    preset_text: str = ""
    preset_name: str = ""
    on_diverge: str = "stop"  # "stop" (CLI) or "pause" (GUI)
    flush_interval: float = 1.0
    start_paused: bool = False
    torch_threads: int | None = None
    status_interval: float = 0.25
    pace: float = 0.0  # steps per second to hold; 0 = full speed
    #: Steps between checkpoints in the recording: None chooses from the model's size, 0 turns them off.
    checkpoint_every: int | None = None
    #: Start as a branch of a recording (``dynlab.branch.BranchStart``), or from scratch.
    branch: Any = None
    #: Send checkpoints out as ``CheckpointData`` items (a host whose recording is written
    #: elsewhere, e.g. on the user's side of a Ray actor) instead of writing them here.
    checkpoints_out: bool = False


def _put_display(out: Any, item: Any, must: bool = False) -> None:
    """Frames may be dropped when the display lags (never recorded ones); events never."""
    try:
        out.put(item, block=must, timeout=5.0 if must else None)
    except queue.Full:
        pass


def recording_meta(
    cfg: RunConfig, engine: str, engine_version: Any, device: str, params: dict[str, Any]
) -> dict[str, Any]:
    """A recording's root attributes for a run, wherever its engine is hosted."""
    meta: dict[str, Any] = {
        "engine": engine,
        "engine_version": engine_version,
        "preset": cfg.preset_text,
        "preset_name": cfg.preset_name,
        "seed": cfg.seed,
        "device": device,
        "hyperparameters": dict(params),
        "steps_planned": cfg.steps if cfg.steps is not None else -1,
    }
    if cfg.branch is not None:
        meta |= {
            "parent_recording": cfg.branch.parent,
            "parent_step": cfg.branch.at,
            "parent_started_at": cfg.branch.parent_started_at,
        }
    return meta


class _Recording:
    """The recorder as the worker uses it: a failure drops it and tells the worker, once.

    The recorder flushes on its own clock (``Recorder.start_clock``), so an engine step that
    hangs still leaves every row it produced on disk; :meth:`abandon` closes the file from
    any thread (a host giving up on a hung engine).
    """

    def __init__(self, recorder: Recorder, on_error: Any) -> None:
        self._rec: Recorder | None = recorder
        self._on_error = on_error
        recorder.start_clock()

    def _call(self, method: str, *args: Any) -> Any:
        rec = self._rec
        if rec is None:
            return None
        try:
            return getattr(rec, method)(*args)
        except RecordingError as exc:
            self._rec = None
            rec.abort("failed")
            self._on_error(exc)
            return None

    def write(self, frame: Any) -> None:
        self._call("write", frame)

    def checkpoint(self, step: int, arrays: Any, state: Any) -> None:
        self._call("checkpoint", step, arrays, state)

    def event(self, ev: Event) -> None:
        self._call("event", ev)

    def close(self, status: str) -> None:
        rec, self._rec = self._rec, None
        if rec is not None:
            rec.close(status)

    def abandon(self, status: str = "interrupted") -> bool:
        """Close the file now (from any thread); True if it is closed."""
        rec, self._rec = self._rec, None
        return rec.abort(status) if rec is not None else True


class Worker:
    """Runs one engine until its steps are done or it is stopped.

    ``commands`` yields tuples: ``("pause",)``, ``("resume",)``, ``("step", n)``,
    ``("set", name, value)``, ``("pace", steps_per_second)``, ``("stop",)``,
    ``("continue_unrecorded",)``. ``out`` receives ``Ready``, ``Frame``, ``Event`` and
    ``Status`` objects, all plain data.
    """

    def __init__(self, cfg: RunConfig, commands: Any, out: Any) -> None:
        self.cfg, self.commands, self.out = cfg, commands, out
        self.state = RunState.IDLE
        self.engine: Any = None
        self.recording: _Recording | None = None
        self.step_budget = 0  # single steps allowed while paused
        self.rate = 0.0
        self._rate_t, self._rate_step = time.monotonic(), 0
        self._last_status = 0.0
        self._next_step_at = 0.0  # pace: when the next step may start
        self._done = False
        self.checkpoint_every = 0
        self._handlers: dict[str, Callable[..., None]] = {
            "pause": self._on_pause,
            "resume": self._on_resume,
            "step": self._on_step,
            "set": self._on_set,
            "pace": self._on_pace,
            "stop": self._on_stop,
            "continue_unrecorded": self._on_continue_unrecorded,
        }

    # ------------------------------------------------------------------ life cycle
    def run(self) -> RunState:
        """Build the engine, loop, and always close the recording; return the final state."""
        try:
            self._build()
            self._loop()
        except Exception as exc:  # the engine (or its set-up) raised: the run fails, the file survives
            self.state = RunState.FAILED
            message = f"{type(exc).__name__}: {exc}"
            self.emit("failed", message=message, traceback=traceback.format_exc())
        finally:
            self._finish()
        return self.state

    def _build(self) -> None:
        from dynlab.engines.base import get_engine

        cfg = self.cfg
        if cfg.torch_threads:
            import torch

            torch.set_num_threads(cfg.torch_threads)
        cls = get_engine(cfg.engine)
        self.engine = engine = cls(
            cfg.params, seed=cfg.seed, device=cfg.device, probes=cfg.probes, probe_budget=cfg.probe_budget
        )
        cfg.device = engine.device
        if cfg.record:
            meta = recording_meta(cfg, cls.spec.name, cls.spec.version, engine.device, engine.params)
            rec = Recorder(cfg.record, engine.streams, meta, flush_interval=cfg.flush_interval)
            self.recording = _Recording(rec, self._record_failed)
        specs = cls.spec.params
        _put_display(self.out, Ready(engine.streams, dict(engine.params), engine.device, specs), must=True)
        engine.start()
        if cfg.branch is not None:
            self._grow_branch(cfg.branch)
        self.state = RunState.PAUSED if cfg.start_paused else RunState.RUNNING
        self.emit("start", engine=cls.spec.name, seed=cfg.seed, device=engine.device)
        if cfg.branch is not None:
            b = cfg.branch
            how = (
                f"checkpoint at step {b.checkpoint_step}"
                if b.checkpoint_step is not None
                else "a re-run from step 0"
            )
            self.emit("branch", parent=b.parent, at=b.at, restored_from=how)
            for name, value in b.sets.items():
                self._on_set(name, value)
        if (self.recording is not None or cfg.checkpoints_out) and cfg.checkpoint_every != 0:
            self._first_checkpoint()
        self.status()

    # ------------------------------------------------------------------ checkpoints and branches
    def _grow_branch(self, b: Any) -> None:
        """Restore the parent's state and replay its edits up to the branch step (nothing recorded)."""
        from dynlab.engines import state

        engine = self.engine
        if b.checkpoint_step is not None:
            state.restore(engine, b.arrays, b.state)
            b.arrays, b.state = {}, {}  # the engine holds them now
        else:
            self.emit(
                "info",
                message=f"no checkpoint in the parent: re-running it from step 0 with seed "
                f"{self.cfg.seed} (exact on the same device and thread count)",
            )
        edits = [e for e in b.edits if e[0] >= engine.step_count]
        while True:
            for _, name, value in [e for e in edits if e[0] == engine.step_count]:
                engine.set(name, value)
            if engine.step_count >= b.at:
                break
            engine.step()
            engine.pop_events()

    def _first_checkpoint(self) -> None:
        """Checkpoint the starting state; choose the cadence from its size when not given."""
        nbytes = self._checkpoint()
        every = self.cfg.checkpoint_every
        if every is None:
            every = _auto_checkpoint_every(nbytes, self.engine.streams, self.cfg.steps)
        self.checkpoint_every = int(every)
        # No timing in the event: a recording's events must not depend on the machine's load.
        self.emit(
            "info",
            message=f"checkpoints every {every} steps ({nbytes / 1e6:.2f} MB each)",
            checkpoint_every=every,
            checkpoint_bytes=nbytes,
        )

    def _checkpoint(self) -> int:
        from dynlab.engines import state

        arrays, meta = state.capture(self.engine)
        if self.recording is not None:
            self.recording.checkpoint(self.engine.step_count, arrays, meta)
        elif self.cfg.checkpoints_out:
            _put_display(self.out, CheckpointData(self.engine.step_count, arrays, meta), must=True)
        return sum(a.nbytes for a in arrays.values())

    def _loop(self) -> None:
        while not self._done:
            self._apply_commands(block=self._holding())
            if self._done:
                return
            if self._holding():
                continue
            if self.cfg.steps is not None and self.engine.step_count >= self.cfg.steps:
                self.state = RunState.FINISHED
                return
            if not self._wait_for_pace():
                continue
            self._one_step()

    def _finish(self) -> None:
        final = RunState.FINISHED if self.state is RunState.RUNNING else self.state
        if self.engine is not None:
            try:
                self.emit("end", status=final.value)
                self.engine.close()
            except Exception:
                pass
        if self.recording is not None:
            try:
                self.recording.close(final.value)
            except Exception as exc:
                _put_display(self.out, Event(0, "record_error", {"message": str(exc)}, time.time()))
        self.state = final
        self.status()

    # ------------------------------------------------------------------ the loop's parts
    def _holding(self) -> bool:
        return self.state.waiting and self.step_budget == 0

    def _apply_commands(self, block: bool) -> None:
        """Apply every queued command; when ``block``, wait for at least one."""
        while True:
            try:
                cmd = self.commands.get(block=block, timeout=_IDLE_POLL_S if block else None)
            except queue.Empty:
                if not block:
                    return
                if time.monotonic() - self._last_status > 1.0:
                    self.status()
                return
            handler = self._handlers.get(cmd[0])
            if handler is not None:
                handler(*cmd[1:])
            self.status()
            if self._done:
                return
            block = False

    def _wait_for_pace(self) -> bool:
        """Hold the requested pace; False when a command arrived while waiting."""
        if self.cfg.pace <= 0:
            return True
        now = time.monotonic()
        if now < self._next_step_at:
            try:
                cmd = self.commands.get(timeout=self._next_step_at - now)
            except queue.Empty:
                pass
            else:
                handler = self._handlers.get(cmd[0])
                if handler is not None:
                    handler(*cmd[1:])
                self.status()
                return False
        self._next_step_at = max(now, self._next_step_at) + 1.0 / self.cfg.pace
        return True

    def _one_step(self) -> None:
        from dynlab.engines.base import Diverged

        engine = self.engine
        try:
            frame = engine.step()
        except Diverged as exc:
            self.emit("diverged", step=exc.step, message=str(exc), stream=exc.what)
            self.state = RunState.DIVERGED
            self.step_budget = 0
            self._done = self.cfg.on_diverge != "pause"
            self.status(str(exc))
            return
        if self.step_budget:
            self.step_budget -= 1
        if self.recording is not None:
            self.recording.write(frame)
        _put_display(self.out, frame)
        if self.checkpoint_every and engine.step_count % self.checkpoint_every == 0:
            self._checkpoint()
        for ev in engine.pop_events():
            self._emit_event(ev)
        now = time.monotonic()
        if now - self._rate_t >= 0.5:
            self.rate = (engine.step_count - self._rate_step) / (now - self._rate_t)
            self._rate_t, self._rate_step = now, engine.step_count
        if now - self._last_status >= self.cfg.status_interval:
            self.status()

    # ------------------------------------------------------------------ commands
    def _on_pause(self) -> None:
        if self.state is RunState.RUNNING:
            self.state = RunState.PAUSED
            self.emit("pause")

    def _on_resume(self) -> None:
        if self.state.waiting:
            self.state = RunState.RUNNING
            self._next_step_at = 0.0
            self.emit("resume")

    def _on_step(self, n: int) -> None:
        self.step_budget += int(n)

    def _on_pace(self, steps_per_second: float) -> None:
        old, self.cfg.pace = self.cfg.pace, max(0.0, float(steps_per_second))
        self._next_step_at = 0.0
        self.emit("info", message=f"pace {_pace_text(old)} -> {_pace_text(self.cfg.pace)}")

    def _on_stop(self) -> None:
        self.state = RunState.STOPPED
        self._done = True

    def _on_continue_unrecorded(self) -> None:
        self.state = RunState.RUNNING
        self.emit("info", message="continuing without recording")

    def _on_set(self, name: str, value: Any) -> None:
        try:
            old, new = self.engine.set(name, value)
        except SpecError as exc:
            self.emit("refused", name=name, value=value, message=str(exc))
        except Exception as exc:  # the engine raised applying it: rolled back
            self.emit("refused", name=name, value=value, message=f"engine rejected it: {exc!r}")
        else:
            self.emit("set", name=name, old=old, new=new)

    # ------------------------------------------------------------------ output
    def emit(self, kind: str, step: int | None = None, **payload: Any) -> None:
        if step is None:
            step = self.engine.step_count if self.engine is not None else 0
        self._emit_event(Event(step, kind, payload, time.time()))

    def _emit_event(self, ev: Event) -> None:
        if self.recording is not None:
            self.recording.event(ev)
        _put_display(self.out, ev, must=True)

    def _record_failed(self, exc: Exception) -> None:
        """The file became unusable: drop it, pause, and let the user decide."""
        self.recording = None
        self.state = RunState.PAUSED
        step = self.engine.step_count if self.engine is not None else 0
        _put_display(self.out, Event(step, "record_error", {"message": str(exc)}, time.time()), must=True)

    def status(self, message: str = "") -> None:
        self._last_status = time.monotonic()
        step = self.engine.step_count if self.engine is not None else 0
        _put_display(self.out, Status(self.state, step, self.rate, self.cfg.device, message), must=True)


def _auto_checkpoint_every(nbytes: int, streams: Any, steps: int | None) -> int:
    """Steps between checkpoints so that they take at most about half the file, and at most ~50 per run.

    A step's rows cost about 8 bytes per value; a checkpoint of ``nbytes`` every ``k`` steps
    is then at most as large as the rows between two checkpoints when ``k >= nbytes / row``.
    """
    row = sum(8 * (int(np.prod(s.shape)) if s.shape else 1) + 8 for s in streams) or 8
    k = max(1, -(-nbytes // row))
    if steps:
        k = max(k, -(-steps // 50))
    nice = 1
    while nice < k:  # 1, 2, 5, 10, 20, 50, ...
        nice = nice * 5 // 2 if str(nice)[0] == "2" else nice * 2
    return nice


def _pace_text(pace: float) -> str:
    return "full speed" if pace <= 0 else f"{pace:g} steps/s"


def work(cfg: RunConfig, commands: Any, out: Any, on_worker: Any = None) -> RunState:
    """Run a :class:`Worker` to the end; ``on_worker`` receives it first (hosts keep a handle)."""
    worker = Worker(cfg, commands, out)
    if on_worker is not None:
        on_worker(worker)
    return worker.run()
