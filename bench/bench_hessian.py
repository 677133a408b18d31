"""Benchmark: our Hessian probes beside PyHessian 0.1 and a dense ``eigvalsh``.

One model and batch (a 64-24-24-10 tanh MLP, P = 2410, float32, trained 300 GD steps
on 1000 standardised digits with cross-entropy). For the top-5 eigenvalues and the
trace it prints the wall time, the number of Hessian-vector products and the error
against the dense float64 Hessian of the same weights, ours beside PyHessian's
``eigenvalues(top_n=5)`` / ``trace()`` (their defaults: tol 1e-3, up to 100 iterations).
The PyHessian time includes its constructor (the create_graph backward), as does ours.

Run: ``python bench/bench_hessian.py [--repeats 3]``. Without PyHessian installed
(``pip install pyhessian==0.1``) only ours and the dense reference are shown.
"""

from __future__ import annotations

import argparse
import copy
import time
import warnings
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import torch

from dynlab.engines.probes.hessian import HessianOperator, top_eigenvalues

T = TypeVar("T")


def make_problem() -> tuple[torch.nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    from sklearn.datasets import load_digits

    torch.manual_seed(0)
    data = load_digits()
    x = np.asarray(data.data[:1000], dtype=np.float32)
    std = x.std(0)
    x = (x - x.mean(0)) / np.where(std > 0, std, 1.0)
    xt, yt = torch.tensor(x), torch.tensor(data.target[:1000])
    model = torch.nn.Sequential(
        torch.nn.Linear(64, 24),
        torch.nn.Tanh(),
        torch.nn.Linear(24, 24),
        torch.nn.Tanh(),
        torch.nn.Linear(24, 10),
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xt), yt).backward()
        opt.step()
    return model, (xt, yt)


def best_of(repeats: int, fn: Callable[[], T]) -> tuple[float, T]:
    """Best wall time of ``repeats`` calls, and the last result."""
    times: list[float] = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    # PyHessian calls backward(create_graph=True), which torch warns about; not ours to fix.
    warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph")
    loss_fn = torch.nn.functional.cross_entropy
    model, batch = make_problem()
    model.eval()  # PyHessian switches to eval mode; do the same for a fair comparison
    p = sum(q.numel() for q in model.parameters())

    m64 = copy.deepcopy(model).double()
    b64 = (batch[0].double(), batch[1])
    t0 = time.perf_counter()
    h = HessianOperator(m64, loss_fn, b64).dense().numpy()
    t_dense = time.perf_counter() - t0
    exact = np.linalg.eigvalsh(h)[::-1][:5]
    tr_exact = float(np.trace(h))
    print(f"model: 64-24-24-10 tanh MLP, P = {p}, float32, batch of {batch[0].shape[0]} digits, CE loss")
    print(f"dense float64 Hessian + eigvalsh: {t_dense:.2f} s; top-5 = {np.array2string(exact, precision=6)}")
    print(f"tr H = {tr_exact:.6f}\n")

    def rel(a: np.ndarray) -> float:
        return float(np.max(np.abs(np.asarray(a) - exact) / np.abs(exact)))

    counter: dict[str, int] = {}

    def ours() -> np.ndarray:
        op = HessianOperator(model, loss_fn, batch)
        vals = op.top_eigenvalues(5)
        counter["hvp"] = op.matvecs
        return vals

    t_ours, top = best_of(args.repeats, ours)
    assert np.allclose(top, top_eigenvalues(model, loss_fn, batch, k=5))
    rows = [("ours: Lanczos, full re-orth, top-5", t_ours, counter["hvp"], rel(top))]

    def our_trace() -> tuple[float, float]:
        est = HessianOperator(model, loss_fn, batch).trace(samples=100)
        return est.estimate, est.stderr

    t_tr, (tr, se) = best_of(args.repeats, our_trace)
    trace_rows = [("ours: Hutchinson, 100 samples", t_tr, 100, tr, se)]

    try:
        from pyhessian import hessian as PyHessian
    except ImportError:
        print("PyHessian is not installed (pip install pyhessian==0.1): comparing to dense only.\n")
    else:
        seen: dict[str, int] = {}

        def theirs() -> np.ndarray:
            import importlib

            # The package re-exports the class under the module's name; fetch the module.
            ph = importlib.import_module("pyhessian.hessian")

            calls = {"n": 0}
            original = ph.hessian_vector_product

            def counted(*a: object, **k: object) -> object:
                calls["n"] += 1
                return original(*a, **k)

            ph.hessian_vector_product = counted
            try:
                torch.manual_seed(0)
                hc = PyHessian(model, loss_fn, data=batch, cuda=False)
                vals, _ = hc.eigenvalues(top_n=5)
            finally:
                ph.hessian_vector_product = original
            seen["hvp"] = calls["n"]
            return np.sort(np.array(vals))[::-1]

        t_theirs, top_theirs = best_of(args.repeats, theirs)
        rows.append(("PyHessian 0.1: eigenvalues(top_n=5)", t_theirs, seen["hvp"], rel(top_theirs)))

        def their_trace() -> float:
            torch.manual_seed(0)
            hc = PyHessian(model, loss_fn, data=batch, cuda=False)
            return float(np.mean(hc.trace()))

        t_ttr, ttr = best_of(args.repeats, their_trace)
        trace_rows.append(("PyHessian 0.1: trace() (tol 1e-3)", t_ttr, -1, ttr, float("nan")))

    print(f"{'top-5 eigenvalues':40s} {'time (s)':>9s} {'HVPs':>6s} {'max rel err':>12s}")
    for name, t, n, err in rows:
        print(f"{name:40s} {t:9.3f} {n:6d} {err:12.2e}")
    if len(rows) == 2:
        print(f"speed-up (PyHessian time / ours): {rows[1][1] / rows[0][1]:.2f}x")
    print(f"\n{'trace':40s} {'time (s)':>9s} {'est':>10s} {'± se':>9s} {'rel err':>9s}")
    for name, t, _, est, se in trace_rows:
        print(f"{name:40s} {t:9.3f} {est:10.4f} {se:9.4f} {abs(est - tr_exact) / tr_exact:9.2e}")


if __name__ == "__main__":
    main()
