"""Lanczos stops once the top-k Ritz values have converged, and they match the dense eigenvalues."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynlab.engines.probes.hessian import HessianOperator


def _problem() -> tuple[torch.nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=gen, dtype=torch.float64)
    y = (x @ torch.randn(8, 4, generator=gen, dtype=torch.float64)).argmax(dim=1)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 24), torch.nn.Tanh(), torch.nn.Linear(24, 4)).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(100):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model, (x, y)


@pytest.fixture(scope="module")
def problem() -> tuple[HessianOperator, np.ndarray]:
    model, batch = _problem()
    op = HessianOperator(model, torch.nn.functional.cross_entropy, batch)
    return op, np.linalg.eigvalsh(op.dense().numpy())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_top5_match_dense_to_1e_6_and_stop_early(problem, seed):
    op, exact = problem
    top = exact[::-1][:5]
    op.matvecs = 0
    early = op.top_eigenvalues(5, seed=seed)
    n_early = op.matvecs
    op.matvecs = 0
    certified = op.top_eigenvalues(5, seed=seed, tol=1e-12, value_tol=0.0)  # residuals only
    n_certified = op.matvecs
    assert np.max(np.abs(early - top) / np.abs(top)) <= 1e-6
    assert np.max(np.abs(certified - top) / np.abs(top)) <= 1e-6
    assert n_early < n_certified, (n_early, n_certified)


def test_bottom_eigenvalues_stop_early_too(problem):
    op, exact = problem
    low = op.bottom_eigenvalues(2)
    scale = np.abs(exact).max()
    assert np.max(np.abs(low - exact[:2])) <= 1e-6 * scale
