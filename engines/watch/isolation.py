"""Evaluate a user's model without touching it: copies of its state, the RNG put back.

A probe on someone else's training loop must leave that loop exactly as it found it.
``torch.func.functional_call`` runs the model's own ``forward`` on tensors we pass in, so a
probe forward pass works on detached copies of the parameters and buffers: BatchNorm
updates the running statistics of the copies, gradients land on the copies, and the
model's parameters, ``.grad`` fields and buffers are never written. Dropout and other
random layers draw from the global generators, so :func:`rng_preserved` saves and
restores them around every probe. The model's mode (``train()``/``eval()``) is left as
it is: a probe sees what the next training step would see.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call

from dynlab.engines.probes.hessian import HessianOperator

__all__ = ["Shadow", "hessian_operator", "rng_preserved", "state_copies"]


@contextmanager
def rng_preserved() -> Iterator[None]:
    """Restore the global RNG states (torch CPU and CUDA, numpy, ``random``) on exit."""
    cpu = torch.get_rng_state()
    # Reading CUDA generators would initialise CUDA in a CPU-only script: only when in use.
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    mps = None
    if hasattr(torch, "mps") and torch.backends.mps.is_available():
        mps = torch.mps.get_rng_state()
    np_state = np.random.get_state()
    py_state = random.getstate()
    try:
        yield
    finally:
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        if mps is not None:
            torch.mps.set_rng_state(mps)
        np.random.set_state(np_state)
        random.setstate(py_state)


def state_copies(
    model: nn.Module, *, requires_grad: bool = False
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Detached copies of ``model``'s parameters and buffers, on their own devices.

    With ``requires_grad`` the copies of trainable parameters are leaves that autograd
    differentiates (the Hessian probes); the model's own tensors are never part of the graph.
    """
    params = {
        n: p.detach().clone().requires_grad_(requires_grad and p.requires_grad)
        for n, p in model.named_parameters()
    }
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    return params, buffers


class Shadow:
    """Calls a model on copies of its state: ``Shadow(model)(x)`` is ``model(x)`` without side effects.

    Parameters
    ----------
    model
        The user's module (used for its ``forward`` and hooks only).
    requires_grad
        Make the trainable parameter copies differentiable leaves (see :attr:`trainable`).
    """

    def __init__(self, model: nn.Module, *, requires_grad: bool = False) -> None:
        self.model = model
        self.params, self.buffers = state_copies(model, requires_grad=requires_grad)

    @property
    def trainable(self) -> list[Tensor]:
        """The copies of the trainable parameters, in ``named_parameters`` order."""
        return [p for p in self.params.values() if p.requires_grad]

    def __call__(self, *args: Any) -> Any:
        return functional_call(self.model, (self.params, self.buffers), args)


def hessian_operator(model: nn.Module, loss_fn: Any, batch: tuple[Any, Any]) -> HessianOperator:
    """The engines' :class:`HessianOperator` on a :class:`Shadow` of ``model``.

    Its Lanczos, Hutchinson and SLQ methods then work on Hessian-vector products through
    ``functional_call``: double backprop on the copies, never on the model itself.
    Call it inside :func:`rng_preserved` when the model has random layers.
    """
    shadow = Shadow(model, requires_grad=True)
    if not shadow.trainable:
        raise ValueError("the model has no trainable parameters")
    return HessianOperator(shadow, loss_fn, batch, params=shadow.trainable)  # type: ignore[arg-type]
