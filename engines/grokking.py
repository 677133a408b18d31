"""Grokking on modular addition: memorisation, Fourier feature emergence, delayed generalisation.

The recipe is the one that groks on a CPU (``SCIENCE.md`` §5): (a, b) ↦ (a + b) mod p with
p = 97, a random 30 % of the p² pairs for training, a two-layer network without biases
``logits = V (W_a e_a + W_b e_b)²`` of width 512 with PyTorch's default ``nn.Linear`` init,
cross-entropy, full-batch ``torch.optim.Adam(lr=1e-3, weight_decay=1e-4)`` (coupled L2).
One step is one epoch. It memorises by epoch ~130–200 and generalises around epoch ~900–1150.

Papers: Tian 2025 (Li₂, arXiv 2509.21519), Power et al. 2022, Nanda et al. 2023, Gromov 2023.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F

from dynlab.engines.base import Engine
from dynlab.engines.spec import EngineSpec, Param, SpecError, Stream

#: Li₂ critical training fraction c·ln p / p (``use_critical_ratio`` in the official config).
CRITICAL_RATIO_CONSTANT = 2.7482
#: Neurons shown in the ``fourier_power`` heatmap (the first ones: init is i.i.d., so a random sample).
HEATMAP_NEURONS = 64
#: Feature emergence = mean Fourier IPR reaches this multiple of its value at initialisation.
EMERGENCE_FACTOR = 2.5
MEMORISED_ACCURACY = 0.99
GENERALISED_ACCURACY = 0.95
#: A neuron is dead when its input-weight column norm is below this × the layer's largest.
DEAD_RELATIVE_NORM = 1e-3
#: Fourier IPR conventions: one-sided rfft with the DC term (default) or the full p-point DFT.
IPR_CONVENTIONS = ("one-sided", "full-dft")
#: Label centring of the Li₂ energy: over classes (official code, default) or over samples (paper).
ENERGY_CENTRINGS = ("classes", "samples")


def critical_fraction(p: int) -> float:
    """Li₂'s critical training fraction ≈ 2.75 ln p / p (≈ 0.13 for p = 97).

    Below it the generalising (Fourier) features stop being local maxima of the
    per-node energy, so the network memorises without generalising.
    """
    return CRITICAL_RATIO_CONSTANT * math.log(p) / p


def normalised_columns(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-norm columns of ``w`` and the column norms, both in float64, without underflow.

    Long runs at a small train fraction decay most first-layer columns towards 1e-37 (float32's
    smallest normal number is 1e-38): squaring them underflows, so a norm computed directly
    reads 0. Casting to float64 (exact) and dividing each column by its largest entry first
    keeps every step in range. Exactly-zero columns stay zero.

    Returns
    -------
    w_hat, norms
        ``w_hat`` with the shape of ``w`` and unit (or zero) columns; ``norms`` per column.
    """
    w64 = w.detach().to(torch.float64)
    scale = w64.abs().amax(dim=0)
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    scaled = w64 / safe
    inner = scaled.norm(dim=0)
    w_hat = scaled / torch.where(inner > 0, inner, torch.ones_like(inner))
    return w_hat, scale * inner


def dead_neurons(norms: torch.Tensor, relative: float = DEAD_RELATIVE_NORM) -> torch.Tensor:
    """Mask of neurons whose column norm is below ``relative`` × the layer's largest one.

    With σ(z) = z² such a neuron's output is ≤ relative² of the strongest neuron's: it no
    longer takes part in the function, and its direction is whatever the decay left.
    """
    return norms < relative * norms.max()


def fourier_power(w_tokens: torch.Tensor, convention: str = "one-sided") -> torch.Tensor:
    """Fourier power of each neuron's input weights over the token axis, in float64.

    Parameters
    ----------
    w_tokens
        ``(p, h)``: row ``a`` holds every neuron's weight on token ``a``.
    convention
        ``"one-sided"``: ``|rfft_k|²`` for k = 0..⌊p/2⌋ (a real cosine at frequency k puts
        all its power in bin k). ``"full-dft"``: ``|fft_k|²`` for k = 0..p−1 (it puts half
        in k and half in p − k).

    Returns
    -------
    torch.Tensor
        ``(p // 2 + 1, h)`` or ``(p, h)`` float64.
    """
    w = w_tokens.to(torch.float64)
    if convention == "one-sided":
        return torch.fft.rfft(w, dim=0).abs().square()
    if convention == "full-dft":
        return torch.fft.fft(w, dim=0).abs().square()
    raise ValueError(f"unknown Fourier convention {convention!r}; expected one of {IPR_CONVENTIONS}")


def fourier_ipr(power: torch.Tensor) -> torch.Tensor:
    """Per-neuron inverse participation ratio Σ_k P_k² / (Σ_k P_k)², in float64.

    With the one-sided spectrum of :func:`fourier_power`: ≈ 2/(p/2) for random weights and 1
    for a neuron tuned to a single frequency. With the full DFT (Gromov 2023) both numbers
    halve: a single real frequency shares its power between k and p − k. NaN for a zero column.
    """
    power = power.to(torch.float64)
    total = power.sum(dim=0)
    ratio = power.square().sum(dim=0) / torch.where(total > 0, total, torch.ones_like(total)).square()
    return torch.where(total > 0, ratio, torch.full_like(ratio, math.nan))


def li2_energy(
    w_in: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    y: torch.Tensor,
    p: int,
    centring: str = "classes",
) -> torch.Tensor:
    """Normalised Li₂ energy per hidden node: ½‖Ỹᵀσ(Xŵ)‖² / n with ŵ = w/‖w‖, σ(z) = z², float64.

    Tian 2025 (Li₂) shows that, in the independent-feature-learning stage, each hidden node
    performs gradient ascent on E(w) = ½‖Ỹᵀσ(Xw)‖². Normalising w (underflow-safe, see
    :func:`normalised_columns`) makes E a measure of the *direction* a node has found, not of
    its norm.

    Parameters
    ----------
    w_in
        ``(2p, h)`` input weights (rows 0..p-1 for token a, p..2p-1 for token b).
    a, b, y
        ``(n,)`` training inputs and labels.
    centring
        How the one-hot labels Y are centred into Ỹ. ``"classes"``: Ỹ = onehot − 1/p, as the
        official code's targets (``Y_train - 1.0 / group_order``). ``"samples"``: Ỹ = P⊥₁Y,
        each class column minus its mean over the training samples, the zero-mean projection
        in the paper's loss ½‖P⊥₁(Y − FV)‖². The two agree when every class has the same number of training
        pairs.
    """
    w_hat, _ = normalised_columns(w_in)
    return li2_energy_of_unit_columns(w_hat, a, b, y, p, centring)


def li2_energy_of_unit_columns(
    w_hat: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    y: torch.Tensor,
    p: int,
    centring: str = "classes",
) -> torch.Tensor:
    """:func:`li2_energy` from the unit-norm columns ``w_hat`` (float64) already computed."""
    # ŵ_a[a] + ŵ_b[b] per pair in one gather-and-sum (embedding_bag): no (n, h) temporaries
    # for the two rows, which made this probe 2.4x dearer (bench/RESULTS.md).
    act = F.embedding_bag(torch.stack([a, b + p], dim=1), w_hat, mode="sum").square_()  # (n, h)
    n = a.numel()
    # Ỹᵀ act = onehotᵀ act − c (1ᵀ act) for Ỹ = onehot − 1 cᵀ: a scatter-add, not an n×p matmul.
    per_class = torch.zeros(p, act.shape[1], dtype=act.dtype, device=act.device).index_add_(0, y, act)
    if centring == "classes":
        c = torch.full((p,), 1.0 / p, dtype=act.dtype, device=act.device)
    elif centring == "samples":
        c = torch.bincount(y, minlength=p).to(act.dtype) / n
    else:
        raise ValueError(f"unknown label centring {centring!r}; expected one of {ENERGY_CENTRINGS}")
    proj = per_class - c[:, None] * act.sum(dim=0)[None, :]
    return 0.5 * proj.square().sum(dim=0) / n


def _orthogonalise(g: torch.Tensor, iters: int = 5) -> torch.Tensor:
    """Approximate U Vᵀ of ``g = U S Vᵀ`` by a quintic Newton–Schulz iteration (Muon)."""
    ca, cb, cc = 3.4445, -4.7750, 2.0315
    x = g / (g.norm() + 1e-7)
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    for _ in range(iters):
        s = x @ x.T
        x = ca * x + (cb * s + cc * s @ s) @ x
    return x.T if tall else x


class Muon(torch.optim.Optimizer):
    """Momentum on the gradient, then the orthogonalised update (Muon), for 2-D weights.

    The update is scaled by 0.2·√max(m, n) so its RMS matches a typical Adam update and
    the same ``lr`` is meaningful after a live switch (Liu et al. 2025, "Muon is
    scalable"). Weight decay is decoupled: ``w ← w − lr·wd·w``.
    """

    def __init__(
        self, params: Any, lr: float = 1e-3, momentum: float = 0.95, weight_decay: float = 0.0
    ) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
            for w in group["params"]:
                if w.grad is None:
                    continue
                buf = self.state[w].setdefault("momentum_buffer", torch.zeros_like(w))
                buf.mul_(mu).add_(w.grad)
                direction = _orthogonalise(w.grad + mu * buf)  # Nesterov look-ahead
                scale = 0.2 * math.sqrt(max(w.shape))
                if wd:
                    w.mul_(1.0 - lr * wd)
                w.add_(direction, alpha=-lr * scale)


_FREQ_HELP = "k = 0..⌊p/2⌋ of the rfft over the token axis of W_a"


@lru_cache(maxsize=16)  # Engine.step looks the streams up every step
def grokking_streams(
    p: int, ipr_convention: str = "one-sided", energy_centring: str = "classes"
) -> tuple[Stream, ...]:
    """The engine's streams for modulus ``p`` (frequency axes have ⌊p/2⌋ + 1 entries)."""
    k_labels = tuple(f"k={k}" for k in range(p // 2 + 1))
    if ipr_convention == "one-sided":
        ipr_how = "one-sided spectrum |rfft_k|², k = 0..⌊p/2⌋ (single frequency → 1)"
        ipr_init = f"≈ 2/(p/2) ≈ {4 / p:.3f} at init"
    else:
        ipr_how = "full p-point DFT |fft_k|², k = 0..p−1, Gromov's convention (single frequency → 1/2)"
        ipr_init = f"≈ 2/p ≈ {2 / p:.3f} at init"
    y_tilde = "onehot − 1/p (official code)" if energy_centring == "classes" else "P⊥₁·onehot (paper)"
    return (
        Stream(
            "train_accuracy",
            "scalar",
            description="Accuracy on the training pairs.",
            theory="Reaches 1 early (memorisation, Li₂ stage I: lazy learning).",
        ),
        Stream(
            "test_accuracy",
            "scalar",
            description="Accuracy on the held-out pairs.",
            theory="Stays near chance long after memorisation, then jumps to ≈1 (grokking).",
        ),
        Stream("train_loss", "scalar", description="Cross-entropy on the training pairs."),
        Stream(
            "test_loss",
            "scalar",
            description="Cross-entropy on the held-out pairs.",
            theory="Rises during memorisation, then falls when generalising features form.",
        ),
        Stream("train_fraction", "scalar", description="Fraction of pairs used for training."),
        Stream(
            "critical_fraction",
            "scalar",
            description="Li₂ critical training fraction 2.75·ln p / p.",
            theory="Below it, generalising features are not energy maxima: memorisation only.",
        ),
        Stream(
            "weight_norm",
            "vector",
            (3,),
            description="Frobenius norms ‖W_a‖, ‖W_b‖, ‖V‖.",
            theory="Grows while memorising, then weight decay shrinks it as features form.",
            labels=("W_a", "W_b", "V"),
        ),
        Stream(
            "fourier_ipr",
            "scalar",
            description=(
                "Mean over live neurons of the inverse participation ratio Σ P_k²/(Σ P_k)² of "
                f"W_a's Fourier power, {ipr_how}; float64 from unit-norm columns."
            ),
            theory=(
                f"{ipr_init}; rises as each neuron tunes to one frequency (feature emergence "
                "precedes the test-accuracy jump). It stays near its init value when the net "
                "only memorises."
            ),
        ),
        Stream(
            "dead_neurons",
            "scalar",
            units="neurons",
            description=(
                "Hidden neurons whose input-weight column norm is below "
                f"{DEAD_RELATIVE_NORM:g} × the largest one; they are left out of every "
                "per-neuron mean (IPR, key frequencies, Li₂ energy)."
            ),
            theory=(
                "0 in a grokking run. Memorising with too few pairs, weight decay shrinks most "
                "neurons towards 0 while the rest keep train accuracy at 1."
            ),
        ),
        Stream(
            "frequency_power",
            "vector",
            (p // 2 + 1,),
            units="weight²",
            description=f"Fourier power of W_a summed over neurons, per frequency ({_FREQ_HELP}).",
            theory=(
                "Flat at init. This x² network spreads its neurons over all frequencies "
                "(Gromov), so the sum stays broad and mostly follows the weight norm; Nanda "
                "et al.'s transformer instead concentrates on ~5 key frequencies."
            ),
            labels=k_labels,
        ),
        Stream(
            "fourier_power",
            "heatmap",
            (p // 2 + 1, HEATMAP_NEURONS),
            description=(
                f"Fourier power of the first {HEATMAP_NEURONS} neurons' W_a "
                "(rows: frequency, columns: neuron, fixed order), each column "
                "normalised to sum 1."
            ),
            theory="Each column collapses onto one bright frequency (a Fourier feature).",
            rows=k_labels,
            cols=tuple(f"n{j}" for j in range(HEATMAP_NEURONS)),
        ),
        Stream(
            "key_frequencies",
            "vector",
            (5,),
            description=(
                "Mean over live neurons of the share of a neuron's W_a Fourier power in its "
                "strongest, 2nd, ..., 5th frequency (which frequency differs per neuron: "
                "see the heatmap)."
            ),
            theory=(
                "≈ 0.1 and below at init; the 1st share climbs as each neuron tunes to one "
                "key frequency. This x² network spreads its neurons over all frequencies "
                "(Gromov), so the summed spectrum stays flat while neurons specialise."
            ),
            labels=("1st", "2nd", "3rd", "4th", "5th"),
        ),
        Stream(
            "li2_energy",
            "scalar",
            description=(
                f"Mean over live hidden nodes of ½‖Ỹᵀσ(Xŵ)‖²/n, ŵ = w/‖w‖, Ỹ = {y_tilde} "
                "(normalised Li₂ energy, float64)."
            ),
            theory=(
                "Li₂ stage II: each node ascends this energy. Not a generalisation signal: it "
                "rises in a run that only memorises too. Test accuracy is the signal."
            ),
        ),
    )


class GrokkingEngine(Engine):
    """Two-layer x² network on (a + b) mod p, full batch; one step = one epoch."""

    spec = EngineSpec(
        name="grokking",
        title="Grokking: modular addition with a two-layer x² network",
        description=(
            "Full-batch training on (a + b) mod p: the network memorises the training pairs, "
            "then Fourier features emerge in its input weights and test accuracy jumps late."
        ),
        paper=(
            "Tian 2025, Provable Scaling Laws of Feature Emergence from Learning Dynamics of "
            "Grokking (Li₂), arXiv 2509.21519; Power et al. 2022; Nanda et al. 2023; Gromov 2023"
        ),
        params=(
            Param("p", "int", 97, 11, 211, help="Modulus; the task is (a + b) mod p (97 in the recipe)."),
            Param(
                "train_fraction",
                "float",
                0.3,
                0.02,
                0.95,
                help="Fraction of the p² pairs used for training; the rest is the test set.",
            ),
            Param("width", "int", 512, HEATMAP_NEURONS, 4096, help="Hidden units h."),
            Param("lr", "float", 1e-3, 1e-6, 1.0, live=True, log=True, help="Learning rate."),
            Param(
                "weight_decay",
                "float",
                1e-4,
                0.0,
                10.0,
                live=True,
                help=(
                    "Weight decay: coupled L2 for adam (the recipe), decoupled (w ← w − lr·wd·w) "
                    "for adamw and muon, where 1e-4 shrinks weights by only lr·wd ≈ 1e-7 a step."
                ),
            ),
            Param(
                "ipr_convention",
                "str",
                "one-sided",
                choices=IPR_CONVENTIONS,
                help=(
                    "Fourier IPR spectrum: one-sided rfft with the DC term (a single-frequency "
                    "neuron scores 1) or the full p-point DFT of Gromov 2023 (it scores 1/2; "
                    "every IPR is about half the one-sided one)."
                ),
            ),
            Param(
                "energy_centring",
                "str",
                "classes",
                choices=ENERGY_CENTRINGS,
                help=(
                    "Label centring Ỹ in the Li₂ energy: classes (onehot − 1/p, the official "
                    "code's targets) or samples (onehot minus its mean over the training pairs, "
                    "the paper's zero-mean projection); equal on class-balanced data."
                ),
            ),
            Param(
                "optimizer",
                "str",
                "adam",
                choices=("adam", "adamw", "muon"),
                live=True,
                help=(
                    "adam (coupled L2, the recipe) / adamw (decoupled decay) / muon "
                    "(orthogonalised momentum). Switching keeps the weights; adam ↔ adamw "
                    "keeps the moment estimates, a switch to or from muon starts its "
                    "optimizer state from zero."
                ),
            ),
        ),
        streams=grokking_streams(97),  # the default p; instances follow their own p
        # Held-out evaluation costs about as much as the training step itself (the test set
        # is 70 % of the pairs), so it runs at its own cadence like the Fourier and energy probes.
        probes={"test": 5, "fourier": 10, "energy": 10},
    )

    #: The probes' per-step cache of unit columns: transient, not state.
    state_exclude = ("_unit_cache",)

    def declared_streams(self) -> tuple[Stream, ...]:
        p = self.params
        return grokking_streams(p["p"], p["ipr_convention"], p["energy_centring"])

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        p, h, dev = self.params["p"], self.params["width"], self.device
        gen = torch.Generator().manual_seed(self.seed)
        pairs = torch.randperm(p * p, generator=gen)
        n_train = int(round(self.params["train_fraction"] * p * p))
        if not 1 <= n_train < p * p:
            raise SpecError(f"train_fraction {self.params['train_fraction']} leaves no train or test pairs")
        a_all, b_all = pairs // p, pairs % p
        y_all = (a_all + b_all) % p
        self._a, self._b, self._y = (t[:n_train].to(dev) for t in (a_all, b_all, y_all))
        self._ta, self._tb, self._ty = (t[n_train:].to(dev) for t in (a_all, b_all, y_all))
        # The probes work in float64, which MPS lacks: there they run on the CPU.
        self._probe_device = "cpu" if str(dev).startswith("mps") else dev
        self._probe_data = tuple(t.to(self._probe_device) for t in (self._a, self._b, self._y))

        # Default nn.Linear init on the concatenated one-hot input (fan_in = 2p), as in the
        # recipe; the global RNG was seeded by the base class. Stored transposed, (2p, h),
        # so a forward pass is two row gathers instead of a one-hot matmul.
        first = torch.nn.Linear(2 * p, h, bias=False)
        second = torch.nn.Linear(h, p, bias=False)
        self.w_in = first.weight.detach().T.contiguous().to(dev).requires_grad_(True)
        self.w_out = second.weight.detach().to(dev).requires_grad_(True)
        self.optimizers = [self._make_optimizer(self.params["optimizer"])]
        self._const = torch.tensor([self.params["train_fraction"], critical_fraction(p)], dtype=torch.float32)
        self.phases: dict[str, int] = {}
        self._ipr0: float | None = None
        self._dead_warned = False
        self._unit_cache: tuple[int, torch.Tensor, torch.Tensor] | None = None

    def _forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        p = self.params["p"]
        z = self.w_in.index_select(0, a) + self.w_in.index_select(0, b + p)
        return z.square() @ self.w_out.T

    def _make_optimizer(self, kind: str) -> torch.optim.Optimizer:
        lr, wd, ps = self.params["lr"], self.params["weight_decay"], [self.w_in, self.w_out]
        if kind == "adam":
            return torch.optim.Adam(ps, lr=lr, weight_decay=wd)
        if kind == "adamw":
            return torch.optim.AdamW(ps, lr=lr, weight_decay=wd)
        return Muon(ps, lr=lr, weight_decay=wd)

    # ------------------------------------------------------------------ live changes
    def on_set(self, name: str, new: Any, old: Any) -> None:
        super().on_set(name, new, old)
        if name == "optimizer" and new != old:
            fresh = self._make_optimizer(new)
            if {old, new} == {"adam", "adamw"}:
                # Same state layout (step, exp_avg, exp_avg_sq): carry the moments over so
                # only the weight-decay style changes, not the step-size history.
                for w in (self.w_in, self.w_out):
                    if w in self.optimizers[0].state:
                        fresh.state[w] = self.optimizers[0].state[w]
                note = "moment estimates kept; only the weight-decay style changes"
            elif new == "muon":
                note = "Muon's momentum starts from zero"
            else:
                note = f"{new}'s moment estimates start from zero (bias correction restarts)"
            self.optimizers = [fresh]
            self.emit("info", message=f"optimizer {old} → {new}: weights kept, {note}")

    # ------------------------------------------------------------------ one epoch
    def train_step(self, step: int) -> Mapping[str, Any]:
        p = self.params["p"]
        out: dict[str, Any] = {}
        if self.due("fourier", step):
            with self.timed("fourier"), torch.no_grad():
                out.update(self._fourier_probe())
        if self.due("energy", step):
            with self.timed("energy"), torch.no_grad():
                out["li2_energy"] = self._energy_probe()

        logits = self._forward(self._a, self._b)
        loss = F.cross_entropy(logits, self._y)
        with torch.no_grad():
            metrics = [loss.detach(), (logits.argmax(dim=1) == self._y).float().mean()]
            testing = self.due("test", step)
            if testing:
                with self.timed("test"):
                    test_logits = self._forward(self._ta, self._tb)
                    metrics += [
                        F.cross_entropy(test_logits, self._ty),
                        (test_logits.argmax(dim=1) == self._ty).float().mean(),
                    ]
            norms = torch.stack([self.w_in[:p].norm(), self.w_in[p:].norm(), self.w_out.norm()])
            # One device→host copy per step: these numbers are the streams anyway, and the
            # phase detector needs the accuracies.
            values = torch.stack(metrics).cpu().numpy()

        self.optimizers[0].zero_grad(set_to_none=True)
        loss.backward()
        self.optimizers[0].step()

        out.update(
            train_loss=values[0],
            train_accuracy=values[1],
            weight_norm=norms,
            train_fraction=self._const[0],
            critical_fraction=self._const[1],
        )
        self._detect(step, "memorisation", values[1] >= MEMORISED_ACCURACY, train_accuracy=float(values[1]))
        if testing:
            out.update(test_loss=values[2], test_accuracy=values[3])
            self._detect(
                step, "generalisation", values[3] >= GENERALISED_ACCURACY, test_accuracy=float(values[3])
            )
        return out

    def _live_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit-norm float64 columns of W_in on the probe device, and the mask of live neurons.

        Computed once per step and shared by the Fourier and energy probes (the weights do
        not change between them: both run before the update).
        """
        cached = self._unit_cache
        if cached is not None and cached[0] == self.step_count:
            return cached[1], cached[2]
        w_hat, norms = normalised_columns(self.w_in.detach().to(self._probe_device))
        live = ~dead_neurons(norms)
        self._unit_cache = (self.step_count, w_hat, live)
        return w_hat, live

    def _energy_probe(self) -> torch.Tensor:
        w_hat, live = self._live_weights()
        a, b, y = self._probe_data
        energy = li2_energy_of_unit_columns(w_hat, a, b, y, self.params["p"], self.params["energy_centring"])
        return energy[live].mean()  # NaN once every neuron has died

    def _fourier_probe(self) -> dict[str, Any]:
        p = self.params["p"]
        w_hat, live = self._live_weights()
        # Spectra of the unit columns (restricted to W_a), in float64: a neuron decayed to
        # 1e-30 still has a well-defined direction, and its power no longer underflows.
        unit = fourier_power(w_hat[:p])  # (p//2+1, h), one-sided: the heatmap's and shares' axis
        power = unit if self.params["ipr_convention"] == "one-sided" else fourier_power(w_hat[:p], "full-dft")
        ipr = fourier_ipr(power)[live].mean()
        per_freq = fourier_power(self.w_in.detach()[:p].to(self._probe_device)).sum(dim=1)
        total = unit.sum(dim=0, keepdim=True)
        shares = unit / torch.where(total > 0, total, torch.ones_like(total))
        top = torch.topk(shares[:, live], 5, dim=0)  # (5, live): each neuron's own strongest frequencies
        cols = shares[:, :HEATMAP_NEURONS]
        dead = live.numel() - int(live.sum())  # one host sync, beside float(ipr)'s
        self._warn_dead(dead, live.numel())
        ipr_value = float(ipr)
        if self._ipr0 is None:
            self._ipr0 = ipr_value
        # The most common dominant frequencies, for the event's text.
        counts = torch.bincount(top.indices[0], minlength=unit.shape[0])
        key = [int(k) for k in torch.topk(counts, 5).indices.cpu()]
        self._detect(
            self.step_count,
            "feature emergence",
            ipr_value >= EMERGENCE_FACTOR * self._ipr0,
            fourier_ipr=ipr_value,
            initial_ipr=self._ipr0,
            key_frequencies=key,
        )
        return {
            "fourier_ipr": ipr,
            "dead_neurons": float(dead),
            "frequency_power": per_freq,
            "fourier_power": cols,
            "key_frequencies": top.values.mean(dim=1),
        }

    def _warn_dead(self, dead: int, width: int) -> None:
        """One ``warning`` event the first time most of the hidden layer has died."""
        if dead > width // 2 and not self._dead_warned:
            self._dead_warned = True
            self.emit(
                "warning",
                message=(
                    f"{dead} of {width} hidden neurons have died (input-weight norm below "
                    f"{DEAD_RELATIVE_NORM:g} of the largest): weight decay is shrinking the "
                    "unused ones; per-neuron means now cover the live ones only"
                ),
                dead_neurons=dead,
                width=width,
            )

    def _detect(self, step: int, phase: str, reached: bool, **detail: Any) -> None:
        """Emit a ``phase`` event the first time ``reached`` holds."""
        if reached and phase not in self.phases:
            self.phases[phase] = step
            self.emit("phase", name=phase, **detail)
