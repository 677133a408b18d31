"""The parameter panel: steering that cannot misfire (issue 17, items 1, 2 and 14).

A wheel over an unfocused field changes nothing; typing stays pending until Enter or
Apply; bad input is refused with the bound and never applied; Undo walks back through
every edit; tiny values are shown with significant digits.
"""

from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")
from PySide6 import QtCore, QtGui, QtWidgets  # noqa: E402

from dynlab.frames import Param  # noqa: E402
from dynlab.ui.params import NumberBox, ParameterPanel, format_number  # noqa: E402

pytestmark = pytest.mark.qt_log_level_fail("WARNING")

SPECS = {
    "lr": Param("lr", "float", 0.2, 1e-6, 10.0, live=True, help="learning rate"),
    "weight_decay": Param("weight_decay", "float", 0.01, 0.0, 1.0, live=True),
    "eps": Param("eps", "float", 2.22e-16, 0.0, 1.0),
    "batch_size": Param("batch_size", "int", 64, 1, 4096),
    "optimizer": Param("optimizer", "str", "sgd", choices=("sgd", "adam")),
    "nesterov": Param("nesterov", "bool", False, live=True),
}


@pytest.fixture
def panel(qtbot):
    # In a scroll area with a sibling that can hold focus, as in the workspace.
    host = QtWidgets.QWidget()
    lay = QtWidgets.QVBoxLayout(host)
    other = QtWidgets.QLineEdit()
    p = ParameterPanel()
    lay.addWidget(other)
    lay.addWidget(p)
    scroll = QtWidgets.QScrollArea()
    scroll.setWidget(host)
    scroll.setWidgetResizable(True)
    qtbot.addWidget(scroll)
    p.set_specs(SPECS, {n: s.default for n, s in SPECS.items()})
    scroll.show()
    qtbot.waitExposed(scroll)
    other.setFocus()
    p._other, p._scroll = other, scroll  # keep the top-level widget alive
    return p


def _wheel(widget: QtWidgets.QWidget, ticks: int = 1) -> None:
    pos = QtCore.QPointF(widget.width() / 2, widget.height() / 2)
    ev = QtGui.QWheelEvent(
        pos,
        widget.mapToGlobal(pos),
        QtCore.QPoint(0, 0),
        QtCore.QPoint(0, 120 * ticks),
        QtCore.Qt.MouseButton.NoButton,
        QtCore.Qt.KeyboardModifier.NoModifier,
        QtCore.Qt.ScrollPhase.NoScrollPhase,
        False,
    )
    QtWidgets.QApplication.sendEvent(widget, ev)


def _type(qtbot, box: NumberBox, text: str, enter: bool = True) -> None:
    box.setFocus()
    box.lineEdit().selectAll()
    qtbot.keyClicks(box, text)
    if enter:
        qtbot.keyClick(box, QtCore.Qt.Key.Key_Return)


def test_wheel_over_an_unfocused_field_changes_nothing_and_emits_nothing(panel, qtbot):
    lr = panel.editor("lr")
    choice = panel.editor("optimizer")
    assert not lr.hasFocus()
    with qtbot.assertNotEmitted(panel.edited), qtbot.assertNotEmitted(panel.message):
        for _ in range(3):
            _wheel(lr, 1)
            _wheel(choice, -1)
    assert lr.text() == "0.2" and lr.value() == 0.2
    assert choice.currentText() == "sgd"
    assert panel.pending() == [] and panel.history == []


def test_wheel_on_a_focused_field_only_stages_a_pending_edit(panel, qtbot):
    lr = panel.editor("lr")
    lr.setFocus()
    qtbot.waitUntil(lr.hasFocus)
    with qtbot.assertNotEmitted(panel.edited):
        _wheel(lr, 1)
    assert lr.text() == "0.21" and lr.value() == 0.2  # staged, not applied
    assert panel.pending() == ["lr"] and panel.apply_button.isEnabled()
    with qtbot.waitSignal(panel.edited) as sig:
        panel.apply_button.click()
    assert sig.args == ["lr", 0.21]


def test_typing_commits_only_on_enter(panel, qtbot):
    lr = panel.editor("lr")
    with qtbot.assertNotEmitted(panel.edited):
        _type(qtbot, lr, "0.15", enter=False)
        panel._other.setFocus()  # focus-out is not a commit
        qtbot.waitUntil(lambda: not lr.hasFocus())
    assert lr.value() == 0.2 and panel.pending() == ["lr"]
    with qtbot.waitSignal(panel.edited) as sig:
        _type(qtbot, lr, "0.15")
    assert sig.args == ["lr", 0.15]
    assert panel.values()["lr"] == 0.15 and panel.pending() == []
    # Escape reverts a pending edit.
    _type(qtbot, lr, "3", enter=False)
    qtbot.keyClick(lr, QtCore.Qt.Key.Key_Escape)
    assert lr.text() == "0.15" and panel.pending() == []


@pytest.mark.parametrize(
    ("name", "text", "needle"),
    [("lr", "abc", "cannot read 'abc' as float"), ("weight_decay", "-0.5", "below its minimum 0")],
)
def test_invalid_input_is_refused_with_the_bound_and_never_applied(panel, qtbot, name, text, needle):
    box = panel.editor(name)
    before = box.value()
    with qtbot.assertNotEmitted(panel.edited), qtbot.waitSignal(panel.message) as msg:
        _type(qtbot, box, text)
    reason = msg.args[0]
    assert needle in reason and "allowed: float in [" in reason and "Not applied" in reason
    assert box.value() == before and panel.values()[name] == before  # not clamped to -0.0
    assert box.text() == text  # the user's text stays, marked red, with the reason
    assert "#ffd8d8" in box.lineEdit().styleSheet() and box.lineEdit().toolTip() == reason
    assert panel.commit() is False  # Apply refuses it too
    assert panel.history == []


def test_undo_walks_back_through_three_edits(panel, qtbot):
    lr = panel.editor("lr")
    for text in ("0.19", "0.18", "0.17"):
        _type(qtbot, lr, text)
    assert [h[2] for h in panel.history] == [0.19, 0.18, 0.17]
    assert panel.undo_button.text() == "Undo (3)"
    restored = []
    panel.restore_requested.connect(lambda n, v: restored.append((n, v)))
    with qtbot.assertNotEmitted(panel.edited):
        for _ in range(3):
            with qtbot.waitSignal(panel.undo_requested):
                panel.undo_button.click()
    assert restored == [("lr", 0.18), ("lr", 0.19), ("lr", 0.2)]
    assert lr.value() == 0.2 and lr.text() == "0.2" and panel.values()["lr"] == 0.2
    assert not panel.undo_button.isEnabled() and panel.history == []


def test_engine_values_do_not_enter_the_history_and_refusals_leave_it(panel, qtbot):
    lr = panel.editor("lr")
    _type(qtbot, lr, "0.5")
    with qtbot.assertNotEmitted(panel.edited):
        panel.set_value("lr", 0.5)  # the engine's ``set`` event
    assert len(panel.history) == 1
    panel.refuse("lr", "lr refused by the engine", 0.2)
    assert panel.history == [] and lr.value() == 0.2 and "refused" in lr.lineEdit().toolTip()


def test_checkbox_and_choice_commit_on_a_deliberate_click(panel, qtbot):
    box = panel.editor("nesterov")
    with qtbot.waitSignal(panel.edited) as sig:
        box.click()
    assert sig.args == ["nesterov", True]
    choice = panel.editor("optimizer")
    with qtbot.waitSignal(panel.edited) as sig:
        choice.setCurrentIndex(1)  # what a pick in the popup does, then Qt emits activated
        choice.activated.emit(1)
    assert sig.args == ["optimizer", "adam"]


def test_small_values_are_shown_with_significant_digits(panel):
    assert panel.editor("eps").text() == "2.22e-16"
    assert format_number(2.220446049250313e-16) == "2.220446049e-16"
    assert format_number(0.19) == "0.19" and format_number(1e-6) == "1e-6"
    assert format_number(1e12) == "1e+12" and format_number(300, "int") == "300"
    assert format_number(0.0) == "0"


def test_arrow_steps_are_adaptive_and_stay_in_bounds(panel, qtbot):
    wd = panel.editor("weight_decay")
    wd.stepBy(-1)
    assert wd.text() == "0.009"
    _type(qtbot, wd, "0.95", enter=False)
    wd.stepBy(10)
    assert wd.text() == "1"  # stepping stops at the bound, it never goes past it
    assert not wd.stepEnabled() & QtWidgets.QAbstractSpinBox.StepEnabledFlag.StepUpEnabled
    bs = panel.editor("batch_size")
    bs.stepBy(3)
    assert bs.text() == "67" and bs.value() == 64


def test_non_live_fields_are_locked_while_running_and_pending_text_dropped(panel, qtbot):
    eps = panel.editor("eps")
    _type(qtbot, eps, "1e-3", enter=False)
    panel.set_running(True)
    assert not eps.isEnabled() and eps.text() == "2.22e-16" and panel.pending() == []
    assert panel.editor("lr").isEnabled()
