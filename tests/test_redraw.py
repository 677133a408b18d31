"""Drawing only what changed and is visible; the display rate that steps down when views fall behind."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from PySide6 import QtCore

from dynlab import presets
from dynlab.frames import Frame, Stream
from dynlab.ui.viewarea import DisplayPacer
from dynlab.ui.workspace import DISPLAY_HZ, Workspace
from dynlab.views import LinesView
from dynlab.viewspec import ViewSpec


@pytest.fixture
def ws(qtbot, tmp_path):
    settings = QtCore.QSettings(str(tmp_path / "s.ini"), QtCore.QSettings.Format.IniFormat)
    w = Workspace(host="thread", settings=settings)
    qtbot.addWidget(w)
    w.resize(1200, 800)
    w.show()
    w.controls.record.setChecked(False)
    yield w
    w.close_sources()


def _count_redraws(view) -> list[int]:
    """Count the view's redraws (wraps its ``_redraw``)."""
    calls = [0]
    inner = view._redraw

    def counted() -> None:
        calls[0] += 1
        inner()

    view._redraw = counted
    return calls


def _live(ws, qtbot, steps: int = 10**6) -> None:
    ws.open_preset(presets.load("quadratic").with_overrides(steps=steps), start=True)
    ws.controls.pace.setCurrentIndex(ws.controls.pace.findData(30.0))  # steady new rows
    qtbot.waitUntil(lambda: len(ws.views) >= 2 and ws.frames_seen > 5, timeout=30_000)


def test_a_closed_dock_is_not_redrawn_until_shown_again(ws, qtbot):
    _live(ws, qtbot)
    hidden, shown = ws.area.docks[0], ws.area.docks[1]
    hidden_calls, shown_calls = _count_redraws(hidden.widget()), _count_redraws(shown.widget())
    hidden.close()
    qtbot.waitUntil(lambda: shown_calls[0] >= 5, timeout=30_000)
    assert hidden_calls[0] == 0
    assert hidden.widget()._dirty, "its new rows wait for it"
    hidden.show()
    qtbot.waitUntil(lambda: hidden_calls[0] >= 1, timeout=10_000)


def test_a_dock_in_a_hidden_tab_is_not_redrawn(ws, qtbot):
    _live(ws, qtbot)
    front, back = ws.area.docks[0], ws.area.docks[1]
    ws.area.tabifyDockWidget(back, front)
    front.raise_()
    qtbot.waitUntil(lambda: not back.isVisible() or back.visibleRegion().isEmpty(), timeout=5_000)
    back_calls, front_calls = _count_redraws(back.widget()), _count_redraws(front.widget())
    qtbot.waitUntil(lambda: front_calls[0] >= 5, timeout=30_000)
    assert back_calls[0] == 0
    back.raise_()
    qtbot.waitUntil(lambda: back_calls[0] >= 1, timeout=10_000)


def test_a_view_without_new_rows_is_not_redrawn(ws, qtbot):
    _live(ws, qtbot, steps=30)
    run = ws.steerable()[0]
    qtbot.waitUntil(lambda: run.state.ended and ws.frames_seen >= 30, timeout=30_000)
    ticks = ws.ticks
    qtbot.waitUntil(lambda: ws.ticks >= ticks + 2, timeout=10_000)  # the last rows are drawn
    calls = [_count_redraws(v) for v in ws.views]
    ticks = ws.ticks
    qtbot.waitUntil(lambda: ws.ticks >= ticks + 5, timeout=10_000)
    assert [c[0] for c in calls] == [0] * len(calls)


def test_the_display_rate_steps_down_when_frames_cost_too_much_and_back_up(qtbot):
    timer = QtCore.QTimer()
    pacer = DisplayPacer(timer, DISPLAY_HZ)
    assert pacer.hz == DISPLAY_HZ and not pacer.behind and pacer.note() == ""
    now = 0.0
    for _ in range(20):  # frames of 40 ms cannot be drawn 30 times a second
        now += 0.05
        pacer.observe(0.040, now)
    assert pacer.behind and pacer.hz <= 15
    assert timer.interval() == int(1000 / pacer.hz)
    assert "Hz" in pacer.note() and "behind" in pacer.note()
    for _ in range(200):  # cheap frames again: back to the full rate, one step a second at most
        now += 0.05
        pacer.observe(0.002, now)
    assert pacer.hz == DISPLAY_HZ and not pacer.behind
    assert timer.interval() == int(1000 / DISPLAY_HZ)


def test_the_status_bar_shows_the_probe_share_under_a_budget(ws, qtbot):
    small = {"p": 23, "width": 64}
    preset = presets.load("grokking-modular").with_overrides(steps=400, device="cpu", hyperparameters=small)
    texts: list[str] = []
    ws.status.connect(texts.append)
    ws.open_preset(replace(preset, probe_budget=0.2), start=True)
    qtbot.waitUntil(lambda: any("% of training" in t for t in texts), timeout=60_000)
    ws.stop()


def test_a_tick_redraws_no_more_views_than_their_cost_fits_and_takes_turns(ws, qtbot):
    _live(ws, qtbot)
    ws.timer.stop()  # drive the ticks' redraw by hand
    views = ws.area.views
    calls = [_count_redraws(v) for v in views]
    for v in views:
        v._dirty = True
    # At 10 ms a view and a 12 ms budget, one view a tick, each in turn.
    drawn = [ws.area.refresh_within_budget(0.012, per_view_s=0.010) for _ in range(len(views))]
    assert drawn == [1] * len(views)
    assert [c[0] for c in calls] == [1] * len(views)
    for v in views:
        v._dirty = True
    assert ws.area.refresh_within_budget(10.0, per_view_s=0.001) == len(views)  # cheap: all at once


def test_the_axes_follow_the_data_in_steps_and_stop_when_the_user_pans(qtbot):
    v = LinesView(ViewSpec("loss", ("loss",)), {"loss": Stream("loss", "scalar")})
    qtbot.addWidget(v)
    v.resize(600, 400)
    v.show()
    vb = v.item.getViewBox()
    v.push([Frame.make(i, {"loss": 1.0 + 0.001 * i}) for i in range(1000)])
    v.refresh()
    QtCore.QCoreApplication.processEvents()  # the first layout of the shown widget settles
    fitted = vb.viewRange()
    assert fitted[0][0] <= 0 and fitted[0][1] >= 999, "the data fits"
    moves = []
    vb.sigRangeChanged.connect(lambda *_: moves.append(1))
    for i in range(1000, 1050):  # inside the headroom: the axes (and their tick pictures) stay
        v.push([Frame.make(i, {"loss": 1.0 + 0.001 * i})])
        v.refresh()
        QtCore.QCoreApplication.processEvents()
    assert moves == [] and np.allclose(vb.viewRange(), fitted)
    v.push([Frame.make(5000, {"loss": 9.0})])  # leaves the range: refitted once
    v.refresh()
    assert len(moves) >= 1 and vb.viewRange()[0][1] >= 5000 and vb.viewRange()[1][1] >= 9.0
    # A pan by the user (pyqtgraph reports it as a manual change): the axes stay where put.
    vb.sigRangeChangedManually.emit([True, True])
    vb.setRange(xRange=(100, 200), yRange=(0, 2), padding=0)
    v.push([Frame.make(9000, {"loss": 50.0})])
    v.refresh()
    (x0, x1), (y0, y1) = vb.viewRange()
    assert (round(x0), round(x1), round(y0), round(y1)) == (100, 200, 0, 2)
