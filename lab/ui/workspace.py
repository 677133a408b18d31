"""The workspace: one experiment's views, controls, parameters and event log.

It owns the sources and one display timer. A source is anything behind the Qt-free
``dynlab.source.Source`` protocol (a live run in a thread or a child process, a replayed
recording, ...): the workspace never asks which kind it holds, only which controls it
supports. Each tick it drains every source, pushes the frames to the views (cheap
appends) and redraws each view once — the data rate and the draw rate are separate.
"""

from __future__ import annotations

import html
import os
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from PySide6 import QtCore, QtWidgets

from dynlab.frames import Event, Frame, Stream
from dynlab.player import Player
from dynlab.presets import Preset, PresetError, ViewSpec, parse
from dynlab.runner import Run, default_host
from dynlab.source import Control, Item, Ready, RunState, Source
from dynlab.ui.controls import RunControls, Timeline
from dynlab.ui.params import ParameterPanel

DISPLAY_HZ = 30
#: Wall time one display tick may spend redrawing views (the rest wait for the next tick).
REFRESH_BUDGET_S = 0.012
#: Events drawn as markers on time axes (pause/resume only go to the log).
MARKED = ("set", "phase", "diverged", "failed", "warning", "record_error", "refused")


def recordings_dir() -> Path:
    base = QtCore.QStandardPaths.writableLocation(QtCore.QStandardPaths.StandardLocation.AppDataLocation)
    path = Path(os.environ.get("DYNLAB_RECORDINGS") or (Path(base or Path.home() / ".dynlab") / "recordings"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_views(streams: Sequence[Stream]) -> tuple[ViewSpec, ...]:
    """One view per stream, for recordings whose preset text cannot be read."""
    return tuple(
        ViewSpec(title=s.name, streams=(s.name,), log_y=s.log_scale)
        for s in streams
        if s.name != "probe_seconds"
    )


class Workspace(QtWidgets.QWidget):
    """Views + controls for one preset (live, possibly several seeds) or one recording.

    Signals
    -------
    status(str)
        Text for the status bar (state, step, steps/s, device).
    error(str, str)
        A title and a one-line message the main window shows in a dialog.
    recorded(str)
        A recording was written (for the recent-files list).
    """

    status = QtCore.Signal(str)
    error = QtCore.Signal(str, str)
    recorded = QtCore.Signal(str)

    def __init__(self, parent: QtWidgets.QWidget | None = None, *, host: str | None = None) -> None:
        super().__init__(parent)
        self.host = host or default_host()
        self.preset: Preset | None = None
        self.sources: dict[str, Source] = {}
        self.views: list[Any] = []
        self.events: list[Event] = []
        self.overrides: dict[str, Any] = {}
        self.undo_stack: list[tuple[str, Any]] = []
        self.last_error = ""
        self._streams: dict[str, Stream] = {}
        self._seed = 0
        self._reported: set[tuple[str, int, str]] = set()
        self.frames_seen = 0
        self.ticks = 0
        #: newest value of every stream, per run (for the status bar and tests)
        self.last_values: dict[str, dict[str, Any]] = {}
        self._next_view = 0
        self._param_specs: dict[str, Any] = {}

        self.header = QtWidgets.QLabel()
        self.header.setWordWrap(True)
        self.header.setTextFormat(QtCore.Qt.TextFormat.RichText)
        self.controls = RunControls()
        self.params = ParameterPanel()
        self.log = QtWidgets.QListWidget()
        self.log.setToolTip("Events: live changes, phases, warnings, divergence")
        left = QtWidgets.QWidget()
        ll = QtWidgets.QVBoxLayout(left)
        ll.addWidget(self.header)
        ll.addWidget(self.controls)
        ll.addWidget(self.params)
        ll.addWidget(QtWidgets.QLabel("Events"))
        ll.addWidget(self.log, 1)
        self.left_scroll = QtWidgets.QScrollArea()
        self.left_scroll.setWidget(left)
        self.left_scroll.setWidgetResizable(True)
        self.left_scroll.setMinimumWidth(290)

        self.grid_host = QtWidgets.QWidget()
        self.grid = QtWidgets.QGridLayout(self.grid_host)
        self.grid.setSpacing(6)
        self.placeholder = QtWidgets.QLabel("Starting the engine…")
        self.placeholder.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self.grid.addWidget(self.placeholder, 0, 0)
        view_scroll = QtWidgets.QScrollArea()
        view_scroll.setWidget(self.grid_host)
        view_scroll.setWidgetResizable(True)
        self.timeline = Timeline()
        self.timeline.setVisible(False)
        right = QtWidgets.QWidget()
        rl = QtWidgets.QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.addWidget(view_scroll, 1)
        rl.addWidget(self.timeline)
        self.splitter = QtWidgets.QSplitter()
        self.splitter.addWidget(self.left_scroll)
        self.splitter.addWidget(right)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([300, 1100])
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.splitter)

        self.controls.start_clicked.connect(self.start)
        self.controls.pause_clicked.connect(self.pause_resume)
        self.controls.step_clicked.connect(self.single_step)
        self.controls.stop_clicked.connect(self.stop)
        self.controls.restart_clicked.connect(self.restart)
        self.controls.add_run_clicked.connect(self.add_seed)
        self.params.edited.connect(self._on_param_edited)
        self.params.undo_requested.connect(self.undo)
        self.timeline.seek.connect(self.seek)
        self.timeline.toggle.connect(self.toggle_play)
        self.timeline.faster.connect(self.faster)
        self.timeline.slower.connect(self.slower)
        self.timeline.next_event.connect(self.next_event)
        self.timeline.prev_event.connect(self.prev_event)

        self.timer = QtCore.QTimer(self)
        self.timer.setInterval(int(1000 / DISPLAY_HZ))
        self.timer.timeout.connect(self._tick)

    # ------------------------------------------------------------------ opening
    def open_preset(self, preset: Preset, *, start: bool = False) -> None:
        """Show a preset; ``start`` begins training at once."""
        self.close_sources()
        self.preset = preset
        self._seed = preset.seed
        self.overrides = {}
        self.header.setText(
            f"<b style='font-size:13pt'>{html.escape(preset.title)}</b><br>"
            f"<span style='color:#555'>{html.escape(preset.paper)}</span><br>"
            f"<span style='font-size:9pt'>{html.escape(preset.summary)}</span>"
        )
        self.controls.setVisible(True)
        self.params.setVisible(True)
        self.timeline.setVisible(False)
        self._show_spec_before_start()
        self.controls.set_state(RunState.IDLE)
        self.placeholder.setText("Press Start to train." if not start else "Starting the engine…")
        if start:
            self.start()

    def _show_spec_before_start(self) -> None:
        """Fill the parameter panel from the preset's values; specs arrive with the run."""
        if self._param_specs and self.preset is not None:
            vals = {n: self.preset.hyperparameters.get(n, p.default) for n, p in self._param_specs.items()}
            self.params.set_specs(self._param_specs, vals | self.overrides)

    def open_replay(self, path: str) -> None:
        """Replay a recording through the same views (raises RecordingError on a bad file)."""
        player = Player(path)
        self.close_sources()
        try:
            preset = parse(player.preset_text, name=Path(path).stem, path=path, check_engine=False)
            title, paper = preset.title, preset.paper
        except PresetError:
            preset = None
            title, paper = Path(path).name, ""
        self.preset = preset
        attrs = player.file.attrs
        self.header.setText(
            f"<b style='font-size:13pt'>Replay: {html.escape(title)}</b><br>"
            f"<span style='color:#555'>{html.escape(paper)}</span><br>"
            f"<span style='font-size:9pt'>{html.escape(Path(path).name)} — engine "
            f"{html.escape(str(attrs.get('engine')))}, seed {html.escape(str(attrs.get('seed')))}, "
            f"{html.escape(str(attrs.get('status')))}</span>"
        )
        self._add_source("", player)
        self._tick()  # hands over Ready: the views are built before the first seek
        self.timeline.set_range(player.first, player.last)
        self.seek(player.last)  # open on the full picture; Space plays from the start
        self.timer.start()

    def open_source(self, src: Source, views: Sequence[ViewSpec] | None = None, title: str = "") -> None:
        """Show any source (an attached script...) through the same views.

        ``views`` are built at once when the source already knows its streams; otherwise
        (and when ``None``) every stream gets a view when the source is ready.
        """
        self.close_sources()
        self._clear_views()
        self.preset = None
        self.overrides = {}
        self._param_specs = {}
        self.header.setText(f"<b style='font-size:13pt'>{html.escape(title or src.label or 'Attached run')}</b>")
        self.placeholder.setText("Waiting for the first step…")
        self._add_source("", src)
        if views and src.streams:
            self._build_views(views, {s.name: s for s in src.streams})
        self._tick()
        self.timer.start()

    # ------------------------------------------------------------------ sources
    def _add_source(self, run_id: str, src: Source) -> None:
        self.sources[run_id] = src
        steerable = Control.SET in src.controls
        self.controls.setVisible(steerable)
        self.params.setVisible(steerable)
        self.timeline.setVisible(Control.SEEK in src.controls)
        for v in self.views:
            v.add_run(run_id, src.label)

    def steerable(self) -> list[Source]:
        """The sources that take live commands (pause, step, set...)."""
        return [s for s in self.sources.values() if Control.SET in s.controls]

    def seekable(self) -> Source | None:
        """The source that drives the timeline (a recording), if any."""
        return next((s for s in self.sources.values() if Control.SEEK in s.controls), None)

    # ------------------------------------------------------------------ live control
    def start(self) -> None:
        if self.preset is None:
            return
        self.close_sources()
        self._clear_views()
        preset = self.preset.with_overrides(seed=self._seed, hyperparameters=dict(self.overrides))
        self._launch("", preset, label="")
        self.timer.start()

    def _launch(self, run_id: str, preset: Preset, label: str) -> Source:
        record = None
        if self.controls.record.isChecked():
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            record = str(recordings_dir() / f"{preset.name}-{stamp}-seed{preset.seed}.h5")
        threads = max(1, (os.cpu_count() or 2) - 1) if self.host == "process" else None
        src = Run(
            preset, record=record, host=self.host, on_diverge="pause", torch_threads=threads, label=label
        )
        try:
            src.start()
        except Exception as exc:  # bad device etc.: one line, the app stays up
            self._error("Could not start the run", str(exc))
            raise
        self._add_source(run_id, src)
        return src

    def pause_resume(self) -> None:
        for src in self.sources.values():
            if Control.RESUME in src.controls and src.state.waiting:
                src.resume()
            elif Control.PAUSE in src.controls and src.state in (RunState.RUNNING, RunState.STARTING):
                src.pause()

    def single_step(self) -> None:
        for src in self.steerable():
            src.single_step(1)

    def stop(self) -> None:
        for src in self.steerable():
            src.stop()

    def restart(self) -> None:
        """Restart from scratch with the next seed."""
        self._seed += 1
        self.start()

    def add_seed(self) -> None:
        """Another run of the same preset with a new seed, overlaid on the same views."""
        if self.preset is None or not self.sources:
            return
        seed = self._seed + len(self.sources)
        first = self.sources.get("")
        if first is not None and len(self.sources) == 1:
            first.label = f"seed {self._seed}"
            for v in self.views:
                v.add_run("", first.label)
        preset = self.preset.with_overrides(seed=seed, hyperparameters=dict(self.overrides))
        self._launch(f"seed{seed}", preset, f"seed {seed}")

    def set_param(self, name: str, value: Any) -> None:
        """Apply a hyperparameter change: live to every running run, else for the next start."""
        live = [s for s in self.steerable() if not s.state.ended]
        if not live:
            self.overrides[name] = value
            return
        old = live[0].params.get(name)
        for src in live:
            try:
                src.set(name, value)
            except ValueError as exc:
                self._error("Change refused", str(exc))
                self.params.set_value(name, src.params.get(name))
                return
        self.undo_stack.append((name, old))
        self.params.undo_button.setEnabled(True)

    def undo(self) -> None:
        """Undo the last live change (sent as a new change, so it is recorded too)."""
        if not self.undo_stack:
            return
        name, old = self.undo_stack.pop()
        for src in self.steerable():
            src.set(name, old)
        self.params.set_value(name, old)
        self.params.undo_button.setEnabled(bool(self.undo_stack))

    def _on_param_edited(self, name: str, value: Any) -> None:
        self.set_param(name, value)

    # ------------------------------------------------------------------ replay control
    def seek(self, step: int) -> None:
        src = self.seekable()
        if src is None:
            return
        items = src.seek(step)
        for v in self.views:
            v.clear()
        self.log.clear()
        self.events.clear()
        self._deliver("", items)
        for v in self.views:
            v.set_cursor(src.step)
            v.refresh()
        self._update_status()

    def toggle_play(self) -> None:
        src = self.seekable()
        if src is None:
            return
        if src.state is RunState.PLAYING:
            src.pause()
            return
        if src.state is RunState.FINISHED or src.step >= src.total_steps:
            self.seek(-1)
        src.resume()

    def faster(self) -> None:
        if (src := self.seekable()) is not None:
            src.faster()

    def slower(self) -> None:
        if (src := self.seekable()) is not None:
            src.slower()

    def next_event(self) -> None:
        src = self.seekable()
        if src is not None and (s := src.next_event_step()) is not None:
            self.seek(s)

    def prev_event(self) -> None:
        src = self.seekable()
        if src is not None and (s := src.prev_event_step()) is not None:
            self.seek(s)

    # ------------------------------------------------------------------ the display tick
    def _tick(self) -> None:
        self.ticks += 1
        for run_id, src in list(self.sources.items()):
            items = src.drain()
            if items:
                self._deliver(run_id, items)
        seekable = self.seekable()
        if seekable is not None:
            for v in self.views:
                v.set_cursor(seekable.step)
        self._refresh_within_budget()
        self._update_status()

    def _on_ready(self, run_id: str, ready: Ready) -> None:
        """A source knows its streams: build the views once, fill the parameter panel."""
        if not self.views:
            views = self.preset.views if self.preset and self.preset.views else default_views(ready.streams)
            self._build_views(views, {s.name: s for s in ready.streams})
            for rid, other in self.sources.items():
                if rid:
                    for v in self.views:
                        v.add_run(rid, other.label)
        if ready.param_specs and not self._param_specs:
            self._param_specs = {p.name: p for p in ready.param_specs}
            self.params.set_specs(self._param_specs, dict(ready.params))

    def _refresh_within_budget(self) -> None:
        """Redraw views round-robin until this tick's time budget is spent.

        One tick redrawing every view can take longer than a frame when several heavy
        views change at once; that is the latency a click waits for. Views left over
        are redrawn first on the next tick, so each still updates within a few ticks.
        """
        n = len(self.views)
        if not n:
            return
        deadline = time.perf_counter() + REFRESH_BUDGET_S
        start = self._next_view % n
        for k in range(n):
            i = (start + k) % n
            self.views[i].refresh()
            self._next_view = i + 1
            if time.perf_counter() > deadline:
                break

    def _deliver(self, run_id: str, items: Sequence[Item]) -> None:
        for ready in (i for i in items if isinstance(i, Ready)):
            self._on_ready(run_id, ready)
        frames = [i for i in items if isinstance(i, Frame)]
        self.frames_seen += len(frames)
        latest = self.last_values.setdefault(run_id, {})
        for f in frames:
            latest.update(f.data)
        if frames:
            for v in self.views:
                v.push(frames, run=run_id)
        for ev in (i for i in items if isinstance(i, Event)):
            self._on_event(run_id, ev)

    def _on_event(self, run_id: str, ev: Event) -> None:
        self.events.append(ev)
        who = (
            f"[{self.sources[run_id].label}] "
            if run_id in self.sources and self.sources[run_id].label
            else ""
        )
        item = QtWidgets.QListWidgetItem(f"{ev.step:>7}  {who}{ev.label}")
        if ev.kind in ("failed", "diverged", "record_error", "refused"):
            item.setForeground(QtCore.Qt.GlobalColor.red)
        self.log.addItem(item)
        self.log.scrollToBottom()
        if ev.kind in MARKED:
            for v in self.views:
                v.add_event(ev)
        if ev.kind == "set":
            self.params.set_value(ev.payload["name"], ev.payload["new"])
        key = (run_id, ev.step, ev.kind)
        src = self.sources.get(run_id)
        # A recording's events are history: shown in the log and on the axes, never as dialogs.
        history = src is None or Control.SEEK in src.controls
        if history or key in self._reported:
            return
        if ev.kind == "failed":
            self._reported.add(key)
            self._error("The engine failed", f"step {ev.step}: {ev.payload.get('message', '')}")
        elif ev.kind == "diverged":
            self._reported.add(key)
            self._error(
                "The run diverged",
                f"{ev.payload.get('message', '')}. The run is paused: lower the "
                "learning rate and resume, or restart.",
            )
        elif ev.kind == "refused":
            self._error("Change refused", ev.payload.get("message", ""))
        elif ev.kind == "record_error":
            self._reported.add(key)
            self._ask_continue_unrecorded(run_id, ev.payload.get("message", ""))
        elif ev.kind == "end" and src.recording:
            self.recorded.emit(src.recording)

    def _ask_continue_unrecorded(self, run_id: str, message: str) -> None:
        box = QtWidgets.QMessageBox(
            QtWidgets.QMessageBox.Icon.Warning,
            "Recording failed",
            f"{message}\n\nTraining is paused. Continue without recording?",
            QtWidgets.QMessageBox.StandardButton.Yes | QtWidgets.QMessageBox.StandardButton.No,
            self,
        )
        self.last_error = message

        def done(result: int) -> None:
            src = self.sources.get(run_id)
            if src is None or Control.CONTINUE_UNRECORDED not in src.controls:
                return
            if result == QtWidgets.QMessageBox.StandardButton.Yes:
                src.continue_unrecorded()
            else:
                src.stop()

        box.finished.connect(done)
        box.open()
        self._dialog = box

    def _error(self, title: str, message: str) -> None:
        self.last_error = message
        self.error.emit(title, message)

    def _update_status(self) -> None:
        if not self.sources:
            self.status.emit("")
            return
        parts = []
        for src in self.sources.values():
            who = f"{src.label}: " if src.label else ""
            state = f"replay: {src.state}" if Control.SEEK in src.controls else src.state
            parts.append(
                f"{who}{state} · step {src.step:,} · {src.steps_per_second:,.1f} steps/s · {src.device}"
            )
        self.status.emit("   |   ".join(parts))
        live = self.steerable()
        if live:
            states = {s.state for s in live}
            main = (
                states.pop()
                if len(states) == 1
                else (RunState.RUNNING if RunState.RUNNING in states else live[0].state)
            )
            self.controls.set_state(main)
            self.params.set_running(main in (RunState.RUNNING, RunState.STARTING) or main.waiting)
        src = self.seekable()
        if src is not None:
            self.timeline.show_state(
                max(src.step, src.first), src.last, src.state is RunState.PLAYING, src.speed
            )

    # ------------------------------------------------------------------ views
    def _build_views(self, views: Sequence[ViewSpec], streams: dict[str, Stream]) -> None:
        from dynlab.views import make_view

        self._clear_views()
        self._streams = streams
        self.placeholder.setVisible(False)
        cols = 2 if len(views) > 1 else 1
        for i, spec in enumerate(views):
            view = make_view(spec, streams)
            view.setMinimumHeight(300)
            self.grid.addWidget(self._framed(spec.title, view), i // cols, i % cols)
            self.views.append(view)

    def _framed(self, title: str, view: QtWidgets.QWidget) -> QtWidgets.QWidget:
        # The view draws its own title; the frame only separates the plots.
        box = QtWidgets.QFrame()
        box.setObjectName("viewFrame")
        box.setToolTip(title)
        box.setStyleSheet("#viewFrame { border: 1px solid #ccc; border-radius: 4px; }")
        lay = QtWidgets.QVBoxLayout(box)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(view)
        return box

    def _clear_views(self) -> None:
        for v in self.views:
            box = v.parentWidget()
            self.grid.removeWidget(box)
            box.deleteLater()
        self.views = []
        self.events.clear()
        self.log.clear()
        self.placeholder.setVisible(True)

    def view_titles(self) -> list[str]:
        return [v.view.title for v in self.views]

    # ------------------------------------------------------------------ teardown
    def close_sources(self) -> None:
        """Stop every run (waiting for its worker) and close any replay."""
        self.timer.stop()
        for src in self.sources.values():
            try:
                src.close()
            except Exception:
                pass
        # Hand the last events (the end marker...) to the log before forgetting the runs.
        self.sources.clear()
        self._reported.clear()
        self.undo_stack.clear()
        self.params.undo_button.setEnabled(False)

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        self.close_sources()
        super().closeEvent(event)
