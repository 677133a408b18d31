"""The workspace: one experiment's views, controls, parameters and event log.

It owns the sources (live runs or a replay) and one display timer. Each tick it drains
every source, pushes the frames to the views (cheap appends) and redraws each view
once — the data rate and the draw rate are separate, as DESIGN.md asks.
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
from dynlab.ui.controls import RunControls, Timeline
from dynlab.ui.params import ParameterPanel
from dynlab.ui.sources import LiveSource, ReplaySource, default_host

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
        self.sources: dict[str, LiveSource | ReplaySource] = {}
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
        self.controls.set_state("idle")
        self.placeholder.setText("Press Start to train." if not start else "Starting the engine…")
        if start:
            self.start()

    def _show_spec_before_start(self) -> None:
        """Fill the parameter panel from the preset's values; specs arrive with the run."""
        specs = getattr(self, "_param_specs", {})
        if specs:
            vals = {n: self.preset.hyperparameters.get(n, p.default) for n, p in specs.items()}
            self.params.set_specs(specs, vals | self.overrides)

    def open_replay(self, path: str) -> None:
        """Replay a recording through the same views (raises RecordingError on a bad file)."""
        player = Player(path)
        self.close_sources()
        try:
            preset = parse(player.preset_text, name=Path(path).stem, path=path, check_engine=False)
            views = preset.views
            title, paper = preset.title, preset.paper
        except PresetError:
            preset, views = None, ()
            title, paper = Path(path).name, ""
        self.preset = preset
        attrs = player.recording.attrs
        self.header.setText(
            f"<b style='font-size:13pt'>Replay: {html.escape(title)}</b><br>"
            f"<span style='color:#555'>{html.escape(paper)}</span><br>"
            f"<span style='font-size:9pt'>{html.escape(Path(path).name)} — engine {html.escape(str(attrs.get('engine')))}, "
            f"seed {attrs.get('seed')}, {html.escape(str(attrs.get('status')))}</span>"
        )
        self.controls.setVisible(False)
        self.params.setVisible(False)
        src = ReplaySource(player, "", "", path)
        self.sources[""] = src
        self._build_views(views or default_views(player.streams), {s.name: s for s in player.streams})
        self.timeline.setVisible(True)
        self.timeline.set_range(player.first, player.last)
        self.seek(player.last)  # open on the full picture; Space plays from the start
        self.timer.start()

    # ------------------------------------------------------------------ live control
    def start(self) -> None:
        if self.preset is None:
            return
        self.close_sources()
        self._clear_views()
        preset = self.preset.with_overrides(seed=self._seed, hyperparameters=dict(self.overrides))
        self._launch("", preset, label="")
        self.timer.start()

    def _launch(self, run_id: str, preset: Preset, label: str) -> LiveSource:
        record = None
        if self.controls.record.isChecked():
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            record = str(recordings_dir() / f"{preset.name}-{stamp}-seed{preset.seed}.h5")
        src = LiveSource(preset, run_id, label, record=record, host=self.host)
        try:
            src.start()
        except Exception as exc:  # bad device etc.: one line, the app stays up
            self._error("Could not start the run", str(exc))
            raise
        self.sources[run_id] = src
        for v in self.views:
            v.add_run(run_id, label)
        return src

    def pause_resume(self) -> None:
        for src in self._live():
            if src.state in ("paused", "diverged"):
                src.run.resume()
            elif src.state in ("running", "starting"):
                src.run.pause()

    def single_step(self) -> None:
        for src in self._live():
            src.run.single_step(1)

    def stop(self) -> None:
        for src in self._live():
            src.run.stop()

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
            for v in self.views:
                v.add_run("", f"seed {self._seed}")
        preset = self.preset.with_overrides(seed=seed, hyperparameters=dict(self.overrides))
        self._launch(f"seed{seed}", preset, f"seed {seed}")

    def set_param(self, name: str, value: Any) -> None:
        """Apply a hyperparameter change: live to every running run, else for the next start."""
        live = [s for s in self._live() if s.state not in ("finished", "stopped", "failed")]
        if not live:
            self.overrides[name] = value
            return
        for src in live:
            try:
                old = src.run.params.get(name)
                src.run.set(name, value)
            except ValueError as exc:
                self._error("Change refused", str(exc))
                self.params.set_value(name, src.run.params.get(name))
                return
        self.undo_stack.append((name, old))
        self.params.undo_button.setEnabled(True)

    def undo(self) -> None:
        """Undo the last live change (sent as a new change, so it is recorded too)."""
        if not self.undo_stack:
            return
        name, old = self.undo_stack.pop()
        for src in self._live():
            src.run.set(name, old)
        self.params.set_value(name, old)
        self.params.undo_button.setEnabled(bool(self.undo_stack))

    def _on_param_edited(self, name: str, value: Any) -> None:
        self.set_param(name, value)

    def _live(self) -> list[LiveSource]:
        return [s for s in self.sources.values() if isinstance(s, LiveSource) and s.run is not None]

    # ------------------------------------------------------------------ replay control
    def _player(self) -> Player | None:
        src = self.sources.get("")
        return src.player if isinstance(src, ReplaySource) else None

    def seek(self, step: int) -> None:
        p = self._player()
        if p is None:
            return
        items = p.seek(step)
        for v in self.views:
            v.clear()
        self.log.clear()
        self.events.clear()
        self._deliver("", items)
        for v in self.views:
            v.set_cursor(p.cursor)
            v.refresh()
        self._update_status()

    def toggle_play(self) -> None:
        p = self._player()
        if p is not None:
            if not p.playing and p.cursor >= p.last:
                self.seek(p.first - 1)
            p.toggle()

    def faster(self) -> None:
        if (p := self._player()) is not None:
            p.faster()

    def slower(self) -> None:
        if (p := self._player()) is not None:
            p.slower()

    def next_event(self) -> None:
        p = self._player()
        if p is not None and (s := p.next_event_step()) is not None:
            self.seek(s)

    def prev_event(self) -> None:
        p = self._player()
        if p is not None and (s := p.prev_event_step()) is not None:
            self.seek(s)

    # ------------------------------------------------------------------ the display tick
    def _tick(self) -> None:
        self.ticks += 1
        for run_id, src in list(self.sources.items()):
            items = src.drain()
            if not self.views and src.streams:
                views = self.preset.views if self.preset and self.preset.views else default_views(src.streams)
                self._build_views(views, {s.name: s for s in src.streams})
                if isinstance(src, LiveSource):
                    self._param_specs = dict(src.run.param_specs)
                    self.params.set_specs(self._param_specs, src.run.params)
                for rid, other in self.sources.items():
                    if rid:
                        for v in self.views:
                            v.add_run(rid, other.label)
            if items:
                self._deliver(run_id, items)
        p = self._player()
        if p is not None:
            for v in self.views:
                v.set_cursor(p.cursor)
        self._refresh_within_budget()
        self._update_status()

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

    def _deliver(self, run_id: str, items: Sequence[Frame | Event]) -> None:
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
        replay = isinstance(self.sources.get(run_id), ReplaySource)
        if replay or key in self._reported:
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
        elif ev.kind == "end":
            src = self.sources.get(run_id)
            if isinstance(src, LiveSource) and src.record:
                self.recorded.emit(src.record)

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
            if not isinstance(src, LiveSource):
                return
            if result == QtWidgets.QMessageBox.StandardButton.Yes:
                src.run.continue_unrecorded()
            else:
                src.run.stop()

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
            parts.append(
                f"{who}{src.state} · step {src.step:,} · {src.steps_per_second:,.1f} steps/s · {src.device}"
            )
        self.status.emit("   |   ".join(parts))
        live = self._live()
        if live:
            states = {s.state for s in live}
            main = (
                next(iter(states))
                if len(states) == 1
                else ("running" if "running" in states else live[0].state)
            )
            self.controls.set_state(main)
            self.params.set_running(main in ("running", "paused", "diverged", "starting"))
        p = self._player()
        if p is not None:
            self.timeline.show_state(max(p.cursor, p.first), p.last, p.playing, p.speed)

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
