"""Locality and weight sharing: CNN vs LCN vs FCN sample complexity (Lahoti et al., ICLR 2024).

Dynamic Signal Distribution (DSD): an "image" is k patches of dimension d, all filled
with N(0, σ²) noise; one patch, chosen uniformly at random, also carries the signal
``y·w*`` (a fixed unit vector, label ``y = ±1``). The label is the sign of the signal
wherever it appears. Three one-hidden-layer ReLU networks with the same number of
hidden units per patch learn it:

* CNN: ``Σ_j Σ_f a_f relu(w_f·x_j + b_f)`` — filters local *and* shared across patches;
* LCN: ``Σ_j Σ_f a_{jf} relu(w_{jf}·x_j + b_{jf})`` — local filters, one set per patch;
* FCN: ``Σ_u a_u relu(w_u·x + b_u)`` with k·width units seeing the whole image.

The paper proves (for equivariant algorithms such as GD) that the samples needed scale
as ~d (CNN, up to k + d and logs), ~kd (LCN) and ~k²d (FCN). The engine sweeps the
training-set size over a geometric grid: one engine step trains the three networks on
one fresh training set of one size (full-batch Adam) and scores them on a fixed test
set. After the first pass over the grid the sweep repeats with fresh data and
networks, and the heat map shows the running mean over repeats.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from dynlab.engines.base import Engine
from dynlab.engines.spec import EngineSpec, Param, Stream

ARCHS = ("cnn", "lcn", "fcn")


def dsd_sample(
    n: int, k: int, d: int, noise_std: float, w_star: torch.Tensor, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` DSD examples: images ``(n, k, d)`` and labels ``±1`` ``(n,)``."""
    y = torch.randint(0, 2, (n,), generator=gen).float() * 2 - 1
    x = noise_std * torch.randn(n, k, d, generator=gen)
    where = torch.randint(0, k, (n,), generator=gen)
    x[torch.arange(n), where] += y[:, None] * w_star
    return x, y


class PatchNet(nn.Module):
    """One-hidden-layer ReLU network over k patches: ``cnn``, ``lcn`` or ``fcn``."""

    def __init__(self, arch: str, k: int, d: int, width: int, gen: torch.Generator) -> None:
        super().__init__()
        self.arch = arch
        shape_w: tuple[int, ...]
        shape_b: tuple[int, ...]
        if arch == "cnn":
            shape_w, shape_b, fan_in = (width, d), (width,), d
        elif arch == "lcn":
            shape_w, shape_b, fan_in = (k, width, d), (k, width), d
        elif arch == "fcn":
            shape_w, shape_b, fan_in = (k * width, k * d), (k * width,), k * d
        else:
            raise ValueError(f"unknown architecture {arch!r}")
        self.w = nn.Parameter(torch.randn(shape_w, generator=gen) / fan_in**0.5)
        self.b = nn.Parameter(torch.zeros(shape_b))
        # Output weights with balanced signs (half +, half −, random magnitudes): the net
        # has no output bias, so with all-equal signs it can only say one class until Adam
        # drags a weight through zero; with width 4 that happens to 1 init in 8 and the fit
        # often stalls at chance. Balancing removes that failure without changing the scale.
        a = torch.randn(shape_b, generator=gen).abs() / width**0.5
        sign = torch.ones(shape_b[-1])
        sign[1::2] = -1.0
        self.a = nn.Parameter(a * sign)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.arch == "cnn":
            h = torch.relu(torch.einsum("nkd,fd->nkf", x, self.w) + self.b)
            return h.sum(1) @ self.a
        if self.arch == "lcn":
            h = torch.relu(torch.einsum("nkd,kfd->nkf", x, self.w) + self.b)
            return (h * self.a).sum((1, 2))
        return torch.relu(x.flatten(1) @ self.w.T + self.b) @ self.a


class LocalitySampleComplexity(Engine):
    """A sweep over training-set sizes of CNN, LCN and FCN on the DSD task."""

    spec = EngineSpec(
        name="locality-sample-complexity",
        title="Locality and weight sharing: samples needed by CNN, LCN and FCN",
        description="On a k-patch task with a signal in one random patch, CNN < LCN < FCN in samples needed.",
        paper=(
            "Lahoti, Karp, Winston, Singh & Li, Role of Locality and Weight Sharing in Image-Based "
            "Tasks: A Sample Complexity Separation between CNNs, LCNs, and FCNs, ICLR 2024"
        ),
        params=(
            Param("k", "int", 8, 2, 32, help="Number of patches per image."),
            Param("d", "int", 8, 2, 64, help="Dimension of a patch (and of the signal w*)."),
            Param(
                "noise_std", "float", 0.2, 0.0, 2.0, help="Std σ of the Gaussian noise in every coordinate."
            ),
            Param("width", "int", 4, 1, 64, help="Hidden ReLU units per patch (the FCN gets k·width units)."),
            Param(
                "lr",
                "float",
                0.02,
                1e-4,
                0.5,
                live=True,
                log=True,
                help="Adam learning rate of each fit (read per fit).",
            ),
            Param(
                "train_steps",
                "int",
                300,
                10,
                5000,
                live=True,
                help="Full-batch Adam steps of each fit (read per fit).",
            ),
            Param(
                "target_error",
                "float",
                0.03,
                0.0,
                0.5,
                live=True,
                help="Test error that counts as learned; samples_needed is the first grid size reaching it.",
            ),
            Param("min_samples", "int", 32, 1, 100_000, help="Smallest training-set size of the grid."),
            Param(
                "max_samples",
                "int",
                16384,
                2,
                1_000_000,
                help="Largest training-set size (grid doubles up to it).",
            ),
            Param("test_size", "int", 4000, 100, 100_000, help="Fixed test examples."),
        ),
        streams=(),
    )

    @property
    def grid(self) -> list[int]:
        """Training-set sizes: min_samples, doubling, up to max_samples."""
        lo, hi = self.params["min_samples"], self.params["max_samples"]
        out = [lo]
        while out[-1] * 2 <= hi:
            out.append(out[-1] * 2)
        return out

    def declared_streams(self) -> tuple[Stream, ...]:
        grid = self.grid
        k, d = self.params["k"], self.params["d"]
        return (
            Stream(
                "samples_needed",
                "vector",
                (3,),
                units="samples",
                labels=ARCHS,
                description=(
                    "Smallest training-set size of the grid whose mean test error (over the repeats so "
                    "far) is at most target_error; NaN until some size reaches it."
                ),
                theory=(
                    f"CNN ~ d (k + d with GD), LCN ~ kd, FCN ~ k²d up to logs: here d = {d}, kd = {k * d}, "
                    f"k²d = {k * k * d}, so CNN < LCN < FCN."
                ),
            ),
            Stream(
                "test_error",
                "heatmap",
                (3, len(grid)),
                rows=ARCHS,
                cols=tuple(str(n) for n in grid),
                description="Mean test error of each architecture (rows) at each training-set size (columns); NaN before the size is first run.",
                theory="Each row falls with n; the CNN row first, then the LCN, then the FCN.",
            ),
            Stream(
                "last_error",
                "vector",
                (3,),
                labels=ARCHS,
                description="Test error of the three networks fitted in this step (one size, one repeat).",
                theory="0.5 is chance; the Bayes error of the task is near 0 for small σ.",
            ),
            Stream(
                "train_loss",
                "vector",
                (3,),
                labels=ARCHS,
                description="Final logistic training loss of this step's fits.",
                theory="Near 0 for small n (memorisation) for every architecture; generalisation is what differs.",
            ),
            Stream(
                "sample_size",
                "scalar",
                units="samples",
                description="Training-set size fitted in this step.",
            ),
        )

    def setup(self) -> None:
        k, d = self.params["k"], self.params["d"]
        self._gen = torch.Generator().manual_seed(self.seed)
        w = torch.randn(d, generator=self._gen)
        self.w_star = w / w.norm()
        self.x_test, self.y_test = dsd_sample(
            self.params["test_size"], k, d, self.params["noise_std"], self.w_star, self._gen
        )
        g = len(self.grid)
        self.err_sum = np.zeros((3, g))
        self.err_count = np.zeros(g)

    def fit(self, arch: str, x: torch.Tensor, y: torch.Tensor) -> tuple[PatchNet, float]:
        """Train one network by full-batch Adam on the logistic loss; return it and its final loss."""
        k, d = self.params["k"], self.params["d"]
        net = PatchNet(arch, k, d, self.params["width"], self._gen).to(self.device)
        opt = torch.optim.Adam(net.parameters(), lr=self.params["lr"])
        for _ in range(self.params["train_steps"]):
            loss = nn.functional.softplus(-y * net(x)).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return net, float(loss.detach())

    def mean_errors(self) -> np.ndarray:
        """Running mean test error, shape (3, grid), NaN where a size has not run yet."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.err_count > 0, self.err_sum / np.maximum(self.err_count, 1), np.nan)

    def samples_needed(self) -> np.ndarray:
        """First grid size whose mean error is ≤ target_error, per architecture (NaN if none)."""
        mean = self.mean_errors()
        out = np.full(3, np.nan)
        for a in range(3):
            hit = np.nonzero(mean[a] <= self.params["target_error"])[0]
            if len(hit):
                out[a] = self.grid[hit[0]]
        return out

    def train_step(self, step: int) -> dict[str, Any]:
        grid = self.grid
        i = step % len(grid)
        n = grid[i]
        k, d = self.params["k"], self.params["d"]
        x, y = dsd_sample(n, k, d, self.params["noise_std"], self.w_star, self._gen)
        x, y = x.to(self.device), y.to(self.device)
        xt, yt = self.x_test.to(self.device), self.y_test.to(self.device)
        errs, losses = np.zeros(3), np.zeros(3)
        for a, arch in enumerate(ARCHS):
            net, losses[a] = self.fit(arch, x, y)
            with torch.no_grad():
                errs[a] = float((torch.sign(net(xt)) != yt).float().mean())
        self.err_sum[:, i] += errs
        self.err_count[i] += 1
        return {
            "samples_needed": self.samples_needed(),
            "test_error": self.mean_errors(),
            "last_error": errs,
            "train_loss": losses,
            "sample_size": float(n),
        }
