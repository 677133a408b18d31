"""The engine base class: a training loop that yields step-stamped frames.

An engine owns its model, data and optimizer (torch lives here and below, never in
the lab or the views). The runner drives it one step at a time so commands (pause,
live ``set``...) land between two steps.

Step convention: the frame stamped ``t`` describes the model after ``t`` updates;
a loss stream at ``t`` is the loss of the forward pass that update ``t`` uses.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from dynlab.engines.spec import EngineSpec, Event, Frame, SpecError, Stream

if TYPE_CHECKING:
    import torch

_REGISTRY: dict[str, type[Engine]] = {}
#: Modules of ``dynlab.engines`` that hold no engine; ``registry()`` does not import them.
SUPPORT_MODULES = frozenset({"spec", "base", "optim", "data", "state"})
#: Engine modules that failed to import, with the error (shown by ``get_engine``).
IMPORT_ERRORS: dict[str, str] = {}


class Diverged(RuntimeError):
    """The loss or the weights became NaN or infinite."""

    def __init__(self, step: int, what: str) -> None:
        super().__init__(f"diverged at step {step}: {what} is not finite")
        self.step = step
        self.what = what


class Engine(ABC):
    """Base class of every engine.

    Subclasses set ``spec`` and implement :meth:`setup` and :meth:`train_step`; they
    override :meth:`declared_streams` when labels or shapes depend on hyperparameters.

    Optimizers live in ``self.optimizers`` (a list, filled by :meth:`setup`; empty for
    engines that update their weights by hand). A live change of a hyperparameter is
    pushed into every optimizer param group that has a key of the same name (``lr``,
    ``momentum``, ``weight_decay``...) by the default :meth:`on_set`; an engine that must
    do more (re-draw data, refuse a value, swap an optimizer) overrides it and calls
    ``super().on_set``.

    Parameters
    ----------
    params
        Hyperparameter overrides; validated against ``spec``.
    seed
        Seeds torch before :meth:`setup`; engines derive their data generators from it.
    device
        ``"cpu"``, ``"cuda"``, ``"mps"`` or ``"auto"``.
    probes
        Cadence overrides ``{probe name: every N steps}``.
    probe_budget
        At most this fraction (0 < b < 1) of the engine's step time goes to probes: the
        cadences stretch (all by one factor, never below the declared ones) to hold it,
        and the share measured is emitted as the ``probe_share`` stream. ``None`` (the
        default) keeps the fixed cadences, so runs stay reproducible step for step.
    """

    spec: ClassVar[EngineSpec]
    #: Streams whose non-finite values mean divergence. Default: every name ending in "loss".
    guarded: ClassVar[tuple[str, ...] | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        spec = cls.__dict__.get("spec")
        if isinstance(spec, EngineSpec):
            _REGISTRY[spec.name] = cls

    def __init__(
        self,
        params: Mapping[str, Any] | None = None,
        *,
        seed: int = 0,
        device: str = "cpu",
        probes: Mapping[str, int] | None = None,
        probe_budget: float | None = None,
    ) -> None:
        self.params: dict[str, Any] = self.spec.validate(params or {})
        self.seed = int(seed)
        self.device = resolve_device(device)
        self.cadence: dict[str, int] = dict(self.spec.probes)
        for name, every in (probes or {}).items():
            if name not in self.cadence:
                raise SpecError(
                    f"engine {self.spec.name!r} has no probe {name!r}; it has "
                    f"{', '.join(self.cadence) or 'none'}"
                )
            if int(every) < 1:
                raise SpecError(f"probe {name!r}: cadence must be >= 1 step, got {every}")
            self.cadence[name] = int(every)
        self.optimizers: list[torch.optim.Optimizer] = []
        self.step_count = 0
        self._events: list[Event] = []
        self._probe_seconds: dict[str, float] = {}
        self._started = False
        if probe_budget is not None and not 0.0 < float(probe_budget) < 1.0:
            raise SpecError(
                f"probe_budget must be a fraction of training time in (0, 1), got {probe_budget!r}"
            )
        # Configuration and transient timing, not state: checkpoints leave it out (engines.state).
        self._budget = ProbeBudget(float(probe_budget), self.cadence) if probe_budget else None

    # ----------------------------------------------------------------- subclass API
    @abstractmethod
    def setup(self) -> None:
        """Build data, model and optimizer. Called once, on the worker, after seeding."""

    @abstractmethod
    def train_step(self, step: int) -> Mapping[str, Any]:
        """Do update number ``step`` and return ``{stream: value}`` measured at ``step``.

        Streams measured at a slower cadence are simply left out. Values may be
        numpy arrays, Python numbers or tensors on the engine's device: leave them there,
        :meth:`step` copies all of a step's tensors to the host at once.
        """

    def on_set(self, name: str, new: Any, old: Any) -> None:
        """React to a live change (``self.params`` already holds ``new``). Raise to refuse.

        The default pushes ``new`` into every param group of ``self.optimizers`` that has
        a key called ``name``; optimizers read their groups at each step, so the change
        applies from the next update on.
        """
        for opt in self.optimizers:
            for group in opt.param_groups:
                if name in group:
                    group[name] = new

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources. Called once when the run ends."""

    @property
    def streams(self) -> tuple[Stream, ...]:
        """The streams this instance emits (declared ones plus probe costs)."""
        return self.declared_streams() + self._cost_stream()

    def declared_streams(self) -> tuple[Stream, ...]:
        """Override when labels/shapes depend on hyperparameters."""
        return self.spec.streams

    # ----------------------------------------------------------------- helpers
    def due(self, probe: str, step: int) -> bool:
        """Whether ``probe`` runs at ``step`` (step 0 always, then every cadence steps).

        With a probe budget the cadence stretches to hold it (see :class:`ProbeBudget`);
        asking twice in one step gives the same answer.
        """
        if self._budget is not None:
            return self._budget.due(probe, step)
        return step % self.cadence[probe] == 0

    @contextmanager
    def timed(self, probe: str) -> Iterator[None]:
        """Measure a probe's wall time; it is reported in the ``probe_seconds`` stream."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._probe_seconds[probe] = self._probe_seconds.get(probe, 0.0) + (time.perf_counter() - t0)

    def emit(self, kind: str, **payload: Any) -> None:
        """Queue an event (phase marker, warning...) stamped with the current step."""
        self._events.append(Event(self.step_count, kind, payload, time.time()))

    def pop_events(self) -> list[Event]:
        ev, self._events = self._events, []
        return ev

    # ----------------------------------------------------------------- driver API
    def start(self) -> None:
        """Seed and set up (idempotent)."""
        if self._started:
            return
        import torch

        torch.manual_seed(self.seed)
        np.random.seed(self.seed % (2**32))
        self.setup()
        self._started = True

    def step(self) -> Frame:
        """Run one update and return its frame (checked against the declared streams)."""
        self.start()
        t = self.step_count
        t0 = time.perf_counter()
        raw = self.train_step(t)
        streams = {s.name: s for s in self.streams}
        for name in raw:
            if name not in streams:
                raise SpecError(f"engine {self.spec.name!r} emitted undeclared stream {name!r}")
        data = {name: streams[name].check(value) for name, value in to_numpy(raw).items()}
        if self._budget is not None:
            # The step's wall time includes the copy to the host above: what training pays.
            share = self._budget.observe(time.perf_counter() - t0, self._probe_seconds)
            data["probe_share"] = np.asarray(share, dtype=np.float64)
        if self._probe_seconds:
            names = self._cost_stream()[0].labels
            data["probe_seconds"] = np.array(
                [self._probe_seconds.get(n, np.nan) for n in names], dtype=np.float64
            )
            self._probe_seconds = {}
        guarded = self.guarded
        for name, arr in data.items():
            watch = name in guarded if guarded is not None else name.endswith("loss")
            if watch and not np.all(np.isfinite(arr)):
                raise Diverged(t, name)
        self.step_count = t + 1
        return Frame.make(t, data, time.time())

    def set(self, name: str, value: Any) -> tuple[Any, Any]:
        """Apply a live change; return ``(old, new)``. Rolls back if :meth:`on_set` raises."""
        param = self.spec.param(name)
        if not param.live:
            raise SpecError(f"{name} cannot be changed while running (not live)")
        new = param.coerce(value)
        old = self.params[name]
        self.params[name] = new
        if self._started:
            try:
                self.on_set(name, new, old)
            except Exception:
                self.params[name] = old
                raise
        return old, new

    def frames(self, steps: int) -> Iterator[Frame]:
        """A plain loop: ``steps`` frames, for notebooks and tests."""
        for _ in range(steps):
            yield self.step()

    @property
    def probe_cadence(self) -> dict[str, float]:
        """The cadence each probe runs at now (the declared one, stretched by a probe budget)."""
        if self._budget is None:
            return {k: float(v) for k, v in self.cadence.items()}
        return {k: v * self._budget.scale for k, v in self.cadence.items()}

    def _cost_stream(self) -> tuple[Stream, ...]:
        if not self.spec.probes:
            return ()
        cost = Stream(
            "probe_seconds",
            "vector",
            (len(self.spec.probes),),
            units="s",
            description="Wall time each expensive probe took when it ran (NaN when it did not).",
            labels=tuple(self.spec.probes),
        )
        if self._budget is None:
            return (cost,)
        share = Stream(
            "probe_share",
            "scalar",
            units="fraction",
            description=(
                "Share of the engine's step time spent in probes over the last few hundred steps; "
                f"the probe budget is {self._budget.share:g}."
            ),
            theory="Held at or below the budget: the probe cadences stretch when probes cost more.",
        )
        return (cost, share)


class ProbeBudget:
    """Stretches probe cadences so that probes take at most ``share`` of the step time.

    Every probe's cadence is its declared one times one common factor ``scale >= 1``,
    chosen from the measured costs: with ``c_p`` the seconds a call of probe ``p`` takes
    and ``t`` the seconds a step takes without probes, probes cost ``sum_p c_p / (n_p s)``
    per step for declared cadences ``n_p``, and holding ``share`` needs
    ``s = sum_p c_p / n_p / (t * share / (1 - share))`` (never below 1).

    A call's cost is the lower median of its last few runs (a first call that pays for
    lazy initialisation, or one the OS interrupted, does not stretch the cadence for
    long), and the scale at most doubles between two runs of the most frequent probe, so
    a cost that was misjudged high is measured again soon. Cadences are fractional on
    average (a probe due every 7.4 steps runs after 7 or 8), so the share holds the
    budget rather than rounding down to well below it.

    Parameters
    ----------
    share
        The budget, a fraction in (0, 1).
    cadence
        The declared cadences ``{probe: every N steps}``.
    """

    #: Runs of a probe whose costs are remembered (their lower median is its cost).
    MEMORY = 5
    #: Weight of the newest step in the moving average of the training time per step.
    ALPHA = 0.1
    #: Longest window (steps) of the reported share.
    MAX_WINDOW = 2000.0

    def __init__(self, share: float, cadence: Mapping[str, int]) -> None:
        self.share = float(share)
        self.cadence = dict(cadence)
        self.scale = 1.0
        self._next: dict[str, float] = dict.fromkeys(self.cadence, 0.0)
        self._fired: dict[str, int] = {}
        self._costs: dict[str, list[float]] = {}
        self._train = 0.0  # moving average of a step's seconds without probes
        self._probe_sum = 0.0  # decayed sums behind the reported share
        self._step_sum = 0.0
        self._trim = 1.0  # slow correction from the share measured (costs are noisy, skewed)

    def due(self, probe: str, step: int) -> bool:
        """Whether ``probe`` runs at ``step``; the same answer every time it is asked in a step."""
        if self._fired.get(probe) == step:
            return True
        if step < self._next[probe]:
            return False
        every = self.cadence[probe] * self.scale
        # Keep the average cadence exact (fractional), but never owe a burst of catch-up runs.
        self._next[probe] = max(self._next[probe] + every, step + 0.5 * every)
        self._fired[probe] = step
        return True

    def cost(self, probe: str) -> float | None:
        """Seconds one run of ``probe`` takes (lower median of its last runs), if measured."""
        runs = self._costs.get(probe)
        return sorted(runs)[(len(runs) - 1) // 2] if runs else None

    def observe(self, step_seconds: float, probe_seconds: Mapping[str, float]) -> float:
        """Account one step; re-choose the scale; return the share over the recent steps."""
        spent = float(sum(probe_seconds.values()))
        train = max(step_seconds - spent, 1e-9)
        a = self.ALPHA
        self._train = train if self._train == 0.0 else (1 - a) * self._train + a * train
        for name, sec in probe_seconds.items():
            runs = self._costs.setdefault(name, [])
            runs.append(float(sec))
            del runs[: -self.MEMORY]
        per_step = 0.0
        for name, every in self.cadence.items():
            c = self.cost(name)
            if c is not None:
                per_step += c / every
        allowed = self._train * self.share / (1.0 - self.share)
        target = max(1.0, self._trim * per_step / allowed)
        fastest = min(self.cadence.values(), default=1) * self.scale
        self.scale = min(target, self.scale * 2.0 ** (1.0 / max(fastest, 1.0)))
        # The share over a window that spans a few runs of the slowest probe.
        slowest = max(self.cadence.values(), default=1) * self.scale
        window = min(max(50.0, 3.0 * slowest), self.MAX_WINDOW)
        decay = 1.0 - 1.0 / window
        self._probe_sum = decay * self._probe_sum + spent
        self._step_sum = decay * self._step_sum + max(step_seconds, spent)
        share = self._probe_sum / self._step_sum if self._step_sum > 0 else 0.0
        if target > 1.0 and share > 0.0:
            # Integral action over about a window: the share measured, not the cost model,
            # is what must hold (a median cost misses the long tail of a loaded machine).
            self._trim = min(max(self._trim * (share / self.share) ** (2.0 / window), 0.25), 4.0)
        return share


def to_numpy(values: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """One step's values as numpy arrays, with one device-to-host copy per device.

    A ``.cpu()`` per tensor would wait for the device once per stream. Instead the
    tensors of each device are flattened to bytes and concatenated on that device (no
    wait), copied to the host once (the one wait), and cut back into arrays of their own
    dtype and shape. The arrays are views of that fresh host buffer, never of a live
    tensor. Numbers and numpy arrays pass through ``np.asarray``.
    """
    out: dict[str, np.ndarray] = {}
    by_device: dict[torch.device, list[tuple[str, torch.Tensor]]] = {}
    for name, value in values.items():
        if hasattr(value, "detach"):  # a torch tensor (engines import torch; this module need not)
            by_device.setdefault(value.device, []).append((name, value.detach()))
        else:
            out[name] = np.asarray(value)
    if not by_device:
        return out
    import torch

    for tensors in by_device.values():
        # Largest elements first: every chunk then starts at a multiple of its element
        # size, so the host bytes can be viewed back as its dtype without a copy.
        tensors.sort(key=lambda nt: -nt[1].element_size())
        chunks = [t.reshape(-1).view(torch.uint8) for _, t in tensors]
        host = torch.cat(chunks).cpu()
        offset = 0
        for (name, t), chunk in zip(tensors, chunks):
            n = chunk.numel()
            out[name] = host[offset : offset + n].view(t.dtype).reshape(t.shape).numpy()
            offset += n
    return {name: out[name] for name in values}  # the engine's order


def resolve_device(pref: str = "auto") -> str:
    """``auto`` → ``cuda`` if present, else ``mps``, else ``cpu``; explicit names are checked."""
    pref = (pref or "auto").lower()
    if pref == "cpu":
        return "cpu"
    import torch

    if pref == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
        return "cpu"
    if pref.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SpecError(f"device {pref!r} requested but CUDA is not available")
        return pref
    if pref == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise SpecError("device 'mps' requested but MPS is not available")
        return pref
    raise SpecError(f"unknown device {pref!r}; expected auto, cpu, cuda, cuda:N or mps")


def registry() -> dict[str, type[Engine]]:
    """All engines, by name (imports every engine module in the package once)."""
    import importlib
    import pkgutil

    import dynlab.engines

    for mod in pkgutil.iter_modules(dynlab.engines.__path__):
        if mod.name not in SUPPORT_MODULES and not mod.name.startswith("_") and not mod.ispkg:
            try:
                importlib.import_module(f"dynlab.engines.{mod.name}")
            except Exception as exc:  # one broken engine must not hide the others
                IMPORT_ERRORS[mod.name] = f"{type(exc).__name__}: {exc}"
    return dict(_REGISTRY)


def get_engine(name: str) -> type[Engine]:
    """The engine class called ``name``; raises ``SpecError`` with a suggestion."""
    from dynlab.engines.spec import suggest

    reg = _REGISTRY if name in _REGISTRY else registry()
    if name not in reg:
        broken = "".join(f"; module engines.{m} failed to import: {e}" for m, e in IMPORT_ERRORS.items())
        raise SpecError(
            f"unknown engine {name!r}{suggest(name, sorted(reg))}; known: {', '.join(sorted(reg))}{broken}"
        )
    return reg[name]
