"""Run controls (start, pause/resume, step, stop, restart, add a run) and the replay timeline."""

from __future__ import annotations

from PySide6 import QtCore, QtWidgets


class RunControls(QtWidgets.QGroupBox):
    """Buttons that send commands to the live runs. The workspace enables them by state."""

    start_clicked = QtCore.Signal()
    pause_clicked = QtCore.Signal()
    step_clicked = QtCore.Signal()
    stop_clicked = QtCore.Signal()
    restart_clicked = QtCore.Signal()
    add_run_clicked = QtCore.Signal()

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
        self.record = QtWidgets.QCheckBox("Record to HDF5")
        self.record.setChecked(True)
        self.record.setToolTip("Write every frame and event to a recording you can replay")
        grid = QtWidgets.QGridLayout(self)
        for i, b in enumerate((self.start, self.pause, self.step, self.stop, self.restart, self.add_run)):
            grid.addWidget(b, i // 2, i % 2)
        grid.addWidget(self.record, 3, 0, 1, 2)
        self.set_state("idle")

    def set_state(self, state: str) -> None:
        """Enable what makes sense in ``state`` (idle, running, paused, diverged, ended...)."""
        running = state in ("running", "starting")
        paused = state in ("paused", "diverged")
        ended = state in ("finished", "stopped", "failed")
        self.start.setEnabled(state in ("idle",) or ended)
        self.pause.setEnabled(running or paused)
        self.pause.setText("Resume" if paused else "Pause")
        self.step.setEnabled(paused)
        self.stop.setEnabled(running or paused)
        self.restart.setEnabled(state != "idle")
        self.add_run.setEnabled(state != "idle")
        self.record.setEnabled(state == "idle" or ended)


class Timeline(QtWidgets.QWidget):
    """Replay transport: play/pause, a step slider, speed, previous/next event."""

    seek = QtCore.Signal(int)
    toggle = QtCore.Signal()
    faster = QtCore.Signal()
    slower = QtCore.Signal()
    next_event = QtCore.Signal()
    prev_event = QtCore.Signal()

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
