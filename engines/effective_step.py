"""Effective step-size decay on scale-invariant weights: momentum vs SGDP/AdamP (SCIENCE.md §1c).

Five copies of one BatchNorm MLP (same initial weights) train in lockstep on the same
minibatches, one per optimizer. The first layer feeds a BatchNorm without affine
parameters, so the loss is invariant to its scale: its gradient is orthogonal to it,
every step can only grow ``||W1||``, and the effective step size ``lr / ||W1||^2``
decays. Momentum makes the growth much faster; SGDP/AdamP project the radial part of
the update away and keep the norm (and the effective step) near the momentum-free level.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from dynlab.engines.base import Engine
from dynlab.engines.data import Minibatches
from dynlab.engines.optim import SGDP, AdamP
from dynlab.engines.spec import EngineSpec, Param, SpecError, Stream

OPTIMIZERS: tuple[str, ...] = ("sgd", "sgdm", "sgdp", "adam", "adamp")
_SGD_FAMILY = ("sgd", "sgdm", "sgdp")
_ADAM_FAMILY = ("adam", "adamp")
_DIM, _CLASSES, _HIDDEN = 20, 4, 64


def _vector(name: str, units: str, description: str, theory: str, log: bool = False) -> Stream:
    return Stream(
        name,
        "vector",
        (len(OPTIMIZERS),),
        units=units,
        description=description,
        theory=theory,
        labels=OPTIMIZERS,
        log_scale=log,
    )


SPEC = EngineSpec(
    name="effective-step-size",
    title="Effective step size: momentum vs SGDP/AdamP",
    description=(
        "A BatchNorm MLP with a scale-invariant first layer trained in lockstep by SGD, "
        "SGD+momentum, SGDP, Adam and AdamP; watch ||W1|| grow and lr/||W1||^2 decay."
    ),
    paper=(
        "Heo et al., AdamP: Slowing Down the Slowdown for Momentum Optimizers on "
        "Scale-invariant Weights, ICLR 2021"
    ),
    params=(
        Param(
            "lr",
            "float",
            0.1,
            1e-5,
            10.0,
            unit="",
            live=True,
            log=True,
            help="Learning rate of sgd, sgdm and sgdp.",
        ),
        Param(
            "adam_lr", "float", 3e-3, 1e-6, 1.0, live=True, log=True, help="Learning rate of adam and adamp."
        ),
        Param(
            "momentum",
            "float",
            0.9,
            0.0,
            0.999,
            live=True,
            help="Heavy-ball momentum of sgdm and sgdp (sgd always has none).",
        ),
        Param("nesterov", "bool", False, live=True, help="Nesterov momentum for sgdm and sgdp."),
        Param(
            "beta1",
            "float",
            0.9,
            0.0,
            0.999,
            live=True,
            help="First-moment decay of adam and adamp (their momentum).",
        ),
        Param(
            "beta2", "float", 0.999, 0.0, 0.99999, live=True, help="Second-moment decay of adam and adamp."
        ),
        Param(
            "weight_decay",
            "float",
            0.0,
            0.0,
            0.1,
            live=True,
            help="Weight decay for all five (L2 for sgd/sgdm, decoupled for adam = AdamW, "
            "the papers' rule for sgdp/adamp).",
        ),
        Param(
            "delta",
            "float",
            0.1,
            0.0,
            1.0,
            live=True,
            help="SGDP/AdamP cosine threshold: project when |cos(grad, w)| < delta/sqrt(dim).",
        ),
        Param(
            "wd_ratio",
            "float",
            0.1,
            0.0,
            1.0,
            live=True,
            help="SGDP/AdamP weight-decay multiplier on projected weights.",
        ),
        Param(
            "batch_size",
            "int",
            128,
            8,
            2048,
            help="Minibatch size (the same batches feed all five optimizers).",
        ),
        Param(
            "init_scale",
            "float",
            0.2,
            0.01,
            10.0,
            log=True,
            help="Factor on the first layer's default init (0.2 gives ||W1|| ≈ 0.9).",
        ),
        Param(
            "class_sep",
            "float",
            1.0,
            0.0,
            10.0,
            help="Scale of the Gaussian-mixture class means (noise has unit variance).",
        ),
    ),
    streams=(
        _vector(
            "weight_norm",
            "",
            "||W1||, the Frobenius norm of the scale-invariant first-layer weight.",
            "Plain SGD: ||w||^2 grows by lr^2 ||g||^2 per step. Momentum adds 2 lr^2 sum "
            "beta^(t-k) ||p_k||^2, so it grows several times faster; SGDP/AdamP remove the "
            "radial step and stay near the momentum-free curve.",
        ),
        _vector(
            "effective_step_size",
            "1/norm²",
            "lr / ||W1||^2 with each optimizer's own lr (adam_lr for adam/adamp).",
            "The step the direction W1/||W1|| actually takes. It decays as the norm grows: "
            "prematurely under momentum, far less with SGDP/AdamP. (For Adam the angular "
            "step scales like lr/||W1|| rather than lr/||W1||^2; see angular_update.)",
            log=True,
        ),
        _vector(
            "angular_update",
            "rad",
            "Angle W1 turned through in this update.",
            "The measured effective step: about lr ||grad_hat|| / ||W1||^2 for SGD; "
            "it collapses when the norm grows.",
            log=True,
        ),
        _vector(
            "train_loss",
            "nats",
            "Cross-entropy on the minibatch of this update (same batch for all).",
            "All five reach low loss; the slowed-down optimizers get there later or stall.",
        ),
        _vector(
            "grad_cosine",
            "",
            "cos(W1, dL/dW1) before the update.",
            "Zero up to float round-off: a scale-invariant weight has an orthogonal gradient "
            "(Lemma 2.1), so only the update's momentum part can move the norm radially.",
        ),
        _vector(
            "weight_norm_layer2",
            "",
            "||W2||, the second (also scale-invariant) hidden weight.",
            "Same mechanism as ||W1||: grows fastest under momentum.",
        ),
        _vector(
            "test_accuracy",
            "",
            "Accuracy on 1024 held-out points (BatchNorm in eval mode).",
            "Comparable for all five on this easy task; a collapsed effective step slows learning.",
        ),
    ),
    probes={"eval": 10},
    version="1",
)


class EffectiveStepEngine(Engine):
    """SGD / SGD+momentum / SGDP / Adam / AdamP in lockstep on one scale-invariant MLP."""

    spec = SPEC

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        p = self.params
        dev = self.device
        gen = torch.Generator().manual_seed(self.seed)
        means = p["class_sep"] * torch.randn(_CLASSES, _DIM, generator=gen)

        def sample(n: int) -> tuple[Tensor, Tensor]:
            y = torch.randint(0, _CLASSES, (n,), generator=gen)
            return means[y] + torch.randn(n, _DIM, generator=gen), y

        x, y = sample(2048)
        xt, yt = sample(1024)
        self._x, self._y = x.to(dev), y.to(dev)
        self._xt, self._yt = xt.to(dev), yt.to(dev)
        # A fresh shuffle per epoch; the tail shorter than a batch is dropped.
        self._batches = Minibatches(x.shape[0], torch.Generator().manual_seed(self.seed + 1), drop_last=True)

        init_gen = torch.Generator().manual_seed(self.seed + 2)
        base = nn.Sequential(
            nn.Linear(_DIM, _HIDDEN, bias=False),
            nn.BatchNorm1d(_HIDDEN, affine=False),
            nn.ReLU(),
            nn.Linear(_HIDDEN, _HIDDEN, bias=False),
            nn.BatchNorm1d(_HIDDEN, affine=False),
            nn.ReLU(),
            nn.Linear(_HIDDEN, _CLASSES),
        )
        with torch.no_grad():
            for m in base:
                if isinstance(m, nn.Linear):  # PyTorch's default init, from our generator
                    bound = 1 / math.sqrt(m.in_features)
                    m.weight.uniform_(-bound, bound, generator=init_gen)
                    if m.bias is not None:
                        m.bias.uniform_(-bound, bound, generator=init_gen)
            _linear(base, 0).weight.mul_(p["init_scale"])
        base.to(dev)
        self.models: dict[str, nn.Sequential] = {k: copy.deepcopy(base) for k in OPTIMIZERS}
        # In the order of OPTIMIZERS; ``optimizer(kind)`` finds one by name.
        self.optimizers = [self._make_optimizer(k, self.models[k].parameters()) for k in OPTIMIZERS]

    def optimizer(self, kind: str) -> torch.optim.Optimizer:
        """The optimizer called ``kind`` (one of ``OPTIMIZERS``)."""
        return self.optimizers[OPTIMIZERS.index(kind)]

    def _make_optimizer(self, kind: str, params: Any) -> torch.optim.Optimizer:
        p = self.params
        wd = p["weight_decay"]
        if kind == "sgd":
            return torch.optim.SGD(params, lr=p["lr"], momentum=0.0, weight_decay=wd)
        opt: torch.optim.Optimizer
        if kind == "sgdm":
            opt = torch.optim.SGD(params, lr=p["lr"], momentum=p["momentum"], weight_decay=wd)
        elif kind == "sgdp":
            opt = SGDP(
                params,
                lr=p["lr"],
                momentum=p["momentum"],
                weight_decay=wd,
                delta=p["delta"],
                wd_ratio=p["wd_ratio"],
            )
        elif kind == "adam":
            # AdamW: decoupled decay, the same kind AdamP uses, so wd > 0 compares like with like.
            return torch.optim.AdamW(params, lr=p["adam_lr"], betas=(p["beta1"], p["beta2"]), weight_decay=wd)
        else:
            return AdamP(
                params,
                lr=p["adam_lr"],
                betas=(p["beta1"], p["beta2"]),
                weight_decay=wd,
                delta=p["delta"],
                wd_ratio=p["wd_ratio"],
            )
        # torch's SGD refuses nesterov=True with momentum 0 at construction, not in step().
        opt.param_groups[0]["nesterov"] = p["nesterov"]
        return opt

    # ------------------------------------------------------------------ live changes
    def on_set(self, name: str, new: Any, old: Any) -> None:
        """Push a live change into the optimizers' param groups (read at their next step).

        Replaces the base class's push by name, which would be wrong here: ``lr`` and
        ``adam_lr`` both land in a group's ``lr``, ``beta1``/``beta2`` in ``betas``, and
        plain SGD keeps momentum 0.
        """
        if name == "momentum" and new > 0.99 and self.params["weight_decay"] > 0:
            # SGDP divides its decay by (1 - momentum); keep the decay factor sane.
            raise SpecError("momentum above 0.99 with weight decay would make SGDP's decay explode")
        targets: dict[str, tuple[tuple[str, ...], str, Any]] = {
            "lr": (_SGD_FAMILY, "lr", new),
            "adam_lr": (_ADAM_FAMILY, "lr", new),
            "momentum": (("sgdm", "sgdp"), "momentum", new),
            "nesterov": (("sgdm", "sgdp"), "nesterov", new),
            "beta1": (_ADAM_FAMILY, "betas", (new, self.params["beta2"])),
            "beta2": (_ADAM_FAMILY, "betas", (self.params["beta1"], new)),
            "weight_decay": (OPTIMIZERS, "weight_decay", new),
            "delta": (("sgdp", "adamp"), "delta", new),
            "wd_ratio": (("sgdp", "adamp"), "wd_ratio", new),
        }
        if name not in targets:
            return
        kinds, key, value = targets[name]
        for k in kinds:
            for group in self.optimizer(k).param_groups:
                group[key] = value

    # ------------------------------------------------------------------ training
    def train_step(self, step: int) -> Mapping[str, Any]:
        idx = self._batches.next_batch(self.params["batch_size"], self.device)
        x, y = self._x[idx], self._y[idx]
        rows: dict[str, list[Tensor]] = {
            k: []
            for k in (
                "weight_norm",
                "weight_norm_layer2",
                "train_loss",
                "grad_cosine",
                "angular_update",
                "effective_step_size",
            )
        }
        for k, opt in zip(OPTIMIZERS, self.optimizers):
            model = self.models[k]
            model.train()
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            w1 = _linear(model, 0).weight
            g1 = w1.grad
            assert g1 is not None  # W1 is in the loss
            with torch.no_grad():
                before = w1.detach().clone()
                norm = before.norm()
                cos = (before * g1).sum() / (norm * g1.norm()).clamp_min(1e-30)
                opt.step()
                # Chord between unit vectors, turned into an angle (acos loses precision near 0).
                chord = (w1 / w1.norm() - before / norm).norm()
                angle = 2 * torch.asin((chord / 2).clamp(max=1.0))
            lr = opt.param_groups[0]["lr"]
            rows["weight_norm"].append(norm)
            rows["weight_norm_layer2"].append(_linear(model, 3).weight.detach().norm())
            rows["train_loss"].append(loss.detach())
            rows["grad_cosine"].append(cos)
            rows["angular_update"].append(angle)
            rows["effective_step_size"].append(lr / norm**2)
        out: dict[str, Any] = {name: torch.stack(vals) for name, vals in rows.items()}
        if self.due("eval", step):
            with self.timed("eval"):
                out["test_accuracy"] = self._test_accuracy()
        return out

    @torch.no_grad()
    def _test_accuracy(self) -> Tensor:
        accs = []
        for k in OPTIMIZERS:
            model = self.models[k]
            model.eval()
            accs.append((model(self._xt).argmax(1) == self._yt).float().mean())
            model.train()
        return torch.stack(accs)

    def weight_norms(self) -> dict[str, float]:
        """Current ||W1|| per optimizer (after all updates so far), for tests and notebooks."""
        return {k: float(_linear(self.models[k], 0).weight.detach().norm()) for k in OPTIMIZERS}


def _linear(model: nn.Sequential, i: int) -> nn.Linear:
    """Layer ``i`` of the MLP, which is a linear layer (typed, for the checker)."""
    layer = model[i]
    assert isinstance(layer, nn.Linear)
    return layer


__all__ = ["EffectiveStepEngine", "OPTIMIZERS", "SPEC"]
