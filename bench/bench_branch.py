"""Checkpoints and branches: bytes and milliseconds per checkpoint, and time to a branch's first frame.

    python bench/bench_branch.py [--engines a,b,c]

Per engine (default: the three with the largest state): capture the state after a few
steps and write it to a recording's ``/checkpoints`` (the worker's path), best of 5; the
bytes it adds to the file; and one training step for scale. Branching: from a recorded
parent, the wall time from ``branch.prepare`` (read and verify the checkpoint) through
``Run.start`` to the first branch frame drained, on the thread host.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import _common  # noqa: F401
import h5py
import torch
from _common import table

from dynlab import branch, presets
from dynlab.engines import state
from dynlab.engines.base import registry
from dynlab.frames import Frame
from dynlab.recording import Recorder
from dynlab.runner import Run

HEAVIEST = ("icl-linear-regression", "grokking", "generalization-dynamics")
PRESET_OF = {
    "icl-linear-regression": "icl-linear-regression",
    "grokking": "grokking-modular",
    "generalization-dynamics": "generalization-dynamics",
}


def checkpoint_cost(name: str, tmp: str) -> tuple:
    eng = registry()[name]({}, seed=0)
    eng.step()
    t0 = time.perf_counter()
    eng.step()
    step_ms = (time.perf_counter() - t0) * 1e3
    path = os.path.join(tmp, f"{name}.h5")
    rec = Recorder(path, eng.streams, {"engine": name})
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        arrays, meta = state.capture(eng)
        nbytes = rec.checkpoint(eng.step_count, arrays, meta)
        best = min(best, time.perf_counter() - t0)
    rec.close()
    with h5py.File(path, "r") as f:
        stored = f["checkpoints/data"].id.get_storage_size()
    return name, nbytes / 1e6, stored / 5 / 1e6, best * 1e3, step_ms


def time_to_first_branch_frame(tmp: str) -> tuple:
    parent = os.path.join(tmp, "parent.h5")
    preset = presets.load("grokking-modular").with_overrides(steps=40)
    run = Run(preset, record=parent, checkpoint_every=10).start()
    run.join()
    run.close()
    t0 = time.perf_counter()
    p, start = branch.prepare(parent, 25)
    b = Run(p, record=os.path.join(tmp, "b.h5"), branch=start).start()
    while True:
        if any(isinstance(i, Frame) for i in b.drain()):
            break
        time.sleep(0.001)
    dt = time.perf_counter() - t0
    b.close()
    return "grokking-modular, branch at 25 from the checkpoint at 20", dt * 1e3


def time_to_first_branch_frame_in_app(tmp: str) -> tuple:
    """The app's *Branch from here*: from the call to the branch's first frame delivered to the views."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ["DYNLAB_RECORDINGS"] = os.path.join(tmp, "recs")
    from PySide6 import QtCore, QtWidgets

    from dynlab.ui.workspace import Workspace

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    parent = os.path.join(tmp, "parent-app.h5")
    run = Run(presets.load("grokking-modular").with_overrides(steps=40), record=parent, checkpoint_every=10)
    run.start().join()
    run.close()
    settings = QtCore.QSettings(os.path.join(tmp, "s.ini"), QtCore.QSettings.Format.IniFormat)
    ws = Workspace(host="thread", settings=settings)
    ws.resize(1200, 800)
    ws.show()
    ws.open_replay(parent)
    ws.seek(24)
    t0 = time.perf_counter()
    ws.branch_from_here({"weight_decay": 0.0})
    while "branch1" not in ws.last_values:
        app.processEvents()
        time.sleep(0.001)
    dt = time.perf_counter() - t0
    ws.close_sources()
    ws.close()
    return "the same, in the app (offscreen), to the first frame in the views", dt * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--engines", default=",".join(HEAVIEST))
    args = ap.parse_args()
    torch.set_num_threads(max(1, _common.cores()))
    with tempfile.TemporaryDirectory() as tmp:
        rows = [checkpoint_cost(n, tmp) for n in args.engines.split(",")]
        table(
            "Checkpoint cost (capture + write, best of 5)",
            rows,
            ("engine", "state MB", "stored MB (gzip)", "ms per checkpoint", "ms per training step"),
        )
        table(
            "Branch from here to the first branch frame (thread host)",
            [time_to_first_branch_frame(tmp)],
            ("case", "ms"),
        )


if __name__ == "__main__":
    main()
