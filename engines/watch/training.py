"""The cheap probes that run at every step of a watched loop, and the one host transfer.

Per step, after ``optimizer.step()``: the learning rate of each parameter group, the
gradient norm (global and per layer), the weight norm per layer, the angle each layer's
weight turned through in the update, and the effective step size ``lr / ||w||^2`` of
scale-invariant weights. Everything is computed on the model's device with ``_foreach``
kernels (one launch per list on CUDA) and stacked into one tensor, which travels to the
host together with the user's own values: at most one device synchronisation per step.

Scale-invariant weights are found on the first forward pass after watching starts: a
``Linear``/``Conv`` weight whose output goes straight into a normalisation layer that
removes its scale (BatchNorm and InstanceNorm also remove the bias; LayerNorm, GroupNorm
and RMSNorm only when the layer has no bias).
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from dynlab.engines.spec import SpecError, Stream

__all__ = ["ScaleInvariantFinder", "StepProbes", "select_layers", "to_host"]

_PRODUCERS: tuple[type[nn.Module], ...] = (nn.Linear, nn.modules.conv._ConvNd)
# Per-channel mean subtraction cancels the producer's bias: its weight is scale-invariant.
_CANCEL_BIAS: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
)
_SCALE_ONLY: tuple[type[nn.Module], ...] = (nn.LayerNorm, nn.GroupNorm) + (
    (nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()
)


def select_layers(model: nn.Module, layers: Sequence[str] | str | None) -> list[str]:
    """Names of the trainable parameters reported per layer.

    ``None``: every weight with two or more dimensions (biases and norm scales are left
    out); ``"all"``: every trainable parameter; otherwise names or glob patterns
    (``"encoder.*.weight"``). A pattern that matches nothing is an error naming the choices.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if layers is None:
        return [n for n, p in named if p.dim() >= 2] or [n for n, _ in named]
    if layers == "all":
        return [n for n, _ in named]
    patterns = [layers] if isinstance(layers, str) else list(layers)
    names = [n for n, _ in named]
    out: list[str] = []
    for pat in patterns:
        hits = [n for n in names if fnmatch.fnmatchcase(n, pat)]
        if not hits:
            raise SpecError(
                f"layers: {pat!r} matches no trainable parameter; the model has {', '.join(names)}"
            )
        out.extend(h for h in hits if h not in out)
    return out


class ScaleInvariantFinder:
    """Watches one forward pass of ``model`` and names the weights that feed a normalisation.

    Hooks are installed at construction and removed when the model's own forward returns
    the first time; :attr:`found` is ``None`` until then.
    """

    def __init__(self, model: nn.Module) -> None:
        self.found: list[str] | None = None
        self._names: set[str] = set()
        self._produced: dict[int, tuple[Tensor, str, nn.Module]] = {}
        self._handles: list[Any] = []
        for name, m in model.named_modules():
            if isinstance(m, _PRODUCERS) and isinstance(getattr(m, "weight", None), Tensor):
                self._handles.append(m.register_forward_hook(partial(self._on_produce, name)))
            if isinstance(m, _CANCEL_BIAS + _SCALE_ONLY):
                self._handles.append(m.register_forward_pre_hook(self._on_norm))
        self._handles.append(model.register_forward_hook(self._on_done))

    def _on_produce(self, name: str, module: nn.Module, args: Any, output: Any) -> None:
        if isinstance(output, Tensor):  # keep the tensor: its id must not be reused meanwhile
            self._produced[id(output)] = (output, name, module)

    def _on_norm(self, norm: nn.Module, args: Any) -> None:
        x = args[0] if args else None
        hit = self._produced.get(id(x))
        if hit is None or hit[0] is not x:
            return
        _, name, producer = hit
        if isinstance(norm, _CANCEL_BIAS) or getattr(producer, "bias", None) is None:
            self._names.add(f"{name}.weight" if name else "weight")

    def _on_done(self, *_: Any) -> None:
        self.found = sorted(self._names)
        self.remove()

    def remove(self) -> None:
        """Take the hooks off (also when no forward pass ever came)."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._produced.clear()


def to_host(tensors: Sequence[Any]) -> list[np.ndarray]:
    """Host copies (float64 numpy) of ``tensors``: one transfer, one synchronisation per device.

    Non-tensors (numbers, numpy arrays) pass through ``np.asarray``.
    """
    out: list[Any] = [None] * len(tensors)
    by_device: dict[torch.device, list[int]] = {}
    for i, t in enumerate(tensors):
        if isinstance(t, Tensor):
            if t.device.type == "cpu":
                if t.dim() == 0:
                    out[i] = np.array(t.item(), dtype=np.float64)
                elif t.dtype in (torch.float32, torch.float64):
                    out[i] = t.detach().numpy().astype(np.float64)  # a copy: the tensor may change later
                else:
                    out[i] = t.detach().to(torch.float64).numpy()
            else:
                by_device.setdefault(t.device, []).append(i)
        else:
            out[i] = np.asarray(t, dtype=np.float64)
    for dev, idx in by_device.items():
        dtype = torch.float32 if dev.type == "mps" else torch.float64  # MPS has no float64
        flat = torch.cat([tensors[i].detach().reshape(-1).to(dtype) for i in idx])
        host = flat.cpu().numpy().astype(np.float64)  # the one synchronisation on this device
        pos = 0
        for i in idx:
            n = tensors[i].numel()
            out[i] = host[pos : pos + n].reshape(tensors[i].shape)
            pos += n
    return out


class StepProbes:
    """The default per-step measurements of one model and optimizer.

    Parameters
    ----------
    model, optimizer
        The user's (``optimizer`` may be ``None``: no learning rates or effective steps).
    layers
        See :func:`select_layers`.
    scale_invariant
        Names of scale-invariant weights; ``None`` finds them on the first forward pass.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        *,
        layers: Sequence[str] | str | None = None,
        scale_invariant: Sequence[str] | None = None,
    ) -> None:
        self.optimizer = optimizer
        named = dict((n, p) for n, p in model.named_parameters() if p.requires_grad)
        if not named:
            raise SpecError("the model has no trainable parameters to watch")
        self._all = list(named.values())
        self.layers = select_layers(model, layers)
        self.finder: ScaleInvariantFinder | None = None
        if scale_invariant is None:
            self.finder = ScaleInvariantFinder(model)
            self.scale_invariant: list[str] | None = None
        else:
            unknown = [n for n in scale_invariant if n not in named]
            if unknown:
                raise SpecError(
                    f"scale_invariant: no trainable parameter {unknown[0]!r}; the model has {', '.join(named)}"
                )
            self.scale_invariant = list(scale_invariant)
        self._named = named
        self._w: list[Tensor] = []
        self._prev: list[Tensor] = []
        self._prev_norm: list[float] = []
        self.device = self._all[0].device
        # Norms accumulate in float32 at least (half-precision weights), float64 for float64 models.
        self._dtype = torch.float64 if any(p.dtype == torch.float64 for p in self._all) else torch.float32
        self._numpy = self.device.type == "cpu" and all(
            p.dtype in (torch.float32, torch.float64) and p.layout == torch.strided and p.is_contiguous()
            for p in self._all
        )
        self._si_pos_list: list[int] = []
        self._si_group: list[int | None] = []
        self._missing: list[int] = []
        self._track(self.layers)

    def _track(self, names: list[str]) -> None:
        # Detached aliases share storage with the parameters, so they stay current as the
        # optimizer updates in place; the copies hold the weights of the previous step.
        self._tracked = [self._named[n] for n in names]
        self._w = [p.detach() for p in self._tracked]
        with torch.no_grad():
            self._prev = [w.clone() for w in self._w]
        if self._numpy:
            self._ptrs = [p.data_ptr() for p in self._tracked]
            self._w_np = [w.numpy().reshape(-1) for w in self._w]
            self._prev_np = [w.numpy().reshape(-1) for w in self._prev]
            self._diff_np = [np.empty_like(w) for w in self._w_np]
        self._prev_norm = [float(torch.linalg.vector_norm(w)) for w in self._prev]
        index = {id(p): i for i, p in enumerate(self._all)}
        self._layer_idx = np.array([index[id(self._named[n])] for n in names], dtype=np.int64)

    def resolve(self) -> None:
        """Fix the set of scale-invariant weights (call before building the streams)."""
        if self.scale_invariant is not None:
            return
        found = self.finder.found if self.finder is not None else None
        if self.finder is not None:
            self.finder.remove()
        self.scale_invariant = list(found or [])
        extra = [n for n in self.scale_invariant if n not in self.layers]
        if extra:  # their norms are needed for the effective step: track them too
            self.layers = self.layers + extra
            self._track(self.layers)
        # Where each scale-invariant weight sits among the tracked layers, and its group.
        group_of = {}
        for gi, g in enumerate(self.optimizer.param_groups if self.optimizer is not None else []):
            for p in g["params"]:
                group_of[id(p)] = gi
        self._si_pos_list = [self.layers.index(s) for s in self.scale_invariant]
        self._si_group = [group_of.get(id(self._named[s])) for s in self.scale_invariant]

    # ------------------------------------------------------------------ streams
    def group_labels(self) -> tuple[str, ...]:
        groups = self.optimizer.param_groups if self.optimizer is not None else []
        return tuple(str(g.get("name", f"group {i}")) for i, g in enumerate(groups))

    def streams(self) -> tuple[Stream, ...]:
        """The default streams (call :meth:`resolve` first)."""
        layers = tuple(self.layers)
        out: list[Stream] = []
        groups = self.group_labels()
        if len(groups) == 1:
            out.append(Stream("lr", "scalar", units="", description="Learning rate.", log_scale=True))
        elif groups:
            out.append(
                Stream(
                    "lr",
                    "vector",
                    (len(groups),),
                    description="Learning rate of each parameter group.",
                    labels=groups,
                    log_scale=True,
                )
            )
        out += [
            Stream(
                "grad_norm",
                "scalar",
                description="Norm of the whole gradient (all trainable parameters) at this update.",
                log_scale=True,
            ),
            Stream(
                "grad_norm_layer",
                "vector",
                (len(layers),),
                description="Gradient norm of each layer's weight.",
                labels=layers,
                log_scale=True,
            ),
            Stream(
                "weight_norm",
                "vector",
                (len(layers),),
                description="Frobenius norm of each layer's weight after the update.",
                labels=layers,
            ),
            Stream(
                "update_angle",
                "vector",
                (len(layers),),
                units="rad",
                description="Angle each layer's weight turned through in this update.",
                theory="For a scale-invariant weight this is the step that matters: about "
                "lr·||g||/||w|| per update; it shrinks as ||w|| grows (Heo et al. 2021).",
                labels=layers,
                log_scale=True,
            ),
        ]
        si = tuple(self.scale_invariant or ())
        if si and self.optimizer is not None:
            out.append(
                Stream(
                    "effective_step",
                    "vector",
                    (len(si),),
                    units="1/norm²",
                    description="lr / ||w||² of each scale-invariant weight (output feeds a normalisation).",
                    theory="The loss cannot see ||w||, so only the direction learns and its step is "
                    "lr/||w||²; momentum and weight decay move ||w|| and with it this step.",
                    labels=si,
                    log_scale=True,
                ),
            )
        return tuple(out)

    # ------------------------------------------------------------------ per step
    def device_tensors(self) -> list[Tensor]:
        """Start this step's measurements; device tensors to bring to the host with :func:`to_host`.

        On CPU (float32/float64 weights) the norms are taken at once through numpy views of
        the same memory (a BLAS dot is a few hundred nanoseconds where a torch call costs
        microseconds of dispatch) and nothing is returned; on an accelerator, ``_foreach``
        kernels (one launch per list) fill one tensor that travels with the user's values.
        """
        if self._numpy:
            self._norms = self._numpy_norms()
            return []
        with torch.no_grad():
            grads = [p.grad for p in self._all]
            present = [g for g in grads if g is not None and not g.is_sparse]
            self._missing = [i for i, g in enumerate(grads) if g is None or g.is_sparse]
            dt = self._dtype
            gn = list(torch._foreach_norm(present, 2, dtype=dt)) if present else []
            wn = list(torch._foreach_norm(self._w, 2, dtype=dt))
            diff = torch._foreach_sub(self._w, self._prev)
            dn = list(torch._foreach_norm(diff, 2, dtype=dt))
            torch._foreach_copy_(self._prev, self._w)
            dev = self.device
            parts = [t if t.device == dev else t.to(dev, non_blocking=True) for t in gn + wn + dn]
            return [torch.stack(parts)]

    def _numpy_norms(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if [p.data_ptr() for p in self._tracked] != self._ptrs:  # a parameter was re-allocated
            self._track(self.layers)
        vdot = np.vdot
        # List comprehensions over numpy views: this runs at every step and each extra
        # Python statement per tensor shows in the cost.
        grads = [p.grad for p in self._all]
        try:
            arrays = [g.numpy() for g in grads if g is not None]
            gsq = [vdot(a, a) for a in arrays] if len(arrays) == len(grads) else None
        except (RuntimeError, TypeError):  # numpy() refuses a sparse or differentiable grad
            gsq = None
        if gsq is None:  # a missing, sparse or differentiable grad: one at a time
            gsq = [_grad_sq(g) for g in grads]
        wsq = [vdot(w, w) for w in self._w_np]
        for w, prev, diff in zip(self._w_np, self._prev_np, self._diff_np):
            np.subtract(w, prev, out=diff)
            np.copyto(prev, w)
        dsq = [vdot(d, d) for d in self._diff_np]
        return (
            np.sqrt(np.array(gsq, dtype=np.float64)),
            np.sqrt(np.array(wsq, dtype=np.float64)),
            np.sqrt(np.array(dsq, dtype=np.float64)),
        )

    def finish(self, host: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """This step's stream values, from the host copies of :meth:`device_tensors`."""
        if self._numpy:
            gn_all, wn, dn = self._norms
        else:
            flat = host[0]
            k, n = len(self._all) - len(self._missing), len(self._w)
            wn, dn = flat[k : k + n], flat[k + n : k + 2 * n]
            if self._missing:
                gn_all = np.full(len(self._all), np.nan)
                keep = np.ones(len(self._all), bool)
                keep[self._missing] = False
                gn_all[keep] = flat[:k]
            else:
                gn_all = flat[:k]
        out: dict[str, np.ndarray] = {}
        groups = self.optimizer.param_groups if self.optimizer is not None else ()
        lrs = [_number(g["lr"]) if "lr" in g else math.nan for g in groups]
        if len(lrs) == 1:
            out["lr"] = np.array(lrs[0])
        elif lrs:
            out["lr"] = np.array(lrs)
        total = float(gn_all @ gn_all)  # NaN when a gradient is missing: then over the others
        out["grad_norm"] = np.array(math.sqrt(total) if total == total else _nan_norm(gn_all))
        out["grad_norm_layer"] = gn_all[self._layer_idx]
        out["weight_norm"] = wn
        # Angle between w_{t-1} and w_t from three norms, stable for small angles:
        # |w/|w| - v/|v||^2 = (|w - v|^2 - (|w| - |v|)^2) / (|w| |v|).
        # Plain floats: a few layers' worth of numpy calls would cost more than the arithmetic.
        wl = wn.tolist()
        angles = []
        for w, v, d in zip(wl, self._prev_norm, dn.tolist()):
            den = w * v
            c2 = (d * d - (w - v) * (w - v)) / den if den > 0 else math.nan
            angles.append(
                math.nan if c2 != c2 else 2 * math.asin(min(math.sqrt(c2) / 2, 1.0)) if c2 > 0 else 0.0
            )
        out["update_angle"] = np.array(angles)
        if self._si_pos_list and lrs:
            eff = []
            for pos, g in zip(self._si_pos_list, self._si_group):
                sq = wl[pos] ** 2
                eff.append((lrs[g] if g is not None else math.nan) / sq if sq > 0 else math.inf)
            out["effective_step"] = np.array(eff)
        self._prev_norm = wl
        return out


def _grad_sq(g: Tensor | None) -> float:
    if g is None:
        return math.nan
    if g.is_sparse:
        g = g.coalesce().values()
    a = g.detach().numpy()
    return float(np.vdot(a, a))


def _nan_norm(gn: np.ndarray) -> float:
    """The global norm over the gradients that exist (NaN when none does)."""
    ok = gn[~np.isnan(gn)]
    return math.sqrt(float(ok @ ok)) if ok.size else math.nan


def _number(x: Any) -> float:
    return float(x.item()) if isinstance(x, Tensor) else float(x)
