"""Gradient coherence (Chatterjee & Zielinski): metric identities and real-vs-random separation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from dynlab.engines.base import get_engine
from dynlab.engines.coherence import GradientCoherence
from dynlab.engines.probes.coherence import m_coherence, model_m_coherence
from dynlab.presets import load


def test_identical_gradients_give_m() -> None:
    g = torch.randn(1, 50, dtype=torch.float64).repeat(17, 1)
    assert m_coherence(g) == pytest.approx(17, rel=1e-12)


def test_orthogonal_equal_norm_gradients_give_one() -> None:
    q, _ = torch.linalg.qr(torch.randn(40, 40, dtype=torch.float64))
    assert m_coherence(3.0 * q[:, :12].T) == pytest.approx(1.0, rel=1e-12)


def test_opposite_gradients_give_zero() -> None:
    g = torch.randn(1, 10, dtype=torch.float64)
    assert m_coherence(torch.cat([g, -g])) == pytest.approx(0.0, abs=1e-12)


def test_vmap_probe_matches_explicit_loop() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    x, y = torch.randn(9, 5), torch.randint(0, 3, (9,))
    rows = []
    for i in range(9):
        model.zero_grad()
        nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        rows.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).double())
    expected = m_coherence(torch.stack(rows))
    assert model_m_coherence(model, x, y, chunk=4) == pytest.approx(expected, rel=1e-5)


def test_engine_streams_and_live_lr() -> None:
    eng = get_engine("gradient-coherence")({"width": 16, "coherence_samples": 32}, seed=0)
    frames = list(eng.frames(3))
    assert frames[0].data["m_coherence"].shape == (2,)
    assert "m_coherence" not in frames[1].data
    assert frames[2].data["train_loss"].shape == (2,)
    eng.set("lr", 0.2)
    assert all(g["lr"] == 0.2 for opt in eng.optimizers for g in opt.param_groups)
    # the two models start identical; only the labels differ
    eng2 = GradientCoherence({"width": 16}, seed=3)
    eng2.start()
    for p, q in zip(eng2.models[0].parameters(), eng2.models[1].parameters()):
        assert torch.equal(p, q)
    assert not torch.equal(*eng2.ys)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_real_labels_far_more_coherent_early(seed: int) -> None:
    torch.set_num_threads(1)
    eng = GradientCoherence(seed=seed)  # cadence 29 steps = 1 epoch of 1797/64
    coh = {}
    for frame in eng.frames(5 * 29 + 1):
        if "m_coherence" in frame.data:
            coh[frame.step // 29] = frame.data["m_coherence"]
    for epoch in (0, 1, 2, 5):
        real, rand = coh[epoch]
        assert real >= 3 * rand, (epoch, real, rand)
        assert rand <= 2, (epoch, rand)
    assert np.isfinite(frame.data["train_loss"]).all()


def test_preset_loads() -> None:
    assert load("gradient-coherence").engine == "gradient-coherence"
