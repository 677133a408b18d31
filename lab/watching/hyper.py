"""An optimizer's ``param_groups`` as live hyperparameters (torch-free: plain values only).

Every number or flag in the groups becomes a :class:`~dynlab.engines.spec.Param` that the
CLI and the app can change while the script runs; a tuple such as Adam's ``betas`` is
split into ``betas[0]`` and ``betas[1]``. Keys that configure the implementation rather
than the optimisation (``foreach``, ``fused``, ``amsgrad``...) are left out: changing them
mid-run would break the optimizer's state.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from dynlab.engines.spec import Param, SpecError, suggest

#: Keys that are not hyperparameters, or that cannot change once the optimizer has state.
SKIP = frozenset(
    {
        "params",
        "name",
        "foreach",
        "fused",
        "capturable",
        "differentiable",
        "amsgrad",
        "initial_lr",
        "decoupled_weight_decay",
    }
)
#: Known keys: (low, high, log scale, help).
_KNOWN: dict[str, tuple[float | None, float | None, bool, str]] = {
    "lr": (0.0, None, True, "Learning rate."),
    "momentum": (0.0, 1.0, False, "Heavy-ball momentum."),
    "dampening": (0.0, 1.0, False, "Momentum dampening."),
    "weight_decay": (0.0, None, True, "Weight decay."),
    "eps": (0.0, None, True, "Term added to the denominator for stability."),
    "betas": (0.0, 0.999999, False, "Decay rates of the moment estimates."),
    "alpha": (0.0, 1.0, False, "Smoothing constant."),
    "lr_decay": (0.0, None, True, "Learning-rate decay."),
    "rho": (0.0, 1.0, False, "Decay of the running averages."),
    "delta": (0.0, 1.0, False, "SGDP/AdamP cosine threshold."),
    "wd_ratio": (0.0, 1.0, False, "SGDP/AdamP weight-decay ratio on projected weights."),
}
_INDEXED = re.compile(r"^(?P<key>[A-Za-z_][\w]*)\[(?P<i>\d+)\]$")


def _plain(v: Any) -> Any:
    """A 0-d tensor (``lr`` as a tensor) read as a Python number; other values as they are."""
    if hasattr(v, "item") and hasattr(v, "numel") and v.numel() == 1:
        return v.item()
    return v


def _spec(name: str, key: str, value: Any) -> Param | None:
    low, high, log, help_ = _KNOWN.get(key, (None, None, False, f"param_groups key {key!r}."))
    if isinstance(value, bool):
        return Param(name, "bool", value, live=True, help=help_)
    if isinstance(value, int) and key not in _KNOWN:
        return Param(name, "int", value, live=True, help=help_)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return Param(name, "float", float(value), low, high, live=True, log=log, help=help_)
    return None


def param_specs(groups: Sequence[Mapping[str, Any]]) -> dict[str, Param]:
    """The live hyperparameters of ``groups`` (from the first group that has each key)."""
    out: dict[str, Param] = {}
    for g in groups:
        for key, raw in g.items():
            if key in SKIP:
                continue
            value = _plain(raw)
            if isinstance(value, (tuple, list)):
                for i, v in enumerate(value):
                    p = _spec(f"{key}[{i}]", key, _plain(v))
                    if p is not None and p.name not in out:
                        out[p.name] = p
            else:
                p = _spec(key, key, value)
                if p is not None and key not in out:
                    out[key] = p
    return out


def values(groups: Sequence[Mapping[str, Any]], group: int = 0) -> dict[str, Any]:
    """Current values of group ``group`` by live name (``betas[0]``...)."""
    if not groups:
        return {}
    out = {}
    for name in param_specs(groups):
        try:
            out[name] = read(groups, name, group)
        except SpecError:
            continue
    return out


def _split(name: str) -> tuple[str, int | None]:
    m = _INDEXED.match(name)
    return (m["key"], int(m["i"])) if m else (name, None)


def read(groups: Sequence[Mapping[str, Any]], name: str, group: int = 0) -> Any:
    """The value of ``name`` in group ``group``."""
    key, i = _split(name)
    if key not in groups[group]:
        raise SpecError(f"parameter group {group} has no {key!r}")
    v = _plain(groups[group][key])
    return _plain(v[i]) if i is not None else v


def check(
    groups: Sequence[Mapping[str, Any]],
    name: str,
    value: Any,
    group: int | None = None,
    *,
    from_text: bool = False,
) -> Any:
    """Validate a change; return the value coerced to its type or raise ``SpecError`` naming the choices."""
    specs = param_specs(groups)
    if name not in specs:
        raise SpecError(
            f"the optimizer has no live hyperparameter {name!r}{suggest(name, list(specs))}; "
            f"it has {', '.join(specs) or 'none'}"
        )
    if group is not None and not 0 <= int(group) < len(groups):
        raise SpecError(f"group {group} does not exist: the optimizer has {len(groups)} parameter group(s)")
    return specs[name].coerce(value, from_text=from_text and isinstance(value, str))


def write(groups: Sequence[dict[str, Any]], name: str, value: Any, group: int | None = None) -> list[Any]:
    """Set ``name`` to ``value`` in one group or all of them; return the old values (one per group)."""
    key, i = _split(name)
    targets = range(len(groups)) if group is None else [int(group)]
    olds = []
    for gi in targets:
        g = groups[gi]
        if key not in g:
            continue
        olds.append(read(groups, name, gi))
        current = g[key]
        if i is not None:
            seq = list(current)
            seq[i] = value
            g[key] = type(current)(seq) if isinstance(current, tuple) else seq
        elif hasattr(current, "fill_"):  # a tensor hyperparameter (capturable optimizers)
            current.fill_(value)
        else:
            g[key] = value
    return olds
