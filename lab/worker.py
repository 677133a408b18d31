"""The run loop that owns an engine: commands in, frames out, recorder beside.

It is host-agnostic: the same function runs in a thread of the app (``ThreadHost``)
or in a child process (``ProcessHost``); it only needs two queue-like objects and
plain-data messages. Nothing here touches Qt.
"""

from __future__ import annotations

import queue
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from dynlab.engines.spec import Event, Param, SpecError, Stream
from dynlab.recording import Recorder, RecordingError

# Run states, as the UI and CLI show them.
IDLE, RUNNING, PAUSED, FINISHED, STOPPED, FAILED, DIVERGED = (
    "idle",
    "running",
    "paused",
    "finished",
    "stopped",
    "failed",
    "diverged",
)
ENDED = (FINISHED, STOPPED, FAILED)


@dataclass(frozen=True)
class Status:
    """A periodic report from the worker (plain data, crosses processes)."""

    state: str
    step: int
    steps_per_second: float
    device: str = ""
    message: str = ""
    recording: str = ""


@dataclass(frozen=True)
class Ready:
    """Sent once the engine is built: what it emits and its final hyperparameters."""

    streams: tuple[Stream, ...]
    params: dict[str, Any]
    device: str
    param_specs: tuple[Param, ...] = ()
    title: str = ""
    paper: str = ""


@dataclass
class RunConfig:
    """Everything the worker needs, as plain data (picklable for a child process)."""

    engine: str
    params: dict[str, Any]
    steps: int
    seed: int = 0
    device: str = "auto"
    probes: dict[str, int] = field(default_factory=dict)
    record: str | None = None
    preset_text: str = ""
    preset_name: str = ""
    on_diverge: str = "stop"  # "stop" (CLI) or "pause" (GUI)
    flush_interval: float = 1.0
    start_paused: bool = False
    torch_threads: int | None = None
    status_interval: float = 0.25


def _put_display(out: Any, item: Any, must: bool = False) -> None:
    """Frames may be dropped when the display lags (never recorded ones); events never."""
    try:
        out.put(item, block=must, timeout=5.0 if must else None)
    except queue.Full:
        pass


def work(cfg: RunConfig, commands: Any, out: Any) -> str:
    """Run the engine until the steps are done or a stop command; return the final state.

    ``commands`` yields tuples: ``("pause",)``, ``("resume",)``, ``("step", n)``,
    ``("set", name, value)``, ``("stop",)``, ``("continue_unrecorded",)``.
    ``out`` receives ``Ready``, ``Frame``, ``Event`` and ``Status`` objects.
    """
    from dynlab.engines.base import Diverged, get_engine

    if cfg.torch_threads:
        import torch

        torch.set_num_threads(cfg.torch_threads)
    recorder: Recorder | None = None
    state = IDLE
    engine = None
    step_budget = 0  # single steps allowed while paused
    rate, last_rate_t, last_rate_step = 0.0, time.monotonic(), 0
    last_status = 0.0

    def emit(ev: Event) -> None:
        nonlocal recorder, state
        if recorder is not None:
            try:
                recorder.event(ev)
            except RecordingError as exc:
                record_failed(exc)
        _put_display(out, ev, must=True)

    def record_failed(exc: Exception) -> None:
        nonlocal recorder, state
        rec, recorder = recorder, None
        try:
            if rec is not None and rec._f is not None:
                try:  # the file may be unusable: close without another flush attempt
                    rec._f.close()
                except Exception:
                    pass
                rec._f = None
        finally:
            state = PAUSED
            ev = Event(engine.step_count if engine else 0, "record_error", {"message": str(exc)}, time.time())
            _put_display(out, ev, must=True)

    def status(msg: str = "") -> None:
        nonlocal last_status
        last_status = time.monotonic()
        _put_display(
            out,
            Status(state, engine.step_count if engine else 0, rate, cfg.device, msg, cfg.record or ""),
            must=True,
        )

    try:
        cls = get_engine(cfg.engine)
        engine = cls(cfg.params, seed=cfg.seed, device=cfg.device, probes=cfg.probes)
        cfg.device = engine.device
        if cfg.record:
            recorder = Recorder(
                cfg.record,
                engine.streams,
                {
                    "engine": cls.spec.name,
                    "engine_version": cls.spec.version,
                    "preset": cfg.preset_text,
                    "preset_name": cfg.preset_name,
                    "seed": cfg.seed,
                    "device": engine.device,
                    "hyperparameters": engine.params,
                    "steps_planned": cfg.steps,
                },
                flush_interval=cfg.flush_interval,
            )
        _put_display(
            out,
            Ready(
                engine.streams,
                dict(engine.params),
                engine.device,
                cls.spec.params,
                cls.spec.title,
                cls.spec.paper,
            ),
            must=True,
        )
        engine.start()
        state = PAUSED if cfg.start_paused else RUNNING
        emit(
            Event(
                0, "start", {"engine": cls.spec.name, "seed": cfg.seed, "device": engine.device}, time.time()
            )
        )
        status()
        while True:
            # --- commands, applied between two steps
            block = state in (PAUSED, DIVERGED) and step_budget == 0
            while True:
                try:
                    cmd = commands.get(block=block, timeout=0.1 if block else None)
                except queue.Empty:
                    if block:
                        if time.monotonic() - last_status > 1.0:
                            status()
                        continue
                    break
                block = False
                name = cmd[0]
                if name == "stop":
                    state = STOPPED
                    break
                if name == "pause" and state == RUNNING:
                    state = PAUSED
                    emit(Event(engine.step_count, "pause", {}, time.time()))
                elif name == "resume" and state in (PAUSED, DIVERGED):
                    state = RUNNING
                    emit(Event(engine.step_count, "resume", {}, time.time()))
                elif name == "step":
                    step_budget += int(cmd[1])
                elif name == "continue_unrecorded":
                    state = RUNNING
                    emit(
                        Event(
                            engine.step_count,
                            "info",
                            {"message": "continuing without recording"},
                            time.time(),
                        )
                    )
                elif name == "set":
                    _, pname, value = cmd
                    try:
                        old, new = engine.set(pname, value)
                    except SpecError as exc:
                        emit(
                            Event(
                                engine.step_count,
                                "refused",
                                {"name": pname, "value": value, "message": str(exc)},
                                time.time(),
                            )
                        )
                    except Exception as exc:  # the engine raised applying it: rolled back
                        emit(
                            Event(
                                engine.step_count,
                                "refused",
                                {"name": pname, "value": value, "message": f"engine rejected it: {exc!r}"},
                                time.time(),
                            )
                        )
                    else:
                        emit(
                            Event(
                                engine.step_count, "set", {"name": pname, "old": old, "new": new}, time.time()
                            )
                        )
                status()
                if state in (PAUSED, DIVERGED) and step_budget == 0:
                    block = True
            if state == STOPPED:
                break
            if state in (PAUSED, DIVERGED) and step_budget == 0:
                continue
            if engine.step_count >= cfg.steps:
                state = FINISHED
                break
            # --- one step
            try:
                frame = engine.step()
            except Diverged as exc:
                emit(Event(exc.step, "diverged", {"message": str(exc), "stream": exc.what}, time.time()))
                if cfg.on_diverge == "pause":
                    state = DIVERGED
                    step_budget = 0
                    status(str(exc))
                    continue
                state = DIVERGED
                break
            if step_budget:
                step_budget -= 1
            events = engine.pop_events()
            if recorder is not None:
                try:
                    recorder.write(frame)
                except RecordingError as exc:
                    record_failed(exc)
            _put_display(out, frame)
            for ev in events:
                emit(ev)
            now = time.monotonic()
            if now - last_rate_t >= 0.5:
                rate = (engine.step_count - last_rate_step) / (now - last_rate_t)
                last_rate_t, last_rate_step = now, engine.step_count
            if now - last_status >= cfg.status_interval:
                status()
    except Exception as exc:  # the engine (or its set-up) raised: the run fails, the file survives
        tb = traceback.format_exc()
        state = FAILED
        step = engine.step_count if engine is not None else 0
        emit(Event(step, "failed", {"message": f"{type(exc).__name__}: {exc}", "traceback": tb}, time.time()))
    finally:
        final = state if state != RUNNING else FINISHED
        if engine is not None:
            try:
                emit(Event(engine.step_count, "end", {"status": final}, time.time()))
                engine.close()
            except Exception:
                pass
        if recorder is not None:
            try:
                recorder.close(final)
            except Exception as exc:
                _put_display(out, Event(0, "record_error", {"message": str(exc)}, time.time()))
        state = final
        status()
    return state
