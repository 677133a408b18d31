"""What-if branches: start a run from a recording's checkpoint, change a knob, go on.

:func:`prepare` reads everything a branch needs from the parent recording, read-only, and
checks it before anything runs: the step is inside the parent, the engine is installed,
the format is known, the checkpoint passes its checksum. The worker then restores the
state, replays the parent's live edits up to the branch step, applies the new edits and
records from there. The branch's recording names its parent in its root attributes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dynlab import checkpoint
from dynlab.presets import Preset, PresetError, parse
from dynlab.recording import Recording, RecordingError
from dynlab.recording_reader import MAX_EVENTS


class BranchError(RuntimeError):
    """A branch that cannot start; the message names the parent and the reason."""


@dataclass
class BranchStart:
    """Plain data the worker needs to start a branch (crosses to a child process)."""

    parent: str
    at: int
    parent_started_at: str
    #: The parent's live edits at or before ``at``: ``(step, name, value)``, replayed in order.
    edits: list[tuple[int, str, Any]]
    checkpoint_step: int | None = None  # None: no checkpoint, re-run from step 0
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    #: The branch's own edits, applied at ``at`` after the parent's and recorded as ``set`` events.
    sets: dict[str, Any] = field(default_factory=dict)


def prepare(parent: str, at: int) -> tuple[Preset, BranchStart]:
    """The parent's preset (its starting hyperparameters and seed) and a verified :class:`BranchStart`."""
    path = str(Path(parent).resolve())
    if not Path(path).is_file():
        raise BranchError(f"parent recording {path} does not exist")
    try:
        rec = Recording(path)  # validated, bounded, read from itself only; fails fast on damage
    except RecordingError as exc:
        raise BranchError(f"cannot branch {path}: {exc}") from None
    with rec:
        f = rec._f
        attrs = dict(f.attrs)
        engine = str(attrs.get("engine", ""))
        from dynlab.engines.base import get_engine
        from dynlab.engines.spec import SpecError

        try:
            get_engine(engine)
        except SpecError as exc:
            raise BranchError(f"cannot branch {path}: {exc}") from None
        rng = rec.step_range()
        last = rng[1] if rng else -1
        if at < 0 or at > last + 1:
            raise BranchError(f"--at {at} is outside the parent {path}: its steps run 0..{last}")
        edits = _edits(rec, at)
        try:
            info = checkpoint.nearest(f, at)
        except checkpoint.CheckpointError as exc:
            raise BranchError(f"cannot branch {path}: {exc}") from None
        start = BranchStart(path, int(at), str(attrs.get("started_at", "")), edits)
        if info is not None:
            try:
                start.arrays, start.state = checkpoint.load(f, info)
            except checkpoint.CheckpointError as exc:
                raise BranchError(f"cannot branch {path}: {exc}") from None
            start.checkpoint_step = info.step
    try:
        preset = parse(str(attrs.get("preset", "")), name=Path(path).stem, path=path)
    except PresetError as exc:
        raise BranchError(f"cannot branch {path}: its preset does not load ({exc})") from None
    try:
        hyper = json.loads(attrs.get("hyperparameters", "{}"))
    except ValueError:
        raise BranchError(f"cannot branch {path}: its hyperparameters are not JSON") from None
    if not isinstance(hyper, dict):
        raise BranchError(f"cannot branch {path}: its hyperparameters are not a JSON object")
    seed = int(attrs.get("seed", preset.seed))
    planned = int(attrs.get("steps_planned", preset.steps))
    preset = preset.with_overrides(
        seed=seed, steps=planned if planned > 0 else preset.steps, hyperparameters=hyper
    )
    return preset, start


def _edits(rec: Recording, at: int) -> list[tuple[int, str, Any]]:
    """The parent's ``set`` events at or before ``at``, in order."""
    out = []
    for ev in rec.events(None, at + 1, limit=MAX_EVENTS):
        if ev.kind != "set":
            continue
        try:
            out.append((int(ev.step), str(ev.payload["name"]), ev.payload["new"]))
        except KeyError:
            raise BranchError(
                f"a set event at step {ev.step} of the parent has no name or new value"
            ) from None
    return sorted(out, key=lambda e: e[0])
