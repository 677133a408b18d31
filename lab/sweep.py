"""Sweeps: one preset over a grid of hyperparameters × seeds, one Ray task per trial.

A sweep is a folder: ``sweep.json`` plus one ordinary recording per trial, so every tool
that reads a recording reads a sweep::

    {"preset": "grokking-scaling", "grid": {"train_fraction": [0.1, 0.3]}, "seeds": [0, 1],
     "steps": 1500,
     "trials": [{"params": {"train_fraction": 0.1}, "seed": 0, "recording": "t000-....h5",
                 "status": "finished", "node": "<Ray node id>", "attempts": 1}, ...]}

``recording`` is relative to the folder. ``status`` is ``pending``, ``running``,
``finished``, ``diverged`` (a result: the run diverged), ``failed`` (raised, or lost its
node, twice; ``error`` says why) or ``cancelled`` (Ctrl-C). ``--resume`` runs every trial
that is not finished or diverged.

Each trial runs the same :class:`~dynlab.worker.Worker` loop as ``dynlab run`` with one
torch thread, on whichever node has a free CPU; its frames come back to this process,
which writes the recording, so recordings land where the user is.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import queue
import re
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dynlab.engines.spec import Event, Frame
from dynlab.presets import Preset
from dynlab.recording import Recorder, Recording, RecordingError
from dynlab.source import CheckpointData, Ready, RunState
from dynlab.sweepspec import SweepSpecError, parse_seeds
from dynlab.worker import RunConfig, work

MANIFEST = "sweep.json"
DONE = ("finished", "diverged")
#: Attempts a trial gets: it is retried once when it raises or its node is lost.
ATTEMPTS = 2


class SweepError(ValueError):
    """A sweep that cannot run or be read; the message says which folder or argument and why."""


class TrialFailed(RuntimeError):
    """Raised in a Ray task when the engine failed (so the driver retries the trial)."""


@dataclass
class Trial:
    """One run of the sweep: its grid point, seed, file and fate."""

    params: dict[str, Any]
    seed: int
    recording: str
    status: str = "pending"
    node: str = ""
    attempts: int = 0
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        out = {
            "params": self.params,
            "seed": self.seed,
            "recording": self.recording,
            "status": self.status,
            "node": self.node,
            "attempts": self.attempts,
        }
        if self.error:
            out["error"] = self.error
        return out

    @property
    def key(self) -> str:
        return json.dumps([self.params, self.seed], sort_keys=True)


@dataclass
class Manifest:
    """``DIR/sweep.json``."""

    preset: str
    grid: dict[str, list[Any]]
    seeds: list[int]
    steps: int
    trials: list[Trial] = field(default_factory=list)
    _saved: str = field(default="", repr=False, compare=False)  # the text last written

    def to_json(self) -> dict[str, Any]:
        return {
            "preset": self.preset,
            "grid": self.grid,
            "seeds": self.seeds,
            "steps": self.steps,
            "trials": [t.to_json() for t in self.trials],
        }

    def save(self, folder: Path) -> None:
        """Write atomically (a crash leaves the old manifest or the new one, never half)."""
        text = json.dumps(self.to_json(), indent=1) + "\n"
        if text == self._saved:
            return
        tmp = folder / f".{MANIFEST}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, folder / MANIFEST)
        self._saved = text

    @staticmethod
    def load(folder: str | Path) -> Manifest:
        path = Path(folder) / MANIFEST
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            trials = [
                Trial(
                    dict(t["params"]),
                    int(t["seed"]),
                    str(t["recording"]),
                    str(t.get("status", "pending")),
                    str(t.get("node", "")),
                    int(t.get("attempts", 0)),
                    str(t.get("error", "")),
                )
                for t in data["trials"]
            ]
            return Manifest(
                str(data["preset"]),
                {k: list(v) for k, v in data["grid"].items()},
                [int(s) for s in data["seeds"]],
                int(data.get("steps", 0)),
                trials,
            )
        except FileNotFoundError:
            raise SweepError(f"{folder}: not a sweep (no {MANIFEST})") from None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise SweepError(f"{path}: not a valid sweep manifest ({type(exc).__name__}: {exc})") from None

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(("pending", "running", "finished", "diverged", "failed", "cancelled"), 0)
        for t in self.trials:
            out[t.status] = out.get(t.status, 0) + 1
        return out


# ---------------------------------------------------------------------- planning
def parse_grid(items: list[str], preset: Preset) -> dict[str, list[Any]]:
    """``["lr=0.1,0.2", ...]`` -> ``{"lr": [0.1, 0.2]}``, each value checked against the engine."""
    from dynlab.engines.base import get_engine

    spec = get_engine(preset.engine).spec
    grid: dict[str, list[Any]] = {}
    for item in items:
        name, sep, values = item.partition("=")
        name = name.strip()
        if not sep or not name or not values.strip():
            raise SweepError(f"--grid {item!r}: expected NAME=V1,V2,...")
        if name in grid:
            raise SweepError(f"--grid {name}: given twice")
        texts = [v.strip() for v in values.split(",") if v.strip()]
        grid[name] = [spec.param(name).coerce(v, where=f"--grid {name}", from_text=True) for v in texts]
    return grid


def coerce_grid(grid: dict[str, Any], preset: Preset) -> dict[str, list[Any]]:
    """A preset's ``[sweep.grid]`` with values converted to the engine's types."""
    from dynlab.engines.base import get_engine

    spec = get_engine(preset.engine).spec
    return {k: [spec.param(k).coerce(v) for v in vs] for k, vs in grid.items()}


def recording_name(index: int, params: dict[str, Any], seed: int) -> str:
    """``t003-lr=0.2-seed1.h5``: sortable, readable, safe on every file system."""
    parts = [f"{k}={v}" for k, v in params.items()]
    stem = "-".join([f"t{index:03d}", *parts, f"seed{seed}"])
    return re.sub(r"[^A-Za-z0-9=._+-]", "_", stem)[:180] + ".h5"


def plan(preset: Preset, grid: dict[str, list[Any]], seeds: list[int], steps: int) -> Manifest:
    """Every grid point × seed, the seeds innermost (so a grid point's seeds run together)."""
    points = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())] if grid else [{}]
    trials = [
        Trial(params, seed, recording_name(i * len(seeds) + j, params, seed))
        for i, params in enumerate(points)
        for j, seed in enumerate(seeds)
    ]
    return Manifest(preset.name, grid, list(seeds), steps, trials)


def trial_preset(preset: Preset, trial: Trial, steps: int) -> Preset:
    """The preset of one trial: what ``dynlab run PRESET --seed S --set K=V ...`` would run."""
    return preset.with_overrides(steps=steps, seed=trial.seed, hyperparameters=dict(trial.params))


def trial_config(preset: Preset, trial: Trial, steps: int) -> RunConfig:
    """The worker configuration of one trial: exactly ``dynlab run``'s, with one torch thread."""
    from dynlab.runner import Run

    # Built by Run itself, so a trial and a `dynlab run` of the same preset cannot drift apart.
    cfg = Run(trial_preset(preset, trial, steps)).config
    cfg.torch_threads = 1
    cfg.checkpoints_out = True  # a trial's recording is branchable like any other
    return cfg


# ---------------------------------------------------------------------- one trial (on a Ray worker)
def run_trial(cfg: RunConfig) -> dict[str, Any]:
    """Run one trial to its end in this process and return what it produced (plain data).

    Raises :class:`TrialFailed` when the engine failed, so the driver can retry it.
    """
    import ray

    from dynlab.engines.base import get_engine

    started = time.monotonic()
    commands: queue.Queue[tuple] = queue.Queue()
    out: queue.Queue[Any] = queue.Queue()  # unbounded: nothing is dropped
    state = work(cfg, commands, out)
    items: list[Any] = []
    while not out.empty():
        item = out.get_nowait()
        if isinstance(item, (Ready, Frame, Event, CheckpointData)):
            items.append(item)
    if state is RunState.FAILED:
        failed = [i for i in items if isinstance(i, Event) and i.kind == "failed"]
        message = failed[-1].payload.get("message", "engine failed") if failed else "engine failed"
        raise TrialFailed(message)
    spec = get_engine(cfg.engine).spec
    return {
        "items": items,
        "state": state.value,
        "node": ray.get_runtime_context().get_node_id(),
        "engine": spec.name,
        "engine_version": spec.version,
        "seconds": time.monotonic() - started,
    }


def write_recording(path: Path, cfg: RunConfig, result: dict[str, Any]) -> None:
    """Write a trial's recording here, as the worker would have written it itself.

    The file appears under its final name only once complete (written beside it, then
    renamed), so a folder never holds a half-written trial.
    """
    from dynlab.ray_host import engine_meta

    items = result["items"]
    ready = next(i for i in items if isinstance(i, Ready))
    tmp = path.with_name(f".{path.name}.part")
    rec = Recorder(tmp, ready.streams, engine_meta(cfg, ready, result), flush_interval=1e9)
    try:
        for item in items:
            if isinstance(item, Frame):
                rec.write(item)
            elif isinstance(item, Event):
                rec.event(item)
            elif isinstance(item, CheckpointData):
                rec.checkpoint(item.step, item.arrays, item.state)
        rec.close(result["state"])
    except BaseException:
        rec.abort()
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


_TASK: Any = None


def trial_task() -> Any:
    """``run_trial`` as a Ray task: one CPU, spread over the nodes, retried by the driver."""
    global _TASK
    if _TASK is None:
        import ray

        _TASK = ray.remote(run_trial).options(
            num_cpus=1, max_retries=0, retry_exceptions=False, scheduling_strategy="SPREAD"
        )
    return _TASK


# ---------------------------------------------------------------------- the driver
def _readable(path: Path) -> bool:
    try:
        Recording(path).close()
        return True
    except RecordingError:
        return False


def prepare(folder: Path, fresh: Manifest, resume: bool) -> Manifest:
    """The manifest to run: ``fresh``, or on ``resume`` the folder's, with every unfinished trial pending."""
    if not (folder / MANIFEST).exists():
        if resume:
            raise SweepError(f"--resume: {folder} holds no {MANIFEST} to resume")
        folder.mkdir(parents=True, exist_ok=True)
        return fresh
    if not resume:
        raise SweepError(
            f"{folder / MANIFEST} exists: add --resume to finish that sweep, or choose another --out"
        )
    old = Manifest.load(folder)
    for what in ("preset", "grid", "seeds", "steps"):
        a, b = getattr(old, what), getattr(fresh, what)
        if json.dumps(a) != json.dumps(b):
            raise SweepError(f"--resume: {folder} was swept with {what} {a!r}, not {b!r}")
    for t in old.trials:
        if t.status in DONE and not _readable(folder / t.recording):
            t.status = "pending"  # finished once, but its file is gone or damaged
        if t.status not in DONE:
            t.status, t.attempts, t.error = "pending", 0, ""
    return old


def run_sweep(
    preset: Preset,
    grid: dict[str, list[Any]],
    seeds: list[int],
    out: str | Path,
    *,
    steps: int | None = None,
    max_parallel: int | None = None,
    address: str | None = None,
    resume: bool = False,
    progress: Any = None,
) -> Manifest:
    """Run every trial not yet done; return the manifest (also written to ``out/sweep.json``).

    Trials run as Ray tasks, at most ``max_parallel`` at once (default: the cluster's CPUs).
    A trial that raises or whose node is lost is retried once, then marked ``failed``; the
    others go on. Ctrl-C cancels the running trials, marks them ``cancelled``, keeps every
    finished recording, writes the manifest and re-raises ``KeyboardInterrupt``.
    ``progress(manifest, started)`` is called whenever something changed.
    """
    from dynlab.ray_host import connect

    folder = Path(out)
    steps = int(steps or preset.steps)
    ray = connect(address)  # first: without Ray, say so before touching the folder
    manifest = prepare(folder, plan(preset, grid, seeds, steps), resume)
    limit = max_parallel or max(1, int(ray.cluster_resources().get("CPU", 1)))
    task = trial_task()
    todo = deque(t for t in manifest.trials if t.status not in DONE)
    running: dict[Any, tuple[Trial, RunConfig]] = {}
    started = time.monotonic()
    try:
        while todo or running:
            while todo and len(running) < limit:
                t = todo.popleft()
                cfg = trial_config(preset, t, steps)
                t.status, t.attempts = "running", t.attempts + 1
                running[task.remote(cfg)] = (t, cfg)
            manifest.save(folder)
            if progress is not None:
                progress(manifest, started)
            done, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
            for ref in done:
                t, cfg = running.pop(ref)
                _collect(ray, ref, t, cfg, folder, todo)
        manifest.save(folder)
        if progress is not None:
            progress(manifest, started)
    except KeyboardInterrupt:
        for ref in running:
            ray.cancel(ref, force=True)
        for t in manifest.trials:
            if t.status == "running":  # in flight, or being written when the signal came
                t.status = "cancelled"
        manifest.save(folder)
        raise
    return manifest


def _collect(ray: Any, ref: Any, t: Trial, cfg: RunConfig, folder: Path, todo: deque[Trial]) -> None:
    """Write a finished trial's recording, or retry it once, or mark it failed."""
    try:
        result = ray.get(ref)
    except Exception as exc:  # the engine raised (TrialFailed) or its worker/node died
        if t.attempts < ATTEMPTS:
            t.status = "pending"
            todo.appendleft(t)  # first in line: it has waited longest
        else:
            t.status, t.error = "failed", _reason(exc)
        return
    try:
        write_recording(folder / t.recording, cfg, result)
    except (RecordingError, OSError) as exc:
        t.status, t.error = "failed", f"writing the recording failed: {exc}"
        return
    t.status, t.node, t.error = result["state"], result["node"], ""


def _reason(exc: BaseException) -> str:
    """One line for the manifest: the innermost cause's type and message."""
    cause = getattr(exc, "cause", None) or exc
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1] if text else ''}"[:300]


# ---------------------------------------------------------------------- command line
class SweepProgress:
    """One line on stderr: a bar, finished/running/failed counts and an ETA."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._t = 0.0
        self._done0: int | None = None

    def __call__(self, manifest: Manifest, started: float) -> None:
        c = manifest.counts()
        done = c["finished"] + c["diverged"]
        if self._done0 is None:
            self._done0 = done  # finished before this run (resumed)
        if not self.enabled or time.monotonic() - self._t < 0.2:
            return
        self._t = time.monotonic()
        total = len(manifest.trials)
        left = total - done - c["failed"]
        new = done - self._done0
        elapsed = time.monotonic() - started
        eta = f"eta {_clock(elapsed / new * left)}" if new and left else ("eta --" if left else "")
        bar = "#" * int(30 * (done + c["failed"]) / max(total, 1))
        sys.stderr.write(
            f"\r[{bar:<30}] {done}/{total} finished · {c['running']} running · {c['failed']} failed  {eta}   "
        )
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def cli(args: argparse.Namespace) -> int:
    """``dynlab sweep``: returns the exit status (0, or 1 when a trial failed)."""
    from dynlab import presets

    preset = presets.load(args.preset)
    declared = preset.sweep
    if args.steps is not None and args.steps < 1:
        raise SweepError(f"--steps must be at least 1, got {args.steps}")
    if args.max_parallel is not None and args.max_parallel < 1:
        raise SweepError(f"--max-parallel must be at least 1, got {args.max_parallel}")
    folder = Path(args.out)
    old = Manifest.load(folder) if args.resume and (folder / MANIFEST).exists() else None
    try:
        if args.grid:
            grid = parse_grid(args.grid, preset)
        elif old is not None:
            grid = old.grid
        else:
            grid = coerce_grid(declared.grid, preset) if declared else {}
        if args.seeds:
            seeds = list(parse_seeds(args.seeds))
        else:
            seeds = old.seeds if old is not None else list(declared.seeds if declared else (preset.seed,))
    except SweepSpecError as exc:
        raise SweepError(f"--{str(exc)}") from None
    if not grid:
        raise SweepError(
            f"{preset.name}: nothing to sweep: give --grid NAME=V1,V2,... (the preset declares no [sweep.grid])"
        )
    steps = args.steps or (old.steps if old is not None else None) or (declared.steps if declared else None)
    progress = SweepProgress(
        not args.quiet and (sys.stderr.isatty() or os.environ.get("DYNLAB_PROGRESS") == "1")
    )
    try:
        manifest = run_sweep(
            preset,
            grid,
            seeds,
            folder,
            steps=steps,
            max_parallel=args.max_parallel,
            address=args.address,
            resume=args.resume,
            progress=progress,
        )
    except KeyboardInterrupt:
        progress.close()
        c = Manifest.load(folder).counts()
        print(
            f"dynlab: sweep interrupted: {c['finished'] + c['diverged']} trials kept in {folder}; "
            f"`dynlab sweep {args.preset} --out {folder} --resume` runs the rest",
            file=sys.stderr,
        )
        return 130
    progress.close()
    c = manifest.counts()
    print(
        f"sweep {folder}: {c['finished']} finished, {c['diverged']} diverged, {c['failed']} failed "
        f"of {len(manifest.trials)} trials"
    )
    for t in manifest.trials:
        if t.status == "failed":
            print(f"  failed: {t.recording}: {t.error}", file=sys.stderr)
    return 1 if c["failed"] else 0
