"""The sweep page: a sweep folder's bands (mean ± s.d. over seeds) and phase diagrams.

Opened by *File → Open sweep…* and by ``dynlab open DIR`` when DIR holds ``sweep.json``.
The numbers come from the Qt-free reader ``dynlab.sweep_view.Sweep``; this page only picks
what to show and hands it to ``BandView`` and ``PhaseView``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PySide6 import QtCore, QtWidgets

from dynlab.recording import RecordingError
from dynlab.sweep import SweepError
from dynlab.sweep_view import Phase, Sweep, stream_columns
from dynlab.sweepspec import Summary
from dynlab.views.band import BandView
from dynlab.views.phase import PhaseView


class SweepPage(QtWidgets.QWidget):
    """Streams on the left, the band view and the phase diagram on the right."""

    def __init__(self, sweep: Sweep, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.sweep = sweep
        self.header = QtWidgets.QLabel(self._header_text())
        self.header.setTextFormat(QtCore.Qt.TextFormat.PlainText)  # names come from files
        self.header.setWordWrap(True)
        self.stream_list = QtWidgets.QListWidget()
        self.column_box = QtWidgets.QComboBox()
        self.column_box.setToolTip("Which entry of a vector stream the bands show")
        self.seeds_box = QtWidgets.QCheckBox("Show individual seeds")
        self.summary_box = QtWidgets.QComboBox()
        self.summary_box.setToolTip("The number per trial the phase diagram shows")
        self.notes = QtWidgets.QLabel()
        self.notes.setTextFormat(QtCore.Qt.TextFormat.PlainText)
        self.notes.setWordWrap(True)
        self.notes.setStyleSheet("color: #a00;")
        left = QtWidgets.QWidget()
        ll = QtWidgets.QVBoxLayout(left)
        ll.addWidget(self.header)
        ll.addWidget(QtWidgets.QLabel("Streams"))
        ll.addWidget(self.stream_list, 1)
        ll.addWidget(self.column_box)
        ll.addWidget(self.seeds_box)
        ll.addWidget(QtWidgets.QLabel("Phase diagram of"))
        ll.addWidget(self.summary_box)
        ll.addWidget(self.notes)
        left.setMinimumWidth(260)
        self.bands = BandView()
        self.phase = PhaseView()
        self.tabs = QtWidgets.QTabWidget()
        self.tabs.addTab(self.bands, "Bands over seeds")
        self.tabs.addTab(self.phase, "Phase diagram")
        split = QtWidgets.QSplitter()
        split.addWidget(left)
        split.addWidget(self.tabs)
        split.setStretchFactor(1, 1)
        split.setSizes([280, 1100])
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(split)

        streams = sweep.streams
        self._names = [
            n for n, s in streams.items() if s.kind in ("scalar", "vector") and n != "probe_seconds"
        ]
        self.stream_list.addItems(self._names)
        self._summaries: list[Summary] = list(sweep.summaries())
        self._summaries += [sweep.final_value_summary(n) for n in self._names if streams[n].kind == "scalar"]
        self.summary_box.addItems([s.name for s in self._summaries])
        self.stream_list.currentRowChanged.connect(self._on_stream_changed)
        self.column_box.currentIndexChanged.connect(self._on_column_changed)
        self.seeds_box.toggled.connect(self.bands.set_show_seeds)
        self.summary_box.currentIndexChanged.connect(self._on_summary_changed)
        if self._names:
            self.stream_list.setCurrentRow(0)
        if self._summaries:
            self._on_summary_changed(0)
        self._show_notes()

    @staticmethod
    def open(folder: str) -> SweepPage:
        """Read a sweep folder (raises ``SweepError`` when it is not one)."""
        sweep = Sweep(folder)
        if not sweep.streams:
            raise SweepError(f"{folder}: no finished trial could be read yet")
        return SweepPage(sweep)

    # ------------------------------------------------------------------ text
    def _header_text(self) -> str:
        m = self.sweep.manifest
        c = m.counts()
        grid = " × ".join(f"{k} ({len(v)})" for k, v in m.grid.items())
        done = c["finished"] + c["diverged"]
        text = (
            f"Sweep of {m.preset}\n{self.sweep.folder}\ngrid {grid}, seeds {', '.join(map(str, m.seeds))}\n"
            f"{done} of {len(m.trials)} trials done"
        )
        extra = [f"{c[k]} {k}" for k in ("diverged", "failed", "cancelled", "pending", "running") if c[k]]
        return text + (f" ({', '.join(extra)})" if extra else "")

    def _show_notes(self) -> None:
        bad = self.sweep.unreadable
        self.notes.setText(
            "\n".join(f"unreadable: {Path(k).name}: {v}" for k, v in list(bad.items())[:5]) if bad else ""
        )

    # ------------------------------------------------------------------ bands
    def show_stream(self, name: str, column: int = 0) -> None:
        """Bands of ``name`` (entry ``column`` of a vector stream)."""
        if name not in self._names:
            return
        row = self._names.index(name)
        if self.stream_list.currentRow() != row:
            self.stream_list.setCurrentRow(row)
        if self.column_box.currentIndex() != column and column < self.column_box.count():
            self.column_box.setCurrentIndex(column)
        self._draw_bands()

    def _on_stream_changed(self, row: int) -> None:
        if row < 0:
            return
        s = self.sweep.streams[self._names[row]]
        self.column_box.blockSignals(True)
        self.column_box.clear()
        self.column_box.addItems(list(stream_columns(s)))
        self.column_box.setVisible(s.kind == "vector")
        self.column_box.blockSignals(False)
        self._draw_bands()

    def _on_column_changed(self, _index: int) -> None:
        self._draw_bands()

    def _draw_bands(self) -> None:
        row = self.stream_list.currentRow()
        if row < 0:
            return
        name = self._names[row]
        s = self.sweep.streams[name]
        column = max(0, self.column_box.currentIndex())
        label = name if s.kind != "vector" else f"{name}: {stream_columns(s)[column]}"
        seeds = len(self.sweep.manifest.seeds)
        self.bands.set_bands(
            self.sweep.bands(name, column),
            title=f"{label}: mean ± 1 s.d. over {seeds} seed{'s' if seeds > 1 else ''} per grid point",
            y_label=label,
            units=s.units,
            log_y=s.log_scale,
            caption=s.description,
        )
        self._show_notes()

    # ------------------------------------------------------------------ phase diagram
    def show_summary(self, name: str) -> None:
        """The phase diagram of the summary called ``name``."""
        names = [s.name for s in self._summaries]
        if name in names:
            self.summary_box.setCurrentIndex(names.index(name))
            self._on_summary_changed(names.index(name))

    def _on_summary_changed(self, index: int) -> None:
        if index < 0 or index >= len(self._summaries) or not self.sweep.grid:
            return
        self.draw_phase(self.sweep.phase(self._summaries[index]))

    def draw_phase(self, ph: Phase) -> None:
        s = ph.summary
        what = f"the step at which '{s.event}' first fires" if s.event else f"{s.reduce} value of {s.stream}"
        caption = f"{s.name}: {what}; mean ± 1 s.d. over the seeds of each grid point."
        boundary_label = f"{s.boundary} = {ph.boundary:.3g}" if ph.boundary is not None else ""
        if ph.y_name:
            self.phase.set_grid(
                ph.x_name,
                ph.xs,
                ph.y_name,
                ph.ys,
                ph.mean,
                ph.sd,
                ph.fired,
                ph.total,
                value_label=s.name,
                title=f"{s.name} over {ph.x_name} × {ph.y_name}",
                never=s.never,
                boundary=ph.boundary,
                boundary_label=boundary_label,
                log_colour=s.log,
                caption=caption,
            )
        else:
            self.phase.set_line(
                ph.x_name,
                ph.xs,
                ph.mean,
                ph.sd,
                ph.fired,
                ph.total,
                y_label=s.name,
                title=f"{s.name} over {ph.x_name}",
                never=s.never,
                reference=ph.reference,
                reference_label=f"{s.reference} ({s.reduce})" if s.reference else "",
                boundary=ph.boundary,
                boundary_label=boundary_label,
                log_x=_spans_decades(ph.xs),
                log_y=s.log,
                caption=caption,
            )


def _spans_decades(xs: tuple[Any, ...]) -> bool:
    try:
        x = np.array(xs, dtype=float)
    except (TypeError, ValueError):
        return False
    return bool(len(x) > 2 and np.all(x > 0) and x.max() / x.min() >= 20)


def show_sweep(window: Any, folder: str) -> bool:
    """Show a sweep folder as a page of the main window; False (and a dialog) when it cannot be read."""
    try:
        page = SweepPage.open(folder)
    except (SweepError, RecordingError, OSError) as exc:
        window.show_error("Cannot open sweep", str(exc))
        return False
    window.workspace.close_sources()
    old = getattr(window, "sweep_page", None)
    if old is not None:
        window.pages.removeWidget(old)
        old.deleteLater()
    window.sweep_page = page
    window.pages.addWidget(page)
    window.pages.setCurrentWidget(page)
    window.setWindowTitle(f"dynlab — sweep {Path(folder).name}")
    return True
