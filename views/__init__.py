"""Live views: one widget per stream kind, chosen by a registry (never by the engine).

``make_view(view_spec, streams)`` builds the widget for one ``[[views]]`` table of a
preset. The widget kind comes from ``ViewSpec.kind`` or, when that is empty, from the
kind of the view's first stream (``DEFAULT_VIEW_FOR_STREAM``). Every view implements the
``StreamView`` API (push / add_event / refresh / clear / set_cursor / export_image /
add_run); see ``views.base``.
"""

from __future__ import annotations

from collections.abc import Mapping

from PySide6 import QtWidgets

from dynlab.frames import Stream
from dynlab.viewspec import ViewSpec

from .base import StreamView
from .heatmap import HeatmapView
from .histogram import HistogramView, WaterfallView
from .lines import LinesView
from .points import PointsView

#: ViewSpec.kind -> widget class.
VIEW_FOR_KIND: dict[str, type[StreamView]] = {
    "lines": LinesView,
    "histogram": HistogramView,
    "waterfall": WaterfallView,
    "heatmap": HeatmapView,
    "vector-heatmap": HeatmapView,
    "points": PointsView,
}
#: stream kind -> ViewSpec.kind used when the preset leaves ``kind`` empty.
DEFAULT_VIEW_FOR_STREAM: dict[str, str] = {
    "scalar": "lines",
    "vector": "lines",
    "histogram": "histogram",
    "heatmap": "heatmap",
    "points": "points",
}


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
    return VIEW_FOR_KIND[view_kind(view, streams)](view, streams, parent)


__all__ = [
    "DEFAULT_VIEW_FOR_STREAM",
    "VIEW_FOR_KIND",
    "HeatmapView",
    "HistogramView",
    "LinesView",
    "PointsView",
    "StreamView",
    "WaterfallView",
    "make_view",
    "view_kind",
]
