"""Linear self-attention in context (Zhang, Frei & Bartlett): one GD step, not OLS."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynlab.engines.base import get_engine
from dynlab.engines.icl import (
    InContextRegression,
    lsa_predict,
    ols_predict,
    one_step_mse,
    one_step_predict,
    sample_tasks,
)
from dynlab.engines.spec import SpecError
from dynlab.presets import load


def test_lsa_prediction_matches_the_full_attention_formula() -> None:
    # f(E) = E + W_PV E M (Eᵀ W_KQ E)/N computed literally, read at (d, N)
    d, n = 3, 7
    gen = torch.Generator().manual_seed(0)
    x, y, xq, _ = sample_tasks(4, n, d, gen)
    w_pv, w_kq = torch.randn(d + 1, d + 1, generator=gen), torch.randn(d + 1, d + 1, generator=gen)
    e = torch.cat([torch.cat([x, xq[:, None]], 1), torch.cat([y, torch.zeros(4, 1)], 1)[..., None]], 2)
    e = e.transpose(1, 2)  # (B, d+1, N+1)
    mask = torch.diag(torch.cat([torch.ones(n), torch.zeros(1)]))
    f = e + w_pv @ e @ mask @ (e.transpose(1, 2) @ w_kq @ e) / n
    torch.testing.assert_close(lsa_predict(w_pv, w_kq, x, y, xq), f[:, d, n])


def test_one_step_closed_form_and_ols_gap() -> None:
    d, n = 5, 20
    x, y, xq, yq = sample_tasks(50000, n, d, torch.Generator().manual_seed(1))
    mse = float(((one_step_predict(x, y, xq) - yq) ** 2).mean())
    assert mse == pytest.approx(one_step_mse(d, n), rel=0.05)
    assert float(((ols_predict(x, y, xq) - yq.double()) ** 2).mean()) < 1e-8


def test_engine_streams_and_live_knobs() -> None:
    eng = get_engine("icl-linear-regression")({"d": 3, "N": 10, "test_tasks": 500}, seed=0)
    frame = eng.step()
    assert frame.data["kq_pv_block"].shape == (3, 3)
    assert frame.data["test_mse"][1] == pytest.approx(3 * 4 / 14)
    eng.set("covariate_scale", 3.0)
    eng.set("lr", 0.01)
    assert eng.optimizers[0].param_groups[0]["lr"] == 0.01
    shifted = eng.evaluate()["shift_mse"]
    assert shifted[2] == pytest.approx(9 * 3, rel=0.2)  # zero predictor: E y² = c²·d
    with pytest.raises(SpecError):
        eng.set("N", 30)


@pytest.mark.slow
def test_trained_lsa_is_one_step_of_gd() -> None:
    torch.set_num_threads(1)
    d, results = 5, {}
    for n in (20, 80):
        eng = InContextRegression({"d": d, "N": n}, seed=0, probes={"evaluate": 10_000})
        for _ in eng.frames(2000):
            pass
        ev = eng.evaluate()
        blk = eng.block().numpy()
        theory = one_step_mse(d, n)
        mse = ev["test_mse"][0]
        assert abs(mse - theory) <= 0.05 * theory, (n, mse, theory)
        assert ev["prediction_gap"] <= 0.05, (n, ev["prediction_gap"])
        target = n / (n + d + 1)
        assert np.diag(blk).mean() == pytest.approx(target, rel=0.02)
        assert np.all(np.abs(np.diag(blk) - target) <= 0.05 * target)
        assert np.abs(blk - np.diag(np.diag(blk))).max() <= 0.05
        assert ev["test_mse"][2] < 1e-8  # OLS is exact: the LSA is not OLS
        assert mse > 100 * ev["test_mse"][2]
        results[n] = mse
    assert results[80] < results[20]


def test_preset_loads() -> None:
    assert load("icl-linear-regression").engine == "icl-linear-regression"
