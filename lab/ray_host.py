"""The Ray host: an engine as a Ray actor, steered and recorded from the user's side.

``Run(preset, host="ray")`` builds a :class:`RayRun`. Its engine runs in an
:class:`EngineHost` actor (the same :class:`~dynlab.worker.Worker` loop a thread or a child
process runs), on whichever node of the cluster has room, with a GPU when the preset asks
for one and the cluster has one. Pause, step, set and stop are actor calls; frames come back
in batches, one ``pull`` per ``drain()``; the recording is written here, by :class:`RayRun`,
from the frames it pulls, so recordings land where the user is. The actor never writes files.

Ray is an optional dependency (``pip install 'dynlab-desktop[ray]'``). Without a cluster
address (``--address``, ``RAY_ADDRESS``) :func:`connect` starts an embedded Ray on this
machine, on loopback only and without the dashboard.
"""

from __future__ import annotations

import copy
import logging
import os
import queue
import sys
import threading
import time
from dataclasses import replace
from typing import Any

from dynlab.engines.spec import Event, Frame
from dynlab.recording import Recorder, RecordingError
from dynlab.runner import CloseReport, Run
from dynlab.source import CheckpointData, Item, Ready, RunState
from dynlab.worker import RunConfig, recording_meta, work

INSTALL_HINT = (
    "Ray is not installed (--host ray and dynlab sweep run on Ray): "
    "pip install 'dynlab-desktop[ray]'  (or: pip install 'ray[default]==2.60.0')"
)
#: Items one ``pull`` hands back at most (a batch crosses the wire as one message).
PULL_BATCH = 4096
#: Items the actor holds for the user before its engine waits (frames are never dropped:
#: they are the recording).
OUTBOX_ITEMS = 65536


class RayUnavailable(RuntimeError):
    """Ray is not installed, or the cluster cannot be reached; the message says what to do."""


def import_ray(local: bool = False) -> Any:
    """The ``ray`` module, or :class:`RayUnavailable` saying how to install it.

    ``local``: this process will start or join a Ray on this machine's loopback. Ray then
    has to run in its single-machine mode, or it rewrites ``127.0.0.1`` into this machine's
    public address and cannot reach a loopback-only cluster. The mode is read when Ray is
    first imported, so it is chosen here, before that.
    """
    if local and "ray" not in sys.modules:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError:
        raise RayUnavailable(INSTALL_HINT) from None
    return ray


def embedded_cpus() -> int:
    """CPUs an embedded Ray offers: this machine's cores (``DYNLAB_RAY_CPUS`` overrides)."""
    env = os.environ.get("DYNLAB_RAY_CPUS")
    if env:
        return max(1, int(env))
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def connect(address: str | None = None) -> Any:
    """Connect this process to Ray once; return the ``ray`` module.

    Parameters
    ----------
    address
        A cluster address (``HOST:PORT`` or ``auto``). Without one, ``RAY_ADDRESS`` is used;
        without that, an embedded Ray starts here: loopback only, no dashboard, one CPU
        slot per core. A process already connected (a test's cluster) is left as it is.
    """
    address = address or os.environ.get("RAY_ADDRESS") or None
    ray = import_ray(local=not address or is_loopback(address))
    if ray.is_initialized():
        return ray
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
    try:
        if address:
            ray.init(address=address, **quiet)
        else:
            ray.init(
                num_cpus=embedded_cpus(),
                include_dashboard=False,
                _node_ip_address="127.0.0.1",
                namespace="dynlab",
                **quiet,
            )
    except (ConnectionError, ValueError, RuntimeError) as exc:
        where = address or "an embedded local Ray"
        raise RayUnavailable(f"cannot connect to Ray at {where}: {exc}") from None
    return ray


_keeper_lock = threading.Lock()
_keeper: dict[str, Any] = {}  # thread, done (Event), failure, release (Event)


def connect_soon(address: str | None = None) -> threading.Event:
    """Connect to Ray without waiting (an embedded Ray takes seconds to start).

    Returns an event set once connected or failed (:func:`connect_failure` says which).
    Raises :class:`RayUnavailable` at once when Ray is not installed.

    The connection is made on a thread that then stays until the next one is made: Ray's
    processes are started with a parent-death signal, which Linux ties to the *thread*
    that started them, so that thread must outlive every use of the embedded Ray.
    """
    address = address or os.environ.get("RAY_ADDRESS") or None
    ray = import_ray(local=not address or is_loopback(address))
    with _keeper_lock:
        thread = _keeper.get("thread")
        done: threading.Event | None = _keeper.get("done")
        if done is not None:
            connecting = thread is not None and thread.is_alive() and not done.is_set()
            if connecting or (ray.is_initialized() and _keeper.get("failure") is None):
                return done
        if "release" in _keeper:
            _keeper["release"].set()  # the old connection's Ray was shut down: let its thread go
        done, release = threading.Event(), threading.Event()
        _keeper.update(done=done, release=release, failure=None)
        if ray.is_initialized():  # connected by someone else (a test's cluster, a script)
            done.set()
            _keeper["thread"] = None
            return done
        thread = threading.Thread(
            target=_keep, args=(address, done, release), name="ray-connection", daemon=True
        )
        _keeper["thread"] = thread
        thread.start()
        return done


def connect_failure() -> Exception | None:
    """Why the last :func:`connect_soon` failed, or ``None``."""
    return _keeper.get("failure")


def _keep(address: str | None, done: threading.Event, release: threading.Event) -> None:
    try:
        connect(address)
    except Exception as exc:
        _keeper["failure"] = exc
        done.set()
        return
    done.set()
    release.wait()


def is_loopback(address: str) -> bool:
    """Whether a ``HOST:PORT`` address names this machine's loopback."""
    host = address.rsplit(":", 1)[0].strip("[]")
    return host in ("127.0.0.1", "localhost", "::1")


def cluster_gpus() -> float:
    """GPUs the connected cluster has in all (0 when none)."""
    return float(import_ray().cluster_resources().get("GPU", 0))


def wants_gpu(device: str) -> bool:
    """Whether ``device`` asks for CUDA; raises when it does and the cluster has no GPU.

    ``auto`` takes a GPU when the cluster has one, and runs on CPU otherwise.
    """
    gpus = cluster_gpus()
    if device.startswith("cuda"):
        if gpus < 1:
            raise RayUnavailable(f"device {device!r} asks for a GPU, but the Ray cluster has none")
        return True
    return device == "auto" and gpus >= 1


def engine_meta(cfg: RunConfig, ready: Ready, info: dict[str, Any]) -> dict[str, Any]:
    """Root attributes of a recording, the same ones a worker writing it itself would set."""
    return recording_meta(cfg, info["engine"], info["engine_version"], ready.device, dict(ready.params))


class _Outbox:
    """The worker's out queue in the actor: ``put`` waits for room instead of dropping.

    A thread host may drop display frames (its worker records them); here the frames
    are the recording, so the engine waits for the user's pulls instead.
    """

    def __init__(self, maxsize: int = OUTBOX_ITEMS) -> None:
        self._q: queue.Queue[Any] = queue.Queue(maxsize)

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        self._q.put(item)  # waits for room, whatever the worker asked for (the actor dies by ray.kill)

    def take(self, limit: int) -> list[Any]:
        items: list[Any] = []
        while len(items) < limit:
            try:
                items.append(self._q.get_nowait())
            except queue.Empty:
                break
        return items

    def empty(self) -> bool:
        return self._q.empty()


class EngineHost:
    """The Ray actor: one :class:`~dynlab.worker.Worker` in a thread, commands in, batches out.

    Method calls run one at a time on the actor's main thread, in the order the user sent
    them, while the engine steps on its own thread.
    """

    def __init__(self, cfg: RunConfig) -> None:
        cfg = copy.copy(cfg)
        cfg.record = None  # recordings (checkpoints too: ``checkpoints_out``) are written on the user's side
        if cfg.torch_threads is None:
            cfg.torch_threads = _assigned_cpus()
        self.cfg = cfg
        self._commands: queue.Queue[tuple] = queue.Queue()
        self._out = _Outbox()
        self.final: RunState | None = None
        self._thread = threading.Thread(target=self._main, name="dynlab-ray-engine", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        self.final = work(self.cfg, self._commands, self._out)

    def describe(self) -> dict[str, Any]:
        """Engine name and version, and where this actor runs (node, pid, GPUs)."""
        import ray

        from dynlab.engines.base import get_engine

        spec = get_engine(self.cfg.engine).spec
        ctx = ray.get_runtime_context()
        return {
            "engine": spec.name,
            "engine_version": spec.version,
            "node": ctx.get_node_id(),
            "pid": os.getpid(),
            "gpus": [str(g) for g in ray.get_gpu_ids()],
            "torch_threads": self.cfg.torch_threads,
        }

    def command(self, *cmd: Any) -> None:
        """Queue one worker command: ``("pause",)``, ``("set", name, value)``, ..."""
        self._commands.put(tuple(cmd))

    def pull(self, limit: int = PULL_BATCH) -> tuple[list[Any], bool]:
        """Everything produced since the last pull (at most ``limit`` items), and whether
        the run is over and nothing more will come."""
        done = not self._thread.is_alive()
        items = self._out.take(limit)
        return items, done and self._out.empty()


def _assigned_cpus() -> int:
    """The CPUs Ray gave this actor or task (its torch thread count)."""
    import ray

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    return max(1, int(cpus))


_ACTOR_CLASS: Any = None


def actor_class() -> Any:
    """``EngineHost`` as a Ray actor class (made once: Ray exports each class it wraps)."""
    global _ACTOR_CLASS
    if _ACTOR_CLASS is None:
        _ACTOR_CLASS = import_ray().remote(EngineHost)
    return _ACTOR_CLASS


class RayRun(Run):
    """A :class:`~dynlab.runner.Run` whose engine is a Ray actor; build it as ``Run(..., host="ray")``.

    Parameters
    ----------
    preset, record, on_diverge, start_paused, torch_threads, flush_interval, label, until_stopped, pace
        As for :class:`~dynlab.runner.Run`. ``torch_threads`` is also the number of CPUs
        the actor reserves (default 1).
    address
        The Ray cluster (default: ``RAY_ADDRESS``, else an embedded local Ray).
    """

    def __init__(self, preset: Any, *, address: str | None = None, **kwargs: Any) -> None:
        kwargs["host"] = "ray"
        super().__init__(preset, **kwargs)
        self.address = address
        self.node = ""
        self._actor: Any = None
        self._info_ref: Any = None
        self._pull_ref: Any = None
        self._finished = False
        self._recorder: Recorder | None = None
        self._ray: Any = None
        self._connected: threading.Event | None = None
        self._queued: list[tuple] = []

    # ------------------------------------------------------------------ control
    def start(self) -> RayRun:
        """Start connecting to Ray (an embedded one starts in the background) and return at once.

        The actor is created by the first ``drain()`` after the connection is up; commands
        sent before that wait here. A connection that fails fails the run with its reason.
        """
        if self._connected is not None:
            raise RuntimeError("run already started")
        self._connected = connect_soon(self.address)
        self.state = RunState.STARTING
        self._launch_when_connected()
        return self

    def _launch_when_connected(self) -> None:
        if self._actor is not None or self._finished:
            return
        if self._connected is None or not self._connected.is_set():  # not started, or still connecting
            return
        try:
            failure = connect_failure()
            if failure is not None:
                raise failure
            self._launch()
        except Exception as exc:  # no cluster, no GPU where one is asked for...
            self.state, self.message = RunState.FAILED, str(exc)
            self._fail(self.message)

    def _launch(self) -> None:
        self._ray = import_ray()
        cfg = replace(self.config, record=None, checkpoints_out=bool(self.recording))
        gpu = wants_gpu(cfg.device)
        if gpu and cfg.device.startswith("cuda:"):
            cfg.device = "cuda"  # Ray shows the actor only its own GPU, as cuda:0
        cpus = max(1, self.config.torch_threads or 1)
        self._actor = actor_class().options(num_cpus=cpus, num_gpus=1 if gpu else 0).remote(cfg)
        self._info_ref = self._actor.describe.remote()
        for cmd in self._queued:
            self._actor.command.remote(*cmd)
        self._queued.clear()
        self._pull_ref = self._actor.pull.remote()

    def _send(self, *cmd: Any) -> None:
        if self._connected is None:
            raise RuntimeError("run not started")
        if self._finished:
            return
        if self._actor is None:
            self._queued.append(cmd)  # still connecting: sent once the actor exists
        else:
            self._actor.command.remote(*cmd)

    # ------------------------------------------------------------------ output
    def drain(self, limit: int | None = None) -> list[Item]:
        """Same as ``Run.drain``; frames are recorded here as they arrive, none dropped."""
        self._launch_when_connected()
        items: list[Item] = self._backlog
        self._backlog = []
        if self._pull_ref is not None:
            ready, _ = self._ray.wait([self._pull_ref], timeout=0)
            if ready:
                ref, self._pull_ref = self._pull_ref, None
                try:
                    batch, done = self._ray.get(ref)
                except Exception as exc:  # the actor or its node died
                    self._lost(exc)
                    items.extend(self._backlog)
                    self._backlog = []
                else:
                    items.extend(self._absorb(batch))
                    if done:
                        self._end()
                    else:
                        self._pull_ref = self._actor.pull.remote()
        rec = self._recorder
        if rec is not None and time.monotonic() - rec.last_flush >= rec.flush_interval:
            self._record("flush")
        return items

    def _absorb(self, batch: list[Any]) -> list[Item]:
        out: list[Item] = []
        for item in batch:
            if isinstance(item, CheckpointData):  # stored here, never handed out
                self._record("checkpoint", item.step, item.arrays, item.state)
                continue
            if not self._take(item):
                continue
            if isinstance(item, Ready):
                self._open_recording(item)
            elif isinstance(item, Frame):
                self._record("write", item)
            elif isinstance(item, Event):
                self._record("event", item)
            out.append(item)
        return out

    def _open_recording(self, ready: Ready) -> None:
        info = self._ray.get(self._info_ref)
        self.node = info["node"]
        if not self.recording:
            return
        meta = engine_meta(self.config, ready, info)
        try:
            self._recorder = Recorder(
                self.recording, ready.streams, meta, flush_interval=self.config.flush_interval
            )
        except RecordingError as exc:
            self._record_failed(exc)

    def _record(self, method: str, *args: Any) -> None:
        if self._recorder is None:
            return
        try:
            getattr(self._recorder, method)(*args)
        except RecordingError as exc:
            self._recorder.abort()
            self._recorder = None
            self._record_failed(exc)

    def _record_failed(self, exc: Exception) -> None:
        """As the worker does: drop the file, pause, and let the user decide."""
        self._send("pause")
        ev = Event(self.step, "record_error", {"message": str(exc)}, time.time())
        self.events.append(ev)
        self._backlog.append(ev)

    def _end(self, status: str | None = None) -> None:
        self._finished = True
        if self._recorder is not None:
            rec, self._recorder = self._recorder, None
            try:
                rec.close(status or self.state.value)
            except RecordingError as exc:
                ev = Event(self.step, "record_error", {"message": str(exc)}, time.time())
                self.events.append(ev)
                self._backlog.append(ev)

    def _lost(self, exc: Exception) -> None:
        self.state = RunState.FAILED
        self.message = f"the Ray actor running the engine was lost: {type(exc).__name__}: {exc}"
        self._fail(self.message)

    def _fail(self, message: str) -> None:
        ev = Event(self.step, "failed", {"message": message}, time.time())
        self.events.append(ev)
        self._backlog.append(ev)
        self._record("event", ev)
        self._end(RunState.FAILED.value)

    # ------------------------------------------------------------------ life cycle
    @property
    def alive(self) -> bool:
        return self._connected is not None and not self._finished

    def join(self, timeout: float | None = None) -> bool:
        """Pull until the run is over (or ``timeout``); what came is handed out by ``drain()``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        collected: list[Item] = []
        while self.alive:
            collected.extend(self.drain())
            if deadline is not None and time.monotonic() > deadline:
                break
            time.sleep(0.01)
        self._backlog = collected + self._backlog
        return not self.alive

    def close(self, timeout: float = 10.0) -> CloseReport:
        """Stop the engine, pull what it made, close the recording, and free the actor."""
        if self._connected is None:
            return CloseReport(True, True)
        if self.alive:
            self.stop()
            self.join(timeout)
        stopped = not self.alive
        if not stopped:
            self.state = RunState.STOPPED
            self.message = f"the Ray actor did not stop within {timeout:g} s and was killed"
            self._end("interrupted")
        if self._actor is not None:
            try:
                self._ray.kill(self._actor)
            except Exception:
                pass
        return CloseReport(stopped, True, "" if stopped else self.message)
