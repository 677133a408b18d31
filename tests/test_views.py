"""Views: each renders its stream kind, and the StreamView API the shell relies on works.

Pixel probes reason about where data must appear (a line of a known colour where the
data lies, the brightest heatmap cell where the maximum is) instead of golden images.
Runs on the offscreen Qt platform; the vispy (OpenGL) path runs in a child process on
the xcb platform under Xvfb (``gl`` marker).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("pytestqt")
import pyqtgraph as pg  # noqa: E402
from PySide6 import QtCore, QtGui, QtWidgets  # noqa: E402

from dynlab.frames import Event, Frame, Stream  # noqa: E402
from dynlab.presets import ViewSpec  # noqa: E402
from dynlab.views import (  # noqa: E402
    VIEW_FOR_KIND,
    make_view,
    style,  # noqa: E402
    view_kind,
)
from dynlab.views.buffers import SeriesBuffer, Snapshots  # noqa: E402
from dynlab.views.histogram import rebin  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.qt_log_level_fail("WARNING"),
    # The offscreen platform warns on every show(); it says nothing about our code.
    pytest.mark.qt_log_ignore("propagateSizeHints"),
]

STREAMS = {
    s.name: s
    for s in (
        Stream(
            "train_loss",
            "scalar",
            units="nats",
            description="Cross-entropy on the batch.",
            theory="Falls, then plateaus at the edge of stability.",
        ),
        Stream("threshold", "scalar", description="2 / lr"),
        Stream("norms", "vector", shape=(3,), labels=("sgd", "sgdp", "adamp")),
        Stream("spectrum", "histogram", description="Hessian spectrum"),
        Stream("err", "heatmap", shape=(3, 4), rows=("l1", "l2", "l3"), cols=("e", "r90", "r180", "r270")),
        Stream(
            "geom",
            "points",
            labels=("c0", "c1", "c2", "w0", "w1", "w2"),
            groups=("etf",) * 3 + ("classifier",) * 3,
        ),
    )
}
BLUE = QtGui.QColor(style.colour(0))


def show(qtbot, view, w: int = 640, h: int = 420):
    qtbot.addWidget(view)
    view.resize(w, h)
    view.show()
    view.refresh()
    QtCore.QCoreApplication.processEvents()
    return view


def image_of(widget) -> np.ndarray:
    """The widget as an ``(H, W, 3)`` uint8 RGB array."""
    img = widget.grab().toImage().convertToFormat(QtGui.QImage.Format.Format_RGB888)
    w, h = img.width(), img.height()
    arr = np.frombuffer(img.constBits(), dtype=np.uint8, count=img.bytesPerLine() * h)
    return arr.reshape(h, img.bytesPerLine())[:, : 3 * w].reshape(h, w, 3).copy()


def near(img: np.ndarray, colour: QtGui.QColor, tol: int = 40) -> np.ndarray:
    target = np.array([colour.red(), colour.green(), colour.blue()])
    return np.abs(img.astype(int) - target).sum(axis=2) < tol


def scene_x(view, x: float) -> float:
    """Pixel column (in ``view.plot``) of data coordinate ``x``."""
    p = view.item.getViewBox().mapViewToScene(QtCore.QPointF(x, 0))
    return view.plot.mapFromScene(p).x()


def frames(name: str, steps, values) -> list[Frame]:
    return [Frame.make(s, {name: v}) for s, v in zip(steps, values)]


# ---------------------------------------------------------------------------- registry
def test_registry_picks_view_from_kind_or_first_stream(qtbot):
    assert view_kind(ViewSpec("a", ("train_loss",)), STREAMS) == "lines"
    assert view_kind(ViewSpec("a", ("norms",)), STREAMS) == "lines"
    assert view_kind(ViewSpec("a", ("spectrum",)), STREAMS) == "histogram"
    assert view_kind(ViewSpec("a", ("err",)), STREAMS) == "heatmap"
    assert view_kind(ViewSpec("a", ("geom",)), STREAMS) == "points"
    assert view_kind(ViewSpec("a", ("spectrum",), kind="waterfall"), STREAMS) == "waterfall"
    for kind, cls in VIEW_FOR_KIND.items():
        stream = {
            "lines": "train_loss",
            "histogram": "spectrum",
            "waterfall": "spectrum",
            "heatmap": "err",
            "vector-heatmap": "norms",
            "points": "geom",
        }[kind]
        v = make_view(ViewSpec("t", (stream,), kind=kind), STREAMS)
        qtbot.addWidget(v)
        assert type(v) is cls
    with pytest.raises(ValueError, match="unknown view kind"):
        view_kind(ViewSpec("a", ("train_loss",), kind="pie"), STREAMS)


def test_every_view_kind_has_a_view_and_every_view_a_kind(monkeypatch):
    from dynlab.frames import STREAM_KINDS
    from dynlab.views import DEFAULT_VIEW_FOR_STREAM, check_registry
    from dynlab.viewspec import VIEW_KINDS

    assert set(VIEW_FOR_KIND) == set(VIEW_KINDS)
    assert set(DEFAULT_VIEW_FOR_STREAM) == set(STREAM_KINDS)
    assert set(DEFAULT_VIEW_FOR_STREAM.values()) <= set(VIEW_KINDS)
    check_registry()
    monkeypatch.setattr("dynlab.views.VIEW_KINDS", (*VIEW_KINDS, "radar"))
    with pytest.raises(RuntimeError, match=r"no view for \['radar'\]"):
        check_registry()
    monkeypatch.setattr("dynlab.views.VIEW_KINDS", tuple(k for k in VIEW_KINDS if k != "points"))
    with pytest.raises(RuntimeError, match=r"no kind for \['points'\]"):
        check_registry()


def test_points_get_the_2d_class_unless_3d_is_declared_and_gl_works(qtbot, monkeypatch):
    from dynlab.views import PointsView2D, PointsView3D

    flat = Stream("m", "points", shape=(3, 2))
    solid = Stream("c", "points", shape=(4, 3))
    v = make_view(ViewSpec("M", ("m",)), {"m": flat})
    qtbot.addWidget(v)
    assert type(v) is PointsView2D
    if QtGui.QGuiApplication.platformName() == "offscreen":
        v = make_view(ViewSpec("C", ("c",)), {"c": solid})
        qtbot.addWidget(v)
        assert type(v) is PointsView2D and "OpenGL unavailable" in v.projection_note

    # With OpenGL said to work but the canvas failing, the registry falls back to 2-D and says why.
    def broken_canvas(self):
        raise RuntimeError("no GL context")

    monkeypatch.setattr("dynlab.views.gl_available", lambda: True)
    monkeypatch.setattr(PointsView3D, "_make_canvas", broken_canvas)
    parent = QtWidgets.QWidget()
    qtbot.addWidget(parent)
    v = make_view(ViewSpec("C", ("c",)), {"c": solid}, parent)
    assert type(v) is PointsView2D and v.parent() is parent
    assert "3-D view unavailable (RuntimeError)" in v.projection_note
    assert parent.findChildren(PointsView3D) == []  # the half-built 3-D view did not stay behind
    v.push([Frame.make(0, {"c": np.eye(4, 3)})])
    v.refresh()
    assert v.note.text() == v.projection_note and not v.note.isHidden()


def test_caption_and_tooltip_carry_description_and_theory(qtbot):
    v = make_view(ViewSpec("Loss", ("train_loss", "nope"), caption="Watch the plateau."), STREAMS)
    qtbot.addWidget(v)
    tip = v.toolTip()
    assert "Cross-entropy on the batch." in tip and "edge of stability" in tip and "Watch the plateau." in tip
    assert "Watch the plateau." in v.caption.text()
    assert "nope" in v.caption.text()  # a stream the engine does not emit is reported, not fatal


def test_views_never_import_torch_or_engine_base():
    code = "import sys, dynlab.views; bad = [m for m in ('torch', 'dynlab.engines.base') if m in sys.modules]; print(bad)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "QT_QPA_PLATFORM": "offscreen"},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- buffers
def test_series_buffer_grows_and_decimates_old_history_keeping_spikes():
    buf = SeriesBuffer(1, cap=64)
    for i in range(1000):
        buf.append(i, 100.0 if i == 137 else 0.0)
    assert buf.n <= 64 and buf.decimated > 0
    assert buf.values.max() == 100.0  # the spike survives min/max decimation
    assert np.all(np.diff(buf.steps) > 0) and buf.steps[-1] == 999
    assert np.array_equal(buf.steps[-20:], np.arange(980, 1000))  # recent history at full resolution


def test_series_buffer_extend_matches_appends_including_ema():
    x = np.random.default_rng(0).normal(size=(3000, 2))
    x[100, 0] = np.nan
    a, b = SeriesBuffer(2, ema_weight=0.9), SeriesBuffer(2, ema_weight=0.9)
    for i, row in enumerate(x):
        a.append(i, row)
    b.extend(np.arange(1000), x[:1000])
    b.extend(np.arange(1000, 3000), x[1000:])
    assert np.array_equal(a.steps, b.steps)
    np.testing.assert_allclose(a.ema, b.ema, atol=1e-12)
    assert np.isfinite(a.ema).all()  # a NaN sample does not poison the average
    assert np.std(np.diff(a.ema[:, 1])) < 0.5 * np.std(np.diff(x[:, 1]))


def test_snapshots_at_or_before():
    s = Snapshots()
    for t in (0, 10, 20):
        s.append(t, np.array([t]))
    assert s.at(None)[0] == 20
    assert s.at(15)[0] == 10
    assert s.at(-1) is None
    s.append(10, np.array([99]))  # replaced, not duplicated
    assert len(s) == 3 and s.at(10)[1][0] == 99


# ------------------------------------------------------------------------------- lines
def test_one_snapshot_store_serves_every_per_step_view(qtbot):
    from dynlab.views import HeatmapView, HistogramView, PointsView2D, WaterfallView
    from dynlab.views.buffers import SnapshotStore, SnapshotViewMixin

    store = SnapshotStore()
    store.append("", "err", 5, np.ones((3, 4)))
    store.append("b", "err", 2, np.zeros((3, 4)))
    store.append("", "err", 9, 2 * np.ones((3, 4)))
    assert store.at("", "err", 7)[0] == 5 and store.at("", "err", None)[0] == 9
    assert store.at("", "err", 1) is None and store.at("", "nope", None) is None
    assert [k for k, _ in store.items()] == [("", "err"), ("b", "err")]
    assert len(store.get("", "err")) == 2
    store.clear()
    assert store.get("", "err") is None
    for cls in (HeatmapView, HistogramView, WaterfallView, PointsView2D):
        assert issubclass(cls, SnapshotViewMixin)
        assert "_append" not in cls.__dict__  # no private copy of the store's bookkeeping
    v = show(qtbot, make_view(ViewSpec("E", ("err",)), STREAMS))
    v.push(frames("err", [1, 4], [np.ones((3, 4)), 2 * np.ones((3, 4))]))
    assert isinstance(v.snaps, SnapshotStore) and len(v.snaps.get("", "err")) == 2
    v.clear()
    assert v.snaps.get("", "err") is None


def test_lines_draw_where_the_data_lies(qtbot):
    v = make_view(ViewSpec("Loss", ("train_loss",)), STREAMS)
    v.push(frames("train_loss", range(100, 201), np.linspace(1, 2, 101)))
    show(qtbot, v)
    v.item.setXRange(0, 200, padding=0)
    QtCore.QCoreApplication.processEvents()
    img = image_of(v.plot)
    blue = near(img, BLUE)
    x_left, x_mid, x_right = scene_x(v, 10), scene_x(v, 90), scene_x(v, 190)
    cols = np.nonzero(blue.any(axis=0))[0]
    assert cols.size > 0
    # The legend's sample line is blue too; look only between the axes, left of the legend.
    assert not blue[:, int(x_left) : int(x_mid)].any()
    assert blue[:, int(x_mid) + 15 : int(x_right)].any()


def test_vector_labels_become_series_in_the_legend(qtbot):
    v = make_view(ViewSpec("Norms", ("norms",)), STREAMS)
    v.push(frames("norms", range(10), [[i, 2 * i, 3.0] for i in range(10)]))
    show(qtbot, v)
    names = [label.text for _, label in v.legend.items]
    assert names == ["sgd", "sgdp", "adamp"]
    steps, values = v.series_data("norms")
    assert values.shape == (10, 3) and values[9, 1] == 18


def test_log_axes_map_decades(qtbot):
    v = make_view(ViewSpec("Loss", ("train_loss",), log_y=True, log_x=True), STREAMS)
    steps = np.arange(1, 1001)
    v.push(frames("train_loss", steps, 1.0 / steps))  # 1 .. 1e-3 over 1 .. 1e3
    show(qtbot, v)
    v.item.autoRange(padding=0)
    (x0, x1), (y0, y1) = v.item.getViewBox().viewRange()
    assert v.item.getAxis("left").logMode and v.item.getAxis("bottom").logMode
    assert x0 == pytest.approx(0, abs=0.05) and x1 == pytest.approx(3, abs=0.05)
    assert y0 == pytest.approx(-3, abs=0.05) and y1 == pytest.approx(0, abs=0.05)
    v.add_event(Event(100, "phase", {"name": "plateau"}))
    assert v._event_lines[0].value() == pytest.approx(2.0)  # log10(100) on a log x axis


@pytest.mark.slow
def test_a_million_points_refresh_and_keep_their_spike(qtbot):
    v = make_view(ViewSpec("Loss", ("train_loss",)), STREAMS)
    n = 1_000_000
    values = np.zeros(n)
    values[654_321] = 100.0
    v.push_series("train_loss", np.arange(n), values)
    show(qtbot, v, 500, 300)
    v.item.autoRange(padding=0)
    v.push([Frame.make(n, {"train_loss": 0.0})])
    v.refresh()
    QtCore.QCoreApplication.processEvents()
    assert len(v.series_data("train_loss")[0]) == n + 1
    img = image_of(v.plot)
    blue = near(img, BLUE)
    vb = v.plot.mapFromScene(v.item.getViewBox().sceneBoundingRect()).boundingRect()
    top = blue[
        vb.top() + 2 : vb.top() + vb.height() // 3, vb.left() : vb.left() + vb.width() // 2 + vb.width() // 3
    ]
    assert top.any()  # peak downsampling keeps a one-sample spike visible among a million


def test_smoothing_draws_raw_faint_and_ema_bold(qtbot):
    v = make_view(ViewSpec("Loss", ("train_loss",), smooth=True), STREAMS)
    rng = np.random.default_rng(1)
    v.push(frames("train_loss", range(500), 1 + rng.normal(0, 0.2, 500)))
    show(qtbot, v)
    series = v._series[("", "train_loss")]
    raw, smooth = series.raw[0], series.smooth[0]
    assert raw.opts["pen"].color().alpha() < 128 <= smooth.opts["pen"].color().alpha()
    assert raw.opts["pen"].widthF() < smooth.opts["pen"].widthF()
    y_raw, y_smooth = raw.getData()[1], smooth.getData()[1]
    assert np.std(np.diff(y_smooth)) < 0.2 * np.std(np.diff(y_raw))
    assert [label.text for _, label in v.legend.items] == ["train_loss (EMA)"]


def test_reference_dashed_and_runs_overlaid(qtbot):
    v = make_view(ViewSpec("Loss", ("train_loss",), reference="threshold"), STREAMS)
    v.add_run("b", "AdamP")
    data = [Frame.make(t, {"train_loss": 1.0 / (t + 1), "threshold": 0.5}) for t in range(50)]
    v.push(data)
    v.push(data, run="b")
    show(qtbot, v)
    names = [label.text for _, label in v.legend.items]
    assert names == [
        "train_loss",
        "threshold (reference)",
        "train_loss [AdamP]",
        "threshold (reference) [AdamP]",
    ]
    ref = v._series[("", "threshold")].raw[0]
    run_b = v._series[("b", "train_loss")].raw[0]
    assert ref.opts["pen"].style() == QtCore.Qt.PenStyle.DashLine
    assert run_b.opts["pen"].style() == QtCore.Qt.PenStyle.DashLine
    assert run_b.opts["pen"].color().name() == v._series[("", "train_loss")].raw[0].opts["pen"].color().name()


def test_events_cursor_and_clear(qtbot):
    v = make_view(ViewSpec("Loss", ("train_loss",)), STREAMS)
    v.push(frames("train_loss", range(100), np.ones(100)))
    v.add_event(Event(40, "set", {"name": "lr", "old": 0.1, "new": 0.05}))
    show(qtbot, v)
    line = v._event_lines[0]
    assert line.value() == 40 and line.label.format == "lr: 0.1 → 0.05"
    img = image_of(v.plot)
    col = int(round(scene_x(v, 40)))
    grey = near(img, QtGui.QColor(style.EVENT_COLOUR), tol=60)
    assert grey[:, col - 1 : col + 2].sum() > 20  # a visible vertical marker at step 40
    v.set_cursor(70)
    assert v._cursor_line.isVisible() and v._cursor_line.value() == 70
    v.set_cursor(None)
    assert not v._cursor_line.isVisible()
    v.clear()
    v.refresh()
    assert v._event_lines == [] and v.series_data("train_loss")[0].size == 0


def test_export_png_and_svg(qtbot, tmp_path):
    v = make_view(ViewSpec("Loss", ("train_loss",)), STREAMS)
    v.push(frames("train_loss", range(20), np.arange(20.0)))
    show(qtbot, v)
    v.export_image(str(tmp_path / "a.png"))
    v.export_image(str(tmp_path / "a.svg"))
    png = QtGui.QImage(str(tmp_path / "a.png"))
    assert not png.isNull() and png.width() > 100
    svg = (tmp_path / "a.svg").read_text()
    assert "<svg" in svg and "step" in svg


# --------------------------------------------------------------------------- histogram
def _hist(values: np.ndarray, bins: int = 30) -> np.ndarray:
    w, e = np.histogram(values, bins=bins)
    return np.stack([e[:-1], e[1:], w])


def test_rebin_conserves_mass_on_non_uniform_edges():
    h = np.array([[0.0, 1.0, 3.0], [1.0, 3.0, 3.5], [2.0, 4.0, 1.0]])
    m = rebin(h, np.linspace(0, 4, 9))
    assert m.sum() == pytest.approx(7.0)
    assert m[:2].sum() == pytest.approx(2.0) and m[2:6].sum() == pytest.approx(4.0)
    delta = np.array([[2.2], [2.2], [5.0]])  # a zero-width bin (an exact eigenvalue)
    assert rebin(delta, np.linspace(0, 4, 9))[4] == 5.0


def test_histogram_bars_log_counts_reference_and_cursor(qtbot):
    v = make_view(ViewSpec("Spectrum", ("spectrum",), log_y=True, reference="threshold"), STREAMS)
    rng = np.random.default_rng(0)
    bulk = rng.normal(0, 1, 1000)
    v.push(
        [
            Frame.make(0, {"spectrum": _hist(np.append(bulk, 6.0)), "threshold": 4.0}),
            Frame.make(10, {"spectrum": _hist(np.append(bulk, 8.0)), "threshold": 5.0}),
        ]
    )
    show(qtbot, v)
    bars = v._bars[("", "spectrum")]
    assert bars.opts["x1"].max() == pytest.approx(8.0)
    # log counts: the single outlier bin has height log10(1) = 0 above a floor below it
    assert bars.opts["y1"][-1] == pytest.approx(0.0) and bars.opts["y0"] < 0
    assert v._ref_lines[""].value() == 5.0
    img = image_of(v.plot)
    c = np.array(QtGui.QColor(style.colour(0)).getRgb()[:3])
    blend = (c * 160 + 255 * 95) / 255  # the bars' translucent fill over white
    fill = near(img, QtGui.QColor(*blend.astype(int)), tol=30)
    bulk_col, empty_col = int(scene_x(v, 0.0)), int(scene_x(v, 6.5))
    vb = v.plot.mapFromScene(v.item.getViewBox().sceneBoundingRect()).boundingRect()
    lower = fill[vb.top() + vb.height() // 2 : vb.bottom()]  # below the legend
    assert lower[:, bulk_col].sum() > 20 and not lower[:, empty_col].any()
    v.set_cursor(5)  # the frame at or before step 5 is step 0
    v.refresh()
    assert v._bars[("", "spectrum")].opts["x1"].max() == pytest.approx(6.0)
    assert v._ref_lines[""].value() == 4.0
    assert v._step_label.toPlainText() == "step 0"


def test_waterfall_brightest_row_is_the_mode(qtbot):
    v = make_view(ViewSpec("Spectrum over time", ("spectrum",), kind="waterfall"), STREAMS)
    rng = np.random.default_rng(0)
    # the bulk sits at 2 for early steps and moves to 8 later; edges differ every frame
    v.push(
        [
            Frame.make(t, {"spectrum": _hist(np.append(rng.normal(2 if t < 50 else 8, 0.3, 2000), [0, 10]))})
            for t in range(0, 100, 5)
        ]
    )
    v.add_event(Event(50, "phase", {"name": "jump"}))
    show(qtbot, v)
    img = v.data
    assert img.shape == (160, 20)
    centres = np.linspace(0, 10, 161)[:-1] + 10 / 320
    assert abs(centres[np.nanargmax(img[:, 2])] - 2) < 0.3
    assert abs(centres[np.nanargmax(img[:, 15])] - 8) < 0.3
    assert v._event_lines[0].value() == 50


def test_waterfall_of_a_vector_uses_labels_as_rows(qtbot):
    v = make_view(ViewSpec("Norms", ("norms",), kind="waterfall"), STREAMS)
    v.push(frames("norms", range(30), [[1, 10, 100]] * 30))
    show(qtbot, v)
    assert v.data.shape == (3, 30)
    assert np.allclose(v.data[:, 0], [1, 10, 100])
    ticks = v.item.getAxis("left")._tickLevels[0]
    assert [t[1] for t in ticks] == ["sgd", "sgdp", "adamp"]


# ----------------------------------------------------------------------------- heatmap
def test_heatmap_brightest_cell_is_the_max(qtbot):
    v = make_view(ViewSpec("Equivariance", ("err",)), STREAMS)
    m = np.full((3, 4), 0.1)
    m[:, 0] = 0.0
    m[2, 1] = 3.0
    v.push([Frame.make(7, {"err": m})])
    show(qtbot, v)
    img = image_of(v.plot)
    vb = v.item.getViewBox()
    rect = v.plot.mapFromScene(vb.sceneBoundingRect()).boundingRect()
    top_colour = pg.colormap.get("viridis").map(1.0, mode="qcolor")  # the colour of the maximum
    hot = near(img, top_colour, tol=60)
    hot[:, rect.right() - 2 :] = False  # the colourbar (right of the image) shows that colour too
    rows, cols = np.nonzero(hot)
    assert rows.size > 100
    p = vb.mapSceneToView(v.plot.mapToScene(QtCore.QPoint(int(cols.mean()), int(rows.mean()))))
    assert (int(p.y()), int(p.x())) == (2, 1)  # row 0 at the top, as a matrix is read
    assert [t[1] for t in v.item.getAxis("left")._tickLevels[0]] == ["l1", "l2", "l3"]
    assert [t[1] for t in v.item.getAxis("bottom")._tickLevels[0]] == ["e", "r90", "r180", "r270"]
    assert v.value_at(2, 1) == "l3, r90 = 3"


def test_heatmap_cursor_shows_frame_at_or_before(qtbot):
    v = make_view(ViewSpec("Equivariance", ("err",)), STREAMS)
    v.push([Frame.make(t, {"err": np.full((3, 4), float(t))}) for t in (0, 10, 20)])
    show(qtbot, v)
    assert v.shown_step == 20
    v.set_cursor(15)
    v.refresh()
    assert v.shown_step == 10 and v.data[0, 0] == 10
    v.set_cursor(None)
    v.refresh()
    assert v.shown_step == 20


def test_signed_heatmap_uses_symmetric_diverging_levels(qtbot):
    v = make_view(ViewSpec("Signed", ("err",)), STREAMS)
    v.push([Frame.make(0, {"err": np.array([[-1, 0, 2, 0.5]] * 3)})])
    show(qtbot, v)
    assert v.colourbar.levels() == (-2.0, 2.0)


def test_vector_heatmap_stacks_streams_as_rows(qtbot):
    streams = {**STREAMS, "norms2": Stream("norms2", "vector", shape=(3,), labels=("sgd", "sgdp", "adamp"))}
    v = make_view(ViewSpec("Both", ("norms", "norms2"), kind="vector-heatmap"), streams)
    v.push([Frame.make(0, {"norms": [1, 2, 3], "norms2": [4, 5, 6]})])
    show(qtbot, v)
    assert v.data.tolist() == [[1, 2, 3], [4, 5, 6]]
    assert v.value_at(1, 0) == "norms2, sgd = 4"


def test_heatmap_run_selector(qtbot):
    v = make_view(ViewSpec("Equivariance", ("err",)), STREAMS)
    v.add_run("b", "other")
    v.push([Frame.make(0, {"err": np.zeros((3, 4))})])
    v.push([Frame.make(0, {"err": np.ones((3, 4))})], run="b")
    show(qtbot, v)
    assert v._run_box.isVisible() and v._run_box.count() == 2
    assert v.data[0, 0] == 0
    v._run_box.setCurrentIndex(1)
    assert v.data[0, 0] == 1


# ------------------------------------------------------------------------------ points
def _etf_points(dim: int) -> np.ndarray:
    means = np.eye(3) - 1 / 3
    return np.concatenate([means, 0.8 * means])[:, :dim]


def test_points_2d_scatter_labels_and_segments(qtbot):
    v = make_view(ViewSpec("Geometry", ("geom",)), STREAMS)
    v.push([Frame.make(4, {"geom": _etf_points(2)})])
    show(qtbot, v)
    assert v.mode == "2d" and not v.note.isVisible()
    etf = v._scatters["etf"].getData()
    assert np.allclose(np.column_stack(etf), _etf_points(2)[:3])
    texts = [t.toPlainText() for t in v._texts if t.isVisible()]
    assert texts == ["c0", "c1", "c2", "w0", "w1", "w2"]
    segs = v.segments(_etf_points(2), list(STREAMS["geom"].groups))
    assert len(segs) == 2 * (3 + 3)  # 3 simplex edges + 3 arrows from the origin
    img = image_of(v)
    assert near(img, QtGui.QColor(style.colour(1))).sum() > 30  # the classifier group is drawn


def test_points_3d_falls_back_without_gl(qtbot):
    if QtGui.QGuiApplication.platformName() != "offscreen":
        pytest.skip("fallback is exercised on the offscreen platform")
    v = make_view(ViewSpec("Geometry", ("geom",)), STREAMS)
    v.push([Frame.make(4, {"geom": _etf_points(3)}), Frame.make(9, {"geom": 2 * _etf_points(3)})])
    show(qtbot, v)
    assert v.mode == "2d" and v.note.isVisible() and "2-D projection" in v.note.text()
    assert v.shown_step == 9
    v.set_cursor(5)
    v.refresh()
    assert v.shown_step == 4
    # The projection keeps distances of this planar cloud (it spans 2 dimensions).
    proj = np.column_stack(v._scatters["etf"].getData())
    d = np.linalg.norm(proj[0] - proj[1])
    assert d == pytest.approx(np.linalg.norm(_etf_points(3)[0] - _etf_points(3)[1]))


GL_SCRIPT = r"""
import json, sys
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
for _ in range(10):
    app.processEvents()
img = v.canvas.render() if v.mode == "vispy" else np.zeros((1, 1, 4), np.uint8)
rgb = img[..., :3].astype(int)
blue = (np.abs(rgb - [31, 119, 180]).sum(axis=2) < 60).sum()
v.export_image(sys.argv[1])
print(json.dumps({"platform": app.platformName(), "mode": v.mode, "blue": int(blue)}))
"""


@pytest.mark.gl
@pytest.mark.slow
def test_points_3d_vispy_under_xvfb(tmp_path):
    env = {**os.environ, "QT_QPA_PLATFORM": "xcb", "PYTHONPATH": str(ROOT)}
    if os.environ.get("DISPLAY"):
        cmd = [sys.executable, "-c", GL_SCRIPT, str(tmp_path / "gl.png")]
    elif shutil.which("xvfb-run"):
        cmd = ["xvfb-run", "-a", sys.executable, "-c", GL_SCRIPT, str(tmp_path / "gl.png")]
    else:
        pytest.skip("no X display and no xvfb-run")
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["mode"] != "vispy":
        pytest.skip(f"no OpenGL on this X server ({result})")
    assert result["blue"] > 50  # the etf group's markers are drawn in its colour
    assert QtGui.QImage(str(tmp_path / "gl.png")).width() > 100


# ------------------------------------------------------------------ readability (visual QA)
def test_log_axis_labels_only_what_a_reader_needs():
    axis = style.ReadableAxis("left")
    axis.setLogMode(False, True)
    ticks = np.log10([0.001, 0.002, 0.003, 0.005, 0.007, 0.01, 0.02, 0.09, 0.1])
    axis.setRange(-4.5, 0.2)  # almost five decades: decades only
    labels = axis.logTickStrings(list(ticks), 1.0, 1.0)
    assert [s is not None for s in labels] == [True, False, False, False, False, True, False, False, True]
    axis.setRange(-3.2, -0.9)  # a bit over two decades: 1-2-5
    labels = axis.logTickStrings(list(ticks), 1.0, 1.0)
    assert [s is not None for s in labels] == [True, True, False, True, False, True, True, False, True]
    axis.setRange(-1.3, -0.95)  # inside one decade: every minor tick keeps its label
    assert all(s is not None for s in axis.logTickStrings(list(ticks[5:]), 1.0, 1.0))


def test_titles_are_escaped_not_parsed_as_html(qtbot):
    v = show(qtbot, make_view(ViewSpec("Rank of the SVM solutions (<= n = 6)", ("train_loss",)), STREAMS))
    assert "n = 6)" in v.item.titleLabel.item.toPlainText()


def test_run_start_and_end_are_not_drawn_but_changes_are(qtbot):
    v = show(qtbot, make_view(ViewSpec("Loss", ("train_loss",)), STREAMS))
    v.push(frames("train_loss", range(10), np.ones(10)))
    v.add_event(Event(0, "start", {}))
    v.add_event(Event(9, "end", {"status": "finished"}))
    assert v._event_lines == []
    v.add_event(Event(5, "set", {"name": "lr", "old": 0.1, "new": 0.2}))
    assert len(v._event_lines) == 1


def test_legend_moves_off_the_data_and_hides_for_one_series(qtbot):
    streams = {**STREAMS, "b": Stream("b", "scalar")}
    v = show(qtbot, make_view(ViewSpec("Two", ("train_loss", "b")), streams))
    steps = np.arange(200)
    # Both series hug the top of the plot across its whole width: the top corners hide them.
    v.push([Frame.make(int(s), {"train_loss": 10.0 - 0.001 * s, "b": 9.9}) for s in steps])
    v.push([Frame.make(200, {"train_loss": 0.0, "b": 9.9})])
    v.refresh()
    QtCore.QCoreApplication.processEvents()
    assert v.legend.isVisible()
    assert style.LEGEND_CORNERS[v._legend_corner][0][1] != 0  # not a top corner
    one = show(qtbot, make_view(ViewSpec("One", ("train_loss",)), STREAMS))
    one.push(frames("train_loss", range(5), np.arange(5.0)))
    one.refresh()
    assert not one.legend.isVisible()


def test_many_series_follow_a_ramp_and_the_legend_names_the_ends(qtbot):
    labels = tuple(f"λ{i + 1}" for i in range(21))
    streams = {"top": Stream("top", "vector", shape=(21,), labels=labels)}
    v = show(qtbot, make_view(ViewSpec("Top", ("top",)), streams))
    v.push([Frame.make(s, {"top": np.linspace(5, 0.1, 21)}) for s in range(3)])
    v.refresh()
    names = [label.text for _, label in v.legend.items]
    assert names == ["λ1", "λ21"]
    pens = [c.opts["pen"].color().name() for c in v._series[("", "top")].raw]
    assert len(set(pens)) == 21  # no palette repeats


def test_waterfall_of_a_symlog_spectrum_shows_bulk_and_outliers(qtbot):
    # A symmetric-log grid (fine near 0, logarithmic beyond) with a bulk at 0 and an outlier at 5;
    # empty bins far out (to 50) must not stretch the picture.
    pos = np.geomspace(1e-3, 50, 40)
    edges = np.concatenate([-pos[::-1], [0.0], pos])
    w = np.zeros(len(edges) - 1)
    centre = len(pos)
    w[centre - 2 : centre + 2] = 0.24
    w[np.searchsorted(edges, 5.0) - 1] = 0.04
    hist = np.stack([edges[:-1], edges[1:], w])
    streams = {**STREAMS, "thr": Stream("thr", "scalar")}
    v = show(qtbot, make_view(ViewSpec("Spec", ("spectrum",), kind="waterfall", reference="thr"), streams))
    v.push([Frame.make(s, {"spectrum": hist, "thr": 10.0}) for s in (0, 10, 20)])
    v.refresh()
    assert v.scale.c > 0
    rows = np.nonzero(np.isfinite(v.data[:, -1]))[0]
    # Bulk and outlier land many rows apart (on a linear axis they would share a bin or two).
    assert rows.max() - rows.min() > 0.3 * v.data.shape[0]
    top = float(v.image.mapRectToParent(v.image.boundingRect()).bottom())
    assert top == pytest.approx(
        float(v.scale(edges[np.searchsorted(edges, 5.0)])), rel=1e-6
    )  # trimmed at 5, not 50
    x, y = v._ref_curve.getData()
    assert np.allclose(y, v.scale(10.0)) and "thr = 10" in v._ref_text.toPlainText()
    labels = [lab for _, lab in v.item.getAxis("left")._tickLevels[0]]
    assert "0" in labels and "1" in labels


def test_waterfall_row_labels_are_thinned(qtbot):
    labels = tuple(f"k={i}" for i in range(49))
    streams = {"power": Stream("power", "vector", shape=(49,), labels=labels)}
    v = show(qtbot, make_view(ViewSpec("P", ("power",), kind="waterfall"), streams))
    ticks = v.item.getAxis("left")._tickLevels[0]
    assert 8 <= len(ticks) <= 16 and ticks[0][1] == "k=0"


def test_points_labels_once_and_not_when_crowded(qtbot):
    from dynlab.views.points import (
        MAX_TEXT_LABELS,
        SIZE_ARROW,
        SIZE_OTHER,
        SIZE_SIMPLEX,
        group_size,
        shown_labels,
    )

    assert shown_labels(["class 0", "class 1", "class 0", ""]) == ["class 0", "class 1", "", ""]
    many = [f"p{i}" for i in range(MAX_TEXT_LABELS + 1)]
    assert shown_labels(many) == [""] * len(many)
    assert (
        group_size("etf")
        == SIZE_SIMPLEX
        > group_size("mean")
        == SIZE_OTHER
        > group_size("classifier")
        == SIZE_ARROW
    )
    # The 2-D view names its axes from the stream's cols and reports the point under the mouse.
    s = Stream("m", "points", shape=(3, 2), labels=("a", "b", "c"), cols=("SVM margin", "current margin"))
    v = show(qtbot, make_view(ViewSpec("M", ("m",)), {"m": s}))
    v.push([Frame.make(1, {"m": np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 1.5]])})])
    v.refresh()
    assert v.plot.getPlotItem().getAxis("bottom").labelText == "SVM margin"
    assert v.label_near(1.02, 0.98, 0.1) == "b"


def test_heatmap_leaves_unmeasured_cells_blank_and_draws_zero_darkest_on_log(qtbot):
    s = Stream("e", "heatmap", shape=(1, 3), rows=("r",), cols=("zero", "missing", "one"))
    v = show(qtbot, make_view(ViewSpec("E", ("e",), kind="heatmap", log_y=True), {"e": s}))
    v.push([Frame.make(1, {"e": np.array([[0.0, np.nan, 1.0]])})])
    v.refresh()
    QtCore.QCoreApplication.processEvents()
    img = image_of(v)
    vb = v.item.getViewBox()

    def pixel(col: float) -> np.ndarray:
        p = v.plot.mapFromScene(vb.mapViewToScene(QtCore.QPointF(col, 0.5)))
        q = v.plot.mapTo(v, p)
        return img[q.y(), q.x()].astype(int)

    assert (pixel(1.5) > 240).all()  # missing: the white background
    assert pixel(0.5).sum() < 300  # exactly zero: the dark end of viridis


def test_points_lock_the_aspect_only_for_geometry(qtbot):
    from dynlab.views.points import same_units

    assert same_units(np.array([[0.0, 0.0], [1.9, 1.8], [1.0, 1.1]]))  # margins against margins
    assert not same_units(np.array([[0.3, 0.5], [1.0, 13.0], [3.0, 0.4]]))  # an error against a ratio


# ---------------------------------------------------------------- issue 17: hover, smoothing, tool row
def _ema(x: np.ndarray, w: float) -> np.ndarray:
    """TensorBoard's debiased EMA, NaN samples skipped (an independent reference)."""
    out, state, norm = np.empty(len(x)), 0.0, 0.0
    for i, v in enumerate(x):
        ok = np.isfinite(v)
        state = w * state + (1 - w) * (v if ok else 0.0)
        norm = w * norm + (1 - w) * ok
        out[i] = state / norm if norm > 0 else np.nan
    return out


def _loss_frames(steps, seed: int = 0) -> list[Frame]:
    rng = np.random.default_rng(seed)
    return [Frame.make(int(s), {"train_loss": np.exp(-s / 80) + 0.1 * rng.standard_normal()}) for s in steps]


def test_hover_shows_every_series_at_the_step_nan_aware(qtbot):
    v = show(qtbot, make_view(ViewSpec("L", ("train_loss", "norms")), STREAMS))
    v.push(
        [
            Frame.make(s, {"train_loss": 1.0 / s, "norms": np.array([s, np.nan, 2.0 * s])})
            for s in range(1, 51)
        ]
    )
    v.push([Frame.make(60, {"norms": np.array([60.0, 1.0, 120.0])})])  # train_loss not at step 60
    v.refresh()
    QtCore.QCoreApplication.processEvents()
    vb = v.item.getViewBox()
    mid = sum(vb.viewRange()[1]) / 2
    v.plot.scene().sigMouseMoved.emit(vb.mapViewToScene(QtCore.QPointF(20.3, mid)))
    assert v.hover_label.isVisible()
    lines = v.hover_label.text().splitlines()
    assert lines[0] == "step 20"
    assert any(line.startswith("train_loss") and "0.05" in line for line in lines)
    assert any("norms: sgd " in line and "20" in line for line in lines)
    assert any("norms: sgdp" in line and "NaN" in line for line in lines)
    assert v.hover_label.textFormat() == QtCore.Qt.TextFormat.PlainText
    at, rows = v.values_at(59.0)
    assert at == 60 and dict((r[0], r[2]) for r in rows)["train_loss"] == 50  # newest row at or before
    assert "@50" in v.hover_text(at, rows)
    # Over the data no theory tooltip pops up (the caption keeps it); hovering off hides the values.
    p = v.plot.mapFromScene(vb.mapViewToScene(QtCore.QPointF(20.3, mid)))
    tip = QtGui.QHelpEvent(QtCore.QEvent.Type.ToolTip, p, v.plot.viewport().mapToGlobal(p))
    assert v.eventFilter(v.plot.viewport(), tip) is True
    v.plot.scene().sigMouseMoved.emit(QtCore.QPointF(-50, -50))
    assert not v.hover_label.isVisible()


def test_smoothed_history_never_changes_as_rows_arrive_or_the_buffer_thins(qtbot, monkeypatch):
    from dynlab.views import lines

    monkeypatch.setattr(lines, "BUFFER_CAP", 64)  # thin after 64 rows instead of a million
    v = show(qtbot, make_view(ViewSpec("L", ("train_loss",), smooth=True), STREAMS))
    all_frames = _loss_frames(range(1, 301))
    full = np.array([float(f.data["train_loss"]) for f in all_frames])
    ref = _ema(full, lines.SMOOTH_WEIGHT)  # full-resolution EMA, step s at index s - 1
    v.push(all_frames[:50])
    s1, e1 = v.smoothed_data("train_loss")
    e1 = e1[:, 0]
    np.testing.assert_allclose(e1, ref[:50], rtol=1e-12)
    v.push(all_frames[50:60])
    s2, e2 = v.smoothed_data("train_loss")
    e2 = e2[:, 0]
    assert np.array_equal(s2[:50], s1) and np.array_equal(e2[:50], e1)  # the past did not move
    v.push(all_frames[60:])
    buf = v._series[("", "train_loss")].buffer
    assert buf.decimated > 0 and buf.n < 300
    steps, ema = v.smoothed_data("train_loss")
    ema = ema[:, 0]
    # Rows after the last thinned pair are untouched full-resolution EMA values...
    gaps = np.flatnonzero(np.diff(steps) > 1)
    k = int(gaps[-1]) + 2
    assert k % 2 == 0
    np.testing.assert_allclose(ema[k:], ref[steps[k:].astype(int) - 1], rtol=1e-12)
    # ...and each thinned pair holds the min and max of the full-resolution EMA over its steps.
    for i in range(0, k, 2):
        a, b = int(steps[i]), int(steps[i + 1])
        block = ref[a - 1 : b]
        assert ema[i] == pytest.approx(block.min(), rel=1e-12)
        assert ema[i + 1] == pytest.approx(block.max(), rel=1e-12)
    # Smoothing the thinned rows instead (what TensorBoard does) would change the past.
    assert not np.allclose(_ema(buf.values[:, 0], lines.SMOOTH_WEIGHT), ema)


def test_smoothing_control_recomputes_from_the_rows_and_turns_off(qtbot):
    v = show(qtbot, make_view(ViewSpec("L", ("train_loss",)), STREAMS))
    assert v.smoothed_data("train_loss") is None and v.smooth_box.text() == "smooth off"
    fr = _loss_frames(range(1, 301), seed=1)
    full = np.array([float(f.data["train_loss"]) for f in fr])
    v.push(fr[:200])
    v.set_smoothing(0.6)
    assert v.smooth_box.value() == pytest.approx(0.6)
    e = v.smoothed_data("train_loss")[1][:, 0]
    np.testing.assert_allclose(e, _ema(full[:200], 0.6), rtol=1e-9)
    v.push(fr[200:])
    e2 = v.smoothed_data("train_loss")[1][:, 0]
    assert np.array_equal(e2[:200], e)
    np.testing.assert_allclose(e2, _ema(full, 0.6), rtol=1e-9)
    assert any("EMA" in (c.name() or "") for c in v.item.listDataItems())
    v.smooth_box.setValue(0.0)
    assert v.smoothed_data("train_loss") is None
    assert len(v.series_data("train_loss")[0]) == 300  # the raw rows survive the rebuild


def test_log_toggles_move_markers_and_the_wheel_skips_the_unfocused_smoother(qtbot):
    v = show(qtbot, make_view(ViewSpec("L", ("train_loss",)), STREAMS))
    v.push(_loss_frames(range(1, 101)))
    v.add_event(Event(50, "set", {"name": "lr", "old": 0.1, "new": 0.2}))
    v.refresh()
    assert v._event_lines[0].value() == pytest.approx(50)
    v.log_x_button.click()
    assert v.log_x and v.item.ctrl.logXCheck.isChecked()
    assert v._event_lines[0].value() == pytest.approx(np.log10(50))
    v.log_y_button.click()
    assert v.log_y and v.item.ctrl.logYCheck.isChecked()
    v.set_log(x=False, y=False)
    assert not v.log_x_button.isChecked() and v._event_lines[0].value() == pytest.approx(50)
    pos = QtCore.QPointF(5, 5)
    wheel = QtGui.QWheelEvent(
        pos, v.smooth_box.mapToGlobal(pos), QtCore.QPoint(), QtCore.QPoint(0, 120),
        QtCore.Qt.MouseButton.NoButton, QtCore.Qt.KeyboardModifier.NoModifier,
        QtCore.Qt.ScrollPhase.NoScrollPhase, False,
    )  # fmt: skip
    QtCore.QCoreApplication.sendEvent(v.smooth_box, wheel)
    assert v.smooth_weight == 0.0


def test_csv_export_and_copy_image_from_the_tool_row(qtbot, tmp_path):
    import csv

    v = show(qtbot, make_view(ViewSpec("L", ("train_loss", "norms"), smooth=True), STREAMS))
    v.push([Frame.make(1, {"train_loss": 2.22e-16, "norms": np.array([1.0, np.nan, 3.0])})])
    v.push([Frame.make(3, {"train_loss": 0.5})])
    v.export_csv(str(tmp_path / "l.csv"))
    rows = list(csv.reader(open(tmp_path / "l.csv")))
    assert rows[0][:3] == ["step", "train_loss", "train_loss (EMA 0.9)"]
    assert "norms: sgdp" in rows[0]
    assert [r[0] for r in rows[1:]] == ["1", "3"]
    assert float(rows[1][1]) == 2.22e-16 and float(rows[2][1]) == 0.5
    sgdp = rows[0].index("norms: sgdp")
    assert rows[1][sgdp] == "nan" and rows[2][sgdp] == "nan"
    heat = show(qtbot, make_view(ViewSpec("E", ("err",)), STREAMS))
    heat.push([Frame.make(1, {"err": np.arange(12.0).reshape(3, 4)})])
    heat.refresh()
    heat.export_csv(str(tmp_path / "h.csv"))
    table = np.loadtxt(tmp_path / "h.csv", delimiter=",", skiprows=1)
    assert table.shape == (3, 5) and table[2, 4] == 11.0
    QtGui.QGuiApplication.clipboard().clear()
    v.copy_button.click()
    img = QtGui.QGuiApplication.clipboard().image()
    assert not img.isNull() and img.width() == v.width()


def test_csv_of_a_histogram_names_its_bars(qtbot, tmp_path):
    v = show(qtbot, make_view(ViewSpec("S", ("spectrum",)), STREAMS))
    v.push([Frame.make(1, {"spectrum": np.array([[0.0, 1.0, 2.0], [1.0, 2.0, 3.0], [0.5, 0.25, 0.25]])})])
    v.refresh()
    v.export_csv(str(tmp_path / "s.csv"))
    lines = (tmp_path / "s.csv").read_text().splitlines()
    assert lines[0] == "spectrum left,spectrum right,spectrum height"
    assert lines[1:] == ["0,1,0.5", "1,2,0.25", "2,3,0.25"]
