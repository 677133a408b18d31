"""Export: a view to PNG/SVG, a replay to MP4 (imageio-ffmpeg ships its own ffmpeg)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets


def grab_rgb(widget: QtWidgets.QWidget) -> np.ndarray:
    """The widget as an (H, W, 3) uint8 array, with even sides (what H.264 needs)."""
    img = widget.grab().toImage().convertToFormat(QtGui.QImage.Format.Format_RGB888)
    w, h = img.width() & ~1, img.height() & ~1
    img = img.copy(0, 0, w, h)
    ptr = img.constBits()
    arr = np.frombuffer(ptr, dtype=np.uint8, count=img.bytesPerLine() * h).reshape(h, img.bytesPerLine())
    return arr[:, : w * 3].reshape(h, w, 3).copy()


def export_replay_mp4(
    workspace,  # noqa: ANN001 - lab.ui.workspace.Workspace (import cycle)
    path: str,
    *,
    frames: int = 300,
    fps: int = 30,
    progress: Callable[[int, int], bool] | None = None,
) -> int:
    """Render the workspace's replay to ``path``, ``frames`` video frames from start to end.

    ``progress(done, total)`` is called per video frame; returning False cancels.
    Returns the number of frames written.
    """
    import imageio.v2 as imageio

    player = workspace._player()
    if player is None:
        raise ValueError("export to MP4 needs a replay (File → Open recording)")
    first, last = player.first, player.last
    target = workspace.grid_host
    steps = np.unique(np.linspace(first, last, max(2, frames)).astype(int))
    workspace.seek(first)
    written = 0
    with imageio.get_writer(path, fps=fps, codec="libx264", quality=7, macro_block_size=2) as writer:
        for i, step in enumerate(steps):
            items = player.step_by(int(step) - player.cursor) if step > player.cursor else []
            workspace._deliver("", items)
            for v in workspace.views:
                v.set_cursor(player.cursor)
                v.refresh()
            # The plots' scenes apply item changes from posted events; without them the grab
            # shows the picture from before this step (the whole video was one still frame).
            QtCore.QCoreApplication.sendPostedEvents()
            writer.append_data(grab_rgb(target))
            written += 1
            if progress is not None and progress(i + 1, len(steps)) is False:
                break
    return written
