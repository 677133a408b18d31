"""Hessian probes for any torch model: top eigenvalues, trace and spectral density.

Everything is built on Hessian-vector products by double backprop: the gradient is
taken once with ``create_graph=True`` and each product ``Hv`` is one more backward pass
through that retained graph (about the cost of one training step). On top of it:

* :func:`top_eigenvalues` / :func:`bottom_eigenvalues`: Lanczos with full
  re-orthogonalisation and a residual-based stopping rule (Ritz values are certified:
  an eigenvalue lies within the reported residual of each).
* :func:`hessian_trace`: Hutchinson's estimator with Rademacher vectors, returned
  with its standard error.
* :func:`spectral_density`: stochastic Lanczos quadrature (Ghorbani et al. 2019),
  returned as quadrature nodes/weights and a histogram on a symmetric-log grid that
  resolves the bulk near zero and keeps the outliers visible.

``batch`` is ``(inputs, targets)`` and ``loss_fn(model(inputs), targets)`` a scalar.
The model's dtype and device are respected: products are computed in the model's
dtype, while the Krylov basis and the small tridiagonal problems are kept in float64
on the same device (so float32 models lose nothing to the re-orthogonalisation).
The model is used as it is (``train()`` or ``eval()``): call ``model.eval()`` first if
BatchNorm should use running statistics or dropout should be off.

Memory: Lanczos keeps its basis, ``steps x P`` float64 numbers.

Example
-------
>>> op = HessianOperator(model, torch.nn.functional.cross_entropy, (x, y))
>>> op.top_eigenvalues(5), op.trace(samples=200).estimate
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

LossFn = Callable[[Any, Any], torch.Tensor]
Batch = tuple[Any, Any]

__all__ = [
    "HessianOperator",
    "LanczosResult",
    "SpectralDensity",
    "TraceEstimate",
    "bottom_eigenvalues",
    "count_outliers",
    "dense_hessian",
    "hessian_trace",
    "lanczos",
    "spectral_density",
    "spectrum_histogram",
    "symlog_edges",
    "top_eigenvalues",
]


# --------------------------------------------------------------------------- results
@dataclass(frozen=True)
class TraceEstimate:
    """Hutchinson estimate of tr(H).

    Attributes
    ----------
    estimate
        Mean of ``z^T H z`` over the Rademacher samples.
    stderr
        Standard error of that mean (sample standard deviation / sqrt(m)).
    samples
        The individual ``z^T H z`` values, shape ``(m,)``; their variance estimates
        ``2 (||H||_F^2 - sum_i H_ii^2)``.
    """

    estimate: float
    stderr: float
    samples: np.ndarray

    def __iter__(self) -> Iterator[float]:  # allows ``est, se = hessian_trace(...)``
        return iter((self.estimate, self.stderr))


@dataclass(frozen=True)
class LanczosResult:
    """The tridiagonal matrix T of a Lanczos run (float64 numpy).

    ``alpha`` (m,) is its diagonal, ``beta`` (m-1,) its off-diagonal (a zero marks a
    restart after an invariant subspace was found), ``residual_norm`` the norm of the
    next Lanczos vector (``beta_m``), used to bound the Ritz residuals.
    """

    alpha: np.ndarray
    beta: np.ndarray
    residual_norm: float

    def ritz(self) -> tuple[np.ndarray, np.ndarray]:
        """Ritz values (ascending) and eigenvectors of T (columns)."""
        return _tridiag_eigh(self.alpha, self.beta)

    def residuals(self) -> tuple[np.ndarray, np.ndarray]:
        """Ritz values (ascending) and the residual norms ``||H y - theta y||``."""
        theta, s = self.ritz()
        return theta, self.residual_norm * np.abs(s[-1, :])


@dataclass(frozen=True)
class SpectralDensity:
    """Stochastic Lanczos quadrature estimate of the eigenvalue density of H.

    Attributes
    ----------
    nodes, weights
        Shape ``(n_vectors, m)``: Ritz values and Gauss weights (first components of
        T's eigenvectors, squared) per random vector; each row of ``weights`` sums to 1.
    histogram
        Shape ``(3, B)``: left edges, right edges and probability mass per bin (the
        ``histogram`` stream kind), averaged over vectors; the masses sum to 1.
    dim
        Number of parameters P.
    """

    nodes: np.ndarray
    weights: np.ndarray
    histogram: np.ndarray
    dim: int

    def moment(self, j: int) -> tuple[float, float]:
        """Estimate of ``tr(H^j) / P`` and its standard error over the vectors."""
        per_vector = np.sum(self.weights * self.nodes**j, axis=1)
        n = per_vector.size
        se = float(per_vector.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
        return float(per_vector.mean()), se


# --------------------------------------------------------------------------- operator
class HessianOperator:
    """Hessian of ``loss_fn(model(inputs), targets)`` w.r.t. the trainable parameters.

    Building it costs one forward and one backward pass with ``create_graph=True``;
    each :meth:`matvec` then costs about one more backward pass.

    Parameters
    ----------
    model
        Any ``torch.nn.Module``; parameters with ``requires_grad`` are differentiated.
    loss_fn
        ``loss_fn(outputs, targets) -> scalar tensor``.
    batch
        ``(inputs, targets)``; ``inputs`` is passed to ``model`` as is.
    params
        Restrict to these parameters (default: all trainable ones, in module order).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        loss_fn: LossFn,
        batch: Batch,
        params: Sequence[torch.nn.Parameter] | None = None,
    ) -> None:
        self.params = (
            list(params) if params is not None else [p for p in model.parameters() if p.requires_grad]
        )
        if not self.params:
            raise ValueError("the model has no trainable parameters")
        inputs, targets = batch
        with torch.enable_grad():
            loss = loss_fn(model(inputs), targets)
            if loss.dim() != 0:
                raise ValueError(f"loss_fn must return a scalar, got shape {tuple(loss.shape)}")
            grads = torch.autograd.grad(loss, self.params, create_graph=True, allow_unused=True)
        # Parameters the loss ignores, or on which it is linear, have a constant (or no)
        # gradient: their Hessian rows are zero and they are left out of the backward.
        self._live = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
        self._grads = [grads[i] for i in self._live]
        self._sizes = [p.numel() for p in self.params]
        self.dim = int(sum(self._sizes))
        self.dtype = self.params[0].dtype
        self.device = self.params[0].device
        self.matvecs = 0  # Hessian-vector products done so far (a cost measure)
        # vmap-batched products in matmat (until one fails). Not on a CPU: there eight batched
        # products cost 1.5x eight single ones (bench/bench_hessian.py); a GPU gains from them.
        self._batched = self.device.type != "cpu"

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """``H v`` for a flat vector ``v`` of length P (returned in ``v``'s dtype)."""
        self.matvecs += 1
        out_dtype = v.dtype
        chunks = torch.split(v.to(self.dtype), self._sizes)
        hv = [torch.zeros_like(p) for p in self.params]
        if self._grads:
            grad_out = [chunks[i].view_as(self.params[i]) for i in self._live]
            # Hv = d/dθ (g · v); retain_graph keeps the first backward for the next product.
            res = torch.autograd.grad(
                self._grads, self.params, grad_outputs=grad_out, retain_graph=True, allow_unused=True
            )
            hv = [r if r is not None else z for r, z in zip(res, hv)]
        return torch.cat([h.reshape(-1) for h in hv]).to(out_dtype)

    def matmat(self, vs: torch.Tensor) -> torch.Tensor:
        """``H V^T`` row by row for a ``(b, P)`` block: ``vmap``-batched backward passes
        (one call for the block) on an accelerator, else (and where an op has no batching
        rule) one product per row."""
        if self._batched and self._grads and vs.shape[0] > 1:
            out_dtype = vs.dtype
            chunks = torch.split(vs.to(self.dtype), self._sizes, dim=1)
            grad_out = [chunks[i].reshape(vs.shape[0], *self.params[i].shape) for i in self._live]
            try:
                res = torch.autograd.grad(
                    self._grads,
                    self.params,
                    grad_outputs=grad_out,
                    retain_graph=True,
                    allow_unused=True,
                    is_grads_batched=True,
                )
            except (RuntimeError, NotImplementedError):
                self._batched = False
            else:
                self.matvecs += vs.shape[0]
                cols = [
                    r.reshape(vs.shape[0], -1)
                    if r is not None
                    else vs.new_zeros(vs.shape[0], p.numel(), dtype=self.dtype)
                    for r, p in zip(res, self.params)
                ]
                return torch.cat(cols, dim=1).to(out_dtype)
        return torch.stack([self.matvec(v) for v in vs])

    # Convenience: the probes as methods, sharing one gradient graph.
    def top_eigenvalues(self, k: int = 5, **kw: Any) -> np.ndarray:
        """See :func:`top_eigenvalues`."""
        return _extreme(self, k, largest=True, **kw)

    def bottom_eigenvalues(self, k: int = 2, **kw: Any) -> np.ndarray:
        """See :func:`bottom_eigenvalues`."""
        return _extreme(self, k, largest=False, **kw)

    def trace(self, samples: int = 100, seed: int = 0) -> TraceEstimate:
        """See :func:`hessian_trace`."""
        return _hutchinson(self, samples, seed)

    def density(self, n_vectors: int = 5, steps: int = 80, **kw: Any) -> SpectralDensity:
        """See :func:`spectral_density`."""
        return _slq(self, n_vectors, steps, **kw)

    def dense(self) -> torch.Tensor:
        """The full P x P Hessian (P products; for small models and tests)."""
        eye = torch.eye(self.dim, dtype=self.dtype, device=self.device)
        h = torch.cat([self.matmat(eye[i : i + 64]) for i in range(0, self.dim, 64)])
        return 0.5 * (h + h.T)


# --------------------------------------------------------------------------- Lanczos
def lanczos(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    dim: int,
    steps: int,
    *,
    v0: torch.Tensor | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
    converged: Callable[[LanczosResult], bool] | None = None,
    check_every: int = 5,
) -> LanczosResult:
    """Lanczos tridiagonalisation with full re-orthogonalisation (float64 basis).

    Parameters
    ----------
    matvec
        ``v -> H v`` for flat float64 vectors of length ``dim``.
    dim
        P, the size of H; ``steps`` is capped at ``dim``.
    steps
        Maximum number of Lanczos steps (products).
    v0
        Starting vector (normalised here); default a Gaussian one drawn from ``seed``.
    converged
        Optional test on the partial result, run every ``check_every`` steps; the run
        stops early when it returns True.

    Returns
    -------
    LanczosResult
    """
    steps = int(min(steps, dim))
    gen = torch.Generator().manual_seed(int(seed))  # CPU draws: same vectors on every device
    f64 = torch.float64
    q = (v0.detach().to(f64) if v0 is not None else torch.randn(dim, generator=gen, dtype=f64)).to(device)
    q = q / torch.linalg.vector_norm(q)
    basis = torch.empty(steps, dim, dtype=f64, device=device)
    alpha: list[float] = []
    beta: list[float] = []
    scale = 0.0
    resid = 0.0
    for j in range(steps):
        basis[j] = q
        w = matvec(q)
        a = float(torch.dot(q, w))
        alpha.append(a)
        scale = max(scale, abs(a))
        # Classical Gram-Schmidt twice against the whole basis ("twice is enough"):
        # O(jP) per step, negligible beside a Hessian-vector product.
        for _ in range(2):
            w = w - basis[: j + 1].T @ (basis[: j + 1] @ w)
        b = float(torch.linalg.vector_norm(w))
        resid = b
        if j + 1 == steps:
            break
        scale = max(scale, b)
        if converged is not None and (j + 1) % check_every == 0:
            if converged(LanczosResult(np.array(alpha), np.array(beta), b)):
                break
        if b <= 1e-12 * max(scale, 1e-300):
            # Invariant subspace found: restart with a fresh vector orthogonal to the
            # basis (a zero off-diagonal), so repeated eigenvalues are still found.
            r = torch.randn(dim, generator=gen, dtype=f64).to(device)
            for _ in range(2):
                r = r - basis[: j + 1].T @ (basis[: j + 1] @ r)
            q = r / torch.linalg.vector_norm(r)
            beta.append(0.0)
        else:
            q = w / b
            beta.append(b)
    return LanczosResult(np.array(alpha), np.array(beta), resid)


def _tridiag_eigh(alpha: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = np.diag(alpha) + np.diag(beta, 1) + np.diag(beta, -1)
    return np.linalg.eigh(t)


def _extreme(
    op: HessianOperator,
    k: int,
    *,
    largest: bool,
    steps: int | None = None,
    tol: float = 1e-7,
    seed: int = 0,
    min_steps: int | None = None,
    value_tol: float = 1e-9,
) -> np.ndarray:
    k = int(k)
    if not 1 <= k <= op.dim:
        raise ValueError(f"k must be in [1, {op.dim}], got {k}")
    max_steps = steps if steps is not None else max(3 * k + 20, 200)
    floor = min_steps if min_steps is not None else min(2 * k + 10, op.dim)
    if max_steps < k:
        raise ValueError(f"steps={max_steps} is fewer than k={k}")
    previous: list[np.ndarray] = []

    def done(res: LanczosResult) -> bool:
        if res.alpha.size < max(floor, k):
            return False
        theta, r = res.residuals()
        sel = slice(-k, None) if largest else slice(0, k)
        scale = max(np.abs(theta).max(), 1e-300)
        # Certified: some eigenvalue lies within r of each Ritz value (Kahan's bound).
        if np.all(r[sel] <= tol * scale):
            return True
        if value_tol <= 0:
            return False
        # Converged values: a Ritz value's error is about r² / gap (its distance to the
        # other Ritz values) long before r itself is small, and the values have stopped
        # moving. Both must hold for every one of the k.
        wanted = theta[sel]
        others = np.delete(theta, np.arange(theta.size)[sel])
        gap = np.min(np.abs(wanted[:, None] - others[None, :]), axis=1) if others.size else np.full(k, np.inf)
        moved = np.abs(wanted - previous[-1]) if previous else np.full(k, np.inf)
        previous.append(wanted)
        bound = r[sel] ** 2 / np.maximum(gap, 1e-300)
        return bool(np.all(bound <= value_tol * scale) and np.all(moved <= value_tol * scale))

    res = lanczos(
        op.matvec,
        op.dim,
        max_steps,
        device=op.device,
        seed=seed,
        converged=done if (tol > 0 or value_tol > 0) else None,
        check_every=1,
    )
    theta = res.ritz()[0]
    return theta[::-1][:k].copy() if largest else theta[:k].copy()


# --------------------------------------------------------------------------- trace
def _rademacher(dim: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 2, (dim,), generator=gen, dtype=torch.int8).to(torch.float64) * 2 - 1


def _hutchinson(op: HessianOperator, samples: int, seed: int, block: int = 32) -> TraceEstimate:
    if samples < 2:
        raise ValueError("Hutchinson needs at least 2 samples for a standard error")
    gen = torch.Generator().manual_seed(int(seed))
    parts = []
    for start in range(0, samples, block):
        b = min(block, samples - start)
        z = torch.stack([_rademacher(op.dim, gen) for _ in range(b)]).to(op.device)
        parts.append((z * op.matmat(z)).sum(dim=1))
    vals = torch.cat(parts).cpu().numpy()
    return TraceEstimate(float(vals.mean()), float(vals.std(ddof=1) / math.sqrt(samples)), vals)


# --------------------------------------------------------------------------- density
def symlog_edges(lo: float, hi: float, bins: int, linthresh: float) -> np.ndarray:
    """``bins + 1`` edges from ``lo`` to ``hi``, linear within ``±linthresh`` of zero
    and logarithmic beyond (uniform in ``asinh(x / linthresh)``).

    This resolves a bulk of width ~``linthresh`` around 0 and outliers decades away in
    the same picture.
    """
    u = np.linspace(np.arcsinh(lo / linthresh), np.arcsinh(hi / linthresh), bins + 1)
    return linthresh * np.sinh(u)


def spectrum_histogram(
    nodes: np.ndarray,
    weights: np.ndarray,
    *,
    bins: int = 80,
    edges: np.ndarray | None = None,
    linthresh: float | None = None,
    sigma: float | None = None,
) -> np.ndarray:
    """Histogram ``(3, B)`` (left edges, right edges, mass) of a quadrature measure.

    Parameters
    ----------
    nodes, weights
        Arrays of the same shape; rows are averaged (each row a probability measure).
    edges
        Bin edges; default :func:`symlog_edges` over the nodes' range padded by 5 %,
        with ``linthresh`` (unless given) the weighted median of ``|node|``: the width of
        the bulk, which then spans the linear part of the grid while outliers fall on
        its logarithmic part.
    sigma
        If given, each node is spread as a Gaussian of this width (PyHessian's smoothing)
        and the mass per bin is integrated exactly; otherwise nodes are binned as points.
        Either way the masses sum to 1 (up to Gaussian tails beyond the grid).
    """
    nodes = np.atleast_2d(np.asarray(nodes, dtype=np.float64))
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    if edges is None:
        lo, hi = float(nodes.min()), float(nodes.max())
        if sigma is not None:  # room for the kernels' tails (5σ leaves < 3e-7 outside)
            lo, hi = lo - 5 * sigma, hi + 5 * sigma
        top = max(abs(lo), abs(hi), 1e-300)
        lt = linthresh if linthresh is not None else _bulk_scale(nodes, weights, top)
        span = np.arcsinh(hi / lt) - np.arcsinh(lo / lt)
        pad = 0.05 * max(span, 1.0)
        edges = lt * np.sinh(np.linspace(np.arcsinh(lo / lt) - pad, np.arcsinh(hi / lt) + pad, bins + 1))
    edges = np.asarray(edges, dtype=np.float64)
    x = nodes.ravel()
    w = weights.ravel() / nodes.shape[0]
    if sigma is None:
        mass, _ = np.histogram(np.clip(x, edges[0], edges[-1]), bins=edges, weights=w)
    else:
        from scipy.special import ndtr

        cdf = ndtr((edges[None, :] - x[:, None]) / sigma)
        mass = (w[:, None] * np.diff(cdf, axis=1)).sum(axis=0)
    return np.stack([edges[:-1], edges[1:], mass])


def _bulk_scale(nodes: np.ndarray, weights: np.ndarray, top: float) -> float:
    a = np.abs(nodes.ravel())
    order = np.argsort(a)
    cum = np.cumsum(weights.ravel()[order])
    med = a[order][min(np.searchsorted(cum, 0.5 * cum[-1]), a.size - 1)]
    return float(max(med, 1e-6 * top, 1e-300))


def _slq(
    op: HessianOperator,
    n_vectors: int,
    steps: int,
    *,
    seed: int = 0,
    bins: int = 80,
    edges: np.ndarray | None = None,
    linthresh: float | None = None,
    sigma: float | None = None,
) -> SpectralDensity:
    gen = torch.Generator().manual_seed(int(seed))
    nodes, weights = [], []
    m = min(steps, op.dim)
    for i in range(n_vectors):
        v0 = _rademacher(op.dim, gen) / math.sqrt(op.dim)
        res = lanczos(op.matvec, op.dim, m, v0=v0, device=op.device, seed=int(seed) + 1 + i)
        theta, s = res.ritz()
        # Pad to m nodes (zero weight) if an early restart made T smaller or equal.
        nodes.append(np.pad(theta, (0, m - theta.size), constant_values=theta[-1]))
        weights.append(np.pad(s[0, :] ** 2, (0, m - theta.size)))
    nodes_a, weights_a = np.array(nodes), np.array(weights)
    hist = spectrum_histogram(nodes_a, weights_a, bins=bins, edges=edges, linthresh=linthresh, sigma=sigma)
    return SpectralDensity(nodes_a, weights_a, hist, op.dim)


# --------------------------------------------------------------------------- public API
def top_eigenvalues(
    model: torch.nn.Module,
    loss_fn: LossFn,
    batch: Batch,
    k: int = 5,
    *,
    steps: int | None = None,
    tol: float = 1e-7,
    seed: int = 0,
) -> np.ndarray:
    """The ``k`` algebraically largest Hessian eigenvalues, descending (float64 numpy).

    Lanczos with full re-orthogonalisation on Hessian-vector products. It stops when
    every one of the top ``k`` Ritz values has a residual ``||H y - θ y||`` at most
    ``tol * |θ|_max`` (so an eigenvalue lies within that distance; the eigenvalue error
    itself is usually ~ residual² / gap, far smaller), or after ``steps`` products
    (default ``max(3k + 20, 200)``). ``tol=0`` always runs all ``steps``.

    Parameters
    ----------
    model, loss_fn, batch
        See :class:`HessianOperator`.
    k
        Number of eigenvalues.
    steps
        Maximum number of Lanczos steps (Hessian-vector products).
    tol
        Relative residual tolerance of the stopping rule.
    seed
        Seed of the random starting vector.

    Returns
    -------
    numpy.ndarray
        Shape ``(k,)``, descending.
    """
    return HessianOperator(model, loss_fn, batch).top_eigenvalues(k, steps=steps, tol=tol, seed=seed)


def bottom_eigenvalues(
    model: torch.nn.Module,
    loss_fn: LossFn,
    batch: Batch,
    k: int = 2,
    *,
    steps: int | None = None,
    tol: float = 1e-7,
    seed: int = 0,
) -> np.ndarray:
    """The ``k`` algebraically smallest Hessian eigenvalues, ascending (see :func:`top_eigenvalues`)."""
    return HessianOperator(model, loss_fn, batch).bottom_eigenvalues(k, steps=steps, tol=tol, seed=seed)


def hessian_trace(
    model: torch.nn.Module, loss_fn: LossFn, batch: Batch, samples: int = 100, *, seed: int = 0
) -> TraceEstimate:
    """Hutchinson estimate of ``tr(H)`` from ``samples`` Rademacher vectors.

    Returns
    -------
    TraceEstimate
        ``estimate``, ``stderr`` and the per-sample values; it unpacks as
        ``estimate, stderr = hessian_trace(...)``. The variance of one sample is
        ``2 (||H||_F^2 - sum_i H_ii^2)``.
    """
    return HessianOperator(model, loss_fn, batch).trace(samples, seed)


def spectral_density(
    model: torch.nn.Module,
    loss_fn: LossFn,
    batch: Batch,
    n_vectors: int = 5,
    steps: int = 80,
    *,
    seed: int = 0,
    bins: int = 80,
    edges: np.ndarray | None = None,
    linthresh: float | None = None,
    sigma: float | None = None,
) -> SpectralDensity:
    """Stochastic Lanczos quadrature estimate of the Hessian's eigenvalue density.

    For each of ``n_vectors`` Rademacher/√P vectors v, ``steps`` Lanczos steps give
    Ritz values θ_j and weights τ_j (squared first components of T's eigenvectors);
    ``Σ_j τ_j θ_j^p`` is an unbiased estimate of ``tr(H^p) / P`` for p < 2·steps.

    Parameters
    ----------
    n_vectors, steps
        Random vectors and Lanczos steps per vector (cost: their product in HVPs).
    bins, edges, linthresh, sigma
        Histogram options, see :func:`spectrum_histogram`.

    Returns
    -------
    SpectralDensity
    """
    return HessianOperator(model, loss_fn, batch).density(
        n_vectors, steps, seed=seed, bins=bins, edges=edges, linthresh=linthresh, sigma=sigma
    )


def dense_hessian(model: torch.nn.Module, loss_fn: LossFn, batch: Batch) -> torch.Tensor:
    """The full ``P x P`` Hessian in the model's dtype (P products; small models only)."""
    return HessianOperator(model, loss_fn, batch).dense()


def count_outliers(eigenvalues: np.ndarray, max_count: int | None = None) -> tuple[int, float]:
    """Number of separated outliers: ``k* = argmax_k λ_k / λ_{k+1}`` over the top ones.

    Parameters
    ----------
    eigenvalues
        Top eigenvalues, descending.
    max_count
        Largest count considered (default: ``len(eigenvalues) - 1``).

    Returns
    -------
    (k*, ratio)
        The count and the gap ratio ``λ_k* / λ_{k*+1}``. Only positive ``λ_k`` can
        end the outliers; ``(0, nan)`` if ``λ_1 <= 0``.
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    kmax = len(lam) - 1 if max_count is None else min(int(max_count), len(lam) - 1)
    best, best_ratio = 0, float("nan")
    for k in range(1, kmax + 1):
        a, b = lam[k - 1], lam[k]
        if not a > 0:
            break
        # A bulk at or below zero right after positive outliers is an (unbounded) gap:
        # floor the denominator so the ratio stays finite for plots.
        r = a / max(b, 1e-12 * lam[0])
        if best == 0 or r > best_ratio:
            best, best_ratio = k, float(r)
    return best, best_ratio
