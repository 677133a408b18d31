"""The preset gallery: a card per experiment, and the recent recordings one click away.

Presets are read without importing their engines (no torch on the UI path); a broken
preset still gets a card that says what is wrong.
"""

from __future__ import annotations

import html
from pathlib import Path

from PySide6 import QtCore, QtGui, QtWidgets

from dynlab import presets
from dynlab.ui.recent import read_info, thumbnail

#: The gallery's first cards: one per phenomenon, the most telling first; the rest follow by name.
FEATURED = (
    "effective-step-size",
    "grokking-modular",
    "edge-of-stability",
    "hessian-outliers",
    "neural-collapse-4",
    "attention-svm",
    "equivariance-c4",
    "icl-linear-regression",
    "generalization-dynamics",
    "gradient-coherence",
)


#: Thumbnail size of a recent recording (its own first loss-like curve).
THUMB = (96, 40)


def gallery_order(paths: list[Path]) -> list[Path]:
    rank = {name: i for i, name in enumerate(FEATURED)}
    return sorted(paths, key=lambda p: (rank.get(p.stem, len(FEATURED)), p.stem))


def thumbnail_for(name: str) -> Path | None:
    p = presets.preset_dir() / "thumbnails" / f"{name}.png"
    return p if p.is_file() else None


class PresetCard(QtWidgets.QFrame):
    """Title, picture, paragraph, paper, and Open / Start buttons."""

    open_requested = QtCore.Signal(str, bool)

    def __init__(self, path: Path, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFrameShape(QtWidgets.QFrame.Shape.StyledPanel)
        self.setObjectName("presetCard")
        self.setStyleSheet(
            "#presetCard { background: palette(base); border: 1px solid #bbb; border-radius: 6px; }"
        )
        self.setFixedWidth(360)
        self.name = path.stem
        lay = QtWidgets.QVBoxLayout(self)
        try:
            p = presets.load(str(path), check_engine=False)
            title, summary, paper, ok = p.title, p.summary, p.paper, True
        except presets.PresetError as exc:
            title, summary, paper, ok = path.stem, f"This preset is broken: {exc}", "", False
        head = QtWidgets.QLabel(f"<b style='font-size:12pt'>{html.escape(title)}</b>")
        head.setWordWrap(True)
        lay.addWidget(head)
        pic = QtWidgets.QLabel()
        pic.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        thumb = thumbnail_for(self.name)
        if thumb is not None:
            pic.setPixmap(
                QtGui.QPixmap(str(thumb)).scaled(
                    340,
                    150,
                    QtCore.Qt.AspectRatioMode.KeepAspectRatio,
                    QtCore.Qt.TransformationMode.SmoothTransformation,
                )
            )
        else:
            pic.setText("<i style='color:#888'>no picture yet — run it once</i>")
            pic.setMinimumHeight(40)
        lay.addWidget(pic)
        self.search_text = f"{title} {summary} {paper}".lower()
        body = QtWidgets.QLabel(html.escape(summary))
        body.setTextFormat(QtCore.Qt.TextFormat.RichText)  # the text is escaped HTML
        body.setWordWrap(True)
        body.setStyleSheet("font-size: 9pt;" + ("" if ok else "color: #b00;"))
        lay.addWidget(body)
        if paper:
            ref = QtWidgets.QLabel(f"<i>{html.escape(paper)}</i>")
            ref.setWordWrap(True)
            ref.setStyleSheet("color: #555; font-size: 8pt;")
            lay.addWidget(ref)
        lay.addStretch(1)
        row = QtWidgets.QHBoxLayout()
        self.open_button = QtWidgets.QPushButton("Open")
        self.start_button = QtWidgets.QPushButton("Start")
        self.start_button.setDefault(True)
        for b in (self.open_button, self.start_button):
            b.setEnabled(ok)
        self.open_button.clicked.connect(lambda: self.open_requested.emit(self.name, False))
        self.start_button.clicked.connect(lambda: self.open_requested.emit(self.name, True))
        row.addStretch(1)
        row.addWidget(self.open_button)
        row.addWidget(self.start_button)
        lay.addLayout(row)


class RecentRow(QtWidgets.QWidget):
    """One recent recording: its thumbnail, its whole file name, and preset · date · steps · status."""

    def __init__(self, path: str, summary: str, *, bad: bool = False) -> None:
        super().__init__()
        self.path = path
        self.bad = bad
        self.thumb = QtWidgets.QLabel()
        self.thumb.setFixedSize(*THUMB)
        self.thumb.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self.thumb.setStyleSheet("color: #999; font-size: 8pt; border: 1px solid #ddd;")
        # Zero-width spaces after - and _ let a long file name wrap there instead of being cut.
        name = Path(path).name
        self.name = QtWidgets.QLabel(name.replace("-", "-\u200b").replace("_", "_\u200b"))
        self.info = QtWidgets.QLabel(summary)
        for lab in (self.name, self.info):
            lab.setTextFormat(QtCore.Qt.TextFormat.PlainText)
            lab.setWordWrap(True)
        self.info.setStyleSheet(f"color: {'#b00' if bad else '#555'}; font-size: 8pt;")
        text = QtWidgets.QVBoxLayout()
        text.setContentsMargins(0, 0, 0, 0)
        text.setSpacing(0)
        text.addWidget(self.name)
        text.addWidget(self.info)
        text.addStretch(1)
        lay = QtWidgets.QHBoxLayout(self)
        lay.setContentsMargins(3, 3, 3, 3)
        lay.addWidget(self.thumb, 0, QtCore.Qt.AlignmentFlag.AlignTop)
        lay.addLayout(text, 1)
        self._path_name = name

    def set_thumbnail(self, image: QtGui.QImage | None) -> None:
        if image is not None:
            self.thumb.setStyleSheet("")
            self.thumb.setPixmap(QtGui.QPixmap.fromImage(image))
        else:
            self.thumb.setText("" if self.bad else "no curve")

    def plain_text(self) -> str:
        return f"{self._path_name}\n{self.info.text()}"

    def height_for(self, width: int) -> int:
        text_w = max(60, width - THUMB[0] - 6 - self.layout().spacing())
        h = self.name.heightForWidth(text_w) + self.info.heightForWidth(text_w)
        return max(THUMB[1], h) + 6


class Gallery(QtWidgets.QWidget):
    """All bundled presets as cards, plus the recent recordings."""

    open_requested = QtCore.Signal(str, bool)
    replay_requested = QtCore.Signal(str)

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        title = QtWidgets.QLabel(
            "<h2>dynlab</h2>Pick a phenomenon, press Start, and steer it while it trains."
        )
        self.filter = QtWidgets.QLineEdit()
        self.filter.setPlaceholderText("Filter presets…")
        self.filter.textChanged.connect(self._on_filter_changed)
        self.cards: list[PresetCard] = []
        flow = QtWidgets.QWidget()
        self._grid = QtWidgets.QGridLayout(flow)
        self._grid.setAlignment(QtCore.Qt.AlignmentFlag.AlignTop | QtCore.Qt.AlignmentFlag.AlignLeft)
        for path in gallery_order(presets.list_presets()):
            # Parented at once: an unparented widget reports isHidden() and would be
            # filtered out of the layout.
            card = PresetCard(path, flow)
            card.open_requested.connect(self.open_requested)
            self.cards.append(card)
        self._layout_cards()
        scroll = QtWidgets.QScrollArea()
        scroll.setWidget(flow)
        scroll.setWidgetResizable(True)
        self.recent = QtWidgets.QListWidget()
        # Whole names, wrapped: a recording is told apart by its date and seed at the end.
        self.recent.setWordWrap(True)
        self.recent.setTextElideMode(QtCore.Qt.TextElideMode.ElideNone)
        self.recent.setIconSize(QtCore.QSize(*THUMB))
        self.recent.setResizeMode(QtWidgets.QListView.ResizeMode.Adjust)
        self.recent.setSpacing(2)
        self.recent.setHorizontalScrollBarPolicy(QtCore.Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.recent.itemClicked.connect(self._on_recent_clicked)
        self.recent.viewport().installEventFilter(self)
        self.recent_note = QtWidgets.QLabel("")
        self.recent_note.setWordWrap(True)
        self.recent_note.setStyleSheet("color: #666; font-size: 8pt;")
        side = QtWidgets.QWidget()
        sl = QtWidgets.QVBoxLayout(side)
        sl.addWidget(QtWidgets.QLabel("<b>Recent recordings</b>"))
        sl.addWidget(self.recent, 1)
        sl.addWidget(self.recent_note)
        side.setFixedWidth(320)  # three 360-px cards still fit beside it at 1500 px
        body = QtWidgets.QHBoxLayout()
        body.addWidget(scroll, 1)
        body.addWidget(side)
        lay = QtWidgets.QVBoxLayout(self)
        top = QtWidgets.QHBoxLayout()
        top.addWidget(title, 1)
        top.addWidget(self.filter)
        lay.addLayout(top)
        lay.addLayout(body, 1)

    def _layout_cards(self, cols: int = 3) -> None:
        shown = [c for c in self.cards if not c.property("filtered")]
        for c in self.cards:
            self._grid.removeWidget(c)
        for i, c in enumerate(shown):
            self._grid.addWidget(c, i // cols, i % cols)

    def _on_filter_changed(self, text: str) -> None:
        t = text.lower()
        for c in self.cards:
            hide = bool(t) and t not in c.name and t not in c.search_text
            c.setProperty("filtered", hide)
            c.setVisible(not hide)
        self._layout_cards()

    def eventFilter(self, obj: QtCore.QObject, event: QtCore.QEvent) -> bool:  # noqa: N802 - Qt API
        if obj is self.recent.viewport() and event.type() == QtCore.QEvent.Type.Resize:
            self._fit_rows()
        return super().eventFilter(obj, event)

    def _fit_rows(self) -> None:
        """Each row as tall as its wrapped text needs at the list's width: nothing is cut off."""
        width = self.recent.viewport().width() - 2 * self.recent.spacing()
        for i in range(self.recent.count()):
            it = self.recent.item(i)
            row = self.recent.itemWidget(it)
            if isinstance(row, RecentRow):
                it.setSizeHint(QtCore.QSize(width, row.height_for(width)))

    def _next_thumbnail(self) -> None:
        pending = getattr(self, "_pending_thumbs", [])
        while pending:
            row = pending.pop(0)
            try:
                row.set_thumbnail(None if row.bad else thumbnail(row.path, THUMB))
            except RuntimeError:  # the row was deleted by a newer set_recent
                continue
            if pending:
                QtCore.QTimer.singleShot(0, self._next_thumbnail)
            return

    def _on_recent_clicked(self, item: QtWidgets.QListWidgetItem) -> None:
        path = item.data(QtCore.Qt.ItemDataRole.UserRole)
        if path:
            self.replay_requested.emit(path)

    def set_recent(self, paths: list[str], folder: str = "") -> None:
        """Show these recordings: full name, preset, date, steps, status and a thumbnail of the run.

        ``folder`` (where new recordings go, ``DYNLAB_RECORDINGS`` if set) is named under the list.
        """
        self.recent.clear()
        self._pending_thumbs: list[RecentRow] = []
        for p in paths:
            if not Path(p).is_file():
                continue
            info = read_info(p)
            row = RecentRow(p, info.summary(), bad=bool(info.error))
            self._pending_thumbs.append(row)
            it = QtWidgets.QListWidgetItem()
            it.setData(QtCore.Qt.ItemDataRole.UserRole, p)
            it.setData(QtCore.Qt.ItemDataRole.AccessibleTextRole, row.plain_text())
            it.setToolTip(f"{p}\n{info.summary()}\nClick to replay")
            self.recent.addItem(it)
            self.recent.setItemWidget(it, row)
        self._fit_rows()
        # Thumbnails read a few hundred rows of each file (~0.1 s for 10^6 steps): one per
        # event-loop turn, so the gallery shows at once and fills in.
        QtCore.QTimer.singleShot(0, self._next_thumbnail)
        if folder:
            self.recent_note.setText(f"New recordings go to {folder} (set DYNLAB_RECORDINGS to change).")
        if not self.recent.count():
            it = QtWidgets.QListWidgetItem("No recordings yet: press Start on a preset with Record on.")
            it.setFlags(QtCore.Qt.ItemFlag.NoItemFlags)
            self.recent.addItem(it)
