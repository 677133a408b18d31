"""The app attached to a real watched script (a subprocess) under pytest-qt, offscreen."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")
from PySide6 import QtCore  # noqa: E402

from dynlab.ui.attach import attach, attach_running  # noqa: E402
from dynlab.ui.main_window import MainWindow  # noqa: E402
from dynlab.watching.attached import WatchedSource  # noqa: E402
from dynlab.watching.client import sessions  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "watch_digits.py"


@pytest.fixture
def script(monkeypatch, tmp_path):
    """examples/watch_digits.py running until stopped, in its own runtime folder."""
    run = tempfile.mkdtemp(prefix="dla", dir="/tmp")
    monkeypatch.setenv("XDG_RUNTIME_DIR", run)
    monkeypatch.setenv("DYNLAB_RECORDINGS", str(tmp_path / "rec"))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    rec = tmp_path / "digits.h5"
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLE), "--epochs", "100000", "--record", str(rec)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    proc.recording = rec
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.communicate()
    shutil.rmtree(run, ignore_errors=True)


@pytest.fixture
def window(qtbot, tmp_path):
    settings = QtCore.QSettings(str(tmp_path / "settings.ini"), QtCore.QSettings.Format.IniFormat)
    win = MainWindow(host="thread", settings=settings)
    qtbot.addWidget(win)
    win.show()
    yield win
    win.close()
    assert not win.workspace.timer.isActive(), "display timer left running"


def digits():
    rows = [r for r in sessions() if r["name"] == "digits"]
    return rows[0] if rows else None


def test_attach_steer_detach_and_stop_from_the_app(window, script, qtbot):
    qtbot.waitUntil(lambda: (r := digits()) is not None and r["step"] > 20, timeout=120_000)
    menu = [a.text() for a in window.menuBar().actions()[0].menu().actions()]
    assert "&Attach to running training…" in menu
    dlg = attach_running(window)
    assert dlg.table.rowCount() == 1 and dlg.table.item(0, 0).text() == "digits"
    assert dlg.table.item(0, 1).text() == str(script.pid)
    dlg.accept()
    ws = window.workspace
    src = ws.sources[""]
    assert isinstance(src, WatchedSource)
    qtbot.waitUntil(lambda: bool(ws.views) and ws.frames_seen > 50, timeout=60_000)
    titles = ws.view_titles()
    for name in (
        "loss",
        "accuracy",
        "lr",
        "grad_norm_layer",
        "update_angle",
        "effective_step",
        "hessian_top",
    ):
        assert name in titles
    assert "probe_seconds" not in titles
    assert "attached" in window.windowTitle()
    # History from the recording first: the loss curve starts at step 0, not at the attach.
    steps, _ = ws.views[titles.index("loss")].series_data("loss")
    assert steps[0] == 0 and steps[-1] > 20 and len(set(steps.tolist())) == len(steps)

    # The hyperparameter panel is the optimizer's param_groups; an edit reaches the script.
    editor = ws.params.editor("lr")
    assert editor.isEnabled() and editor.value() == pytest.approx(0.05)
    editor.setValue(0.02)
    qtbot.waitUntil(lambda: any(e.kind == "set" for e in ws.events), timeout=30_000)
    ev = next(e for e in ws.events if e.kind == "set")
    assert ev.payload["new"] == 0.02 and ev.payload["by"] == "app"
    assert all(any(e.kind == "set" for e in v.events) for v in ws.views)  # a marker on every time axis
    qtbot.waitUntil(lambda: ws.last_values[""].get("lr") == pytest.approx(0.02), timeout=30_000)

    ws.pause_resume()
    # The controls follow the state at the next display tick (its rate adapts to the load).
    qtbot.waitUntil(lambda: src.state == "paused" and ws.controls.step.isEnabled(), timeout=30_000)
    assert "paused" in window.status_label.text()
    held = src.step
    ws.single_step()
    qtbot.waitUntil(lambda: src.step == held + 1, timeout=30_000)
    ws.pause_resume()
    qtbot.waitUntil(lambda: src.state == "running", timeout=30_000)

    # Detaching (here: back to the gallery) never affects the script.
    window.show_gallery()
    assert not ws.sources and src.message == "detached"
    at = digits()["step"]
    qtbot.waitUntil(lambda: digits()["step"] > at + 20, timeout=60_000)
    assert script.poll() is None

    # Attach again and stop it from the app: the script ends cleanly, the app shows it.
    src = attach(window, digits())
    qtbot.waitUntil(lambda: ws.frames_seen > 0 and bool(ws.views), timeout=60_000)
    ws.stop()
    qtbot.waitUntil(lambda: src.state == "stopped", timeout=60_000)
    qtbot.waitUntil(lambda: any(e.kind == "end" for e in ws.events), timeout=30_000)
    out, err = script.communicate(timeout=60)
    assert script.returncode == 0, err
    assert "finished: stopped" in out
    assert not ws.controls.stop.isEnabled()  # the controls show the run as over
