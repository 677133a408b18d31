"""The expensive probes a watched loop runs at its own cadence, by name.

Each runs on copies of the model's state (:mod:`dynlab.engines.watch.isolation`) with the
global RNG put back afterwards, so it never changes the training it measures:

``hessian_top``
    The ``k`` largest Hessian eigenvalues of ``loss_fn`` on the probe batch (Lanczos).
``hessian_trace``
    Hutchinson's estimate of the Hessian's trace.
``hessian_density``
    The Hessian's eigenvalue density by stochastic Lanczos quadrature (a histogram).
``neural_collapse``
    NC1-NC4 of the penultimate features (a forward hook) and the last linear layer.
``equivariance_error``
    ``E||f(g x) - g' f(x)|| / E||f(x)||`` for each pair of transforms ``(g, g')`` given.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from dynlab.engines.probes.collapse import nc_metrics
from dynlab.engines.probes.equivariance import relative_error
from dynlab.engines.probes.hessian import HessianOperator
from dynlab.engines.spec import SpecError, Stream, suggest
from dynlab.engines.watch.isolation import Shadow, hessian_operator, rng_preserved

__all__ = ["PROBES", "Probe", "ProbeContext", "make_probe"]

Transform = Callable[[Tensor], Tensor]


@dataclass
class ProbeContext:
    """What the named probes may use: the user's model and the arguments of ``watch()``."""

    model: nn.Module
    loss_fn: Callable[[Any, Any], Tensor] | None = None
    probe_batch: tuple[Any, Any] | None = None
    features: str | None = None
    classifier: str | None = None
    transforms: Mapping[str, tuple[Transform, Transform]] = field(default_factory=dict)
    _hessian: HessianOperator | None = None

    def hessian(self) -> HessianOperator:
        """One Hessian operator per step, shared by the Hessian probes due at that step."""
        if self._hessian is None:
            assert self.loss_fn is not None and self.probe_batch is not None
            self._hessian = hessian_operator(self.model, self.loss_fn, self.probe_batch)
        return self._hessian

    def new_step(self) -> None:
        self._hessian = None


class Probe:
    """A measurement run every ``every`` steps; ``run`` returns ``{stream: array}``."""

    name = ""
    summary = ""
    needs: tuple[str, ...] = ()
    options: tuple[str, ...] = ()

    def __init__(self, ctx: ProbeContext, every: int) -> None:
        self.ctx, self.every = ctx, int(every)

    def streams(self) -> tuple[Stream, ...]:
        raise NotImplementedError

    def run(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def measure(self) -> dict[str, np.ndarray]:
        """:meth:`run` with the global RNG restored afterwards."""
        with rng_preserved():
            return self.run()


class HessianTop(Probe):
    name = "hessian_top"
    summary = "k largest Hessian eigenvalues (Lanczos); needs loss_fn and probe_batch"
    needs = ("loss_fn", "probe_batch")
    options = ("k", "tol", "max_products")

    def __init__(
        self, ctx: ProbeContext, every: int, k: int = 5, tol: float = 1e-6, max_products: int | None = None
    ) -> None:
        super().__init__(ctx, every)
        self.k, self.tol, self.max_products = int(k), float(tol), max_products

    def streams(self) -> tuple[Stream, ...]:
        return (
            Stream(
                "hessian_top",
                "vector",
                (self.k,),
                description=f"The {self.k} largest eigenvalues of the loss Hessian on the probe batch.",
                theory="Sharpness λ1 rises until about 2/lr under full-batch GD (edge of stability).",
                labels=tuple(f"λ{i + 1}" for i in range(self.k)),
            ),
        )

    def run(self) -> dict[str, np.ndarray]:
        op = self.ctx.hessian()
        return {"hessian_top": op.top_eigenvalues(min(self.k, op.dim), steps=self.max_products, tol=self.tol)}


class HessianTrace(Probe):
    name = "hessian_trace"
    summary = "Hutchinson estimate of tr(H); needs loss_fn and probe_batch"
    needs = ("loss_fn", "probe_batch")
    options = ("samples",)

    def __init__(self, ctx: ProbeContext, every: int, samples: int = 50) -> None:
        super().__init__(ctx, every)
        self.samples = int(samples)

    def streams(self) -> tuple[Stream, ...]:
        return (
            Stream(
                "hessian_trace",
                "scalar",
                description=f"Hutchinson estimate of the Hessian's trace ({self.samples} Rademacher vectors).",
            ),
        )

    def run(self) -> dict[str, np.ndarray]:
        return {"hessian_trace": np.array(self.ctx.hessian().trace(self.samples).estimate)}


class HessianDensity(Probe):
    name = "hessian_density"
    summary = "Hessian eigenvalue density (stochastic Lanczos quadrature); needs loss_fn and probe_batch"
    needs = ("loss_fn", "probe_batch")
    options = ("vectors", "lanczos_steps", "bins")

    def __init__(
        self, ctx: ProbeContext, every: int, vectors: int = 3, lanczos_steps: int = 40, bins: int = 60
    ) -> None:
        super().__init__(ctx, every)
        self.vectors, self.lanczos_steps, self.bins = int(vectors), int(lanczos_steps), int(bins)

    def streams(self) -> tuple[Stream, ...]:
        return (
            Stream(
                "hessian_density",
                "histogram",
                (3, self.bins),
                description="Eigenvalue density of the loss Hessian (SLQ), on a symmetric-log grid.",
                theory="A bulk near zero and a few outliers, about one per class (Sagun et al.; Papyan).",
            ),
        )

    def run(self) -> dict[str, np.ndarray]:
        d = self.ctx.hessian().density(self.vectors, self.lanczos_steps, bins=self.bins)
        return {"hessian_density": d.histogram}


_NC_LABELS = ("NC1", "NC2 equinorm", "NC2 equiangular", "NC3", "NC4")
_NC_KEYS = ("nc1", "equinorm_means", "equiangularity", "nc3", "nc4")


def last_linear(model: nn.Module) -> str | None:
    """Name of the last ``nn.Linear`` in module order (the classifier, by default)."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return names[-1] if names else None


class NeuralCollapse(Probe):
    name = "neural_collapse"
    summary = (
        "NC1-NC4 of penultimate features (the input of the last Linear, or features=...); "
        "needs probe_batch with class labels"
    )
    needs = ("probe_batch",)

    def __init__(self, ctx: ProbeContext, every: int) -> None:
        super().__init__(ctx, every)
        modules = dict(ctx.model.named_modules())
        self.classifier = ctx.classifier or last_linear(ctx.model)
        if self.classifier is None or not isinstance(modules.get(self.classifier), nn.Linear):
            raise SpecError(
                "neural_collapse: needs the classifier, a Linear layer: the model has none"
                if self.classifier is None
                else f"neural_collapse: classifier {self.classifier!r} is not a Linear layer of the model"
                f"{suggest(self.classifier, list(modules))}"
            )
        if ctx.features is not None and ctx.features not in modules:
            raise SpecError(
                f"neural_collapse: features={ctx.features!r} is not a module of the model"
                f"{suggest(ctx.features, list(modules))}"
            )
        self._modules = modules
        classes = modules[self.classifier].out_features
        y = ctx.probe_batch[1] if ctx.probe_batch is not None else None
        if not isinstance(y, Tensor) or y.dim() != 1 or y.dtype.is_floating_point:
            raise SpecError("neural_collapse: probe_batch must be (inputs, integer class labels)")
        missing = sorted(set(range(classes)) - set(y.unique().tolist()))
        if missing:
            raise SpecError(
                f"neural_collapse: the probe batch has no sample of class {missing[:10]} "
                f"(the classifier has {classes} outputs): every class needs one"
            )

    def streams(self) -> tuple[Stream, ...]:
        return (
            Stream(
                "neural_collapse",
                "vector",
                (len(_NC_LABELS),),
                description="Neural-collapse metrics of the penultimate features on the probe batch.",
                theory="All fall towards 0 in the terminal phase of training (Papyan, Han & Donoho 2020).",
                labels=_NC_LABELS,
                log_scale=True,
            ),
        )

    def run(self) -> dict[str, np.ndarray]:
        x, y = self.ctx.probe_batch  # type: ignore[misc]
        captured: list[Tensor] = []
        if self.ctx.features is not None:
            handle = self._modules[self.ctx.features].register_forward_hook(
                lambda _m, _a, out: captured.append(out)
            )
        else:
            handle = self._modules[self.classifier].register_forward_pre_hook(
                lambda _m, args: captured.append(args[0])
            )
        shadow = Shadow(self.ctx.model)
        try:
            with torch.no_grad():
                shadow(x)
        finally:
            handle.remove()
        if not captured:
            raise RuntimeError("the forward pass never reached the features' layer")
        feats = captured[0].detach().flatten(1).double().cpu().numpy()
        w = shadow.params[f"{self.classifier}.weight"].double().cpu().numpy()
        b_t = shadow.params.get(f"{self.classifier}.bias")
        b = None if b_t is None else b_t.double().cpu().numpy()
        if feats.shape[1] != w.shape[1]:
            raise ValueError(
                f"features have {feats.shape[1]} dimensions but the classifier {self.classifier!r} takes {w.shape[1]}"
            )
        m = nc_metrics(feats, y.cpu().numpy(), w, b, num_classes=w.shape[0])
        return {"neural_collapse": np.array([m[k] for k in _NC_KEYS])}


class EquivarianceError(Probe):
    name = "equivariance_error"
    summary = "||f(g x) - g' f(x)|| / ||f(x)|| per transform pair; needs probe_batch and transforms"
    needs = ("probe_batch", "transforms")

    def streams(self) -> tuple[Stream, ...]:
        names = tuple(self.ctx.transforms)
        return (
            Stream(
                "equivariance_error",
                "vector",
                (len(names),),
                description="Relative equivariance error of the model on the probe batch, per transform.",
                theory="0 for an exactly equivariant model; a regulariser or augmentation pushes it down.",
                labels=names,
                log_scale=True,
            ),
        )

    def run(self) -> dict[str, np.ndarray]:
        x = self.ctx.probe_batch[0]  # type: ignore[index]
        shadow = Shadow(self.ctx.model)
        with torch.no_grad():
            ref = shadow(x)
            errs = [
                relative_error(shadow(g_in(x)), g_out(ref), ref)
                for g_in, g_out in self.ctx.transforms.values()
            ]
        return {"equivariance_error": np.array(errs)}


PROBES: dict[str, type[Probe]] = {
    p.name: p for p in (HessianTop, HessianTrace, HessianDensity, NeuralCollapse, EquivarianceError)
}


def make_probe(name: str, spec: int | Mapping[str, Any], ctx: ProbeContext) -> Probe:
    """Build the probe ``name`` from ``every`` or ``{"every": N, option: value...}``.

    Raises ``SpecError`` (at ``watch()`` time, not when the probe is first due) for an
    unknown name, a bad cadence or option, or a missing ``loss_fn``/``probe_batch``/``transforms``.
    """
    if name not in PROBES:
        listing = "; ".join(f"{n}: {c.summary}" for n, c in PROBES.items())
        raise SpecError(f"unknown probe {name!r}{suggest(name, list(PROBES))}. Available probes: {listing}")
    cls = PROBES[name]
    opts = dict(spec) if isinstance(spec, Mapping) else {"every": spec}
    every = opts.pop("every", None)
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise SpecError(
            f"probes[{name!r}]: the cadence must be an integer number of steps >= 1, got {every!r}"
        )
    bad = [k for k in opts if k not in cls.options]
    if bad:
        raise SpecError(
            f"probes[{name!r}]: unknown option {bad[0]!r}; {name} takes {', '.join(('every',) + cls.options)}"
        )
    for need in cls.needs:
        if not getattr(ctx, need):
            raise SpecError(f"probe {name!r} needs {need}=... in dynlab.watch() ({cls.summary})")
    return cls(ctx, every, **opts)
