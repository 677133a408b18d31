"""The effective-step-size engine (SCIENCE.md §1c): contract, live changes and the science."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynlab.engines.base import get_engine
from dynlab.engines.effective_step import OPTIMIZERS, EffectiveStepEngine
from dynlab.engines.spec import SpecError

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def test_registered_and_labels() -> None:
    assert get_engine("effective-step-size") is EffectiveStepEngine
    for s in EffectiveStepEngine.spec.streams:
        assert s.kind == "vector"
        assert s.labels == ("sgd", "sgdm", "sgdp", "adam", "adamp") == OPTIMIZERS
        assert s.description and s.theory


def test_frames_have_declared_shapes() -> None:
    eng = EffectiveStepEngine(seed=0)
    frames = list(eng.frames(3))
    declared = {s.name: s for s in eng.streams}
    assert [f.step for f in frames] == [0, 1, 2]
    for f in frames:
        for name, value in f.data.items():
            assert value.shape == declared[name].shape, name
            assert np.all(np.isfinite(value)), name
    every_step = set(declared) - {"test_accuracy", "probe_seconds"}
    assert every_step <= set(frames[0].data) and every_step <= set(frames[1].data)
    # test_accuracy runs at the eval cadence (step 0, then every 10), with its cost.
    assert "test_accuracy" in frames[0].data and "test_accuracy" not in frames[1].data
    assert np.isfinite(frames[0].data["probe_seconds"]).all()


def test_lockstep_start_and_scale_invariance() -> None:
    eng = EffectiveStepEngine(seed=1)
    frames = list(eng.frames(5))
    first = frames[0].data
    # Same initial weights and the same first batch for all five optimizers.
    assert np.ptp(first["weight_norm"]) == 0
    assert np.ptp(first["train_loss"]) == 0
    assert 0.7 < first["weight_norm"][0] < 1.2  # ×0.2 of the default init (≈0.92)
    # Lemma 2.1: the gradient of the scale-invariant W1 is orthogonal to it (float32).
    for f in frames:
        assert np.abs(f.data["grad_cosine"]).max() < 1e-4
    # Effective step is lr/||W1||^2 with each optimizer's own lr.
    p = eng.params
    lrs = np.array([p["lr"]] * 3 + [p["adam_lr"]] * 2)
    np.testing.assert_allclose(first["effective_step_size"], lrs / first["weight_norm"] ** 2, rtol=1e-5)


def test_same_seed_same_frames_and_seed_changes_data() -> None:
    a = [f.data for f in EffectiveStepEngine(seed=3).frames(3)]
    b = [f.data for f in EffectiveStepEngine(seed=3).frames(3)]
    c = [f.data for f in EffectiveStepEngine(seed=4).frames(3)]
    for fa, fb in zip(a, b):
        for k in fa:
            if k != "probe_seconds":
                np.testing.assert_array_equal(fa[k], fb[k])
    assert not np.array_equal(a[2]["train_loss"], c[2]["train_loss"])


def test_live_lr_applied_at_next_step() -> None:
    eng = EffectiveStepEngine(seed=0)
    list(eng.frames(2))
    eng.set("lr", 0.05)
    for k in ("sgd", "sgdm", "sgdp"):
        assert eng.optimizer(k).param_groups[0]["lr"] == 0.05
    for k in ("adam", "adamp"):
        assert eng.optimizer(k).param_groups[0]["lr"] == eng.params["adam_lr"]
    w1 = eng.models["sgd"][0].weight
    before = w1.detach().clone()
    frame = eng.step()
    # Plain SGD without decay moved by exactly -0.05 * grad of this step.
    torch.testing.assert_close(w1.detach() - before, -0.05 * w1.grad, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(
        frame.data["effective_step_size"][:3], 0.05 / frame.data["weight_norm"][:3] ** 2, rtol=1e-5
    )


def test_other_live_changes_and_refusal() -> None:
    eng = EffectiveStepEngine(seed=0)
    eng.step()
    eng.set("adam_lr", 1e-4)
    eng.set("momentum", 0.5)
    eng.set("beta1", 0.8)
    eng.set("weight_decay", 1e-3)
    eng.set("nesterov", True)
    assert eng.optimizer("adamp").param_groups[0]["lr"] == 1e-4
    assert eng.optimizer("adam").param_groups[0]["betas"] == (0.8, 0.999)
    assert eng.optimizer("sgdp").param_groups[0]["momentum"] == 0.5
    assert eng.optimizer("sgd").param_groups[0]["momentum"] == 0.0
    assert eng.optimizer("sgdm").param_groups[0]["nesterov"] is True
    assert all(eng.optimizer(k).param_groups[0]["weight_decay"] == 1e-3 for k in OPTIMIZERS)
    eng.step()
    with pytest.raises(SpecError):
        eng.set("momentum", 0.995)  # SGDP's decay / (1 - momentum) would explode
    assert eng.params["momentum"] == 0.5
    assert eng.optimizer("sgdp").param_groups[0]["momentum"] == 0.5
    with pytest.raises(SpecError):
        eng.set("batch_size", 64)  # not live


def test_preset_loads() -> None:
    from dynlab.presets import load

    preset = load("effective-step-size")
    assert preset.engine == "effective-step-size"


def test_norm_ordering_early() -> None:
    """After 150 steps momentum already leads: ||W1|| sgdm > sgdp > sgd."""
    eng = EffectiveStepEngine(seed=0)
    list(eng.frames(150))
    n = eng.weight_norms()
    assert n["sgdm"] > n["sgdp"] > n["sgd"]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_momentum_norm_growth_science(seed: int) -> None:
    """Criterion 4 at the SCIENCE.md setting (lr 0.1, batch 128, 1000 steps, no decay)."""
    eng = EffectiveStepEngine(seed=seed)
    for _ in range(1000):
        eng.step()
    n = eng.weight_norms()
    assert n["sgdm"] >= 1.5 * n["sgdp"], n
    assert n["sgdp"] <= 2.5 * n["sgd"], n
    eff = {k: eng.optimizer(k).param_groups[0]["lr"] / v**2 for k, v in n.items()}
    assert eff["sgd"] > eff["sgdp"] > eff["sgdm"], eff
    # The same mechanism separates Adam from AdamP at the default adam_lr.
    assert n["adam"] >= 1.5 * n["adamp"], n


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_cuda_like_cpu() -> None:
    cpu = [f.data for f in EffectiveStepEngine(seed=0, device="cpu").frames(3)]
    gpu = [f.data for f in EffectiveStepEngine(seed=0, device="cuda").frames(3)]
    for fc, fg in zip(cpu, gpu):
        for k in ("weight_norm", "train_loss", "effective_step_size"):
            np.testing.assert_allclose(fc[k], fg[k], rtol=1e-3, atol=1e-5)
