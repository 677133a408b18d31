"""Hessian probes (Lanczos, Hutchinson, SLQ) against a dense Hessian, and the engines'
science claims: C² outliers under MSE, edge of stability, SGD's trace bound."""

from __future__ import annotations

import copy
import os
from collections import deque
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch.func import functional_call

from dynlab.engines.base import get_engine
from dynlab.engines.probes.hessian import (
    HessianOperator,
    bottom_eigenvalues,
    count_outliers,
    dense_hessian,
    hessian_trace,
    spectral_density,
    spectrum_histogram,
    symlog_edges,
    top_eigenvalues,
)
from dynlab.engines.spec import Frame, SpecError

F64 = torch.float64


def _mixture_mlp(dtype: torch.dtype = F64) -> tuple[torch.nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    """SCIENCE.md §2(a): 10-16-16-3 tanh MLP (P = 499), 200 GD steps, 3 classes, n = 300, CE."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    means = 2.0 * torch.randn(3, 10, generator=gen, dtype=F64)
    y = torch.arange(300) % 3
    x = means[y] + torch.randn(300, 10, generator=gen, dtype=F64)
    model = torch.nn.Sequential(
        torch.nn.Linear(10, 16),
        torch.nn.Tanh(),
        torch.nn.Linear(16, 16),
        torch.nn.Tanh(),
        torch.nn.Linear(16, 3),
    ).to(F64)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(200):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.to(dtype), (x.to(dtype), y)


def _oracle(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> np.ndarray:
    """Dense float64 Hessian by torch.autograd.functional.hessian: independent of our HVPs."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().to(F64).reshape(-1) for p in model.parameters()])
    x, y = batch

    def loss(v: torch.Tensor) -> torch.Tensor:
        parts = torch.split(v, [s.numel() for s in shapes])
        params = {n: p.view(s) for n, p, s in zip(names, parts, shapes)}
        return torch.nn.functional.cross_entropy(functional_call(model, params, (x.to(F64),)), y)

    return torch.autograd.functional.hessian(loss, flat).numpy()


@pytest.fixture(scope="module")
def problem() -> tuple[torch.nn.Module, tuple[torch.Tensor, torch.Tensor], np.ndarray]:
    torch.set_num_threads(1)
    model, batch = _mixture_mlp()
    return model, batch, _oracle(model, batch)


LOSS = torch.nn.functional.cross_entropy


# ----------------------------------------------------------------------------- probes
def test_lanczos_matches_dense_eigvalsh_float64(problem) -> None:
    model, batch, h = problem
    exact = np.linalg.eigvalsh(h)
    top = top_eigenvalues(model, LOSS, batch, k=5)
    assert top.shape == (5,) and np.all(np.diff(top) <= 0)
    np.testing.assert_array_less(np.abs(top - exact[::-1][:5]) / np.abs(exact[::-1][:5]), 1e-8)
    bottom = bottom_eigenvalues(model, LOSS, batch, k=2)
    np.testing.assert_array_less(np.abs(bottom - exact[:2]), 1e-8 * exact[-1])
    # A fixed budget of 3k + 20 steps and no early stop meets the same bound.
    fixed = top_eigenvalues(model, LOSS, batch, k=5, steps=35, tol=0)
    np.testing.assert_array_less(np.abs(fixed - exact[::-1][:5]) / np.abs(exact[::-1][:5]), 1e-8)


def test_lanczos_float32_model_within_1e4(problem) -> None:
    model, batch, h = problem
    m32 = copy.deepcopy(model).float()
    exact = np.linalg.eigvalsh(h)[::-1][:5]
    top = top_eigenvalues(m32, LOSS, (batch[0].float(), batch[1]), k=5)
    np.testing.assert_array_less(np.abs(top - exact) / exact, 1e-4)


def test_dense_hessian_and_operator_agree_with_oracle(problem) -> None:
    model, batch, h = problem
    np.testing.assert_allclose(dense_hessian(model, LOSS, batch).numpy(), h, atol=1e-12)


def test_hutchinson_within_its_standard_error(problem) -> None:
    model, batch, h = problem
    exact = np.trace(h)
    theory_var = 2.0 * (np.sum(h**2) - np.sum(np.diag(h) ** 2))
    for seed in (0, 1):
        est = hessian_trace(model, LOSS, batch, samples=1000, seed=seed)
        mean, se = est  # unpacks as (estimate, stderr)
        assert abs(mean - exact) <= 4 * se
        assert abs(np.var(est.samples, ddof=1) / theory_var - 1) < 0.15


def test_slq_moments_and_normalisation(problem) -> None:
    model, batch, h = problem
    p = h.shape[0]
    dens = spectral_density(model, LOSS, batch, n_vectors=10, steps=60, seed=0)
    assert dens.nodes.shape == dens.weights.shape == (10, 60)
    np.testing.assert_allclose(dens.weights.sum(axis=1), 1.0, atol=1e-12)
    exact = {1: np.trace(h) / p, 2: np.sum(h * h) / p}
    for j, value in exact.items():
        est, se = dens.moment(j)
        assert abs(est - value) <= 4 * se, (j, est, value, se)
    hist = dens.histogram
    assert hist.shape == (3, 80)
    assert np.all(hist[1] > hist[0]) and np.allclose(hist[1, :-1], hist[0, 1:])
    assert hist[2].sum() == pytest.approx(1.0, abs=1e-12)
    assert hist[0, 0] <= dens.nodes.min() and hist[1, -1] >= dens.nodes.max()


def test_histogram_grid_keeps_outliers_visible() -> None:
    # A bulk of width 1e-3 at 0 and one outlier at 50: the outlier gets its own bin and
    # the bulk is spread over many bins, not lumped into one.
    rng = np.random.default_rng(0)
    nodes = np.concatenate([rng.normal(0, 1e-3, 99), [50.0]])[None, :]
    weights = np.full_like(nodes, 0.01)
    hist = spectrum_histogram(nodes, weights, bins=60)
    assert hist[2].sum() == pytest.approx(1.0)
    assert hist[2][-5:].sum() == pytest.approx(0.01)  # the outlier, alone, at the top
    assert np.count_nonzero(hist[2] > 0) >= 10
    smooth = spectrum_histogram(nodes, weights, bins=60, sigma=1e-3)
    assert smooth[2].sum() == pytest.approx(1.0, abs=1e-6)
    e = symlog_edges(-1.0, 100.0, 10, 0.1)
    assert e[0] == pytest.approx(-1.0) and e[-1] == pytest.approx(100.0) and np.all(np.diff(e) > 0)


def test_count_outliers() -> None:
    assert count_outliers(np.array([9.0, 8.0, 7.0, 1.0, 0.9, 0.8])) == (3, 7.0)
    assert count_outliers(np.array([9.0, 8.0, 7.0, 1.0, 0.9, 0.8]), max_count=2)[0] == 2
    assert count_outliers(np.array([5.0, 4.0, -1e-3, -2e-3]))[0] == 2  # bulk below zero
    k, r = count_outliers(np.array([-1.0, -2.0]))
    assert k == 0 and np.isnan(r)


def test_operator_handles_unused_and_linear_parameters() -> None:
    class Odd(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(3, 1).to(F64)
            self.unused = torch.nn.Parameter(torch.ones(2, dtype=F64))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(x)

    torch.manual_seed(0)
    x = torch.randn(20, 3, dtype=F64)
    y = torch.randn(20, 1, dtype=F64)
    model = Odd()
    op = HessianOperator(model, torch.nn.functional.mse_loss, (x, y))
    h = op.dense().numpy()
    xa = torch.cat([x, torch.ones(20, 1, dtype=F64)], 1).numpy()
    expected = np.zeros((6, 6))
    # Parameters in module order: unused (2), lin.weight (3), lin.bias (1).
    names = [n for n, _ in model.named_parameters()]
    assert names == ["unused", "lin.weight", "lin.bias"]
    expected[2:, 2:] = 2.0 / 20 * xa.T @ xa
    np.testing.assert_allclose(h, expected, atol=1e-12)
    assert op.top_eigenvalues(1)[0] == pytest.approx(np.linalg.eigvalsh(expected)[-1], rel=1e-10)


def test_trace_refuses_one_sample(problem) -> None:
    model, batch, _ = problem
    with pytest.raises(ValueError):
        hessian_trace(model, LOSS, batch, samples=1)


# ----------------------------------------------------------------------------- engines
def test_outlier_engine_streams_follow_num_classes() -> None:
    eng = get_engine("hessian-outliers")({"num_classes": 3, "lanczos_steps": 40}, probes={"density": 2})
    frames = list(eng.frames(3))
    first = frames[0].data
    assert first["hessian_top"].shape == (14,)
    assert first["hessian_density"].shape[0] == 3
    assert first["predicted_count"] == 9
    assert "hessian_top" not in frames[1].data and "hessian_density" in frames[2].data
    assert frames[2].data["train_loss"] < first["train_loss"]
    ce = get_engine("hessian-outliers")({"num_classes": 3, "loss": "ce", "lanczos_steps": 40})
    f = ce.step().data
    assert f["hessian_top"].shape == (7,) and f["predicted_count"] == 3


def test_edge_of_stability_live_lr_moves_threshold() -> None:
    eng = get_engine("edge-of-stability")({"n_samples": 100, "hidden": 16})
    f0 = eng.step().data
    assert f0["stability_threshold"] == pytest.approx(10.0)
    assert {"sharpness", "hessian_trace", "hessian_density", "train_loss"} <= set(f0)
    assert 0 < f0["sharpness"] < f0["hessian_trace"]
    eng.set("lr", 0.1)
    eng.set("momentum", 0.5)
    (group,) = eng.optimizers[0].param_groups
    assert group["lr"] == 0.1 and group["momentum"] == 0.5
    assert eng.step().data["stability_threshold"] == pytest.approx(30.0)
    with pytest.raises(SpecError):
        eng.set("hidden", 8)


def test_sgd_stability_engine_smoke() -> None:
    eng = get_engine("sgd-stability")(probes={"hessian": 2})
    frames = list(eng.frames(3))
    d = frames[0].data
    assert d["trace"].shape == d["sharpness"].shape == d["train_loss"].shape == (2,)
    assert np.all(d["sharpness"] <= d["trace"])
    # Same initialisation: both runs start from the same loss and Hessian.
    assert d["train_loss"][0] == d["train_loss"][1] and d["trace"][0] == pytest.approx(d["trace"][1])
    assert frames[2].data["stability_threshold"] == pytest.approx(20.0)


@pytest.mark.parametrize(
    "name", ["hessian-outliers", "hessian-outliers-ce", "edge-of-stability", "sgd-stability"]
)
def test_presets_validate(name: str) -> None:
    from dynlab.presets import load

    preset = load(name)
    assert preset.views


# ----------------------------------------------------------------------------- science
def _last(frames: Iterator[Frame]) -> Frame:
    return deque(frames, maxlen=1)[0]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("num_classes", [3, 4, 5])
def test_mse_outliers_count_c_squared(num_classes: int, seed: int) -> None:
    """SCIENCE.md §2(b) criterion 4: k* = C² with a gap ≥ 1.5 after 1000 GD steps."""
    torch.set_num_threads(1)
    eng = get_engine("hessian-outliers")(
        {"num_classes": num_classes}, seed=seed, probes={"spectrum": 1000, "density": 10**6}
    )
    frame = _last(eng.frames(1001))
    assert frame.step == 1000
    assert frame.data["outlier_count"] == num_classes**2
    assert frame.data["outlier_gap"] >= 1.5


def _eos_run(lr: float, steps: int, cadence: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    torch.set_num_threads(1)
    eng = get_engine("edge-of-stability")(
        {"lr": lr}, seed=0, probes={"sharpness": cadence, "trace": 10**6, "density": 10**6}
    )
    at, sharp, loss = [], [], []
    for frame in eng.frames(steps + 1):
        loss.append(float(frame.data["train_loss"]))
        if "sharpness" in frame.data:
            at.append(frame.step)
            sharp.append(float(frame.data["sharpness"]))
    return np.array(at), np.array(sharp), np.array(loss)


@pytest.mark.slow
def test_edge_of_stability_sharpness_hovers_at_two_over_lr() -> None:
    """SCIENCE.md §2(c) criterion 6 at lr 0.2 (2/η = 10)."""
    at, sharp, loss = _eos_run(0.2, 3000, 50)
    threshold = 10.0
    assert sharp[0] <= 0.5 * threshold
    crossed = at[sharp > 0.9 * threshold]
    assert crossed.size and crossed[0] < 1000
    late = sharp[(at >= 1000) & (at <= 3000)]
    assert 0.95 * threshold <= np.median(late) <= 1.15 * threshold
    assert sharp.max() <= 1.3 * threshold
    assert np.any(np.diff(loss[crossed[0] :]) > 0)  # non-monotone at the edge
    assert loss[3000] < loss[1000]


@pytest.mark.slow
def test_edge_of_stability_control_small_lr_stays_below() -> None:
    """Control: at lr 0.05 (2/η = 40) the sharpness stays below 20."""
    _, sharp, _ = _eos_run(0.05, 3000, 250)
    assert sharp.max() < 20.0


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("DYNLAB_OPTIONAL_SCIENCE"), reason="optional (~1 min): set DYNLAB_OPTIONAL_SCIENCE=1"
)
def test_sgd_trace_bound_vs_gd() -> None:
    """SCIENCE.md §2(d) criterion 7: SGD(B=1) ends with tr H ≤ 2/η; GD only λ_max ≤ 2/η."""
    torch.set_num_threads(1)
    eng = get_engine("sgd-stability")({"lr": 0.1}, seed=0, probes={"hessian": 60000})
    d = _last(eng.frames(60001)).data
    assert np.all(d["train_loss"] < 1e-6)  # both interpolate
    assert d["trace"][0] <= 1.05 * 20.0  # SGD: the trace is bounded by 2/η ...
    assert d["sharpness"][1] <= 1.05 * 20.0  # ... GD only in λ_max:
    assert d["trace"][1] > 20.0  # its trace ends above 2/η (24.3 measured at 12k steps)
