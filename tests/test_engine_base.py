"""The engine base class: live changes reach the optimizers, a step's tensors reach the host in one copy."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from dynlab.engines.base import SUPPORT_MODULES, get_engine, registry, to_numpy
from dynlab.engines.data import Minibatches, digits_scaled, digits_standardized


def test_default_on_set_pushes_a_live_lr_into_every_param_group() -> None:
    cls = get_engine("gradient-coherence")
    assert "on_set" not in cls.__dict__  # the base class's push, not a copy of it
    eng = cls({"width": 8, "coherence_samples": 8}, seed=0)
    eng.step()
    assert len(eng.optimizers) == 2
    extra = torch.nn.Parameter(torch.zeros(3))
    eng.optimizers[1].add_param_group({"params": [extra], "lr": 0.7})  # a second group, other lr
    eng.set("lr", 0.2)
    groups = [g for opt in eng.optimizers for g in opt.param_groups]
    assert len(groups) == 3 and all(g["lr"] == 0.2 for g in groups)
    before = extra.detach().clone()
    extra.grad = torch.ones(3)
    eng.optimizers[1].step()  # the optimizer really uses the new value
    assert torch.allclose(extra.detach(), before - 0.2)


def test_default_on_set_leaves_groups_without_that_key_alone() -> None:
    eng = get_engine("edge-of-stability")({"n_samples": 60, "lanczos_steps": 5}, seed=0)
    eng.start()
    eng.set("momentum", 0.5)
    eng.set("lanczos_steps", 8)  # live, but no optimizer has such a key
    (group,) = eng.optimizers[0].param_groups
    assert group["momentum"] == 0.5 and "lanczos_steps" not in group


def test_a_refused_change_is_rolled_back_before_reaching_the_optimizer() -> None:
    eng = get_engine("effective-step-size")({"weight_decay": 1e-3}, seed=0)
    eng.start()
    with pytest.raises(ValueError, match="momentum above 0.99"):
        eng.set("momentum", 0.995)
    assert eng.params["momentum"] != 0.995
    assert all(g.get("momentum", 0.0) != 0.995 for opt in eng.optimizers for g in opt.param_groups)


def test_step_copies_its_tensors_to_the_host_once(monkeypatch: pytest.MonkeyPatch) -> None:
    eng = get_engine("effective-step-size")({"batch_size": 32}, seed=0)
    eng.start()
    calls = []
    real_cpu = torch.Tensor.cpu

    def counting_cpu(self: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        calls.append(tuple(self.shape))
        return real_cpu(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "cpu", counting_cpu)
    frame = eng.step()
    tensor_streams = [k for k in frame.data if k != "probe_seconds"]
    assert len(tensor_streams) >= 6  # six per-optimizer tensors and the test accuracy
    assert len(calls) == 1  # one copy for all of them, not one per stream


def test_to_numpy_keeps_values_dtypes_and_shapes_and_never_aliases() -> None:
    w = torch.randn(4, 5, requires_grad=True)
    values = {
        "scalar32": torch.tensor(1.5, dtype=torch.float32),
        "flag": torch.tensor([True, False, True]),
        "vec64": torch.arange(7, dtype=torch.float64) / 3,
        "counts": torch.tensor([3, 1, 4], dtype=torch.int64),
        "half": torch.tensor([0.5, 2.0], dtype=torch.float16),
        "transposed": w.T,  # non-contiguous, needs grad
        "empty": torch.zeros(0, 2),
        "number": 2.5,
        "array": np.array([1.0, 2.0]),
    }
    out = to_numpy(values)
    assert list(out) == list(values)  # the engine's order
    for name, value in values.items():
        expected = value.detach().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        assert out[name].dtype == expected.dtype, name
        assert out[name].shape == expected.shape, name
        assert np.array_equal(out[name], expected), name
    before = w.detach().T.numpy().copy()
    with torch.no_grad():
        w.add_(1.0)
    assert np.array_equal(out["transposed"], before)  # a copy, not a view of the live tensor


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_to_numpy_waits_for_the_device_once_on_cuda() -> None:
    dev = torch.device("cuda")
    values = {f"s{i}": torch.randn(3, 4, device=dev, dtype=dt) for i, dt in enumerate([torch.float32] * 4)}
    values["acc"] = torch.tensor(0.5, device=dev, dtype=torch.float64)
    values["hit"] = torch.tensor([True, False], device=dev)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = to_numpy(values)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    assert len(syncs) == 1
    for name, value in values.items():
        assert np.array_equal(out[name], value.cpu().numpy())


def test_minibatches_serve_epochs_with_or_without_the_short_tail() -> None:
    short = Minibatches(10, torch.Generator().manual_seed(0), drop_last=False)
    sizes = [len(short.next_batch(4)) for _ in range(6)]
    assert sizes == [4, 4, 2, 4, 4, 2]
    dropped = Minibatches(10, torch.Generator().manual_seed(0), drop_last=True)
    epoch = torch.cat([dropped.next_batch(4) for _ in range(2)])
    assert len(set(epoch.tolist())) == 8  # no index twice within an epoch
    assert [len(dropped.next_batch(4)) for _ in range(4)] == [4, 4, 4, 4]


def test_digits_loaders() -> None:
    x, y = digits_scaled()
    assert (
        x.shape == (1797, 64) and x.dtype == torch.float32 and 0.0 <= float(x.min()) < float(x.max()) <= 1.0
    )
    assert y.dtype == torch.long and set(y.tolist()) == set(range(10))
    xs, ys = digits_standardized(200)
    assert xs.shape == (200, 64) and xs.dtype == torch.float64
    assert torch.allclose(xs.mean(0), torch.zeros(64, dtype=torch.float64), atol=1e-12)
    assert torch.equal(ys.argmax(1), y[:200]) and torch.equal(ys.sum(1), torch.ones(200, dtype=torch.float64))


def test_the_registry_skips_exactly_the_support_modules() -> None:
    import pkgutil

    import dynlab.engines

    found = list(pkgutil.iter_modules(dynlab.engines.__path__))
    modules = {m.name for m in found}
    packages = {m.name for m in found if m.ispkg}  # probes/, watch/: support code, never engines
    assert SUPPORT_MODULES <= modules  # no stale name in the skip list
    ours = [cls for cls in registry().values() if cls.__module__.startswith("dynlab.engines.")]
    engine_modules = {cls.__module__.rsplit(".", 1)[-1] for cls in ours}  # (tests may define engines too)
    assert not engine_modules & SUPPORT_MODULES
    assert engine_modules == modules - SUPPORT_MODULES - packages  # every other module is an engine's
