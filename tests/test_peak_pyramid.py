"""The min/max pyramid behind long line views: what it draws covers what the full series covers."""

from __future__ import annotations

import numpy as np

from dynlab.views.buffers import PeakPyramid, SeriesBuffer


def _filled(n: int, width: int = 2, cap: int = 1 << 22) -> SeriesBuffer:
    rng = np.random.default_rng(0)
    buf = SeriesBuffer(width, cap=cap)
    values = np.cumsum(rng.standard_normal((n, width)), axis=0)
    values[n // 3] += 500.0  # a spike that must stay visible
    values[n // 2, 0] = np.nan  # a gap that must not poison its block
    buf.extend(np.arange(n, dtype=float), values)
    return buf


def _check_envelope(buf: SeriesBuffer, xs: np.ndarray, ys: np.ndarray, x0: float, x1: float) -> None:
    inside = (buf.steps >= x0) & (buf.steps <= x1)
    raw = buf.values[inside]
    assert np.allclose(np.nanmax(ys, axis=0), np.nanmax(raw, axis=0))
    assert np.allclose(np.nanmin(ys, axis=0), np.nanmin(raw, axis=0))
    assert np.all(np.diff(xs) >= 0), "steps in order"
    assert xs[-1] == buf.steps[inside][-1], "the newest row is drawn exactly"


def test_a_long_series_is_cut_to_the_plot_width_with_every_peak_kept():
    buf = _filled(1_000_003)
    pyr = PeakPyramid(buf)
    xs, ys = pyr.lod(0, 1e9, 900)
    assert len(xs) <= 8 * 900 + 2 * 1024
    _check_envelope(buf, xs, ys, 0, 1e9)
    # A zoomed-in range: fewer rows, a finer level, the same guarantee.
    xs, ys = pyr.lod(200_000.5, 400_000, 900)
    assert len(xs) <= 8 * 900 + 2 * 1024
    _check_envelope(buf, xs, ys, 200_000.5, 400_000)


def test_rows_appended_later_extend_the_levels_as_a_fresh_build_would():
    buf = _filled(300_001)
    pyr = PeakPyramid(buf)
    pyr.lod(0, 1e9, 500)
    rng = np.random.default_rng(1)
    for i in range(300_001, 300_001 + 777):
        buf.append(i, rng.standard_normal(2))
        if i % 97 == 0:
            pyr.lod(0, 1e9, 500)
    grown = pyr.lod(0, 1e9, 500)
    fresh = PeakPyramid(buf).lod(0, 1e9, 500)
    for a, b in zip(grown, fresh, strict=True):
        np.testing.assert_array_equal(a, b)
    _check_envelope(buf, *grown, 0, 1e9)


def test_a_short_series_is_drawn_row_for_row():
    buf = _filled(1000)
    xs, ys = PeakPyramid(buf).lod(0, 1e9, 900)
    np.testing.assert_array_equal(xs, buf.steps)
    np.testing.assert_array_equal(ys, buf.values)


def test_a_buffer_that_thinned_its_history_is_summarised_again():
    buf = _filled(60_000, cap=1 << 15)
    pyr = PeakPyramid(buf)
    pyr.lod(0, 1e9, 100)
    before = buf.decimated
    buf.extend(np.arange(60_000, 90_000, dtype=float), np.ones((30_000, 2)))
    assert buf.decimated > before
    _check_envelope(buf, *pyr.lod(0, 1e9, 100), 0, 1e9)
