"""Run controls (start, pause/resume, step, stop, restart, add a run, pace) and the replay timeline."""

from __future__ import annotations

import math

from PySide6 import QtCore, QtGui, QtWidgets

from dynlab.source import RunState

#: Paces offered for a live run, in steps per second (0 = as fast as the machine goes).
PACES = (0.0, 100.0, 30.0, 10.0, 3.0, 1.0)


class _NoWheelCombo(QtWidgets.QComboBox):
    """A combo box the mouse wheel changes only when it has focus (scrolling the panel never does)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFocusPolicy(QtCore.Qt.FocusPolicy.StrongFocus)

    def wheelEvent(self, event: QtGui.QWheelEvent) -> None:  # noqa: N802 - Qt API
        if self.hasFocus():
            super().wheelEvent(event)
        else:
            event.ignore()


def format_eta(seconds: float) -> str:
    """``12 s``, ``4 min 05 s``, ``2 h 03 min``; an em dash when unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "—"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class RunControls(QtWidgets.QGroupBox):
    """Buttons that send commands to the live runs. The workspace enables them by state."""

    start_clicked = QtCore.Signal()
    pause_clicked = QtCore.Signal()
    step_clicked = QtCore.Signal()
    stop_clicked = QtCore.Signal()
    restart_clicked = QtCore.Signal()
    add_run_clicked = QtCore.Signal()
    branch_clicked = QtCore.Signal()
    pace_changed = QtCore.Signal(float)

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__("Run", parent)
        style = self.style()
        sp = QtWidgets.QStyle.StandardPixmap

        def button(
            text: str, icon: QtWidgets.QStyle.StandardPixmap, tip: str, signal: QtCore.SignalInstance
        ) -> QtWidgets.QPushButton:
            b = QtWidgets.QPushButton(style.standardIcon(icon), text)
            b.setToolTip(tip)
            b.clicked.connect(signal)
            return b

        self.start = button("Start", sp.SP_MediaPlay, "Start training (Ctrl+R)", self.start_clicked)
        self.pause = button("Pause", sp.SP_MediaPause, "Pause / resume (Space)", self.pause_clicked)
        self.step = button("Step", sp.SP_MediaSeekForward, "One step while paused (.)", self.step_clicked)
        self.stop = button("Stop", sp.SP_MediaStop, "Stop and close the recording", self.stop_clicked)
        self.restart = button(
            "New seed", sp.SP_BrowserReload, "Restart with a new seed", self.restart_clicked
        )
        self.add_run = button(
            "+ Seed",
            sp.SP_FileDialogNewFolder,
            "Add a run of the same preset with another seed, overlaid",
            self.add_run_clicked,
        )
        self.branch = button(
            "Branch…",
            sp.SP_ArrowRight,
            "What if? Branch a new run from here with other knobs",
            self.branch_clicked,
        )
        self.record = QtWidgets.QCheckBox("Record to HDF5")
        self.record.setChecked(True)
        self.record.setToolTip("Write every frame and event to a recording you can replay")
        self.until_stopped = QtWidgets.QCheckBox("Until stopped")
        self.until_stopped.setToolTip("Ignore the preset's step count: train until you press Stop")
        self.pace = _NoWheelCombo()
        for p in PACES:
            self.pace.addItem("Full speed" if p == 0 else f"{p:g} steps/s", p)
        self.pace.setToolTip("Pace of a live run: slow motion for a talk, or full speed")
        self.pace.currentIndexChanged.connect(lambda i: self.pace_changed.emit(float(self.pace.itemData(i))))
        self.progress = QtWidgets.QProgressBar()
        self.progress.setTextVisible(True)
        self.progress.setFormat("step %v / %m")
        self.eta = QtWidgets.QLabel("")
        grid = QtWidgets.QGridLayout(self)
        buttons = (self.start, self.pause, self.step, self.stop, self.restart, self.add_run, self.branch)
        for i, b in enumerate(buttons):
            grid.addWidget(b, i // 2, i % 2)
        grid.addWidget(self.record, 4, 0)
        grid.addWidget(self.until_stopped, 4, 1)
        grid.addWidget(QtWidgets.QLabel("Pace"), 5, 0)
        grid.addWidget(self.pace, 5, 1)
        grid.addWidget(self.progress, 6, 0, 1, 2)
        grid.addWidget(self.eta, 7, 0, 1, 2)
        self.set_state(RunState.IDLE)

    def set_owns_runs(self, owns: bool) -> None:
        """Show the buttons that make runs (start, new seed, + seed, record, pace) only when the lab makes them.

        An attached script owns its own loop and recording: it is paused, stepped, steered
        and stopped from here, never started or re-seeded.
        """
        for w in (self.start, self.restart, self.add_run, self.record, self.until_stopped, self.pace):
            w.setVisible(owns)

    @property
    def pace_value(self) -> float:
        return float(self.pace.currentData() or 0.0)

    def show_progress(self, step: int, total: int, rate: float) -> None:
        """``step / total`` and an ETA from the measured rate; a busy bar when running until stopped."""
        if total <= 0:
            self.progress.setRange(0, 0)
            self.eta.setText(f"step {step:,} · until stopped")
            return
        self.progress.setRange(0, total)
        self.progress.setValue(min(step, total))
        left = (total - step) / rate if rate > 0 else float("nan")
        self.eta.setText(f"ETA {format_eta(left)}" if step < total else "done")

    def set_state(self, state: RunState) -> None:
        """Enable what makes sense in ``state`` (idle, running, paused, diverged, ended...)."""
        state = RunState(state)
        running = state in (RunState.RUNNING, RunState.STARTING)
        paused = state.waiting
        ended = state.ended
        self.start.setEnabled(state is RunState.IDLE or ended)
        self.pause.setEnabled(running or paused)
        self.pause.setText("Resume" if paused else "Pause")
        self.step.setEnabled(paused)
        self.stop.setEnabled(running or paused)
        self.restart.setEnabled(state is not RunState.IDLE)
        self.add_run.setEnabled(state is not RunState.IDLE)
        self.branch.setEnabled(state is not RunState.IDLE and self.record.isChecked())
        self.record.setEnabled(state is RunState.IDLE or ended)
        self.until_stopped.setEnabled(state is RunState.IDLE or ended)


class Timeline(QtWidgets.QWidget):
    """Replay transport: play/pause, a step slider, speed, previous/next event."""

    seek = QtCore.Signal(int)
    toggle = QtCore.Signal()
    faster = QtCore.Signal()
    slower = QtCore.Signal()
    next_event = QtCore.Signal()
    prev_event = QtCore.Signal()
    branch = QtCore.Signal()

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        sp = QtWidgets.QStyle.StandardPixmap
        st = self.style()
        self.play = QtWidgets.QToolButton()
        self.play.setIcon(st.standardIcon(sp.SP_MediaPlay))
        self.play.setToolTip("Play / pause (Space)")
        self.play.clicked.connect(self.toggle)
        self.prev = QtWidgets.QToolButton()
        self.prev.setIcon(st.standardIcon(sp.SP_MediaSkipBackward))
        self.prev.setToolTip("Previous event (Left)")
        self.prev.clicked.connect(self.prev_event)
        self.next = QtWidgets.QToolButton()
        self.next.setIcon(st.standardIcon(sp.SP_MediaSkipForward))
        self.next.setToolTip("Next event (Right)")
        self.next.clicked.connect(self.next_event)
        self.slider = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
        self.slider.setToolTip("Scrub: every view follows the cursor")
        self.slider.sliderMoved.connect(self.seek)
        self.slider.sliderReleased.connect(lambda: self.seek.emit(self.slider.value()))
        self.label = QtWidgets.QLabel("step 0")
        self.label.setMinimumWidth(140)
        self.speed = QtWidgets.QLabel("1×")
        self.speed.setToolTip("Speed: [ slower, ] faster")
        lay = QtWidgets.QHBoxLayout(self)
        lay.setContentsMargins(4, 0, 4, 0)
        for w in (self.prev, self.play, self.next):
            lay.addWidget(w)
        lay.addWidget(self.slider, 1)
        lay.addWidget(self.label)
        lay.addWidget(self.speed)
        self.branch_button = QtWidgets.QPushButton("Branch from here…")
        self.branch_button.setToolTip("What if? Start a new run from the cursor's step with other knobs")
        self.branch_button.clicked.connect(self.branch)
        lay.addWidget(self.branch_button)

    def set_range(self, first: int, last: int) -> None:
        self.slider.setRange(first, max(first, last))

    def show_state(self, step: int, last: int, playing: bool, speed: float) -> None:
        if not self.slider.isSliderDown():
            self.slider.blockSignals(True)
            self.slider.setValue(step)
            self.slider.blockSignals(False)
        self.label.setText(f"step {step:,} / {last:,}")
        self.speed.setText(f"{speed:g}×")
        sp = QtWidgets.QStyle.StandardPixmap
        self.play.setIcon(self.style().standardIcon(sp.SP_MediaPause if playing else sp.SP_MediaPlay))
