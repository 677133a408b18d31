"""App start to first window vs importing PySide6.QtWidgets alone.

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


if __name__ == "__main__":
    main()
