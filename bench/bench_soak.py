"""Soak: the app's memory during a long run drawn live.

Live (the default): the quadratic preset runs for ``--steps`` steps end to end, engine ->
display queue -> the real workspace's views, in an offscreen app: the engine in a thread of
the app (so its memory counts too), at full speed, recording off. The app's resident
memory is read at 10^4, 10^5 and 10^6 steps, with the steps drawn so far, the redraw
rate and the run's speed.

``--synthetic``: the first build's soak, kept for comparison: a synthetic recording of
the same streams fed to the views in blocks of 20,000 steps (their bulk append).

    python bench/bench_soak.py [--steps 1000000] [--synthetic]
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time

import _common  # noqa: F401
import numpy as np
from _common import table

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def make_recording(path: str, n: int) -> None:
    from dynlab import presets
    from dynlab.engines.quadratic import Quadratic
    from dynlab.recording import Recorder

    preset = presets.load("quadratic")
    eng = Quadratic(preset.hyperparameters)
    rec = Recorder(
        path,
        eng.streams,
        {"engine": "quadratic", "preset": preset.text, "preset_name": "quadratic"},
        flush_interval=1e9,
    )
    rng = np.random.default_rng(0)
    block = 100_000
    for start in range(0, n, block):
        m = min(block, n - start)
        steps = range(start, start + m)
        decay = np.exp(-np.arange(start, start + m) / 2e5)
        rec._pending["train_loss"].extend(zip(steps, decay * (1 + 0.1 * rng.random(m))))
        rec._pending["weight_norm"].extend(zip(steps, np.sqrt(decay)))
        rec._pending["sharpness"].extend(zip(steps, np.full(m, 10.0)))
        rec._pending["stability_threshold"].extend(zip(steps, np.full(m, 20.0)))
        # Smooth curves with a little noise, like real training curves: a screenful of
        # pure noise would measure line rasterisation, not the lab.
        t = np.arange(start, start + m)[:, None] / 5e4 + np.arange(3)
        rec._pending["mode_factor"].extend(
            zip(steps, 0.5 + 0.3 * np.sin(t) + 0.01 * rng.standard_normal((m, 3)))
        )
        rec.flush()
    rec.last_step = n - 1
    rec.close("finished")


def live(steps: int) -> None:
    """The quadratic preset run live for ``steps`` steps in the app; RSS at 10^4, 10^5, 10^6."""
    from PySide6 import QtCore, QtWidgets

    from dynlab import presets
    from dynlab.ui.workspace import Workspace

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    ws = Workspace(host="thread")
    ws.resize(1400, 900)
    ws.show()
    ws.controls.record.setChecked(False)
    app.processEvents()
    gc.collect()
    base = rss_mb()

    def pump(ms: int) -> None:
        loop = QtCore.QEventLoop()
        QtCore.QTimer.singleShot(ms, loop.quit)
        loop.exec()

    t0 = time.perf_counter()
    ws.open_preset(presets.load("quadratic").with_overrides(steps=steps), start=True)
    run = ws.steerable()[0]
    marks = [m for m in (10_000, 100_000, 1_000_000, steps) if m <= steps]
    marks = sorted(set(marks))
    rows = [("app open, before the run", 0, 0, base, "-", "-")]
    ticks0, t_prev = ws.ticks, time.perf_counter()
    while marks:
        pump(100)
        if run.step >= marks[0] or run.state.ended:
            gc.collect()
            now = time.perf_counter()
            redraws = (ws.ticks - ticks0) / (now - t_prev)
            rows.append(
                (
                    f"after {marks[0]:,} steps",
                    run.step,
                    ws.frames_seen,
                    rss_mb(),
                    redraws,
                    run.steps_per_second,
                )
            )
            print(f"  {marks[0]:,} steps: RSS {rows[-1][3]:.0f} MB, {now - t0:.0f} s", flush=True)
            ticks0, t_prev = ws.ticks, now
            marks.pop(0)
        if run.state.ended and marks:
            print(f"the run ended early: {run.state} {run.message}")
            break
    dt = time.perf_counter() - t0
    ws.close_sources()
    table(
        "App memory during a live run (quadratic, thread host, offscreen, recording off)",
        rows,
        ("when", "steps made", "steps drawn", "RSS MB", "redraws/s", "steps/s"),
    )
    first = next((r for r in rows if r[1] >= 10_000), None)
    if first is not None and rows[-1][1] > first[1]:
        growth = rows[-1][3] - first[3]
        print(
            f"\n{rows[-1][1]:,} steps in {dt:.0f} s; growth from 10^4 steps: {growth:.1f} MB "
            f"({growth * 1e6 / (rows[-1][1] - first[1]):.1f} bytes/step); line buffers cap at 2^20 rows"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1_000_000)
    ap.add_argument("--synthetic", action="store_true", help="the first build's block-fed soak")
    args = ap.parse_args()
    if not args.synthetic:
        live(args.steps)
        return
    from PySide6 import QtWidgets

    from dynlab.ui.workspace import Workspace

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    d = tempfile.mkdtemp()
    path = os.path.join(d, "soak.h5")
    t0 = time.perf_counter()
    make_recording(path, args.steps)
    print(
        f"synthetic recording: {args.steps:,} steps, {os.path.getsize(path) / 1e6:.1f} MB, {time.perf_counter() - t0:.0f} s"
    )
    ws = Workspace(host="thread")
    ws.resize(1400, 900)
    ws.show()
    ws.open_replay(path)
    ws.timer.stop()
    player = ws.seekable()
    ws.seek(player.first - 1)
    gc.collect()
    base = rss_mb()
    marks = {10_000: None, 100_000: None, args.steps: None}
    chunk = 20_000
    t0 = time.perf_counter()
    redraw_s = []
    rec = player.file
    done = 0
    while done < args.steps:
        hi = min(done + chunk, args.steps)
        # Bulk append (LinesView.push_series): the same buffers a live run fills one frame
        # at a time, without 10^6 Python Frame objects, so the soak takes minutes.
        for v in ws.views:
            for name in v.streams:
                steps, values = rec.read(name, done, hi)
                v.push_series(name, steps, values)
        done = hi
        r0 = time.perf_counter()
        for v in ws.views:
            v.refresh()
        app.processEvents()
        redraw_s.append(time.perf_counter() - r0)
        for m in marks:
            if marks[m] is None and done >= m:
                gc.collect()
                marks[m] = (rss_mb(), np.median(redraw_s[-20:]) * 1000)
                print(f"  {m:,} steps: RSS {marks[m][0]:.0f} MB, redraw {marks[m][1]:.0f} ms", flush=True)
    dt = time.perf_counter() - t0
    rows = [("before data", base, "-")] + [(f"after {m:,} steps", v[0], v[1]) for m, v in marks.items() if v]
    table("App memory during a long run (RSS, MB)", rows, ("when", "RSS MB", "redraw ms (median, 3 views)"))
    first, last = marks[10_000][0], marks[args.steps][0]
    print(
        f"\npushed {args.steps:,} steps in {dt:.0f} s; growth 10^4 → {args.steps:,}: {last - first:.1f} MB "
        f"({(last - first) * 1e6 / max(args.steps - 10_000, 1):.1f} bytes/step); recording "
        f"{os.path.getsize(path) / args.steps:.1f} bytes/step"
    )
    ws.close_sources()


if __name__ == "__main__":
    main()
