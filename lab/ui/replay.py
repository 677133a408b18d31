"""Replay control for the workspace: the timeline drives every open recording together.

A mixin of :class:`~dynlab.ui.workspace.Workspace`: recordings are the sources whose
controls include ``Control.SEEK``; several may be open at once (overlaid, aligned by step),
and a seek, play or jump moves them all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from dynlab.player import Player
from dynlab.source import Control, RunState, Seekable


class ReplayMixin:
    """Seek, play, speed and event jumps over the workspace's recordings."""

    sources: dict[str, Any]
    views: list[Any]
    _error: Any

    def seekables(self) -> dict[str, Seekable]:
        """The sources the timeline drives (recordings), by run id."""
        return {rid: cast(Seekable, s) for rid, s in self.sources.items() if Control.SEEK in s.controls}

    def seekable(self) -> Seekable | None:
        """The first recording the timeline drives, if any."""
        return next(iter(self.seekables().values()), None)

    def add_replay(self, path: str) -> str:
        """Overlay another recording on the open one: its series join every view that shows its streams.

        Runs are aligned by step and each gets its own colour; the legend names the file.
        Returns the run id given to it.
        """
        if not self.seekables():
            self.open_replay(path)
            return ""
        player = Player(path, label=Path(path).stem)
        run_id = player.label
        while run_id in self.sources:
            run_id += "'"
        first = self.sources[""]
        if not first.label:
            first.label = Path(first.recording or "run").stem
            for v in self.views:
                v.add_run("", first.label)
        player.drain()  # its Ready: the views already exist
        self._add_source(run_id, player)
        spans = self.seekables().values()
        self.timeline.set_range(min(s.first for s in spans), max(s.last for s in spans))
        self.seek(max(s.last for s in spans))
        return run_id

    def seek(self, step: int) -> None:
        """Move every recording's cursor to ``step``; the views show the state there."""
        players = self.seekables()
        if not players:
            return
        if any(Control.SET in s.controls and not s.state.ended for s in self.sources.values()):
            # A seek redraws from the recordings; a branch still running has no finished
            # recording to redraw from, so its curves would vanish. Wait for it to end.
            self._error("Seek after the branch ends", "A run is still going: seek once it has finished.")
            return
        self._replay_finished_runs()
        players = self.seekables()
        delivered = {rid: src.seek(step) for rid, src in players.items()}
        for v in self.views:
            v.clear()
        self.log.clear()
        self.events.clear()
        for rid, items in delivered.items():
            self._deliver(rid, items)
        cursor = max(src.step for src in players.values())
        for v in self.views:
            v.set_cursor(cursor)
            v.refresh()
        self._update_status()

    def _replay_finished_runs(self) -> None:
        """Finished live runs beside a recording (branches) become replays of their own files.

        Then the timeline drives them like the parent: a seek redraws every run from its
        recording, and nothing drawn live is lost.
        """
        for rid, src in list(self.sources.items()):
            if Control.SEEK in src.controls or not src.recording or not src.state.ended:
                continue
            src.close()
            player = Player(src.recording, label=src.label)
            player.drain()  # its Ready: the views exist already
            self.sources[rid] = player
            for v in self.views:
                if rid in getattr(v, "ghosts", ()):
                    continue
                v.add_run(rid, src.label)

    def toggle_play(self) -> None:
        players = list(self.seekables().values())
        if not players:
            return
        if any(p.state is RunState.PLAYING for p in players):
            for p in players:
                p.pause()
            return
        if all(p.state is RunState.FINISHED or p.step >= p.total_steps for p in players):
            self.seek(-1)
        for p in players:
            p.resume()

    def faster(self) -> None:
        for p in self.seekables().values():
            p.faster()

    def slower(self) -> None:
        for p in self.seekables().values():
            p.slower()

    def next_event(self) -> None:
        steps = [s for p in self.seekables().values() if (s := p.next_event_step()) is not None]
        if steps:
            self.seek(min(steps))

    def prev_event(self) -> None:
        steps = [s for p in self.seekables().values() if (s := p.prev_event_step()) is not None]
        if steps:
            self.seek(max(steps))
