"""The desktop app under pytest-qt (offscreen): gallery, live run, live edits, replay, teardown."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pytestqt")
from PySide6 import QtCore  # noqa: E402

from dynlab import presets  # noqa: E402
from dynlab.ui.main_window import MainWindow  # noqa: E402


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("DYNLAB_RECORDINGS", str(tmp_path / "rec"))
    settings = QtCore.QSettings(str(tmp_path / "settings.ini"), QtCore.QSettings.Format.IniFormat)
    win = MainWindow(host="thread", settings=settings)
    win._test_dir = tmp_path
    qtbot.addWidget(win)
    win.show()
    yield win
    win.close()
    assert not win.workspace.timer.isActive(), "display timer left running"
    assert all(not s.run.alive for s in win.workspace._live()), "worker left running"


def running(win, qtbot, preset=None, frames=30):
    if preset is None:  # the quadratic preset, long enough to outlive the test
        preset = str(win._test_dir / "long.toml")
        (win._test_dir / "long.toml").write_text(
            presets.load("quadratic").text.replace("steps = 2000", "steps = 100000000")
        )
    assert win.open_preset(preset, start=True)
    qtbot.waitUntil(lambda: win.workspace.frames_seen >= frames and bool(win.workspace.views), timeout=60_000)
    return win.workspace


def test_window_title_and_gallery(window, qtbot):
    assert "dynlab" in window.windowTitle()
    names = {c.name for c in window.gallery.cards}
    assert {p.stem for p in presets.list_presets()} == names
    assert all(c.isVisible() for c in window.gallery.cards)  # laid out, not orphaned
    window.gallery.filter.setText("grokking")
    shown = {c.name for c in window.gallery.cards if c.isVisible()}
    assert shown == {"grokking-modular", "grokking-scaling"}
    window.gallery.filter.setText("")
    assert all(c.isVisible() for c in window.gallery.cards)


def test_live_run_fills_views_and_ui_answers(window, qtbot):
    ws = running(window, qtbot)
    assert len(ws.views) == 3
    ticks = ws.ticks
    qtbot.waitUntil(lambda: ws.ticks > ticks + 3, timeout=10_000)  # the display timer keeps going
    assert "steps/s" in window.status_label.text()
    img = ws.views[0].grab().toImage()
    assert img.width() > 100
    ws.pause_resume()
    qtbot.waitUntil(lambda: ws._live()[0].state == "paused", timeout=10_000)
    assert window.workspace.controls.step.isEnabled()


def test_parameter_edit_reaches_engine_and_is_marked(window, qtbot):
    ws = running(window, qtbot)
    editor = ws.params.editor("lr")
    assert editor.isEnabled()
    assert not ws.params.editor("dim").isEnabled()  # not live
    editor.setValue(0.15)
    qtbot.waitUntil(lambda: any(e.kind == "set" for e in ws.events), timeout=20_000)
    ev = next(e for e in ws.events if e.kind == "set")
    assert ev.payload == {"name": "lr", "old": 0.1, "new": 0.15}
    assert all(any(e.kind == "set" for e in v.events) for v in ws.views)
    qtbot.waitUntil(lambda: _last(ws, "stability_threshold") == pytest.approx(2 / 0.15), timeout=20_000)
    ws.undo()
    qtbot.waitUntil(lambda: sum(e.kind == "set" for e in ws.events) == 2, timeout=20_000)
    assert [e.payload["new"] for e in ws.events if e.kind == "set"] == [0.15, 0.1]
    assert ws.params.editor("lr").value() == pytest.approx(0.1)


def _last(ws, name):
    return float(ws.last_values.get("", {}).get(name, np.nan))


def test_divergence_pauses_and_reports(window, qtbot, tmp_path):
    path = tmp_path / "d.toml"
    path.write_text(presets.load("quadratic").text.replace("lr = 0.1", "lr = 0.5"))
    assert window.open_preset(str(path), start=True)
    ws = window.workspace
    qtbot.waitUntil(lambda: ws._live() and ws._live()[0].state == "diverged", timeout=60_000)
    assert "diverged" in ws.last_error
    assert any(e.kind == "diverged" for e in ws.events)


def test_broken_preset_shows_a_dialog_and_app_stays_up(window, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('format_version = 1\nengine = "quadratic"\ntitle = = 1\n')
    assert not window.open_preset(str(bad))
    assert "not valid TOML" in window.status_label.text()
    assert window.isVisible()


def test_replay_drives_every_view_to_the_same_step(window, qtbot):
    ws = running(window, qtbot, frames=200)
    rec = ws._live()[0].record
    ws.stop()
    qtbot.waitUntil(lambda: ws._live()[0].state == "stopped", timeout=20_000)
    ws.close_sources()
    assert window.open_replay(rec)
    assert window.workspace.timeline.isVisible()
    ws.seek(120)
    assert {v.cursor for v in ws.views} == {120}
    ws.next_event()  # no marked events after start: stays put or goes to the end marker
    ws.seek(50)
    assert {v.cursor for v in ws.views} == {50}
    ws.toggle_play()
    c = ws._player().cursor
    qtbot.waitUntil(lambda: ws._player().cursor > c, timeout=10_000)
    ws.toggle_play()
    ws._tick()
    assert {v.cursor for v in ws.views} == {ws._player().cursor}


def test_bad_recording_shows_a_dialog(window, tmp_path):
    bad = tmp_path / "x.h5"
    bad.write_text("not hdf5")
    assert not window.open_replay(str(bad))
    assert "not an HDF5 file" in window.status_label.text()


def test_two_seeds_overlaid(window, qtbot):
    ws = running(window, qtbot)
    ws.add_seed()
    qtbot.waitUntil(
        lambda: len(ws.sources) == 2 and all(s.step > 5 for s in ws.sources.values()), timeout=60_000
    )
    assert all(len(v.runs) == 2 for v in ws.views)


def test_closing_the_window_stops_workers(window, qtbot):
    ws = running(window, qtbot)
    runs = [s.run for s in ws._live()]
    window.close()
    assert all(not r.alive for r in runs)
    assert not ws.timer.isActive()


def test_export_view_png(window, qtbot, tmp_path):
    ws = running(window, qtbot)
    out = tmp_path / "v.png"
    ws.views[0].export_image(str(out))
    assert out.stat().st_size > 1000


def test_export_replay_mp4(window, qtbot, tmp_path):
    from dynlab.ui.export import export_replay_mp4

    ws = running(window, qtbot, frames=100)
    rec = ws._live()[0].record
    ws.close_sources()
    assert window.open_replay(rec)
    out = tmp_path / "r.mp4"
    calls = []
    n = export_replay_mp4(ws, str(out), frames=12, fps=6, progress=lambda d, t: calls.append(d) or True)
    assert n == 12 and calls[-1] == 12
    assert out.stat().st_size > 1000


def test_record_error_asks_and_can_continue_unrecorded(window, qtbot, failing_flush):
    from PySide6 import QtWidgets

    failing_flush(4)
    ws = running(window, qtbot)
    qtbot.waitUntil(lambda: "No space left" in ws.last_error, timeout=60_000)
    box = ws._dialog
    assert "Continue without recording?" in box.text()
    qtbot.waitUntil(lambda: ws._live()[0].state == "paused", timeout=20_000)
    s = ws._live()[0].step
    box.done(QtWidgets.QMessageBox.StandardButton.Yes)
    qtbot.waitUntil(lambda: ws._live()[0].step > s + 10, timeout=20_000)
    assert window.isVisible()


def test_new_window_for_side_by_side(window, qtbot):
    other = window.new_window()
    qtbot.addWidget(other)
    assert other.isVisible() and "dynlab" in other.windowTitle()
    other.close()
