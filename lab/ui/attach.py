"""*File → Attach to running training…*: pick a script that runs ``dynlab.watch`` and show it.

The dialog lists the same sessions as ``dynlab live``; attaching opens the session in the
workspace as a :class:`~dynlab.watching.attached.WatchedSource`, with the script's own view
layout if it gave one. Detaching (closing the app, opening something else) never affects
the script.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from PySide6 import QtCore, QtWidgets

from dynlab.watching.attached import WatchedSource
from dynlab.watching.channel import ChannelError
from dynlab.watching.client import sessions
from dynlab.watching.layout import view_specs

_COLUMNS = ("Name", "PID", "State", "Step", "Steps/s", "Started", "Recording", "Script")


class AttachDialog(QtWidgets.QDialog):
    """A table of the running watched scripts; *Attach* (or a double click) picks one."""

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Attach to running training")
        self.rows: list[dict[str, Any]] = []
        self.table = QtWidgets.QTableWidget(0, len(_COLUMNS))
        self.table.setHorizontalHeaderLabels(list(_COLUMNS))
        self.table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.doubleClicked.connect(self.accept)
        self.empty = QtWidgets.QLabel(
            "No running scripts. Add three lines to your training script:\n\n"
            "    import dynlab\n"
            "    with dynlab.watch(model, optimizer) as lab:\n"
            "        ...  lab.step(loss=loss)  # after optimizer.step()"
        )
        self.empty.setTextFormat(QtCore.Qt.TextFormat.PlainText)
        refresh = QtWidgets.QPushButton("Refresh")
        refresh.clicked.connect(self.refresh)
        self.buttons = QtWidgets.QDialogButtonBox(
            QtWidgets.QDialogButtonBox.StandardButton.Ok | QtWidgets.QDialogButtonBox.StandardButton.Cancel
        )
        self.buttons.button(QtWidgets.QDialogButtonBox.StandardButton.Ok).setText("Attach")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        lay = QtWidgets.QVBoxLayout(self)
        lay.addWidget(self.table)
        lay.addWidget(self.empty)
        row = QtWidgets.QHBoxLayout()
        row.addWidget(refresh)
        row.addStretch(1)
        row.addWidget(self.buttons)
        lay.addLayout(row)
        self.resize(900, 320)
        self.refresh()

    def refresh(self) -> None:
        """List the sessions again (each answers a short status request)."""
        self.rows = sessions()
        self.table.setRowCount(len(self.rows))
        for i, r in enumerate(self.rows):
            started = datetime.fromtimestamp(r["started"]).strftime("%H:%M:%S") if r.get("started") else ""
            cells = (
                r["name"],
                r["pid"],
                r.get("state", "?"),
                f"{int(r.get('step', 0)):,}",
                f"{float(r.get('steps_per_second', 0.0)):.1f}",
                started,
                r.get("recording") or "(not recorded)",
                r.get("script", ""),
            )
            for j, text in enumerate(cells):
                self.table.setItem(i, j, QtWidgets.QTableWidgetItem(str(text)))  # plain text, never markup
        if self.rows:
            self.table.selectRow(0)
        self.table.setVisible(bool(self.rows))
        self.empty.setVisible(not self.rows)
        self.buttons.button(QtWidgets.QDialogButtonBox.StandardButton.Ok).setEnabled(bool(self.rows))

    def selected(self) -> dict[str, Any] | None:
        rows = self.table.selectionModel().selectedRows()
        return self.rows[rows[0].row()] if rows else None


def attach(window: Any, row: dict[str, Any]) -> WatchedSource | None:
    """Open session ``row`` (from :func:`dynlab.watching.client.sessions`) in ``window``'s workspace."""
    info = row["info"]
    try:
        src = WatchedSource(info)
    except ChannelError as exc:
        window.show_error("Cannot attach", str(exc))
        return None
    window.pages.setCurrentWidget(window.workspace)
    views = view_specs(src.views) if src.views else None
    window.workspace.open_source(src, views, title=f"{info.name} — watched script, pid {info.pid}")
    window.setWindowTitle(f"dynlab — {info.name} (attached)")
    return src


def attach_running(window: Any) -> AttachDialog:
    """Show the dialog (non-blocking); attaching happens when the user accepts it."""
    dlg = AttachDialog(window)

    def done() -> None:
        row = dlg.selected()
        if row is not None:
            attach(window, row)

    dlg.accepted.connect(done)
    dlg.open()
    window._attach_dialog = dlg  # keep it alive while open
    return dlg
