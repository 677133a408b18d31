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
from dynlab.recording import RecordingError
from dynlab.runner import Run
from dynlab.source import Control
from dynlab.ui.params import ParameterPanel
from dynlab.ui.recordings import new_recording


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


def branch_point(ws: Any) -> tuple[str, str, int] | None:
    """``(run id, parent recording, step)`` a branch would leave from now, or ``None``.

    At a replay cursor the branch diverges after the step shown; on a live run, after
    the last step recorded.
    """
    for rid, src in ws.seekables().items():
        if src.recording:
            return rid, src.recording, src.step + 1
    for rid, src in ws.sources.items():
        if Control.SET in src.controls and src.recording:
            return rid, src.recording, src.step
    return None


def grow_branch(ws: Any, changes: dict[str, Any] | None) -> Any:
    """Grow a branch of ``ws``'s run at :func:`branch_point` with ``changes``; ``None`` asks in a dialog.

    The branch runs live in the workspace, recording to a new file; its parent turns into
    ghost lines and the branch joins the side panel's tree. Returns the branch, or ``None``.
    """
    from dynlab import branch

    point = branch_point(ws)
    if point is None:
        ws._error("Nothing to branch from", "Open a recording, or start a run with recording on.")
        return None
    parent_id, parent, at = point
    try:
        preset, start = branch.prepare(parent, at)
    except (branch.BranchError, RecordingError) as exc:
        ws._error("Cannot branch", str(exc))
        return None
    if changes is None:
        from dynlab.engines.base import get_engine  # the specs: torch is imported here, once

        specs = {p.name: p for p in get_engine(preset.engine).spec.params}
        now = dict(preset.hyperparameters) | {name: v for _, name, v in start.edits}
        dlg = BranchDialog(at, specs, now, ws)
        if dlg.exec() != QtWidgets.QDialog.DialogCode.Accepted:
            return None
        changes = dlg.changes()
    start.sets = dict(changes)
    n = sum(1 for rid in ws.sources if rid.startswith("branch"))
    label = f"branch @{at}" + (
        ": " + ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in changes.items())
        if changes
        else ""
    )
    record = new_recording(f"{Path(parent).stem}-branch{at}")
    src = Run(preset, record=record, host=ws.host, on_diverge="pause", label=label, branch=start)
    src.start()
    parent_src = ws.sources[parent_id]
    if not parent_src.label:
        parent_src.label = "parent"
        for v in ws.views:
            v.add_run(parent_id, "parent")
    ws._add_source(f"branch{n + 1}", src)
    for v in ws.views:
        v.set_ghost(parent_id)
    ws.left_scroll.branches.add(parent, record, at, label)
    ws.timer.start()
    return src
