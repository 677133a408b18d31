"""The parameter panel, built from an engine's hyperparameter specs.

Before a run starts every hyperparameter is editable (it becomes a preset override);
while it runs only the live ones are. Steering a live run must never misfire, so:

* a number field takes the mouse wheel only when it has keyboard focus (a wheel over
  an unfocused field scrolls the side panel instead); a choice box never takes it;
* typing, the arrow keys and the step buttons only change the *pending* text (the
  field turns yellow); the edit is committed by **Enter** in that field or by
  **Apply** (all pending fields), never per keystroke, per wheel tick or on focus-out;
  **Escape** reverts the field;
* text that does not parse, or a value outside the spec's bounds, is refused: the field
  turns red, its tooltip and the ``message`` signal say why and what is allowed, and
  nothing is applied (``-0.5`` in a ``[0, 1]`` field is refused, not clamped);
* numbers are shown with significant digits (``2.22e-16``, ``0.19``), never rounded to
  a fixed number of decimals.

The contract with the workspace
-------------------------------
The panel keeps the history of committed edits, so Undo walks back through every one.

``edited(name, value)``
    A user edit was committed: ``value`` is valid for the spec and differs from the
    shown value. The panel has already pushed ``(name, old, value)`` onto its history.
    The workspace applies it (``run.set`` live, else a preset override).
``restore_requested(name, value)``
    Undo: the workspace applies ``value`` (the old value of the undone edit) exactly as
    it applies ``edited``; the panel has already popped the history and shows ``value``.
    The restore is not pushed onto the history again.
``undo_requested()``
    Emitted on every Undo, just before ``restore_requested`` (kept for shells that keep
    their own undo stack; a shell that uses ``restore_requested`` ignores it).
``message(str)``
    One line for the status bar (why an input was refused, what was applied).
``save_requested()``
    "Save as preset…" was clicked; the shell writes ``values()`` into a preset file.

The workspace calls ``set_value(name, value)`` whenever the engine reports a value (a
``set`` event, or the value it kept after refusing a change); that shows the value
without emitting anything and without touching the history. If the engine refuses a
change the panel already committed, call ``refuse(name, reason, value)``: it shows the
reason, shows ``value`` and drops that edit from the history.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from PySide6 import QtCore, QtGui, QtWidgets

from dynlab.frames import Param, SpecError

PENDING_STYLE = "background: #fff3c4;"
ERROR_STYLE = "background: #ffd8d8; border: 1px solid #c62828;"


def format_number(value: Any, type_: str = "float") -> str:
    """``value`` as short text that parses back: ``0.19``, ``2.22e-16``, ``1e+12``, ``300``."""
    if type_ == "int":
        return str(int(value))
    v = float(value)
    if v == 0 or not math.isfinite(v):
        return "0" if v == 0 else str(v)
    text = f"{v:.10g}"
    # 1e-06 -> 1e-6: the exponent's leading zero is noise.
    return text.replace("e-0", "e-").replace("e+0", "e+")


def parse_value(text: str, param: Param) -> Any:
    """The value ``text`` stands for, checked against ``param``; raises ``SpecError`` saying why not."""
    return param.coerce(text.strip(), from_text=True)


def _step_size(value: float, param: Param) -> float:
    """One arrow-key step: a tenth of the value's leading decade (0.2 -> 0.01, like Qt's adaptive step)."""
    if param.type == "int":
        return 1.0
    if value != 0:
        return 10.0 ** (math.floor(math.log10(abs(value))) - 1)
    if param.low is not None and param.high is not None and param.high > param.low:
        return 10.0 ** (math.floor(math.log10(param.high - param.low)) - 2)
    return 0.01


class NumberBox(QtWidgets.QAbstractSpinBox):
    """A number field with step buttons whose edits stay pending until committed.

    ``value()`` is the committed value. ``setValue(v)`` enters ``v`` as a user would and
    commits it (tests, scripts); the panel shows engine values with ``show_value``.
    """

    commit_requested = QtCore.Signal()
    pending_changed = QtCore.Signal(bool)

    def __init__(self, param: Param, value: Any, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.param = param
        self._value = value
        self._error = ""
        # The wheel edits only a field the user clicked or tabbed into.
        self.setFocusPolicy(QtCore.Qt.FocusPolicy.StrongFocus)
        self.setKeyboardTracking(False)
        self.setCorrectionMode(QtWidgets.QAbstractSpinBox.CorrectionMode.CorrectToPreviousValue)
        self.lineEdit().setText(format_number(value, param.type))
        self.lineEdit().textEdited.connect(self._on_text_changed)

    # ---------------------------------------------------------------- values
    def value(self) -> Any:
        return self._value

    def setValue(self, value: Any) -> None:  # noqa: N802 - QSpinBox's name, kept for callers
        self.lineEdit().setText(format_number(value, self.param.type))
        self._on_text_changed()
        self.commit_requested.emit()

    def show_value(self, value: Any) -> None:
        """Show ``value`` as committed (no signal); drops any pending text or error."""
        self._value = value
        self.lineEdit().setText(format_number(value, self.param.type))
        self.set_error("")
        self._on_text_changed()

    def is_pending(self) -> bool:
        return self.text().strip() != format_number(self._value, self.param.type)

    def set_error(self, reason: str) -> None:
        """Mark the field red with ``reason`` in its tooltip (empty clears it)."""
        self._error = reason
        self._restyle()

    @property
    def error(self) -> str:
        return self._error

    # ---------------------------------------------------------------- Qt overrides
    def validate(self, text: str, pos: int) -> QtGui.QValidator.State:
        # Any text may be typed; the commit checks it and says what is wrong.
        return QtGui.QValidator.State.Acceptable

    def fixup(self, text: str) -> str:
        return text

    def stepEnabled(self) -> QtWidgets.QAbstractSpinBox.StepEnabledFlag:  # noqa: N802 - Qt API
        flags = QtWidgets.QAbstractSpinBox.StepEnabledFlag
        out = flags.StepNone
        if not self.isEnabled():
            return out
        v = self._current()
        if self.param.high is None or v < self.param.high:
            out |= flags.StepUpEnabled
        if self.param.low is None or v > self.param.low:
            out |= flags.StepDownEnabled
        return out

    def stepBy(self, steps: int) -> None:  # noqa: N802 - Qt API
        v = float(self._current())
        step = _step_size(v, self.param)
        new = v + steps * step
        # Round to the step's decimal so 0.2 - 0.01 shows 0.19, not 0.19000000000000003.
        new = round(new, max(0, -math.floor(math.log10(step)) + 1))
        if self.param.low is not None:
            new = max(new, self.param.low)
        if self.param.high is not None:
            new = min(new, self.param.high)
        self.lineEdit().setText(
            format_number(int(round(new)) if self.param.type == "int" else new, self.param.type)
        )
        self._on_text_changed()

    def wheelEvent(self, event: QtGui.QWheelEvent) -> None:  # noqa: N802 - Qt API
        if not self.hasFocus():
            event.ignore()  # let the scroll area scroll
            return
        super().wheelEvent(event)

    def keyPressEvent(self, event: QtGui.QKeyEvent) -> None:  # noqa: N802 - Qt API
        key = event.key()
        if key in (QtCore.Qt.Key.Key_Return, QtCore.Qt.Key.Key_Enter):
            self.commit_requested.emit()
            event.accept()
            return
        if key == QtCore.Qt.Key.Key_Escape and (self.is_pending() or self._error):
            self.show_value(self._value)
            event.accept()
            return
        super().keyPressEvent(event)

    def sizeHint(self) -> QtCore.QSize:  # noqa: N802 - Qt API
        hint = super().sizeHint()
        return QtCore.QSize(max(hint.width(), 110), hint.height())

    def minimumSizeHint(self) -> QtCore.QSize:  # noqa: N802 - Qt API
        hint = super().minimumSizeHint()
        return QtCore.QSize(max(hint.width(), 80), hint.height())

    # ---------------------------------------------------------------- helpers
    def _current(self) -> Any:
        """The pending value if it parses, else the committed one (where a step starts from)."""
        try:
            return parse_value(self.text(), self.param)
        except SpecError:
            return self._value

    def _on_text_changed(self, *_: object) -> None:
        if self._error and not self.is_pending():
            self._error = ""
        self._restyle()
        self.pending_changed.emit(self.is_pending())

    def _restyle(self) -> None:
        if self._error:
            self.lineEdit().setStyleSheet(ERROR_STYLE)
            self.lineEdit().setToolTip(self._error)
        elif self.is_pending():
            self.lineEdit().setStyleSheet(PENDING_STYLE)
            self.lineEdit().setToolTip("Not applied yet: press Enter (or Apply); Escape reverts.")
        else:
            self.lineEdit().setStyleSheet("")
            self.lineEdit().setToolTip("")


class _ChoiceBox(QtWidgets.QComboBox):
    """A combo box that never takes the wheel (scrolling the panel must not pick a choice)."""

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFocusPolicy(QtCore.Qt.FocusPolicy.StrongFocus)

    def wheelEvent(self, event: QtGui.QWheelEvent) -> None:  # noqa: N802 - Qt API
        event.ignore()


class ParameterPanel(QtWidgets.QGroupBox):
    """A form with one editor per hyperparameter, an Apply button and an undo history.

    See the module docstring for the signals and how a shell wires them.
    """

    edited = QtCore.Signal(str, object)
    undo_requested = QtCore.Signal()
    restore_requested = QtCore.Signal(str, object)
    message = QtCore.Signal(str)
    save_requested = QtCore.Signal()

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__("Hyperparameters", parent)
        self._form = QtWidgets.QFormLayout()
        self._form.setFieldGrowthPolicy(QtWidgets.QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self._editors: dict[str, QtWidgets.QWidget] = {}
        self._specs: dict[str, Param] = {}
        self._values: dict[str, Any] = {}
        self._history: list[tuple[str, Any, Any]] = []
        self.apply_button = QtWidgets.QPushButton("Apply")
        self.apply_button.setToolTip("Send every pending (yellow) field; Enter in a field sends that one")
        self.apply_button.setEnabled(False)
        self.apply_button.clicked.connect(lambda: self.commit())
        self.undo_button = QtWidgets.QPushButton("Undo")
        self.undo_button.setEnabled(False)
        self.undo_button.clicked.connect(self.undo)
        self.save_button = QtWidgets.QPushButton("Save as preset…")
        self.save_button.setToolTip("Write these hyperparameters into a preset file you can run later")
        self.save_button.clicked.connect(self.save_requested)
        # Two rows: the side panel is narrow (~290 px) and must not scroll sideways.
        buttons = QtWidgets.QGridLayout()
        buttons.addWidget(self.apply_button, 0, 0)
        buttons.addWidget(self.undo_button, 0, 1)
        buttons.addWidget(self.save_button, 1, 0, 1, 2)
        self.hint = QtWidgets.QLabel("")
        self.hint.setWordWrap(True)
        self.hint.setStyleSheet("color: #666; font-size: 9pt;")
        outer = QtWidgets.QVBoxLayout(self)
        outer.addLayout(self._form)
        outer.addLayout(buttons)
        outer.addWidget(self.hint)
        self._running = False

    # ---------------------------------------------------------------- building
    def set_specs(self, specs: Mapping[str, Param], values: Mapping[str, Any]) -> None:
        """(Re)build the form for these parameters and current values; clears the history."""
        while self._form.rowCount():
            self._form.removeRow(0)
        self._editors.clear()
        self._history.clear()
        self._specs = dict(specs)
        self._values = dict(values)
        for name, p in self._specs.items():
            ed = self._make_editor(p, self._values.get(name, p.default))
            label = QtWidgets.QLabel(name + (" ⟳" if p.live else ""))
            tip = f"{name}: {p.help or ''}\n{p.describe_bounds()}\n"
            tip += "live: can be changed while running" if p.live else "fixed once the run starts"
            label.setToolTip(tip)
            ed.setToolTip(tip)
            self._form.addRow(label, ed)
            self._editors[name] = ed
        self.set_running(self._running)
        self._update_buttons()

    def set_running(self, running: bool) -> None:
        """While running only live parameters are editable."""
        self._running = running
        for name, ed in self._editors.items():
            enabled = self._specs[name].live or not running
            if not enabled and isinstance(ed, NumberBox) and (ed.is_pending() or ed.error):
                ed.show_value(self._values.get(name, self._specs[name].default))
            ed.setEnabled(enabled)
        self.hint.setText(
            "⟳ marks parameters you can change while the run goes. Type a value and press Enter "
            "(or Apply); it applies at the next step."
            if running
            else "Edits here apply to the next start. Press Enter (or Apply) to keep an edit."
        )
        self._update_buttons()

    # ---------------------------------------------------------------- public API
    def set_value(self, name: str, value: Any) -> None:
        """Show ``value`` as the current value, without emitting (e.g. after the engine applied it)."""
        self._values[name] = value
        ed = self._editors.get(name)
        if ed is None:
            return
        ed.blockSignals(True)
        try:
            if isinstance(ed, NumberBox):
                # The engine confirming the shown value must not wipe what the user is typing.
                if not (ed.is_pending() and value == ed.value()):
                    ed.show_value(value)
            elif isinstance(ed, QtWidgets.QCheckBox):
                ed.setChecked(bool(value))
            elif isinstance(ed, QtWidgets.QComboBox):
                ed.setCurrentText(str(value))
            elif isinstance(ed, QtWidgets.QLineEdit):
                ed.setText(str(value))
        finally:
            ed.blockSignals(False)
        self._update_buttons()

    def values(self) -> dict[str, Any]:
        """The committed values by name."""
        return dict(self._values)

    def editor(self, name: str) -> QtWidgets.QWidget:
        return self._editors[name]

    @property
    def history(self) -> list[tuple[str, Any, Any]]:
        """Committed edits, oldest first, as ``(name, old, new)``."""
        return list(self._history)

    def pending(self) -> list[str]:
        """Names of fields whose text is edited but not committed."""
        return [n for n, ed in self._editors.items() if isinstance(ed, NumberBox) and ed.is_pending()]

    def commit(self, name: str | None = None) -> bool:
        """Commit the pending text of ``name`` (or of every pending field: Apply).

        Returns False if any field was refused (it stays red and nothing of it is applied).
        """
        names = [name] if name is not None else self.pending()
        ok = True
        for n in names:
            ed = self._editors.get(n)
            if not isinstance(ed, NumberBox) or not ed.isEnabled():
                continue
            try:
                value = parse_value(ed.text(), self._specs[n])
            except SpecError as exc:
                ok = False
                reason = f"{exc}; allowed: {self._specs[n].describe_bounds()}. Not applied."
                ed.set_error(reason)
                self.message.emit(reason)
                continue
            ed.show_value(value)
            self._emit_edit(n, value)
        self._update_buttons()
        return ok

    def undo(self) -> None:
        """Revert the newest committed edit (each call walks one edit further back)."""
        if not self._history:
            return
        name, old, new = self._history.pop()
        self._values[name] = old
        self.set_value(name, old)
        self.undo_requested.emit()
        self.restore_requested.emit(name, old)
        self.message.emit(f"Undid {name} = {self._fmt(name, new)}; back to {self._fmt(name, old)}")
        self._update_buttons()

    def refuse(self, name: str, reason: str, value: Any | None = None) -> None:
        """The engine refused a committed edit of ``name``: say why, show ``value``, forget the edit."""
        for i in range(len(self._history) - 1, -1, -1):
            if self._history[i][0] == name:
                del self._history[i]
                break
        if value is not None:
            self.set_value(name, value)
        ed = self._editors.get(name)
        if isinstance(ed, NumberBox):
            ed.set_error(reason)
        self.message.emit(reason)
        self._update_buttons()

    # ---------------------------------------------------------------- internals
    def _fmt(self, name: str, value: Any) -> str:
        p = self._specs.get(name)
        if p is not None and p.type in ("int", "float") and not isinstance(value, bool):
            return format_number(value, p.type)
        return str(value)

    def _emit_edit(self, name: str, value: Any) -> None:
        old = self._values.get(name)
        if old == value:
            return
        self._values[name] = value
        self._history.append((name, old, value))
        self.edited.emit(name, value)
        self.message.emit(f"{name}: {self._fmt(name, old)} → {self._fmt(name, value)}")
        self._update_buttons()

    def _update_buttons(self) -> None:
        self.apply_button.setEnabled(bool(self.pending()))
        self.undo_button.setEnabled(bool(self._history))
        if self._history:
            name, old, new = self._history[-1]
            self.undo_button.setText(f"Undo ({len(self._history)})")
            self.undo_button.setToolTip(
                f"Set {name} back to {self._fmt(name, old)} (it is {self._fmt(name, new)}); "
                "each Undo walks one edit further back"
            )
        else:
            self.undo_button.setText("Undo")
            self.undo_button.setToolTip("Nothing to undo yet")

    def _make_editor(self, p: Param, value: Any) -> QtWidgets.QWidget:
        if p.type in ("float", "int"):
            ed = NumberBox(p, value)
            ed.commit_requested.connect(lambda n=p.name: self.commit(n))
            ed.pending_changed.connect(lambda _=False: self._update_buttons())
            return ed
        if p.type == "bool":
            ed = QtWidgets.QCheckBox()
            ed.setChecked(bool(value))
            # A click is deliberate: it commits (``clicked`` is never emitted by setChecked).
            ed.clicked.connect(lambda v, n=p.name: self._emit_edit(n, bool(v)))
            return ed
        if p.choices:
            ed = _ChoiceBox()
            ed.addItems(list(p.choices))
            ed.setCurrentText(str(value))
            # ``activated`` is the user's pick only (not setCurrentText).
            ed.activated.connect(lambda _i, n=p.name, e=ed: self._emit_edit(n, e.currentText()))
            return ed
        ed = QtWidgets.QLineEdit(str(value))
        ed.returnPressed.connect(lambda n=p.name, e=ed: self._emit_edit(n, e.text()))
        return ed
