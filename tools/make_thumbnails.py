"""Regenerate the gallery pictures ``presets/thumbnails/<preset>.png`` from real short runs.

For each preset: train it headless for a modest number of steps (``dynlab run --record``
in a child process, so a broken or slow preset cannot take the others down), then draw
its most telling view from the recording offscreen with the app's own views
(``views.make_view``) at 680×300 — twice the gallery's 340×150 — and save the PNG.

A child that runs past its time cap gets SIGTERM; the CLI then closes the recording
cleanly and the picture shows the steps reached. A preset that fails is skipped and
reported; the exit status is 1 if any failed.

Usage::

    QT_QPA_PLATFORM=offscreen python tools/make_thumbnails.py            # every preset
    QT_QPA_PLATFORM=offscreen python tools/make_thumbnails.py quadratic  # some presets
    python tools/make_thumbnails.py --list                               # the plan
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "presets" / "thumbnails"
SIZE = (680, 300)
DEFAULT_STEPS = 300
DEFAULT_CAP_S = 120.0


@dataclass(frozen=True)
class Plan:
    """How to picture one preset: steps to run, which view (index), extra ``--set``s."""

    steps: int = DEFAULT_STEPS
    view: int = 0
    sets: tuple[str, ...] = ()
    cap_s: float = DEFAULT_CAP_S


#: Per-preset plans: enough steps for the phenomenon to show, and the view that shows it.
#: Presets not listed get ``Plan()``: 300 steps and their first view.
PLANS: dict[str, Plan] = {
    "quadratic": Plan(steps=300, view=0),
    "effective-step-size": Plan(steps=400, view=1),
    "edge-of-stability": Plan(steps=1000, view=0, cap_s=240),  # sharpening, then hovering at 2/η
    "sgd-stability": Plan(steps=15000, view=0, cap_s=240),  # tr H: SGD below 2/η, GD above
    "grokking-modular": Plan(steps=1300, view=0, cap_s=480),  # groks at ~1100 epochs
    "grokking-scaling": Plan(steps=700, view=1),  # memorises, never generalises
    "hessian-outliers": Plan(steps=200, view=1),
    "hessian-outliers-ce": Plan(steps=200, view=1),
    "attention-svm": Plan(steps=400, view=0),
    "attention-svm-kq": Plan(steps=400, view=0),
    "neural-collapse": Plan(steps=1500, view=0),
    "neural-collapse-4": Plan(steps=1500, view=1),
    "neural-collapse-ce": Plan(steps=1000, view=0),
    "collapse-ufm": Plan(steps=1000, view=0),
    "collapse-perturbation": Plan(steps=1500, view=0),
    "icl-linear-regression": Plan(steps=1500, view=0),  # LSA reaches the one-GD-step line
    "locality-sample-complexity": Plan(steps=50, view=0, cap_s=180),  # ~2.5 s a step on CPU
    "equivariance-mixed": Plan(steps=600, view=0, cap_s=240),  # PER's selection starts at step 300
    "input-gradients": Plan(steps=600, view=0, cap_s=240),
    "gn-smoothness": Plan(steps=150, view=0),
    "gn-smoothness-softmax": Plan(steps=150, view=0),
}


def record(preset: str, plan: Plan, path: Path) -> tuple[bool, str]:
    """Run ``preset`` headless into ``path``; returns (reached the end, a note)."""
    cmd = [
        sys.executable,
        "-m",
        "dynlab.cli",
        "run",
        preset,
        "--steps",
        str(plan.steps),
        "--device",
        "cpu",
        "--record",
        str(path),
        "--quiet",
        "--print",
        "none",
    ]
    for s in plan.sets:
        cmd += ["--set", s]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=plan.cap_s)
    except subprocess.TimeoutExpired:
        # SIGTERM: the CLI stops between two steps and closes the recording, so it stays readable.
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        return (
            False,
            f"time cap {plan.cap_s:.0f}s reached; {err.strip().splitlines()[-1] if err.strip() else ''}",
        )
    if proc.returncode not in (0, 3):  # 3: diverged, which a picture may still show
        raise RuntimeError(f"dynlab run exited {proc.returncode}: {err.strip()[-400:]}")
    return True, err.strip().splitlines()[-1] if err.strip() else ""


def _busy_fraction(image) -> float:  # noqa: ANN001 - QImage
    """Fraction of sampled pixels that differ from the corner (background) colour."""
    w, h = image.width(), image.height()
    bg = image.pixel(2, 2)
    xs, ys = range(0, w, 4), range(0, h, 4)
    diff = sum(image.pixel(x, y) != bg for x in xs for y in ys)
    return diff / max(1, len(xs) * len(ys))


def render(rec_path: Path, preset_name: str, view_index: int, out: Path) -> str:
    """Draw view ``view_index`` of the preset from the recording into ``out``; returns its title.

    Falls back to the preset's other views if that one cannot be drawn offscreen
    (e.g. a 3-D vispy view without OpenGL) or comes out nearly empty.
    """
    from PySide6 import QtCore, QtGui, QtWidgets

    import dynlab.views
    from dynlab import presets
    from dynlab.recording import Recording

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([sys.argv[0]])
    preset = presets.load(preset_name, check_engine=False)
    with Recording(rec_path) as rec:
        streams = rec.streams
        frames = list(rec.frames())
        events = rec.events()
    if not frames:
        raise RuntimeError("the recording holds no frames")
    order = [view_index] + [i for i in range(len(preset.views)) if i != view_index]
    problems = []
    for i in order:
        if i >= len(preset.views):
            continue
        spec = preset.views[i]
        if not any(s in streams for s in spec.streams):
            problems.append(f"view {i} ({spec.title}): no recorded stream")
            continue
        view = None
        try:
            view = dynlab.views.make_view(spec, streams)
            view.caption.setVisible(False)  # unreadable at gallery size; the card has the text
            view.setAttribute(QtCore.Qt.WidgetAttribute.WA_DontShowOnScreen)
            view.resize(*SIZE)
            view.show()
            view.push(frames)
            for ev in events:
                if ev.kind in ("set", "phase"):
                    view.add_event(ev)
            app.processEvents()
            view.refresh()
            app.processEvents()
            view.export_image(str(out))
            busy = _busy_fraction(QtGui.QImage(str(out)))
            if busy < 0.01:
                problems.append(f"view {i} ({spec.title}): nearly empty ({busy:.1%} drawn)")
                continue
            return spec.title
        except Exception as exc:  # try the next view
            problems.append(f"view {i} ({spec.title}): {type(exc).__name__}: {exc}")
        finally:
            if view is not None:
                view.close()
                view.deleteLater()
                app.processEvents()
    raise RuntimeError("no view could be drawn: " + "; ".join(problems))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("presets", nargs="*", help="preset names (default: all)")
    ap.add_argument("--out", type=Path, default=OUT_DIR, help="folder for the PNGs")
    ap.add_argument("--cap", type=float, help="override every preset's time cap (seconds)")
    ap.add_argument("--steps", type=int, help="override every preset's step count")
    ap.add_argument("--list", action="store_true", help="print the plan and exit")
    args = ap.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    sys.path.insert(0, str(ROOT))
    from dynlab import presets

    names = args.presets or [p.stem for p in presets.list_presets()]
    plans = {}
    for n in names:
        plan = PLANS.get(n, Plan())
        if args.cap is not None or args.steps is not None:
            plan = Plan(
                steps=args.steps or plan.steps, view=plan.view, sets=plan.sets, cap_s=args.cap or plan.cap_s
            )
        plans[n] = plan
    if args.list:
        for n, p in plans.items():
            print(f"{n:<24} steps={p.steps:<6} view={p.view} cap={p.cap_s:.0f}s {' '.join(p.sets)}")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    failed: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="dynlab-thumbs-") as tmp:
        for name, plan in plans.items():
            t0 = time.monotonic()
            rec_path = Path(tmp) / f"{name}.h5"
            try:
                complete, note = record(name, plan, rec_path)
                title = render(rec_path, name, plan.view, args.out / f"{name}.png")
            except Exception as exc:
                failed[name] = f"{type(exc).__name__}: {exc}"
                print(f"FAILED {name}: {failed[name]}", flush=True)
                continue
            partial = "" if complete else f" (partial: {note})"
            print(
                f"ok     {name}: '{title}' from {plan.steps} steps in {time.monotonic() - t0:.0f}s{partial}",
                flush=True,
            )
    if failed:
        print(f"{len(failed)} of {len(plans)} failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
