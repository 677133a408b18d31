"""SGDP and AdamP (Heo et al., ICLR 2021), step-for-step compatible with ``adamp`` 0.3.0.

Both optimizers remove the *radial* component of the update of a weight that looks
scale-invariant (its gradient is nearly orthogonal to it), so the weight norm no longer
grows through momentum and the effective step size ``lr / ||w||^2`` does not collapse.

Written from the paper's math and the behaviour documented in ``SCIENCE.md`` §1; the
conventions of the reference package are reproduced on purpose so that recordings made
with either agree to float precision:

* only parameters with ``ndim > 1`` are ever projected (biases, BN vectors are not);
* the test is first per output channel (``w.view(out, -1)``, threshold
  ``delta / sqrt(fan_in)``), then for the whole tensor (threshold ``delta / sqrt(numel)``);
  the first view that passes is used;
* when a projection happens the weight decay is multiplied by ``wd_ratio``;
* SGDP's momentum buffer starts at zero and accumulates ``(1 - dampening) * grad``
  from the first step (unlike ``torch.optim.SGD``, which copies the first gradient);
* without Nesterov, SGDP projects its momentum buffer **in place** (the stored momentum
  is the projected one); with Nesterov, and always in AdamP, the buffers are untouched.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.optim import Optimizer

ParamsT = Iterable[Tensor] | Iterable[dict[str, Any]]


def _channel_rows(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1)


def _layer_row(x: Tensor) -> Tensor:
    return x.reshape(1, -1)


def project_radial(
    weight: Tensor, grad: Tensor, update: Tensor, delta: float, eps: float
) -> tuple[Tensor, bool]:
    """Remove the radial part of ``update`` if ``weight`` looks scale-invariant.

    The weight counts as scale-invariant when ``max |cos(grad, weight)|`` over the
    output channels is below ``delta / sqrt(fan_in)`` (then each channel's update is
    projected onto the tangent space of that channel), or failing that when the
    layer-wise cosine is below ``delta / sqrt(numel)`` (then the whole tensor is
    projected): ``update -= w_hat * <w_hat, update>`` with ``w_hat = w / (||w|| + eps)``.

    Parameters
    ----------
    weight
        The parameter (``ndim > 1``); read only.
    grad
        Its raw gradient; the cosine test always uses it, whatever ``update`` is.
    update
        The step direction; **modified in place** when projected (SGDP without
        Nesterov relies on this to project its momentum buffer).
    delta
        Threshold constant (paper default 0.1).
    eps
        Added to norms, as in the reference implementation.

    Returns
    -------
    tuple
        ``(update, projected)``.
    """
    # Trailing singleton dims so a per-row (channel) norm broadcasts over the tensor.
    expand = (-1,) + (1,) * (weight.ndim - 1)
    for view in (_channel_rows, _layer_row):
        w_rows = view(weight)
        cos = F.cosine_similarity(view(grad), w_rows, dim=1, eps=eps).abs()
        if cos.max() < delta / math.sqrt(w_rows.shape[1]):
            w_hat = weight / w_rows.norm(dim=1).view(expand).add(eps)
            radial = view(w_hat * update).sum(dim=1).view(expand)
            update.sub_(w_hat * radial)
            return update, True
    return update, False


class SGDP(Optimizer):
    """SGD with momentum and projection of the radial update (Heo et al., 2021).

    Update, for each parameter ``w`` with gradient ``g``::

        buf  <- momentum * buf + (1 - dampening) * g          (buf starts at 0)
        d    <- g + momentum * buf   if nesterov   else   buf  (same tensor as buf!)
        d    <- Pi_w(d)  if ndim(w) > 1 and w looks scale-invariant (see project_radial)
        w    <- w * (1 - lr * weight_decay * r / (1 - momentum))   (r = wd_ratio if projected else 1)
        w    <- w - lr * d

    Buffer convention: without Nesterov the projection is applied to the momentum
    buffer itself, so the *stored* momentum is projected every step. This matches the
    ``adamp`` 0.3.0 package, not the paper's Algorithm 1 (which keeps the raw buffer
    and projects only the step); with Nesterov the buffer is never projected.

    Parameters
    ----------
    params
        Parameters or parameter groups.
    lr
        Learning rate.
    momentum, dampening, nesterov
        Heavy-ball momentum as above.
    weight_decay
        Decoupled decay, scaled by ``1 / (1 - momentum)`` (and by ``wd_ratio`` when
        projected), as in the reference implementation.
    eps
        Stabiliser added to norms in the projection.
    delta
        Cosine threshold constant of the scale-invariance test.
    wd_ratio
        Weight-decay multiplier for projected parameters.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
        eps: float = 1e-8,
        delta: float = 0.1,
        wd_ratio: float = 0.1,
    ) -> None:
        if lr < 0:
            raise ValueError(f"invalid learning rate {lr}")
        if weight_decay > 0 and momentum >= 1:
            raise ValueError("weight decay is scaled by 1/(1 - momentum): momentum must be < 1")
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            eps=eps,
            delta=delta,
            wd_ratio=wd_ratio,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Perform one update; ``closure`` re-evaluates the loss (optional)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            momentum = group["momentum"]
            lr = group["lr"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if "momentum" not in state:
                    state["momentum"] = torch.zeros_like(p)
                buf = state["momentum"]
                buf.mul_(momentum).add_(grad, alpha=1 - group["dampening"])
                # Without Nesterov `d` aliases the buffer: the projection below is then
                # written into the stored momentum (the package's convention).
                d = grad + momentum * buf if group["nesterov"] else buf
                ratio = 1.0
                if p.ndim > 1:
                    d, projected = project_radial(p, grad, d, group["delta"], group["eps"])
                    if projected:
                        ratio = group["wd_ratio"]
                if group["weight_decay"] > 0:
                    p.mul_(1 - lr * group["weight_decay"] * ratio / (1 - momentum))
                p.add_(d, alpha=-lr)
        return loss


class AdamP(Optimizer):
    """Adam with projection of the radial update and decoupled weight decay (Heo et al., 2021).

    Update, for each parameter ``w`` with gradient ``g`` at step ``t`` (from 1)::

        m <- b1 m + (1 - b1) g ;  v <- b2 v + (1 - b2) g^2
        denom = sqrt(v) / sqrt(1 - b2^t) + eps
        u = (b1 m + (1 - b1) g) / denom   if nesterov   else   m / denom
        u <- Pi_w(u)  if ndim(w) > 1 and w looks scale-invariant (cosine test on g, not u)
        w <- w * (1 - lr * weight_decay * r)         (r = wd_ratio if projected else 1)
        w <- w - lr / (1 - b1^t) * u

    The moment buffers ``m`` and ``v`` are never projected. Arguments and defaults are
    those of ``adamp.AdamP`` 0.3.0.

    Parameters
    ----------
    params
        Parameters or parameter groups.
    lr, betas, eps
        As in Adam.
    weight_decay
        Decoupled (AdamW-style) decay, scaled by ``wd_ratio`` when projected.
    delta
        Cosine threshold constant of the scale-invariance test.
    wd_ratio
        Weight-decay multiplier for projected parameters.
    nesterov
        Use the Nesterov form of the first moment in the direction.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        delta: float = 0.1,
        wd_ratio: float = 0.1,
        nesterov: bool = False,
    ) -> None:
        if lr < 0:
            raise ValueError(f"invalid learning rate {lr}")
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"invalid betas {betas}")
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            delta=delta,
            wd_ratio=wd_ratio,
            nesterov=nesterov,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Perform one update; ``closure`` re-evaluates the loss (optional)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr = group["lr"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if "step" not in state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                m, v = state["exp_avg"], state["exp_avg_sq"]
                state["step"] += 1
                t = state["step"]
                m.mul_(beta1).add_(grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denom = (v.sqrt() / math.sqrt(1 - beta2**t)).add_(group["eps"])
                if group["nesterov"]:
                    u = (beta1 * m + (1 - beta1) * grad) / denom
                else:
                    u = m / denom  # a fresh tensor: projecting it leaves m alone
                ratio = 1.0
                if p.ndim > 1:
                    u, projected = project_radial(p, grad, u, group["delta"], group["eps"])
                    if projected:
                        ratio = group["wd_ratio"]
                if group["weight_decay"] > 0:
                    p.mul_(1 - lr * group["weight_decay"] * ratio)
                p.add_(u, alpha=-lr / (1 - beta1**t))
        return loss


__all__ = ["SGDP", "AdamP", "project_radial"]
