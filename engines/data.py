"""Data sets shared by several engines, and shuffled minibatches over them.

Not an engine module: ``registry()`` skips it by name. Everything here is torch and
numpy only; sklearn's digits are bundled with sklearn (no download).
"""

from __future__ import annotations

import functools

import numpy as np
import torch


@functools.cache
def _digits() -> tuple[np.ndarray, np.ndarray]:
    """sklearn's 1797 8×8 digits: pixels (0..16) and labels, read once per process."""
    from sklearn.datasets import load_digits

    d = load_digits()
    data, target = np.asarray(d.data), np.asarray(d.target)
    data.setflags(write=False)  # cached and shared: callers copy, never write
    target.setflags(write=False)
    return data, target


def digits_images() -> tuple[np.ndarray, np.ndarray]:
    """All digits as float64 ``(1797, 8, 8)`` images scaled to [0, 1], and int labels (fresh copies)."""
    data, target = _digits()
    return data.reshape(-1, 8, 8) / 16.0, target.copy()


def digits_scaled() -> tuple[torch.Tensor, torch.Tensor]:
    """All digits: pixels scaled to [0, 1] as float32 ``(1797, 64)``, labels as int64 ``(1797,)``."""
    data, target = _digits()
    return torch.tensor(data / 16.0, dtype=torch.float32), torch.tensor(target, dtype=torch.long)


def digits_standardized(n: int, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` digits, float64: pixels standardised over them, labels one-hot ``(n, 10)``.

    Pixels that are constant over the ``n`` examples stay 0 (no division by a zero std).
    """
    data, target = _digits()
    x = np.asarray(data[:n], dtype=np.float64)
    std = x.std(axis=0)
    x = (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)
    y = np.eye(10)[target[:n]]
    return torch.tensor(x, device=device), torch.tensor(y, device=device)


class Minibatches:
    """Indices of shuffled minibatches over ``n`` examples, a fresh permutation every epoch.

    Parameters
    ----------
    n
        Number of examples.
    generator
        Draws the permutations (CPU generator; the indices move to the device on return).
    drop_last
        When the rest of an epoch is shorter than a batch, start a new epoch instead of
        serving the short batch.
    """

    def __init__(self, n: int, generator: torch.Generator, *, drop_last: bool) -> None:
        self.n = int(n)
        self.generator = generator
        self.drop_last = drop_last
        self._order = torch.empty(0, dtype=torch.long)
        self._pos = 0

    def next_batch(self, batch_size: int, device: str | torch.device = "cpu") -> torch.Tensor:
        """The next batch's indices (``batch_size`` of them, fewer only at an epoch's end)."""
        left = len(self._order) - self._pos
        if left < (batch_size if self.drop_last else 1):
            self._order = torch.randperm(self.n, generator=self.generator)
            self._pos = 0
        idx = self._order[self._pos : self._pos + batch_size]
        self._pos += len(idx)
        return idx.to(device)
