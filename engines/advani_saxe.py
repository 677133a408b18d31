"""Generalisation dynamics of a linear student (Advani & Saxe 2017/2020).

A linear student ``w`` learns a noisy linear teacher ``y = w*·x + ε`` by full-batch
gradient descent on ``L = ||Xw - y||² / 2P`` from ``w = 0``. In the eigenbasis of
``S = XᵀX/P`` every mode relaxes independently, so the whole trajectory has a closed
form, and averaging it over the Marchenko–Pastur law of ``S`` gives the theory curve.
The test error is non-monotone in time (early stopping beats training to the end) and
its long-time value diverges at ``P = N`` because of the small eigenvalues of ``S``.

Everything here runs in float64: the simulation must equal the closed form to 1e-10.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import torch

from dynlab.engines.base import Engine
from dynlab.engines.spec import EngineSpec, Param, Stream

_ALPHA_GRID = np.unique(np.concatenate([np.linspace(0.3, 3.0, 28), np.linspace(0.8, 1.2, 17)]))
_MP_NODES = 4000


@lru_cache(maxsize=4)
def _legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    # leggauss solves an n×n eigenproblem: compute it once, not every step
    return np.polynomial.legendre.leggauss(n)


def _mp_nodes(gamma: np.ndarray, n: int = _MP_NODES) -> tuple[np.ndarray, np.ndarray]:
    """Quadrature for the non-zero part of the Marchenko–Pastur law with ratio ``gamma``.

    Returns eigenvalues and weights, each of shape ``(len(gamma), n)``; the weights sum to
    ``min(1, 1/gamma)`` (the zero-eigenvalue mass ``1 - 1/gamma`` is left out). The
    substitution ``λ = m + h cos θ`` removes the square-root edges, so Gauss–Legendre in θ
    converges fast even at ``gamma = 1`` where the density has a ``λ^{-1/2}`` pole at 0.
    """
    gamma = np.atleast_1d(np.asarray(gamma, dtype=np.float64))[:, None]
    lo, hi = (1 - np.sqrt(gamma)) ** 2, (1 + np.sqrt(gamma)) ** 2
    x, wq = _legendre(n)
    theta = (x + 1) * np.pi / 2
    lam = (hi + lo) / 2 + (hi - lo) / 2 * np.cos(theta)[None, :]
    weight = wq[None, :] * (np.pi / 2) * ((hi - lo) / 2) ** 2 * np.sin(theta)[None, :] ** 2
    weight = weight / (2 * np.pi * gamma * lam)
    return lam, weight


def mp_test_error(
    alpha: float | np.ndarray, t: float | np.ndarray, lr: float, noise_var: float
) -> np.ndarray:
    """Marchenko–Pastur average of the test error after ``t`` GD steps (teacher variance 1).

    ``E(t) = ∫ρ(λ)[(1-ηλ)^{2t} + σ²/(αλ)(1-(1-ηλ)^t)²] dλ + max(0, 1-α) + σ²``.

    Parameters
    ----------
    alpha
        Sample ratio ``P/N`` (scalar or 1-D array).
    t
        GD steps (scalar, or an array broadcastable against ``alpha``'s grid, e.g. shape
        ``(T, 1)`` for a time course at every alpha).
    lr, noise_var
        Step size η and label-noise variance σ².

    Returns
    -------
    numpy.ndarray
        Shape ``broadcast(t, alpha)``.
    """
    alpha = np.atleast_1d(np.asarray(alpha, dtype=np.float64))
    lam, weight = _mp_nodes(1.0 / alpha)
    t = np.asarray(t, dtype=np.float64)[..., None, None]
    decay = np.exp(t * np.log1p(-lr * lam))  # (1 - ηλ)^t, stable for tiny ηλ
    signal = (decay**2 * weight).sum(-1)
    noise = noise_var / alpha * (((1 - decay) ** 2 / lam) * weight).sum(-1)
    return signal + noise + np.clip(1 - alpha, 0, None) + noise_var


class GeneralizationDynamics(Engine):
    """GD on a linear student of a noisy linear teacher, beside its closed form and theory.

    One step is one full-batch GD update. ``sample_ratio`` is live: changing it draws a
    new data set with ``P = round(α N)`` (same teacher) and restarts the student from
    ``w = 0`` (a ``phase`` event marks it); all curves then count time ``τ`` from the
    restart, because the closed form and theory describe GD from zero on one data set.
    """

    spec = EngineSpec(
        name="generalization-dynamics",
        title="Generalisation dynamics of a linear student",
        description="GD on a linear student of a noisy teacher: overtraining and the error peak at P = N.",
        paper="Advani & Saxe, High-dimensional dynamics of generalization error in neural networks, 2017/2020",
        params=(
            Param("n_features", "int", 300, 20, 2000, help="Input dimension N."),
            Param(
                "sample_ratio",
                "float",
                1.0,
                0.3,
                4.0,
                live=True,
                help="α = P/N. Changing it draws a new data set of that size and restarts the student from 0.",
            ),
            Param(
                "noise_var", "float", 0.2, 0.0, 2.0, help="Label-noise variance σ² (teacher variance is 1)."
            ),
            Param(
                "lr",
                "float",
                0.1,
                1e-3,
                0.2,
                log=True,
                help="GD step size η (≤ 0.2 keeps ηλ_max < 2 for α ≥ 0.3).",
            ),
            Param(
                "horizon",
                "int",
                100_000,
                100,
                10_000_000,
                unit="steps",
                log=True,
                help="Training time of the 'long-time' theory curve in error_vs_ratio.",
            ),
        ),
        streams=(),
        probes={"ratio_curve": 10},
    )

    def declared_streams(self) -> tuple[Stream, ...]:
        g = len(_ALPHA_GRID)
        labels = tuple(f"α={a:.3g}" for a in _ALPHA_GRID)
        return (
            Stream(
                "test_error",
                "vector",
                (3,),
                units="MSE",
                labels=("simulation", "closed_form", "theory"),
                description=(
                    "Population test error ||w - w*||² + σ² of the student after τ GD steps since the "
                    "last restart: the simulated GD run, the eigenbasis closed form for this very data "
                    "set, and the Marchenko–Pastur average."
                ),
                theory=(
                    "Each eigenmode of XᵀX/P relaxes as 1 - (1 - ηλ)^τ; simulation and closed form "
                    "coincide to rounding. The error dips (early-stopping optimum) then rises as the "
                    "small-λ modes fit the noise — without bound at P = N."
                ),
            ),
            Stream(
                "train_loss",
                "scalar",
                units="MSE/2",
                description="Training loss ||Xw - y||²/2P of the current student.",
                theory="Falls monotonically; reaches 0 when P ≤ N (interpolation) and σ²(1 - N/P)/2 otherwise.",
            ),
            Stream(
                "error_vs_ratio",
                "points",
                (2 * g + 1, 2),
                labels=labels + labels + ("current",),
                groups=("theory_now",) * g + ("theory_horizon",) * g + ("simulation",),
                description=(
                    "Test error against α = P/N: the MP theory at the current time τ, at the long "
                    "'horizon' time, and the current run (one point)."
                ),
                theory=(
                    "The long-time error peaks sharply at α = 1 (for α > 1 it tends to "
                    "σ²/(α - 1) + σ²); the peak grows with training time."
                ),
            ),
        )

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        n = self.params["n_features"]
        gen = torch.Generator().manual_seed(self.seed)
        self._gen = gen
        self.w_star = (torch.randn(n, generator=gen, dtype=torch.float64) / np.sqrt(n)).numpy()
        self._draw_data()

    def _draw_data(self) -> None:
        """New data set at the current sample ratio; student back to 0."""
        n = self.params["n_features"]
        p = max(1, round(self.params["sample_ratio"] * n))
        x = torch.randn(p, n, generator=self._gen, dtype=torch.float64).numpy()
        eps = (
            np.sqrt(self.params["noise_var"])
            * torch.randn(p, generator=self._gen, dtype=torch.float64).numpy()
        )
        self.x, self.y = x, x @ self.w_star + eps
        self.n_samples = p
        self.S = x.T @ x / p
        self.b = x.T @ self.y / p
        self.eigvals, self.eigvecs = np.linalg.eigh(self.S)
        self.w = np.zeros(n)
        self.t0 = self.step_count

    def on_set(self, name: str, new: Any, old: Any) -> None:
        super().on_set(name, new, old)
        if name == "sample_ratio":
            self._draw_data()
            self.emit(
                "phase",
                name="new data set",
                message=f"P = {self.n_samples} (α = {self.n_samples / self.params['n_features']:.3f}); student restarted from w = 0",
            )

    # ------------------------------------------------------------------ math
    def closed_form_weights(self, tau: float) -> np.ndarray:
        """Student after ``tau`` GD steps from 0, from the eigenbasis formula."""
        return closed_form_weights(self.eigvals, self.eigvecs, self.b, self.params["lr"], tau)

    def train_step(self, step: int) -> dict[str, Any]:
        tau = step - self.t0
        lr, s2 = self.params["lr"], self.params["noise_var"]
        alpha = self.n_samples / self.params["n_features"]
        sim = float(np.sum((self.w - self.w_star) ** 2)) + s2
        cf = float(np.sum((self.closed_form_weights(tau) - self.w_star) ** 2)) + s2
        theory = float(mp_test_error(alpha, tau, lr, s2)[0])
        resid = self.x @ self.w - self.y
        out: dict[str, Any] = {
            "test_error": np.array([sim, cf, theory]),
            "train_loss": float(resid @ resid) / (2 * self.n_samples),
        }
        if self.due("ratio_curve", step):
            with self.timed("ratio_curve"):
                now = mp_test_error(_ALPHA_GRID, tau, lr, s2)
                far = mp_test_error(_ALPHA_GRID, max(tau, self.params["horizon"]), lr, s2)
                pts = np.concatenate(
                    [np.stack([_ALPHA_GRID, now], 1), np.stack([_ALPHA_GRID, far], 1), [[alpha, sim]]]
                )
            out["error_vs_ratio"] = pts
        # the update this frame's loss belongs to
        self.w = self.w - lr * (self.S @ self.w - self.b)
        return out


def closed_form_weights(
    eigvals: np.ndarray, eigvecs: np.ndarray, b: np.ndarray, lr: float, tau: float
) -> np.ndarray:
    """``w(τ) = V diag((1 - (1-ηλ)^τ)/λ) Vᵀ b``: GD from 0 on ``½wᵀSw - bᵀw``.

    The ratio is evaluated as ``-expm1(τ log1p(-ηλ))/λ`` (→ ``ητ`` as ``λ → 0``) so that
    tiny eigenvalues near ``P = N`` keep full float64 accuracy.
    """
    lam = eigvals
    tiny = np.abs(lam) < 1e-300
    safe = np.where(tiny, 1.0, lam)
    gain = np.where(tiny, lr * tau, -np.expm1(tau * np.log1p(-lr * safe)) / safe)
    return eigvecs @ (gain * (eigvecs.T @ b))
