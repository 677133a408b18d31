"""m-coherence of per-example gradients (Chatterjee & Zielinski 2022).

For a sample of m examples with per-example loss gradients g_z,
``α = ||ḡ||² / mean_z ||g_z||²`` and the m-coherence is ``m·α``: about how many of the m
examples a small step along one example's gradient also helps. It is ``m`` when all
gradients are equal, ``1`` when they are mutually orthogonal with equal norms, and
below 1 when they are anti-aligned.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, grad, vmap


def m_coherence(grads: torch.Tensor) -> float:
    """m-coherence of a matrix of per-example gradients.

    Parameters
    ----------
    grads
        Shape ``(m, P)``: one flattened gradient per example.

    Returns
    -------
    float
        ``m · ||mean g||² / mean ||g||²``.
    """
    m = grads.shape[0]
    mean = grads.mean(0)
    return float(m * (mean @ mean) / (grads * grads).sum(1).mean())


def model_m_coherence(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, chunk: int = 128) -> float:
    """m-coherence of the cross-entropy gradients of ``model`` on the ``m = len(x)`` examples.

    Per-example gradients come from ``vmap(grad(...))``; they are reduced chunk by
    chunk to the running sum and the sum of squared norms, so memory stays at
    ``chunk × n_params`` floats (128 × 85k ≈ 44 MB for the digits MLP) instead of m × n_params.
    """
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss_one(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, p, (xi.unsqueeze(0),))
        return nn.functional.cross_entropy(logits, yi.unsqueeze(0))

    per_example = vmap(grad(loss_one), in_dims=(None, 0, 0))
    total = torch.zeros((), dtype=torch.float64, device=x.device)  # broadcasts to n_params
    sq = torch.zeros((), dtype=torch.float64, device=x.device)
    for i in range(0, len(x), chunk):
        g = per_example(params, x[i : i + chunk], y[i : i + chunk])
        flat = torch.cat([v.reshape(v.shape[0], -1) for v in g.values()], 1).double()
        s = flat.sum(0)
        total = total + s
        sq = sq + (flat * flat).sum()
    m = len(x)
    mean = total / m
    return float(m * (mean @ mean) / (sq / m))
