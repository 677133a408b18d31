"""``RangeFollower``: a live plot's axes follow its data in steps, not on every new row.

pyqtgraph's auto-range fits the axes to the data at every change: with a row arriving each
frame the range moves each frame, and every move re-lays the axes' tick pictures,
re-places markers and the legend, and repaints the whole plot. The follower keeps the
plot's range while the data stays inside it, and when the data leaves it (or shrinks to
a small part of it) fits again with some headroom, so the axes move every few seconds of
a live run rather than 30 times a second.

It takes over only while the user lets the axes follow: a zoom or pan stops it for that
axis (as it stops pyqtgraph's auto-range), and the "A" button or *View All* hands the
axis back to it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyqtgraph as pg

#: Room left beyond the data when the range is refitted (fraction of the data's span):
#: the step axis grows to the right only, values both ways.
HEADROOM_X = 0.1
HEADROOM_Y = 0.08
#: Refit when the data covers less than this fraction of the range (it moved or shrank).
MIN_FILL = 0.5


class RangeFollower:
    """Fits a ``ViewBox``'s axes to data handed to :meth:`update`, with hysteresis.

    Parameters
    ----------
    vb
        The view box whose range is managed.
    """

    def __init__(self, vb: pg.ViewBox) -> None:
        self.vb = vb
        self.follow = [True, True]
        self._setting = False
        vb.sigRangeChangedManually.connect(self._on_manual)

    def _on_manual(self, mask: Sequence[bool]) -> None:
        if not self._setting:
            for axis, changed in enumerate(mask):
                if changed:
                    self.follow[axis] = False

    def update(self, xs: Sequence[np.ndarray], ys: Sequence[np.ndarray], log_x: bool, log_y: bool) -> None:
        """Follow the data ``xs``/``ys`` (the arrays drawn, in data units).

        An axis whose auto-range the user switched back on (pyqtgraph's "A" button) is
        followed again from now on.
        """
        state = self.vb.state["autoRange"]
        for axis in (0, 1):
            if state[axis] is not False:
                self.follow[axis] = True
        if not any(self.follow):
            return
        bounds = [_bounds(xs, log_x), _bounds(ys, log_y)]
        (x0, x1), (y0, y1) = self.vb.viewRange()
        current = [(x0, x1), (y0, y1)]
        target: list[tuple[float, float] | None] = [None, None]
        for axis, (lo_hi, (c0, c1)) in enumerate(zip(bounds, current, strict=True)):
            if not self.follow[axis] or lo_hi is None:
                continue
            lo, hi = lo_hi
            span = hi - lo
            inside = lo >= c0 and hi <= c1
            full = span >= MIN_FILL * (c1 - c0)
            if inside and full and state[axis] is False:
                continue  # the data still fits: leave the axis (and its tick picture) alone
            if span <= 0:
                pad = abs(hi) * 0.05 or 0.5
                target[axis] = (lo - pad, hi + pad)
            elif axis == 0:
                target[axis] = (lo, hi + HEADROOM_X * span)
            else:
                target[axis] = (lo - HEADROOM_Y * span, hi + HEADROOM_Y * span)
        if target[0] is None and target[1] is None and state[0] is False and state[1] is False:
            return
        self._setting = True
        try:
            # pyqtgraph stops refitting on every change (first: with its auto-range still on, it
            # would refit right after this range is set); this class does it from now on.
            self.vb.disableAutoRange()
            self.vb.setRange(xRange=target[0], yRange=target[1], padding=0)
        finally:
            self._setting = False

    def reset(self) -> None:
        """Follow both axes again (the data was cleared)."""
        self.follow = [True, True]
        self.vb.enableAutoRange()


def _bounds(arrays: Sequence[np.ndarray], log: bool) -> tuple[float, float] | None:
    lo, hi = np.inf, -np.inf
    for a in arrays:
        if a.size == 0:
            continue
        a = np.asarray(a, dtype=np.float64)
        if log:
            with np.errstate(divide="ignore", invalid="ignore"):
                a = np.log10(a[a > 0])
            if a.size == 0:
                continue
        finite = a[np.isfinite(a)]
        if finite.size:
            lo, hi = min(lo, float(finite.min())), max(hi, float(finite.max()))
    return (lo, hi) if lo <= hi else None
