"""The preset gallery: a card per experiment, and the recent recordings one click away.

Presets are read without importing their engines (no torch on the UI path); a broken
preset still gets a card that says what is wrong.
"""

from __future__ import annotations

import html
from pathlib import Path

from PySide6 import QtCore, QtGui, QtWidgets

from dynlab import presets

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
        self.recent.setToolTip("Click to replay")
        self.recent.itemClicked.connect(
            lambda it: self.replay_requested.emit(it.data(QtCore.Qt.ItemDataRole.UserRole))
        )
        side = QtWidgets.QWidget()
        sl = QtWidgets.QVBoxLayout(side)
        sl.addWidget(QtWidgets.QLabel("<b>Recent recordings</b>"))
        sl.addWidget(self.recent, 1)
        side.setMaximumWidth(320)
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

    def set_recent(self, paths: list[str]) -> None:
        self.recent.clear()
        for p in paths:
            if Path(p).is_file():
                it = QtWidgets.QListWidgetItem(Path(p).name)
                it.setToolTip(p)
                it.setData(QtCore.Qt.ItemDataRole.UserRole, p)
                self.recent.addItem(it)
