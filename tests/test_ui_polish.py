"""Polish of the views: nothing clipped, presentation mode scales every text, the seed band,
the sorted neuron spectrum, one reference line per run.

Geometry probes reason about where text must lie (an event label's rectangle inside the
view box, a colour bar's label inside the widget) rather than comparing golden images.
"""

from __future__ import annotations

import os
import re

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("pytestqt")
import pyqtgraph as pg  # noqa: E402
from PySide6 import QtCore, QtGui, QtWidgets  # noqa: E402

from dynlab.frames import Event, Frame, Stream  # noqa: E402
from dynlab.presets import PresetError, ViewSpec, load, parse  # noqa: E402
from dynlab.views import make_view, style, textfit  # noqa: E402
from dynlab.views.heatmap import argmax_order  # noqa: E402
from dynlab.views.seedband import seed_band  # noqa: E402

pytestmark = [
    pytest.mark.qt_log_level_fail("WARNING"),
    # The offscreen platform warns on every show() and on raising a floated dock.
    pytest.mark.qt_log_ignore("propagateSizeHints", "does not support raise"),
]

LOSS = Stream("loss", "scalar", units="nats")
THR = Stream("threshold", "scalar")
NORMS = Stream("norms", "vector", shape=(2,), labels=("sgd", "adam"))


def show(qtbot, view, w: int = 640, h: int = 420):
    qtbot.addWidget(view)
    view.resize(w, h)
    view.show()
    view.refresh()
    QtCore.QCoreApplication.processEvents()
    return view


# ------------------------------------------------------------------------------ seed band
def test_seed_band_is_mean_and_sample_sd_over_the_steps_all_runs_have():
    band = seed_band(
        [np.array([0, 1, 2, 3]), np.array([0, 1, 2]), np.array([1, 2, 3])],
        [np.array([1.0, 2.0, 3.0, 4.0]), np.array([3.0, 4.0, 5.0]), np.array([6.0, 9.0, 12.0])],
    )
    assert band.steps.tolist() == [1, 2]  # step 0 and 3 are missing from one run each
    assert band.mean == pytest.approx([(2 + 4 + 6) / 3, (3 + 5 + 9) / 3])
    assert band.sd == pytest.approx([np.std([2, 4, 6], ddof=1), np.std([3, 5, 9], ddof=1)])
    assert band.lowest.tolist() == [2.0, 3.0]
    with pytest.raises(ValueError, match="at least 2 runs"):
        seed_band([np.arange(3)], [np.ones(3)])


def test_three_seeds_draw_a_band_with_the_right_mean_and_sd(qtbot):
    v = show(qtbot, make_view(ViewSpec("Loss", ("loss", "norms")), {"loss": LOSS, "norms": NORMS}))
    runs = {"": 1.0, "seed1": 2.0, "seed2": 6.0}
    for run, scale in runs.items():
        v.add_run(run, f"seed {run[4:] or 0}")
        # seed2 starts later: the band covers only the steps all three have.
        steps = range(0 if run != "seed2" else 2, 6)
        v.push(
            [Frame.make(s, {"loss": scale * s, "norms": np.array([scale, -scale])}) for s in steps], run=run
        )
    v.refresh()
    assert v.band_data("loss") is None and not v.band_button.isVisible()  # no seeds declared: no band
    v.set_seed_runs(list(runs))
    v.refresh()
    assert v.band_button.isVisible() and v.band_button.isChecked()
    steps, mean, sd = v.band_data("loss")
    assert steps.tolist() == [2, 3, 4, 5]
    assert mean == pytest.approx(3.0 * steps)
    assert sd == pytest.approx(np.std([1.0, 2.0, 6.0], ddof=1) * steps)
    _, mean_adam, _ = v.band_data("norms", 1)
    assert mean_adam == pytest.approx(np.full(4, -3.0))
    names = [label.text for _, label in v.legend.items]
    assert names == ["loss", "norms: sgd", "norms: adam", "mean ± s.d. over 3 seeds"]
    assert not any("[seed" in n for n in names)  # the single seeds leave the legend to the band
    fill = [it for it in v.item.items if isinstance(it, pg.FillBetweenItem)]
    assert len(fill) == 3 and not fill[0].path().isEmpty()
    # The toggle: off draws the runs again, with their legend entries.
    v.band_button.click()
    assert not v.band_button.isChecked() and v.band_data("loss") is None
    assert not [it for it in v.item.items if isinstance(it, pg.FillBetweenItem)]
    # 3 runs x 3 series: the legend names each series once (colour) and each run once (dash).
    assert [label.text for _, label in v.legend.items] == [
        "loss",
        "norms: sgd",
        "norms: adam",
        "seed 0",
        "seed 1",
        "seed 2",
    ]
    v.band_button.click()
    assert v.band_data("loss") is not None
    # New rows move the band.
    for run, scale in runs.items():
        v.push([Frame.make(6, {"loss": scale * 6, "norms": np.array([scale, -scale])})], run=run)
    v.refresh()
    assert v.band_data("loss")[0][-1] == 6


def test_each_run_gets_its_own_reference_line(qtbot):
    v = show(
        qtbot, make_view(ViewSpec("L", ("loss",), reference="threshold"), {"loss": LOSS, "threshold": THR})
    )
    for run in ("", "seed1", "seed2"):
        v.add_run(run, run or "seed 0")
        v.push([Frame.make(s, {"loss": 1.0, "threshold": 2.0}) for s in range(3)], run=run)
    v.refresh()
    refs = [v._series[(run, "threshold")].raw[0] for run in ("", "seed1", "seed2")]
    pens = {(r.opts["pen"].color().name(), r.opts["pen"].style()) for r in refs}
    assert len(pens) == 3
    names = [label.text for _, label in v.legend.items if "reference" in label.text]
    assert len(names) == 3 and len(set(names)) == 3


# ------------------------------------------------------------------------ sorted heatmap
def test_argmax_order_groups_columns_by_their_peak_row():
    mat = np.array(
        [
            [0.1, 0.7, 0.0, np.nan, 0.2],
            [0.8, 0.2, 0.1, np.nan, 0.7],
            [0.1, 0.1, 0.9, np.nan, 0.1],
        ]
    )
    assert argmax_order(mat).tolist() == [1, 0, 4, 2, 3]  # ties keep order, all-NaN last


def test_heatmap_sorted_by_argmax_moves_labels_with_their_columns(qtbot):
    s = Stream("power", "heatmap", shape=(3, 4), rows=("k1", "k2", "k3"), cols=("n0", "n1", "n2", "n3"))
    v = show(qtbot, make_view(ViewSpec("P", ("power",), kind="heatmap", sort_cols="argmax"), {"power": s}))
    mat = np.array([[0.1, 0.0, 0.9, 0.2], [0.8, 0.1, 0.0, 0.1], [0.1, 0.9, 0.1, 0.7]])
    v.push([Frame.make(10, {"power": mat})])
    v.refresh()
    assert v.col_labels == ("n2", "n0", "n1", "n3")
    assert v.data[:, 0].tolist() == mat[:, 2].tolist()
    assert v.value_at(2, 3) == "k3, n3 = 0.7"
    assert "maximum" in v.item.getAxis("bottom").labelText
    with pytest.raises(ValueError, match="sort_cols"):
        make_view(ViewSpec("P", ("power",), kind="heatmap", sort_cols="alphabetical"), {"power": s})


def test_sort_cols_is_a_preset_key_checked_like_kind():
    text = """
format_version = 1
engine = "quadratic"
title = "t"
summary = "s"
paper = "p"
[[views]]
streams = ["loss"]
sort_cols = "{value}"
"""
    assert (
        parse(text.replace("{value}", "argmax"), name="t", check_engine=False).views[0].sort_cols == "argmax"
    )
    with pytest.raises(PresetError, match=r"views\[0\]\.sort_cols: expected one of argmax"):
        parse(text.replace("{value}", "random"), name="t", check_engine=False)


def test_grokking_preset_sorts_its_neuron_spectrum_and_says_so():
    preset = load("grokking-modular", check_engine=False)
    view = next(v for v in preset.views if v.streams == ("fourier_power",))
    assert view.sort_cols == "argmax"
    assert "dominant frequency" in view.caption


# ------------------------------------------------------------------------------ clipping
def _settle(view) -> None:
    view.grab()  # a paint: pyqtgraph sizes text items there
    view.refresh()
    view.place_event_labels()
    QtCore.QCoreApplication.processEvents()


def test_event_labels_stay_inside_the_plot_and_off_the_legend(qtbot):
    v = show(qtbot, make_view(ViewSpec("N", ("norms",)), {"norms": NORMS}))
    # Data low on the right: the legend stays in the top-right corner, where labels go.
    v.push([Frame.make(s, {"norms": np.array([1.0 - s / 100, 0.5])}) for s in range(101)])
    v.add_event(Event(99, "set", {"name": "learning_rate", "old": 0.1, "new": 0.05}))
    v.add_event(Event(60, "set", {"name": "momentum", "old": 0.9, "new": 0.5}))
    v.add_event(Event(2, "phase", {"name": "warm-up over"}))
    _settle(v)
    box = v.item.getViewBox().sceneBoundingRect()
    legend = v.legend.sceneBoundingRect()
    assert v.legend.isVisible() and legend.right() > box.center().x()  # top right, as planned
    for line in v._event_lines:
        rect = line.label.sceneBoundingRect()
        assert box.contains(rect), (line.label.toPlainText(), rect, box)
        assert not rect.intersects(legend), line.label.toPlainText()
    # The label at step 99 had no room on the right of its line: it is drawn on the left.
    last = v._event_lines[0].label
    assert last.sceneBoundingRect().right() <= last.line.mapToScene(QtCore.QPointF(0, 0)).x() + 1


def test_a_tall_legend_takes_more_columns_and_a_long_axis_label_is_elided(qtbot):
    five = Stream("w", "vector", shape=(5,), labels=("sgd", "sgdm", "sgdp", "adam", "adamp"), units="1/norm²")
    v = show(qtbot, make_view(ViewSpec("Effective step size", ("w",)), {"w": five}), w=640, h=230)
    v.push([Frame.make(s, {"w": np.arange(5.0) + s / 10}) for s in range(50)])
    _settle(v)
    box = v.item.getViewBox().sceneBoundingRect()
    assert v.legend.columnCount >= 2
    assert v.legend.sceneBoundingRect().height() <= textfit.LEGEND_MAX_HEIGHT * box.height() + 1
    # The y label "w [1/norm²]" fits; a long one is elided to the axis' length, and restored.
    axis = v.item.getAxis("left")
    v.item.setLabel("left", "effective_step_size_of_the_first_layer [1/norm²]")
    v.resize(640, 231)
    _settle(v)
    box = v.item.getViewBox().sceneBoundingRect()
    assert axis.labelText.endswith("…") and axis.label.boundingRect().width() <= box.height()
    v.resize(640, 900)
    _settle(v)
    assert axis.labelText == "effective_step_size_of_the_first_layer [1/norm²]"


# ------------------------------------------------------------------------- presentation
def _sizes(win) -> dict[str, float]:
    """Point sizes of one text of each kind in the window."""
    view = next(v for v in win.workspace.views if v.reference)  # a line view with a reference
    view.caption.ensurePolished()
    event = view._event_lines[0].label
    header = win.workspace.header.text()
    legend_size = view.legend.items[0][1].opts["size"]
    return {
        "caption": view.caption.font().pointSizeF(),
        "title": float(view.item.titleLabel.opts["size"][:-2]),
        "legend": float(legend_size[:-2]),
        "event label": event.textItem.font().pointSizeF(),
        "axis label": float(view.item.getAxis("left").labelStyle["font-size"][:-2]),
        "ticks": view.item.getAxis("bottom").style["tickFont"].pointSizeF(),
        "tool button": float(view.csv_button.styleSheet().split("font-size: ")[1].split("pt")[0]),
        "header": float(re.search(r"font-size:\s*([0-9.]+)pt", header).group(1)),
        "dock title": win.workspace.area.docks[0].font().pointSizeF(),
        "side panel hint": float(
            re.search(r"font-size:\s*([0-9.]+)pt", win.workspace.params.hint.styleSheet()).group(1)
        ),
        "app": QtWidgets.QApplication.font().pointSizeF(),
    }


def test_presentation_mode_scales_every_text_and_back(qtbot, tmp_path, monkeypatch):
    from dynlab.runner import run_headless
    from dynlab.ui.main_window import MainWindow

    monkeypatch.setenv("DYNLAB_RECORDINGS", str(tmp_path))
    rec = str(tmp_path / "q.h5")
    run_headless(load("quadratic").with_overrides(steps=30), record=rec)
    settings = QtCore.QSettings(str(tmp_path / "s.ini"), QtCore.QSettings.Format.IniFormat)
    win = MainWindow(host="thread", settings=settings)
    qtbot.addWidget(win)
    win.show()
    try:
        assert win.open_replay(rec)
        for v in win.workspace.views:
            v.add_event(Event(12, "set", {"name": "lr", "old": 0.1, "new": 0.25}))
        before = _sizes(win)
        win.toggle_presentation()
        during = _sizes(win)
        for key, size in before.items():
            assert during[key] == pytest.approx(1.5 * size, rel=0.02), key
        # A view made while presenting (another recording opened) starts large.
        win.open_replay(rec)
        for v in win.workspace.views:
            v.add_event(Event(12, "set", {"name": "lr", "old": 0.1, "new": 0.25}))
        assert _sizes(win)["caption"] == pytest.approx(during["caption"])
        win.toggle_presentation()
        after = _sizes(win)
        for key, size in before.items():
            assert after[key] == pytest.approx(size, rel=0.02), key
        # View → Reset layout brings a floated view back into the window.
        dock = win.workspace.area.docks[0]
        dock.setFloating(True)
        reset = next(
            a for m in win.menuBar().actions() for a in m.menu().actions() if "Reset layout" in a.text()
        )
        reset.trigger()
        assert not dock.isFloating()
    finally:
        if win.presenting:
            win.toggle_presentation()
        win.workspace.close_sources()


def test_heatmap_colour_bar_label_and_cell_labels_fit_at_the_default_size(qtbot):
    k, n = 49, 64  # the grokking spectrum: frequency x neuron
    s = Stream(
        "power",
        "heatmap",
        shape=(k, n),
        rows=tuple(f"k={i}" for i in range(k)),
        cols=tuple(f"n{j}" for j in range(n)),
    )
    title = "Each neuron's spectrum (first 64 neurons, columns sum to 1)"
    v = show(qtbot, make_view(ViewSpec(title, ("power",), kind="heatmap"), {"power": s}), w=590, h=300)
    m = np.random.default_rng(0).random((k, n)) * 0.04
    v.push([Frame.make(1490, {"power": m})])
    _settle(v)
    QtCore.QCoreApplication.processEvents()
    # The long title with its step no longer widens the plot past the widget...
    assert v.item.geometry().width() <= v.plot.viewport().width() + 0.5
    assert "step 1490" in v.item.titleLabel.text
    # ... so the colour bar's label and tick labels lie inside it.
    axis = v.colourbar.getAxis("right")
    label = axis.label.sceneBoundingRect().adjusted(4, 4, -4, -4)  # less the text's document margin
    assert axis.label.isVisible() and v.plot.sceneRect().contains(label), (label, v.plot.sceneRect())
    assert axis.geometry().width() >= axis.textWidth + axis.label.boundingRect().height()
    # Cell labels thinned to what fits: no two row labels closer than a line, nor columns than a label.
    vb = v.item.getViewBox()
    rows = v.item.getAxis("left")._tickLevels[0]
    cols = v.item.getAxis("bottom")._tickLevels[0]
    metrics = QtGui.QFontMetricsF(style.font(style.TEXT_PT))
    assert 2 <= len(rows) and (rows[1][0] - rows[0][0]) * vb.height() / k >= metrics.height()
    widest = max(metrics.horizontalAdvance(t) for _, t in cols)
    assert 2 <= len(cols) and (cols[1][0] - cols[0][0]) * vb.width() / n >= widest


def test_waterfall_reference_badge_is_inside_and_not_crossed_by_the_cursor(qtbot):
    spectrum = Stream("spectrum", "histogram")
    streams = {"spectrum": spectrum, "thr": THR}
    view = ViewSpec("Spectrum over time", ("spectrum",), kind="waterfall", reference="threshold")
    v = show(qtbot, make_view(view, {**streams, "threshold": THR}), w=600, h=360)
    edges = np.linspace(0.0, 10.0, 21)
    for s in range(0, 3001, 100):
        w = np.exp(-((edges[:-1] - min(s / 300, 9.5)) ** 2))
        v.push([Frame.make(s, {"spectrum": np.stack([edges[:-1], edges[1:], w]), "threshold": 10.0})])
    v.add_event(Event(2900, "set", {"name": "lr", "old": 0.2, "new": 0.19}))
    v.set_cursor(3000)  # a replay at its last step: the cursor sits where the reference line ends
    _settle(v)
    badge = v._ref_text.sceneBoundingRect()
    box = v.item.getViewBox().sceneBoundingRect()
    assert "threshold = 10" in v._ref_text.toPlainText()
    assert box.contains(badge), (badge, box)
    for line in (v._cursor_line, *v._event_lines):
        x = line.mapToScene(QtCore.QPointF(0, 0)).x()
        assert not badge.left() <= x <= badge.right(), (x, badge)


def test_point_labels_start_past_their_marker():
    from dynlab.views.points import SIZE_SIMPLEX, label_beside_marker

    text = label_beside_marker("class 3", SIZE_SIMPLEX, 9.0)
    pad = len(text) - len("class 3")
    space_px = 0.3 * 9.0 * 96 / 72
    assert text.endswith("class 3") and pad * space_px >= SIZE_SIMPLEX / 2  # clear of the disc
    assert (pad - 1) * space_px < SIZE_SIMPLEX / 2 + 3  # and no further than needed


GL_TEXT = r"""
import json
import numpy as np
from PySide6 import QtWidgets
app = QtWidgets.QApplication([])
from dynlab.frames import Frame, Stream
from dynlab.presets import ViewSpec
from dynlab.views import make_view
s = Stream("geom", "points", shape=(3, 3), labels=("a", "b", "c"), groups=("etf",) * 3)
v = make_view(ViewSpec("Geometry", ("geom",)), {"geom": s})
v.resize(500, 400); v.show()
v.push([Frame.make(3, {"geom": np.eye(3)})])
v.refresh()
before = v._text3d.font_size if v.mode == "vispy" else None
v.set_text_scale(1.5)
after = v._text3d.font_size if v.mode == "vispy" else None
texts = list(v._text3d.text) if v.mode == "vispy" else []
print(json.dumps({"mode": v.mode, "before": before, "after": after, "texts": texts,
                  "title": v.title_label.styleSheet(), "legend": v.legend_label.styleSheet()}))
"""


@pytest.mark.gl
@pytest.mark.slow
def test_3d_labels_scale_with_presentation_and_sit_beside_markers(tmp_path):
    import json
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "QT_QPA_PLATFORM": "xcb"}
    if os.environ.get("DISPLAY"):
        cmd = [sys.executable, "-c", GL_TEXT]
    elif shutil.which("xvfb-run"):
        cmd = ["xvfb-run", "-a", sys.executable, "-c", GL_TEXT]
    else:
        pytest.skip("no X display and no xvfb-run")
    out = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["mode"] != "vispy":
        pytest.skip(f"no OpenGL on this X server ({result})")
    assert result["after"] == pytest.approx(1.5 * result["before"])
    assert [t.strip() for t in result["texts"]] == ["a", "b", "c"]
    assert all(t.startswith("   ") for t in result["texts"])  # past the 22-pixel ETF marker
    assert "13.5pt" in result["legend"] and "15.0pt" in result["title"]


def test_plus_seed_runs_are_banded_in_the_workspace(qtbot, tmp_path, monkeypatch):
    from dynlab.ui.workspace import Workspace

    monkeypatch.setenv("DYNLAB_RECORDINGS", str(tmp_path))
    settings = QtCore.QSettings(str(tmp_path / "s.ini"), QtCore.QSettings.Format.IniFormat)
    ws = Workspace(host="thread", settings=settings)
    qtbot.addWidget(ws)
    ws.resize(1200, 800)
    ws.show()
    try:
        ws.controls.record.setChecked(False)
        ws.open_preset(load("quadratic").with_overrides(steps=40), start=True)
        qtbot.waitUntil(lambda: bool(ws.views), timeout=30_000)
        view = next(v for v in ws.views if "train_loss" in v.stream_names)
        assert view.seed_runs == () and not view.band_shown()  # one run: no band
        ws.add_seed()
        ws.add_seed()
        qtbot.waitUntil(lambda: all(s.state.ended for s in ws.sources.values()), timeout=60_000)
        ws._tick()
        view.refresh()
        assert set(view.seed_runs) == set(ws.sources) and len(ws.sources) == 3
        assert view.band_shown() and view.band_button.isChecked()
        steps, mean, sd = view.band_data("train_loss")
        runs = [view.series_data("train_loss", run=r)[1][:, 0] for r in view.seed_runs]
        n = min(len(r) for r in runs)
        assert len(steps) == n and mean == pytest.approx(np.mean([r[:n] for r in runs], axis=0))
        assert sd.max() > 0  # the seeds start from different weights
    finally:
        ws.close_sources()
