"""Benchmark: our Hessian probes beside PyHessian 0.1, curvlinops + scipy ``eigsh``, and a reference.

One model and batch: a 20-128-128-10 tanh MLP (P = 20,490, float32) trained 200 GD steps
with cross-entropy on 1024 samples of a seeded synthetic 10-class problem. For the top-5
eigenvalues it prints the wall time (best of ``--repeats``), the number of Hessian-vector
products and the largest relative error against a float64 reference (scipy ``eigsh`` to
tol 1e-13 on the float64 copy of the same weights), for

* ours: Lanczos with full re-orthogonalisation that stops when the top-5 Ritz values have
  converged (error bound r²/gap and their change both below 1e-9 of the largest);
* PyHessian 0.1 ``eigenvalues(top_n=5)`` (power iteration with deflation, its defaults:
  tol 1e-3, up to 100 iterations per eigenvalue);
* curvlinops ``HessianLinearOperator(...).to_scipy()`` and ``scipy.sparse.linalg.eigsh(k=5,
  which="LA")`` (implicitly restarted Lanczos to machine precision, scipy's default).

Every time includes building the operator (the create_graph backward). It also prints one
Hessian-vector product alone and eight batched with ``vmap`` (``is_grads_batched``), per
vector, which decides whether a block method could pay here, and the trace (Hutchinson,
ours, beside PyHessian's ``trace()``).

Run: ``python bench/bench_hessian.py [--repeats 5] [--threads 1]``. The anchors install
without pulling another torch build::

    pip install --no-deps pyhessian==0.1 curvlinops-for-pytorch backpack-for-pytorch \
        einops einconv unfoldNd linear_operator opt-einsum tqdm

Without them only ours and the reference are shown.
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
OURS = "ours: Lanczos, stops when the top-5 converge"
PYH = "PyHessian 0.1: eigenvalues(top_n=5)"
CURV = "curvlinops + scipy eigsh(k=5, 'LA')"


def make_problem() -> tuple[torch.nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    """The 20-128-128-10 MLP on 1024 samples of a noisy linear 10-class problem, trained a little."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1024, 20, generator=gen)
    w = torch.randn(20, 10, generator=gen)
    y = (x @ w + 0.5 * torch.randn(1024, 10, generator=gen)).argmax(dim=1)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(20, 128),
        torch.nn.Tanh(),
        torch.nn.Linear(128, 128),
        torch.nn.Tanh(),
        torch.nn.Linear(128, 10),
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    for _ in range(200):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model, (x, y)


def reference_top5(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> np.ndarray:
    """Top-5 eigenvalues of the float64 copy's Hessian, scipy ``eigsh`` to tol 1e-13."""
    import scipy.sparse.linalg as sla

    m64 = copy.deepcopy(model).double()
    op = HessianOperator(m64, torch.nn.functional.cross_entropy, (batch[0].double(), batch[1]))

    def mv(v: np.ndarray) -> np.ndarray:
        return op.matvec(torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64).reshape(-1))).numpy()

    lin = sla.LinearOperator((op.dim, op.dim), matvec=mv, dtype=np.float64)
    return np.sort(sla.eigsh(lin, k=5, which="LA", tol=1e-13)[0])[::-1]


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
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    # PyHessian calls backward(create_graph=True), which torch warns about; not ours to fix.
    warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph")
    loss_fn = torch.nn.functional.cross_entropy
    model, batch = make_problem()
    model.eval()  # PyHessian switches to eval mode; do the same for a fair comparison
    p = sum(q.numel() for q in model.parameters())

    t0 = time.perf_counter()
    exact = reference_top5(model, batch)
    t_ref = time.perf_counter() - t0
    print(f"model: 20-128-128-10 tanh MLP, P = {p:,}, float32, batch of {batch[0].shape[0]}, CE loss")
    print(
        f"reference (float64, eigsh tol 1e-13): {t_ref:.2f} s; top-5 = {np.array2string(exact, precision=7)}"
    )
    op = HessianOperator(model, loss_fn, batch)
    vec = torch.randn(8, op.dim, dtype=torch.float64)
    t_one, _ = best_of(5, lambda: [op.matvec(v) for v in vec])
    op._batched = True  # the operator batches only on accelerators: measure it here anyway
    t_batch, _ = best_of(5, lambda: op.matmat(vec))
    print(
        f"one Hessian-vector product: {t_one / 8 * 1e3:.1f} ms; eight batched with vmap: "
        f"{t_batch / 8 * 1e3:.1f} ms per vector ({t_batch / t_one:.2f} of eight single ones)\n"
    )

    def rel(a: np.ndarray) -> float:
        return float(np.max(np.abs(np.asarray(a) - exact) / np.abs(exact)))

    counter: dict[str, int] = {}

    def ours() -> np.ndarray:
        op = HessianOperator(model, loss_fn, batch)
        vals = op.top_eigenvalues(5)
        counter[OURS] = op.matvecs
        return vals

    def our_trace() -> tuple[float, float]:
        est = HessianOperator(model, loss_fn, batch).trace(samples=100)
        return est.estimate, est.stderr

    top5: dict[str, Callable[[], np.ndarray]] = {OURS: ours}
    traces: dict[str, Callable[[], tuple[float, float]]] = {"ours: Hutchinson, 100 samples": our_trace}
    try:
        from pyhessian import hessian as PyHessian
    except ImportError:
        print("PyHessian is not installed (see the module docstring): its rows are skipped.\n")
    else:

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
            counter[PYH] = calls["n"]
            return np.sort(np.array(vals))[::-1]

        def their_trace() -> tuple[float, float]:
            torch.manual_seed(0)
            hc = PyHessian(model, loss_fn, data=batch, cuda=False)
            return float(np.mean(hc.trace())), float("nan")

        top5[PYH] = theirs
        traces["PyHessian 0.1: trace() (tol 1e-3)"] = their_trace
    try:
        from curvlinops import HessianLinearOperator
    except ImportError:
        print("curvlinops is not installed (see the module docstring): its row is skipped.\n")
    else:
        import scipy.sparse.linalg as sla

        def curvlinops_eigsh() -> np.ndarray:
            params = [q for q in model.parameters() if q.requires_grad]
            lin = HessianLinearOperator(
                model, torch.nn.CrossEntropyLoss(), params, [batch], check_deterministic=False
            ).to_scipy()
            calls = {"n": 0}

            def counted(v: np.ndarray) -> np.ndarray:
                calls["n"] += 1
                return lin.matvec(v)

            wrapped = sla.LinearOperator(lin.shape, matvec=counted, dtype=lin.dtype)
            v0 = np.random.default_rng(0).standard_normal(lin.shape[0])
            vals = sla.eigsh(wrapped, k=5, which="LA", v0=v0)
            counter[CURV] = calls["n"]
            return np.sort(vals[0])[::-1]

        top5[CURV] = curvlinops_eigsh

    # Take turns, so that a busy machine slows every method alike; best and median of the rounds.
    times: dict[str, list[float]] = {name: [] for name in (*top5, *traces)}
    results: dict[str, object] = {}
    for _ in range(args.repeats):
        for name, fn in (*top5.items(), *traces.items()):
            t0 = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - t0)
    assert np.allclose(results[next(iter(top5))], top_eigenvalues(model, loss_fn, batch, k=5))
    t_ours = min(times[next(iter(top5))])
    print(
        f"{'top-5 eigenvalues (' + str(args.repeats) + ' alternating rounds)':46s} {'best s':>8s} "
        f"{'median s':>9s} {'HVPs':>5s} {'max rel err':>12s} {'ours / it':>9s}"
    )
    for name in top5:
        t = times[name]
        print(
            f"{name:46s} {min(t):8.3f} {float(np.median(t)):9.3f} {counter[name]:5d} "
            f"{rel(results[name]):12.2e} {t_ours / min(t):9.2f}"
        )
    print(f"\n{'trace':46s} {'best s':>8s} {'est':>10s} {'± se':>9s}")
    for name in traces:
        est, se = results[name]
        print(f"{name:46s} {min(times[name]):8.3f} {est:10.4f} {se:9.4f}")
    print("\nGoal: ours <= 0.5 of PyHessian's time (best of the rounds) at <= 1e-6 relative error.")


if __name__ == "__main__":
    main()
