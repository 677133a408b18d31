"""The parameter panel, built from an engine's hyperparameter specs.

Before a run starts every hyperparameter is editable (it becomes a preset override);
while it runs only the live ones are, with the spec's bounds enforced by the widget.
An edit is committed when the user finishes it (Enter, focus out, a click), not per
keystroke, and the last change can be undone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from PySide6 import QtCore, QtWidgets

from dynlab.frames import Param

_INT_MAX = 2**31 - 1


class ParameterPanel(QtWidgets.QGroupBox):
    """A form with one editor per hyperparameter.

    Signals
    -------
    edited(name, value)
        The user committed a new value (already within bounds).
    undo_requested()
        The user asked to undo the last live change.
    """

    edited = QtCore.Signal(str, object)
    undo_requested = QtCore.Signal()

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__("Hyperparameters", parent)
        self._form = QtWidgets.QFormLayout()
        self._form.setFieldGrowthPolicy(QtWidgets.QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self._editors: dict[str, QtWidgets.QWidget] = {}
        self._specs: dict[str, Param] = {}
        self._values: dict[str, Any] = {}
        self.undo_button = QtWidgets.QPushButton("Undo last change")
        self.undo_button.setEnabled(False)
        self.undo_button.clicked.connect(self.undo_requested)
        self.hint = QtWidgets.QLabel("")
        self.hint.setWordWrap(True)
        self.hint.setStyleSheet("color: #666; font-size: 9pt;")
        outer = QtWidgets.QVBoxLayout(self)
        outer.addLayout(self._form)
        outer.addWidget(self.undo_button)
        outer.addWidget(self.hint)
        self._running = False

    def set_specs(self, specs: Mapping[str, Param], values: Mapping[str, Any]) -> None:
        """(Re)build the form for these parameters and current values."""
        while self._form.rowCount():
            self._form.removeRow(0)
        self._editors.clear()
        self._specs = dict(specs)
        self._values = dict(values)
        for name, p in self._specs.items():
            ed = self._make_editor(p, self._values.get(name, p.default))
            label = QtWidgets.QLabel(name + (" ⟳" if p.live else ""))
            tip = f"<b>{name}</b> — {p.help or ''}<br>{p.describe_bounds()}"
            tip += (
                "<br><i>live: can be changed while running</i>"
                if p.live
                else "<br><i>fixed once the run starts</i>"
            )
            label.setToolTip(tip)
            ed.setToolTip(tip)
            self._form.addRow(label, ed)
            self._editors[name] = ed
        self.set_running(self._running)

    def set_running(self, running: bool) -> None:
        """While running only live parameters are editable."""
        self._running = running
        for name, ed in self._editors.items():
            ed.setEnabled(self._specs[name].live or not running)
        self.hint.setText(
            "⟳ marks parameters you can change while the run goes; a change applies at the next step."
            if running
            else "Edits here apply to the next start."
        )

    def set_value(self, name: str, value: Any) -> None:
        """Show ``value`` without emitting ``edited`` (e.g. after the engine applied it)."""
        self._values[name] = value
        ed = self._editors.get(name)
        if ed is None:
            return
        ed.blockSignals(True)
        try:
            if isinstance(ed, QtWidgets.QDoubleSpinBox | QtWidgets.QSpinBox):
                ed.setValue(value)
            elif isinstance(ed, QtWidgets.QCheckBox):
                ed.setChecked(bool(value))
            elif isinstance(ed, QtWidgets.QComboBox):
                ed.setCurrentText(str(value))
            elif isinstance(ed, QtWidgets.QLineEdit):
                ed.setText(str(value))
        finally:
            ed.blockSignals(False)

    def values(self) -> dict[str, Any]:
        return dict(self._values)

    def editor(self, name: str) -> QtWidgets.QWidget:
        return self._editors[name]

    def _make_editor(self, p: Param, value: Any) -> QtWidgets.QWidget:
        if p.type == "float":
            ed = QtWidgets.QDoubleSpinBox()
            ed.setDecimals(8)
            ed.setRange(-1e12 if p.low is None else p.low, 1e12 if p.high is None else p.high)
            ed.setStepType(QtWidgets.QAbstractSpinBox.StepType.AdaptiveDecimalStepType)
            ed.setValue(float(value))
            ed.setKeyboardTracking(False)  # commit on Enter/focus-out, not per keystroke
            ed.valueChanged.connect(lambda v, n=p.name: self._commit(n, float(v)))
            return ed
        if p.type == "int":
            ed = QtWidgets.QSpinBox()
            ed.setRange(
                int(max(-_INT_MAX, p.low if p.low is not None else -_INT_MAX)),
                int(min(_INT_MAX, p.high if p.high is not None else _INT_MAX)),
            )
            ed.setValue(int(value))
            ed.setKeyboardTracking(False)
            ed.valueChanged.connect(lambda v, n=p.name: self._commit(n, int(v)))
            return ed
        if p.type == "bool":
            ed = QtWidgets.QCheckBox()
            ed.setChecked(bool(value))
            ed.toggled.connect(lambda v, n=p.name: self._commit(n, bool(v)))
            return ed
        if p.choices:
            ed = QtWidgets.QComboBox()
            ed.addItems(list(p.choices))
            ed.setCurrentText(str(value))
            ed.currentTextChanged.connect(lambda v, n=p.name: self._commit(n, str(v)))
            return ed
        ed = QtWidgets.QLineEdit(str(value))
        ed.editingFinished.connect(lambda n=p.name, e=ed: self._commit(n, e.text()))
        return ed

    def _commit(self, name: str, value: Any) -> None:
        if self._values.get(name) == value:
            return
        self._values[name] = value
        self.edited.emit(name, value)
