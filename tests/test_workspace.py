"""The workspace over Sources: docked views, pace and progress, several recordings overlaid."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6 import QtCore, QtWidgets

from dynlab import presets
from dynlab.runner import run_headless
from dynlab.source import RunState
from dynlab.ui.workspace import Workspace


@pytest.fixture
def settings(tmp_path):
    return QtCore.QSettings(str(tmp_path / "settings.ini"), QtCore.QSettings.Format.IniFormat)


@pytest.fixture
def ws(qtbot, settings):
    w = Workspace(host="thread", settings=settings)
    qtbot.addWidget(w)
    w.resize(1200, 800)
    w.show()
    yield w
    w.close_sources()


def _record(path, lr: float, steps: int = 60) -> str:
    preset = presets.load("quadratic").with_overrides(steps=steps, hyperparameters={"lr": lr})
    run_headless(preset, record=str(path))
    return str(path)


def test_views_are_docks_and_the_layout_is_saved_per_preset(ws, qtbot, settings, tmp_path):
    ws.open_replay(_record(tmp_path / "a.h5", 0.1))
    docks = ws.area.docks
    assert len(docks) == len(ws.views) >= 2
    assert all(isinstance(d, QtWidgets.QDockWidget) and d.widget() in ws.views for d in docks)
    # Float one view (a second screen), close another; the layout is kept for next time.
    docks[0].setFloating(True)
    docks[1].close()
    ws.area.save_layout()
    assert settings.value(f"layout/{ws.area.key}") is not None
    ws.area.reset_layout()
    assert not docks[0].isFloating() and docks[1].isVisible()
    assert settings.value(f"layout/{ws.area.key}") is None


def test_two_recordings_overlay_aligned_by_step_each_named(ws, qtbot, tmp_path):
    a = _record(tmp_path / "slow.h5", 0.05)
    b = _record(tmp_path / "fast.h5", 0.15)
    ws.open_replay(a)
    rid = ws.add_replay(b)
    assert set(ws.sources) == {"", rid}
    view = next(v for v in ws.views if "train_loss" in v.streams)
    assert set(view.runs.values()) == {"slow", "fast"}
    s0, v0 = view.series_data("train_loss", run="")
    s1, v1 = view.series_data("train_loss", run=rid)
    assert np.array_equal(s0, s1) and len(s0) == 60, "aligned by step"
    assert v1[-1] < v0[-1], "the faster learning rate reaches a lower loss"
    # The timeline drives both: a seek moves both cursors.
    ws.seek(20)
    assert {p.step for p in ws.seekables().values()} == {20}
    assert len(view.series_data("train_loss", run=rid)[0]) == 21


def test_pace_holds_and_progress_shows_step_of_total(ws, qtbot):
    preset = presets.load("quadratic").with_overrides(steps=100_000)
    ws.open_preset(preset)
    ws.controls.record.setChecked(False)
    ws.controls.pace.setCurrentIndex(ws.controls.pace.findData(10.0))
    ws.start()
    run = ws.steerable()[0]
    qtbot.waitUntil(lambda: run.step >= 5, timeout=30_000)
    assert run.step < 40, "10 steps/s held"
    assert ws.controls.progress.maximum() == 100_000
    assert ws.controls.eta.text().startswith("ETA")
    ws.controls.pace.setCurrentIndex(ws.controls.pace.findData(0.0))  # full speed again
    qtbot.waitUntil(lambda: run.step > 1000, timeout=30_000)
    ws.stop()
    qtbot.waitUntil(lambda: run.state is RunState.STOPPED, timeout=20_000)


def test_unfocused_pace_box_ignores_the_wheel(ws, qtbot):
    from PySide6 import QtGui

    box = ws.controls.pace
    before = box.currentIndex()
    ev = QtGui.QWheelEvent(
        QtCore.QPointF(5, 5),
        QtCore.QPointF(5, 5),
        QtCore.QPoint(0, 0),
        QtCore.QPoint(0, -120),
        QtCore.Qt.MouseButton.NoButton,
        QtCore.Qt.KeyboardModifier.NoModifier,
        QtCore.Qt.ScrollPhase.NoScrollPhase,
        False,
    )
    QtWidgets.QApplication.sendEvent(box, ev)
    assert box.currentIndex() == before


def test_branch_from_the_replay_cursor_runs_live_over_its_ghost_parent(ws, qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("DYNLAB_RECORDINGS", str(tmp_path / "recs"))
    preset = presets.load("quadratic").with_overrides(steps=80)
    parent = str(tmp_path / "parent.h5")
    run_headless(preset, record=parent, run_kwargs={"checkpoint_every": 10})
    ws.open_replay(parent)
    ws.seek(29)
    branch = ws.branch_from_here({"lr": 0.02})
    assert branch is not None and branch.label == "branch @30: lr=0.02"
    qtbot.waitUntil(lambda: branch.state is RunState.FINISHED, timeout=30_000)
    qtbot.waitUntil(lambda: ws.last_values.get("branch1", {}).get("train_loss") is not None, timeout=5_000)
    view = next(v for v in ws.views if "train_loss" in v.streams)
    assert "" in view.ghosts and "branch1" not in view.ghosts
    steps, _ = view.series_data("train_loss", run="branch1")
    assert steps[0] == 30 and steps[-1] == 79
    assert any(e.kind == "branch" and e.step == 30 for e in view.events), "the branch point is marked"
    tree = ws.left_scroll.branches
    assert tree.isVisible() and tree.topLevelItem(0).child(0).text(1) == "30"
    import h5py

    with h5py.File(branch.recording, "r") as f:
        assert f.attrs["parent_recording"] == parent and int(f.attrs["parent_step"]) == 30
    with qtbot.waitSignal(ws.open_requested) as sig:
        tree.itemDoubleClicked.emit(tree.topLevelItem(0).child(0), 0)
    assert sig.args == [branch.recording]


def test_a_seek_after_a_branch_keeps_the_branch_curves(ws, qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("DYNLAB_RECORDINGS", str(tmp_path / "recs"))
    parent = str(tmp_path / "parent.h5")
    run_headless(
        presets.load("quadratic").with_overrides(steps=80), record=parent, run_kwargs={"checkpoint_every": 10}
    )
    ws.open_replay(parent)
    ws.seek(29)
    branch = ws.branch_from_here({"lr": 0.02})
    qtbot.waitUntil(lambda: branch.state is RunState.FINISHED, timeout=30_000)
    qtbot.waitUntil(lambda: ws.last_values.get("branch1", {}).get("train_loss") is not None, timeout=5_000)
    ws.seek(60)
    view = next(v for v in ws.views if "train_loss" in v.streams)
    steps, _ = view.series_data("train_loss", run="branch1")
    assert steps[0] == 30 and steps[-1] == 60, (
        "the branch is replayed from its own recording up to the cursor"
    )
    assert set(ws.seekables()) == {"", "branch1"}
