"""The workspace: one experiment's views, controls, parameters and event log.

It owns the sources and one display timer. A source is anything behind the Qt-free
``dynlab.source.Source`` protocol (a live run in a thread or a child process, a replayed
recording, ...): the workspace never asks which kind it holds, only which controls it
supports. Each tick it drains every source, pushes the frames to the views (cheap
appends) and redraws each view once — the data rate and the draw rate are separate.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PySide6 import QtCore, QtWidgets

from dynlab.frames import Event, Frame, Stream
from dynlab.player import Player
from dynlab.presets import Preset, PresetError, ViewSpec, parse
from dynlab.runner import Run, default_host
from dynlab.source import Control, Item, Ready, RunState, Source
from dynlab.ui.controls import Timeline
from dynlab.ui.recordings import default_views, new_recording
from dynlab.ui.replay import ReplayMixin
from dynlab.ui.sidepanel import SidePanel, alert_for
from dynlab.ui.viewarea import DisplayPacer, ViewArea

DISPLAY_HZ = 30
#: Most status-bar updates a second from the display tick.
STATUS_HZ = 8
#: Wall time one display tick may spend redrawing views, their paint included (the rest
#: wait for the next tick): under 16 ms, a click never waits for more than a 60 Hz frame.
REFRESH_BUDGET_S = 0.012
#: Events drawn as markers on time axes (pause/resume only go to the log).
MARKED = ("set", "phase", "diverged", "failed", "warning", "record_error", "refused", "branch")


class Workspace(ReplayMixin, QtWidgets.QWidget):
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
    open_requested = QtCore.Signal(str)

    def __init__(
        self,
        parent: QtWidgets.QWidget | None = None,
        *,
        host: str | None = None,
        settings: QtCore.QSettings | None = None,
    ) -> None:
        super().__init__(parent)
        self.host = host or default_host()
        self.preset: Preset | None = None
        self.sources: dict[str, Source] = {}
        self.events: list[Event] = []
        self.overrides: dict[str, Any] = {}
        self.last_error = ""
        self._streams: dict[str, Stream] = {}
        self._seed = 0
        self._reported: set[tuple[str, int, str]] = set()
        self.frames_seen = 0
        self.ticks = 0
        #: newest value of every stream, per run (for the status bar and tests)
        self.last_values: dict[str, dict[str, Any]] = {}
        self._param_specs: dict[str, Any] = {}

        self.left_scroll = side = SidePanel()
        self.header, self.controls, self.params, self.log = side.header, side.controls, side.params, side.log

        self.area = ViewArea(settings=settings)
        self.grid_host = self.area  # what exports grab
        self.timeline = Timeline()
        self.timeline.setVisible(False)
        right = QtWidgets.QWidget()
        rl = QtWidgets.QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.addWidget(self.area, 1)
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
        self.controls.pace_changed.connect(self.set_pace)
        self.controls.branch_clicked.connect(self.branch_from_here)
        self.timeline.branch.connect(self.branch_from_here)
        self.left_scroll.branches.open_requested.connect(self.open_requested)
        self.params.edited.connect(self._on_param_edited)
        self.params.restore_requested.connect(self.set_param)
        self.timeline.seek.connect(self.seek)
        self.timeline.toggle.connect(self.toggle_play)
        self.timeline.faster.connect(self.faster)
        self.timeline.slower.connect(self.slower)
        self.timeline.next_event.connect(self.next_event)
        self.timeline.prev_event.connect(self.prev_event)

        self.timer = QtCore.QTimer(self)
        self.timer.timeout.connect(self._tick)
        #: steps the display rate down (and back up) when the views cannot keep up
        self.pacer = DisplayPacer(self.timer, DISPLAY_HZ)
        self._status_at, self._status_states = 0.0, ()

    # ------------------------------------------------------------------ opening
    def open_preset(self, preset: Preset, *, start: bool = False) -> None:
        """Show a preset; ``start`` begins training at once."""
        self.close_sources()
        self.preset = preset
        self._seed = preset.seed
        self.overrides = {}
        self.left_scroll.set_header(preset.title, preset.paper, preset.summary)
        self.controls.setVisible(True)
        self.controls.set_owns_runs(True)
        self.params.setVisible(True)
        self.timeline.setVisible(False)
        self._show_spec_before_start()
        self.controls.set_state(RunState.IDLE)
        self.area.placeholder.setText("Press Start to train." if not start else "Starting the engine…")
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
        if player.file.needs_finalise and self.confirm_finalise(path):
            from dynlab.recording import finalise

            player.close()
            self.recorded.emit(finalise(path) and path)
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
        detail = f"{Path(path).name} — engine {attrs.get('engine')}, seed {attrs.get('seed')}, {attrs.get('status')}"
        self.left_scroll.set_header(f"Replay: {title}", paper, detail)
        self._add_source("", player)
        self._tick()  # hands over Ready: the views are built before the first seek
        self.timeline.set_range(player.first, player.last)
        self.seek(player.last)  # open on the full picture; Space plays from the start
        self.timer.start()

    def confirm_finalise(self, path: str) -> bool:
        """Ask before finalising a killed writer's file (it is changed in place)."""
        answer = QtWidgets.QMessageBox.question(
            self,
            "Finalise this recording?",
            f"{Path(path).name} was being written when its writer was killed, so plain HDF5 tools "
            "refuse it. Finalise it now (clear its write flags, mark it interrupted)? Nothing recorded "
            "is lost; replay works either way.",
        )
        return answer == QtWidgets.QMessageBox.StandardButton.Yes

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
        self.left_scroll.set_header(title or src.label or "Attached run", "", src.recording or "")
        self.area.placeholder.setText("Waiting for the first step…")
        self.controls.set_owns_runs(False)
        self._add_source("", src)
        if views and src.streams:
            self._build_views(views, {s.name: s for s in src.streams})
        self._tick()
        self.timer.start()

    # ------------------------------------------------------------------ sources
    def _add_source(self, run_id: str, src: Source) -> None:
        self.sources[run_id] = src
        steerable = bool(self.steerable())
        self.controls.setVisible(steerable)
        self.params.setVisible(steerable)
        self.timeline.setVisible(bool(self.seekables()))
        for v in self.views:
            v.add_run(run_id, src.label)

    # ------------------------------------------------------------------ branches
    def branch_from_here(self, changes: dict[str, Any] | None = None) -> Source | None:
        """Grow a what-if branch at the replay cursor or a live run (``None`` asks in a dialog)."""
        from dynlab.ui.branching import grow_branch

        return grow_branch(self, changes)

    def steerable(self) -> list[Source]:
        """The sources that take live commands (pause, step, set...)."""
        return [s for s in self.sources.values() if Control.SET in s.controls]

    # ------------------------------------------------------------------ live control
    def start(self) -> None:
        if self.preset is None:
            return
        self.close_sources()
        self._clear_views()
        preset = self.preset.with_overrides(seed=self._seed, hyperparameters=dict(self.overrides))
        self._launch("", preset, label="")
        self.pacer.reset()
        self.timer.start()

    def _launch(self, run_id: str, preset: Preset, label: str) -> Source:
        record = None
        if self.controls.record.isChecked():
            record = new_recording(f"{preset.name}-seed{preset.seed}")
        threads = max(1, (os.cpu_count() or 2) - 1) if self.host == "process" else None
        src = Run(
            preset,
            record=record,
            host=self.host,
            on_diverge="pause",
            torch_threads=threads,
            label=label,
            until_stopped=self.controls.until_stopped.isChecked(),
            pace=self.controls.pace_value,
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

    def set_pace(self, steps_per_second: float) -> None:
        """Hold every live run at ``steps_per_second`` (0: full speed)."""
        for src in self.sources.values():
            if Control.PACE in src.controls and not src.state.ended:
                src.set_pace(steps_per_second)

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
        self._mark_seed_runs()

    def _mark_seed_runs(self) -> None:
        """Tell the views which runs are seeds of this preset (line views band them)."""
        seeds = [rid for rid in self.sources if rid == "" or rid.startswith("seed")]
        for v in self.views:
            v.set_seed_runs(seeds if len(seeds) > 1 else ())

    def set_param(self, name: str, value: Any) -> None:
        """Apply a hyperparameter change: live to every running run, else for the next start."""
        live = [s for s in self.steerable() if not s.state.ended]
        if not live:
            self.overrides[name] = value
            return
        for src in live:
            try:
                src.set(name, value)
            except ValueError as exc:
                self._error("Change refused", str(exc))
                self.params.refuse(name, str(exc), src.params.get(name))
                return

    def undo(self) -> None:
        """Undo the last edit (the panel keeps the history; the restore is sent as a new, recorded change)."""
        self.params.undo()

    def _on_param_edited(self, name: str, value: Any) -> None:
        self.set_param(name, value)

    # ------------------------------------------------------------------ the display tick
    def _tick(self) -> None:
        t0 = time.perf_counter()
        self.ticks += 1
        for run_id, src in list(self.sources.items()):
            items = src.drain()
            if items:
                self._deliver(run_id, items)
        seekable = self.seekable()
        if seekable is not None:
            for v in self.views:
                v.set_cursor(seekable.step)
        drawn = self.area.refresh_within_budget(REFRESH_BUDGET_S, self.pacer.per_view)
        if drawn:
            # Each plot's scene tells its view what changed through queued calls; deliver
            # them now, so the window repaints every redrawn view in one pass instead of one
            # pass (and one flush to the screen) per view a few ms apart.
            QtCore.QCoreApplication.sendPostedEvents(None, QtCore.QEvent.Type.MetaCall)
        # The status bar, progress bar and buttons at most STATUS_HZ times a second (a
        # progress bar repaint alone costs ~0.7 ms on X11), and at once when a state changes.
        states = tuple(src.state for src in self.sources.values())
        if states != self._status_states or t0 - self._status_at >= 1.0 / STATUS_HZ:
            self._status_states, self._status_at = states, t0
            self._update_status()
        self.pacer.tick_started(t0, drawn)

    def _on_ready(self, run_id: str, ready: Ready) -> None:
        """A source knows its streams: build the views once, fill the parameter panel."""
        if not self.views:
            views = self.preset.views if self.preset and self.preset.views else default_views(ready.streams)
            self._build_views(views, {s.name: s for s in ready.streams})
            for rid, other in self.sources.items():
                if rid:
                    for v in self.views:
                        v.add_run(rid, other.label)
            self._mark_seed_runs()
        if ready.param_specs and not self._param_specs:
            self._param_specs = {p.name: p for p in ready.param_specs}
            self.params.set_specs(self._param_specs, dict(ready.params))

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
        src = self.sources.get(run_id)
        self.log.add(ev, src.label if src is not None else "")
        if ev.kind in MARKED:
            for v in self.views:
                v.add_event(ev)
        if ev.kind == "set":
            self.params.set_value(ev.payload["name"], ev.payload["new"])
        elif ev.kind == "refused" and src is not None and Control.SET in src.controls:
            name = str(ev.payload.get("name", ""))
            self.params.refuse(name, str(ev.payload.get("message", "")), src.params.get(name))
        key = (run_id, ev.step, ev.kind)
        # A recording's events are history: shown in the log and on the axes, never as dialogs.
        if src is None or Control.SEEK in src.controls or key in self._reported:
            return
        if (alert := alert_for(ev)) is not None:
            if ev.kind != "refused":  # every refusal is news; a failure is reported once
                self._reported.add(key)
            self._error(*alert)
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
        for run_id, src in self.sources.items():
            who = f"{src.label}: " if src.label else ""
            state = f"replay: {src.state}" if Control.SEEK in src.controls else src.state
            text = f"{who}{state} · step {src.step:,} · {src.steps_per_second:,.1f} steps/s · {src.device}"
            share = self.last_values.get(run_id, {}).get("probe_share")
            if share is not None:  # a probe budget holds: say what the probes cost
                text += f" · probes {100 * float(share):.0f} % of training"
            parts.append(text)
        if self.pacer.behind:
            parts.append(self.pacer.note())
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
            self.controls.show_progress(live[0].step, live[0].total_steps, live[0].steps_per_second)
            self.params.set_running(main in (RunState.RUNNING, RunState.STARTING) or main.waiting)
        src = self.seekable()
        if src is not None:
            self.timeline.show_state(
                max(src.step, src.first), src.last, src.state is RunState.PLAYING, src.speed
            )

    # ------------------------------------------------------------------ views
    @property
    def views(self) -> list[Any]:
        return self.area.views

    def _build_views(self, views: Sequence[ViewSpec], streams: dict[str, Stream]) -> None:
        self._clear_views()
        self._streams = streams
        self.area.build(self.preset.name if self.preset else "replay", views, streams)

    def _clear_views(self) -> None:
        self.area.clear()
        self.events.clear()
        self.log.clear()

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

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        self.close_sources()
        super().closeEvent(event)
