"""Export: a view to PNG/SVG, a replay to MP4 (imageio-ffmpeg ships its own ffmpeg), and a
recording to CSV or TensorBoard (*File → Export recording…*, the app's face of ``dynlab export``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

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

    player = workspace.seekable()
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


class ExportDialog(QtWidgets.QDialog):
    """Pick a recording, a format (CSV or TensorBoard) and a folder; ``run()`` does the export.

    The work is ``dynlab.export`` (the same code as ``dynlab export``), with a progress
    dialog whose Cancel stops between blocks of rows.
    """

    FORMATS = ("CSV (one file per stream)", "TensorBoard event files")

    def __init__(self, recording: str = "", parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Export recording")
        self.recording = QtWidgets.QLineEdit(recording)
        self.fmt = QtWidgets.QComboBox()
        self.fmt.addItems(self.FORMATS)
        self.folder = QtWidgets.QLineEdit()
        self._auto_folder = True
        self.folder.textEdited.connect(lambda *_: setattr(self, "_auto_folder", False))
        self.recording.textChanged.connect(self._suggest_folder)
        self.fmt.currentIndexChanged.connect(self._suggest_folder)
        self._suggest_folder()
        pick_rec = QtWidgets.QPushButton("Browse…")
        pick_rec.clicked.connect(self._browse_recording)
        pick_dir = QtWidgets.QPushButton("Browse…")
        pick_dir.clicked.connect(self._browse_folder)
        form = QtWidgets.QGridLayout()
        form.addWidget(QtWidgets.QLabel("Recording"), 0, 0)
        form.addWidget(self.recording, 0, 1)
        form.addWidget(pick_rec, 0, 2)
        form.addWidget(QtWidgets.QLabel("Format"), 1, 0)
        form.addWidget(self.fmt, 1, 1, 1, 2)
        form.addWidget(QtWidgets.QLabel("Into folder"), 2, 0)
        form.addWidget(self.folder, 2, 1)
        form.addWidget(pick_dir, 2, 2)
        note = QtWidgets.QLabel(
            "CSV: a step column and one column per label, plus events.csv. TensorBoard: scalars, "
            "one tag per vector label, histograms (view with tensorboard --logdir FOLDER). "
            "Same as the command dynlab export."
        )
        note.setWordWrap(True)
        note.setStyleSheet("color: #555; font-size: 9pt;")
        buttons = QtWidgets.QDialogButtonBox(
            QtWidgets.QDialogButtonBox.StandardButton.Ok | QtWidgets.QDialogButtonBox.StandardButton.Cancel
        )
        buttons.button(QtWidgets.QDialogButtonBox.StandardButton.Ok).setText("Export")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay = QtWidgets.QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(note)
        lay.addWidget(buttons)
        self.resize(640, 200)

    @property
    def tensorboard(self) -> bool:
        return self.fmt.currentIndex() == 1

    def _suggest_folder(self, *_: object) -> None:
        if not self._auto_folder:
            return
        rec = self.recording.text().strip()
        if rec:
            p = Path(rec)
            self.folder.setText(str(p.with_name(p.stem + ("-tensorboard" if self.tensorboard else "-csv"))))

    def _browse_recording(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(
            self, "Recording", self.recording.text(), "dynlab recordings (*.h5 *.hdf5);;All files (*)"
        )
        if path:
            self.recording.setText(path)

    def _browse_folder(self) -> None:
        path = QtWidgets.QFileDialog.getExistingDirectory(self, "Export into", self.folder.text())
        if path:
            self.folder.setText(path)
            self._auto_folder = False

    def run(self) -> str:
        """Export as set in the dialog; returns a one-line summary (raises on failure)."""
        from dynlab import export  # tensorboardX pulls in torch: only when asked for

        rec, out = self.recording.text().strip(), self.folder.text().strip()
        if not rec or not out:
            raise ValueError("choose a recording and a folder")
        dlg = QtWidgets.QProgressDialog("Exporting…", "Cancel", 0, 100, self.parentWidget())
        dlg.setWindowModality(QtCore.Qt.WindowModality.WindowModal)
        dlg.setMinimumDuration(300)

        def progress(done: int, total: int) -> bool:
            dlg.setMaximum(max(total, 1))
            dlg.setValue(min(done, total))
            QtWidgets.QApplication.processEvents()  # keep Cancel alive between blocks
            return not dlg.wasCanceled()

        try:
            if self.tensorboard:
                result = export.export_tensorboard(rec, out, progress=progress)
                text = f"TensorBoard events for {len(result['tags'])} tags in {out}"
                if result["skipped"]:
                    text += f" (no TensorBoard plot for: {', '.join(result['skipped'])})"
            else:
                files = export.export_csv(rec, out, progress=progress)
                text = f"{len(files)} CSV files in {out}"
        finally:
            cancelled = dlg.wasCanceled()  # before close(), which counts as a cancel
            dlg.close()
        return ("Export cancelled: partial " if cancelled else "Exported ") + text
