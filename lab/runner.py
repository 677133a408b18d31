"""A run: one engine hosted in a worker (thread or child process), driven by commands.

The UI and the CLI talk to a :class:`Run` only through plain-data commands and read
what it produced with :meth:`Run.drain`; they never touch the engine's tensors.

Hosts
-----
``thread``
    The worker loop in a thread of this process. Cheapest to start; the right choice
    for tests, headless runs and GPU engines.
``process``
    The worker loop in a child process (spawned) that owns torch and the recorder;
    frames come back pickled. Beside a drawing UI on few cores this keeps the engine
    off the GIL (see ``bench/bench_hosts.py``), and an engine crash cannot take the app down.
``ray``
    The worker loop in a Ray actor, on any node of a cluster (``dynlab.ray_host.RayRun``;
    ``Run(..., host="ray")`` builds one); the recording is written on this side.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dynlab.engines.spec import EngineSpec, Event, Frame, Param, SpecError, Stream
from dynlab.presets import Preset
from dynlab.source import Control, Item, Ready, RunState, Status, UnsupportedControl
from dynlab.worker import RunConfig, Worker, work

_DISPLAY_QUEUE = 4096
HOSTS = ("thread", "process", "ray")
#: Seconds a child engine process waits, after its parent died, for its loop to stop by itself.
_ORPHAN_GRACE_S = 3.0


def default_host() -> str:
    """Where engines run beside the UI: a child process unless told otherwise.

    On few cores an engine thread in the app process loses to the GIL while the views
    paint (see ``bench/bench_hosts.py``); a child process does not, and its crash
    cannot take the app down.
    """
    return os.environ.get("DYNLAB_HOST", "process")


@dataclass(frozen=True)
class CloseReport:
    """What :meth:`Run.close` could and could not stop."""

    stopped: bool
    recording_closed: bool
    message: str = ""


class Run:
    """One engine run, hosted in a thread or a child process; a :class:`~dynlab.source.Source`.

    Parameters
    ----------
    preset
        A validated preset (use ``Preset.with_overrides`` for steps/seed/device/params).
    record
        Path of the HDF5 file to write, or ``None``.
    host
        ``"thread"`` or ``"process"``.
    on_diverge
        ``"stop"`` ends the run at the first non-finite loss; ``"pause"`` waits for the user.
    label
        Shown beside this run's series when several runs share the views.
    until_stopped
        Ignore the preset's step count and run until stopped.
    checkpoint_every
        Steps between checkpoints in the recording (``None``: chosen from the model's size; 0: none).
    branch
        A ``dynlab.branch.BranchStart``: start from a parent recording's state instead of from scratch.
    """

    controls = frozenset(
        {
            Control.PAUSE,
            Control.RESUME,
            Control.STEP,
            Control.SET,
            Control.STOP,
            Control.PACE,
            Control.CONTINUE_UNRECORDED,
        }
    )

    def __new__(cls, *args: Any, host: str = "thread", **kwargs: Any) -> Run:
        # host="ray" builds the Ray-hosted run (dynlab.ray_host, imported only when asked for).
        if host == "ray" and cls is Run:
            from dynlab.ray_host import RayRun

            return super().__new__(RayRun)
        return super().__new__(cls)

    def __init__(
        self,
        preset: Preset,
        *,
        record: str | None = None,
        host: str = "thread",
        on_diverge: str = "stop",
        start_paused: bool = False,
        torch_threads: int | None = None,
        flush_interval: float = 1.0,
        display_queue: int = _DISPLAY_QUEUE,
        label: str = "",
        until_stopped: bool = False,
        pace: float = 0.0,
        checkpoint_every: int | None = None,
        branch: Any = None,
    ) -> None:
        if host not in HOSTS:
            raise ValueError(f"host must be one of {', '.join(HOSTS)}; got {host!r}")
        self.preset = preset
        self.host = host
        self.label = label
        self.recording = record
        self.config = RunConfig(
            engine=preset.engine,
            params=dict(preset.hyperparameters),
            steps=None if until_stopped else preset.steps,
            seed=preset.seed,
            device=preset.device,
            probes=dict(preset.probes),
            probe_budget=preset.probe_budget,
            record=record,
            preset_text=preset.text,
            preset_name=preset.name,
            on_diverge=on_diverge,
            flush_interval=flush_interval,
            start_paused=start_paused,
            torch_threads=torch_threads,
            pace=pace,
            checkpoint_every=checkpoint_every,
            branch=branch,
        )
        self._spec: EngineSpec | None = None
        self.state = RunState.IDLE
        self.step = 0
        self.steps_per_second = 0.0
        self.device = ""
        self.message = ""
        self.streams: tuple[Stream, ...] = ()
        self.params: dict[str, Any] = {}
        self.events: list[Event] = []
        self.final_state: RunState | None = None
        self._display_max = display_queue
        self._thread: threading.Thread | None = None
        self._proc: Any = None
        self._worker: Worker | None = None
        self._backlog: list[Item] = []
        self.param_specs: dict[str, Param] = {}
        self.ready = False

    @property
    def total_steps(self) -> int:
        """The steps this run will make (0 when it runs until stopped)."""
        return self.config.steps or 0

    # ------------------------------------------------------------------ control
    def start(self) -> Run:
        """Start the worker; returns at once."""
        if self._thread is not None or self._proc is not None:
            raise RuntimeError("run already started")
        if self.host == "thread":
            self._cmd: Any = queue.Queue()
            self._out: Any = queue.Queue(maxsize=self._display_max)
            self._thread = threading.Thread(
                target=self._thread_main, name=f"dynlab-run-{self.preset.name}", daemon=True
            )
            self._thread.start()
        elif (warm := _take_warm(self.config.torch_threads, self._display_max)) is not None:
            self._proc, self._cmd, self._out = warm
            self._proc.name = f"dynlab-run-{self.preset.name}"
            self._cmd.put(("config", self.config))
        else:
            ctx = mp.get_context("spawn")
            self._cmd = ctx.Queue()
            self._out = ctx.Queue(maxsize=self._display_max)
            self._proc = ctx.Process(
                target=_process_main,
                args=(self.config, self._cmd, self._out, os.getpid()),
                daemon=True,
                name=f"dynlab-run-{self.preset.name}",
            )
            _start_with_threads(self._proc, self.config.torch_threads)
        self.state = RunState.STARTING
        return self

    def _thread_main(self) -> None:
        self.final_state = work(self.config, self._cmd, self._out, on_worker=self._keep_worker)

    def _keep_worker(self, worker: Worker) -> None:
        self._worker = worker

    def pause(self) -> None:
        self._send("pause")

    def resume(self) -> None:
        self._send("resume")

    def single_step(self, n: int = 1) -> None:
        self._send("step", int(n))

    def stop(self) -> None:
        self._send("stop")

    def set_pace(self, steps_per_second: float) -> None:
        """Hold ``steps_per_second`` (slow motion for a talk); 0 is full speed."""
        if not steps_per_second >= 0:
            raise ValueError(f"pace must be >= 0 steps/s, got {steps_per_second}")
        self._send("pace", float(steps_per_second))

    def continue_unrecorded(self) -> None:
        self._send("continue_unrecorded")

    def seek(self, step: int) -> list[Item]:
        raise UnsupportedControl("a live run cannot seek; open its recording to replay it")

    def set(self, name: str, value: Any) -> Any:
        """Validate against the spec here (clear error at once), then send to the worker.

        Returns the coerced value; raises ``SpecError`` for an unknown, non-live or
        out-of-range hyperparameter.
        """
        param = self.param(name)
        if not param.live:
            raise SpecError(f"{name} cannot be changed while running (not live)")
        value = param.coerce(value)
        self._send("set", name, value)
        return value

    def param(self, name: str) -> Param:
        """The spec of hyperparameter ``name`` (from the worker once ready: no torch here)."""
        if self.param_specs:
            if name not in self.param_specs:
                from dynlab.engines.spec import suggest

                raise SpecError(
                    f"engine {self.config.engine!r} has no hyperparameter {name!r}"
                    f"{suggest(name, list(self.param_specs))}"
                )
            return self.param_specs[name]
        return self.spec.param(name)

    @property
    def spec(self) -> EngineSpec:  # the registry is imported lazily (torch)
        if self._spec is None:
            from dynlab.engines.base import get_engine

            self._spec = get_engine(self.config.engine).spec
        return self._spec

    def _send(self, *cmd: Any) -> None:
        if self._thread is None and self._proc is None:
            raise RuntimeError("run not started")
        self._cmd.put(cmd)

    # ------------------------------------------------------------------ output
    def drain(self, limit: int | None = None) -> list[Item]:
        """Everything produced since the last call: ``Ready`` once, then frames and events in order.

        ``Status`` messages update this object's attributes instead.
        """
        items: list[Item] = self._backlog
        self._backlog = []
        if self._thread is None and self._proc is None:
            return items  # not started: nothing produced yet
        n = 0
        while limit is None or n < limit:
            try:
                item = self._out.get_nowait()
            except (queue.Empty, EOFError, OSError):
                break
            n += 1
            if self._take(item):
                items.append(item)
        if (
            self._proc is not None
            and not self._proc.is_alive()
            and not self.state.ended
            and self._out.empty()
        ):
            code = self._proc.exitcode
            if code not in (0, None):
                self.state = RunState.FAILED
                self.message = f"engine process died (exit code {code})"
                ev = Event(self.step, "failed", {"message": self.message}, time.time())
                self.events.append(ev)
                items.append(ev)
        return items

    def _take(self, item: Any) -> bool:
        """Update this run from one item of its worker; True if ``drain()`` hands it out.

        ``Status`` updates the attributes only; ``Ready`` and ``set`` events also update
        the streams and hyperparameters the UI reads.
        """
        if isinstance(item, Status):
            self.state, self.step = RunState(item.state), item.step
            self.steps_per_second, self.device, self.message = (
                item.steps_per_second,
                item.device,
                item.message,
            )
            return False
        if isinstance(item, Ready):
            self.streams, self.params, self.device = item.streams, dict(item.params), item.device
            self.param_specs = {p.name: p for p in item.param_specs}
            self.ready = True
        elif isinstance(item, Event):
            self.events.append(item)
            if item.kind == "set":
                self.params[item.payload["name"]] = item.payload["new"]
        return True

    @property
    def alive(self) -> bool:
        if self._thread is not None:
            return self._thread.is_alive()
        if self._proc is not None:
            return self._proc.is_alive()
        return False

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the worker to end; True if it did. Keeps draining so it never blocks on a full queue."""
        deadline = None if timeout is None else time.monotonic() + timeout
        collected: list[Item] = []
        while self.alive:
            collected.extend(self.drain())
            if deadline is not None and time.monotonic() > deadline:
                break
            if self._thread is not None:
                self._thread.join(0.02)
            else:
                self._proc.join(0.02)
        collected.extend(self.drain())
        self._backlog = collected + self._backlog  # handed out by the next drain()
        return not self.alive

    def close(self, timeout: float = 10.0) -> CloseReport:
        """Stop and wait; report what could and could not be stopped.

        A worker thread whose engine step hangs cannot be killed: its recording is closed
        from here (status ``interrupted``) and the thread is left to die with the process.
        A child process that does not end is terminated; its rows are on disk up to the
        last flush, and the file is finalised here so that every HDF5 tool reads it.
        """
        if self._thread is None and self._proc is None:
            return CloseReport(True, True)
        if self.alive:
            self.stop()
            self.join(timeout)
        if not self.alive:
            if self.state in (RunState.RUNNING, RunState.STARTING, RunState.PAUSED):
                self.state = self.final_state or RunState.STOPPED
            return CloseReport(True, True)
        if self._proc is not None:
            self._proc.terminate()
            self._proc.join(2)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(2)
            self.state = RunState.STOPPED
            closed = self._finalise_recording()
            msg = f"engine process did not stop within {timeout:g} s and was terminated"
            self.message = msg
            return CloseReport(True, closed, msg)
        closed = self._worker.recording.abandon() if self._worker and self._worker.recording else True
        self.state = RunState.FAILED
        msg = f"engine step did not return within {timeout:g} s; its thread is abandoned"
        msg += ", the recording was closed" if closed else ""
        self.message = msg
        return CloseReport(False, closed, msg)

    def _finalise_recording(self) -> bool:
        if not self.recording or not os.path.exists(self.recording):
            return True
        try:
            from dynlab import recording

            finalise = getattr(recording, "finalise", None)
            if finalise is None:
                return False
            finalise(self.recording)
            return True
        except Exception:
            return False


def _watch_parent(parent_pid: int, worker_box: list[Worker], commands: Any) -> None:
    """In the child: end this process when the parent dies (a crashed app leaves no orphan).

    The worker is asked to stop first, so its file closes normally; if its step hangs,
    the recording is closed from here and the process exits.
    """
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    try:
        commands.put(("stop",))
    except Exception:
        pass
    deadline = time.monotonic() + _ORPHAN_GRACE_S
    while time.monotonic() < deadline:
        if worker_box and worker_box[0]._done and worker_box[0].recording is None:
            break
        time.sleep(0.1)
    if worker_box and worker_box[0].recording is not None:
        worker_box[0].recording.abandon()
    os._exit(0)


def _process_main(cfg: RunConfig, commands: Any, out: Any, parent_pid: int) -> None:
    # Child process: the engine owns these cores; the parent only draws.
    if cfg.torch_threads is None:
        cfg.torch_threads = max(1, (os.cpu_count() or 1))
    # The parent handles Ctrl-C; the child ends when told to, or when its parent is gone.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    box: list[Worker] = []
    watchdog = threading.Thread(target=_watch_parent, args=(parent_pid, box, commands), daemon=True)
    watchdog.start()
    work(cfg, commands, out, on_worker=box.append)
    out.close()
    out.join_thread()


def _start_with_threads(proc: Any, torch_threads: int | None) -> None:
    """Start ``proc`` with the BLAS thread count in its environment.

    The child's numpy/BLAS reads its thread count at import, before our code runs: pass it
    through the environment so probes do not oversubscribe the cores.
    """
    threads = str(torch_threads or os.cpu_count() or 1)
    keys = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: threads for k in keys})
    try:
        proc.start()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


#: Engine processes started ahead of time, by (torch threads, display queue size).
_WARM: dict[tuple[int | None, int], tuple[Any, Any, Any]] = {}
_WARM_LOCK = threading.Lock()


def app_threads() -> int:
    """Torch threads of an engine process beside the app: every core but one (which draws)."""
    return max(1, (os.cpu_count() or 2) - 1)


def prewarm(torch_threads: int | None = None, display_queue: int = _DISPLAY_QUEUE) -> bool:
    """Start an engine process now, so that the next process-hosted ``Run`` starts at once.

    The child imports torch and every engine, then waits for a ``RunConfig``. A ``Run``
    with host ``"process"``, the same ``torch_threads`` and the same display queue adopts
    it on ``start()``; other runs spawn their own. At most one waits per setting; it ends
    with this process. Returns True when a new child was started.

    Parameters
    ----------
    torch_threads
        Torch threads of the run that will adopt it (``None`` as in ``Run``: all cores).
    display_queue
        The display queue size of that run.
    """
    key = (torch_threads, display_queue)
    with _WARM_LOCK:
        held = _WARM.get(key)
        if held is not None and held[0].is_alive():
            return False
        ctx = mp.get_context("spawn")
        commands, out = ctx.Queue(), ctx.Queue(maxsize=display_queue)
        proc = ctx.Process(
            target=_warm_main, args=(commands, out, os.getpid()), daemon=True, name="dynlab-warm-engine"
        )
        _start_with_threads(proc, torch_threads)
        _WARM[key] = (proc, commands, out)
        return True


def _take_warm(torch_threads: int | None, display_queue: int) -> tuple[Any, Any, Any] | None:
    """The waiting engine process for these settings, if one is alive (it is then no longer waiting)."""
    with _WARM_LOCK:
        held = _WARM.pop((torch_threads, display_queue), None)
    if held is None:
        return None
    if held[0].is_alive():
        return held
    held[1].close()
    held[2].close()
    return None


def _warm_up() -> None:
    """Pay now what a cold run pays before its first frame: imports and first-use costs.

    Importing torch and every engine takes seconds; so does the first optimizer, whose
    constructor imports ``torch._dynamo`` (about 2 s on 2 cores). A tiny step runs the
    usual kernels once. The run seeds torch and numpy itself afterwards, so nothing of
    this reaches its numbers.
    """
    import torch

    from dynlab.engines.base import registry

    registry()
    w = torch.zeros(8, 8, requires_grad=True)
    opt = torch.optim.Adam([w], lr=1e-3)
    loss = (torch.ones(4, 8) @ w).square().mean()
    loss.backward()
    opt.step()


def _warm_main(commands: Any, out: Any, parent_pid: int) -> None:
    """In a warm child: import what a run needs, wait for its config, then run it as a cold child would."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    box: list[Worker] = []
    watchdog = threading.Thread(target=_watch_parent, args=(parent_pid, box, commands), daemon=True)
    watchdog.start()
    _warm_up()
    msg = commands.get()
    if msg[0] != "config":  # told to stop (its parent is gone) before any run came
        return
    cfg: RunConfig = msg[1]
    if cfg.torch_threads is None:
        cfg.torch_threads = max(1, (os.cpu_count() or 1))
    work(cfg, commands, out, on_worker=box.append)
    out.close()
    out.join_thread()


def run_headless(
    preset: Preset,
    *,
    record: str | None = None,
    commands: Mapping[int, list[tuple]] | None = None,
    host: str = "thread",
    run_kwargs: Mapping[str, Any] | None = None,
) -> tuple[Run, list[Frame | Event]]:
    """Run a preset to the end and return the run and everything it produced.

    ``commands`` maps a step to commands to send once the run reaches it (used by
    tests to apply a live ``set``); steps are approximate (the next drain after it).
    """
    run = Run(preset, record=record, host=host, display_queue=1 << 20, **dict(run_kwargs or {}))
    run.start()
    items: list[Frame | Event] = []
    pending = dict(commands or {})
    while run.alive:
        new = [i for i in run.drain() if not isinstance(i, Ready)]
        items.extend(new)
        for step in sorted(pending):
            if run.step >= step:
                for cmd in pending.pop(step):
                    getattr(run, cmd[0])(*cmd[1:])
        time.sleep(0.005)
    items.extend(i for i in run.drain() if not isinstance(i, Ready))
    return run, items
