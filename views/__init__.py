"""Live views: one widget per stream kind, chosen by a registry (never by the engine).

``make_view(view_spec, streams)`` builds the widget for one ``[[views]]`` table of a
preset. The widget kind comes from ``ViewSpec.kind`` or, when that is empty, from the
kind of the view's first stream (``DEFAULT_VIEW_FOR_STREAM``). Points get one of two
classes: the OpenGL (vispy) view when their streams declare 3 coordinates and OpenGL
works, else the 2-D (pyqtgraph) one. Every view implements the ``StreamView`` API
(push / add_event / refresh / clear / set_cursor / export_image / add_run); see
``views.base``.
"""

from __future__ import annotations

from collections.abc import Mapping

from PySide6 import QtWidgets

from dynlab.frames import STREAM_KINDS, Stream
from dynlab.viewspec import VIEW_KINDS, ViewSpec

from .base import StreamView
from .heatmap import HeatmapView
from .histogram import HistogramView, WaterfallView
from .lines import LinesView
from .points import PointsView2D, PointsView3D, declared_dim, gl_available

#: ViewSpec.kind -> widget class (for "points", the class when 3-D drawing is not chosen).
VIEW_FOR_KIND: dict[str, type[StreamView]] = {
    "lines": LinesView,
    "histogram": HistogramView,
    "waterfall": WaterfallView,
    "heatmap": HeatmapView,
    "vector-heatmap": HeatmapView,
    "points": PointsView2D,
}
#: stream kind -> ViewSpec.kind used when the preset leaves ``kind`` empty.
DEFAULT_VIEW_FOR_STREAM: dict[str, str] = {
    "scalar": "lines",
    "vector": "lines",
    "histogram": "histogram",
    "heatmap": "heatmap",
    "points": "points",
}


def check_registry() -> None:
    """Raise if a view kind has no widget, a widget no kind, or a stream kind no default view."""
    if set(VIEW_FOR_KIND) != set(VIEW_KINDS):
        raise RuntimeError(
            f"views registry and VIEW_KINDS disagree: no view for {sorted(set(VIEW_KINDS) - set(VIEW_FOR_KIND))}, "
            f"no kind for {sorted(set(VIEW_FOR_KIND) - set(VIEW_KINDS))}"
        )
    if set(DEFAULT_VIEW_FOR_STREAM) != set(STREAM_KINDS) or not set(DEFAULT_VIEW_FOR_STREAM.values()) <= set(
        VIEW_KINDS
    ):
        raise RuntimeError("DEFAULT_VIEW_FOR_STREAM must map every stream kind to a view kind")


check_registry()  # at import: a kind added to VIEW_KINDS without a view fails at once


def view_kind(view: ViewSpec, streams: Mapping[str, Stream]) -> str:
    """The view kind ``make_view`` will build for ``view``."""
    if view.kind:
        if view.kind not in VIEW_FOR_KIND:
            raise ValueError(f"unknown view kind {view.kind!r}; expected one of {', '.join(VIEW_FOR_KIND)}")
        return view.kind
    for name in view.streams:
        if name in streams:
            return DEFAULT_VIEW_FOR_STREAM[streams[name].kind]
    return "lines"


def make_view(
    view: ViewSpec, streams: Mapping[str, Stream], parent: QtWidgets.QWidget | None = None
) -> StreamView:
    """Build the widget for one preset view.

    Parameters
    ----------
    view
        The preset's ``[[views]]`` entry.
    streams
        The engine instance's streams by name (``{s.name: s for s in engine.streams}``).
    parent
        Qt parent.
    """
    kind = view_kind(view, streams)
    if kind == "points":
        return _make_points_view(view, streams, parent)
    return VIEW_FOR_KIND[kind](view, streams, parent)


def _make_points_view(
    view: ViewSpec, streams: Mapping[str, Stream], parent: QtWidgets.QWidget | None
) -> StreamView:
    projection = "3-D points shown as a 2-D projection on their top two principal axes"
    if not gl_available():
        return PointsView2D(view, streams, parent, note=f"OpenGL unavailable: {projection}")
    if declared_dim(streams[n] for n in view.streams if n in streams) != 3:
        return PointsView2D(view, streams, parent, note=f"no stream declares 3 coordinates: {projection}")
    try:
        # No parent until it stands: a canvas that fails half-built must not stay in the parent.
        points = PointsView3D(view, streams)
    except Exception as exc:  # noqa: BLE001 - any GL/driver failure means: fall back
        return PointsView2D(
            view,
            streams,
            parent,
            note=f"3-D view unavailable ({type(exc).__name__}): showing a 2-D projection",
        )
    if parent is not None:
        points.setParent(parent)
    return points


__all__ = [
    "DEFAULT_VIEW_FOR_STREAM",
    "VIEW_FOR_KIND",
    "HeatmapView",
    "HistogramView",
    "LinesView",
    "PointsView2D",
    "PointsView3D",
    "StreamView",
    "WaterfallView",
    "check_registry",
    "make_view",
    "view_kind",
]
