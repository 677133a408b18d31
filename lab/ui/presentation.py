"""Presentation mode's text scaling: every text in the window, not only what follows the app font.

Three kinds of text need three treatments. Widgets that use the application font follow
``QApplication.setFont``. Sizes written into style sheets and rich text (captions, the
side panel's header, hints) do not, so their ``font-size: Npt`` is rewritten. Text drawn
inside plots (titles, legends, event labels, axis labels, 3-D labels) belongs to the
views, each of which redraws its own at a scale (``StreamView.set_text_scale``).
"""

from __future__ import annotations

import re

from PySide6 import QtCore, QtGui, QtWidgets

#: How much larger every text is drawn in presentation mode.
PRESENT_SCALE = 1.5

_PT = re.compile(r"font-size:\s*([0-9]+(?:\.[0-9]+)?)pt")
_BASE = "dynlabTextBase"  # widget property: (text at scale 1, text as last scaled)
_base_app_font: QtGui.QFont | None = None
_base_title_font: QtGui.QFont | None = None


def scaled_sizes(text: str, factor: float) -> str:
    """``text`` with every ``font-size: Npt`` multiplied by ``factor``."""
    return _PT.sub(lambda m: f"font-size: {round(float(m.group(1)) * factor, 2):g}pt", text)


def set_text_scale(window: QtWidgets.QWidget, factor: float) -> None:
    """Draw every text of ``window`` at ``factor`` times its normal size (1 restores it)."""
    from dynlab.views import style
    from dynlab.views.base import StreamView

    global _base_app_font, _base_title_font
    app = QtWidgets.QApplication.instance()
    if _base_app_font is None:  # the sizes at scale 1, read before the first change
        _base_app_font = QtGui.QFont(app.font())
        _base_title_font = QtGui.QFont(app.font("QDockWidgetTitle"))
    font = QtGui.QFont(_base_app_font)
    font.setPointSizeF(_base_app_font.pointSizeF() * factor)
    app.setFont(font)
    for dock in window.findChildren(QtWidgets.QDockWidget):
        dock.setFont(_dock_title_font(_base_title_font or app.font("QDockWidgetTitle"), factor))
    style.set_text_scale(factor)  # views made from now on
    for view in window.findChildren(StreamView):
        view.set_text_scale(factor)
        view.refresh()
    for w in [window, *window.findChildren(QtWidgets.QWidget)]:
        if not _inside_view(w, StreamView):
            _scale_own_sizes(w, factor)


def _dock_title_font(base: QtGui.QFont, factor: float) -> QtGui.QFont:
    """The dock title font at ``factor``.

    A QDockWidget whose font equals the application's draws its title in a font it cached
    when it was made, deaf to later changes; a font that differs (here only in its style
    strategy, which changes nothing visible) is drawn as set.
    """
    font = QtGui.QFont(base)
    font.setPointSizeF(base.pointSizeF() * factor)
    font.setStyleStrategy(QtGui.QFont.StyleStrategy.PreferQuality)
    return font


def _inside_view(w: QtWidgets.QWidget, view_type: type) -> bool:
    p: QtCore.QObject | None = w
    while p is not None:
        if isinstance(p, view_type):
            return True
        p = p.parent()
    return False


def _scale_own_sizes(w: QtWidgets.QWidget, factor: float) -> None:
    """Rewrite the point sizes in ``w``'s style sheet and, for a rich-text label, its text."""
    _rescale(w, "css", w.styleSheet, w.setStyleSheet, factor)
    if isinstance(w, QtWidgets.QLabel) and w.textFormat() != QtCore.Qt.TextFormat.PlainText:
        _rescale(w, "text", w.text, w.setText, factor)


def _rescale(w: QtWidgets.QWidget, what: str, get, put, factor: float) -> None:  # noqa: ANN001
    now = get()
    if "font-size" not in now:
        return
    key = f"{_BASE}:{what}"
    saved = w.property(key)
    # The text as last scaled means we scaled it: start again from its base. Anything else
    # was set since (a new preset's header) and is at scale 1.
    base = saved[0] if isinstance(saved, list) and len(saved) == 2 and saved[1] == now else now
    new = scaled_sizes(base, factor)
    if new != now:
        put(new)
    w.setProperty(key, [base, new])
