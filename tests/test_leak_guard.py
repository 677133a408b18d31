"""The leak guard in conftest.py fails a test that leaves a thread running or a window open."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ("pytester",)

LEAKY = """
import threading

import pytest

LEFT_OPEN = []  # a reference keeps the widget alive, as a window held by the app would be


def test_leaves_a_thread_running():
    stop = threading.Event()
    threading.Thread(target=stop.wait, args=(60,), name="forgotten-worker", daemon=True).start()


def test_leaves_a_window_open(qtbot):
    from PySide6 import QtWidgets

    LEFT_OPEN.append(QtWidgets.QLabel("left open"))
    LEFT_OPEN[-1].show()


def test_cleans_up(qtbot):
    from PySide6 import QtWidgets

    t = threading.Thread(target=lambda: None, name="short-lived")
    t.start()
    label = QtWidgets.QLabel("closed")
    qtbot.addWidget(label)
    label.show()
"""


def test_guard_reports_a_leaked_thread_and_window(pytester: pytest.Pytester) -> None:
    conftest = Path(__file__).with_name("conftest.py").read_text(encoding="utf-8")
    assert "THREAD_GRACE_S = 10.0\n" in conftest
    pytester.makeconftest(conftest.replace("THREAD_GRACE_S = 10.0\n", "THREAD_GRACE_S = 0.5\n"))
    pytester.makepyfile(test_leaky=LEAKY)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:xvfb")
    result.assert_outcomes(passed=3, errors=2)
    out = result.stdout.str()
    assert "ERROR test_leaky.py::test_leaves_a_thread_running" in out
    assert "test left threads running: ['forgotten-worker']" in out
    assert "ERROR test_leaky.py::test_leaves_a_window_open" in out
    assert "test left windows open: ['QLabel']" in out
