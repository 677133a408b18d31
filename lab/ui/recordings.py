"""Where the app keeps recordings, how it names new ones, and views for a recording without a preset."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from PySide6 import QtCore

from dynlab.frames import Stream
from dynlab.viewspec import ViewSpec


def recordings_dir() -> Path:
    """``DYNLAB_RECORDINGS``, else the platform's app-data folder; created when missing."""
    base = QtCore.QStandardPaths.writableLocation(QtCore.QStandardPaths.StandardLocation.AppDataLocation)
    path = Path(os.environ.get("DYNLAB_RECORDINGS") or (Path(base or Path.home() / ".dynlab") / "recordings"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def new_recording(stem: str) -> str:
    """A fresh path ``<recordings>/<stem>-<date-time>.h5`` (-2, -3... when two starts share a second)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = recordings_dir() / f"{stem}-{stamp}.h5"
    k, out = 2, path
    while out.exists():
        out = path.with_name(f"{path.stem}-{k}{path.suffix}")
        k += 1
    return str(out)


def default_views(streams: Sequence[Stream]) -> tuple[ViewSpec, ...]:
    """One view per stream, for recordings whose preset text cannot be read."""
    return tuple(
        ViewSpec(title=s.name, streams=(s.name,), log_y=s.log_scale)
        for s in streams
        if s.name != "probe_seconds"
    )
