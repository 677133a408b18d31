"""Render the dynlab SVG icon to PNGs (``icons/png/dynlab-<size>.png``) with Qt, offscreen.

Usage: ``QT_QPA_PLATFORM=offscreen python packaging/render_icons.py SVG OUTDIR SIZE...``
(``packaging/build.sh --icons`` calls it with the freedesktop sizes 16..512).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def render(svg: Path, out_dir: Path, sizes: list[int]) -> list[Path]:
    """Render ``svg`` to one square PNG per size; returns the written paths."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6 import QtCore, QtGui, QtSvg

    _app = QtGui.QGuiApplication.instance() or QtGui.QGuiApplication([])  # QPainter needs one
    renderer = QtSvg.QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise SystemExit(f"render_icons: {svg} is not a valid SVG")
    (out_dir / "png").mkdir(parents=True, exist_ok=True)
    written = []
    for size in sizes:
        image = QtGui.QImage(size, size, QtGui.QImage.Format.Format_ARGB32_Premultiplied)
        image.fill(QtCore.Qt.GlobalColor.transparent)
        painter = QtGui.QPainter(image)
        painter.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing)
        painter.setRenderHint(QtGui.QPainter.RenderHint.SmoothPixmapTransform)
        renderer.render(painter, QtCore.QRectF(0, 0, size, size))
        painter.end()
        path = out_dir / "png" / f"dynlab-{size}.png"
        if not image.save(str(path)):
            raise SystemExit(f"render_icons: could not write {path}")
        written.append(path)
    return written


if __name__ == "__main__":
    if len(sys.argv) < 4:
        raise SystemExit(__doc__)
    for p in render(Path(sys.argv[1]), Path(sys.argv[2]), [int(s) for s in sys.argv[3:]]):
        print(p)
