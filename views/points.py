"""Points views: labelled point clouds per step (class means, classifiers, embeddings).

Two classes, chosen by the views registry: :class:`PointsView3D` draws 3-D points in a
vispy scene with a rotatable turntable camera; :class:`PointsView2D` draws 2-D points in
a pyqtgraph scatter, and 3-D points too when OpenGL is unavailable (offscreen Qt, a
remote session), projected on their top two principal axes with a note saying so.
Groups decide the drawing: every group has a colour; ``ARROW_GROUPS`` get a line from
the origin to each point (classifier rows, margin directions); ``SIMPLEX_GROUPS`` get
an edge between every pair of their points (the simplex ETF wireframe).
"""

from __future__ import annotations

import functools
import html
import math
import os
from collections.abc import Iterable, Mapping

import numpy as np
import pyqtgraph as pg
from PySide6 import QtGui, QtWidgets

from dynlab.frames import Stream
from dynlab.viewspec import ViewSpec

from . import style
from .base import StreamView
from .buffers import SnapshotViewMixin

ARROW_GROUPS = ("classifier", "classifiers", "arrow", "direction", "margin")
SIMPLEX_GROUPS = ("etf", "simplex")
#: Marker size of a group: the ideal (ETF) points big, arrow tips small, the rest between,
#: so points that coincide (collapse reached) read as a bullseye rather than one dot.
SIZE_SIMPLEX, SIZE_ARROW, SIZE_OTHER = 22, 8, 13
#: Text labels beside the points only up to this many; beyond, they would hide the points
#: (hover a point in the 2-D view to read its label).
MAX_TEXT_LABELS = 16


def group_size(group: str) -> int:
    """Marker size (pixels) of a group, by the same name prefixes that decide the drawing."""
    key = group.lower()
    if any(key.startswith(s) for s in SIMPLEX_GROUPS):
        return SIZE_SIMPLEX
    if any(key.startswith(a) for a in ARROW_GROUPS):
        return SIZE_ARROW
    return SIZE_OTHER


def same_units(pts: np.ndarray) -> bool:
    """Whether a 2-D cloud looks like geometry (x and y spans within 3x) and deserves equal axes.

    Class means or margins read right only with a locked aspect ratio; a curve drawn as
    points (an error against a ratio) would be squashed into a sliver by it.
    """
    finite = pts[np.all(np.isfinite(pts), axis=1)]
    if len(finite) < 2:
        return True
    span = np.ptp(finite[:, :2], axis=0)
    lo, hi = float(span.min()), float(span.max())
    return hi == 0 or (lo > 0 and hi / lo < 3.0)


def shown_labels(labels: list[str]) -> list[str]:
    """Labels to draw as text: each distinct text once, none when there are too many."""
    seen: set[str] = set()
    out = []
    for lab in labels:
        out.append(lab if lab and lab not in seen else "")
        seen.add(lab)
    return out if sum(bool(x) for x in out) <= MAX_TEXT_LABELS else [""] * len(labels)


@functools.cache
def gl_available() -> bool:
    """Whether an OpenGL context can be made current (False on offscreen/minimal Qt).

    ``DYNLAB_NO_GL=1`` forces the 2-D fallback.
    """
    if os.environ.get("DYNLAB_NO_GL"):
        return False
    app = QtGui.QGuiApplication.instance()
    if app is None or app.platformName() in ("offscreen", "minimal", "vnc"):
        return False
    ctx = QtGui.QOpenGLContext()
    if not ctx.create():
        return False
    surface = QtGui.QOffscreenSurface()
    surface.create()
    ok = bool(ctx.makeCurrent(surface))
    if ok:
        ctx.doneCurrent()
    return ok


def declared_dim(streams: Iterable[Stream]) -> int | None:
    """Coordinates per point (2 or 3) the points streams declare, ``None`` if none says.

    Several streams drawn together are padded to the widest one.
    """
    dims = [s.shape[1] for s in streams if s.kind == "points" and len(s.shape) == 2 and s.shape[1] in (2, 3)]
    return max(dims) if dims else None


class PointsView(SnapshotViewMixin, StreamView):
    """What both points views share: the points of the view's streams at the newest (or
    cursor) step, their groups, colours and labels, a title with the step and a note.

    Points of all the view's streams are drawn together; a stream without ``groups``
    is one group named after the stream. One run at a time (selector when several).
    Subclasses draw with ``_draw(points, groups, labels)`` (zero points = clear).
    """

    single_run = True
    mode = ""  # "2d" or "vispy": what draws the points

    def __init__(
        self, view: ViewSpec, streams: Mapping[str, Stream], parent: QtWidgets.QWidget | None = None
    ) -> None:
        super().__init__(view, streams, parent)
        self.note = QtWidgets.QLabel()
        self.note.setVisible(False)
        self.legend_label = QtWidgets.QLabel()
        self.legend_label.setTextFormat(pg.QtCore.Qt.TextFormat.RichText)
        self.legend_label.setVisible(False)
        self.title_label = QtWidgets.QLabel(f"<b>{html.escape(view.title)}</b>")
        self._style_labels()
        self._layout.addWidget(self.title_label)
        self._layout.addWidget(self.legend_label)
        self._layout.addWidget(self.note)
        self._holder = QtWidgets.QWidget()
        self._holder_layout = QtWidgets.QVBoxLayout(self._holder)
        self._holder_layout.setContentsMargins(0, 0, 0, 0)
        self._finish_layout(self._holder)
        self._group_colour: dict[str, str] = {}
        self.points: np.ndarray | None = None  # what is drawn: (N, d) before projection
        self.groups: list[str] = []
        self.labels: list[str] = []
        self.shown_step: int | None = None

    def _style_labels(self) -> None:
        size = style.pt(style.TEXT_PT, self.text_scale)
        self.note.setStyleSheet(f"color: #a05000; font-size: {size}pt;")
        self.legend_label.setStyleSheet(f"font-size: {size}pt;")
        self.title_label.setStyleSheet(f"font-size: {style.pt(style.TITLE_PT, self.text_scale)}pt;")

    def _apply_text_scale(self) -> None:
        super()._apply_text_scale()
        self._style_labels()

    def _current(self) -> tuple[int, np.ndarray, list[str], list[str]] | None:
        run = self.shown_run()
        parts, groups, labels, step = [], [], [], None
        for name in self.stream_names:
            got = self.snaps.at(run, name, self.cursor)
            if got is None:
                continue
            step = got[0] if step is None else max(step, got[0])
            pts = np.asarray(got[1], dtype=float)
            s = self.streams[name]
            n = pts.shape[0]
            groups += list(s.groups) if len(s.groups) == n else [name] * n
            labels += list(s.labels) if len(s.labels) == n else [""] * n
            parts.append(pts)
        if step is None:
            return None
        dim = max(p.shape[1] for p in parts)
        pts = np.concatenate([np.pad(p, ((0, 0), (0, dim - p.shape[1]))) for p in parts])
        return step, pts, groups, labels

    def group_colour(self, group: str) -> str:
        """Stable colour of a group (first seen, first colour)."""
        if group not in self._group_colour:
            self._group_colour[group] = style.colour(len(self._group_colour))
        return self._group_colour[group]

    def segments(self, points: np.ndarray, groups: list[str]) -> np.ndarray:
        """Line segments ``(2S, d)``: origin->point for arrow groups, all pairs of simplex groups."""
        segs = []
        origin = np.zeros(points.shape[1])
        garr = np.array(groups)
        for g in dict.fromkeys(groups):
            idx = np.nonzero(garr == g)[0]
            key = g.lower()
            if any(key.startswith(a) for a in ARROW_GROUPS):
                for i in idx:
                    segs += [origin, points[i]]
            elif any(key.startswith(s) for s in SIMPLEX_GROUPS):
                for a in range(len(idx)):
                    for b in range(a + 1, len(idx)):
                        segs += [points[idx[a]], points[idx[b]]]
        return np.array(segs).reshape(-1, points.shape[1])

    def _redraw(self) -> None:
        cur = self._current()
        if cur is None:
            self.points = None
            self.shown_step = None
            self._draw(np.zeros((0, 2)), [], [])
            return
        step, pts, groups, labels = cur
        self.points, self.groups, self.labels, self.shown_step = pts, groups, labels, step
        for g in groups:
            self.group_colour(g)
        self.title_label.setText(f"<b>{html.escape(self.view.title)}</b> — step {step}")
        self.legend_label.setText(
            " ".join(
                f'<span style="color:{c}">&#9679;</span>&nbsp;{html.escape(g)}&nbsp;&nbsp;'
                for g, c in self._group_colour.items()
            )
        )
        self._draw(pts, groups, labels)

    def _draw(self, pts: np.ndarray, groups: list[str], labels: list[str]) -> None:
        raise NotImplementedError


class PointsView2D(PointsView):
    """Points in a pyqtgraph scatter; 3-D points projected on their top two principal axes.

    Parameters
    ----------
    note
        Why 3-D points are shown in 2-D here (shown above the plot when 3-D points
        arrive); the registry says, e.g. "OpenGL unavailable".
    """

    mode = "2d"

    def __init__(
        self,
        view: ViewSpec,
        streams: Mapping[str, Stream],
        parent: QtWidgets.QWidget | None = None,
        *,
        note: str = "",
    ) -> None:
        super().__init__(view, streams, parent)
        self.projection_note = note or "3-D points shown as a 2-D projection on their top two principal axes"
        # Made at the first data, whose dimension and spread decide the axes.
        self.plot: pg.PlotWidget | None = None
        self._scatters: dict[str, pg.ScatterPlotItem] = {}
        self._texts: list[pg.TextItem] = []
        self._lines2d: pg.PlotDataItem | None = None
        self._drawn2d: np.ndarray | None = None  # 2-D positions drawn (for hover)
        # The groups are named in a line of text above the plot, as in 3-D: a legend box
        # inside would sit on the points, which gather in the middle of an equal-aspect plot.
        self.legend_label.setVisible(True)
        self._basis: np.ndarray | None = None

    def _draw(self, pts: np.ndarray, groups: list[str], labels: list[str]) -> None:
        if self.plot is None:
            if not len(pts):
                return
            self._make_plot(pts.shape[1], pts)
        self._draw_2d(self._project(pts), groups, labels)

    def _make_plot(self, dim: int, pts: np.ndarray) -> None:
        self.note.setText(self.projection_note)
        self.note.setVisible(dim == 3)
        cols = self._axis_names()
        self.plot = style.make_plot(
            "", "PC1" if dim == 3 else cols[0], "PC2" if dim == 3 else cols[1], scale=self.text_scale
        )
        self.plot.getPlotItem().setAspectLocked(dim == 3 or same_units(pts))
        self._holder_layout.addWidget(self.plot)
        self.hover = QtWidgets.QLabel(" ")
        self.hover.setTextFormat(pg.QtCore.Qt.TextFormat.PlainText)  # point labels come from files
        self.hover.setStyleSheet(self._hover_style())
        self._holder_layout.addWidget(self.hover)
        self.plot.scene().sigMouseMoved.connect(self._on_mouse_moved)

    def _hover_style(self) -> str:
        return f"color: #222; font-size: {style.pt(style.TEXT_PT, self.text_scale)}pt;"

    def _apply_text_scale(self) -> None:
        super()._apply_text_scale()
        if self.plot is None:
            return  # made at the first data, at the scale of that moment
        style.scale_plot_texts(self.plot.getPlotItem(), self.text_scale)
        self.hover.setStyleSheet(self._hover_style())
        for t in self._texts:
            t.setFont(style.font(style.TEXT_PT, self.text_scale))

    def _axis_names(self) -> tuple[str, str]:
        """x and y axis names: the first stream's ``cols`` when it names two, else x / y."""
        for name in self.stream_names:
            cols = self.streams[name].cols
            if len(cols) == 2:
                return cols[0], cols[1]
        return "x", "y"

    def label_near(self, x: float, y: float, radius: float) -> str:
        """Labels of the drawn 2-D points within ``radius`` of (x, y), nearest first."""
        if self._drawn2d is None or not len(self._drawn2d):
            return " "
        d = np.hypot(self._drawn2d[:, 0] - x, self._drawn2d[:, 1] - y)
        near = [i for i in np.argsort(d) if d[i] <= radius and self.labels[i]]
        return ", ".join(self.labels[i] for i in near[:4]) or " "

    def _on_mouse_moved(self, pos) -> None:  # noqa: ANN001 - QPointF
        vb = self.plot.getPlotItem().getViewBox()
        if not vb.sceneBoundingRect().contains(pos):
            return
        p = vb.mapSceneToView(pos)
        # 8 pixels, in data units.
        radius = 8 * vb.viewPixelSize()[0]
        self.hover.setText(self.label_near(p.x(), p.y(), radius))

    def _project(self, pts: np.ndarray) -> np.ndarray:
        if pts.shape[1] == 2 or not len(pts):
            return pts[:, :2]
        # Uncentred SVD keeps the origin (where classifier arrows start) at the origin;
        # signs are aligned with the previous basis so the picture does not flip.
        _, _, vt = np.linalg.svd(pts, full_matrices=False)
        basis = vt[:2].T
        if self._basis is not None:
            basis = basis * np.sign(np.sum(basis * self._basis, axis=0) + 1e-12)
        self._basis = basis
        return pts @ basis

    def _draw_2d(self, pts: np.ndarray, groups: list[str], labels: list[str]) -> None:
        item = self.plot.getPlotItem()
        garr = np.array(groups)
        for g in dict.fromkeys([*self._scatters, *groups]):
            idx = np.nonzero(garr == g)[0] if len(garr) else np.zeros(0, dtype=int)
            sc = self._scatters.get(g)
            if sc is None:
                c = self.group_colour(g)
                size = group_size(g)
                sc = pg.ScatterPlotItem(size=size, pen=pg.mkPen("k", width=0.8), brush=pg.mkBrush(c), name=g)
                sc.setZValue(40 - size)  # small markers on top of big ones
                item.addItem(sc)
                self._scatters[g] = sc
            sc.setData(pos=pts[idx] if idx.size else np.zeros((0, 2)))
        segs = self.segments(pts, groups) if len(pts) else np.zeros((0, 2))
        if self._lines2d is None:
            self._lines2d = pg.PlotDataItem(pen=pg.mkPen("#666666", width=1.2), connect="pairs")
            item.addItem(self._lines2d)
        if len(segs):
            self._lines2d.setData(segs[:, 0], segs[:, 1], connect="pairs")
        else:
            self._lines2d.setData([], [])
        self._drawn2d = pts
        labels = shown_labels(labels)
        while len(self._texts) < len(labels):
            # Over every marker: a neighbour's marker never hides a label.
            t = pg.TextItem(color=style.FOREGROUND, anchor=(0, 0.5))
            t.setZValue(60)
            t.setFont(style.font(style.TEXT_PT, self.text_scale))
            item.addItem(t)
            self._texts.append(t)
        for i, t in enumerate(self._texts):
            if i < len(labels) and labels[i]:
                # Level with its marker and past its edge in pixels, at any zoom: a label
                # beside a big (ETF) marker otherwise starts under it.
                pad = max(group_size(g) for g in groups) // 2 + 3  # the biggest marker may coincide
                t.setHtml(
                    f'<div style="margin-left:{pad}px"><span style="background-color: rgba(255,255,255,60%)">'
                    f"{html.escape(labels[i])}</span></div>"
                )
                t.setPos(float(pts[i, 0]), float(pts[i, 1]))
                t.show()
            else:
                t.hide()


class PointsView3D(PointsView):
    """Points in a vispy scene (OpenGL) with a turntable camera, the legend as a line of text.

    Building it raises when no OpenGL context can be made; the registry then falls back
    to :class:`PointsView2D`.
    """

    mode = "vispy"

    def __init__(
        self, view: ViewSpec, streams: Mapping[str, Stream], parent: QtWidgets.QWidget | None = None
    ) -> None:
        super().__init__(view, streams, parent)
        self._fit_scale = 0.0
        self._make_canvas()
        self.legend_label.setVisible(True)

    def _draw(self, pts: np.ndarray, groups: list[str], labels: list[str]) -> None:
        if pts.shape[1] < 3:  # 2-D points in a 3-D view lie in the z = 0 plane
            pts = np.pad(pts, ((0, 0), (0, 3 - pts.shape[1])))
        self._draw_3d(pts, groups, labels)

    def _make_canvas(self) -> None:
        from vispy import app as vispy_app
        from vispy import scene

        vispy_app.use_app("pyside6")
        self.canvas = scene.SceneCanvas(keys=None, show=False, bgcolor="white", parent=self._holder)
        self._holder_layout.addWidget(self.canvas.native)
        self._scene_view = self.canvas.central_widget.add_view()
        self._scene_view.camera = scene.TurntableCamera(fov=40, elevation=30, azimuth=-45)
        self._markers = scene.visuals.Markers(parent=self._scene_view.scene)
        # No depth test: markers are drawn big-first (see _draw_3d), so coincident points
        # show as concentric discs instead of z-fighting.
        self._markers.set_gl_state("translucent", depth_test=False)
        self._segs3d = scene.visuals.Line(
            parent=self._scene_view.scene, connect="segments", color=(0.35, 0.35, 0.35, 1.0), width=1.5
        )
        self._text3d = scene.visuals.Text(
            parent=self._scene_view.scene,
            color="black",
            font_size=style.pt(style.TEXT_PT, self.text_scale),
            anchor_x="left",
            anchor_y="center",
        )
        # Labels last and never depth-tested: a marker drawn later must not cover its label.
        self._text3d.set_gl_state("translucent", depth_test=False)
        self._text3d.order = 10
        self._axes = scene.visuals.XYZAxis(parent=self._scene_view.scene)

    def _apply_text_scale(self) -> None:
        super()._apply_text_scale()
        self._text3d.font_size = style.pt(style.TEXT_PT, self.text_scale)
        self.canvas.update()

    def _draw_3d(self, pts: np.ndarray, groups: list[str], labels: list[str]) -> None:
        pts = pts.astype(np.float32)
        if len(pts) == 0:
            self._markers.visible = self._segs3d.visible = self._text3d.visible = False
            self.canvas.update()
            return
        self._markers.visible = self._segs3d.visible = self._text3d.visible = True
        colours = np.array([pg.mkColor(self.group_colour(g)).getRgbF() for g in groups], dtype=np.float32)
        sizes = np.array([group_size(g) for g in groups], dtype=np.float32)
        order = np.argsort(-sizes, kind="stable")
        self._markers.set_data(
            pts[order], face_color=colours[order], edge_color="black", size=sizes[order], edge_width=1
        )
        segs = self.segments(pts, groups)
        if len(segs):
            self._segs3d.set_data(pos=segs.astype(np.float32), connect="segments")
        self._segs3d.visible = bool(len(segs))
        scale = float(np.abs(pts).max()) or 1.0
        labels = shown_labels(labels)
        shown = [i for i, lab in enumerate(labels) if lab]
        if shown:
            # Beside the marker in screen space, whatever the camera's angle: the text starts
            # past the biggest marker's radius (points coincide once collapse is reached, and
            # an offset in data units vanishes when the view looks along it).
            widest = float(sizes.max())
            self._text3d.text = [
                label_beside_marker(labels[i], widest, self._text3d.font_size) for i in shown
            ]
            self._text3d.pos = pts[shown]
        self._text3d.visible = bool(shown)
        # Refit only when the cloud's size changes a lot, so the user's zoom survives.
        if not (self._fit_scale / 1.6 < scale < self._fit_scale * 1.6):
            self._fit_scale = scale
            self._axes.transform = _scale_transform(scale * 0.3)
            # Fit the sphere that holds the cloud (not its bounding cube, whose corners
            # leave the points small in the middle of the canvas).
            self._scene_view.camera.set_range(x=(-scale, scale), y=(-scale, scale), z=(-scale, scale))
            self._scene_view.camera.scale_factor = 2.4 * float(np.linalg.norm(pts, axis=1).max() or 1.0)
        self.canvas.update()

    def _grab(self):  # noqa: ANN202 - QPixmap
        # QWidget.grab renders the QOpenGLWidget's framebuffer too; draw first so it is current.
        self.canvas.render()
        return self.grab()


def label_beside_marker(label: str, marker_px: float, font_pt: float) -> str:
    """``label`` led by enough spaces to start just past a marker ``marker_px`` wide.

    A space is about 0.3 em; points are taken at 96 dpi (vispy's default).
    """
    space_px = 0.3 * font_pt * 96 / 72
    return " " * math.ceil((marker_px / 2 + 3) / space_px) + label


def _scale_transform(s: float):  # noqa: ANN202 - vispy transform
    from vispy.visuals.transforms import STTransform

    return STTransform(scale=(s, s, s))
