"""The workspace's side panel: what is open, the run controls, the hyperparameters, the event log."""

from __future__ import annotations

import html

from PySide6 import QtCore, QtWidgets

from dynlab.frames import Event
from dynlab.ui.branching import BranchTree
from dynlab.ui.controls import RunControls
from dynlab.ui.params import ParameterPanel

#: Event kinds the log shows in red.
ALARMS = ("failed", "diverged", "record_error", "refused")


def alert_for(ev: Event) -> tuple[str, str] | None:
    """The dialog title and message a live event deserves, or ``None`` (most events need none)."""
    msg = str(ev.payload.get("message", ""))
    if ev.kind == "failed":
        return "The engine failed", f"step {ev.step}: {msg}"
    if ev.kind == "diverged":
        return (
            "The run diverged",
            f"{msg}. The run is paused: lower the learning rate and resume, or restart.",
        )
    if ev.kind == "refused":
        return "Change refused", msg
    return None


class EventLog(QtWidgets.QListWidget):
    """One line per event: step, which run, what happened (plain text: it may come from a file)."""

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setToolTip("Events: live changes, phases, warnings, divergence")

    def add(self, ev: Event, who: str = "") -> None:
        item = QtWidgets.QListWidgetItem(f"{ev.step:>7}  {f'[{who}] ' if who else ''}{ev.label}")
        if ev.kind in ALARMS:
            item.setForeground(QtCore.Qt.GlobalColor.red)
        self.addItem(item)
        self.scrollToBottom()


class SidePanel(QtWidgets.QScrollArea):
    """Header, run controls, parameter panel and event log, stacked and scrollable."""

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.header = QtWidgets.QLabel()
        self.header.setWordWrap(True)
        self.header.setTextFormat(QtCore.Qt.TextFormat.RichText)  # built below from escaped text only
        self.controls = RunControls()
        self.params = ParameterPanel()
        self.log = EventLog()
        self.branches = BranchTree()
        inner = QtWidgets.QWidget()
        lay = QtWidgets.QVBoxLayout(inner)
        for w in (self.header, self.controls, self.params, self.branches, QtWidgets.QLabel("Events")):
            lay.addWidget(w)
        lay.addWidget(self.log, 1)
        self.setWidget(inner)
        self.setWidgetResizable(True)
        self.setMinimumWidth(290)

    def set_header(self, title: str, paper: str, detail: str) -> None:
        """Title, paper and a line of detail; every part is escaped (it may come from a file)."""
        self.header.setText(
            f"<b style='font-size:13pt'>{html.escape(title)}</b><br>"
            f"<span style='color:#555'>{html.escape(paper)}</span><br>"
            f"<span style='font-size:9pt'>{html.escape(detail)}</span>"
        )
