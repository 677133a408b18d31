"""Hessian-spectrum engines: bulk + outliers, edge of stability, SGD's trace bound.

* ``hessian-outliers``: an over-parameterised MLP on a C-class Gaussian mixture; the
  top of the Hessian spectrum separates into C² outliers under MSE (Papyan 2020) or
  about C under cross-entropy (Sagun et al. 2017).
* ``edge-of-stability``: full-batch GD on digits; the sharpness rises to 2/η and
  hovers there (Cohen et al. 2021).
* ``sgd-stability``: SGD with batch size 1 beside GD at the same step size; SGD's
  minimum has tr H ≤ 2/η, GD's only λ_max ≤ 2/η (Wu & Su 2023).

The probes themselves live in :mod:`engines.probes.hessian`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from dynlab.engines.base import Engine
from dynlab.engines.data import digits_standardized
from dynlab.engines.probes.hessian import HessianOperator, count_outliers
from dynlab.engines.spec import EngineSpec, Param, SpecError, Stream

__all__ = ["EdgeOfStability", "HessianOutliers", "SgdStability", "half_sse", "tanh_mlp"]


def tanh_mlp(widths: list[int]) -> nn.Sequential:
    """``Linear -> tanh -> ... -> Linear`` with PyTorch's default initialisation."""
    layers: list[nn.Module] = []
    for i in range(len(widths) - 1):
        layers.append(nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


def half_sse(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cohen et al.'s square loss: ``0.5 * sum over outputs``, mean over samples."""
    return 0.5 * (outputs - targets).pow(2).sum(dim=-1).mean()


def _lr_param(default: float, high: float = 5.0) -> Param:
    return Param(
        "lr",
        "float",
        default,
        low=1e-4,
        high=high,
        live=True,
        log=True,
        help="Step size η of (full-batch) gradient descent; the stability threshold is 2/η.",
    )


# =============================================================================== outliers
class HessianOutliers(Engine):
    """Full-batch GD on a C-class Gaussian mixture, watching the top of the spectrum."""

    spec = EngineSpec(
        name="hessian-outliers",
        title="Hessian outliers: C² under MSE, ~C under cross-entropy",
        description="An over-parameterised tanh MLP on C Gaussian classes; the Hessian's top "
        "eigenvalues split off from the bulk as training proceeds.",
        paper="Sagun et al. 2017, 'Empirical analysis of the Hessian of over-parametrized neural "
        "networks'; Papyan 2020, 'Traces of class/cross-class structure pervade deep learning spectra'",
        params=(
            Param("num_classes", "int", 4, low=2, high=8, help="Number of Gaussian classes C."),
            Param(
                "loss",
                "str",
                "mse",
                choices=("mse", "ce"),
                help="mse: 0.5·Σ_out (f − onehot)², mean over samples; ce: cross-entropy.",
            ),
            _lr_param(0.1, high=2.0),
            Param("input_dim", "int", 20, low=2, high=256, help="Input dimension d."),
            Param("samples_per_class", "int", 30, low=2, high=1000, help="Training points per class."),
            Param("hidden", "int", 64, low=4, high=512, help="Width of both hidden layers."),
            Param("mean_norm", "float", 3.0, low=0.0, high=100.0, help="Norm of each class mean."),
            Param("noise", "float", 0.5, low=0.0, high=100.0, help="Standard deviation of the class noise."),
            Param(
                "lanczos_steps",
                "int",
                200,
                low=20,
                high=2000,
                live=True,
                help="Maximum Lanczos steps of the top-eigenvalue probe (read at each probe).",
            ),
            Param(
                "density_vectors",
                "int",
                2,
                low=1,
                high=50,
                live=True,
                help="Random vectors of the SLQ density probe (read at each probe).",
            ),
        ),
        streams=(Stream("train_loss", "scalar", description="Full-batch training loss.", log_scale=True),),
        probes={"spectrum": 50, "density": 50},
    )

    def declared_streams(self) -> tuple[Stream, ...]:
        c = self.params["num_classes"]
        k = self._top_k()
        mse = self.params["loss"] == "mse"
        predicted = c * c if mse else c
        why = (
            "MSE: the Gauss-Newton block I_C ⊗ E[hhᵀ] of rank ≈ C·C gives C class outliers plus "
            "C(C−1) cross-class ones, C² in all (Papyan 2020)."
            if mse
            else "Cross-entropy: about C outliers (often C−1), with small gaps (Sagun 2017; Papyan 2020)."
        )
        return (
            Stream(
                "train_loss",
                "scalar",
                description="Full-batch training loss.",
                log_scale=True,
                theory="Decreases under GD.",
            ),
            Stream(
                "hessian_top",
                "vector",
                (k,),
                description=f"The {k} largest Hessian eigenvalues "
                "(Lanczos with full re-orthogonalisation, float64).",
                theory=why,
                labels=tuple(f"λ{i + 1}" for i in range(k)),
                log_scale=True,
            ),
            Stream(
                "hessian_density",
                "histogram",
                description="Eigenvalue density by stochastic Lanczos "
                "quadrature: probability mass per bin on a symmetric-log grid (fine near 0, "
                "logarithmic beyond), so a bulk near zero and outliers decades away show together.",
                theory="A bulk concentrated at 0 plus a few isolated outliers (Sagun 2017).",
            ),
            Stream(
                "outlier_count",
                "scalar",
                description=f"Separated outliers k* = argmax_k λ_k/λ_(k+1) over the top {k - 1}.",
                theory=f"{predicted} ({'C²' if mse else '≈ C'}). " + why,
            ),
            Stream(
                "outlier_gap",
                "scalar",
                description="The gap ratio λ_k*/λ_(k*+1) at the count.",
                theory="Well above 1 (≥ 1.5) when the outliers are cleanly separated.",
            ),
            Stream(
                "predicted_count",
                "scalar",
                description="The count theory predicts: C² (MSE) or C (CE).",
                theory=why,
            ),
        )

    def _top_k(self) -> int:
        c = self.params["num_classes"]
        # Count over the top C²+5 (MSE) or 2C (CE) candidates, plus the one below them.
        return c * c + 5 if self.params["loss"] == "mse" else 2 * c + 1

    def setup(self) -> None:
        p = self.params
        c, d, n_c = p["num_classes"], p["input_dim"], p["samples_per_class"]
        gen = torch.Generator().manual_seed(self.seed)
        f64 = torch.float64
        means = torch.randn(c, d, generator=gen, dtype=f64)
        means = p["mean_norm"] * means / means.norm(dim=1, keepdim=True)
        labels = torch.arange(c).repeat_interleave(n_c)
        x = means[labels] + p["noise"] * torch.randn(c * n_c, d, generator=gen, dtype=f64)
        self.x = x.to(self.device)
        self.labels = labels.to(self.device)
        self.loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
        if p["loss"] == "mse":
            self.targets = nn.functional.one_hot(labels, c).to(f64).to(self.device)
            self.loss_fn = half_sse
        else:
            self.targets = self.labels
            self.loss_fn = nn.functional.cross_entropy
        self.model = tanh_mlp([d, p["hidden"], p["hidden"], c]).to(dtype=f64, device=self.device)

    def train_step(self, step: int) -> Mapping[str, Any]:
        out: dict[str, Any] = {}
        if self.due("spectrum", step) or self.due("density", step):
            op = HessianOperator(self.model, self.loss_fn, (self.x, self.targets))
            if self.due("spectrum", step):
                with self.timed("spectrum"):
                    k = self._top_k()
                    top = op.top_eigenvalues(k, steps=max(self.params["lanczos_steps"], k), seed=step)
                    count, gap = count_outliers(top, k - 1)
                out.update(hessian_top=top, outlier_count=float(count), outlier_gap=gap)
            if self.due("density", step):
                with self.timed("density"):
                    dens = op.density(self.params["density_vectors"], 80, seed=step)
                out["hessian_density"] = dens.histogram
            del op  # frees the retained double-backprop graph before the update
        c = self.params["num_classes"]
        out["predicted_count"] = float(c * c if self.params["loss"] == "mse" else c)
        self.model.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.model(self.x), self.targets)
        loss.backward()
        with torch.no_grad():
            lr = self.params["lr"]
            for prm in self.model.parameters():
                assert prm.grad is not None  # every weight is in the loss
                prm.add_(prm.grad, alpha=-lr)
        out["train_loss"] = loss.detach()
        return out


# =============================================================================== EoS
class EdgeOfStability(Engine):
    """Full-batch GD on digits: progressive sharpening, then λ_max pinned at 2/η."""

    spec = EngineSpec(
        name="edge-of-stability",
        title="Edge of stability: sharpness rises to 2/η and stays",
        description="Full-batch GD on 1000 digits with a 64-128-128-10 tanh MLP and square loss; "
        "λ_max of the Hessian climbs until it meets 2/η, then hovers there while the loss keeps "
        "falling non-monotonically.",
        paper="Cohen, Kaur, Li, Kolter, Talwalkar, 'Gradient Descent on Neural Networks Typically "
        "Occurs at the Edge of Stability', ICLR 2021",
        params=(
            _lr_param(0.2),
            Param(
                "momentum",
                "float",
                0.0,
                low=0.0,
                high=0.99,
                live=True,
                help="Heavy-ball momentum β (torch SGD form); the threshold becomes (2+2β)/η.",
            ),
            Param("n_samples", "int", 1000, low=50, high=1797, help="First n digits used (full batch)."),
            Param("hidden", "int", 128, low=4, high=1024, help="Width of both hidden layers."),
            Param(
                "lanczos_steps",
                "int",
                20,
                low=5,
                high=500,
                live=True,
                help="Maximum Lanczos steps of the sharpness probe (read at each probe).",
            ),
            Param(
                "trace_samples",
                "int",
                20,
                low=2,
                high=1000,
                live=True,
                help="Hutchinson vectors of the trace probe (read at each probe).",
            ),
        ),
        streams=(
            Stream(
                "train_loss",
                "scalar",
                description="Full-batch loss 0.5·Σ_out (f − onehot)², mean over samples.",
                theory="Falls over long times but not monotonically once at the edge of stability.",
                log_scale=True,
            ),
            Stream(
                "sharpness",
                "scalar",
                description="λ_max of the training-loss Hessian (Lanczos, float64 copy of the model).",
                theory="Progressive sharpening up to 2/η, then it hovers at or just above 2/η.",
            ),
            Stream(
                "stability_threshold",
                "scalar",
                description="(2 + 2β)/η: GD on a quadratic with "
                "this curvature neither shrinks nor grows (2/η without momentum).",
                theory="Follows a live change of lr or momentum; the sharpness plateau follows it.",
            ),
            Stream(
                "hessian_trace",
                "scalar",
                description="tr H by Hutchinson (Rademacher vectors).",
                theory="No threshold for GD: only λ_max is constrained.",
            ),
            Stream(
                "hessian_density",
                "histogram",
                description="Eigenvalue density by stochastic Lanczos "
                "quadrature (mass per bin, symmetric-log grid).",
                theory="The top edge of the spectrum reaches 2/η and stays there.",
            ),
        ),
        probes={"sharpness": 50, "trace": 100, "density": 250},
    )

    def setup(self) -> None:
        p = self.params
        self.x, self.y = digits_standardized(p["n_samples"], self.device)
        self.x32, self.y32 = self.x.float(), self.y.float()
        self.model = tanh_mlp([64, p["hidden"], p["hidden"], 10]).to(self.device)
        self.optimizers = [torch.optim.SGD(self.model.parameters(), lr=p["lr"], momentum=p["momentum"])]

    def threshold(self) -> float:
        """(2 + 2β)/η, the stability threshold of (heavy-ball) GD."""
        return (2.0 + 2.0 * self.params["momentum"]) / self.params["lr"]

    def _operator(self) -> HessianOperator:
        # The dynamics run in float32; the probe differentiates a float64 copy so the
        # Lanczos products are exact to ~1e-15 (a copy of 26k weights is cheap).
        model64 = copy.deepcopy(self.model).double()
        return HessianOperator(model64, half_sse, (self.x, self.y))

    def train_step(self, step: int) -> Mapping[str, Any]:
        out: dict[str, Any] = {"stability_threshold": self.threshold()}
        probes = [n for n in ("sharpness", "trace", "density") if self.due(n, step)]
        if probes:
            op = self._operator()
            if "sharpness" in probes:
                with self.timed("sharpness"):
                    out["sharpness"] = float(
                        op.top_eigenvalues(1, steps=self.params["lanczos_steps"], seed=step, min_steps=1)[0]
                    )
            if "trace" in probes:
                with self.timed("trace"):
                    out["hessian_trace"] = op.trace(self.params["trace_samples"], seed=step).estimate
            if "density" in probes:
                with self.timed("density"):
                    out["hessian_density"] = op.density(2, 40, seed=step).histogram
            del op
        (opt,) = self.optimizers
        opt.zero_grad(set_to_none=True)
        loss = half_sse(self.model(self.x32), self.y32)
        loss.backward()
        opt.step()
        out["train_loss"] = loss.detach()
        return out


# =============================================================================== Wu & Su
class SgdStability(Engine):
    """SGD (batch size 1) beside full-batch GD from the same initialisation and step size."""

    spec = EngineSpec(
        name="sgd-stability",
        title="SGD's minima are flat in trace, GD's only in λ_max",
        description="A 5-50-1 tanh net fits 20 points y = sin(x·u) with SGD (one example per step) "
        "and with GD at the same η, in float64; at the end tr H ≤ 2/η for SGD while GD only "
        "satisfies λ_max ≤ 2/η.",
        paper="Wu & Su, 'The Implicit Regularization of Dynamical Stability in Stochastic Gradient "
        "Descent', ICML 2023",
        params=(
            _lr_param(0.1, high=2.0),
            Param(
                "batch_size", "int", 1, low=1, high=1000, help="SGD batch size (the theorem's check uses 1)."
            ),
            Param("n_samples", "int", 20, low=2, high=1000, help="Training points n."),
            Param("input_dim", "int", 5, low=1, high=100, help="Input dimension d."),
            Param("hidden", "int", 50, low=2, high=200, help="Hidden width."),
        ),
        streams=(),
        probes={"hessian": 1000},
    )

    def declared_streams(self) -> tuple[Stream, ...]:
        lab = ("sgd", "gd")
        return (
            Stream(
                "train_loss",
                "vector",
                (2,),
                labels=lab,
                log_scale=True,
                description="Full-batch loss (1/2n)·Σ(f − y)² of each run.",
                theory="Both interpolate (→ 0) at lr 0.1.",
            ),
            Stream(
                "trace",
                "vector",
                (2,),
                labels=lab,
                description="tr H of the full-batch loss (dense Hessian).",
                theory="At an SGD-stable global minimum tr H ≤ 2/η; GD's minimum may exceed it.",
            ),
            Stream(
                "sharpness",
                "vector",
                (2,),
                labels=lab,
                description="λ_max of the full-batch Hessian (dense).",
                theory="Both ≤ 2/η at a minimum that GD or SGD can stay in.",
            ),
            Stream(
                "stability_threshold",
                "scalar",
                description="2/η.",
                theory="The bound on tr H (SGD, batch 1) and on λ_max (GD).",
            ),
        )

    def setup(self) -> None:
        p = self.params
        if p["batch_size"] > p["n_samples"]:
            raise SpecError(f"batch_size {p['batch_size']} exceeds n_samples {p['n_samples']}")
        f64 = torch.float64
        self.gen = torch.Generator().manual_seed(self.seed)
        x = torch.randn(p["n_samples"], p["input_dim"], generator=self.gen, dtype=f64)
        u = torch.randn(p["input_dim"], generator=self.gen, dtype=f64)
        self.x = x.to(self.device)
        self.y = torch.sin(x @ u).unsqueeze(1).to(self.device)
        self.models = [tanh_mlp([p["input_dim"], p["hidden"], 1]).to(dtype=f64, device=self.device)]
        self.models.append(copy.deepcopy(self.models[0]))  # GD starts where SGD starts

    @staticmethod
    def loss_fn(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(1/2n) Σ (f − y)²."""
        return 0.5 * (outputs - targets).pow(2).mean()

    def train_step(self, step: int) -> Mapping[str, Any]:
        out: dict[str, Any] = {"stability_threshold": 2.0 / self.params["lr"]}
        if self.due("hessian", step):
            with self.timed("hessian"):
                tr, top = [], []
                for m in self.models:
                    h = HessianOperator(m, self.loss_fn, (self.x, self.y)).dense()
                    tr.append(float(torch.trace(h)))
                    top.append(float(torch.linalg.eigvalsh(h)[-1]))
            out["trace"], out["sharpness"] = np.array(tr), np.array(top)
        n, b, lr = self.params["n_samples"], self.params["batch_size"], self.params["lr"]
        idx = torch.randperm(n, generator=self.gen)[:b].to(self.device)
        losses = []
        for i, m in enumerate(self.models):
            m.zero_grad(set_to_none=True)
            resid = m(self.x) - self.y
            full = 0.5 * resid.pow(2).mean()
            # SGD: the per-example loss ½(f_i − y_i)² averaged over its batch; GD: the full loss.
            obj = 0.5 * resid[idx].pow(2).mean() if i == 0 else full
            obj.backward()
            with torch.no_grad():
                for prm in m.parameters():
                    assert prm.grad is not None  # every weight is in the loss
                    prm.add_(prm.grad, alpha=-lr)
            losses.append(full.detach())
        out["train_loss"] = torch.stack(losses)
        return out
