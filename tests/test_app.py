"""The desktop app under pytest-qt (offscreen): gallery, live run, live edits, replay, teardown."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest

pytest.importorskip("pytestqt")
from PySide6 import QtCore, QtGui  # noqa: E402

from dynlab import presets  # noqa: E402
from dynlab.frames import Frame  # noqa: E402
from dynlab.runner import run_headless  # noqa: E402
from dynlab.ui.main_window import MainWindow  # noqa: E402

# The quadratic preset's first view plots train_loss, its first series: the palette's blue.
LOSS_RGB = (0x1F, 0x77, 0xB4)


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
    assert all(not s.alive for s in win.workspace.steerable()), "worker left running"


def running(win, qtbot, preset=None, frames=30):
    if preset is None:  # the quadratic preset, long enough to outlive the test
        preset = str(win._test_dir / "long.toml")
        (win._test_dir / "long.toml").write_text(
            presets.load("quadratic").text.replace("steps = 2000", "steps = 100000000")
        )
    assert win.open_preset(preset, start=True)
    qtbot.waitUntil(lambda: win.workspace.frames_seen >= frames and bool(win.workspace.views), timeout=60_000)
    return win.workspace


def _rgb(img: QtGui.QImage) -> np.ndarray:
    """An image as an (H, W, 3) uint8 array."""
    img = img.convertToFormat(QtGui.QImage.Format.Format_RGB888)
    h, w = img.height(), img.width()
    rows = np.frombuffer(img.constBits(), np.uint8, count=img.bytesPerLine() * h).reshape(h, -1)
    return rows[:, : w * 3].reshape(h, w, 3).copy()  # a copy: the converted image dies here


def _curve(pixels: np.ndarray, rgb: tuple[int, int, int] = LOSS_RGB, tol: int = 40) -> np.ndarray:
    """(x, y) of the pixels drawn in the series colour ``rgb`` (antialiasing blends the edges)."""
    near = np.abs(pixels.astype(int) - np.array(rgb)).max(axis=2) <= tol
    ys, xs = np.nonzero(near)
    return np.stack([xs, ys], axis=1)


def assert_falling_loss_curve(pixels: np.ndarray, tol: int = 40) -> None:
    """What a user sees in the loss view: a blue curve across most of the plot, falling."""
    pts = _curve(pixels, tol=tol)
    width = pixels.shape[1]
    assert len(pts) > 50, "no data drawn in the loss colour"
    x0, x1 = pts[:, 0].min(), pts[:, 0].max()
    assert x1 - x0 > 0.5 * width, f"the curve spans only x = {x0}..{x1} of {width} px"
    quarter = (x1 - x0) / 4
    left, right = pts[pts[:, 0] < x0 + quarter], pts[pts[:, 0] > x1 - quarter]
    assert left[:, 1].mean() < right[:, 1].mean(), "the loss should fall (image rows grow downwards)"


def _headless_loss(steps: int) -> np.ndarray:
    """train_loss of the quadratic preset (same seed) for ``steps`` steps, run without the app."""
    _, items = run_headless(presets.load("quadratic").with_overrides(steps=steps))
    return np.array([float(f.data["train_loss"]) for f in items if isinstance(f, Frame)])


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
    ws.views[0].refresh()
    assert_falling_loss_curve(_rgb(ws.views[0].grab().toImage()))
    ws.pause_resume()
    qtbot.waitUntil(lambda: ws.steerable()[0].state == "paused", timeout=10_000)
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
    qtbot.waitUntil(lambda: ws.steerable() and ws.steerable()[0].state == "diverged", timeout=60_000)
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
    ws.params.editor("lr").setValue(0.12)  # a marked event to jump to in the replay
    qtbot.waitUntil(lambda: any(e.kind == "set" for e in ws.events), timeout=20_000)
    marked = next(e for e in ws.events if e.kind == "set").step
    qtbot.waitUntil(lambda: ws.steerable()[0].step > marked + 20, timeout=20_000)
    rec = ws.steerable()[0].recording
    ws.stop()
    qtbot.waitUntil(lambda: ws.steerable()[0].state == "stopped", timeout=20_000)
    ws.close_sources()
    assert window.open_replay(rec)
    assert window.workspace.timeline.isVisible()
    ws.seek(120)
    assert {v.cursor for v in ws.views} == {120}
    ws.seek(50)
    assert {v.cursor for v in ws.views} == {50}
    ws.next_event()  # → the live edit, the one marked event after step 50
    assert marked > 50 and ws.seekable().cursor == marked
    assert {v.cursor for v in ws.views} == {marked}
    assert any(e.kind == "set" and e.step == marked for e in ws.events)
    ws.next_event()  # no marked event after it: the cursor stays
    assert {v.cursor for v in ws.views} == {marked}
    ws.seek(marked + 10)
    ws.prev_event()
    assert {v.cursor for v in ws.views} == {marked}
    ws.seek(50)
    ws.toggle_play()
    c = ws.seekable().cursor
    qtbot.waitUntil(lambda: ws.seekable().cursor > c, timeout=10_000)
    ws.toggle_play()
    ws._tick()
    assert {v.cursor for v in ws.views} == {ws.seekable().cursor}


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
    runs = [s for s in ws.steerable()]
    window.close()
    assert all(not r.alive for r in runs)
    assert not ws.timer.isActive()


def test_export_view_png(window, qtbot, tmp_path):
    ws = running(window, qtbot)
    out = tmp_path / "v.png"
    ws.views[0].export_image(str(out))
    img = QtGui.QImage(str(out))
    assert not img.isNull() and img.size() == ws.views[0].size()
    assert_falling_loss_curve(_rgb(img))


def test_export_view_svg_holds_the_data(window, qtbot, tmp_path):
    ws = running(window, qtbot)
    out = tmp_path / "v.svg"
    ws.views[0].export_image(str(out))
    root = ET.parse(out).getroot()
    ns = {"svg": "http://www.w3.org/2000/svg"}
    assert root.findtext("svg:title", namespaces=ns) == "Loss"
    # The curve is a vector path in data coordinates: x = step, y = log10(loss) (log axis).
    groups = [g for g in root.iter("{http://www.w3.org/2000/svg}g") if g.get("stroke") == "#1f77b4"]
    paths = [p.get("d", "") for g in groups for p in g.iter("{http://www.w3.org/2000/svg}path")]
    assert paths, "no path drawn in the loss colour"
    points = np.array([pt.split(",") for pt in max(paths, key=len).replace("M", "").split(" L")], float)
    steps = points[:, 0]
    assert len(points) >= 30 and steps[0] == 0 and np.all(np.diff(steps) == 1)
    truth = np.log10(_headless_loss(int(steps[-1]) + 1))
    np.testing.assert_allclose(points[:, 1], truth[steps.astype(int)], rtol=1e-4, atol=1e-4)


def test_export_replay_mp4(window, qtbot, tmp_path):
    import imageio.v2 as imageio

    from dynlab.ui.export import export_replay_mp4

    ws = running(window, qtbot, frames=100)
    rec = ws.steerable()[0].recording
    ws.close_sources()
    assert window.open_replay(rec)
    out = tmp_path / "r.mp4"
    calls = []
    n = export_replay_mp4(ws, str(out), frames=12, fps=6, progress=lambda d, t: calls.append(d) or True)
    assert n == 12 and calls[-1] == 12
    with imageio.get_reader(str(out), "ffmpeg") as video:
        frames = [np.asarray(f) for f in video]
    assert len(frames) == 12
    assert frames[0].shape == (ws.grid_host.height() & ~1, ws.grid_host.width() & ~1, 3)
    # The loss view's part of each frame: no curve at step 0, then the loss falling.
    at = ws.views[0].mapTo(ws.grid_host, QtCore.QPoint(0, 0))
    size = ws.views[0].size()
    loss = [f[at.y() : at.y() + size.height(), at.x() : at.x() + size.width()] for f in frames]
    first = _curve(loss[0], tol=60)
    assert len(first) == 0 or np.ptp(first[:, 0]) < 0.05 * size.width(), "frame 0 shows more than step 0"
    for f in loss[1:]:
        assert_falling_loss_curve(f, tol=60)  # H.264 shifts colours a little


def test_record_error_asks_and_can_continue_unrecorded(window, qtbot, failing_flush):
    from PySide6 import QtWidgets

    failing_flush(4)  # tests/conftest.py: the 4th flush fails as on a full disk
    ws = running(window, qtbot)
    qtbot.waitUntil(lambda: "No space left" in ws.last_error, timeout=60_000)
    box = ws._dialog
    assert "Continue without recording?" in box.text()
    qtbot.waitUntil(lambda: ws.steerable()[0].state == "paused", timeout=20_000)
    s = ws.steerable()[0].step
    box.done(QtWidgets.QMessageBox.StandardButton.Yes)
    qtbot.waitUntil(lambda: ws.steerable()[0].step > s + 10, timeout=20_000)
    assert window.isVisible()


def test_new_window_for_side_by_side(window, qtbot):
    other = window.new_window()
    qtbot.addWidget(other)
    assert other.isVisible() and "dynlab" in other.windowTitle()
    other.close()
