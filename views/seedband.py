"""A seed band: mean ± s.d. across runs of one preset, per series, drawn behind the runs.

Runs are aligned by step and only the steps every run has count, so a run that is
still behind (a seed added later) narrows the band's span instead of biasing its mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pyqtgraph as pg

from . import style

#: Opacity of the band's fill and of the single runs' curves while a band is shown.
BAND_ALPHA = 60
RUN_OPACITY_UNDER_BAND = 0.35


class Band(NamedTuple):
    """A band's steps, mean, sample s.d. and lowest run (all aligned)."""

    steps: np.ndarray
    mean: np.ndarray
    sd: np.ndarray
    lowest: np.ndarray


def seed_band(steps: Sequence[np.ndarray], values: Sequence[np.ndarray]) -> Band:
    """Mean and sample standard deviation across runs at the steps all of them have.

    Parameters
    ----------
    steps
        Each run's steps, increasing and unique.
    values
        Each run's values at those steps (same lengths as ``steps``).

    Returns
    -------
    Band
        The common steps, the mean, the s.d. and the lowest run's value there. The s.d. is the sample one (``ddof = 1``): the spread a new seed is expected to
        show. A NaN in any run at a step makes that step's band NaN (a gap, not a lie).
    """
    if len(steps) < 2:
        raise ValueError(f"a seed band needs at least 2 runs, got {len(steps)}")
    common = np.asarray(steps[0], dtype=float)
    for s in steps[1:]:
        common = np.intersect1d(common, np.asarray(s, dtype=float), assume_unique=True)
    if not len(common):
        return Band(*(np.empty(0) for _ in range(4)))
    rows = []
    for s, v in zip(steps, values, strict=True):
        rows.append(np.asarray(v, dtype=float)[np.searchsorted(np.asarray(s, dtype=float), common)])
    stack = np.vstack(rows)
    return Band(common, stack.mean(axis=0), stack.std(axis=0, ddof=1), stack.min(axis=0))


class BandItems:
    """The drawn band of one series: its mean (bold), both edges (faint) and the fill between."""

    def __init__(self, plot: pg.PlotItem, colour_index: int, n_series: int, name: str | None) -> None:
        ramp = n_series > style.RAMP_ABOVE
        colour = pg.mkColor(style.ramp_colour(colour_index, n_series) if ramp else style.colour(colour_index))
        edge = pg.mkColor(colour)
        edge.setAlpha(BAND_ALPHA)
        fill = pg.mkColor(colour)
        fill.setAlpha(BAND_ALPHA)
        self.plot = plot
        self.lo = style.add_fast_curve(plot, pg.mkPen(edge, width=1))
        self.hi = style.add_fast_curve(plot, pg.mkPen(edge, width=1))
        self.fill = pg.FillBetweenItem(self.lo, self.hi, brush=pg.mkBrush(fill))
        plot.addItem(self.fill)
        self.mean = style.add_fast_curve(plot, pg.mkPen(colour, width=2.2), name)
        self.mean.setZValue(15)
        self.band: Band | None = None  # what is drawn

    def set_data(self, band: Band, log_y: bool) -> None:
        """Draw ``mean ± sd``; on a log axis a lower edge at or below 0 is drawn at the lowest run."""
        self.band = band
        lo = band.mean - band.sd
        if log_y:
            lo = np.where(lo > 0, lo, band.lowest)
        self.lo.setData(x=band.steps, y=lo)
        self.hi.setData(x=band.steps, y=band.mean + band.sd)
        self.mean.setData(x=band.steps, y=band.mean)

    def remove(self) -> None:
        for item in (self.fill, self.lo, self.hi, self.mean):
            self.plot.removeItem(item)
