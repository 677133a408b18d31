"""The views of one experiment as dockable panels: rearrange, float onto a second screen, close.

The area is a small ``QMainWindow`` of its own (Qt's docks live in a main window) with no
central widget, so the docks share all the space. Its layout is saved per preset in
``QSettings`` and restored the next time the preset opens; *Reset layout* lays the views
out again in the preset's order, two columns.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from PySide6 import QtCore, QtWidgets

from dynlab.frames import Stream
from dynlab.viewspec import ViewSpec

_LAYOUT_VERSION = 1
_AREAS = (QtCore.Qt.DockWidgetArea.LeftDockWidgetArea, QtCore.Qt.DockWidgetArea.RightDockWidgetArea)


class ViewArea(QtWidgets.QMainWindow):
    """Holds view widgets in ``QDockWidget`` panels.

    Parameters
    ----------
    settings
        Where layouts are saved (``layout/<key>``); ``None`` keeps them for the session only.
    """

    def __init__(
        self, parent: QtWidgets.QWidget | None = None, settings: QtCore.QSettings | None = None
    ) -> None:
        super().__init__(parent)
        self.setWindowFlags(QtCore.Qt.WindowType.Widget)  # a child widget, not a top-level window
        self.setDockNestingEnabled(True)
        self.setDockOptions(
            QtWidgets.QMainWindow.DockOption.AnimatedDocks
            | QtWidgets.QMainWindow.DockOption.AllowNestedDocks
            | QtWidgets.QMainWindow.DockOption.AllowTabbedDocks
        )
        self.settings = settings
        self.placeholder = QtWidgets.QLabel("Starting the engine…")
        self.placeholder.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self.setCentralWidget(self.placeholder)
        self.docks: list[QtWidgets.QDockWidget] = []
        self.views: list[Any] = []
        self.key = ""
        self._next_view = 0

    def build(self, key: str, specs: Sequence[ViewSpec], streams: Mapping[str, Stream]) -> None:
        """Make one view per spec (``dynlab.views.make_view``) and show them as docks."""
        from dynlab.views import make_view

        titled = []
        for spec in specs:
            view = make_view(spec, dict(streams))
            view.setMinimumHeight(220)
            titled.append((spec.title, view))
        self.set_views(key, titled)
        self.views = [w for _, w in titled]

    def refresh_within_budget(self, budget_s: float) -> None:
        """Redraw views round-robin until ``budget_s`` of this tick is spent.

        One tick redrawing every view can take longer than a frame when several heavy
        views change at once; that is the latency a click waits for. Views left over are
        redrawn first on the next tick, so each still updates within a few ticks.
        """
        n = len(self.views)
        if not n:
            return
        deadline = time.perf_counter() + budget_s
        start = self._next_view % n
        for k in range(n):
            i = (start + k) % n
            self.views[i].refresh()
            self._next_view = i + 1
            if time.perf_counter() > deadline:
                break

    def set_views(self, key: str, titled: Sequence[tuple[str, QtWidgets.QWidget]]) -> None:
        """Show ``(title, widget)`` pairs as docks; restore the layout saved under ``key``."""
        self.clear()
        self.key = key
        self.placeholder.setVisible(False)
        # Without a central widget the docks share the whole area.
        self.takeCentralWidget()
        for i, (title, widget) in enumerate(titled):
            dock = QtWidgets.QDockWidget(title, self)
            dock.setObjectName(f"view{i}:{title}")  # saveState() keys docks by object name
            dock.setWidget(widget)
            dock.setFeatures(
                QtWidgets.QDockWidget.DockWidgetFeature.DockWidgetMovable
                | QtWidgets.QDockWidget.DockWidgetFeature.DockWidgetFloatable
                | QtWidgets.QDockWidget.DockWidgetFeature.DockWidgetClosable
            )
            self.docks.append(dock)
        self._arrange()
        if not self.restore_layout():
            self._arrange()

    def _arrange(self) -> None:
        """The default layout: the preset's order, two columns, stacked top to bottom."""
        for i, dock in enumerate(self.docks):
            area = _AREAS[i % 2] if len(self.docks) > 1 else _AREAS[0]
            self.addDockWidget(area, dock, QtCore.Qt.Orientation.Vertical)
            dock.setFloating(False)
            dock.show()

    def reset_layout(self) -> None:
        """Back to the default arrangement (and forget the saved one)."""
        for dock in self.docks:
            self.removeDockWidget(dock)
        self._arrange()
        if self.settings is not None and self.key:
            self.settings.remove(f"layout/{self.key}")

    def save_layout(self) -> None:
        if self.settings is not None and self.key and self.docks:
            self.settings.setValue(f"layout/{self.key}", self.saveState(_LAYOUT_VERSION))

    def restore_layout(self) -> bool:
        if self.settings is None or not self.key:
            return False
        state = self.settings.value(f"layout/{self.key}")
        return bool(state) and self.restoreState(state, _LAYOUT_VERSION)

    def visible_widgets(self) -> list[QtWidgets.QWidget]:
        """The views a user can see now (closed docks and hidden tabs excluded)."""
        return [d.widget() for d in self.docks if d.isVisible() and not d.visibleRegion().isEmpty()]

    def clear(self) -> None:
        self.save_layout()
        for dock in self.docks:
            self.removeDockWidget(dock)
            dock.deleteLater()
        self.docks = []
        self.views = []
        if self.centralWidget() is None:
            self.placeholder = QtWidgets.QLabel("Starting the engine…")
            self.placeholder.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
            self.setCentralWidget(self.placeholder)
        self.placeholder.setVisible(True)
