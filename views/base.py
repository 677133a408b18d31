"""The view contract the shell relies on: ``StreamView``.

A view is handed the streams it shows (the ViewSpec's streams plus its ``reference``)
and then only ever sees frames and events. ``push`` is cheap (append to buffers);
``refresh`` redraws, at the shell's display rate, and only if something changed. Live
and replay use the same calls, so a view cannot tell them apart.

Several runs may be overlaid: ``add_run(run_id, label)`` declares one, and frames are
pushed with ``push(frames, run=run_id)``. Run ``""`` is the default run and needs no
declaration. Time-axis views draw later runs dashed/dotted with the run label in the
legend; per-step views (heatmap, waterfall, points) show one run at a time, picked in
a small selector.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PySide6 import QtCore, QtWidgets

from dynlab.frames import Event, Frame, Stream
from dynlab.viewspec import ViewSpec

from . import style


class StreamView(QtWidgets.QWidget):
    """Base class of every view: title, caption, tooltip, runs, events, cursor.

    Subclasses implement ``_append(run, name, step, value)``, ``_redraw()``, ``_clear_data()``
    and, for time axes, ``_draw_event(event)`` / ``_draw_cursor(step)``.

    Parameters
    ----------
    view
        What the preset asks for (title, streams, kind, log axes, reference, caption, smooth).
    streams
        Stream declarations by name; only those in ``view.streams`` and ``view.reference``
        are used, and names missing here are ignored with a note in the caption.
    parent
        Qt parent widget.
    """

    #: whether this view shows one run at a time (adds a run selector)
    single_run: bool = False

    def __init__(
        self, view: ViewSpec, streams: Mapping[str, Stream], parent: QtWidgets.QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.view = view
        self.stream_names: tuple[str, ...] = tuple(s for s in view.streams if s in streams)
        self.reference: str = view.reference if view.reference in streams else ""
        self.streams: dict[str, Stream] = {
            n: streams[n] for n in (*self.stream_names, *([self.reference] if self.reference else []))
        }
        self.missing: tuple[str, ...] = tuple(s for s in view.streams if s not in streams)
        self.runs: dict[str, str] = {"": ""}
        self.ghosts: set[str] = set()  # runs drawn faint (a branch's parent)
        #: runs that are seeds of one preset (time-axis views draw a band across them)
        self.seed_runs: tuple[str, ...] = ()
        self._run_data: set[str] = set()  # runs that pushed anything
        self.events: list[Event] = []
        self.cursor: int | None = None
        self._dirty = True
        self._shown_run = ""

        self._layout = QtWidgets.QVBoxLayout(self)
        self._layout.setContentsMargins(2, 2, 2, 2)
        self._layout.setSpacing(2)
        self._run_box: QtWidgets.QComboBox | None = None
        if self.single_run:
            self._run_box = QtWidgets.QComboBox()
            self._run_box.setVisible(False)
            self._run_box.setToolTip("This view shows one run at a time")
            self._run_box.currentIndexChanged.connect(self._on_run_changed)
            self._layout.addWidget(self._run_box)
        self.caption = QtWidgets.QLabel(self._caption_text())
        self.caption.setWordWrap(True)
        self.caption.setTextFormat(QtCore.Qt.TextFormat.RichText)
        #: factor every text of the view is drawn at (presentation mode: 1.5)
        self.text_scale = style.text_scale()
        self.caption.setStyleSheet(self._caption_style())
        self.caption.setVisible(bool(self.caption.text()))
        self.setToolTip(self._tooltip_text())

    # ------------------------------------------------------------------ public API
    def push(self, frames: Sequence[Frame], run: str = "") -> None:
        """Append the frames' values of this view's streams to its buffers (no drawing)."""
        if run not in self.runs:
            self.add_run(run, run)
        names = self.streams.keys()
        for frame in frames:
            for name in names:
                value = frame.data.get(name)
                if value is not None:
                    self._append(run, name, int(frame.step), np.asarray(value))
                    self._run_data.add(run)
                    self._dirty = True

    def add_event(self, event: Event) -> None:
        """Mark ``event`` on the time axis (a vertical line with its label)."""
        self.events.append(event)
        self._draw_event(event)

    def refresh(self) -> None:
        """Redraw from the buffers if anything changed since the last refresh."""
        if self._dirty:
            self._dirty = False
            self._redraw()

    def clear(self) -> None:
        """Drop all data and events (restart, or a replay seek that re-pushes)."""
        self._clear_data()
        self._clear_events()
        self.events.clear()
        self._run_data.clear()
        self._dirty = True

    def set_cursor(self, step: int | None) -> None:
        """Replay cursor: time-axis views draw a line; per-step views show that step."""
        self.cursor = None if step is None else int(step)
        self._draw_cursor(self.cursor)
        self._dirty = True

    def add_run(self, run_id: str, label: str) -> None:
        """Declare an overlaid run; its frames are pushed with ``push(frames, run=run_id)``."""
        self.runs[run_id] = label
        if self._run_box is not None:
            self._run_box.blockSignals(True)
            self._run_box.clear()
            for rid, lab in self.runs.items():
                self._run_box.addItem(lab or rid or "run", rid)
            self._run_box.setCurrentIndex(list(self.runs).index(self._shown_run))
            self._run_box.blockSignals(False)
            self._run_box.setVisible(len(self.runs) > 1)
        self._dirty = True

    def set_ghost(self, run_id: str, ghost: bool = True) -> None:
        """Draw ``run_id`` faint behind the others (the parent a branch left from)."""
        if ghost:
            self.ghosts.add(run_id)
        else:
            self.ghosts.discard(run_id)
        self._dirty = True

    def set_seed_runs(self, runs: Sequence[str]) -> None:
        """Say which runs are seeds of one preset (the same run with another seed).

        Line views draw a band (mean ± s.d. across them) when there are two or more;
        views that show one run at a time ignore it.
        """
        self.seed_runs = tuple(runs)
        self._dirty = True

    def set_text_scale(self, scale: float) -> None:
        """Draw every text of the view (title, caption, legend, labels, tools) ``scale`` times
        its normal size: presentation mode."""
        if scale == self.text_scale:
            return
        self.text_scale = float(scale)
        self._apply_text_scale()
        self._dirty = True

    def _apply_text_scale(self) -> None:
        """Re-apply the text sizes at ``self.text_scale``; subclasses extend it for their texts."""
        self.caption.setStyleSheet(self._caption_style())

    def _caption_style(self) -> str:
        return f"color: #444; font-size: {style.pt(style.TEXT_PT, self.text_scale)}pt;"

    def export_image(self, path: str) -> None:
        """Save the view: PNG (or any Qt image format) by suffix; SVG for pyqtgraph views."""
        suffix = Path(path).suffix.lower()
        if suffix == ".svg":
            self._export_svg(path)
            return
        self.refresh()
        if not self._grab().save(path):
            raise OSError(f"could not write image {path!r}")

    # ------------------------------------------------------------ helpers for subclasses
    def run_index(self, run: str) -> int:
        """Position of ``run`` among the declared runs (0 for the default run)."""
        return list(self.runs).index(run) if run in self.runs else 0

    def run_suffix(self, run: str) -> str:
        """Legend suffix for a run: `` [label]`` when runs are overlaid, else empty."""
        label = self.runs.get(run, run)
        return f" [{label}]" if label else ""

    def shown_run(self) -> str:
        """For single-run views: the run selected (falls back to one that has data)."""
        if self._shown_run in self._run_data or not self._run_data:
            return self._shown_run
        return next(r for r in self.runs if r in self._run_data)

    def _finish_layout(self, main: QtWidgets.QWidget) -> None:
        self._layout.addWidget(main, 1)
        self._layout.addWidget(self.caption)

    def _grab(self):  # noqa: ANN202 - QPixmap
        return self.grab()

    def _export_svg(self, path: str) -> None:
        raise ValueError(f"{type(self).__name__} cannot export SVG; use a .png path")

    def _on_run_changed(self, index: int) -> None:
        if self._run_box is not None and index >= 0:
            self._shown_run = self._run_box.itemData(index)
            self._dirty = True
            self.refresh()

    def _caption_text(self) -> str:
        parts = []
        if self.view.caption:
            parts.append(html.escape(self.view.caption))
        elif len(self.stream_names) == 1 and self.streams[self.stream_names[0]].description:
            parts.append(html.escape(self.streams[self.stream_names[0]].description))
        if self.missing:
            parts.append(f"<i>not emitted by this engine: {html.escape(', '.join(self.missing))}</i>")
        return "<br>".join(parts)

    def _tooltip_text(self) -> str:
        lines = [f"<b>{html.escape(self.view.title)}</b>"]
        if self.view.caption:
            lines.append(html.escape(self.view.caption))
        for name, s in self.streams.items():
            role = " (reference)" if name == self.reference and name not in self.stream_names else ""
            text = f"<b>{html.escape(name)}</b>{role}"
            if s.units:
                text += f" [{html.escape(s.units)}]"
            if s.description:
                text += f": {html.escape(s.description)}"
            if s.theory:
                text += f"<br>&nbsp;&nbsp;<i>Theory:</i> {html.escape(s.theory)}"
            lines.append(text)
        return "<br>".join(lines)

    # --------------------------------------------------------------- to implement
    def _append(self, run: str, name: str, step: int, value: np.ndarray) -> None:
        raise NotImplementedError

    def _redraw(self) -> None:
        raise NotImplementedError

    def _clear_data(self) -> None:
        raise NotImplementedError

    def _draw_event(self, event: Event) -> None:
        """Per-step views without a time axis ignore events by default."""

    def _clear_events(self) -> None:
        """Remove event markers (time-axis views)."""

    def _draw_cursor(self, step: int | None) -> None:
        """Time-axis views draw or hide a cursor line; per-step views just redraw."""
