"""The Help menu's dialogs: keyboard shortcuts, where the docs are, the paper of the open preset.

The shortcut list is read from the window's own menus and shortcuts, so it cannot drift
from what the keys really do. Every text here is plain text.
"""

from __future__ import annotations

import re
import urllib.parse
from pathlib import Path

from PySide6 import QtCore, QtGui, QtWidgets

#: Keys that act inside widgets rather than through a menu or window shortcut.
WIDGET_KEYS: tuple[tuple[str, str], ...] = (
    ("Enter", "Hyperparameter field: apply the typed value"),
    ("Escape", "Hyperparameter field: revert the typed value"),
    ("Up / Down, wheel", "Hyperparameter field (focused): step the value; Enter applies it"),
    ("Mouse over a line plot", "Show every series' value at that step"),
    ("Drag / wheel on a plot", "Pan / zoom; right-click for pyqtgraph's menu"),
)


def shortcut_rows(window: QtWidgets.QMainWindow) -> list[tuple[str, str]]:
    """``(keys, what)`` for every menu action and window shortcut of ``window``, then the widget keys."""
    rows: list[tuple[str, str]] = []

    def walk(menu: QtWidgets.QMenu, where: str) -> None:
        for act in menu.actions():
            if act.menu() is not None:
                walk(act.menu(), f"{where} → {act.text().replace('&', '')}")
            elif not act.isSeparator() and not act.shortcut().isEmpty():
                keys = act.shortcut().toString(QtGui.QKeySequence.SequenceFormat.NativeText)
                rows.append((keys, f"{where} → {act.text().replace('&', '')}"))

    for act in window.menuBar().actions():
        if act.menu() is not None:
            walk(act.menu(), act.text().replace("&", ""))
    for sc in window.findChildren(QtGui.QShortcut):
        text = sc.property("help") or sc.whatsThis()
        if text:
            rows.append((sc.key().toString(QtGui.QKeySequence.SequenceFormat.NativeText), str(text)))
    rows.extend(WIDGET_KEYS)
    return rows


class ShortcutsDialog(QtWidgets.QDialog):
    """A table of keys and what they do."""

    def __init__(self, window: QtWidgets.QMainWindow) -> None:
        super().__init__(window)
        self.setWindowTitle("Keyboard shortcuts")
        rows = shortcut_rows(window)
        self.table = QtWidgets.QTableWidget(len(rows), 2)
        self.table.setHorizontalHeaderLabels(["Keys", "Does"])
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        for i, (keys, what) in enumerate(rows):
            self.table.setItem(i, 0, QtWidgets.QTableWidgetItem(keys))
            self.table.setItem(i, 1, QtWidgets.QTableWidgetItem(what))
        self.table.resizeColumnsToContents()
        self.table.horizontalHeader().setStretchLastSection(True)
        buttons = QtWidgets.QDialogButtonBox(QtWidgets.QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        lay = QtWidgets.QVBoxLayout(self)
        lay.addWidget(self.table)
        lay.addWidget(buttons)
        self.resize(620, 520)


def docs_location() -> Path | None:
    """The docs folder of this checkout (``docs/``), else its README; None for an installed wheel."""
    import dynlab

    root = Path(dynlab.__file__).resolve().parent.parent
    for candidate in (root / "docs", root / "README.md"):
        if candidate.exists():
            return candidate
    return None


def paper_url(citation: str) -> str:
    """A link for a preset's ``paper`` text: its arXiv page when it names one, else a Scholar search."""
    m = re.search(r"arXiv[:\s]*([0-9]{4}\.[0-9]{4,5})", citation, flags=re.IGNORECASE)
    if m:
        return f"https://arxiv.org/abs/{m.group(1)}"
    m = re.search(r"https?://\S+", citation)
    if m:
        return m.group(0).rstrip(").,;")
    return "https://scholar.google.com/scholar?q=" + urllib.parse.quote_plus(citation)


class PaperDialog(QtWidgets.QDialog):
    """The citation (selectable plain text), a button to open it and one to copy it."""

    def __init__(self, citation: str, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("The paper of this preset")
        self.url = paper_url(citation)
        text = QtWidgets.QLabel(citation)
        text.setTextFormat(QtCore.Qt.TextFormat.PlainText)
        text.setWordWrap(True)
        text.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        where = "Google Scholar search" if "scholar.google" in self.url else self.url
        link = QtWidgets.QLabel(f"Open in browser: {where}")
        link.setWordWrap(True)
        link.setToolTip(self.url)
        link.setTextFormat(QtCore.Qt.TextFormat.PlainText)
        link.setStyleSheet("color: #555;")
        link.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        buttons = QtWidgets.QDialogButtonBox(QtWidgets.QDialogButtonBox.StandardButton.Close)
        open_b = buttons.addButton("Open in browser", QtWidgets.QDialogButtonBox.ButtonRole.ActionRole)
        copy_b = buttons.addButton("Copy citation", QtWidgets.QDialogButtonBox.ButtonRole.ActionRole)
        open_b.clicked.connect(lambda: QtGui.QDesktopServices.openUrl(QtCore.QUrl(self.url)))
        copy_b.clicked.connect(lambda: QtWidgets.QApplication.clipboard().setText(citation))
        buttons.rejected.connect(self.reject)
        lay = QtWidgets.QVBoxLayout(self)
        lay.addWidget(text)
        lay.addWidget(link)
        lay.addWidget(buttons)
        self.setMaximumWidth(640)
        self.resize(560, 170)
