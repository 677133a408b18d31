"""Linear self-attention learns linear regression in context (Zhang, Frei & Bartlett, JMLR 2024).

A prompt holds N examples ``(x_i, y_i = wᵀx_i)`` of a fresh random task ``w ~ N(0, I_d)``
and a query ``x_q``; it is embedded as ``E = [[x_1 … x_N x_q]; [y_1 … y_N 0]]``. One
linear self-attention layer

    f(E) = E + W^{PV} E M (Eᵀ W^{KQ} E) / N,    M = diag(I_N, 0)

(the mask ``M`` keeps the query out of the keys, as in the paper) predicts
``ŷ = f(E)[d, N]``. Trained by Adam on fresh tasks it converges to one step of
preconditioned gradient descent from zero, ``ŷ = x_qᵀ Xᵀy / (N + d + 1)`` for ``x ~ N(0, I)``,
whose test MSE is ``d(d+1)/(N+d+1)``. That is *not* least squares: OLS is exact here
(noiseless, N ≥ d) and the LSA only approaches it as N → ∞. Scaling the prompt's
covariates at test time (``covariate_scale``) shows how brittle the learned rule is.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dynlab.engines.base import Engine
from dynlab.engines.spec import EngineSpec, Param, Stream


def one_step_mse(d: int, n: int) -> float:
    """Expected test MSE of the trained LSA / one-step predictor, ``d(d+1)/(N+d+1)``."""
    return d * (d + 1) / (n + d + 1)


def sample_tasks(
    batch: int, n: int, d: int, gen: torch.Generator, device: str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``batch`` regression prompts: context ``x`` (B, N, d), ``y`` (B, N), query ``xq`` (B, d), ``yq`` (B,)."""
    w = torch.randn(batch, d, generator=gen)
    x = torch.randn(batch, n + 1, d, generator=gen)
    y = torch.einsum("bnd,bd->bn", x, w)
    return (x[:, :n].to(device), y[:, :n].to(device), x[:, n].to(device), y[:, n].to(device))


def lsa_predict(
    w_pv: torch.Tensor, w_kq: torch.Tensor, x: torch.Tensor, y: torch.Tensor, xq: torch.Tensor
) -> torch.Tensor:
    """LSA prediction ``f(E)[d, N]`` without materialising E·Eᵀ for the query column.

    ``ŷ = W^{PV}[d, :] · (Σ_i z_i z_iᵀ / N) · W^{KQ}[:, :d] · x_q`` with ``z_i = (x_i, y_i)``;
    the query's label slot is 0, so only ``W^{KQ}``'s first d columns meet it.
    """
    z = torch.cat([x, y.unsqueeze(-1)], -1)  # (B, N, d+1)
    g = torch.einsum("bna,bnc->bac", z, z) / x.shape[1]
    v = xq @ w_kq[:, :-1].T  # (B, d+1) = W^{KQ}[:, :d] x_q
    return torch.einsum("a,bac,bc->b", w_pv[-1], g, v)


def one_step_predict(x: torch.Tensor, y: torch.Tensor, xq: torch.Tensor) -> torch.Tensor:
    """The paper's global minimum for Λ = I: ``x_qᵀ Xᵀy / (N + d + 1)``."""
    n, d = x.shape[1], x.shape[2]
    return torch.einsum("bd,bnd,bn->b", xq, x, y) / (n + d + 1)


def ols_predict(x: torch.Tensor, y: torch.Tensor, xq: torch.Tensor) -> torch.Tensor:
    """Least squares on the context (exact for noiseless tasks with N ≥ d)."""
    xtx = x.transpose(1, 2) @ x
    w = torch.linalg.solve(xtx.double(), (x.transpose(1, 2) @ y.unsqueeze(-1)).double())
    return (xq.double().unsqueeze(1) @ w).reshape(-1)


class InContextRegression(Engine):
    """One linear self-attention layer trained on random linear-regression prompts."""

    spec = EngineSpec(
        name="icl-linear-regression",
        title="In-context linear regression with linear self-attention",
        description="A trained LSA layer is one step of preconditioned GD, not least squares.",
        paper="Zhang, Frei & Bartlett, Trained Transformers Learn Linear Models In-Context, JMLR 2024",
        params=(
            Param("d", "int", 5, 2, 32, help="Input dimension of the regression tasks."),
            Param("N", "int", 20, 2, 1000, help="Number of in-context examples per prompt."),
            Param("lr", "float", 1e-3, 1e-5, 0.1, live=True, log=True, help="Adam learning rate."),
            Param(
                "batch_size",
                "int",
                256,
                1,
                8192,
                live=True,
                help="Fresh tasks per step (read every step, so it can change live).",
            ),
            Param(
                "init_std",
                "float",
                0.01,
                1e-6,
                1.0,
                log=True,
                help="Std of the N(0, init_std²) init of both matrices.",
            ),
            Param("test_tasks", "int", 20000, 100, 200000, help="Fixed held-out prompts for the test MSE."),
            Param(
                "covariate_scale",
                "float",
                2.0,
                0.1,
                10.0,
                live=True,
                log=True,
                help="Test-time covariate shift: every x of the prompt (context and query) is multiplied by this.",
            ),
        ),
        streams=(),
        probes={"evaluate": 20},
    )

    def declared_streams(self) -> tuple[Stream, ...]:
        d, n = self.params["d"], self.params["N"]
        xs = tuple(f"x{i + 1}" for i in range(d))
        target = n / (n + d + 1)
        return (
            Stream(
                "train_loss",
                "scalar",
                units="MSE",
                description="Squared error on this step's batch of fresh prompts.",
                theory=f"Falls to about d(d+1)/(N+d+1) = {one_step_mse(d, n):.3f}.",
            ),
            Stream(
                "test_mse",
                "vector",
                (3,),
                units="MSE",
                labels=("lsa", "one_step", "ols"),
                description=(
                    "Test MSE on fixed held-out prompts: the trained LSA, the closed form "
                    "d(d+1)/(N+d+1) of one preconditioned GD step, and least squares on the context."
                ),
                theory=(
                    "LSA → d(d+1)/(N+d+1) (the paper's global minimum), not OLS: with noiseless "
                    "tasks OLS is exact, and the two meet only as N → ∞."
                ),
            ),
            Stream(
                "prediction_gap",
                "scalar",
                description="Relative L2 distance between the LSA's and the one-step predictor's test predictions.",
                theory="→ 0: the trained LSA computes x_qᵀXᵀy/(N+d+1).",
            ),
            Stream(
                "kq_pv_block",
                "heatmap",
                (d, d),
                rows=xs,
                cols=xs,
                description="W^{PV}[d, d] · W^{KQ}[:d, :d]: the matrix the LSA applies to (1/N)Σ y_i x_i.",
                theory=f"→ N/(N+d+1)·I = {target:.3f}·I, i.e. Γ⁻¹ with Γ = (1 + (1+d)/N) I.",
            ),
            Stream(
                "block_diagonal",
                "vector",
                (3,),
                labels=("mean_diag", "theory", "max_offdiag"),
                description="Mean diagonal and largest |off-diagonal| entry of kq_pv_block, beside the theory value.",
                theory=f"mean_diag → N/(N+d+1) = {target:.3f}; max_offdiag → 0.",
            ),
            Stream(
                "shift_mse",
                "vector",
                (3,),
                units="MSE",
                labels=("lsa", "one_step", "zero"),
                description=(
                    "Test MSE when every covariate of the prompt is scaled by covariate_scale: the LSA, "
                    "the one-step rule tuned to the training distribution, and the zero predictor."
                ),
                theory=(
                    "The prediction scales as c³ while the target scales as c, so off c = 1 the learned "
                    "rule is badly miscalibrated (worse than predicting 0 for c ≳ 1.6); OLS would stay exact."
                ),
            ),
        )

    def setup(self) -> None:
        d, n = self.params["d"], self.params["N"]
        self._gen = torch.Generator().manual_seed(self.seed)
        test_gen = torch.Generator().manual_seed(self.seed + 1_000_003)
        std = self.params["init_std"]
        self.w_pv = (std * torch.randn(d + 1, d + 1, generator=self._gen)).to(self.device).requires_grad_()
        self.w_kq = (std * torch.randn(d + 1, d + 1, generator=self._gen)).to(self.device).requires_grad_()
        self.optimizers = [torch.optim.Adam([self.w_pv, self.w_kq], lr=self.params["lr"])]
        self.test = sample_tasks(self.params["test_tasks"], n, d, test_gen, self.device)
        x, y, xq, yq = self.test
        self.test_one_step = one_step_predict(x, y, xq)
        self.test_ols_mse = float(((ols_predict(x, y, xq) - yq.double()) ** 2).mean())

    def block(self) -> torch.Tensor:
        """``W^{PV}[d, d] · W^{KQ}[:d, :d]`` (detached)."""
        return (self.w_pv[-1, -1] * self.w_kq[:-1, :-1]).detach()

    @torch.no_grad()
    def evaluate(self) -> dict[str, Any]:
        """Test MSEs, prediction gap and covariate-shift MSEs on the fixed test prompts."""
        d, n = self.params["d"], self.params["N"]
        x, y, xq, yq = self.test
        pred = lsa_predict(self.w_pv, self.w_kq, x, y, xq)
        mse = float(((pred - yq) ** 2).mean())
        gap = float(
            torch.linalg.vector_norm(pred - self.test_one_step) / torch.linalg.vector_norm(self.test_one_step)
        )
        c = self.params["covariate_scale"]
        xs, ys, xqs, yqs = c * x, c * y, c * xq, c * yq  # y = wᵀx scales with x
        shift = [
            float(((lsa_predict(self.w_pv, self.w_kq, xs, ys, xqs) - yqs) ** 2).mean()),
            float(((one_step_predict(xs, ys, xqs) - yqs) ** 2).mean()),
            float((yqs**2).mean()),
        ]
        return {
            "test_mse": np.array([mse, one_step_mse(d, n), self.test_ols_mse]),
            "prediction_gap": gap,
            "shift_mse": np.array(shift),
        }

    def train_step(self, step: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        blk = self.block()
        off = blk - torch.diag(torch.diagonal(blk))
        n, d = self.params["N"], self.params["d"]
        out["kq_pv_block"] = blk
        out["block_diagonal"] = np.array(
            [float(torch.diagonal(blk).mean()), n / (n + d + 1), float(off.abs().max())]
        )
        if self.due("evaluate", step):
            with self.timed("evaluate"):
                out.update(self.evaluate())
        x, y, xq, yq = sample_tasks(self.params["batch_size"], n, d, self._gen, self.device)
        loss = ((lsa_predict(self.w_pv, self.w_kq, x, y, xq) - yq) ** 2).mean()
        (opt,) = self.optimizers
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        out["train_loss"] = loss.detach()
        return out
