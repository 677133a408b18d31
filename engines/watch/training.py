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
from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from dynlab.engines.spec import SpecError, Stream

__all__ = ["ScaleInvariantFinder", "StepProbes", "select_layers", "to_host"]

_PRODUCERS: tuple[type, ...] = (nn.Linear, nn.modules.conv._ConvNd)
# Per-channel mean subtraction cancels the producer's bias: its weight is scale-invariant.
_CANCEL_BIAS: tuple[type, ...] = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)
_SCALE_ONLY: tuple[type, ...] = (nn.LayerNorm, nn.GroupNorm) + (
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
        self._prev_norm = np.zeros(0)
        self.device = self._all[0].device
        # Norms accumulate in float32 at least (half-precision weights), float64 for float64 models.
        self._dtype = torch.float64 if any(p.dtype == torch.float64 for p in self._all) else torch.float32
        self._track(self.layers)

    def _track(self, names: list[str]) -> None:
        # Detached aliases share storage with the parameters, so they stay current as the
        # optimizer updates in place; the copies hold the weights of the previous step.
        self._w = [self._named[n].detach() for n in names]
        with torch.no_grad():
            self._prev = [w.clone() for w in self._w]
        self._prev_norm = np.array([float(torch.linalg.vector_norm(w)) for w in self._prev])
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
        self._si_pos = np.array([self.layers.index(s) for s in self.scale_invariant], dtype=np.int64)
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
        """This step's measurements as device tensors (for :func:`to_host`); updates the previous weights."""
        with torch.no_grad():
            grads = [p.grad for p in self._all]
            present = [g for g in grads if g is not None and not g.is_sparse]
            self._missing = [i for i, g in enumerate(grads) if g is None or g.is_sparse]
            # _foreach kernels: one launch per list on CUDA.
            dt = self._dtype
            gn = list(torch._foreach_norm(present, 2, dtype=dt)) if present else []
            wn = list(torch._foreach_norm(self._w, 2, dtype=dt))
            diff = torch._foreach_sub(self._w, self._prev)
            dn = list(torch._foreach_norm(diff, 2, dtype=dt))
            torch._foreach_copy_(self._prev, self._w)
            self._n_grads = len(gn)
            dev = self.device
            parts = [t if t.device == dev else t.to(dev, non_blocking=True) for t in gn + wn + dn]
            return [torch.stack(parts)]

    def finish(self, host: np.ndarray) -> dict[str, np.ndarray]:
        """Turn the host copy of :meth:`device_tensors` into this step's stream values."""
        k, n = self._n_grads, len(self._w)
        gn_present, wn, dn = host[:k], host[k : k + n], host[k + n : k + 2 * n]
        gn_all = np.full(len(self._all), np.nan)
        keep = np.ones(len(self._all), bool)
        keep[self._missing] = False
        gn_all[keep] = gn_present
        out: dict[str, np.ndarray] = {}
        lrs = np.zeros(0)
        if self.optimizer is not None:
            lrs = np.array([_number(g.get("lr", np.nan)) for g in self.optimizer.param_groups])
            out["lr"] = lrs[0] if lrs.size == 1 else lrs
        out["grad_norm"] = np.array(np.sqrt(np.nansum(gn_all**2)) if keep.any() else np.nan)
        out["grad_norm_layer"] = gn_all[self._layer_idx]
        out["weight_norm"] = wn
        # Angle between w_{t-1} and w_t from three norms, stable for small angles:
        # |w/|w| - v/|v||^2 = (|w - v|^2 - (|w| - |v|)^2) / (|w| |v|).
        prev = self._prev_norm
        with np.errstate(invalid="ignore", divide="ignore"):
            chord2 = (dn**2 - (wn - prev) ** 2) / (wn * prev)
            out["update_angle"] = 2 * np.arcsin(np.clip(np.sqrt(np.clip(chord2, 0, None)) / 2, 0, 1))
        self._prev_norm = wn
        if self.scale_invariant and self.optimizer is not None:
            lr = np.array([lrs[g] if g is not None else np.nan for g in self._si_group])
            with np.errstate(divide="ignore"):
                out["effective_step"] = lr / wn[self._si_pos] ** 2
        return out


def _number(x: Any) -> float:
    return float(x.item()) if isinstance(x, Tensor) else float(x)
