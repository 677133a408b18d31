"""Start the desktop app: ``dynlab``, ``dynlab open PRESET [--start]``, ``dynlab replay FILE``."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
from typing import Any

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
    if args.open:
        win.open_preset(args.open, start=args.start)
    elif args.replay:
        if win.open_replay(args.replay):
            if args.present:
                win.toggle_presentation()
    quit_on_signals(app)
    return app.exec()


def quit_on_signals(app: Any) -> None:
    """Ctrl+C (SIGINT) and SIGTERM close every window, so runs stop and recordings close, then quit.

    Qt's event loop runs in C++, and Python runs a signal handler only when it next runs
    bytecode, so Ctrl+C would wait for the next mouse move. A wakeup socket watched by a
    ``QSocketNotifier`` wakes Python at once. The exit status is 128 + the signal (130 for
    Ctrl+C). A second signal while closing ends the process the default way.
    """
    from PySide6 import QtCore

    rsock, wsock = socket.socketpair()
    rsock.setblocking(False)
    wsock.setblocking(False)
    try:
        signal.set_wakeup_fd(wsock.fileno())
    except ValueError:  # not the main thread (embedded use): leave signals alone
        rsock.close()
        wsock.close()
        return
    notifier = QtCore.QSocketNotifier(rsock.fileno(), QtCore.QSocketNotifier.Type.Read, app)

    def drain() -> None:
        try:
            rsock.recv(64)
        except OSError:
            pass

    notifier.activated.connect(drain)
    closing = []

    def close_all(code: int) -> None:
        # Closing the last window would quit with status 0 first: the signal's status must win.
        app.setQuitOnLastWindowClosed(False)
        app.closeAllWindows()  # MainWindow.closeEvent stops runs and closes recordings
        app.exit(code)

    def handler(signum: int, _frame: object) -> None:
        if closing:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        closing.append(signum)
        QtCore.QTimer.singleShot(0, lambda: close_all(128 + signum))

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)
    app._dynlab_signal_wakeup = (rsock, wsock, notifier)  # alive as long as the app


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
