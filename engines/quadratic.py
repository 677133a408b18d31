"""Gradient descent on a quadratic: the 2/λ stability threshold in its simplest form.

L(w) = ½ Σ_i λ_i w_i² with λ spread log-uniformly in [λ_min, λ_max]. GD multiplies
mode i by (1 − η λ_i) each step, so it converges iff η < 2/λ_max and diverges
otherwise — the classical fact the edge-of-stability papers start from. Small and
exact, it is also the lab's fastest engine (tests, demos of live edits, divergence).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from dynlab.engines.base import Engine
from dynlab.engines.spec import EngineSpec, Param, Stream


class Quadratic(Engine):
    spec = EngineSpec(
        name="quadratic",
        title="Gradient descent on a quadratic",
        description="GD on ½Σλᵢwᵢ²: converges for lr < 2/λ_max, oscillates and diverges above.",
        paper="Textbook (see Cohen et al., Gradient Descent on Neural Networks Typically Occurs at the Edge of Stability, ICLR 2021, §2)",
        params=(
            Param("lr", "float", 0.1, low=0.0, high=10.0, live=True, help="GD step size η", log=True),
            Param("dim", "int", 16, low=1, high=100_000, help="number of coordinates"),
            Param("lambda_max", "float", 10.0, low=1e-6, high=1e6, help="largest curvature"),
            Param("lambda_min", "float", 0.1, low=1e-9, high=1e6, help="smallest curvature"),
        ),
        streams=(
            Stream(
                "train_loss",
                "scalar",
                units="",
                description="L(w_t) = ½Σλᵢwᵢ².",
                theory="Decays geometrically when lr < 2/λ_max; grows when lr > 2/λ_max.",
                log_scale=True,
            ),
            Stream("weight_norm", "scalar", description="‖w_t‖."),
            Stream("sharpness", "scalar", description="λ_max, the top Hessian eigenvalue (constant here)."),
            Stream("stability_threshold", "scalar", description="2/lr: GD is stable while sharpness < 2/lr."),
            Stream(
                "mode_factor",
                "vector",
                (3,),
                description="|1 − lr·λ| for the stiffest, middle and flattest modes.",
                theory="A mode shrinks iff its factor is < 1.",
                labels=("stiff", "middle", "flat"),
            ),
        ),
    )

    def setup(self) -> None:
        p = self.params
        if p["lambda_min"] > p["lambda_max"]:
            from dynlab.engines.spec import SpecError

            raise SpecError(f"lambda_min ({p['lambda_min']}) must not exceed lambda_max ({p['lambda_max']})")
        g = torch.Generator().manual_seed(self.seed)
        d = p["dim"]
        self.lam = torch.logspace(
            np.log10(p["lambda_min"]), np.log10(p["lambda_max"]), d, dtype=torch.float64
        )
        self.w = torch.randn(d, generator=g, dtype=torch.float64).to(self.device)
        self.lam = self.lam.to(self.device)

    def train_step(self, step: int) -> Mapping[str, Any]:
        lr = self.params["lr"]
        lam = self.lam
        loss = 0.5 * (lam * self.w**2).sum()
        out = {
            "train_loss": loss,
            "weight_norm": self.w.norm(),
            "sharpness": lam[-1],
            "stability_threshold": 2.0 / lr if lr > 0 else np.inf,
            "mode_factor": (1 - lr * lam[[-1, len(lam) // 2, 0]]).abs(),
        }
        self.w = self.w - lr * lam * self.w
        return out
