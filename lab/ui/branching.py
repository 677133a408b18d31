"""*Branch from here…*: the dialog that picks the knobs to change, and the tree of branches.

A branch is a new run that starts from a recording's state at a step (its nearest
checkpoint, then the parent's own edits replayed up to that step) with some live
hyperparameters changed; it records to a new file that names its parent. The workspace
draws it live over its parent, which turns into faint ghost lines.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PySide6 import QtCore, QtWidgets

from dynlab.engines.spec import Param
from dynlab.ui.params import ParameterPanel


class BranchDialog(QtWidgets.QDialog):
    """Shows the parent's live hyperparameters at the branch step; OK returns the changed ones."""

    def __init__(
        self,
        at: int,
        specs: Mapping[str, Param],
        values: Mapping[str, Any],
        parent: QtWidgets.QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"Branch from step {at:,}")
        self._start = dict(values)
        live = {n: p for n, p in specs.items() if p.live}
        self.panel = ParameterPanel()
        self.panel.set_specs(live, {n: values.get(n, p.default) for n, p in live.items()})
        self.panel.set_running(True)
        note = QtWidgets.QLabel(
            f"The branch starts from the parent's state at step {at:,} and records to a new file. "
            "Change any knob (Enter applies it), then Branch."
        )
        note.setWordWrap(True)
        buttons = QtWidgets.QDialogButtonBox(
            QtWidgets.QDialogButtonBox.StandardButton.Ok | QtWidgets.QDialogButtonBox.StandardButton.Cancel
        )
        buttons.button(QtWidgets.QDialogButtonBox.StandardButton.Ok).setText("Branch")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay = QtWidgets.QVBoxLayout(self)
        lay.addWidget(note)
        lay.addWidget(self.panel)
        lay.addWidget(buttons)

    def accept(self) -> None:
        if self.panel.pending() and not self.panel.commit():
            return  # an invalid value: the panel says why, the dialog stays open
        super().accept()

    def changes(self) -> dict[str, Any]:
        """The knobs whose value differs from the parent's at the branch step."""
        return {n: v for n, v in self.panel.values().items() if self._start.get(n) != v}


class BranchTree(QtWidgets.QTreeWidget):
    """Each recording with the branches grown from it; double-click opens one alone."""

    open_requested = QtCore.Signal(str)

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setHeaderLabels(["Branches", "from step"])
        self.setRootIsDecorated(True)
        self.setVisible(False)
        self.itemDoubleClicked.connect(self._on_double_clicked)
        self._items: dict[str, QtWidgets.QTreeWidgetItem] = {}

    def add(self, parent_path: str, path: str, at: int, label: str) -> None:
        """Record that ``path`` branched from ``parent_path`` at step ``at``."""
        root = self._items.get(parent_path)
        if root is None:
            root = QtWidgets.QTreeWidgetItem([Path(parent_path).name, ""])
            root.setData(0, QtCore.Qt.ItemDataRole.UserRole, parent_path)
            root.setToolTip(0, parent_path)
            self.addTopLevelItem(root)
            self._items[parent_path] = root
        item = QtWidgets.QTreeWidgetItem([label, f"{at:,}"])
        item.setData(0, QtCore.Qt.ItemDataRole.UserRole, path)
        item.setToolTip(0, path)
        root.addChild(item)
        self._items[path] = item
        root.setExpanded(True)
        self.setVisible(True)

    def _on_double_clicked(self, item: QtWidgets.QTreeWidgetItem, _column: int) -> None:
        path = item.data(0, QtCore.Qt.ItemDataRole.UserRole)
        if path:
            self.open_requested.emit(str(path))
