"""Attention as an SVM: one softmax-attention layer trained by normalised GD.

Tarzanagh, Li, Thrampoulidis & Oymak, *Transformers as Support Vector Machines* (2023).
The model is f(X_i) = v^T X_i^T softmax(X_i W z_i) with a fixed head v, trained on the
logistic loss of labels Y_i = +-1. The paper proves that the direction W(t)/||W(t)||
converges to the max-margin SVM that separates each sequence's selected token from the
others (Frobenius norm), and, when W = K Q^T is trained through its factors, to the
nuclear-norm SVM. The engine follows the official recipe: n=6, T=8, d=10, unit-norm
tokens and queries, normalised GD with lr 0.1, float64.

Finite precision: once the softmax saturates, the loss gradient is a sum of terms of size
exp(-gap) and float64 loses it (first to cancellation in 1 - p, long before exp underflows).
For W the engine therefore computes the gradient's *direction* in log space, exactly
(:func:`w_gradient_direction`), which is all normalised GD needs: W keeps converging in
direction for as long as it runs, with no regulariser. The (K, Q) runs keep the official
recipe instead, autograd plus the machine-epsilon penalty eps*(||K||^2 + ||Q||^2).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from dynlab.engines.base import Engine
from dynlab.engines.probes.attention_svm import (
    AttSVMError,
    constraint_slack,
    correlation,
    optimal_tokens,
    solve_att_svm,
    svm_rank,
)
from dynlab.engines.spec import EngineSpec, Param, Stream

EPS64 = float(np.finfo(np.float64).eps)  # the official KQ regulariser: machine epsilon
_NORMS = ("frobenius", "nuclear")


def w_gradient_direction(
    X: torch.Tensor, Z: torch.Tensor, Y: torch.Tensor, v: torch.Tensor, W: torch.Tensor
) -> tuple[torch.Tensor, float]:
    """Unit direction of the loss gradient in W, and log10 of its norm, computed in log space.

    With p_i = softmax(X_i W z_i), u_it = v^T x_it, f_i = sum_t p_it u_it and
    L = mean_i log(1 + exp(-Y_i f_i)),

        grad_W L = (1/n) sum_i c_i sum_{t<t'} p_it p_it' (u_it - u_it') (x_it - x_it') z_i^T,

    with c_i = -Y_i sigmoid(-Y_i f_i). The pair form has no 1 - p_alpha (whose rounding is
    what swamps the float64 gradient once the attention saturates) and no cancellation:
    each term's size is kept as a logarithm, log p_it + log p_it' + log|c_i (u_it - u_it')|,
    and they are summed relative to the largest. So the direction is exact to rounding however
    small the gradient is, and normalised GD (W <- W - lr * direction) follows the paper's
    dynamics without a regulariser.

    Returns
    -------
    direction, log10_norm
        ``direction`` has unit Frobenius norm (zeros and ``-inf`` if the gradient is exactly 0).
    """
    n, T, _ = X.shape
    scores = torch.einsum("itd,de,ie->it", X, W, Z)
    logp = torch.log_softmax(scores, dim=1)
    u = X @ v  # (n, T)
    f = (logp.exp() * u).sum(dim=1)
    c = -Y * torch.sigmoid(-Y * f) / n  # |f| <= 1 for unit tokens and head: never tiny
    a, b = torch.triu_indices(T, T, 1, device=X.device)
    du = u[:, a] - u[:, b]  # (n, pairs)
    log_size = logp[:, a] + logp[:, b] + torch.log(du.abs()) + torch.log(c.abs())[:, None]  # log 0 = -inf
    top = log_size.max()
    if not torch.isfinite(top):
        return torch.zeros_like(W), -math.inf
    coef = torch.sign(du) * torch.sign(c)[:, None] * torch.exp(log_size - top)
    G = torch.einsum("ip,ipd,ie->de", coef, X[:, a] - X[:, b], Z)
    norm = G.norm()
    return G / norm, float((top + torch.log(norm)) / math.log(10.0))


@lru_cache(maxsize=16)  # built once per shape: Engine.step looks the streams up every step
def _streams(n: int, T: int, parameterization: str) -> tuple[Stream, ...]:
    """The streams for ``n`` sequences of ``T`` tokens (labels and shapes depend on them)."""
    kq = parameterization == "KQ"
    w_name = "K Q^T" if kq else "W"
    own = "nuclear" if kq else "Frobenius"
    own_norm = "||W||_*" if kq else "||W||_F"
    other_labels = tuple(f"seq {i}: other {k}" for i in range(n) for k in range(1, T))
    grad = (
        ()
        if kq
        else (
            Stream(
                "grad_log10",
                "scalar",
                description="log10 of the loss gradient's Frobenius norm ||grad_W L||, computed in "
                "log space (float64 alone loses the gradient once the attention saturates).",
                theory="Falls without bound, roughly like -margin*||W||/ln 10: the steps are "
                "normalised, so only the gradient's direction matters, and it stays exact.",
            ),
        )
    )
    return grad + (
        Stream(
            "train_loss",
            "scalar",
            units="nats",
            description="Logistic loss log(1 + exp(-Y_i f(X_i))), mean over the n sequences.",
            theory="Falls to the loss of attending only to the selected tokens (not 0: |f| <= 1 "
            "with unit tokens and head), reached only as ||W|| -> infinity, which is why only "
            "the direction of W has a limit.",
        ),
        Stream(
            "svm_correlation",
            "vector",
            (2,),
            labels=_NORMS,
            description=f"Correlation <W(t), W^mm>/(||W(t)||_F ||W^mm||_F) of {w_name} with the "
            "Frobenius- and the nuclear-norm attention SVM for the tokens the softmax currently "
            "selects (re-solved when the selection changes).",
            theory=f"Converges to 1 for the {own} solution: gradient descent on "
            f"{'the factors K, Q' if kq else 'W'} converges in direction to the {own}-norm "
            "max-margin separator of the selected tokens.",
        ),
        Stream(
            "one_minus_correlation",
            "vector",
            (2,),
            labels=_NORMS,
            log_scale=True,
            description="1 - svm_correlation, for a log axis.",
            theory=f"Decays towards 0 for the {own} solution and stalls at a gap for the other.",
        ),
        Stream(
            "weight_norm",
            "scalar",
            description=f"||{w_name}||_F.",
            theory=(
                "Grows while the loss gradient steers the factors; once it sinks below the eps "
                "penalty's gradient the norm settles."
                if kq
                else "Grows without bound by about lr per step: normalised steps along a nearly "
                "fixed direction."
            ),
        ),
        Stream(
            "normalized_margin",
            "scalar",
            description=f"Smallest margin min_i,t (s_i,alpha_i - s_it) of the current scores, divided "
            f"by {own_norm}: how well the current direction separates the selected tokens.",
            theory="Rises to the SVM's margin (svm_margin): the max-margin direction is the limit.",
        ),
        Stream(
            "svm_margin",
            "scalar",
            description=f"The max-margin value 1/{own_norm.replace('W', 'W^mm')} of the {own}-norm "
            "SVM for the current selection.",
            theory="The ceiling of normalized_margin; reached in the limit.",
        ),
        Stream(
            "selected_attention",
            "scalar",
            units="probability",
            description="Softmax probability on the selected (argmax) token, mean over sequences.",
            theory="Tends to 1: attention saturates onto one token per sequence (token selection).",
        ),
        Stream(
            "optimal_fraction",
            "scalar",
            description="Fraction of sequences whose selected token is the globally optimal one, "
            "argmax_t Y_i v^T x_it.",
            theory="Need not reach 1: GD may converge to a locally optimal selection, and then "
            "aligns with the SVM of that selection (local convergence).",
        ),
        Stream(
            "svm_rank",
            "vector",
            (2,),
            labels=_NORMS,
            description="Numerical rank (singular values > 1e-6 of the largest) of each SVM solution.",
            theory="At most n, since W^mm is a sum of n rank-one terms; the nuclear solution is "
            "often of lower rank.",
        ),
        Stream(
            "margin_directions",
            "points",
            (n * T, 2),
            labels=tuple(f"seq {i}: selected" for i in range(n)) + other_labels,
            groups=("selected",) * n + ("other",) * (n * (T - 1)),
            cols=("SVM margin", "current margin"),
            description=f"Each token as a point: x = its margin (x_i,alpha_i - x_it)^T W^mm z_i under "
            f"the {own} SVM, y = its margin under the current {w_name} rescaled to the norm of W^mm. "
            "Selected tokens sit at the origin; x >= 1 for the others (support vectors at x = 1).",
            theory="The cloud collapses onto the diagonal y = x as the direction of "
            f"{w_name} converges to W^mm, and the margin to the selected tokens opens to >= 1.",
        ),
        Stream(
            "attention",
            "heatmap",
            (n, T),
            rows=tuple(f"seq {i}" for i in range(n)),
            cols=tuple(f"token {t}" for t in range(T)),
            units="probability",
            description="Softmax attention of each sequence's query on its tokens.",
            theory="Each row becomes one-hot on the selected token.",
        ),
    )


class AttentionSVM(Engine):
    #: A cache of SVM solutions keyed by the selected tokens: recomputed on demand, not state.
    state_exclude = ("_svm",)
    """One-layer softmax attention converging in direction to the attention SVM."""

    spec = EngineSpec(
        name="attention-svm",
        title="Attention as an SVM",
        description="Normalised GD on softmax attention converges in direction to the max-margin "
        "token separator (Frobenius for W, nuclear for K Q^T).",
        paper="Tarzanagh, Li, Thrampoulidis & Oymak, Transformers as Support Vector Machines, 2023 "
        "(arXiv:2308.16898)",
        params=(
            Param(
                "parameterization",
                "str",
                "W",
                choices=("W", "KQ"),
                help="Train W directly, or its factors K and Q with W = K Q^T.",
            ),
            Param(
                "lr",
                "float",
                0.1,
                low=1e-4,
                high=10.0,
                live=True,
                log=True,
                help="Step length of normalised GD: W <- W - lr * grad/||grad||_F.",
            ),
            Param(
                "weight_decay",
                "float",
                EPS64,
                low=0.0,
                high=1e-2,
                live=True,
                help="(K, Q) runs only, as in the official code: lambda of the term "
                "lambda*(||K||_F^2 + ||Q||_F^2) added to the loss; the default, machine epsilon, "
                "keeps the K Q^T direction from drifting once the loss gradient underflows. "
                "W runs ignore it: their gradient direction is computed exactly in log space.",
            ),
            Param("n", "int", 6, low=1, high=64, help="Number of sequences."),
            Param("T", "int", 8, low=2, high=64, help="Tokens per sequence."),
            Param("d", "int", 10, low=2, high=64, help="Token dimension."),
            Param(
                "data_seed",
                "int",
                0,
                low=0,
                high=1_000_000,
                live=True,
                help="Which draw of tokens, queries and labels (with the run seed). Changing it "
                "live draws new data, keeps the weights, and re-solves the SVM.",
            ),
            Param(
                "head_seed",
                "int",
                0,
                low=0,
                high=1_000_000,
                live=True,
                help="Which draw of the fixed unit head v. Changing it live changes which tokens "
                "are optimal; the SVM for a selection does not depend on v.",
            ),
            Param(
                "init_std",
                "float",
                0.1,
                low=1e-6,  # K = Q = 0 is a saddle with zero gradient: K Q^T would never move
                high=10.0,
                log=True,
                help="Standard deviation of the Gaussian initialisation of W (or K and Q).",
            ),
        ),
        streams=_streams(6, 8, "W"),
        probes={"svm": 10},
        version="1",
    )

    # ----------------------------------------------------------------- setup
    def declared_streams(self) -> tuple[Stream, ...]:
        p = self.params
        return _streams(p["n"], p["T"], p["parameterization"])

    def _generator(self, *tags: int) -> torch.Generator:
        # SeedSequence mixes (run seed, tags) without collisions between streams of draws.
        state = np.random.SeedSequence([self.seed, *tags]).generate_state(1, dtype=np.uint64)[0]
        return torch.Generator().manual_seed(int(state) & ((1 << 63) - 1))

    def _draw_data(self) -> None:
        n, T, d = self.params["n"], self.params["T"], self.params["d"]
        g = self._generator(1, self.params["data_seed"])
        X = torch.randn(n, T, d, generator=g, dtype=torch.float64)
        Z = torch.randn(n, d, generator=g, dtype=torch.float64)
        Y = torch.randint(0, 2, (n,), generator=g).to(torch.float64) * 2 - 1
        self.X = (X / X.norm(dim=-1, keepdim=True)).to(self.device)
        self.Z = (Z / Z.norm(dim=-1, keepdim=True)).to(self.device)
        self.Y = Y.to(self.device)
        self._X_np = self.X.cpu().numpy()
        self._Z_np = self.Z.cpu().numpy()
        self._svm: dict[tuple[int, ...], dict[str, Any] | None] = {}

    def _draw_head(self) -> None:
        g = self._generator(2, self.params["head_seed"])
        v = torch.randn(self.params["d"], generator=g, dtype=torch.float64)
        self.v = (v / v.norm()).to(self.device)
        self._optimal = optimal_tokens(self._X_np, self.Y.cpu().numpy(), self.v.cpu().numpy())

    def setup(self) -> None:
        import cvxpy  # noqa: F401  -- a few seconds on first import; paid here, not in the first timed solve

        d = self.params["d"]
        self._underflow_reported = False
        self._draw_data()
        self._draw_head()
        g = self._generator(3)
        std = self.params["init_std"]
        shapes = [(d, d)] if self.params["parameterization"] == "W" else [(d, d), (d, d)]
        self.weights = [
            (torch.randn(s, generator=g, dtype=torch.float64) * std).to(self.device).requires_grad_()
            for s in shapes
        ]

    # ----------------------------------------------------------------- model
    def attention_matrix(self) -> torch.Tensor:
        """W itself, or K Q^T."""
        if len(self.weights) == 1:
            return self.weights[0]
        K, Q = self.weights
        return K @ Q.T

    def _forward(self) -> tuple[torch.Tensor, ...]:
        """Loss, W, scores s_it = x_it^T W z_i and softmax probabilities at the current weights."""
        W = self.attention_matrix()
        scores = torch.einsum("itd,de,ie->it", self.X, W, self.Z)
        probs = torch.softmax(scores, dim=1)
        out = torch.einsum("it,itd,d->i", probs, self.X, self.v)
        loss = torch.nn.functional.softplus(-self.Y * out).mean()  # log(1 + exp(-Y f))
        return loss, W, scores, probs

    def train_step(self, step: int) -> Mapping[str, Any]:
        loss, W, scores, probs = self._forward()
        frame = self._measure(step, loss.detach(), W.detach(), scores.detach(), probs.detach())
        lr = self.params["lr"]
        if len(self.weights) == 1:
            # W: the exact gradient direction (log space), no regulariser (as the official
            # code: its eps term belongs to the (K, Q) runs).
            with torch.no_grad():
                direction, log10_norm = w_gradient_direction(self.X, self.Z, self.Y, self.v, W.detach())
                self.weights[0].sub_(lr * direction)
            frame["grad_log10"] = log10_norm
            self._check_saturation(scores.detach())
            return frame
        wd = self.params["weight_decay"]
        # The loss gradient and the (analytic) gradient 2*wd*w of wd*||w||^2 separately: the
        # ratio tells when the loss gradient has sunk below the regulariser's.
        loss_grads = torch.autograd.grad(loss, self.weights)
        grads = [g + 2.0 * wd * w.detach() for g, w in zip(loss_grads, self.weights)]
        self._check_underflow(loss_grads)
        with torch.no_grad():
            for w, g in zip(self.weights, grads):
                gn = g.norm()
                # Each factor is normalised separately (official recipe). A gradient that
                # underflowed to exactly zero gives no direction: skip rather than divide by 0.
                if gn > 0:
                    w.sub_(lr * g / gn)
        return frame

    def _check_saturation(self, scores: torch.Tensor) -> None:
        """W mode: one ``info`` event when the softmax tail drops below float64 resolution.

        From then on 1 - p (the attention left on the other tokens) rounds to 0 in float64
        for some sequence, and a plain autograd gradient would be rounding noise; the
        log-space direction keeps the steps exact, so this marks a regime, not a stop.
        """
        if self._underflow_reported:
            return
        logp = torch.log_softmax(scores, dim=1)
        top = logp.argmax(dim=1, keepdim=True)
        rest = logp.scatter(1, top, -math.inf).logsumexp(dim=1)  # log(1 - p_selected)
        worst = float(rest.min())
        if worst < math.log(EPS64):
            self._underflow_reported = True
            self.emit(
                "info",
                message="attention saturated past float64 resolution (1 - p_selected = "
                f"10^{worst / math.log(10.0):.1f} < eps in some sequence): a plain float64 gradient "
                "would now be rounding noise; its direction is computed in log space, so W keeps "
                "converging",
            )

    def _check_underflow(self, loss_grads: Sequence[torch.Tensor]) -> None:
        """(K, Q) mode: one ``info`` event when the loss gradient stops steering the direction.

        Once the softmax saturates, the loss gradient decays like exp(-margin * ||W||); in
        float64 it soon falls to the size of the machine-epsilon regulariser's gradient
        2*eps*||K, Q|| (or to rounding noise), and normalised GD then balances the two: the
        factors stop moving and every curve goes flat.
        """
        if self._underflow_reported:
            return
        wd = self.params["weight_decay"]
        loss_norm = float(torch.stack([g.norm() for g in loss_grads]).norm())
        reg_norm = 2.0 * wd * float(torch.stack([w.detach().norm() for w in self.weights]).norm())
        if loss_norm == 0.0 or loss_norm <= reg_norm:
            self._underflow_reported = True
            self.emit(
                "info",
                message="gradient underflowed: the direction is final "
                f"(||grad loss|| = {loss_norm:.2e} <= regulariser's {reg_norm:.2e}); "
                "K Q^T no longer improves in float64",
            )

    # ----------------------------------------------------------------- measurements
    def _measure(
        self, step: int, loss: torch.Tensor, W_t: torch.Tensor, scores: torch.Tensor, probs: torch.Tensor
    ) -> dict[str, Any]:
        # One small device->host copy per step: the selection decides which SVM to compare with.
        W = W_t.cpu().numpy()
        S = scores.cpu().numpy()
        P = probs.cpu().numpy()
        n = S.shape[0]
        rows = np.arange(n)
        sel = np.argmax(P, axis=1)
        kq = self.params["parameterization"] == "KQ"
        wnorm = float(np.linalg.norm(W))
        wnorm_own = float(np.linalg.norm(W, "nuc")) if kq else wnorm
        others = np.ones(S.shape, dtype=bool)
        others[rows, sel] = False
        gaps = (S[rows, sel][:, None] - S)[others]  # row-major: sequence by sequence
        frame: dict[str, Any] = {
            "train_loss": loss,
            "weight_norm": wnorm,
            "selected_attention": P[rows, sel].mean(),
            "optimal_fraction": np.mean(sel == self._optimal),
            "attention": P,
            "normalized_margin": gaps.min() / wnorm_own if wnorm_own > 0 else np.nan,
        }
        sol = self._solution(tuple(int(a) for a in sel), step)
        if sol is not None:
            corr = np.array([correlation(W, sol["fro"]), correlation(W, sol["nuc"])])
            frame["svm_correlation"] = corr
            frame["one_minus_correlation"] = 1.0 - corr
            frame["svm_rank"] = sol["rank"]
            own = "nuc" if kq else "fro"
            frame["svm_margin"] = sol[f"{own}_margin"]
            # Margin-direction points: selected tokens first (origin), then the others with
            # (SVM margin, current margin rescaled to ||W^mm||_F) -> y = x when aligned.
            pts = np.zeros((S.size, 2))
            pts[n:, 0] = sol[f"{own}_gaps"]
            pts[n:, 1] = gaps * (sol[f"{own}_fro_norm"] / wnorm if wnorm > 0 else 0.0)
            frame["margin_directions"] = pts
        return frame

    def _solution(self, sel: tuple[int, ...], step: int) -> dict[str, Any] | None:
        """Both SVM solutions for selection ``sel``: cached, solved only when the probe is due."""
        if sel in self._svm:
            return self._svm[sel]
        if not self.due("svm", step):
            return None
        alpha = np.array(sel)
        with self.timed("svm"):
            try:
                sol: dict[str, Any] = {
                    "fro": solve_att_svm(self._X_np, self._Z_np, alpha, "fro"),
                    "nuc": solve_att_svm(self._X_np, self._Z_np, alpha, "nuc"),
                }
            except AttSVMError as exc:
                # Cache the failure so a stuck selection does not re-solve every cadence.
                self._svm[sel] = None
                self.emit("warning", message=str(exc), selection=list(sel))
                return None
        sol["rank"] = np.array([svm_rank(sol["fro"]), svm_rank(sol["nuc"])], dtype=float)
        sol["fro_margin"] = 1.0 / np.linalg.norm(sol["fro"])
        sol["nuc_margin"] = 1.0 / np.linalg.norm(sol["nuc"], "nuc")
        for key in ("fro", "nuc"):
            sol[f"{key}_fro_norm"] = float(np.linalg.norm(sol[key]))
            sol[f"{key}_gaps"] = constraint_slack(sol[key], self._X_np, self._Z_np, alpha)
        self._svm[sel] = sol
        return sol

    # ----------------------------------------------------------------- live changes
    def on_set(self, name: str, new: Any, old: Any) -> None:
        super().on_set(name, new, old)
        if name == "data_seed":
            self._draw_data()  # also clears the SVM cache: solutions belong to the data
            self._underflow_reported = False  # new data, new loss: the gradient is alive again
            self._draw_head()  # same v; recomputes the optimal tokens of the new data
            self.emit(
                "phase", message=f"new data (data_seed {old} -> {new}); SVM re-solved for the new selection"
            )
        elif name == "head_seed":
            # W^mm(alpha) depends on X, Z and alpha only, so cached solutions stay valid.
            self._draw_head()
            self.emit("phase", message=f"new head v (head_seed {old} -> {new}); optimal tokens changed")
