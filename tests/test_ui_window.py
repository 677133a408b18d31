"""The main window's parts from issue 17: recent recordings with what they hold (items 16),
the Help menu (17), File → Export recording and Save as preset (12, 13), and the parameter
panel's messages in the status bar (2).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pytestqt")
from PySide6 import QtCore, QtWidgets  # noqa: E402

from dynlab import presets  # noqa: E402
from dynlab.frames import Frame, Stream  # noqa: E402
from dynlab.recording import Recorder  # noqa: E402
from dynlab.ui.main_window import MainWindow  # noqa: E402

LONG_NAME = "grokking-modular-20250102-030405-seed12345-a-rather-long-name-that-used-to-be-cut.h5"


def _record(path, steps: int = 300, status: str = "completed") -> None:
    rec = Recorder(
        path,
        (Stream("train_loss", "scalar"), Stream("acc", "scalar")),
        {"engine": "quadratic", "preset_name": "grokking-modular", "preset": presets.load("quadratic").text},
        flush_interval=1e9,
    )
    for s in range(1, steps + 1):
        rec.write(Frame.make(s, {"train_loss": np.exp(-s / 50), "acc": s / steps}))
    rec.close(status)


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("DYNLAB_RECORDINGS", str(tmp_path / "rec"))
    (tmp_path / "rec").mkdir()
    _record(tmp_path / "rec" / LONG_NAME)
    (tmp_path / "rec" / "broken.h5").write_bytes(b"not a recording")
    settings = QtCore.QSettings(str(tmp_path / "settings.ini"), QtCore.QSettings.Format.IniFormat)
    win = MainWindow(host="thread", settings=settings)
    qtbot.addWidget(win)
    win.show()
    yield win
    win.close()


def _items(win) -> list[QtWidgets.QListWidgetItem]:
    return [win.gallery.recent.item(i) for i in range(win.gallery.recent.count())]


def test_recent_recordings_come_from_dynlab_recordings_with_what_they_hold(window, qtbot, tmp_path):
    items = {it.data(QtCore.Qt.ItemDataRole.UserRole): it for it in _items(window)}
    path = str(tmp_path / "rec" / LONG_NAME)
    assert path in items  # found in DYNLAB_RECORDINGS without ever being opened here
    row = window.gallery.recent.itemWidget(items[path])
    assert row.name.text().replace("\u200b", "") == LONG_NAME  # whole, not cut
    info = row.info.text()
    assert info.startswith("grokking-modular · ") and "300 steps" in info and "completed" in info
    assert row.name.textFormat() == QtCore.Qt.TextFormat.PlainText
    # The run's own curve, filled in after the list shows.
    qtbot.waitUntil(lambda: not row.thumb.pixmap().isNull(), timeout=10_000)
    # Every row is as tall as its wrapped text: nothing is clipped.
    assert items[path].sizeHint().height() >= row.name.heightForWidth(row.name.width()) + row.info.height()
    broken = window.gallery.recent.itemWidget(items[str(tmp_path / "rec" / "broken.h5")])
    assert "unreadable" in broken.info.text()
    qtbot.waitUntil(lambda: not window.gallery._pending_thumbs)
    assert broken.thumb.pixmap().isNull()
    with qtbot.waitSignal(window.gallery.replay_requested) as sig:
        qtbot.mouseClick(row.info, QtCore.Qt.MouseButton.LeftButton)
    assert sig.args == [path]
    assert window.pages.currentWidget() is window.workspace  # the click opened the replay
    assert str(tmp_path / "rec") in window.gallery.recent_note.text()
    window._fill_recent_menu()
    assert any(LONG_NAME in a.text() and "300 steps" in a.text() for a in window.recent_menu.actions())


def test_thumbnail_draws_the_recorded_curve(tmp_path):
    from dynlab.ui.recent import thumbnail

    path = tmp_path / "r.h5"
    _record(path, steps=5000)
    img = thumbnail(str(path), (100, 40))
    assert img is not None and img.width() == 100

    # The loss decays: ink in the top-left corner and the bottom-right one, none top-right.
    def ink(x0, x1, y0, y1):
        return sum(
            img.pixelColor(x, y).blue() > img.pixelColor(x, y).red() + 60
            for x in range(x0, x1)
            for y in range(y0, y1)
        )

    assert ink(2, 12, 2, 14) > 0 and ink(80, 98, 26, 38) > 0 and ink(80, 98, 2, 14) == 0


def test_help_lists_real_shortcuts_and_links_the_paper(window, qtbot):
    from dynlab.ui.help import PaperDialog, paper_url, shortcut_rows

    rows = dict(shortcut_rows(window))
    assert "F1" in rows and "Space" in rows and rows["Space"] == "Play / pause"
    assert any("Undo hyperparameter change" in v for v in rows.values())
    window.show_shortcuts()
    assert window._shortcuts.table.rowCount() == len(shortcut_rows(window))
    assert paper_url("Tarzanagh et al., 2023 (arXiv:2308.16898)") == "https://arxiv.org/abs/2308.16898"
    assert paper_url("Papyan, Han & Donoho, PNAS 2020").startswith(
        "https://scholar.google.com/scholar?q=Papyan"
    )
    window.show_paper()  # nothing open: says so, the app stays up
    assert "Open a preset" in window.status_label.text()
    assert window.open_preset("quadratic")
    window.show_paper()
    assert isinstance(window._paper, PaperDialog) and "arxiv" not in window._paper.url
    assert "Cohen" in window.workspace.preset.paper


def test_parameter_messages_reach_the_status_bar(window):
    window.workspace.params.message.emit("lr = -0.5 is below its minimum 0")
    window.workspace.status.emit("running · step 10")  # the tick's status line does not hide it
    assert window.statusBar().currentMessage() == "lr = -0.5 is below its minimum 0"


def test_save_as_preset_writes_a_file_that_runs(window, tmp_path, monkeypatch):
    assert window.open_preset("quadratic")
    window.workspace.overrides = {"lr": 0.15}  # an edit made before starting
    target = tmp_path / "mine.toml"
    monkeypatch.setattr(QtWidgets.QFileDialog, "getSaveFileName", lambda *a, **k: (str(target), ""))
    window.save_preset()
    assert "dynlab run" in window.status_label.text()
    loaded = presets.load(str(target))
    assert loaded.hyperparameters["lr"] == 0.15 and loaded.engine == "quadratic"


def test_file_export_recording_writes_csv(window, tmp_path):
    from dynlab.ui.export import ExportDialog

    path = str(tmp_path / "rec" / LONG_NAME)
    assert window._current_recording() == path  # the newest recording is offered
    dlg = ExportDialog(path, window)
    assert dlg.folder.text().endswith("-csv")
    dlg.fmt.setCurrentIndex(1)
    assert dlg.folder.text().endswith("-tensorboard")
    dlg.fmt.setCurrentIndex(0)
    dlg.folder.setText(str(tmp_path / "out"))
    summary = dlg.run()
    assert summary.startswith("Exported 3 CSV files")
    rows = (tmp_path / "out" / "train_loss.csv").read_text().splitlines()
    assert rows[0] == "step,train_loss" and len(rows) == 301


def test_thumbnail_of_a_vector_only_recording_and_of_nan(tmp_path):
    from dynlab.ui.recent import draw_line, thumbnail

    path = tmp_path / "v.h5"
    rec = Recorder(
        path, (Stream("train_loss", "vector", shape=(2,), labels=("a", "b")),), {}, flush_interval=1e9
    )
    for s in range(1, 50):
        rec.write(Frame.make(s, {"train_loss": np.array([1.0 / s, 2.0 / s])}))
    rec.close()
    assert thumbnail(str(path)) is not None
    assert draw_line(np.full(10, np.nan), (40, 20)) is None
