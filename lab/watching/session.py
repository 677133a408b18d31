"""``dynlab.watch``: stream any PyTorch loop into the lab, record it, and take commands back.

The user's process owns its model and writes its own recording (the usual HDF5 format,
marked as a watched script); a server thread serves plain-data frames to viewers on the
local channel (:mod:`dynlab.watching.channel`). Commands (set, pause, resume, step, stop)
are queued by that thread and applied by the script itself at its next :meth:`step`.

Cost per step is the feature: the default probes are a handful of ``_foreach`` kernels and
one host transfer (:mod:`dynlab.engines.watch.training`); the expensive probes run only
when named, at their cadence, and report what they cost in ``probe_seconds``.
"""

from __future__ import annotations

import atexit
import math
import os
import sys
import threading
import time
import traceback
import warnings
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from dynlab.engines.spec import STREAM_KINDS, Event, Frame, SpecError, Stream, StreamKind, suggest
from dynlab.engines.watch.isolation import rng_preserved
from dynlab.engines.watch.probes import ProbeContext, make_probe
from dynlab.engines.watch.training import StepProbes, to_host
from dynlab.recording import Recorder, RecordingError
from dynlab.source import RunState
from dynlab.watching import StopRequested, hyper
from dynlab.watching.layout import check_streams, parse_views, preset_text
from dynlab.watching.wire import event_to_dict, param_to_dict, stream_to_dict

ON_DIVERGE = ("warn", "stop", "pause")
_COMMANDS = ("set", "pause", "resume", "step", "stop")
_HOLD_POLL_S = 0.25
_session_ids = iter(range(1 << 30))
#: Streams the default probes may emit: a user value cannot take these names.
_DEFAULT_NAMES = frozenset(
    {"lr", "grad_norm", "grad_norm_layer", "weight_norm", "update_angle", "effective_step", "probe_seconds"}
)
#: The kind of an undeclared value, by its number of dimensions.
_KIND_OF_NDIM: dict[int, StreamKind] = {0: "scalar", 1: "vector", 2: "heatmap"}


def recordings_dir() -> Path:
    """Where recordings go by default: the app's folder (``DYNLAB_RECORDINGS`` overrides).

    The same place as the app's ``QStandardPaths.AppDataLocation``/recordings, found
    without Qt: ``~/.local/share/dynlab/dynlab/recordings`` on Linux.
    """
    env = os.environ.get("DYNLAB_RECORDINGS")
    if env:
        return Path(env)
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    elif os.name == "nt":
        base = Path(os.environ.get("APPDATA", Path.home()))
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "dynlab" / "dynlab" / "recordings"


class _UserStream:
    """A stream the user declared (``declare``/``probe``) or that ``step()`` inferred."""

    def __init__(
        self, name: str, kind: str | None, labels: Sequence[str], units: str, description: str, log: bool
    ):
        self.name, self.kind, self.labels = name, _stream_kind(name, kind), tuple(str(x) for x in labels)
        self.units, self.description, self.log = units, description, log

    def stream(self, value: np.ndarray) -> Stream:
        kind = self.kind or _KIND_OF_NDIM.get(value.ndim)
        if kind is None:
            raise SpecError(
                f"{self.name}: a value of shape {value.shape} is not a scalar, vector or 2-D array"
            )
        shape = tuple(value.shape)
        labels = self.labels
        if kind == "vector" and not labels:
            labels = tuple(str(i) for i in range(shape[0] if shape else 1))
        if kind == "scalar" and value.size == 1:
            shape = ()
        desc = self.description or "Your value, passed to lab.step()."
        return Stream(
            self.name, kind, shape, units=self.units, description=desc, labels=labels, log_scale=self.log
        )


class _UserProbe:
    def __init__(self, name: str, fn: Callable[[], Any], every: int, declared: _UserStream) -> None:
        self.name, self.fn, self.every, self.declared = name, fn, int(every), declared


class WatchSession:
    """One watched training run. Made by :func:`watch`; use it as a context manager.

    Attributes
    ----------
    name
        How ``dynlab live`` and the app list this session.
    recording
        The HDF5 file this run writes, or ``None``.
    state
        A :class:`~dynlab.source.RunState`.
    step_count
        Number of :meth:`step` calls so far.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        name: str | None = None,
        record: str | os.PathLike[str] | bool | None = None,
        loss_fn: Callable[[Any, Any], Tensor] | None = None,
        probe_batch: tuple[Any, Any] | None = None,
        probes: Mapping[str, int | Mapping[str, Any]] | None = None,
        layers: Sequence[str] | str | None = None,
        scale_invariant: Sequence[str] | None = None,
        features: str | None = None,
        classifier: str | None = None,
        transforms: Mapping[str, tuple[Callable, Callable]]
        | Sequence[tuple[Callable, Callable]]
        | None = None,
        views: Sequence[Mapping[str, Any]] | str | os.PathLike[str] | None = None,
        on_diverge: str = "warn",
        total_steps: int = 0,
        serve: bool = True,
        flush_interval: float = 1.0,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"dynlab.watch: model must be a torch.nn.Module, got {type(model).__name__}")
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"dynlab.watch: optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
            )
        if on_diverge not in ON_DIVERGE:
            raise SpecError(
                f"dynlab.watch: on_diverge must be one of {', '.join(ON_DIVERGE)}; got {on_diverge!r}"
            )
        if probe_batch is not None and not (isinstance(probe_batch, (tuple, list)) and len(probe_batch) == 2):
            raise SpecError("dynlab.watch: probe_batch must be (inputs, targets)")
        self.model, self.optimizer = model, optimizer
        self.script = str(Path(sys.argv[0]).resolve()) if sys.argv and sys.argv[0] else "<interactive>"
        self.name = name or (Path(self.script).stem if sys.argv and sys.argv[0] else "watched")
        self.on_diverge = on_diverge
        self.total_steps = int(total_steps or 0)
        if isinstance(transforms, Sequence):
            transforms = {f"t{i}": pair for i, pair in enumerate(transforms)}
        self._ctx = ProbeContext(
            model,
            loss_fn,
            tuple(probe_batch) if probe_batch is not None else None,
            features,
            classifier,
            dict(transforms or {}),
        )
        # Refused here, not 500 steps later: unknown names, missing loss_fn/probe_batch.
        self._probes = [make_probe(n, spec, self._ctx) for n, spec in (probes or {}).items()]
        self._views = parse_views(views)
        self._defaults = StepProbes(model, optimizer, layers=layers, scale_invariant=scale_invariant)
        self.device = str(self._defaults.device)
        self._declared: dict[str, _UserStream] = {}
        self._user_probes: list[_UserProbe] = []
        self._streams: dict[str, Stream] | None = None
        self._warned: set[str] = set()
        self.state = RunState.RUNNING
        self.step_count = 0
        self.steps_per_second = 0.0
        self.message = ""
        self._rate_t, self._rate_step = time.monotonic(), 0
        self._commands: deque[dict[str, Any]] = deque()
        self._wake = threading.Event()
        self._budget = 0
        self._diverged = False
        self._ending: RunState | None = None  # set by a stop command or on_diverge="stop"
        self._closed = False
        self._lock = threading.Lock()  # the recorder is flushed from the server thread too
        self._recorder: Recorder | None = None
        self._rows: deque[Frame] = deque()  # frames waiting for the flush thread
        self._flusher: threading.Thread | None = None
        self._flush_stop = threading.Event()
        self.flush_interval = float(flush_interval)
        if record is None or record is True:
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            record = recordings_dir() / f"{self.name}-{stamp}.h5"
        self.recording: str | None = str(record) if record not in (False, "") else None
        if self.recording:
            Path(self.recording).parent.mkdir(parents=True, exist_ok=True)
        self.started = time.time()
        self._server = None
        if serve:
            from dynlab.watching.channel import ChannelError, Server

            extra = {"script": self.script, "recording": self.recording or "", "started": self.started}
            try:
                self._server = Server(
                    self, name=self.name, session_id=f"{os.getpid()}-{next(_session_ids)}", extra=extra
                )
            except (ChannelError, OSError) as exc:  # watching must never stop the training
                warnings.warn(f"dynlab.watch: no live channel ({exc}); recording only", stacklevel=3)
        atexit.register(self._close_at_exit)

    # ------------------------------------------------------------------ the user's API
    def declare(
        self,
        name: str,
        kind: str | None = None,
        *,
        labels: Sequence[str] = (),
        units: str = "",
        description: str = "",
        log_scale: bool = False,
    ) -> None:
        """Declare a stream that :meth:`step` will receive later (streams are fixed at the first step)."""
        self._before_first_step("declare")
        _check_name(name)
        self._declared[name] = _UserStream(name, kind, labels, units, description, log_scale)

    def probe(
        self,
        name: str,
        fn: Callable[[], Any],
        every: int = 1,
        *,
        kind: str | None = None,
        labels: Sequence[str] = (),
        units: str = "",
        description: str = "",
        log_scale: bool = False,
    ) -> None:
        """Run ``fn()`` every ``every`` steps and record what it returns as stream ``name``.

        ``fn`` returns a number, an array or tensor, or a dict of numbers (a vector labelled
        by its keys). Its cost goes to ``probe_seconds``; if it raises, the error becomes a
        ``warning`` event and the probe is switched off while training goes on.
        """
        self._before_first_step("probe")
        _check_name(name)
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise SpecError(f"probe {name!r}: every must be an integer >= 1, got {every!r}")
        declared = _UserStream(name, kind, labels, units, description or f"Your probe {name}.", log_scale)
        self._user_probes.append(_UserProbe(name, fn, every, declared))

    def event(self, kind: str, **payload: Any) -> None:
        """Mark a moment of your own (``lab.event("lr drop")``) on every time axis.

        It is recorded as a ``phase`` event named ``kind``, like an engine's phase marker.
        """
        self._emit("phase", name=str(kind), **payload)

    def step(self, **values: Any) -> None:
        """Record this iteration (call once per iteration, after ``optimizer.step()``).

        Every keyword becomes a stream: numbers, tensors (one device synchronisation for
        all of them together), arrays, or dicts of numbers. Commands from ``dynlab set``,
        ``pause``, ``resume``, ``stop`` and the app are applied here.

        Raises
        ------
        StopRequested
            The run was stopped (``dynlab stop``, the app, or ``on_diverge="stop"``); inside
            a ``with dynlab.watch(...)`` block this ends the block cleanly.
        """
        if self._closed:
            raise RuntimeError(f"dynlab.watch session {self.name!r} is closed")
        t = self.step_count
        data = self._measure(values, t)
        if self._streams is None:
            self._begin(data)
        self._check_user_values(data, t)
        self._check_divergence(data, t)
        frame = Frame(t, data, time.time())
        if self._recorder is not None:
            self._rows.append(frame)  # the flush thread hands it to the recorder: no lock here
        if self._server is not None:
            self._server.publish_frame(t, data)
        self.step_count = t + 1
        now = time.monotonic()
        if now - self._rate_t >= 0.5:
            self.steps_per_second = (self.step_count - self._rate_step) / (now - self._rate_t)
            self._rate_t, self._rate_step = now, self.step_count
        if self._commands or self.state.waiting:
            self._apply_commands()
            if self.state.waiting:
                if self._budget:  # single steps granted while paused
                    self._budget -= 1
                else:
                    self._hold()
        if self._ending is not None:
            self.close(self._ending.value)
            raise StopRequested(f"dynlab: run {self.name!r} {self._ending.value} at step {self.step_count}")

    def close(self, status: str | None = None, message: str = "") -> None:
        """End the session: final events, close the recording with ``status``, leave the channel."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self._close_at_exit)
        final = status or (
            self.state.value if self.state is not RunState.RUNNING else RunState.FINISHED.value
        )
        if final == RunState.PAUSED.value:
            final = RunState.STOPPED.value
        if status == RunState.FAILED.value:
            self._emit("failed", message=message)
        try:
            self.state = RunState(final)
        except ValueError:
            self.state = RunState.FINISHED
        self._emit("end", status=final)
        if self._defaults.finder is not None:
            self._defaults.finder.remove()
        self._flush_stop.set()
        if self._flusher is not None:
            self._flusher.join(10)
        if self._recorder is not None:
            self._locked("flush")
            with self._lock:
                rec, self._recorder = self._recorder, None
                try:
                    rec.close(final)
                except (RecordingError, OSError) as exc:
                    warnings.warn(f"dynlab.watch: closing {self.recording} failed: {exc}", stacklevel=2)
        if self._server is not None:
            self._server.close()

    def __enter__(self) -> WatchSession:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: Any) -> bool:
        if et is None or issubclass(et, StopRequested):
            self.close()
            return et is not None  # a stop ends the block cleanly
        if issubclass(et, KeyboardInterrupt):
            self.close(RunState.STOPPED.value)
        else:
            self.close(RunState.FAILED.value, message=f"{et.__name__}: {ev}")
        return False

    def _close_at_exit(self) -> None:
        # Used without ``with`` and never closed: close at interpreter exit.
        self.close(RunState.FAILED.value if hasattr(sys, "last_value") else None)

    def _before_first_step(self, what: str) -> None:
        if self._streams is not None:
            raise SpecError(
                f"lab.{what}() must come before the first lab.step(): the streams are fixed by then"
            )

    # ------------------------------------------------------------------ measuring
    def _measure(self, values: Mapping[str, Any], t: int) -> dict[str, np.ndarray]:
        if self._streams is None:
            self._defaults.resolve()  # after the first forward pass: the scale-invariant weights are known
            self._probe_labels = tuple(p.name for p in self._probes) + tuple(
                p.name for p in self._user_probes
            )
            self._reserved = (
                frozenset(
                    [s.name for p in self._probes for s in p.streams()] + [p.name for p in self._user_probes]
                )
                | _DEFAULT_NAMES
            )
        tensors = self._defaults.device_tensors()
        pos = len(tensors)
        keys: list[tuple[str, Any]] = []
        for key, value in values.items():
            if key in self._reserved:
                message = f"lab.step({key}=...): {key!r} is a stream dynlab measures itself; use another name"
                if self._streams is None:
                    raise SpecError(message)
                self._warn_once(f"reserved:{key}", message + "; the value is left out")
                continue
            if isinstance(value, Mapping):
                keys.append((key, tuple(value)))
                tensors.extend(value.values())
            else:
                keys.append((key, None))
                tensors.append(value)
        host = to_host(tensors)
        data = self._defaults.finish(host[:pos])
        for key, labels in keys:
            if labels is None:
                data[key] = host[pos]
                pos += 1
            else:
                data[key] = np.array([float(np.ravel(v)[0]) for v in host[pos : pos + len(labels)]])
                if key not in self._declared and self._streams is None:
                    self._declared[key] = _UserStream(key, "vector", labels, "", "", False)
                pos += len(labels)
        self._run_probes(data, t)
        return data

    def _run_probes(self, data: dict[str, np.ndarray], t: int) -> None:
        costs: dict[str, float] = {}
        self._ctx.new_step()
        for p in list(self._probes):
            if t % p.every:
                continue
            t0 = time.perf_counter()
            try:
                data.update(p.measure())
            except Exception as exc:
                self._probe_failed(p.name, exc)
                self._probes.remove(p)
                continue
            costs[p.name] = time.perf_counter() - t0
        for up in list(self._user_probes):
            if t % up.every:
                continue
            t0 = time.perf_counter()
            try:
                with rng_preserved():
                    value = up.fn()
                if isinstance(value, Mapping):
                    if not up.declared.labels:
                        up.declared.labels = tuple(str(k) for k in value)
                    value = np.array([float(np.ravel(x)[0]) for x in to_host(list(value.values()))])
                else:
                    value = to_host([value])[0]
                data[up.name] = value
            except Exception as exc:
                self._probe_failed(up.name, exc)
                self._user_probes.remove(up)
                continue
            costs[up.name] = time.perf_counter() - t0
        self._ctx.new_step()  # drop the Hessian graph now, not at the next step
        if costs:
            data["probe_seconds"] = np.array([costs.get(n, np.nan) for n in self._probe_labels])

    def _probe_failed(self, name: str, exc: Exception) -> None:
        message = f"probe {name} failed and is switched off: {type(exc).__name__}: {exc}"
        warnings.warn(f"dynlab.watch: {message}", stacklevel=4)
        self._emit("warning", name=name, message=message, traceback=traceback.format_exc())

    # ------------------------------------------------------------------ streams and recording
    def _begin(self, data: dict[str, np.ndarray]) -> None:
        """First step: fix the streams, create the recording, tell the viewers."""
        streams = {s.name: s for s in self._defaults.streams()}
        for up in self._user_probes:
            self._declared[up.name] = up.declared
        for name, value in data.items():
            if name in streams:
                continue
            if name == "probe_seconds":
                continue
            decl = self._declared.get(name) or _UserStream(name, None, (), "", "", False)
            streams[name] = decl.stream(np.asarray(value))
        for p in self._probes:
            streams.update({s.name: s for s in p.streams()})
        for up in self._user_probes:
            if up.name not in streams:
                # Not run at step 0 (it failed): declare what we know so the file stays consistent.
                streams[up.name] = Stream(
                    up.name, up.declared.kind or "scalar", (), description=up.declared.description
                )
        for name in self._declared:
            if name not in streams:
                raise SpecError(
                    f"lab.declare({name!r}): declared streams need their first value at the first step"
                )
        names = self._probe_labels
        if names:
            streams["probe_seconds"] = Stream(
                "probe_seconds",
                "vector",
                (len(names),),
                units="s",
                description="Wall time of each expensive probe when it ran (NaN when it did not).",
                labels=names,
            )
        check_streams(self._views, streams.values())
        # The app lays out one view per stream in this order: yours first, then the named
        # probes, then the default measurements (the update's angle and step before the norms).
        defaults = ("update_angle", "effective_step", "weight_norm", "grad_norm", "grad_norm_layer", "lr")
        probe_streams = {st.name for p in self._probes for st in p.streams()}

        def rank(n: str) -> tuple[int, int]:
            if n in defaults:
                return 2, defaults.index(n)
            return (1 if n in probe_streams else 3 if n == "probe_seconds" else 0), 0

        self._streams = streams = {n: streams[n] for n in sorted(streams, key=rank)}
        self._trusted = frozenset(s.name for s in self._defaults.streams()) | {"probe_seconds"}
        # A non-finite value of these is a divergence (the engines' rule: streams named *loss).
        self._guarded = [n for n in streams if n.endswith("loss")]
        if self.recording:
            try:
                # Rows are flushed by a thread of ours on the interval, not inside step(): the
                # HDF5 appends (~10 ms) then overlap the user's torch kernels.
                self._recorder = Recorder(
                    self.recording, list(streams.values()), self._meta(), flush_interval=1e9
                )
            except RecordingError as exc:
                warnings.warn(f"dynlab.watch: {exc}; training goes on unrecorded", stacklevel=3)
                self.recording = None
            else:
                self._flusher = threading.Thread(
                    target=self._flush_loop, name=f"dynlab-flush-{self.name}", daemon=True
                )
                self._flusher.start()
        probes = {p.name: p.every for p in self._probes}
        self._emit(
            "start",
            source="watched script",
            script=self.script,
            pid=os.getpid(),
            device=self.device,
            probes=probes,
            scale_invariant=list(self._defaults.scale_invariant or []),
        )

    def _meta(self) -> dict[str, Any]:
        opt = self.optimizer
        groups = [hyper.values(opt.param_groups, i) for i in range(len(opt.param_groups))] if opt else []
        n_params = sum(p.numel() for p in self.model.parameters())
        return {
            "engine": "watched-script",
            "engine_version": "1",
            "source": "watched script",
            "script": self.script,
            "preset": preset_text(self.name, self.script, self._views),
            "preset_name": self.name,
            "seed": int(torch.initial_seed() % (2**63)),
            "device": self.device,
            "hyperparameters": groups[0] if groups else {},
            "optimizer": type(opt).__name__ if opt else "",
            "optimizer_param_groups": groups,
            "model": f"{type(self.model).__name__} ({n_params:,} parameters)",
            "probes": {p.name: p.every for p in self._probes},
            "steps_planned": self.total_steps or -1,
            "pid": os.getpid(),
        }

    def _check_user_values(self, data: dict[str, np.ndarray], t: int) -> None:
        """Drop (with one warning each) values of unknown streams or of the wrong shape.

        The default streams are built by dynlab with the right shapes and are not checked
        again: this runs on the hot path.
        """
        streams = self._streams
        assert streams is not None
        for name in [n for n in data if n not in self._trusted]:
            s = streams.get(name)
            value = data[name]
            if s is None:
                self._warn_once(
                    f"new:{name}",
                    f"step({name}=...) first came at step {t}: streams are fixed at the first step; "
                    f"declare it before the loop with lab.declare({name!r}) or pass it from the start",
                )
                del data[name]
                continue
            if (
                value.shape != s.shape
                and s.kind in ("scalar", "vector")
                and value.size == max(1, int(np.prod(s.shape)))
            ):
                value = data[name] = value.reshape(s.shape)
            try:
                s.check(value)
            except SpecError as exc:
                self._warn_once(f"shape:{name}", f"{exc}; the value is left out")
                del data[name]

    def _warn_once(self, key: str, message: str) -> None:
        if key in self._warned:
            return
        self._warned.add(key)
        warnings.warn(f"dynlab.watch: {message}", stacklevel=4)
        self._emit("warning", message=message)

    def _check_divergence(self, data: dict[str, np.ndarray], t: int) -> None:
        bad = [n for n in self._guarded if n in data and not _finite(data[n])]
        if not bad:
            self._diverged = False
            return
        if self._diverged:
            return
        self._diverged = True
        message = f"{bad[0]} is {float(np.ravel(data[bad[0]])[0])} at step {t}"
        self._emit("diverged", stream=bad[0], message=message, step=t)
        if self.on_diverge == "stop":
            self._ending = RunState.DIVERGED
        elif self.on_diverge == "pause":
            self.state = RunState.DIVERGED
            self._wake.clear()
        else:
            warnings.warn(f"dynlab.watch: {message} (on_diverge='warn': training goes on)", stacklevel=3)

    def _emit(self, kind: str, step: int | None = None, **payload: Any) -> None:
        ev = Event(self.step_count if step is None else step, kind, payload, time.time())
        if self._recorder is not None:
            self._locked("event", ev)
        if self._server is not None:
            self._server.publish_event(event_to_dict(ev))

    def _locked(self, method: str, *args: Any) -> None:
        """Call the recorder under its lock, after handing it the rows the script queued."""
        with self._lock:
            rec = self._recorder
            if rec is None:
                self._rows.clear()
                return
            try:
                rows = self._rows
                while rows:
                    rec.write(rows.popleft())
                getattr(rec, method)(*args)
            except RecordingError as exc:  # disk full, file gone: train on, unrecorded
                self._recorder = None
                rec.abort()
                self.message = str(exc)
                warnings.warn(f"dynlab.watch: {exc}; training goes on unrecorded", stacklevel=4)
                if self._server is not None:
                    ev = Event(self.step_count, "record_error", {"message": str(exc)}, time.time())
                    self._server.publish_event(event_to_dict(ev))

    def _flush_loop(self) -> None:
        """Append pending rows every ``flush_interval`` seconds: a crash loses at most that much."""
        while not self._flush_stop.wait(self.flush_interval):
            self._locked("flush")

    # ------------------------------------------------------------------ commands
    def _apply_commands(self) -> None:
        while self._commands:
            cmd = self._commands.popleft()
            kind = cmd["cmd"]
            if kind == "set":
                self._apply_set(cmd)
            elif kind == "pause" and self.state is RunState.RUNNING:
                self.state = RunState.PAUSED
                self.steps_per_second = 0.0
                self._emit("pause", by=cmd.get("by", ""))
                self._locked("flush")
            elif kind == "resume" and self.state.waiting:
                self.state = RunState.RUNNING
                self._budget = 0
                self._emit("resume", by=cmd.get("by", ""))
            elif kind == "step" and self.state.waiting:
                self._budget += int(cmd.get("n", 1))
            elif kind == "stop":
                self._emit("stop", by=cmd.get("by", ""))
                self.state = self._ending = RunState.STOPPED
                self._budget = 0

    def _apply_set(self, cmd: dict[str, Any]) -> None:
        groups = self.optimizer.param_groups if self.optimizer is not None else []
        name, group = cmd["name"], cmd.get("group")
        try:
            value = hyper.check(groups, name, cmd["value"], group)
            olds = hyper.write(groups, name, value, group)
        except (SpecError, ValueError, TypeError) as exc:
            self._emit("refused", name=name, value=cmd["value"], message=str(exc))
            return
        payload: dict[str, Any] = {"name": name, "old": olds[0] if olds else None, "new": value}
        if group is not None:
            payload["group"] = int(group)
        if len(set(map(repr, olds))) > 1:
            payload["old_per_group"] = olds
        if cmd.get("by"):
            payload["by"] = cmd["by"]
        self._emit("set", **payload)

    def _hold(self) -> None:
        """Hold inside step() while paused (or paused by divergence), applying commands as they come."""
        while self.state.waiting and not self._budget:
            if self._wake.wait(_HOLD_POLL_S):
                self._wake.clear()
            self._apply_commands()
        if self.state.waiting and self._budget:
            self._budget -= 1  # this call is the first of the granted steps
        self._rate_t, self._rate_step = time.monotonic(), self.step_count

    # ------------------------------------------------------------------ the server's side (its thread)
    def snapshot(self) -> dict[str, Any]:
        """Plain-data status for ``dynlab live`` and the app."""
        groups = self.optimizer.param_groups if self.optimizer is not None else []
        return {
            "session_id": self._server.session_id if self._server else "",
            "name": self.name,
            "pid": os.getpid(),
            "state": self.state.value,
            "step": self.step_count,
            "steps_per_second": self.steps_per_second,
            "total_steps": self.total_steps,
            "device": self.device,
            "recording": self.recording or "",
            "script": self.script,
            "started": self.started,
            "message": self.message,
            "params": hyper.values(groups),
            "param_specs": [param_to_dict(p) for p in hyper.param_specs(groups).values()],
            "views": self._views,
            "streams_known": self._streams is not None,
            "dropped_frames": self._server.dropped_frames if self._server else 0,
        }

    def ready(self) -> dict[str, Any] | None:
        if self._streams is None:
            return None
        snap = self.snapshot()
        return {
            "streams": [stream_to_dict(s) for s in self._streams.values()],
            "params": snap["params"],
            "param_specs": snap["param_specs"],
            "device": self.device,
            "recording": self.recording or "",
        }

    def history_until(self) -> int:
        """Flush the recording; return its last step (a new viewer reads up to it from the file)."""
        self._locked("flush")
        rec = self._recorder
        return rec.last_step if rec is not None else -1

    def command(self, msg: dict[str, Any]) -> tuple[bool, str]:
        """Validate a viewer's command and queue it for the next :meth:`step`."""
        cmd = msg.get("cmd")
        if cmd not in _COMMANDS:
            return False, f"unknown command {cmd!r}; expected one of {', '.join(_COMMANDS)}"
        if self.state.ended or self._closed:
            return False, f"the run has ended ({self.state.value})"
        queued: dict[str, Any] = {"cmd": cmd, "by": str(msg.get("by", ""))[:40]}
        if cmd == "set":
            groups = self.optimizer.param_groups if self.optimizer is not None else []
            if not groups:
                return False, "this session has no optimizer to change"
            name, group = msg.get("name"), msg.get("group")
            if not isinstance(name, str):
                return False, "set needs a parameter name"
            if group is not None and (isinstance(group, bool) or not isinstance(group, int)):
                return False, f"group must be an integer, got {group!r}"
            try:
                value = hyper.check(groups, name, msg.get("value"), group, from_text=True)
            except SpecError as exc:
                return False, str(exc)
            queued.update(name=name, value=value, group=group)
            where = "all groups" if group is None else f"group {group}"
            text = f"{name} = {value} ({where}) at the next step"
        elif cmd == "step":
            n = msg.get("n", 1)
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                return False, f"step needs a positive number of steps, got {n!r}"
            queued["n"] = n
            text = f"{n} step(s)"
        else:
            text = f"{cmd} at the next step"
        self._commands.append(queued)
        self._wake.set()
        return True, text


def _finite(v: np.ndarray) -> bool:
    return math.isfinite(v.item()) if v.size == 1 else bool(np.isfinite(v).all())


def _check_name(name: str) -> None:
    if name in _DEFAULT_NAMES:
        raise SpecError(f"{name!r} is a stream dynlab measures itself; use another name")


def _stream_kind(name: str, kind: str | None) -> StreamKind | None:
    # Checked at declare()/probe(), not when the first step builds the streams.
    if kind is not None and kind not in STREAM_KINDS:
        raise SpecError(
            f"stream {name!r}: unknown kind {kind!r}{suggest(str(kind), list(STREAM_KINDS))}; "
            f"expected one of {', '.join(STREAM_KINDS)}"
        )
    return cast("StreamKind | None", kind)  # checked against STREAM_KINDS above


def watch(model: nn.Module, optimizer: torch.optim.Optimizer | None = None, **kwargs: Any) -> WatchSession:
    """Watch a PyTorch training loop: record it, serve it to the lab, take commands back.

    ::

        with dynlab.watch(model, optimizer, name="resnet-c10", loss_fn=criterion,
                          probe_batch=(x_probe, y_probe), probes={"hessian_top": 200}) as lab:
            for x, y in loader:
                ...; optimizer.step()
                lab.step(loss=loss, accuracy=acc)

    Parameters
    ----------
    model, optimizer
        Your module and optimizer (the optimizer's ``param_groups`` become live knobs).
    name
        How ``dynlab live`` and the app list it (default: the script's name).
    record
        The HDF5 file to write (default: a new file named after ``name`` in the recordings
        folder; ``False`` records nothing).
    loss_fn, probe_batch
        ``loss_fn(model(inputs), targets)`` on ``probe_batch = (inputs, targets)``: what
        the Hessian probes differentiate and the collapse probe classifies.
    probes
        Expensive probes by name and cadence: ``{"hessian_top": 200}`` or
        ``{"hessian_top": {"every": 200, "k": 3}}``; see ``dynlab.engines.watch.probes``.
    layers
        Which parameters get per-layer streams (default: every weight with >= 2 dims).
    scale_invariant
        Names of scale-invariant weights (default: found on the first forward pass).
    features, classifier
        For ``neural_collapse``: the module whose output are the features (default: the
        input of the classifier) and the classifier (default: the last ``Linear``).
    transforms
        For ``equivariance_error``: ``{name: (g_in, g_out)}`` pairs of callables.
    views
        A view layout for the app and replays (list of dicts, or a TOML file with ``[[views]]``).
    on_diverge
        A non-finite loss is a ``diverged`` event; ``"warn"`` goes on, ``"stop"`` ends the
        run, ``"pause"`` holds it until resumed.
    total_steps
        The planned number of steps, if known (for progress displays).
    serve
        Open the live channel (``False``: record only).
    """
    return WatchSession(model, optimizer, **kwargs)
