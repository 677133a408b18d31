"""Grokking engine (SCIENCE.md §5): contract, probes, live changes and the reproduction."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dynlab.engines.base import get_engine
from dynlab.engines.grokking import (
    EMERGENCE_FACTOR,
    critical_fraction,
    fourier_ipr,
    fourier_power,
    li2_energy,
)
from dynlab.engines.spec import SpecError
from dynlab.presets import load

SMALL = {"p": 23, "width": 64, "train_fraction": 0.5}


def make(params: dict | None = None, seed: int = 0, **probes: int):
    engine = get_engine("grokking")(params or {}, seed=seed, probes=probes or None)
    engine.start()
    return engine


def test_streams_match_spec_and_cadences():
    engine = make(SMALL, test=2, fourier=3, energy=3)
    frames = list(engine.frames(7))
    names = {s.name: s for s in engine.streams}
    assert names["frequency_power"].shape == (12,)
    assert names["frequency_power"].labels[0] == "k=0" and names["frequency_power"].labels[-1] == "k=11"
    assert names["fourier_power"].shape == (12, 64)
    every_step = {"train_loss", "train_accuracy", "weight_norm", "train_fraction", "critical_fraction"}
    for f in frames:
        assert every_step <= set(f.data)
        assert ("test_accuracy" in f.data) == (f.step % 2 == 0)
        assert ("fourier_ipr" in f.data) == (f.step % 3 == 0)
        assert ("li2_energy" in f.data) == (f.step % 3 == 0)
    first = frames[0].data
    # Each heatmap column is one neuron's normalised spectrum.
    np.testing.assert_allclose(first["fourier_power"].sum(axis=0), 1.0, rtol=1e-5)
    assert first["critical_fraction"] == pytest.approx(critical_fraction(23))
    assert 0.0 <= first["test_accuracy"] <= 1.0
    shares = first["key_frequencies"]
    assert np.all(np.diff(shares) <= 1e-7) and 0 < shares.sum() <= 1


def test_same_seed_same_run_and_data_split_depends_on_seed():
    a = [f.data["train_loss"] for f in make(SMALL, seed=3).frames(3)]
    b = [f.data["train_loss"] for f in make(SMALL, seed=3).frames(3)]
    assert a == b
    e0, e1 = make(SMALL, seed=0), make(SMALL, seed=1)
    assert not torch.equal(e0._a, e1._a)
    # Train and test pairs partition the p² pairs.
    p = SMALL["p"]
    pairs = torch.cat([e0._a * p + e0._b, e0._ta * p + e0._tb])
    assert torch.equal(pairs.sort().values, torch.arange(p * p))
    assert e0._a.numel() == round(0.5 * p * p)


def test_critical_fraction_value():
    assert critical_fraction(97) == pytest.approx(2.7482 * math.log(97) / 97)
    assert 0.125 < critical_fraction(97) < 0.135


def test_fourier_ipr_random_vs_single_frequency():
    p, h = 97, 256
    gen = torch.Generator().manual_seed(0)
    random_ipr = fourier_ipr(fourier_power(torch.rand(p, h, generator=gen) - 0.5)).mean()
    # SCIENCE.md: ≈ 2/(p/2) ≈ 0.04 for random init.
    assert 0.03 < float(random_ipr) < 0.055
    tokens = torch.arange(p, dtype=torch.float64)[:, None]
    freqs = torch.arange(1, h + 1) % (p // 2) + 1
    pure = torch.cos(2 * math.pi * freqs * tokens / p + 0.3)
    np.testing.assert_allclose(fourier_ipr(fourier_power(pure)).numpy(), 1.0, rtol=1e-9)


def test_li2_energy_prefers_fourier_features():
    """A Fourier node correlates with (a + b) mod p through cos(α + β); a random node does not."""
    p = 31
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    a, b = a.reshape(-1), b.reshape(-1)
    onehot = torch.nn.functional.one_hot((a + b) % p, p).double()
    y_centred = onehot - onehot.mean(0)
    tokens = torch.arange(p, dtype=torch.float64)
    fourier = torch.cat(
        [torch.cos(2 * math.pi * 3 * tokens / p), torch.cos(2 * math.pi * 3 * tokens / p + 1.0)]
    )
    gen = torch.Generator().manual_seed(0)
    random = torch.randn(2 * p, 64, generator=gen, dtype=torch.float64)
    e_fourier = li2_energy(fourier[:, None], a, b, y_centred, p)
    e_random = li2_energy(random, a, b, y_centred, p)
    assert float(e_fourier) > 10 * float(e_random.mean())
    # Scale-free: the energy depends on the direction only.
    np.testing.assert_allclose(li2_energy(5 * random, a, b, y_centred, p), e_random, rtol=1e-10)


def test_live_lr_and_weight_decay_reach_the_optimizer():
    engine = make(SMALL)
    engine.step()
    engine.set("lr", 0.01)
    engine.set("weight_decay", 0.5)
    group = engine.optimizers[0].param_groups[0]
    assert group["lr"] == 0.01 and group["weight_decay"] == 0.5
    with pytest.raises(SpecError):
        engine.set("p", 31)  # the data set cannot change mid-run


def test_optimizer_switch_keeps_weights_and_says_what_happens_to_state():
    engine = make(SMALL)
    list(engine.frames(2))
    engine.pop_events()
    moments = engine.optimizers[0].state[engine.w_in]["exp_avg"]
    weights = engine.w_in.detach().clone()
    engine.set("optimizer", "adamw")
    assert isinstance(engine.optimizers[0], torch.optim.AdamW)
    assert engine.optimizers[0].state[engine.w_in]["exp_avg"] is moments  # moments carried over
    assert torch.equal(engine.w_in.detach(), weights)
    engine.set("optimizer", "muon")
    assert len(engine.optimizers[0].state) == 0  # Muon starts from zero momentum
    (info,) = [e for e in engine.pop_events() if "muon" in e.payload.get("message", "")]
    assert "zero" in info.payload["message"]
    before = engine.w_in.detach().clone()
    frames = list(engine.frames(3))
    assert not torch.equal(engine.w_in.detach(), before)
    assert all(np.isfinite(f.data["train_loss"]) for f in frames)
    assert "momentum_buffer" in engine.optimizers[0].state[engine.w_in]


def test_muon_update_is_orthogonal():
    from dynlab.engines.grokking import _orthogonalise

    g = torch.randn(40, 12, generator=torch.Generator().manual_seed(0))
    s = torch.linalg.svdvals(_orthogonalise(g))
    # Muon's Newton–Schulz coefficients push singular values into roughly [0.7, 1.2].
    assert s.min() > 0.5 and s.max() < 1.3


def test_presets_load_and_scaling_default_is_below_critical():
    modular = load("grokking-modular")
    assert modular.steps == 1500 and modular.hyperparameters["train_fraction"] == 0.3
    assert modular.hyperparameters["optimizer"] == "adam"
    scaling = load("grokking-scaling")
    frac = scaling.hyperparameters["train_fraction"]
    assert frac < critical_fraction(scaling.hyperparameters["p"])
    kinds = {v.kind for v in modular.views}
    assert {"waterfall", "heatmap"} <= kinds
    assert any(v.reference == "critical_fraction" for v in scaling.views)


# --------------------------------------------------------------------- the reproduction
def run(params: dict, seed: int, steps: int = 1500):
    """Run the recipe; return per-step series (NaN where a probe did not run) and events."""
    engine = get_engine("grokking")(
        params, seed=seed, device="cpu", probes={"test": 10, "fourier": 10, "energy": 100}
    )
    names = ("train_accuracy", "test_accuracy", "fourier_ipr", "li2_energy")
    series = {n: np.full(steps, np.nan) for n in names}
    events = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the CI box has 2 cores; a second thread mostly adds contention
    try:
        for f in engine.frames(steps):
            for n in names:
                if n in f.data:
                    series[n][f.step] = f.data[n]
            events += engine.pop_events()
    finally:
        torch.set_num_threads(threads)
    return series, events, engine


def first(mask: np.ndarray) -> int:
    hits = np.flatnonzero(mask)
    return int(hits[0]) if hits.size else -1


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_grokking_memorise_then_generalise(seed):
    s, events, engine = run({}, seed)
    train99 = first(s["train_accuracy"] >= 0.99)
    gen = first(s["test_accuracy"] >= 0.95)
    # 1. Memorisation by 400 while the held-out pairs are still at chance level.
    assert 0 <= train99 <= 400, train99
    assert s["test_accuracy"][400] <= 0.10
    # 2. Delayed generalisation: ≥ 500 epochs after memorisation, within 1500.
    assert gen >= 0 and gen - train99 >= 500, (train99, gen)
    # 3. Fourier features: IPR at the jump ≥ 3× its initial value.
    ipr = s["fourier_ipr"]
    ipr_at_jump = ipr[gen - gen % 10]
    assert ipr_at_jump >= 3 * ipr[0], (ipr[0], ipr_at_jump)
    # Normalised Li₂ energy non-decreasing from epoch 200 to the end (1 % tolerance).
    energy = s["li2_energy"][200::100]
    assert np.all(energy[1:] >= 0.99 * energy[:-1]), energy
    # Phase markers in the order Li₂ describes, at the steps the series show.
    phases = [(e.payload["name"], e.step) for e in events if e.kind == "phase"]
    assert [name for name, _ in phases] == ["memorisation", "feature emergence", "generalisation"]
    assert dict(phases)["memorisation"] == train99
    assert dict(phases)["generalisation"] == gen
    emergence = dict(phases)["feature emergence"]
    assert ipr[emergence] >= EMERGENCE_FACTOR * ipr[0]


@pytest.mark.slow
def test_no_weight_decay_no_grokking():
    """Negative control: without weight decay the same budget memorises but does not generalise."""
    s, events, _ = run({"weight_decay": 0.0}, seed=0)
    assert np.nanmax(s["train_accuracy"]) >= 0.99
    assert np.nanmax(s["test_accuracy"]) < 0.5
    assert "generalisation" not in [e.payload["name"] for e in events if e.kind == "phase"]
