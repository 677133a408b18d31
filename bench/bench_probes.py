"""What the grokking preset's probes cost, per call and as a share of an epoch.

The engine (p = 97, width 512, one torch thread) is trained 20 epochs, then each probe is
timed alone (median of ``--repeats`` calls; the per-step cache of unit columns is cleared
before each call, as in a real step), beside the epoch without probes. The share at the
preset's cadence is ``sum(cost / cadence) / (epoch + sum(cost / cadence))``. The Li2-energy
row has its baseline in the same run: the previous implementation (two float64 row
gathers and an add) on the same weights, checked to give the same numbers.

    python bench/bench_probes.py [--repeats 40]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import _common  # noqa: F401
import numpy as np
import torch
from _common import table


def median_ms(fn: Callable[[], object], repeats: int, before: Callable[[], None] = lambda: None) -> float:
    fn()
    times = []
    for _ in range(repeats):
        before()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=40)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from dynlab.engines.grokking import GrokkingEngine, normalised_columns

    eng = GrokkingEngine({}, seed=0, device="cpu")
    eng.start()
    for _ in range(20):
        eng.step()

    def clear() -> None:
        eng._unit_cache = None

    a, b, y = eng._probe_data
    p = eng.params["p"]

    def energy_before() -> torch.Tensor:
        """The previous Li2 energy: normalised columns twice, then two gathers and an add."""
        _, norms = normalised_columns(eng.w_in.detach())
        live = norms >= 1e-3 * norms.max()
        w_hat, _ = normalised_columns(eng.w_in.detach())
        act = (w_hat.index_select(0, a) + w_hat.index_select(0, b + p)).square()
        per_class = torch.zeros(p, act.shape[1], dtype=act.dtype).index_add_(0, y, act)
        proj = per_class - (1.0 / p) * act.sum(dim=0)[None, :]
        return (0.5 * proj.square().sum(dim=0) / a.numel())[live].mean()

    with torch.no_grad():
        assert torch.allclose(energy_before(), eng._energy_probe(), rtol=1e-12, atol=0)
        costs = {
            "test": median_ms(lambda: eng._forward(eng._ta, eng._tb), args.repeats),
            "fourier": median_ms(eng._fourier_probe, args.repeats, clear),
            "energy": median_ms(eng._energy_probe, args.repeats, clear),
        }
        before = median_ms(energy_before, args.repeats)
        both = median_ms(lambda: (eng._fourier_probe(), eng._energy_probe()), args.repeats, clear)
    eng.cadence = {k: 10**9 for k in eng.cadence}
    epoch = median_ms(eng.step, args.repeats)
    cadence = GrokkingEngine.spec.probes
    per_epoch = sum(costs[k] / cadence[k] for k in costs)
    rows = [(f"probe '{k}' (every {cadence[k]} epochs)", costs[k], costs[k] / cadence[k]) for k in costs]
    rows.append(("Li2 energy, previous implementation (same run)", before, before / cadence["energy"]))
    rows.append(("Fourier + energy in one epoch (unit columns shared)", both, both / cadence["energy"]))
    rows.append(("epoch without probes", epoch, epoch))
    table(
        "Grokking probes (p = 97, width 512, 1 torch thread; median ms)",
        rows,
        ("what", "ms a call", "ms an epoch"),
    )
    print(f"\nProbes at the preset's cadence: {per_epoch / (epoch + per_epoch):.1%} of an epoch's time.")


if __name__ == "__main__":
    main()
