"""Advani & Saxe generalisation dynamics: exact closed form, MP theory, peak at P = N."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynlab.engines.advani_saxe import GeneralizationDynamics, closed_form_weights, mp_test_error
from dynlab.engines.base import get_engine
from dynlab.presets import load


def test_gd_trajectory_equals_closed_form_float64() -> None:
    eng = GeneralizationDynamics({"n_features": 100, "sample_ratio": 1.0}, seed=0)
    eng.start()
    steps = 400
    for t in range(steps):
        np.testing.assert_allclose(eng.w, eng.closed_form_weights(t), rtol=0, atol=1e-10)
        eng.step()
    assert np.max(np.abs(eng.w - eng.closed_form_weights(steps))) < 1e-10
    # and the streams agree to the same precision
    frame = eng.step()
    sim, cf, _ = frame.data["test_error"]
    assert abs(sim - cf) < 1e-10


def test_closed_form_handles_zero_eigenvalues() -> None:
    # λ = 0 modes get η·τ·b (which is 0 in the range complement), never NaN
    w = closed_form_weights(np.array([0.0, 1.0]), np.eye(2), np.array([0.0, 2.0]), 0.1, 50)
    assert np.all(np.isfinite(w)) and w[0] == 0.0
    assert w[1] == pytest.approx(2.0 * (1 - 0.9**50))


@pytest.mark.parametrize(
    ("alpha", "t", "expected"),
    [
        (0.4, 30, 0.916),
        (0.4, 1e5, 0.933),
        (1.2, 30, 0.502),
        (1.2, 1e5, 1.2),
        (2.0, 30, 0.364),
        (2.0, 1e5, 0.4),
    ],
)
def test_mp_theory_matches_calibration(alpha: float, t: float, expected: float) -> None:
    assert mp_test_error(alpha, t, 0.1, 0.2)[0] == pytest.approx(expected, abs=2e-3)


def test_mp_theory_long_time_limit_for_alpha_above_one() -> None:
    # E(∞) = σ²/(α - 1) + σ² for α > 1 (σ_w² = 1)
    for alpha in (1.5, 2.0, 3.0):
        assert mp_test_error(alpha, 1e7, 0.1, 0.2)[0] == pytest.approx(0.2 / (alpha - 1) + 0.2, rel=1e-3)


def _final_errors(alpha: float, seeds: range, t: float, n: int = 300) -> np.ndarray:
    out = []
    for seed in seeds:
        gen = torch.Generator().manual_seed(seed)
        w_star = torch.randn(n, generator=gen, dtype=torch.float64).numpy() / np.sqrt(n)
        p = round(alpha * n)
        x = torch.randn(p, n, generator=gen, dtype=torch.float64).numpy()
        y = x @ w_star + np.sqrt(0.2) * torch.randn(p, generator=gen, dtype=torch.float64).numpy()
        lam, vec = np.linalg.eigh(x.T @ x / p)
        w = closed_form_weights(lam, vec, x.T @ y / p, 0.1, t)
        out.append(np.sum((w - w_star) ** 2) + 0.2)
    return np.array(out)


@pytest.mark.slow
def test_simulation_matches_theory_and_peaks_at_p_equals_n() -> None:
    for alpha in (0.4, 1.2, 2.0):
        for t in (30, 1e5):
            e = _final_errors(alpha, range(20), t)
            sem = e.std(ddof=1) / np.sqrt(len(e))
            theory = mp_test_error(alpha, t, 0.1, 0.2)[0]
            assert abs(e.mean() - theory) <= 3 * sem + 0.03 * theory, (alpha, t, e.mean(), theory)
    grid = np.array([0.6, 0.8, 0.9, 0.95, 1.0, 1.05, 1.1, 1.2, 1.5, 2.0])
    final = np.array([_final_errors(a, range(5), 1e5).mean() for a in grid])
    assert 0.95 <= grid[np.argmax(final)] <= 1.05
    assert 0.95 <= grid[np.argmax(mp_test_error(grid, 1e5, 0.1, 0.2))] <= 1.05
    for alpha in (0.8, 1.0, 1.2):  # overtraining: early stopping beats training on
        assert _final_errors(alpha, range(5), 30).mean() < _final_errors(alpha, range(5), 1e5).mean()


def test_engine_streams_and_live_sample_ratio() -> None:
    eng = get_engine("generalization-dynamics")({"n_features": 60, "sample_ratio": 0.5}, seed=1)
    frames = list(eng.frames(40))
    te = np.array([f.data["test_error"] for f in frames])
    assert te.shape == (40, 3)
    assert te[0, 2] == pytest.approx(1.2)  # theory at τ = 0: ||w*||² + σ²
    pts = frames[0].data["error_vs_ratio"]
    assert pts.shape[1] == 2 and pts[-1, 0] == pytest.approx(0.5)
    eng.set("sample_ratio", 2.0)
    assert eng.x.shape == (120, 60) and not eng.w.any()
    events = eng.pop_events()
    assert events and events[0].kind == "phase"
    frame = eng.step()
    assert frame.data["test_error"][2] == pytest.approx(1.2)  # time restarts with the student
    assert frame.data["error_vs_ratio"][-1, 0] == pytest.approx(2.0)


def test_preset_loads() -> None:
    preset = load("generalization-dynamics")
    assert preset.engine == "generalization-dynamics"
    assert any(v.log_y for v in preset.views)
