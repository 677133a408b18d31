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

    def refresh_within_budget(self, budget_s: float, per_view_s: float = 0.0) -> int:
        """Redraw the views a user can see, round-robin, until ``budget_s`` of this tick is spent.

        One tick redrawing every view can take longer than a frame when several heavy
        views change at once; that is the latency a click waits for. Views left over are
        redrawn first on the next tick, so each still updates within a few ticks. A view
        in a closed dock or a hidden tab is not redrawn at all: it keeps its new rows and
        draws them on the first tick after it is shown again. A view with nothing new
        returns at once (``StreamView.refresh``). Returns how many views had to redraw.

        ``per_view_s`` is what one redrawn view has been costing in all, its paint included
        (which Qt runs after this tick: ``DisplayPacer.per_view``). No more views are redrawn
        than fit the budget at that cost, so the paint that follows a tick stays within a
        frame too, and a click waits for at most that.
        """
        n = len(self.views)
        if not n:
            return 0
        shown = {id(w) for w in self.visible_widgets()}
        deadline = time.perf_counter() + budget_s
        start = self._next_view % n
        drawn = 0
        for k in range(n):
            i = (start + k) % n
            view = self.views[i]
            self._next_view = i + 1
            if id(view) not in shown or not getattr(view, "_dirty", True):
                continue
            if drawn and (drawn + 1) * per_view_s > budget_s:
                self._next_view = i  # first in line next tick
                break
            view.refresh()
            drawn += 1
            if time.perf_counter() > deadline:
                break
        return drawn

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


class DisplayPacer(QtCore.QObject):
    """Lowers the display rate by itself when drawing falls behind, and raises it back.

    A frame lasts from the start of a display tick until the event loop next goes idle
    (the event dispatcher's ``aboutToBlock``), so it includes the paints of the views the
    tick redrew, which Qt runs after the tick: it is what one frame costs the GUI thread.
    When frames keep the GUI thread busy more than ``BUSY_DOWN`` of the time, the timer
    steps down a rate ladder (30, 20, 15, 10, 6 Hz): the window keeps answering clicks,
    and the cores (or, for an engine in this process, the GIL) go to training. When the
    next faster rate would keep it busy less than ``BUSY_UP`` of the time, for a second,
    it steps back up. A frame's cost is wall time: on a machine whose cores are busy it
    includes the waits for a core, so the display backs off and leaves them to training.
    The cost per redrawn view (:attr:`per_view`) tells ``ViewArea.refresh_within_budget``
    how many views one tick may redraw.

    Parameters
    ----------
    timer
        The display timer (its interval is changed here).
    hz
        The rate to hold when drawing keeps up.
    """

    LADDER = (30.0, 20.0, 15.0, 10.0, 6.0)
    #: Step down when drawing keeps the GUI thread busier than this share of the time...
    BUSY_DOWN = 0.15
    #: ...and back up when the faster rate would keep it below this share, for a second.
    BUSY_UP = 0.07

    def __init__(self, timer: QtCore.QTimer, hz: float) -> None:
        super().__init__(timer)  # a child of the timer: its connection ends with it
        self.timer = timer
        self.rates = tuple(r for r in self.LADDER if r <= hz) or (hz,)
        self.level = 0
        self.cost = 0.0  # moving average of a frame's seconds on the GUI thread
        self.per_view = 0.0  # moving average of a frame's seconds per view it redrew
        self._drawn = 0
        self._good_since: float | None = None
        self._frame_start: float | None = None
        self._paint_start: float | None = None
        self._awaiting_paint = False
        self._busy = 0.0
        self._dispatcher: QtCore.QAbstractEventDispatcher | None = None
        timer.setInterval(int(1000 / self.rates[0]))

    @property
    def hz(self) -> float:
        """The display rate now."""
        return self.rates[self.level]

    @property
    def behind(self) -> bool:
        """True while the rate is lowered because the views could not keep up."""
        return self.level > 0

    def note(self) -> str:
        """Status-bar text while the rate is lowered, else empty."""
        if not self.behind:
            return ""
        return f"display {self.hz:g} Hz (views behind: {1000 * self.cost:.0f} ms a frame)"

    def tick_started(self, t0: float, drawn: int = 0) -> None:
        """Call at the end of a display tick with its start time (``time.perf_counter``) and
        the number of views it redrew."""
        if self._dispatcher is None:
            self._dispatcher = QtCore.QAbstractEventDispatcher.instance()
            if self._dispatcher is None:
                return
            self._dispatcher.aboutToBlock.connect(self._on_idle)
            # The window's repaint comes as an UpdateRequest, which Qt may deliver a few ms
            # after the tick (a platform's update timer): watch for it to count the paint too.
            window = (
                self.timer.parent().window() if isinstance(self.timer.parent(), QtWidgets.QWidget) else None
            )
            if window is not None:
                window.installEventFilter(self)
        self._frame_start = t0
        self._busy = 0.0
        self._drawn = drawn
        self._paint_start: float | None = None
        self._awaiting_paint = drawn > 0

    def eventFilter(self, obj: QtCore.QObject, event: QtCore.QEvent) -> bool:  # noqa: N802 - Qt API
        if event.type() == QtCore.QEvent.Type.UpdateRequest and self._awaiting_paint:
            self._paint_start = time.perf_counter()
        return False

    def _on_idle(self) -> None:
        if self._frame_start is None:
            return
        now = time.perf_counter()
        if self._paint_start is not None:  # the paint ran: the frame is complete
            self._busy += now - self._paint_start
            self._finish(now)
        elif self._busy == 0.0:  # the tick's own work is done; its paint may follow
            self._busy = now - self._frame_start
            if not self._awaiting_paint:
                self._finish(now)
        elif now - self._frame_start > 0.1:  # no paint came (nothing visible changed)
            self._finish(now)

    def _finish(self, now: float) -> None:
        cost = self._busy
        self._frame_start, self._paint_start, self._awaiting_paint = None, None, False
        if self._drawn:
            per = cost / self._drawn
            self.per_view = per if self.per_view == 0.0 else 0.8 * self.per_view + 0.2 * per
        self.observe(cost, now)

    def observe(self, seconds: float, now: float) -> None:
        """Account one frame that cost ``seconds``; step the rate when needed."""
        self.cost = seconds if self.cost == 0.0 else 0.8 * self.cost + 0.2 * seconds
        if self.cost * self.hz > self.BUSY_DOWN and self.level + 1 < len(self.rates):
            self._set(self.level + 1)
            self._good_since = None
        elif self.level > 0 and self.cost * self.rates[self.level - 1] < self.BUSY_UP:
            if self._good_since is None:
                self._good_since = now
            elif now - self._good_since > 1.0:
                self._set(self.level - 1)
                self._good_since = None
        else:
            self._good_since = None

    def reset(self) -> None:
        """Back to the full rate (a new run)."""
        self.cost = 0.0
        self._good_since = None
        self._set(0)

    def _set(self, level: int) -> None:
        self.level = level
        self.timer.setInterval(int(1000 / self.hz))
