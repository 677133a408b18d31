"""Neural-collapse engines: an MLP on a Gaussian mixture, the unconstrained-features
model, and Tirer et al.'s perturbation model (SCIENCE.md §4).

All three expose the same collapse streams, measured by
:func:`engines.probes.collapse.nc_metrics` on the last-layer features of the whole
training set at the ``collapse`` probe's cadence. Metrics at step t use the features,
classifier and bias of the forward pass that update t uses (the model after t updates).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dynlab.engines.base import Engine
from dynlab.engines.probes.collapse import class_means, cosine_matrix, geometry_3d, nc_metrics
from dynlab.engines.spec import EngineSpec, Param, Stream

PAPYAN = "Papyan, Han & Donoho, Prevalence of neural collapse during the terminal phase of deep learning training, PNAS 2020"
TIRER = "Tirer, Huang & Niles-Weed, Perturbation Analysis of Neural Collapse, ICML 2023"


def collapse_streams(num_classes: int) -> tuple[Stream, ...]:
    """The streams every collapse engine emits, shaped for ``num_classes`` classes."""
    C = int(num_classes)
    names = tuple(f"class {c}" for c in range(C))
    groups = ("mean",) * C + ("classifier",) * C + ("etf",) * C
    return (
        Stream(
            "train_loss",
            "scalar",
            description="Training loss of the full batch (data term only).",
            theory="Decreases towards its regularised minimum; collapse continues after it flattens "
            "(the terminal phase of training).",
            log_scale=True,
        ),
        Stream(
            "train_accuracy",
            "scalar",
            description="Fraction of training samples classified correctly.",
            theory="Reaches 1 early; neural collapse is what happens after that.",
        ),
        Stream(
            "nc1",
            "scalar",
            description="NC1 = Tr(Σ_W Σ_B⁺)/C (Papyan et al.): within-class covariance "
            "measured in the metric of the between-class covariance.",
            theory="→ 0: features collapse onto their class means.",
            log_scale=True,
        ),
        Stream(
            "nc1_trace_ratio",
            "scalar",
            description="Tr Σ_W / Tr Σ_B (Tirer et al.): within- over "
            "between-class variability, better conditioned than the pseudo-inverse NC1.",
            theory="→ 0 under collapse; with features tied to given ones it stays below theirs.",
            log_scale=True,
        ),
        Stream(
            "equinorm",
            "scalar",
            description=(
                "Coefficient of variation (sample std, ddof 1, over mean) of the centred class-mean "
                "norms ‖μ_c − μ_G‖, μ_G the mean of the class means."
            ),
            theory="→ 0 (NC2): all class means equally far from the global mean.",
            log_scale=True,
        ),
        Stream(
            "equinorm_classifier",
            "scalar",
            description="Coefficient of variation of the classifier row norms ‖w_c‖.",
            theory="→ 0 (NC2).",
            log_scale=True,
        ),
        Stream(
            "equiangularity",
            "scalar",
            description="Std of the pairwise cosines between centred class "
            "means (not their mean, which is ≈ −1/(C−1) by construction).",
            theory="→ 0 (NC2): every pair at the same angle.",
            log_scale=True,
        ),
        Stream(
            "equiangularity_classifier",
            "scalar",
            description="Std of the pairwise cosines between classifier rows.",
            theory="→ 0 (NC2).",
            log_scale=True,
        ),
        Stream(
            "max_angle",
            "scalar",
            description="Mean |cos + 1/(C−1)| over pairs of centred class means: "
            "distance from the simplex angle.",
            theory="→ 0: the means form a simplex ETF, the most separated C directions possible.",
            log_scale=True,
        ),
        Stream(
            "self_duality",
            "scalar",
            description="NC3 = ‖Wᵀ/‖W‖ − Mᵀ/‖M‖‖²_F between the classifier and the centred class means.",
            theory="→ 0 (NC3): the classifier aligns with the class means up to scale.",
            log_scale=True,
        ),
        Stream(
            "ncc_mismatch",
            "scalar",
            description="NC4: fraction of training samples where the "
            "classifier's decision differs from the nearest class mean.",
            theory="→ 0 (NC4): the classifier becomes a nearest-class-centre rule.",
        ),
        Stream(
            "class_means",
            "points",
            (3 * C, 3),
            description="Centred class means (exact 3-D coordinates "
            "of their span when C ≤ 4; for C > 4 an orthogonal projection onto the 3-D slice of their span that "
            "best matches a fixed, spread class layout, so a simplex shows every class apart), the classifier rows rescaled to the "
            "means' Frobenius norm, and the simplex ETF of the means' RMS norm nearest to them.",
            theory="Means and classifier rows converge onto the ETF vertices (a regular tetrahedron "
            "for C = 4).",
            labels=names * 3,
            groups=groups,
        ),
        Stream(
            "mean_cosines",
            "heatmap",
            (C, C),
            description="Cosines between centred class means.",
            theory="Off-diagonal entries all → −1/(C−1).",
            rows=names,
            cols=names,
        ),
    )


def _common_params(num_classes: int, per_class: int, dim: int, dim_name: str) -> tuple[Param, ...]:
    return (
        Param("num_classes", "int", num_classes, 2, 100, help="Number of classes C."),
        Param("samples_per_class", "int", per_class, 1, 2000, help="Training samples per class (balanced)."),
        Param(dim_name, "int", dim, 2, 2048, help="Dimension of the inputs (MLP) or of the free features."),
    )


class _CollapseEngine(Engine):
    """Shared measurement: turns features, classifier and bias into collapse frames.

    No ``spec`` here, so this base is not registered as an engine.
    """

    _y_np: np.ndarray  # every sample's class, set by the subclass's setup

    def declared_streams(self) -> tuple[Stream, ...]:
        return collapse_streams(self.params["num_classes"]) + self._extra_streams()

    def _extra_streams(self) -> tuple[Stream, ...]:
        return ()

    def _labels(self) -> torch.Tensor:
        C, n = self.params["num_classes"], self.params["samples_per_class"]
        return torch.arange(C, device=self.device).repeat_interleave(n)

    def _measure(self, step: int, H: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None) -> dict[str, Any]:
        """Collapse streams at ``step`` when the ``collapse`` probe is due, else ``{}``."""
        if not self.due("collapse", step):
            return {}
        with self.timed("collapse"):
            # One device→host copy of the (N×d) features per probe, not per step.
            h = H.detach().double().cpu().numpy()
            w = W.detach().double().cpu().numpy()
            bb = None if b is None else b.detach().double().cpu().numpy()
            y = self._y_np
            C = self.params["num_classes"]
            m = nc_metrics(h, y, w, bb, num_classes=C)
            mu, mu_g = class_means(h, y, C)
            geo = geometry_3d(mu - mu_g, w, previous=getattr(self, "_prev_means3", None))
            self._prev_means3 = geo["means"]
            return {
                "nc1": m["nc1"],
                "nc1_trace_ratio": m["nc1_trace_ratio"],
                "equinorm": m["equinorm_means"],
                "equinorm_classifier": m["equinorm_weights"],
                "equiangularity": m["equiangularity"],
                "equiangularity_classifier": m["equiangularity_weights"],
                "max_angle": m["max_angle"],
                "self_duality": m["nc3"],
                "ncc_mismatch": m["nc4"],
                "class_means": np.vstack([geo["means"], geo["classifier"], geo["etf"]]),
                "mean_cosines": cosine_matrix(mu - mu_g),
            }


class NeuralCollapseMLP(_CollapseEngine):
    """An MLP trained full-batch on a Gaussian mixture until its last layer collapses."""

    spec = EngineSpec(
        name="neural-collapse",
        title="Neural collapse in an MLP",
        description="A ReLU MLP trained full-batch with weight decay far past zero training error; "
        "its penultimate features collapse to a simplex ETF aligned with the classifier.",
        paper=PAPYAN,
        params=_common_params(10, 50, 32, "input_dim")
        + (
            Param("mean_norm", "float", 2.0, 0.0, 100.0, help="Norm of each class centre of the mixture."),
            Param("noise_std", "float", 1.0, 0.0, 100.0, help="Std of the isotropic noise around a centre."),
            Param("width", "int", 128, 2, 4096, help="Width of every hidden layer (= feature dimension)."),
            Param("depth", "int", 3, 1, 12, help="Number of hidden ReLU layers."),
            Param(
                "loss",
                "str",
                "mse",
                choices=("mse", "cross_entropy"),
                help="mse: 0.5‖f − onehot‖² per sample; cross_entropy: softmax CE.",
            ),
            Param("lr", "float", 0.05, 1e-6, 10.0, live=True, log=True, help="SGD learning rate."),
            Param("momentum", "float", 0.9, 0.0, 0.999, live=True, help="SGD (heavy-ball) momentum."),
            Param(
                "weight_decay",
                "float",
                1e-3,
                0.0,
                1.0,
                live=True,
                help="L2 weight decay on every parameter (SGD's coupled form).",
            ),
        ),
        streams=collapse_streams(10),
        probes={"collapse": 10},
    )

    def setup(self) -> None:
        p = self.params
        C, n, dim = p["num_classes"], p["samples_per_class"], p["input_dim"]
        g = torch.Generator().manual_seed(self.seed)
        centres = torch.randn(C, dim, generator=g)
        centres *= p["mean_norm"] / centres.norm(dim=1, keepdim=True)
        y = torch.arange(C).repeat_interleave(n)
        x = centres[y] + p["noise_std"] * torch.randn(C * n, dim, generator=g)
        self._x, self._y = x.to(self.device), y.to(self.device)
        self._y_np = y.numpy()
        self._onehot = F.one_hot(self._y, C).float()
        layers: list[nn.Module] = []
        width_in = dim
        for _ in range(p["depth"]):
            layers += [nn.Linear(width_in, p["width"]), nn.ReLU()]
            width_in = p["width"]
        torch.manual_seed(self.seed)  # model init independent of the data draw above
        self.body = nn.Sequential(*layers).to(self.device)
        self.head = nn.Linear(width_in, C).to(self.device)
        self.optimizers = [
            torch.optim.SGD(
                [*self.body.parameters(), *self.head.parameters()],
                lr=p["lr"],
                momentum=p["momentum"],
                weight_decay=p["weight_decay"],
            )
        ]

    def train_step(self, step: int) -> Mapping[str, Any]:
        H = self.body(self._x)
        out = self.head(H)
        if self.params["loss"] == "mse":
            loss = 0.5 * ((out - self._onehot) ** 2).sum(dim=1).mean()
        else:
            loss = F.cross_entropy(out, self._y)
        frame = self._measure(step, H, self.head.weight, self.head.bias)
        frame["train_loss"] = loss.detach()
        frame["train_accuracy"] = (out.detach().argmax(dim=1) == self._y).float().mean()
        (opt,) = self.optimizers
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return frame


class UnconstrainedFeatures(_CollapseEngine):
    """The unconstrained-features model: features are free parameters (SCIENCE.md §4(A))."""

    spec = EngineSpec(
        name="collapse-ufm",
        title="Unconstrained-features model",
        description="Features H, classifier W and bias b are all free parameters trained by gradient "
        "descent on regularised cross-entropy; every global minimiser is an exact simplex ETF.",
        paper="Zhu et al., A Geometric Analysis of Neural Collapse with Unconstrained Features, NeurIPS 2021; "
        + PAPYAN,
        params=_common_params(10, 20, 32, "feature_dim")
        + (
            Param(
                "lr",
                "float",
                0.5,
                1e-6,
                10.0,
                live=True,
                log=True,
                help="GD step for W and b; the features use lr·N so each sample's feature moves "
                "as fast as the classifier (its gradient carries a 1/N).",
            ),
            Param(
                "weight_decay",
                "float",
                5e-3,
                0.0,
                1.0,
                live=True,
                log=True,
                help="λ_W: the penalty (λ_W/2)‖W‖².",
            ),
            Param(
                "feature_decay",
                "float",
                5e-3,
                0.0,
                1.0,
                live=True,
                log=True,
                help="λ_H: the penalty (λ_H/2N)Σ‖h_i‖².",
            ),
            Param("init_scale", "float", 1.0, 0.0, 100.0, help="Std of the random initial features."),
        ),
        streams=collapse_streams(10),
        probes={"collapse": 10},
    )

    def setup(self) -> None:
        p = self.params
        C, n, d = p["num_classes"], p["samples_per_class"], p["feature_dim"]
        g = torch.Generator().manual_seed(self.seed)
        dev, dt = self.device, torch.float64  # float64: the UFM collapses to ~1e-11
        self.H = (p["init_scale"] * torch.randn(C * n, d, generator=g, dtype=dt)).to(dev).requires_grad_()
        self.W = (torch.randn(C, d, generator=g, dtype=dt) / d**0.5).to(dev).requires_grad_()
        self.b = torch.zeros(C, dtype=dt, device=dev, requires_grad=True)
        self._y = self._labels()
        self._y_np = self._y.cpu().numpy()

    def train_step(self, step: int) -> Mapping[str, Any]:
        p = self.params
        N = self.H.shape[0]
        logits = self.H @ self.W.T + self.b
        ce = F.cross_entropy(logits, self._y)
        objective = (
            ce
            + 0.5 * p["feature_decay"] * (self.H**2).sum() / N
            + 0.5 * p["weight_decay"] * (self.W**2).sum()
        )
        frame = self._measure(step, self.H, self.W, self.b)
        frame["train_loss"] = ce.detach()
        frame["train_accuracy"] = (logits.detach().argmax(dim=1) == self._y).double().mean()
        gH, gW, gb = torch.autograd.grad(objective, (self.H, self.W, self.b))
        lr = p["lr"]  # read fresh each step, so a live change applies at the next update
        with torch.no_grad():
            self.H -= lr * N * gH
            self.W -= lr * gW
            self.b -= lr * gb
        return frame


class PerturbedCollapse(_CollapseEngine):
    """Tirer et al.'s perturbation model: UFM features tied to given features H_0."""

    spec = EngineSpec(
        name="collapse-perturbation",
        title="Perturbation analysis of neural collapse",
        description="MSE unconstrained features with a proximity term (β/2N)‖H − H₀‖² that keeps the "
        "features near given ones H₀; β interpolates between full collapse and no change.",
        paper=TIRER,
        params=_common_params(5, 40, 20, "feature_dim")
        + (
            Param(
                "noise_std",
                "float",
                0.8,
                0.0,
                100.0,
                help="Within-class noise of H₀ around standard-normal class centres.",
            ),
            Param(
                "beta",
                "float",
                0.1,
                0.0,
                1000.0,
                live=True,
                log=True,
                help="β: strength of the pull towards H₀ (0 = unconstrained features).",
            ),
            Param(
                "lr",
                "float",
                1.0,
                1e-3,
                1.9,
                live=True,
                help="GD step as a fraction of each block's stability limit 1/L (L = its curvature: "
                "‖H‖²/N + λ_W for W, ‖W‖² + λ_H + β for each feature), so β can change "
                "by orders of magnitude live without divergence.",
            ),
            Param(
                "weight_decay",
                "float",
                1e-3,
                0.0,
                1.0,
                live=True,
                log=True,
                help="λ_W: the penalty (λ_W/2)‖W‖².",
            ),
            Param(
                "feature_decay",
                "float",
                1e-4,
                0.0,
                1.0,
                live=True,
                log=True,
                help="λ_H: the penalty (λ_H/2N)‖H‖².",
            ),
        ),
        streams=collapse_streams(5),
        probes={"collapse": 10},
    )

    def _extra_streams(self) -> tuple[Stream, ...]:
        return (
            Stream(
                "h0_trace_ratio",
                "scalar",
                description="Tr Σ_W / Tr Σ_B of the given features H₀ (constant).",
                theory="The level the features' trace ratio approaches as β → ∞.",
            ),
            Stream(
                "distance_to_h0",
                "scalar",
                description="‖H − H₀‖_F / ‖H₀‖_F.",
                theory="Shrinks as β grows: the features stay near the ones they were given.",
            ),
        )

    def setup(self) -> None:
        p = self.params
        C, n, d = p["num_classes"], p["samples_per_class"], p["feature_dim"]
        g = torch.Generator().manual_seed(self.seed)
        dt = torch.float64
        centres = torch.randn(C, d, generator=g, dtype=dt)
        y = torch.arange(C).repeat_interleave(n)
        H0 = centres[y] + p["noise_std"] * torch.randn(C * n, d, generator=g, dtype=dt)
        W = 0.01 * torch.randn(C, d, generator=g, dtype=dt)
        self.H0, self.H, self.W = H0.to(self.device), H0.clone().to(self.device), W.to(self.device)
        self._y = y.to(self.device)
        self._y_np = y.numpy()
        self._Y = F.one_hot(self._y, C).to(dt)
        self._h0_ratio = nc_metrics(H0.numpy(), self._y_np, W.numpy(), num_classes=C)["nc1_trace_ratio"]

    def train_step(self, step: int) -> Mapping[str, Any]:
        p = self.params
        beta, lam_w, lam_h, lr = p["beta"], p["weight_decay"], p["feature_decay"], p["lr"]
        H, W, N = self.H, self.W, self.H.shape[0]
        E = H @ W.T - self._Y  # N×C residuals
        frame = self._measure(step, H, W, None)
        frame["train_loss"] = 0.5 * (E**2).sum() / N
        frame["train_accuracy"] = ((H @ W.T).argmax(dim=1) == self._y).double().mean()
        frame["h0_trace_ratio"] = self._h0_ratio
        frame["distance_to_h0"] = torch.linalg.norm(H - self.H0) / torch.linalg.norm(self.H0)
        # Analytic gradients (the model is bilinear); N·∂/∂H so each feature row has O(1) curvature.
        grad_w = E.T @ H / N + lam_w * W
        grad_h = E @ W + lam_h * H + beta * (H - self.H0)
        # Block curvatures (spectral norms of a 20×20 and a C×C Gram matrix: cheap).
        L_w = torch.linalg.eigvalsh(H.T @ H)[-1] / N + lam_w
        L_h = torch.linalg.eigvalsh(W @ W.T)[-1] + lam_h + beta
        self.W = W - (lr / L_w) * grad_w
        self.H = H - (lr / L_h) * grad_h
        return frame
