"""App start to first window vs importing PySide6.QtWidgets alone; Start to first frame.

Start to first frame: in a fresh app process, the grokking preset is opened and Start
pressed; the clock runs until the first frame has been drawn by a view (its series
handed to the plot and the window painted). Rows: the engine in a child process
spawned when Start is pressed (cold), in the child the main window started while the
gallery showed (warm, the default), and in a thread of the app.

python bench/bench_startup.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import _common  # noqa: F401
from _common import ROOT, table

BASELINE = "import PySide6.QtWidgets"
APP = """
import time, sys
t0 = time.perf_counter()
from PySide6 import QtWidgets, QtCore
app = QtWidgets.QApplication([])
from dynlab.ui.main_window import MainWindow
w = MainWindow(settings=QtCore.QSettings(sys.argv[1], QtCore.QSettings.Format.IniFormat))
w.show()
app.processEvents()
print('TORCH' if 'torch' in sys.modules else 'NOTORCH')
"""


FIRST_FRAME = """
import os, sys, time
from PySide6 import QtWidgets, QtCore
app = QtWidgets.QApplication([])
from dynlab import presets
from dynlab.ui.main_window import MainWindow
how = sys.argv[2]
w = MainWindow(host="thread" if how == "thread" else "process",
               settings=QtCore.QSettings(sys.argv[1], QtCore.QSettings.Format.IniFormat))
w.show()
def pump(s):
    loop = QtCore.QEventLoop(); QtCore.QTimer.singleShot(int(s * 1000), loop.quit); loop.exec()
pump(10.0)  # a user reading the gallery
if how == "cold":
    from dynlab import runner
    for key in list(runner._WARM):  # forget the child the gallery started
        runner._take_warm(*key)[1].put(("stop",))
w.workspace.controls.record.setChecked(False)
ws = w.workspace
t0 = time.perf_counter()
w.open_preset("grokking-modular", start=True)
def drawn():
    return any(getattr(s, "drawn", None) is not None for v in ws.views for s in getattr(v, "_series", {}).values())
while not drawn() and time.perf_counter() - t0 < 120:
    app.processEvents(QtCore.QEventLoop.ProcessEventsFlag.AllEvents, 5)
app.processEvents()  # the paint of that frame
print("FIRST", time.perf_counter() - t0)
print("VIEWS", len(ws.views), file=sys.stderr)
ws.close_sources()
"""


def first_frame(ini: str, how: str) -> float:
    env = {
        **os.environ,
        "QT_QPA_PLATFORM": os.environ.get("QT_QPA_PLATFORM", "offscreen"),
        "PYTHONPATH": str(ROOT),
    }
    out = subprocess.run(
        [sys.executable, "-c", FIRST_FRAME, ini, how],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    if out.returncode != 0 or "FIRST" not in out.stdout:
        raise SystemExit(out.stderr)
    return float(out.stdout.split("FIRST")[1].split()[0])


def timed(code: list[str]) -> float:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    out = subprocess.run(code, env=env, capture_output=True, text=True, cwd=ROOT, timeout=120)
    dt = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(out.stderr)
    if "TORCH" in out.stdout and "NOTORCH" not in out.stdout:
        print("warning: torch was imported on the way to the first window")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-first-frame", action="store_true", help="only the start-up rows")
    args = ap.parse_args()
    import tempfile

    ini = os.path.join(tempfile.mkdtemp(), "s.ini")
    base = min(timed([sys.executable, "-c", BASELINE]) for _ in range(args.repeat))
    app = min(timed([sys.executable, "-c", APP, ini]) for _ in range(args.repeat))
    table(
        f"Start-up (best of {args.repeat})",
        [
            ("python -c 'import PySide6.QtWidgets'", base, 0.0),
            ("dynlab main window shown (gallery)", app, app - base),
        ],
        ("what", "seconds", "more than baseline"),
    )
    print("\nGoal: <= 2.5 s more than the baseline; torch not imported before the first window.")
    if args.no_first_frame:
        return
    rows = []
    for how, what in (
        ("cold", "child process spawned on Start"),
        ("warm", "child process started while the gallery showed (default)"),
        ("thread", "engine in a thread of the app"),
    ):
        times = [first_frame(ini, how) for _ in range(args.repeat)]
        rows.append((what, min(times), float(sorted(times)[len(times) // 2])))
    table(
        f"Start pressed to the first frame drawn (grokking-modular; best and median of {args.repeat})",
        rows,
        ("engine", "best s", "median s"),
    )
    print("\nGoal: <= 1 s from Start to the first frame.")


if __name__ == "__main__":
    main()
