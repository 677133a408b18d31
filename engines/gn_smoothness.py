"""Gradient-regularised Newton with approximate Hessians (Semenov, Jaggi, Doikov 2025).

Ridge-regularised logistic regression (even vs odd digits) or softmax regression (ten
classes) on sklearn's digits, minimised from a far initial point by several methods side
by side, one iteration of each per engine step:

* gradient descent with step 1/L (L the global smoothness bound);
* Newton's method, x ← x − ∇²f(x)⁻¹∇f(x), with the exact Hessian;
* Algorithm 1 of the paper, the gradient-regularised Newton step
  x ← x − (H(x) + λI)⁻¹∇f(x) with λ = ‖∇f(x)‖/γ, where γ is found by the paper's adaptive
  search: accept when f(x) − f(x⁺) ≥ ‖∇f(x⁺)‖²/(8λ) and then double γ, otherwise halve γ
  and retry (at most 40 times), exactly as in the authors' ``grad_norm_smooth``;
  with H the exact Hessian, the empirical Fisher (1/n)Σ∇ℓᵢ∇ℓᵢᵀ, or the weighted
  Gauss–Newton matrix of the paper's softmax/LogSumExp example (the softmax Hessian
  without its −ppᵀ part; for logistic regression σ(−yz)aaᵀ in place of σ(1−σ)aaᵀ).

γ is the method's running estimate of the gradient-normalised smoothness, the radius of
the ball around x in which H(x) predicts the gradient field to within a fraction of
‖∇f(x)‖. f* is computed once in setup by damped Newton from 0 to a gradient norm of 1e-13
(float64). A method is frozen when f − f* falls below ``tolerance``, so that round-off
near f* cannot drive its γ search; a method whose iterate stops being finite is frozen
with NaN and reported in a warning event.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import scipy.linalg
from scipy.special import expit, log_expit, logsumexp

from dynlab.engines.base import Engine
from dynlab.engines.data import digits_images

try:  # bundled with scikit-learn, which the digits come from
    from threadpoolctl import ThreadpoolController
except ImportError:  # pragma: no cover - then BLAS keeps its own thread count
    ThreadpoolController = None
from dynlab.engines.spec import EngineSpec, Param, SpecError, Stream

METHODS: tuple[str, ...] = (
    "gradient descent",
    "Newton (exact)",
    "reg. Newton (exact)",
    "reg. Newton (Fisher)",
    "reg. Newton (Gauss-Newton)",
)
REGULARISED = METHODS[2:]
#: Suboptimality streamed for a method that reached f* (a log axis cannot draw 0).
FLOOR = 1e-16


def _load_digits(pool: int) -> tuple[np.ndarray, np.ndarray]:
    """sklearn digits scaled to [0, 1], average-pooled over ``pool``×``pool`` cells, with a bias column."""
    images, target = digits_images()
    side = 8 // pool
    x = images.reshape(-1, side, pool, side, pool).mean(axis=(2, 4)).reshape(len(images), -1)
    return np.hstack([x, np.ones((len(x), 1))]), target


class Objective:
    """f(w) = mean loss + (μ/2)‖w‖² with its gradient, Hessian and the two approximations."""

    def __init__(self, kind: str, A: np.ndarray, target: np.ndarray, mu: float) -> None:
        self.kind, self.A, self.mu = kind, A, mu
        self.n, self.p = A.shape
        if kind == "logistic":
            self.y = np.where(target % 2 == 0, 1.0, -1.0)
            self.classes = 1
            # ‖∇²f‖ ≤ λ_max(AᵀA/n)/4 + μ for the logistic loss.
            self.L = np.linalg.eigvalsh(A.T @ A / self.n).max() / 4 + mu
        elif kind == "softmax":
            self.classes = 10
            self.Y = np.eye(10)[target]
            # The softmax Hessian diag(p) − ppᵀ has norm ≤ 1/2.
            self.L = np.linalg.eigvalsh(A.T @ A / self.n).max() / 2 + mu
        else:
            raise SpecError(f"problem must be logistic or softmax; got {kind!r}")
        self.dim = self.p * self.classes

    def _probs(self, w: np.ndarray) -> np.ndarray:
        Z = self.A @ w.reshape(self.p, self.classes)
        return np.exp(Z - logsumexp(Z, axis=1, keepdims=True))

    def value(self, w: np.ndarray) -> float:
        if self.kind == "logistic":
            loss = -log_expit(self.y * (self.A @ w)).mean()
        else:
            Z = self.A @ w.reshape(self.p, self.classes)
            loss = (logsumexp(Z, axis=1) - (Z * self.Y).sum(1)).mean()
        return float(loss + 0.5 * self.mu * w @ w)

    def grad(self, w: np.ndarray) -> np.ndarray:
        if self.kind == "logistic":
            s = expit(-self.y * (self.A @ w))
            return -(self.A.T @ (self.y * s)) / self.n + self.mu * w
        return (self.A.T @ (self._probs(w) - self.Y) / self.n).ravel() + self.mu * w

    def _ridge(self, M: np.ndarray) -> np.ndarray:
        M[np.diag_indices_from(M)] += self.mu
        return M

    def gauss_newton(self, w: np.ndarray) -> np.ndarray:
        """Weighted Gauss–Newton: Σ_c p_c (e_c e_cᵀ ⊗ aaᵀ) per example, i.e. the Hessian without −ppᵀ."""
        if self.kind == "logistic":
            s = expit(-self.y * (self.A @ w))
            return self._ridge((self.A.T * s) @ self.A / self.n)
        P, C, p = self._probs(w), self.classes, self.p
        H = np.zeros((p, C, p, C))
        for c in range(C):
            H[:, c, :, c] = (self.A.T * P[:, c]) @ self.A / self.n
        return self._ridge(H.reshape(p * C, p * C))

    def hessian(self, w: np.ndarray) -> np.ndarray:
        if self.kind == "logistic":
            s = expit(-self.y * (self.A @ w))
            return self._ridge((self.A.T * (s * (1 - s))) @ self.A / self.n)
        M = (self.A[:, :, None] * self._probs(w)[:, None, :]).reshape(self.n, -1)  # rows a ⊗ p
        return self.gauss_newton(w) - M.T @ M / self.n

    def fisher(self, w: np.ndarray) -> np.ndarray:
        """Empirical Fisher (1/n)Σ∇ℓᵢ∇ℓᵢᵀ of the data term, plus the ridge's μI."""
        if self.kind == "logistic":
            G = self.A * (-self.y * expit(-self.y * (self.A @ w)))[:, None]
        else:
            G = (self.A[:, :, None] * (self._probs(w) - self.Y)[:, None, :]).reshape(self.n, -1)
        return self._ridge(G.T @ G / self.n)

    def minimum(self, tol: float = 1e-13, max_iter: int = 200) -> tuple[np.ndarray, float]:
        """(w*, f*) by Newton's method with Armijo backtracking from 0 (converges: f is strongly convex)."""
        w = np.zeros(self.dim)
        for _ in range(max_iter):
            g = self.grad(w)
            if np.linalg.norm(g) <= tol:
                break
            step = -scipy.linalg.cho_solve(scipy.linalg.cho_factor(self.hessian(w)), g)
            t, f0 = 1.0, self.value(w)
            while self.value(w + t * step) > f0 + 0.25 * t * (g @ step) and t > 1e-12:
                t *= 0.5
            w = w + t * step
        return w, self.value(w)


def regularised_newton_step(
    f: Objective, w: np.ndarray, hess: Callable[[np.ndarray], np.ndarray], gamma: float
) -> tuple[np.ndarray, float, int]:
    """One iteration of Algorithm 1: returns (new point, new γ, number of linear solves)."""
    f0, g = f.value(w), f.grad(w)
    g_norm = float(np.linalg.norm(g))
    H = hess(w)
    eye = np.eye(len(w))
    w_new, solves = w, 0
    for _ in range(40):  # the authors' cap on the search
        lam = g_norm / (gamma + 1e-8)
        delta = scipy.linalg.cho_solve(scipy.linalg.cho_factor(H + lam * eye), -g)
        solves += 1
        w_new = w + delta
        g_new = f.grad(w_new)
        if f0 - f.value(w_new) >= g_new @ g_new / (8 * lam):
            return w_new, 2.0 * gamma, solves
        gamma *= 0.5
    return w_new, gamma, solves


class GradNormSmoothness(Engine):
    #: numpy's thread-pool controller: a resource of this process, not state.
    state_exclude = ("_blas",)
    """GD, Newton and gradient-regularised Newton (exact, Fisher, Gauss–Newton) from a far start."""

    spec = EngineSpec(
        name="gn-smoothness",
        title="Gradient-regularised Newton with approximate Hessians",
        description="Suboptimality of GD, Newton and Algorithm 1 with exact, Fisher and Gauss–Newton Hessians on digits.",
        paper=(
            "Semenov, Jaggi, Doikov, Gradient-Normalized Smoothness for Optimization with Approximate "
            "Hessians, ICLR 2026 (arXiv 2506.13710)"
        ),
        params=(
            Param(
                "problem",
                "str",
                "logistic",
                choices=("logistic", "softmax"),
                help="logistic regression (even vs odd digits) or ten-class softmax regression",
            ),
            Param(
                "pool",
                "int",
                1,
                low=1,
                high=8,
                help="average-pool the 8×8 digits over pool×pool cells (1, 2, 4 or 8) to shrink the problem",
            ),
            Param(
                "l2", "float", 1e-3, low=1e-8, high=10.0, log=True, help="ridge μ: f = mean loss + μ/2‖w‖²"
            ),
            Param(
                "init_scale",
                "float",
                10.0,
                low=0.0,
                high=1e4,
                help="the start is init_scale × a standard normal vector: the 'far initial point'",
            ),
            Param("gamma_init", "float", 1.0, low=1e-8, high=1e8, log=True, help="γ₀ of the adaptive search"),
            Param(
                "tolerance",
                "float",
                1e-12,
                low=0.0,
                high=1.0,
                log=True,
                help="a method stops once f − f* ≤ tolerance",
            ),
        ),
        streams=(
            Stream(
                "suboptimality",
                "vector",
                (len(METHODS),),
                labels=METHODS,
                log_scale=True,
                description=(
                    "f(x_k) − f* for each method after k iterations (f* from damped Newton to ‖∇f‖ ≤ 1e-13); "
                    f"{FLOOR:g} once a method is within tolerance, NaN once it is no longer finite."
                ),
                theory=(
                    "Paper: Algorithm 1 converges globally, linearly with approximate Hessians (Fisher, "
                    "Gauss–Newton) and superlinearly with the exact one; pure Newton from a far point need not "
                    "converge; GD crawls (the loss is nearly linear far away)."
                ),
            ),
            Stream(
                "gradient_norm",
                "vector",
                (len(METHODS),),
                labels=METHODS,
                log_scale=True,
                description="‖∇f(x_k)‖ for each method.",
            ),
            Stream(
                "gn_smoothness",
                "vector",
                (len(REGULARISED),),
                labels=REGULARISED,
                log_scale=True,
                description=(
                    "γ_k, each regularised method's estimate of the gradient-normalised smoothness (its step uses "
                    "λ = ‖∇f‖/γ)."
                ),
                theory=(
                    "Exact Hessian: γ grows without bound near x* (fast local rate). Approximate Hessians: γ shrinks "
                    "in proportion to ‖∇f‖, so λ stays bounded away from 0 and the rate is linear."
                ),
            ),
            Stream(
                "linear_solves",
                "vector",
                (len(REGULARISED),),
                labels=REGULARISED,
                description="Cumulative number of linear solves (one per trial of the γ search).",
            ),
        ),
    )

    def setup(self) -> None:
        p = self.params
        if p["pool"] not in (1, 2, 4, 8):
            raise SpecError(f"pool must divide 8 (1, 2, 4 or 8); got {p['pool']}")
        A, target = _load_digits(p["pool"])
        self.f = Objective(p["problem"], A, target, p["l2"])
        self._blas = ThreadpoolController() if ThreadpoolController is not None else None
        if self._blas is None:
            self.w_star, self.f_star = self.f.minimum()
        else:
            with self._blas.limit(limits=1, user_api="blas"):
                self.w_star, self.f_star = self.f.minimum()
        rng = np.random.default_rng(self.seed)
        w0 = p["init_scale"] * rng.standard_normal(self.f.dim)
        self.w = [w0.copy() for _ in METHODS]
        self.gamma = [p["gamma_init"]] * len(REGULARISED)
        self.solves = [0] * len(REGULARISED)
        self.state = ["running"] * len(METHODS)  # running, converged, diverged
        self.hessians = (self.f.hessian, self.f.fisher, self.f.gauss_newton)

    def _measure(self) -> tuple[np.ndarray, np.ndarray]:
        sub, gnorm = np.empty(len(METHODS)), np.empty(len(METHODS))
        for i, w in enumerate(self.w):
            if self.state[i] == "diverged":
                sub[i] = gnorm[i] = np.nan
                continue
            gap = self.f.value(w) - self.f_star
            if self.state[i] == "running" and gap <= self.params["tolerance"]:
                self.state[i] = "converged"
                self.emit("phase", name=f"{METHODS[i]} reached f*", gap=float(gap))
            sub[i] = FLOOR if self.state[i] == "converged" else gap
            gnorm[i] = np.linalg.norm(self.f.grad(w))
        return sub, gnorm

    def _update(self, i: int) -> None:
        w, f = self.w[i], self.f
        if i == 0:
            self.w[i] = w - f.grad(w) / f.L
        elif i == 1:
            try:
                self.w[i] = w - np.linalg.solve(f.hessian(w), f.grad(w))
            except np.linalg.LinAlgError:
                self.w[i] = np.full_like(w, np.nan)
        else:
            j = i - 2
            try:
                self.w[i], self.gamma[j], n = regularised_newton_step(f, w, self.hessians[j], self.gamma[j])
            except (np.linalg.LinAlgError, ValueError):
                self.w[i] = np.full_like(w, np.nan)
                n = 0
            self.solves[j] += n
        if not np.all(np.isfinite(self.w[i])) or not np.isfinite(f.value(self.w[i])):
            self.state[i] = "diverged"
            self.emit("warning", name=f"{METHODS[i]} diverged", message=f"{METHODS[i]}: iterate not finite")

    def train_step(self, step: int) -> Mapping[str, Any]:
        # The matrices are at most a few hundred wide: BLAS threads only contend (10× slower
        # on a busy 2-core machine), so the step runs single-threaded.
        if self._blas is None:
            return self._step()
        with self._blas.limit(limits=1, user_api="blas"):
            return self._step()

    def _step(self) -> dict[str, Any]:
        sub, gnorm = self._measure()
        gamma = [g if self.state[j + 2] != "diverged" else np.nan for j, g in enumerate(self.gamma)]
        out: dict[str, Any] = {
            "suboptimality": sub,
            "gradient_norm": gnorm,
            "gn_smoothness": np.array(gamma, dtype=float),
            "linear_solves": np.array(self.solves, dtype=float),
        }
        for i in range(len(METHODS)):
            if self.state[i] == "running":
                self._update(i)
        return out
