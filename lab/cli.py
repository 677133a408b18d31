"""The ``dynlab`` command: headless runs, inspection, and the desktop app's entry points.

    dynlab                      open the app (gallery)
    dynlab open PRESET [--start] open the app on a preset
    dynlab replay FILE          open the app replaying a recording
    dynlab presets              list presets
    dynlab engines              list engines and their hyperparameters
    dynlab run PRESET [...]     train headless, optionally recording (--host ray: on a Ray cluster)
    dynlab sweep PRESET [...]   a grid of hyperparameters x seeds as Ray tasks, into a folder
    dynlab inspect FILE         what a recording holds
    dynlab install-desktop      add dynlab to the application menu

Errors are one line on stderr and a non-zero exit; ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
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
    r.add_argument("preset", help="preset name or path to a TOML file")
    r.add_argument("--steps", type=int, help="number of steps (default: the preset's)")
    r.add_argument("--record", metavar="FILE", help="record to this HDF5 file")
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
    o = sub.add_parser("open", help="open the app on a preset")
    o.add_argument("preset")
    o.add_argument("--start", action="store_true", help="start training at once")
    d = sub.add_parser("install-desktop", help="add dynlab to your application menu (this user)")
    d.add_argument("--uninstall", action="store_true", help="remove the menu entry again")
    _sweep_parser(sub)
    rp = sub.add_parser("replay", help="open the app replaying a recording")
    rp.add_argument("file")
    rp.add_argument("--present", action="store_true", help="presentation mode")
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
            "install-desktop": _install_desktop,
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
        print(prefix + str(exc), file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, known) else EXIT_FAILED


def gui_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the desktop app (also ``dynlab`` with no arguments)."""
    from dynlab.ui.app import main as app_main

    return app_main(list(argv or []))


def _gui(args: argparse.Namespace) -> int:
    if args.command == "open":
        return gui_main(["--open", args.preset] + (["--start"] if args.start else []))
    return gui_main(["--replay", args.file] + (["--present"] if args.present else []))


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


def _run(args: argparse.Namespace) -> int:
    import numpy as np

    from dynlab import presets
    from dynlab.engines.spec import Event, Frame
    from dynlab.runner import Run

    preset = presets.load(args.preset)
    if args.steps is not None and args.steps < 1:
        raise CliError(f"--steps must be at least 1, got {args.steps}")
    if args.seed is not None and args.seed < 0:
        raise CliError(f"--seed must be non-negative, got {args.seed}")
    if args.device:
        from dynlab.engines.base import resolve_device

        resolve_device(args.device)  # refuse a missing device before starting
    preset = preset.with_overrides(
        steps=args.steps, seed=args.seed, device=args.device, hyperparameters=_parse_sets(args.set)
    )
    ray = {"address": args.address} if args.host == "ray" else {}
    if args.address and args.host != "ray":
        raise CliError("--address is for --host ray")
    run = Run(preset, record=args.record, host=args.host, display_queue=65536, **ray)
    stopping = {"sig": None}

    def on_signal(signum: int, _frame: Any) -> None:
        # Close the recording cleanly: stop between two steps, let the worker flush.
        stopping["sig"] = signum
        run.stop()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    last: dict[str, tuple[int, Any]] = {}
    events: list[Event] = []
    bar = _Progress(
        preset.steps,
        enabled=not args.quiet and sys.stderr.isatty() or os.environ.get("DYNLAB_PROGRESS") == "1",
    )
    try:
        run.start()
        while True:
            items = run.drain()
            for it in items:
                if isinstance(it, Frame):
                    for k, v in it.data.items():
                        last[k] = (it.step, v)
                elif isinstance(it, Event):
                    events.append(it)
                    if it.kind in ("diverged", "failed", "refused", "record_error", "phase", "warning"):
                        bar.clear()
                        print(
                            f"[step {it.step}] {it.kind}: {it.payload.get('message', it.payload.get('name', ''))}",
                            file=sys.stderr,
                        )
                    if it.kind == "record_error":
                        run.stop()
            bar.update(run.step, run.steps_per_second)
            if not run.alive and not items:
                break
            time.sleep(0.02)
    finally:
        bar.close()
        for s, h in old.items():
            signal.signal(s, h)
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
        print(f"{name} @ {step}: {vals}")
    if args.record:
        print(f"recorded to {args.record}")
    if stopping["sig"] is not None:
        print(
            f"dynlab: stopped by signal {stopping['sig']} at step {run.step}; recording closed",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    if state == "diverged":
        ev = next((e for e in events if e.kind == "diverged"), None)
        print(
            f"dynlab: error: run diverged at step {ev.step if ev else run.step}: {ev.payload.get('message') if ev else ''}",
            file=sys.stderr,
        )
        return EXIT_DIVERGED
    if state == "failed":
        ev = next((e for e in events if e.kind == "failed"), None)
        msg = ev.payload.get("message") if ev else run.message
        print(f"dynlab: error: engine failed at step {ev.step if ev else run.step}: {msg}", file=sys.stderr)
        if args.debug and ev is not None:
            print(ev.payload.get("traceback", ""), file=sys.stderr)
        return EXIT_FAILED
    if any(e.kind == "record_error" for e in events):
        return EXIT_FAILED
    return 0


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


def _inspect(args: argparse.Namespace) -> int:
    import numpy as np

    from dynlab.recording import Recording

    with Recording(args.file) as rec:
        attrs = rec.attrs
        streams = rec.streams
        events = rec.events()
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
            "hyperparameters": json.loads(attrs["hyperparameters"]) if "hyperparameters" in attrs else {},
            "streams": {},
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
            if s.kind in ("scalar", "vector") and rec.rows(name):
                _, v = rec.read(name, rng[1], rng[1] + 1)
                info["streams"][name]["last"] = np.ravel(v[-1]).tolist()
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    print(
        f"{info['file']}: dynlab recording (format {info['format_version']}, dynlab {info['dynlab_version']})"
    )
    print(f"  engine   {info['engine']} v{info['engine_version']}   preset {info['preset_name']}")
    print(f"  seed {info['seed']}   device {info['device']}   status {info['status']}")
    print(f"  started  {info['started_at']}   ended {info['ended_at']}")
    hp = ", ".join(f"{k}={v}" for k, v in info["hyperparameters"].items())
    print(f"  hyperparameters  {hp}")
    print(f"  streams ({len(info['streams'])}):")
    for name, s in info["streams"].items():
        rng = f"steps {s['steps'][0]}..{s['steps'][1]}" if s["steps"] else "empty"
        shape = "x".join(map(str, s["shape"])) or "scalar"
        labels = f"  [{', '.join(s['labels'])}]" if s["labels"] and len(s["labels"]) <= 8 else ""
        last = ""
        if "last" in s:
            last = "  last " + ", ".join(_fmt(x) for x in s["last"][:6])
        print(f"    {name:<24} {s['kind']:<9} {shape:<8} {s['rows']:>7} rows  {rng}{labels}{last}")
    print(f"  events ({len(info['events'])}):")
    for e in info["events"][:50]:
        payload = {k: v for k, v in e["payload"].items() if k != "traceback"}
        print(f"    step {e['step']:>7}  {e['kind']:<10} {json.dumps(payload, default=str)[:100]}")
    if len(info["events"]) > 50:
        print(f"    ... {len(info['events']) - 50} more")
    return 0


if __name__ == "__main__":
    sys.exit(main())
