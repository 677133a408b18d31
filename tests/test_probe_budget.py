"""The probe budget: cadences stretch so probes take the share of training time asked for."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
import torch

from dynlab import presets
from dynlab.engines.base import Engine
from dynlab.engines.spec import EngineSpec, SpecError, Stream


class _CostlyProbeEngine(Engine):
    """A linear least-squares fit whose probe (the top eigenvalue of the inputs' Gram matrix)
    costs about as much as a step: at its declared cadence (every step) half the time."""

    spec = EngineSpec(
        name="test-costly-probe",
        title="least squares with an expensive probe",
        description="test engine",
        paper="-",
        params=(),
        streams=(Stream("loss", "scalar"), Stream("top_eigenvalue", "scalar")),
        probes={"spectrum": 1},
    )

    def setup(self) -> None:
        gen = torch.Generator().manual_seed(self.seed)
        self.x = torch.randn(1024, 128, generator=gen, dtype=torch.float64)
        self.y = torch.randn(1024, 32, generator=gen, dtype=torch.float64)
        self.w = torch.zeros(128, 32, dtype=torch.float64, requires_grad=True)
        self.optimizers = [torch.optim.SGD([self.w], lr=1e-3)]

    def train_step(self, step: int) -> Mapping[str, Any]:
        out: dict[str, Any] = {}
        loss = (self.x @ self.w - self.y).square().mean()
        self.optimizers[0].zero_grad()
        loss.backward()
        self.optimizers[0].step()
        out["loss"] = loss.detach()
        if self.due("spectrum", step):
            with self.timed("spectrum"), torch.no_grad():
                out["top_eigenvalue"] = torch.linalg.eigvalsh(self.x.T @ self.x / 1024)[-1]
        return out


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    """One torch thread: on a shared machine, threads that wait for each other make timings jumpy."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _share(frames: list[Any], first: int) -> float:
    """Measured from the frames: probe seconds over step wall time (frame time stamps)."""
    spent = sum(
        float(np.nansum(f.data["probe_seconds"])) for f in frames[first:] if "probe_seconds" in f.data
    )
    wall = frames[-1].time - frames[first - 1].time
    return spent / wall


def test_fixed_cadences_without_a_budget() -> None:
    eng = _CostlyProbeEngine(seed=0)
    frames = list(eng.frames(20))
    ran = [f.step for f in frames if "top_eigenvalue" in f.data]
    assert ran == list(range(20))
    assert "probe_share" not in frames[0].data
    assert "probe_share" not in {s.name for s in eng.streams}


def test_a_budget_stretches_the_cadence_and_holds_the_share() -> None:
    budget = 0.1
    eng = _CostlyProbeEngine(seed=0, probe_budget=budget)
    assert "probe_share" in {s.name for s in eng.streams}
    frames = list(eng.frames(500))
    ran = [f.step for f in frames if "top_eigenvalue" in f.data]
    assert ran[0] == 0
    assert eng.probe_cadence["spectrum"] > 2  # it was too dear at every step: stretched
    assert len([s for s in ran if s >= 250]) >= 5  # and it still runs
    share = _share(frames, 250)
    reported = float(frames[-1].data["probe_share"])
    # The share held over the second half, measured from the frames, and as the engine reports it.
    assert 0.4 * budget < share < 2.0 * budget, share
    assert 0.4 * budget < reported < 2.0 * budget, reported


def test_a_cheap_probe_keeps_its_declared_cadence() -> None:
    eng = _CostlyProbeEngine(seed=0, probe_budget=0.95)
    frames = list(eng.frames(60))
    ran = [f.step for f in frames if "top_eigenvalue" in f.data]
    assert ran == list(range(60))
    assert eng.probe_cadence["spectrum"] == 1.0


def test_asking_twice_in_a_step_gives_the_same_answer() -> None:
    eng = _CostlyProbeEngine(seed=0, probe_budget=0.1)
    eng.start()
    for step in range(50):
        first = eng.due("spectrum", step)
        assert eng.due("spectrum", step) is first


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.2, 3.0])
def test_a_budget_outside_0_1_is_refused(bad: float) -> None:
    with pytest.raises(SpecError, match="probe_budget"):
        _CostlyProbeEngine(seed=0, probe_budget=bad)


def test_the_preset_key_is_read_and_checked() -> None:
    base = presets.load("grokking-modular").text
    text = base.replace('device = "auto"', 'device = "auto"\nprobe_budget = 0.1')
    assert presets.parse(text, name="g", check_engine=False).probe_budget == 0.1
    assert presets.parse(base, name="g", check_engine=False).probe_budget is None
    with pytest.raises(presets.PresetError, match="run.probe_budget"):
        presets.parse(text.replace("probe_budget = 0.1", "probe_budget = 10.0"), name="g")
    with pytest.raises(presets.PresetError, match="run.probe_budget"):
        presets.parse(text.replace("probe_budget = 0.1", 'probe_budget = "10 %"'), name="g")


def test_a_run_passes_the_budget_to_its_engine() -> None:
    from dataclasses import replace

    from dynlab.runner import run_headless

    small = {"p": 23, "width": 64}
    preset = presets.load("grokking-modular").with_overrides(steps=30, device="cpu", hyperparameters=small)
    run, items = run_headless(replace(preset, probe_budget=0.2))
    frames = [i for i in items if hasattr(i, "data")]
    assert "probe_share" in {s.name for s in run.streams}
    share = frames[-1].data["probe_share"]
    assert 0.0 < float(share) < 1.0
