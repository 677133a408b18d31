"""Start the desktop app: ``dynlab``, ``dynlab open PRESET [--start]``, ``dynlab replay FILE``."""

from __future__ import annotations

import argparse
import signal
import sys

from dynlab.qtcheck import ensure_display_libraries

# Exit status when the display cannot be used (as for a usage error): Qt itself would abort (134).
EXIT_NO_DISPLAY = 2


def main(argv: list[str] | None = None) -> int:
    """Open the main window; return the Qt event loop's exit status, or 2 without a usable display."""
    p = argparse.ArgumentParser(prog="dynlab")
    p.add_argument("--open", metavar="PRESET")
    p.add_argument("--start", action="store_true")
    p.add_argument("--replay", metavar="FILE")
    p.add_argument("--present", action="store_true")
    args = p.parse_args(argv or [])
    # Before anything imports Qt: a missing X11 library would make Qt abort with a wrong hint.
    if not ensure_display_libraries():
        return EXIT_NO_DISPLAY

    import pyqtgraph as pg
    from PySide6 import QtWidgets

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(sys.argv[:1])
    app.setApplicationName("dynlab")
    app.setOrganizationName("dynlab")
    app.setDesktopFileName("dynlab")  # ties windows to the installed .desktop entry
    from pathlib import Path

    from PySide6 import QtGui

    icon = Path(__file__).with_name("icons") / "dynlab.svg"
    if icon.is_file():
        app.setWindowIcon(QtGui.QIcon(str(icon)))
    pg.setConfigOptions(antialias=True, background="w", foreground="k")
    from dynlab.ui.main_window import MainWindow

    win = MainWindow()
    win.show()
    _close_on_signals(app)
    if args.open:
        win.open_preset(args.open, start=args.start)
    elif args.replay:
        if win.open_replay(args.replay):
            if args.present:
                win.toggle_presentation()
    return app.exec()


def _close_on_signals(app) -> None:  # noqa: ANN001 - QApplication
    """SIGTERM and SIGINT close every window (stopping their runs, closing recordings), then quit.

    Killed with Python's default handlers, the app would leave its engine child processes
    behind. Python runs a signal handler only between bytecodes, and Qt's event loop is C++:
    a timer wakes the interpreter four times a second so the handler gets its turn.
    """
    from PySide6 import QtCore

    def close_all(signum: int, frame: object) -> None:
        app.closeAllWindows()
        app.quit()

    signal.signal(signal.SIGTERM, close_all)
    signal.signal(signal.SIGINT, close_all)
    timer = QtCore.QTimer(app)
    timer.timeout.connect(lambda: None)
    timer.start(250)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
