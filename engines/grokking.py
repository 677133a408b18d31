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


def critical_fraction(p: int) -> float:
    """Li₂'s critical training fraction ≈ 2.75 ln p / p (≈ 0.13 for p = 97).

    Below it the generalising (Fourier) features stop being local maxima of the
    per-node energy, so the network memorises without generalising.
    """
    return CRITICAL_RATIO_CONSTANT * math.log(p) / p


def fourier_power(w_tokens: torch.Tensor) -> torch.Tensor:
    """Fourier power of each neuron's input weights over the token axis.

    Parameters
    ----------
    w_tokens
        ``(p, h)``: row ``a`` holds every neuron's weight on token ``a``.

    Returns
    -------
    torch.Tensor
        ``(p // 2 + 1, h)``: ``|rfft_k|²`` for k = 0..⌊p/2⌋, per neuron.
    """
    return torch.fft.rfft(w_tokens, dim=0).abs().square()


def fourier_ipr(power: torch.Tensor) -> torch.Tensor:
    """Per-neuron inverse participation ratio Σ_k P_k² / (Σ_k P_k)² (Gromov 2023).

    ≈ 2/(p/2) for random weights, → 1 for a neuron tuned to a single frequency.
    """
    total = power.sum(dim=0)
    return power.square().sum(dim=0) / total.square().clamp_min(1e-30)


def li2_energy(
    w_in: torch.Tensor, a: torch.Tensor, b: torch.Tensor, y_centred: torch.Tensor, p: int
) -> torch.Tensor:
    """Normalised Li₂ energy per hidden node: ½‖Ỹᵀσ(Xŵ)‖² / n with ŵ = w/‖w‖ and σ(z) = z².

    The form follows ``SCIENCE.md`` §5, which marks it as a recollection of Tian 2025's
    E(w); it was not checked against the paper's text. Normalising w makes E a
    measure of the *direction* a node has found, not of its growing norm.

    Parameters
    ----------
    w_in
        ``(2p, h)`` input weights (rows 0..p-1 for token a, p..2p-1 for token b).
    a, b
        ``(n,)`` training inputs.
    y_centred
        ``(n, p)`` one-hot labels centred over the training samples.
    """
    w_hat = w_in / w_in.norm(dim=0, keepdim=True).clamp_min(1e-30)
    act = (w_hat.index_select(0, a) + w_hat.index_select(0, b + p)).square()  # (n, h)
    proj = y_centred.T @ act  # (p, h): the label correlation of each node's activation
    return 0.5 * proj.square().sum(dim=0) / a.numel()


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


def grokking_streams(p: int) -> tuple[Stream, ...]:
    """The engine's streams for modulus ``p`` (frequency axes have ⌊p/2⌋ + 1 entries)."""
    k_labels = tuple(f"k={k}" for k in range(p // 2 + 1))
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
            description="Mean over neurons of the inverse participation ratio of W_a's Fourier power.",
            theory=(
                "≈ 2/(p/2) at init; rises as each neuron tunes to one frequency "
                "(feature emergence precedes the test-accuracy jump)."
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
                "Mean over neurons of the share of a neuron's W_a Fourier power in its "
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
            description="Mean over hidden nodes of ½‖Ỹᵀσ(Xŵ)‖²/n, ŵ = w/‖w‖ (normalised Li₂ energy).",
            theory="Li₂ stage II: each node ascends this energy; it rises after memorisation.",
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

    def declared_streams(self) -> tuple[Stream, ...]:
        return grokking_streams(self.params["p"])

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
        onehot = F.one_hot(self._y, p).float()
        self._y_centred = onehot - onehot.mean(dim=0, keepdim=True)

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
                out["li2_energy"] = li2_energy(self.w_in, self._a, self._b, self._y_centred, p).mean()

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

    def _fourier_probe(self) -> dict[str, Any]:
        p = self.params["p"]
        power = fourier_power(self.w_in[:p])  # (p//2+1, h)
        ipr = fourier_ipr(power).mean()
        per_freq = power.sum(dim=1)
        shares = power / power.sum(dim=0, keepdim=True).clamp_min(1e-30)
        top = torch.topk(shares, 5, dim=0)  # (5, h): each neuron's own strongest frequencies
        cols = shares[:, :HEATMAP_NEURONS]
        ipr_value = float(ipr)
        if self._ipr0 is None:
            self._ipr0 = ipr_value
        # The most common dominant frequencies, for the event's text.
        counts = torch.bincount(top.indices[0], minlength=power.shape[0])
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
            "frequency_power": per_freq,
            "fourier_power": cols,
            "key_frequencies": top.values.mean(dim=1),
        }

    def _detect(self, step: int, phase: str, reached: bool, **detail: Any) -> None:
        """Emit a ``phase`` event the first time ``reached`` holds."""
        if reached and phase not in self.phases:
            self.phases[phase] = step
            self.emit("phase", name=phase, **detail)
