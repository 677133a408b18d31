"""Soak: the app's memory after 10^4 and 10^6 steps of a run drawn live.

The quadratic preset's five streams (four scalars and a 3-vector, every step) are
fed to the app's real workspace views in blocks of 20,000 steps (the views' bulk append,
the same buffers a live run fills frame by frame), redrawing after each block; the process's resident memory is read at 10^4 and 10^6
steps. The recording is synthetic (written in blocks) so the soak takes minutes, not
hours; it is what the views see in a 10^6-step live run.

    python bench/bench_soak.py [--steps 1000000]
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1_000_000)
    args = ap.parse_args()
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
