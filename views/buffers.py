"""Append-only numpy buffers for live series and per-step snapshots.

A live run appends one row per frame; redrawing needs contiguous arrays. The series
buffer preallocates and doubles (amortised O(1) appends, no Python lists of floats),
and past a cap it halves its oldest half by min/max decimation so memory stays bounded
on very long runs while spikes in old history stay visible.

Views that show one step at a time (histogram, waterfall, heatmap, points) keep every
pushed array instead, in one :class:`SnapshotStore` per view; :class:`SnapshotViewMixin`
is their ``_append`` / ``_clear_data``.
"""

from __future__ import annotations

import bisect
from collections.abc import ItemsView
from typing import Any

import numpy as np


class SeriesBuffer:
    """Steps and ``K`` columns of values, grown by doubling.

    Parameters
    ----------
    width
        Number of columns (1 for a scalar stream, K for a vector stream).
    cap
        Maximum rows kept; reaching it decimates the oldest half 2:1 (min/max pairs).
    ema_weight
        If given, an exponential moving average (debiased, as TensorBoard's) of every
        column is kept alongside, updated as rows arrive.
    """

    def __init__(self, width: int, cap: int = 1 << 22, ema_weight: float | None = None) -> None:
        self.width = int(width)
        self.cap = max(int(cap), 16)
        self.ema_weight = ema_weight
        self.clear()

    def clear(self) -> None:
        """Drop every row (keeps nothing allocated beyond a small start block)."""
        self.n = 0
        start = min(256, self.cap)
        self._steps = np.empty(start, dtype=np.float64)
        self._values = np.empty((start, self.width), dtype=np.float64)
        self._ema = np.empty((start, self.width), dtype=np.float64) if self.ema_weight is not None else None
        self._ema_state = np.zeros(self.width)
        self._ema_norm = np.zeros(self.width)
        self.decimated = 0  # how many times old history was halved

    def __len__(self) -> int:
        return self.n

    @property
    def steps(self) -> np.ndarray:
        """View of the stored steps (valid until the next append)."""
        return self._steps[: self.n]

    @property
    def values(self) -> np.ndarray:
        """View of the stored values, shape ``(n, width)``."""
        return self._values[: self.n]

    @property
    def ema(self) -> np.ndarray | None:
        """View of the smoothed values, or ``None`` when smoothing is off."""
        return None if self._ema is None else self._ema[: self.n]

    def append(self, step: float, row: np.ndarray | float) -> None:
        """Add one row; ``row`` is flattened and must have ``width`` entries."""
        row = np.asarray(row, dtype=np.float64).reshape(-1)
        if row.size != self.width:
            raise ValueError(f"expected {self.width} values, got {row.size}")
        self._make_room(1)
        self._steps[self.n] = step
        self._values[self.n] = row
        if self._ema is not None:
            # Debiased EMA; a NaN (diverged) sample adds nothing, but time still decays.
            w = self.ema_weight
            ok = np.isfinite(row)
            self._ema_state = w * self._ema_state + (1 - w) * np.where(ok, row, 0.0)
            self._ema_norm = w * self._ema_norm + (1 - w) * ok
            with np.errstate(invalid="ignore", divide="ignore"):
                self._ema[self.n] = np.where(self._ema_norm > 0, self._ema_state / self._ema_norm, np.nan)
        self.n += 1

    def extend(self, steps: np.ndarray, values: np.ndarray) -> None:
        """Add many rows at once (replay of a recording, benchmarks): vectorised, same result as appends.

        Parameters
        ----------
        steps
            Shape ``(m,)``.
        values
            Shape ``(m,)`` or ``(m, width)``.
        """
        steps = np.asarray(steps, dtype=np.float64).reshape(-1)
        values = np.asarray(values, dtype=np.float64).reshape(len(steps), -1)
        if values.shape[1] != self.width:
            raise ValueError(f"expected {self.width} columns, got {values.shape[1]}")
        block = max(1, min(4096, self.cap // 4))  # small enough for the cap's decimation to act
        for start in range(0, len(steps), block):
            stop = min(start + block, len(steps))
            m = stop - start
            self._make_room(m)
            self._steps[self.n : self.n + m] = steps[start:stop]
            self._values[self.n : self.n + m] = values[start:stop]
            if self._ema is not None:
                self._ema[self.n : self.n + m] = self._ema_block(values[start:stop])
            self.n += m

    def _ema_block(self, x: np.ndarray) -> np.ndarray:
        """The EMA of ``append`` for a block of rows, by a lower-triangular filter in chunks of 256."""
        w = self.ema_weight
        out = np.empty_like(x)
        for a in range(0, len(x), 256):
            chunk = x[a : a + 256]
            n = len(chunk)
            ok = np.isfinite(chunk)
            xs = np.where(ok, chunk, 0.0)
            i = np.arange(n)
            # T[i, j] = (1-w) w^(i-j) for j <= i; decay of the carried state is w^(i+1).
            lag = i[:, None] - i[None, :]
            t = np.where(lag >= 0, (1 - w) * w ** np.maximum(lag, 0), 0.0)
            carry = w ** (i + 1)[:, None]
            state = carry * self._ema_state + t @ xs
            norm = carry * self._ema_norm + t @ ok
            with np.errstate(invalid="ignore", divide="ignore"):
                out[a : a + n] = np.where(norm > 0, state / norm, np.nan)
            self._ema_state, self._ema_norm = state[-1], norm[-1]
        return out

    def _make_room(self, m: int) -> None:
        while self.n + m > self._steps.shape[0]:
            if self._steps.shape[0] >= self.cap:
                if self.n + m <= self.cap or self.n < 16:
                    break
                self._decimate_old_half()
            else:
                self._grow(min(max(2 * self._steps.shape[0], self.n + m), self.cap))
        if self.n + m > self._steps.shape[0]:
            # A single extend larger than the cap: grow past it once rather than lose data.
            self._grow(self.n + m)

    def _grow(self, size: int) -> None:
        self._steps = _resize(self._steps, size)
        self._values = _resize(self._values, size)
        if self._ema is not None:
            self._ema = _resize(self._ema, size)

    def _decimate_old_half(self) -> None:
        """Replace each block of 4 old rows by its (min, max) rows: 2:1 on the old half."""
        half = (self.n // 2) // 4 * 4
        blocks = half // 4
        arrays = [self._values] + ([self._ema] if self._ema is not None else [])
        steps = self._steps[:half].reshape(blocks, 4)
        new_steps = np.stack([steps[:, 0], steps[:, 3]], axis=1).reshape(-1)
        for a in arrays:
            b = a[:half].reshape(blocks, 4, self.width)
            with np.errstate(invalid="ignore"), _quiet_nan():
                lo, hi = np.nanmin(b, axis=1), np.nanmax(b, axis=1)
            a[: 2 * blocks] = np.stack([lo, hi], axis=1).reshape(-1, self.width)
            a[2 * blocks : self.n - half + 2 * blocks] = a[half : self.n].copy()
        self._steps[: 2 * blocks] = new_steps
        self._steps[2 * blocks : self.n - half + 2 * blocks] = self._steps[half : self.n].copy()
        self.n -= half - 2 * blocks
        self.decimated += 1


class _quiet_nan:
    """Silence numpy's 'All-NaN slice' RuntimeWarning (an all-NaN block stays NaN)."""

    def __enter__(self) -> None:
        import warnings

        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc: object) -> None:
        self._cm.__exit__(*exc)


def _resize(a: np.ndarray, size: int) -> np.ndarray:
    out = np.empty((size, *a.shape[1:]), dtype=a.dtype)
    out[: min(a.shape[0], size)] = a[:size]
    return out


class Snapshots:
    """Per-step arrays (histograms, heatmaps, point clouds) with lookup by step.

    Steps are assumed non-decreasing (a live run, or a replay after ``clear``); a step
    pushed twice replaces the earlier array.
    """

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.values: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self.steps)

    def clear(self) -> None:
        self.steps.clear()
        self.values.clear()

    def append(self, step: int, value: np.ndarray) -> None:
        if self.steps and step <= self.steps[-1]:
            # Out of order (e.g. a seek without clear): insert where it belongs.
            i = bisect.bisect_left(self.steps, step)
            if i < len(self.steps) and self.steps[i] == step:
                self.values[i] = value
                return
            self.steps.insert(i, step)
            self.values.insert(i, value)
            return
        self.steps.append(step)
        self.values.append(value)

    def at(self, step: int | None) -> tuple[int, np.ndarray] | None:
        """The newest snapshot at or before ``step`` (``None`` = newest overall)."""
        if not self.steps:
            return None
        if step is None:
            return self.steps[-1], self.values[-1]
        i = bisect.bisect_right(self.steps, step) - 1
        if i < 0:
            return None
        return self.steps[i], self.values[i]


class SnapshotStore:
    """The :class:`Snapshots` of every (run, stream) pushed to one view."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str], Snapshots] = {}

    def append(self, run: str, name: str, step: int, value: np.ndarray) -> None:
        """Keep ``value`` as stream ``name``'s array at ``step`` in ``run``."""
        self._by_key.setdefault((run, name), Snapshots()).append(step, value)

    def get(self, run: str, name: str) -> Snapshots | None:
        """All snapshots of one stream of one run (``None`` if none was pushed)."""
        return self._by_key.get((run, name))

    def at(self, run: str, name: str, step: int | None) -> tuple[int, np.ndarray] | None:
        """The newest snapshot of ``name`` in ``run`` at or before ``step`` (``None`` = newest)."""
        snaps = self._by_key.get((run, name))
        return None if snaps is None else snaps.at(step)

    def items(self) -> ItemsView[tuple[str, str], Snapshots]:
        """``((run, name), snapshots)`` pairs in the order they were first pushed."""
        return self._by_key.items()

    def clear(self) -> None:
        self._by_key.clear()


class SnapshotViewMixin:
    """The data half of a StreamView that keeps every pushed array, by step, in ``self.snaps``.

    Put it before the widget base class (``class V(SnapshotViewMixin, PlotView)``);
    a subclass that keeps more state extends ``_clear_data`` and calls ``super()``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.snaps = SnapshotStore()  # before the widget's __init__, which may draw
        super().__init__(*args, **kwargs)

    def _append(self, run: str, name: str, step: int, value: np.ndarray) -> None:
        self.snaps.append(run, name, step, value)

    def _clear_data(self) -> None:
        self.snaps.clear()


class PeakPyramid:
    """Min/max summaries of a :class:`SeriesBuffer` at every power-of-two block size.

    Level ``L >= BASE`` holds, per block of ``2**L`` consecutive rows, the first row's step and
    each column's min and max (NaN ignored). :meth:`lod` cuts a step range out of the
    coarsest level that still has about ``2 x pixels`` blocks in it and returns it as a
    zig-zag (min, max per block): a line drawn from it covers exactly the pixels the full
    series covers, spikes included, at a cost set by the plot's width rather than the
    series' length. The levels are extended from the rows added since the last call
    (vectorised, amortised O(1) per row); a buffer that thinned its history or was
    cleared is summarised again from scratch.

    Parameters
    ----------
    buffer
        The series buffer summarised.
    ema
        Summarise the buffer's smoothed values instead of its raw ones.
    """

    #: The finest level kept: blocks of 2**BASE rows. Finer ones would cost memory (level 1
    #: alone as much as the values) to save pyqtgraph a pass over at most 2**BASE rows a pixel.
    BASE = 3

    def __init__(self, buffer: SeriesBuffer, ema: bool = False) -> None:
        self.buffer = buffer
        self.ema = ema
        self._reset()

    def _reset(self) -> None:
        self._rows = 0  # buffer rows summarised into the first stored level
        self._decimated = self.buffer.decimated
        # Per stored level (block sizes 2**BASE, 2**(BASE+1), ...): [steps, mins, maxs, count]
        self._levels: list[list[Any]] = []

    def _source(self) -> np.ndarray:
        data = self.buffer.ema if self.ema else self.buffer.values
        assert data is not None
        return data

    def _store(self, index: int, steps: np.ndarray, mins: np.ndarray, maxs: np.ndarray) -> None:
        if index == len(self._levels):
            w = mins.shape[1]
            self._levels.append([np.empty(64), np.empty((64, w)), np.empty((64, w)), 0])
        lev = self._levels[index]
        m, k = lev[3], len(steps)
        if m + k > len(lev[0]):
            size = max(2 * len(lev[0]), m + k)
            lev[0], lev[1], lev[2] = (_resize(a, size) for a in lev[:3])
        lev[0][m : m + k], lev[1][m : m + k], lev[2][m : m + k] = steps, mins, maxs
        lev[3] = m + k

    def _update(self) -> None:
        buf = self.buffer
        if buf.decimated != self._decimated or buf.n < self._rows:
            self._reset()
        n, first = buf.n, 1 << self.BASE
        stop = n - n % first
        if stop - self._rows < first:
            return
        # The first stored level straight from the new raw rows, in blocks of 2**BASE...
        steps, vals = buf.steps, self._source()
        block = vals[self._rows : stop].reshape(-1, first, vals.shape[1])
        self._store(
            0, steps[self._rows : stop : first], np.fmin.reduce(block, axis=1), np.fmax.reduce(block, axis=1)
        )
        self._rows = stop
        # ...then each level from the one below: its new complete pairs only.
        index = 0
        while True:
            lev = self._levels[index]
            start = self._levels[index + 1][3] * 2 if index + 1 < len(self._levels) else 0
            stop = lev[3] - lev[3] % 2
            if stop - start < 2:
                break
            lo_steps, lo_min, lo_max = lev[0], lev[1], lev[2]
            self._store(
                index + 1,
                lo_steps[start:stop:2],
                np.fmin(lo_min[start:stop:2], lo_min[start + 1 : stop : 2]),
                np.fmax(lo_max[start:stop:2], lo_max[start + 1 : stop : 2]),
            )
            index += 1

    def lod(self, x0: float, x1: float, pixels: int) -> tuple[np.ndarray, np.ndarray]:
        """Steps and values ``(m, width)`` to draw the rows with steps in ``[x0, x1]`` on ``pixels``.

        Returns the rows themselves when there are at most ``4 x pixels`` of them; else the
        blocks of the chosen level as a zig-zag (each block's step twice, its min then its
        max), followed by the rows after the last complete block (the newest data exact).
        """
        self._update()
        steps, vals = self.buffer.steps, self._source()
        i0 = max(int(np.searchsorted(steps, x0, side="left")) - 1, 0)
        i1 = min(int(np.searchsorted(steps, x1, side="right")) + 1, len(steps))
        count = i1 - i0
        pixels = max(int(pixels), 16)
        if count <= 4 * pixels or not self._levels:
            return steps[i0:i1], vals[i0:i1]
        want = int(np.ceil(np.log2(count / (2 * pixels))))
        if want < self.BASE:  # up to 2**BASE rows a pixel: pyqtgraph's own pass is cheap enough
            return steps[i0:i1], vals[i0:i1]
        index = min(want - self.BASE, len(self._levels) - 1)
        lev_steps, lev_min, lev_max, m = self._levels[index]
        block = 1 << (self.BASE + index)
        j0 = max(i0 // block - 1, 0)
        j1 = min(i1 // block + 1, m)
        xs = np.repeat(lev_steps[j0:j1], 2)
        ys = np.stack([lev_min[j0:j1], lev_max[j0:j1]], axis=1).reshape(-1, vals.shape[1])
        tail = max(m * block, i0)
        if tail < i1:  # rows after the last complete block: drawn as they are
            xs = np.concatenate([xs, steps[tail:i1]])
            ys = np.concatenate([ys, vals[tail:i1]])
        return xs, ys
