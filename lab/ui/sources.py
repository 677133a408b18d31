"""What feeds a workspace: a live run or a replayed recording, behind one small interface.

Both expose ``drain()`` (frames and events due now), ``streams``, ``state``, ``step``,
``steps_per_second`` and ``device``; the workspace cannot tell them apart.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from dynlab.player import Player
from dynlab.presets import Preset
from dynlab.runner import Run


def default_host() -> str:
    """Where engines run beside the UI: a child process unless told otherwise.

    On few cores an engine thread in the app process loses to the GIL while the views
    paint (see ``bench/bench_hosts.py``); a child process does not, and its crash
    cannot take the app down.
    """
    return os.environ.get("DYNLAB_HOST", "process")


@dataclass
class LiveSource:
    """A live run of a preset."""

    preset: Preset
    run_id: str
    label: str
    record: str | None = None
    host: str = field(default_factory=default_host)
    run: Run | None = None

    def start(self, *, paused: bool = False) -> None:
        threads = max(1, (os.cpu_count() or 2) - 1) if self.host == "process" else None
        self.run = Run(
            self.preset,
            record=self.record,
            host=self.host,
            on_diverge="pause",
            start_paused=paused,
            torch_threads=threads,
        )
        self.run.start()

    def drain(self) -> list[Any]:
        return self.run.drain() if self.run else []

    @property
    def streams(self):  # noqa: ANN201
        return self.run.streams if self.run else ()

    @property
    def state(self) -> str:
        return self.run.state if self.run else "idle"

    @property
    def step(self) -> int:
        return self.run.step if self.run else 0

    @property
    def steps_per_second(self) -> float:
        return self.run.steps_per_second if self.run else 0.0

    @property
    def device(self) -> str:
        return self.run.device if self.run else ""

    def close(self) -> None:
        if self.run is not None:
            self.run.close()


@dataclass
class ReplaySource:
    """A recording played back."""

    player: Player
    run_id: str
    label: str
    path: str = ""

    def drain(self) -> list[Any]:
        return self.player.advance()

    @property
    def streams(self):  # noqa: ANN201
        return self.player.streams

    @property
    def state(self) -> str:
        return "replay: " + self.player.state

    @property
    def step(self) -> int:
        return max(self.player.cursor, 0)

    @property
    def steps_per_second(self) -> float:
        return self.player.steps_per_second

    @property
    def device(self) -> str:
        return str(self.player.recording.attrs.get("device", "")) + " (recorded)"

    def close(self) -> None:
        self.player.close()
