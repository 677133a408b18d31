"""The ``dynlab`` command: headless runs, inspection, and the desktop app's entry points.

    dynlab                      open the app (gallery)
    dynlab open PRESET [--start] open the app on a preset
    dynlab replay FILE          open the app replaying a recording
    dynlab presets              list presets
    dynlab engines              list engines and their hyperparameters
    dynlab run PRESET [...]     train headless, optionally recording (--record FILE [--overwrite];
                                --host ray: on a Ray cluster; --from REC --at STEP: a branch)
    dynlab sweep PRESET [...]   a grid of hyperparameters x seeds as Ray tasks, into a folder
    dynlab inspect FILE         what a recording holds (--repair: finalise a killed writer's file)
    dynlab export FILE --csv DIR | --tensorboard DIR   share a recording
    dynlab install-desktop      add dynlab to the application menu
    dynlab live                 running scripts that call dynlab.watch (set/pause/resume/stop NAME)

Errors are one line on stderr and a non-zero exit; ``--debug`` shows tracebacks. Text
from a recording is printed with control characters escaped. During ``run``, Ctrl-C stops
between two steps; a second Ctrl-C, or a SIGTERM not obeyed within 3 s, ends the run by
force with its file closed (status ``interrupted``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXIT_USAGE, EXIT_FAILED, EXIT_DIVERGED, EXIT_INTERRUPTED = 2, 1, 3, 130


class CliError(Exception):
    """A user error: printed as one line, exit status 2."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dynlab", description="A desktop lab for live training dynamics.")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")
    sub = p.add_subparsers(dest="command")
    sub.add_parser("presets", help="list the presets")
    sub.add_parser("engines", help="list the engines and their hyperparameters")
    r = sub.add_parser("run", help="train a preset headless")
    r.add_argument("preset", nargs="?", help="preset name or path to a TOML file (not with --from)")
    r.add_argument(
        "--from", dest="parent", metavar="PARENT.h5", help="branch from this recording (with --at STEP)"
    )
    r.add_argument("--at", type=int, metavar="STEP", help="the step the branch leaves its parent at")
    r.add_argument(
        "--checkpoint-every",
        type=int,
        metavar="K",
        help="steps between checkpoints in the recording (default: from the model's size; 0: none)",
    )
    r.add_argument("--steps", type=int, help="number of steps (default: the preset's)")
    r.add_argument("--record", metavar="FILE", help="record to this HDF5 file")
    r.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing recording at --record (never another file)",
    )
    r.add_argument("--seed", type=int, help="random seed (default: the preset's)")
    r.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps")
    r.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="override a hyperparameter"
    )
    r.add_argument(
        "--host", choices=("thread", "process", "ray"), default="thread", help="where the engine runs"
    )
    r.add_argument("--address", help="Ray cluster for --host ray (default: RAY_ADDRESS, else a local Ray)")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.add_argument(
        "--print",
        dest="print_streams",
        default="",
        metavar="S1,S2",
        help="streams whose final values to print (default: all scalar/vector)",
    )
    i = sub.add_parser("inspect", help="describe a recording")
    i.add_argument("file")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.add_argument(
        "--repair",
        action="store_true",
        help="finalise a recording whose writer was killed (clear its HDF5 write flags, status interrupted)",
    )
    x = sub.add_parser("export", help="write a recording as CSV files or TensorBoard event files")
    x.add_argument("file")
    x.add_argument("--csv", metavar="DIR", help="one CSV per stream: step, then one column per label")
    x.add_argument("--tensorboard", metavar="DIR", help="TensorBoard event files (needs tensorboardX)")
    o = sub.add_parser("open", help="open the app on a preset")
    o.add_argument("preset")
    o.add_argument("--start", action="store_true", help="start training at once")
    d = sub.add_parser("install-desktop", help="add dynlab to your application menu (this user)")
    d.add_argument("--uninstall", action="store_true", help="remove the menu entry again")
    _sweep_parser(sub)
    rp = sub.add_parser("replay", help="open the app replaying a recording")
    rp.add_argument("file")
    rp.add_argument("--present", action="store_true", help="presentation mode")
    from dynlab.watching import client as watching  # dynlab live / set / pause / resume / stop

    watching.add_parsers(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command is None:
            return gui_main([])
        if args.command in ("open", "replay"):
            return _gui(args)
        return {
            "presets": _presets,
            "engines": _engines,
            "run": _run,
            "inspect": _inspect,
            "export": _export,
            "install-desktop": _install_desktop,
            **dict.fromkeys(("live", "set", "pause", "resume", "stop"), _watching),
            "sweep": _sweep,
        }[args.command](args)
    except KeyboardInterrupt:
        print("dynlab: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        from dynlab.engines.spec import SpecError
        from dynlab.presets import PresetError
        from dynlab.ray_host import RayUnavailable
        from dynlab.recording import RecordingError
        from dynlab.sweep import SweepError

        if args.debug:
            raise
        known = (
            CliError,
            SpecError,
            PresetError,
            RecordingError,
            FileNotFoundError,
            RayUnavailable,
            SweepError,
        )
        prefix = (
            "dynlab: error: "
            if isinstance(exc, known)
            else f"dynlab: internal error ({type(exc).__name__}): "
        )
        print(prefix + _clean(exc), file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, known) else EXIT_FAILED


def _watching(args: argparse.Namespace) -> int:
    from dynlab.watching.client import main as watching_main

    return watching_main(args)


def gui_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the desktop app (also ``dynlab`` with no arguments)."""
    from dynlab.ui.app import main as app_main

    return app_main(list(argv or []))


def _gui(args: argparse.Namespace) -> int:
    if args.command == "open":
        return gui_main(["--open", args.preset] + (["--start"] if args.start else []))
    from dynlab.recording import Recording

    with Recording(args.file):  # a bad file is one line on the terminal, not an empty window
        pass
    return gui_main(["--replay", args.file] + (["--present"] if args.present else []))


def _export(args: argparse.Namespace) -> int:
    from dynlab.export import ExportError, export_main  # all the logic lives there

    if not (args.csv or args.tensorboard):
        raise CliError("export: give --csv DIR and/or --tensorboard DIR")
    try:
        return export_main(args.file, csv_dir=args.csv, tensorboard_dir=args.tensorboard)
    except ExportError as exc:
        raise CliError(str(exc)) from None


def _install_desktop(args: argparse.Namespace) -> int:
    from dynlab.desktop import install_desktop, uninstall_desktop

    if args.uninstall:
        for p in uninstall_desktop():
            print(f"removed {p}")
        return 0
    for p in install_desktop():
        print(f"installed {p}")
    return 0


def _presets(args: argparse.Namespace) -> int:
    from dynlab import presets

    rows = []
    for path in presets.list_presets():
        try:
            p = presets.load(str(path), check_engine=False)
            rows.append((p.name, p.engine, p.title))
        except presets.PresetError as exc:
            rows.append((path.stem, "?", f"(broken: {exc})"))
    width = max((len(r[0]) for r in rows), default=10)
    for name, engine, title in rows:
        print(f"{name:<{width}}  {title}  [{engine}]")
    return 0


def _engines(args: argparse.Namespace) -> int:
    from dynlab.engines.base import registry

    for name, cls in sorted(registry().items()):
        spec = cls.spec
        print(f"{name}: {spec.title}\n  paper: {spec.paper}")
        for p in spec.params:
            live = " (live)" if p.live else ""
            print(f"  {p.name} = {p.default!r}  {p.describe_bounds()}{live}  {p.help}")
        print(f"  streams: {', '.join(s.name for s in spec.streams)}")
    return 0


def _parse_sets(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise CliError(f"--set {item!r}: expected NAME=VALUE")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


#: Steps and seeds are stored as int64.
_INT64_MAX = 2**63 - 1
#: Seconds a SIGTERM leaves the run to stop between two steps before it is ended by force.
TERM_GRACE = 3.0


class _Stopper:
    """Signals during a run: the first asks the worker to stop between two steps; a second
    Ctrl-C, or a SIGTERM not obeyed within ``TERM_GRACE`` seconds, ends it by force."""

    def __init__(self, run: Any) -> None:
        self.run, self.count = run, 0
        self.sig: int | None = None
        self.deadline: float | None = None
        self.forced = False

    def __call__(self, signum: int, _frame: Any) -> None:
        self.sig, self.count = signum, self.count + 1
        now = time.monotonic()
        if self.count == 1:
            try:
                self.run.stop()
            except RuntimeError:  # not started yet
                pass
        grace = 0.0 if self.count >= 2 else TERM_GRACE if signum == signal.SIGTERM else None
        if grace is not None:
            self.deadline = min(self.deadline or now + grace, now + grace)

    def force_due(self) -> bool:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.forced = True
        return self.forced


def _check_run_args(args: argparse.Namespace) -> None:
    """Refuse bad arguments before anything is built (an engine, a file)."""
    if args.steps is not None and not 1 <= args.steps <= _INT64_MAX:
        raise CliError(f"--steps must be at least 1 and at most {_INT64_MAX}, got {args.steps}")
    if args.seed is not None and not 0 <= args.seed <= _INT64_MAX:
        raise CliError(f"--seed must be between 0 and {_INT64_MAX}, got {args.seed}")
    if args.overwrite and not args.record:
        raise CliError("--overwrite needs --record FILE")
    if args.checkpoint_every is not None and args.checkpoint_every < 0:
        raise CliError(f"--checkpoint-every must be 0 (none) or more, got {args.checkpoint_every}")
    if args.parent is None and args.at is not None:
        raise CliError("--at needs --from PARENT.h5")
    if args.parent is not None:
        if args.preset:
            raise CliError("give a preset or --from PARENT.h5, not both: a branch runs its parent's preset")
        if args.at is None:
            raise CliError("--from needs --at STEP: where the branch leaves its parent")
        if args.record and Path(args.record).resolve() == Path(args.parent).resolve():
            raise CliError("--record must not be the parent: a branch never modifies its parent")
    elif not args.preset:
        raise CliError("dynlab run needs a preset (or --from PARENT.h5 --at STEP)")
    if args.record:
        from dynlab.recording import check_record_target

        check_record_target(args.record, overwrite=args.overwrite)


def _branch_start(args: argparse.Namespace) -> tuple[Any, Any]:
    """The parent's preset and a verified branch start; ``--set`` edits apply at the branch step."""
    from dynlab import branch

    try:
        preset, start = branch.prepare(args.parent, args.at)
    except branch.BranchError as exc:
        raise CliError(str(exc)) from None
    if args.seed is not None:
        raise CliError("--seed does not apply to a branch: it continues its parent's random state")
    from dynlab.engines.base import get_engine

    spec = get_engine(preset.engine).spec
    for name, value in _parse_sets(args.set).items():
        param = spec.param(name)
        if not param.live:
            raise CliError(f"--set {name}: not a live hyperparameter, so a branch cannot change it mid-run")
        start.sets[name] = param.coerce(value, where="--set", from_text=True)
    where = (
        f"the checkpoint at step {start.checkpoint_step}"
        if start.checkpoint_step is not None
        else "step 0 (the parent has no checkpoints: re-running it, exact on the same device and threads)"
    )
    print(f"dynlab: branching {_clean(args.parent)} at step {args.at} from {where}", file=sys.stderr)
    return preset, start


def _force_end(run: Any, record: str | None) -> str:
    """End a run whose worker does not stop: close its file, terminate its host. Returns the file's status."""
    from dynlab.recording import abort_open_recorders, finalise, needs_finalise, recording_status

    abort_open_recorders("interrupted")  # thread host: the worker's file, closed from here
    run.close(timeout=1.0)  # process host: stop, then terminate the child
    proc = getattr(run, "_proc", None)
    if proc is not None and proc.is_alive():
        proc.kill()
        proc.join(2.0)
    if record and needs_finalise(record):
        try:
            finalise(record)
        except Exception as exc:  # noqa: BLE001 - report, the exit code says interrupted anyway
            print(f"dynlab: warning: could not finalise {_clean(record)}: {_clean(exc)}", file=sys.stderr)
    return (recording_status(record) if record else None) or "unreadable"


def _run(args: argparse.Namespace) -> int:
    import numpy as np

    from dynlab import presets
    from dynlab.engines.spec import Event, Frame
    from dynlab.recording import FINAL_STATUSES, discard_recording, recording_status
    from dynlab.runner import Run

    _check_run_args(args)
    start = None
    if args.parent is not None:
        preset, start = _branch_start(args)
        preset = preset.with_overrides(steps=args.steps, device=args.device)
    else:
        preset = presets.load(args.preset)
        preset = preset.with_overrides(
            steps=args.steps, seed=args.seed, device=args.device, hyperparameters=_parse_sets(args.set)
        )
    if args.device:
        from dynlab.engines.base import resolve_device

        resolve_device(args.device)  # refuse a missing device before starting
    if args.record and args.overwrite:
        discard_recording(args.record)
    ray = {"address": args.address} if args.host == "ray" else {}
    if args.address and args.host != "ray":
        raise CliError("--address is for --host ray")
    run = Run(
        preset,
        record=args.record,
        host=args.host,
        display_queue=65536,
        checkpoint_every=args.checkpoint_every,
        branch=start,
        **ray,
    )
    stopper = _Stopper(run)
    forced_status = ""
    old = {s: signal.signal(s, stopper) for s in (signal.SIGINT, signal.SIGTERM)}
    last: dict[str, tuple[int, Any]] = {}
    events: list[Event] = []
    bar = _Progress(
        preset.steps,
        enabled=not args.quiet and sys.stderr.isatty() or os.environ.get("DYNLAB_PROGRESS") == "1",
    )
    try:
        run.start()
        while not stopper.force_due():
            items = run.drain()
            for it in items:
                if isinstance(it, Frame):
                    for k, v in it.data.items():
                        last[k] = (it.step, v)
                elif isinstance(it, Event):
                    events.append(it)
                    if it.kind in ("diverged", "failed", "refused", "record_error", "phase", "warning"):
                        bar.clear()
                        what = it.payload.get("message", it.payload.get("name", ""))
                        print(f"[step {it.step}] {it.kind}: {_clean(what)}", file=sys.stderr)
                    if it.kind == "record_error":
                        run.stop()
            bar.update(run.step, run.steps_per_second)
            if not run.alive and not items:
                break
            time.sleep(0.02)
        if stopper.forced:
            bar.clear()
            print(f"dynlab: signal {stopper.sig}: the run does not stop; ending it", file=sys.stderr)
            forced_status = _force_end(run, args.record)
    finally:
        bar.close()
        for sig, h in old.items():
            signal.signal(sig, h)
    state = run.state
    streams = {s.name: s for s in run.streams}
    wanted = [s for s in args.print_streams.split(",") if s] or [
        n for n, s in streams.items() if s.kind in ("scalar", "vector") and n != "probe_seconds"
    ]
    for name in wanted:
        if name not in last:
            continue
        step, v = last[name]
        s = streams.get(name)
        if s is not None and s.kind == "vector" and s.labels:
            vals = ", ".join(f"{lab}={_fmt(x)}" for lab, x in zip(s.labels, np.ravel(v)))
        else:
            vals = ", ".join(_fmt(x) for x in np.ravel(v))
        print(_clean(f"{name} @ {step}: {vals}"))
    if args.record:
        # Say "recorded" only about a file that was written and closed.
        status = recording_status(args.record)
        if status in FINAL_STATUSES:
            note = f" ({status})" if status == "interrupted" else ""
            print(f"recorded to {_clean(args.record)}{note}")
        else:
            what = "was not written" if status is None else f"was not closed (status {status!r})"
            print(f"dynlab: warning: recording {_clean(args.record)} {what}", file=sys.stderr)
    if stopper.sig is not None:
        how = f"ended by force, recording {forced_status}" if stopper.forced else "recording closed"
        print(f"dynlab: stopped by signal {stopper.sig} at step {run.step}; {how}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if state == "diverged":
        ev = next((e for e in events if e.kind == "diverged"), None)
        msg = ev.payload.get("message") if ev else ""
        print(
            f"dynlab: error: run diverged at step {ev.step if ev else run.step}: {_clean(msg)}",
            file=sys.stderr,
        )
        return EXIT_DIVERGED
    if state == "failed":
        ev = next((e for e in events if e.kind == "failed"), None)
        msg = ev.payload.get("message") if ev else run.message
        print(
            f"dynlab: error: engine failed at step {ev.step if ev else run.step}: {_clean(msg)}",
            file=sys.stderr,
        )
        if args.debug and ev is not None:
            print(ev.payload.get("traceback", ""), file=sys.stderr)
        return EXIT_FAILED
    if any(e.kind == "record_error" for e in events):
        return EXIT_FAILED
    return 0


def _clean(text: object) -> str:
    """``text`` with control and format characters escaped (``\\x1b``), safe to print on a terminal.

    A recording may hold anything in its names and messages, including escape sequences a
    terminal would obey (OSC 52 writes the clipboard).
    """
    s = str(text)
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in s)


def _sweep_parser(sub: Any) -> None:
    s = sub.add_parser("sweep", help="run a preset over a grid of hyperparameters x seeds on Ray")
    s.add_argument("preset", help="preset name or path to a TOML file")
    s.add_argument(
        "--grid", action="append", default=[], metavar="NAME=V1,V2,...", help="a swept hyperparameter"
    )
    s.add_argument("--seeds", help="a range 0-4 or a list 0,3,7 (default: the preset's [sweep] seeds)")
    s.add_argument("--steps", type=int, help="steps per trial (default: the preset's)")
    s.add_argument("--out", required=True, metavar="DIR", help="folder for sweep.json and the recordings")
    s.add_argument(
        "--max-parallel", type=int, metavar="K", help="trials at once (default: the cluster's CPUs)"
    )
    s.add_argument("--address", help="Ray cluster (default: RAY_ADDRESS, else a local Ray)")
    s.add_argument("--resume", action="store_true", help="run only the trials DIR does not have yet")
    s.add_argument("--quiet", action="store_true", help="no progress bar")


def _sweep(args: argparse.Namespace) -> int:
    from dynlab.sweep import cli

    return cli(args)


def _fmt(x: Any) -> str:
    x = float(x)
    return f"{x:.6g}"


class _Progress:
    """A one-line progress bar on stderr (no dependency), redrawn at most 10 times a second."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled, self._t = total, enabled, 0.0

    def update(self, step: int, rate: float) -> None:
        if not self.enabled or time.monotonic() - self._t < 0.1:
            return
        self._t = time.monotonic()
        frac = min(1.0, step / max(self.total, 1))
        bar = "#" * int(30 * frac)
        eta = f" eta {(self.total - step) / rate:.0f}s" if rate > 0 else ""
        sys.stderr.write(f"\r[{bar:<30}] {step}/{self.total} {rate:.1f} steps/s{eta}   ")
        sys.stderr.flush()

    def clear(self) -> None:
        if self.enabled:
            sys.stderr.write("\r" + " " * 80 + "\r")

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


#: Events ``inspect --json`` lists at most (``event_count`` says how many there are).
INSPECT_JSON_EVENTS = 10_000


def _checkpoint_summary(rec: Any) -> dict[str, Any]:
    """How many checkpoints a recording holds and what they cost (nothing is read but sizes)."""
    import numpy as np

    from dynlab import checkpoint

    try:
        infos = checkpoint.index(rec._f)
    except checkpoint.CheckpointError as exc:
        return {"count": 0, "error": str(exc), "bytes_each": 0, "stored_bytes": 0}
    if not infos:
        return {"count": 0, "bytes_each": 0, "stored_bytes": 0}
    stored = rec._f["checkpoints/data"].id.get_storage_size()
    return {
        "count": len(infos),
        "first": infos[0].step,
        "last": infos[-1].step,
        "bytes_each": int(np.mean([c.nbytes for c in infos])),
        "stored_bytes": int(stored),
    }


def _inspect(args: argparse.Namespace) -> int:
    import numpy as np

    from dynlab.recording import Recording, finalise

    if args.repair:
        print(_clean(finalise(args.file)), file=sys.stderr)
    with Recording(args.file) as rec:
        attrs = rec.attrs
        streams = rec.streams
        events = rec.events(limit=INSPECT_JSON_EVENTS if args.json else 50)
        info = {
            "file": args.file,
            "engine": attrs.get("engine"),
            "engine_version": attrs.get("engine_version"),
            "preset_name": attrs.get("preset_name"),
            "seed": attrs.get("seed"),
            "device": attrs.get("device"),
            "status": attrs.get("status"),
            "started_at": attrs.get("started_at"),
            "ended_at": attrs.get("ended_at"),
            "format_version": attrs.get("format_version"),
            "dynlab_version": attrs.get("dynlab_version"),
            "hyperparameters": rec.hyperparameters,
            "writer_alive": rec.writer_alive,
            "needs_finalise": rec.needs_finalise,
            "repaired_on_read": list(rec.repairs),
            "streams": {},
            "event_count": rec.event_count,
            "checkpoints": _checkpoint_summary(rec),
            "events": [{"step": e.step, "kind": e.kind, "payload": dict(e.payload)} for e in events],
        }
        for name, s in streams.items():
            rng = rec.step_range(name)
            info["streams"][name] = {
                "kind": s.kind,
                "shape": list(s.shape),
                "units": s.units,
                "rows": rec.rows(name),
                "steps": list(rng) if rng else None,
                "labels": list(s.labels or s.rows),
            }
            if s.kind in ("scalar", "vector") and rng is not None:  # None: no rows
                _, v = rec.read(name, rng[1], rng[1] + 1)
                info["streams"][name]["last"] = np.ravel(v[-1]).tolist()
    if args.json:
        # ensure_ascii: every control character from the file comes out escaped.
        print(json.dumps(info, indent=2, default=str, ensure_ascii=True))
        return 0
    c = _clean
    print(
        c(
            f"{info['file']}: dynlab recording (format {info['format_version']}, dynlab {info['dynlab_version']})"
        )
    )
    print(c(f"  engine   {info['engine']} v{info['engine_version']}   preset {info['preset_name']}"))
    print(c(f"  seed {info['seed']}   device {info['device']}   status {info['status']}"))
    print(c(f"  started  {info['started_at']}   ended {info['ended_at']}"))
    ck = info["checkpoints"]
    if ck["count"]:
        print(
            f"  checkpoints {ck['count']} (steps {ck['first']}..{ck['last']}), "
            f"{ck['bytes_each'] / 1e6:.2f} MB each, {ck['stored_bytes'] / 1e6:.2f} MB stored"
        )
    else:
        print("  checkpoints none (a branch re-runs it from step 0)")
    if info["writer_alive"]:
        print("  note     being written now (a live writer holds its lock)")
    elif info["needs_finalise"]:
        print(c(f"  note     its writer was killed; `dynlab inspect --repair {info['file']}` finalises it"))
    for note in info["repaired_on_read"]:
        print(c(f"  repaired on read: {note}"))
    hp = ", ".join(f"{k}={v}" for k, v in info["hyperparameters"].items())
    print(c(f"  hyperparameters  {hp}"))
    print(f"  streams ({len(info['streams'])}):")
    for name, s in info["streams"].items():
        span = f"steps {s['steps'][0]}..{s['steps'][1]}" if s["steps"] else "empty"
        shape = "x".join(map(str, s["shape"])) or "scalar"
        labels = f"  [{', '.join(s['labels'])}]" if s["labels"] and len(s["labels"]) <= 8 else ""
        last = ""
        if "last" in s:
            last = "  last " + ", ".join(_fmt(x) for x in s["last"][:6])
        print(c(f"    {name:<24} {s['kind']:<9} {shape:<8} {s['rows']:>7} rows  {span}{labels}{last}"))
    print(f"  events ({info['event_count']}):")
    for e in info["events"][:50]:
        payload = {k: v for k, v in e["payload"].items() if k != "traceback"}
        print(c(f"    step {e['step']:>7}  {e['kind']:<10} {json.dumps(payload, default=str)[:100]}"))
    if info["event_count"] > 50:
        print(f"    ... {info['event_count'] - 50} more")
    return 0


if __name__ == "__main__":
    sys.exit(main())
