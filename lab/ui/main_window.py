"""The main window: thin. It holds the gallery and the workspace, menus, status bar,
presentation mode and settings; behaviour lives in the parts it holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6 import QtCore, QtGui, QtWidgets

from dynlab import presets
from dynlab.recording import RecordingError
from dynlab.ui.attach import attach_running
from dynlab.ui.gallery import Gallery
from dynlab.ui.hosts import add_host_menu
from dynlab.ui.presentation import PRESENT_SCALE, set_text_scale
from dynlab.ui.recent import find_recordings
from dynlab.ui.recordings import recordings_dir
from dynlab.ui.workspace import Workspace

MAX_RECENT = 20
_WINDOWS: list[MainWindow] = []  # extra windows stay alive until closed


class MainWindow(QtWidgets.QMainWindow):
    """dynlab's window: gallery page and workspace page."""

    def __init__(self, *, host: str | None = None, settings: QtCore.QSettings | None = None) -> None:
        super().__init__()
        self.setAttribute(QtCore.Qt.WidgetAttribute.WA_DeleteOnClose, False)
        self.setWindowTitle("dynlab — live training dynamics")
        self.settings = settings or QtCore.QSettings("dynlab", "dynlab")
        self.gallery = Gallery()
        self.workspace = Workspace(host=host, settings=self.settings)
        self.pages = QtWidgets.QStackedWidget()
        self.pages.addWidget(self.gallery)
        self.pages.addWidget(self.workspace)
        self.setCentralWidget(self.pages)
        self.status_label = QtWidgets.QLabel("Ready")
        self.status_label.setTextFormat(QtCore.Qt.TextFormat.PlainText)  # it shows error messages
        self.statusBar().addWidget(self.status_label, 1)
        self.presenting = False

        self.gallery.open_requested.connect(self.open_preset)
        self.gallery.replay_requested.connect(self.open_replay)
        self.workspace.status.connect(self._on_status_changed)
        self.workspace.error.connect(self.show_error)
        self.workspace.recorded.connect(self.add_recent)
        self.workspace.open_requested.connect(self.open_replay)
        self.workspace.params.message.connect(self.show_message)
        self.workspace.params.save_requested.connect(self.save_preset)
        self._build_menus()
        self._build_shortcuts()
        self._show_recent()
        self.resize(1500, 950)
        geo = self.settings.value("window/geometry")
        if geo is not None:
            self.restoreGeometry(geo)
        state = self.settings.value("window/state")
        if state is not None:
            self.restoreState(state)
        split = self.settings.value("workspace/splitter")
        if split is not None:
            self.workspace.splitter.restoreState(split)
        self.set_theme(str(self.settings.value("ui/theme", "light")))
        # While the gallery shows, start an engine process so that Start shows frames at once.
        self.pages.currentChanged.connect(lambda *_: self._warm_engine())
        QtCore.QTimer.singleShot(1000, self._warm_engine)  # once the window has shown

    # ------------------------------------------------------------------ menus
    def _build_menus(self) -> None:
        mb = self.menuBar()
        f = mb.addMenu("&File")
        f.addAction("&Gallery", self.show_gallery, QtGui.QKeySequence("Ctrl+G"))
        f.addAction("&New window (compare side by side)", self.new_window, QtGui.QKeySequence.StandardKey.New)
        f.addAction("&Open recording…", self.choose_recording, QtGui.QKeySequence.StandardKey.Open)
        f.addAction("Open preset &file…", self.choose_preset_file)
        f.addAction("&Attach to running training…", lambda: attach_running(self))
        f.addAction("Open s&weep…", self.choose_sweep)
        self.recent_menu = f.addMenu("Recent recordings")
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)
        f.addSeparator()
        f.addAction("&Export view…", self.export_view, QtGui.QKeySequence("Ctrl+E"))
        f.addAction("Export replay to &MP4…", self.export_mp4)
        f.addAction(
            "Export &recording (CSV, TensorBoard)…", self.export_recording, QtGui.QKeySequence("Ctrl+Shift+E")
        )
        f.addAction("&Save hyperparameters as preset…", self.save_preset, QtGui.QKeySequence("Ctrl+Shift+S"))
        f.addSeparator()
        f.addAction("&Quit", self.close, QtGui.QKeySequence.StandardKey.Quit)
        e = mb.addMenu("&Edit")
        e.addAction(
            "&Undo hyperparameter change", self.workspace.params.undo, QtGui.QKeySequence.StandardKey.Undo
        )
        e.addAction(
            "&Apply typed hyperparameters",
            lambda: self.workspace.params.commit(),
            QtGui.QKeySequence("Ctrl+Return"),
        )
        r = mb.addMenu("&Run")
        r.addAction("&Start", self.workspace.start, QtGui.QKeySequence("Ctrl+R"))
        r.addAction("&Pause / resume", self.workspace.pause_resume)
        r.addAction("S&tep", self.workspace.single_step, QtGui.QKeySequence("."))
        r.addAction("St&op", self.workspace.stop)
        r.addAction("Restart with a &new seed", self.workspace.restart)
        r.addAction("&Add a run with another seed", self.workspace.add_seed)
        r.addAction("&Branch from here…", self.workspace.branch_from_here, QtGui.QKeySequence("Ctrl+B"))
        r.addSeparator()
        add_host_menu(self, r)  # thread / process / Ray, and the Ray cluster address
        v = mb.addMenu("&View")
        v.addAction("&Presentation mode", self.toggle_presentation, QtGui.QKeySequence("F11"))
        v.addAction("&Reset layout", self.workspace.area.reset_layout)
        theme = v.addMenu("&Theme")
        theme.addAction("Light", lambda: self.set_theme("light"))
        theme.addAction("Dark", lambda: self.set_theme("dark"))
        h = mb.addMenu("&Help")
        h.addAction("&Keyboard shortcuts", self.show_shortcuts, QtGui.QKeySequence("F1"))
        h.addAction("&Documentation", self.open_docs)
        h.addAction("The &paper of this preset", self.show_paper)
        h.addSeparator()
        h.addAction("&About dynlab", self._about)

    def _build_shortcuts(self) -> None:
        ws = self.workspace

        def key(seq: str, slot: object, what: str) -> None:
            sc = QtGui.QShortcut(QtGui.QKeySequence(seq), self)
            sc.setContext(QtCore.Qt.ShortcutContext.WindowShortcut)
            sc.setProperty("help", what)  # listed by Help → Keyboard shortcuts
            sc.activated.connect(slot)

        key("Space", lambda: ws.toggle_play() if ws.seekable() else ws.pause_resume(), "Play / pause")
        key("Right", ws.next_event, "Replay: next event")
        key("Left", ws.prev_event, "Replay: previous event")
        key("]", ws.faster, "Replay: faster")
        key("[", ws.slower, "Replay: slower")
        key(
            "Escape",
            lambda: self.toggle_presentation() if self.presenting else None,
            "Leave presentation mode",
        )

    # ------------------------------------------------------------------ actions
    def open_preset(self, name_or_path: str, start: bool = False) -> bool:
        if (Path(name_or_path) / "sweep.json").is_file():  # `dynlab open DIR` on a sweep folder
            return self.open_sweep(name_or_path)
        try:
            preset = presets.load(name_or_path, check_engine=False)
        except presets.PresetError as exc:
            self.show_error("Cannot open preset", str(exc))
            return False
        self.pages.setCurrentWidget(self.workspace)
        try:
            self.workspace.open_preset(preset, start=start)
        except Exception as exc:
            self.show_error("Cannot start", str(exc))
            return False
        self.setWindowTitle(f"dynlab — {preset.title}")
        self._rescale_if_presenting()
        return True

    def open_replay(self, path: str) -> bool:
        try:
            self.workspace.open_replay(path)
        except RecordingError as exc:
            self.show_error("Cannot replay", str(exc))
            return False
        self.pages.setCurrentWidget(self.workspace)
        self.setWindowTitle(f"dynlab — replay {Path(path).name}")
        self.add_recent(path)
        self._rescale_if_presenting()
        return True

    def open_sweep(self, folder: str) -> bool:
        from dynlab.ui.sweep import show_sweep

        return show_sweep(self, folder)

    def choose_sweep(self) -> None:
        folder = QtWidgets.QFileDialog.getExistingDirectory(self, "Open sweep (a folder with sweep.json)")
        if folder:
            self.open_sweep(folder)

    def new_window(self) -> MainWindow:
        """Another window on the gallery: two presets side by side, each with its runs."""
        win = MainWindow(host=self.workspace.host, settings=self.settings)
        win.resize(self.width() // 2, self.height())
        win.show()
        _WINDOWS.append(win)
        win.destroyed.connect(lambda *_: _WINDOWS.remove(win) if win in _WINDOWS else None)
        return win

    def _warm_engine(self) -> None:
        if self.pages.currentWidget() is self.gallery and self.workspace.host == "process":
            from dynlab.runner import app_threads, prewarm

            prewarm(app_threads())

    def show_gallery(self) -> None:
        self.workspace.close_sources()
        self._show_recent()
        self.pages.setCurrentWidget(self.gallery)
        self.setWindowTitle("dynlab — live training dynamics")

    def choose_recording(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(
            self, "Open recording", "", "dynlab recordings (*.h5 *.hdf5);;All files (*)"
        )
        if path:
            self.open_replay(path)

    def choose_preset_file(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Open preset", "", "Presets (*.toml)")
        if path:
            self.open_preset(path)

    def export_view(self) -> None:
        titles = self.workspace.view_titles()
        if not titles:
            self.show_error("Nothing to export", "Open a preset or a recording first.")
            return
        title, ok = QtWidgets.QInputDialog.getItem(self, "Export view", "View:", titles, 0, False)
        if not ok:
            return
        path, _ = QtWidgets.QFileDialog.getSaveFileName(
            self, "Export view", f"{title}.png", "PNG (*.png);;SVG (*.svg)"
        )
        if path:
            try:
                self.workspace.views[titles.index(title)].export_image(path)
            except (OSError, ValueError) as exc:
                self.show_error("Export failed", str(exc))

    def export_mp4(self) -> None:
        from dynlab.ui.export import export_replay_mp4

        if self.workspace.seekable() is None:
            self.show_error(
                "Export to MP4",
                "Open a recording first (File → Open recording); the MP4 is made from its replay.",
            )
            return
        path, _ = QtWidgets.QFileDialog.getSaveFileName(
            self, "Export replay", "replay.mp4", "MP4 video (*.mp4)"
        )
        if not path:
            return
        dlg = QtWidgets.QProgressDialog("Rendering the replay…", "Cancel", 0, 100, self)
        dlg.setWindowModality(QtCore.Qt.WindowModality.WindowModal)

        def progress(done: int, total: int) -> bool:
            dlg.setMaximum(total)
            dlg.setValue(done)
            QtWidgets.QApplication.processEvents()  # keep the dialog (and Cancel) alive while rendering
            return not dlg.wasCanceled()

        try:
            export_replay_mp4(self.workspace, path, progress=progress)
        except Exception as exc:
            self.show_error("Export failed", str(exc))
        finally:
            dlg.close()

    def _current_recording(self) -> str:
        """The replayed recording's path, else the newest readable recent one, else ''."""
        player = self.workspace.seekable()
        if player is not None and player.recording:
            return str(player.recording)
        from dynlab.ui.recent import read_info

        return next((p for p in self.recent() if not read_info(p).error), "")

    def export_recording(self) -> None:
        """File → Export recording…: CSV or TensorBoard, as ``dynlab export`` does."""
        from dynlab.ui.export import ExportDialog

        dlg = ExportDialog(self._current_recording(), self)
        self._export_dialog = dlg
        if dlg.exec() != QtWidgets.QDialog.DialogCode.Accepted:
            return
        try:
            self.status_label.setText(dlg.run())
        except Exception as exc:  # RecordingError, ExportError, OSError: one line, the app stays up
            self.show_error("Export failed", str(exc))

    def save_preset(self) -> None:
        """Write the open preset with the hyperparameters now in use into a TOML file."""
        from dynlab.export import save_preset

        preset, values, seed = self._preset_and_values()
        if preset is None:
            self.show_error("Save as preset", "Open a preset or a recording of one first.")
            return
        start = str(Path.home() / f"{preset.name}-mine.toml")
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Save as preset", start, "Presets (*.toml)")
        if not path:
            return
        try:
            saved = save_preset(
                path,
                preset.text,
                values,
                title=f"{preset.title} ({Path(path).stem})",
                seed=seed,
                source=preset.name,
            )
        except Exception as exc:  # ExportError, PresetError: say what, keep going
            self.show_error("Save as preset failed", str(exc))
            return
        self.status_label.setText(
            f"Saved {saved}: run it with `dynlab run {saved}` or File → Open preset file…"
        )

    def _preset_and_values(self) -> tuple[Any, dict[str, Any], int | None]:
        """The open preset, the hyperparameters to save and the seed (a replay: the recording's own)."""
        ws = self.workspace
        preset = ws.preset
        player = ws.seekable()
        if player is not None:
            seed = player.file.attrs.get("seed")
            return preset, dict(player.params), None if seed is None else int(seed)
        values = ws.params.values() if ws.params.values() else dict(getattr(ws, "overrides", {}))
        return preset, values, getattr(ws, "_seed", None)

    def show_shortcuts(self) -> None:
        from dynlab.ui.help import ShortcutsDialog

        self._shortcuts = ShortcutsDialog(self)
        self._shortcuts.show()

    def open_docs(self) -> None:
        from dynlab.ui.help import docs_location

        where = docs_location()
        if where is None:
            self.show_error("Documentation", "The docs ship with the source checkout (docs/ and README.md).")
            return
        QtGui.QDesktopServices.openUrl(QtCore.QUrl.fromLocalFile(str(where)))
        self.status_label.setText(f"Opened {where}")

    def show_paper(self) -> None:
        from dynlab.ui.help import PaperDialog

        preset = self.workspace.preset
        if preset is None or not preset.paper:
            self.show_error("The paper of this preset", "Open a preset (or a recording of one) first.")
            return
        self._paper = PaperDialog(preset.paper, self)
        self._paper.show()

    def toggle_presentation(self) -> None:
        """Full screen, every text 1.5x larger, menus and status bar hidden.

        A replay hides the side panel (Space, arrows and [ ] drive it); a live run keeps it,
        large, so the talk can steer the run.
        """
        self.presenting = not self.presenting
        self._show_presentation_panel()
        self.menuBar().setVisible(not self.presenting)
        self.statusBar().setVisible(not self.presenting)
        set_text_scale(self, PRESENT_SCALE if self.presenting else 1.0)
        self.showFullScreen() if self.presenting else self.showNormal()

    def _show_presentation_panel(self) -> None:
        ws = self.workspace
        ws.left_scroll.setVisible(not self.presenting or (bool(ws.steerable()) and ws.seekable() is None))

    def _rescale_if_presenting(self) -> None:
        """Texts set since presentation began (a new preset's views and header) at its scale."""
        if self.presenting:
            self._show_presentation_panel()
            set_text_scale(self, PRESENT_SCALE)

    def set_theme(self, theme: str) -> None:
        import pyqtgraph as pg

        app = QtWidgets.QApplication.instance()
        if theme == "dark":
            pal = QtGui.QPalette()
            for role, color in (
                (QtGui.QPalette.ColorRole.Window, "#2b2b2b"),
                (QtGui.QPalette.ColorRole.WindowText, "#e0e0e0"),
                (QtGui.QPalette.ColorRole.Base, "#1e1e1e"),
                (QtGui.QPalette.ColorRole.Text, "#e0e0e0"),
                (QtGui.QPalette.ColorRole.Button, "#3a3a3a"),
                (QtGui.QPalette.ColorRole.ButtonText, "#e0e0e0"),
            ):
                pal.setColor(role, QtGui.QColor(color))
            app.setPalette(pal)
            pg.setConfigOptions(background="k", foreground="w")
        else:
            app.setPalette(app.style().standardPalette())
            pg.setConfigOptions(background="w", foreground="k")
        self.settings.setValue("ui/theme", theme)

    def show_error(self, title: str, message: str) -> None:
        """A non-blocking dialog with one line of text; the app stays up."""
        self.status_label.setText(f"{title}: {message}")
        box = QtWidgets.QMessageBox(QtWidgets.QMessageBox.Icon.Warning, title, message, parent=self)
        box.setTextFormat(QtCore.Qt.TextFormat.PlainText)  # a message may quote a file's text
        box.setModal(False)
        box.open()
        self._last_box = box

    # ------------------------------------------------------------------ recent files
    def recent(self) -> list[str]:
        """Recordings opened or made here, and those in the recordings folder (``DYNLAB_RECORDINGS``),
        newest first."""
        val = self.settings.value("recent/recordings", [])
        if isinstance(val, str):
            val = [val]
        paths = {str(Path(v)) for v in (val or []) if Path(v).is_file()}
        paths.update(find_recordings(recordings_dir(), MAX_RECENT))

        def mtime(p: str) -> float:
            try:
                return Path(p).stat().st_mtime
            except OSError:
                return 0.0

        return sorted(paths, key=mtime, reverse=True)[:MAX_RECENT]

    def add_recent(self, path: str) -> None:
        val = self.settings.value("recent/recordings", [])
        val = [val] if isinstance(val, str) else list(val or [])
        items = [path] + [p for p in val if p != path]
        self.settings.setValue("recent/recordings", items[:MAX_RECENT])
        self._show_recent()

    def _show_recent(self) -> None:
        self.gallery.set_recent(self.recent(), folder=str(recordings_dir()))

    def _fill_recent_menu(self) -> None:
        from dynlab.ui.recent import read_info

        self.recent_menu.clear()
        for p in self.recent():
            act = self.recent_menu.addAction(f"{Path(p).name}  —  {read_info(p).summary()}")
            act.triggered.connect(lambda *_, p=p: self.open_replay(p))
        if not self.recent_menu.actions():
            self.recent_menu.addAction("(none yet)").setEnabled(False)

    def _about(self) -> None:
        from dynlab import __version__

        QtWidgets.QMessageBox.about(
            self, "About dynlab", f"dynlab {__version__}\nA desktop lab for live training dynamics."
        )

    def show_message(self, text: str) -> None:
        """A message that stays 10 s in the status bar (the run's status line updates every tick)."""
        self.statusBar().showMessage(text, 10_000)

    def _on_status_changed(self, text: str) -> None:
        self.status_label.setText(text)

    def closeEvent(self, event: QtGui.QCloseEvent) -> None:  # noqa: N802 - Qt API
        self.workspace.close_sources()
        for dialog in self.findChildren(QtWidgets.QDialog):  # an open error box goes with its window
            dialog.close()
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.setValue("window/state", self.saveState())
        self.settings.setValue("workspace/splitter", self.workspace.splitter.saveState())
        super().closeEvent(event)
