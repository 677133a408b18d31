"""Mixed symmetries: PER, one projection regulariser per candidate symmetry (Kim et al. 2023).

The task: regress a function of 7×7 images that is invariant to one mirror (by default
left↔right) and not to the other (up↔down). Two candidate symmetries, one true.

Three copies of one MLP train side by side, full batch, with Adam and a cosine schedule:

* **unconstrained**: plain training;
* **PER**: for each candidate group G_k and each layer, the penalty is the squared distance
  of the layer's weights to the G_k-equivariant subspace,
  R_k = Σ_l ½‖W_l − P_k W_l‖² + ½‖b_l − P_k b_l‖², and the loss is MSE + Σ_k λ_k R_k;
* **hard**: every layer projected onto the subspace equivariant to *both* mirrors (the
  Klein group {e, r180, m_lr, m_ud}), i.e. an exactly invariant model.

The MLP's hidden layers are C-channel 7×7 images, so each group acts on every layer by
permuting pixels (as EMLP's hidden layers carry a representation of each candidate group),
and P_k is the group average W ↦ (1/|G_k|) Σ_g ρ_out(g) W ρ_in(g)ᵀ: for permutation
representations that is the orthogonal projector onto the equivariant maps.

Strength tuning follows the official code (``kim-hyunsu/PER``,
``experiments/mixed-symmetry/train_softemlp_checkpoint.py``, ``AdjustEquiv`` with
``--auto_equiv``): train with equal strengths λ₀; over a window before step T track the
smallest vector of projection distances seen (the whole vector is replaced when any entry
drops below its stored value); at T divide each λ_k by (R_k / min_j R_j)^p. The window is
the code's with ``--logoff`` (100 epochs less a 50-epoch warm-up); with its default logging
the tracking starts after epoch 50 instead. The symmetry the data have is the one the
weights stay closest to, so it keeps λ₀ and the others drop. As in the code, the reported
test error is the one at the best validation error, searched only after step 2T for PER;
the baselines, which have nothing to tune, are searched from the start (validation every
``test`` probe).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dynlab.engines.base import Engine
from dynlab.engines.probes.equivariance import D4, d4_act, layer_errors, relative_error, trivial
from dynlab.engines.spec import EngineSpec, Param, SpecError, Stream

#: The two candidate symmetries, as D4 elements (see ``d4_act``): 4 mirrors left↔right
#: (flips the last axis), 6 mirrors up↔down.
MIRRORS: dict[str, int] = {"left-right": 4, "up-down": 6}
#: The group both mirrors generate: {e, r180, m_lr, m_ud}.
KLEIN: tuple[int, ...] = (0, 2, 4, 6)
MODELS: tuple[str, ...] = ("unconstrained", "PER", "hard (both mirrors)")


def pixel_permutations(size: int) -> Tensor:
    """Row k is the pixel permutation of D4 element k: ``(g·x).flatten() == x.flatten()[perm[k]]``."""
    idx = torch.arange(size * size).reshape(1, size, size)
    return torch.stack([d4_act(k, idx).reshape(-1) for k in range(8)])


def project(w: Tensor, perms: Tensor, in_pixels: bool, out_pixels: bool) -> Tensor:
    """Average of ρ_out(g) W ρ_in(g)ᵀ over the permutations ``perms`` (one row per element).

    ``w`` has shape (out, in); an axis flagged as pixels is (channels × P) with the group
    permuting the P pixels of every channel, an unflagged axis is invariant. For a group
    this is the orthogonal projection onto the equivariant (or invariant) maps.
    """
    P = perms.shape[1]
    total = torch.zeros_like(w)
    for p in perms:
        g = w
        if out_pixels:
            g = g.reshape(-1, P, g.shape[-1])[:, p, :].reshape(w.shape)
        if in_pixels:
            g = g.reshape(g.shape[0], -1, P)[:, :, p].reshape(w.shape)
        total = total + g
    return total / perms.shape[0]


class PixelMLP(nn.Module):
    """Image (1 × S × S) → C×S×S → C×S×S → scalar, SiLU between, fully connected.

    ``constrain`` (D4 element indices) projects every weight and bias onto the subspace
    equivariant to the group they form, at every forward pass: a hard-equivariant model.
    """

    def __init__(self, size: int, channels: int, perms: Tensor, constrain: Sequence[int] = ()) -> None:
        super().__init__()
        P = size * size
        self.size, self.channels = size, channels
        self.fc1 = nn.Linear(P, channels * P)
        self.fc2 = nn.Linear(channels * P, channels * P)
        self.head = nn.Linear(channels * P, 1)
        self.pixel_axes = ((True, True), (True, True), (True, False))  # (in, out) per layer
        self.perms: Tensor
        self.register_buffer("perms", perms)
        self.constrain = tuple(constrain)

    @property
    def linears(self) -> tuple[nn.Linear, nn.Linear, nn.Linear]:
        return self.fc1, self.fc2, self.head

    def layers(self) -> list[tuple[Tensor, Tensor, bool, bool]]:
        """(weight, bias, input is pixels, output is pixels) per layer, as the forward pass uses them."""
        out: list[tuple[Tensor, Tensor, bool, bool]] = []
        for lin, (pin, pout) in zip(self.linears, self.pixel_axes):
            w: Tensor = lin.weight
            b: Tensor = lin.bias
            if self.constrain:
                perms = self.perms[list(self.constrain)]
                w = project(w, perms, pin, pout)
                b = project(b[:, None], perms, False, pout)[:, 0]
            out.append((w, b, pin, pout))
        return out

    def features(self, x: Tensor) -> dict[str, Tensor]:
        B, S, C = x.shape[0], self.size, self.channels
        h = x.reshape(B, -1)
        feats = {}
        for i, (w, b, _, _) in enumerate(self.layers()):
            h = F.linear(h, w, b)
            if i < 2:
                h = F.silu(h)
                feats[f"hidden {i + 1}"] = h.reshape(B, C, S, S)
        feats["output"] = h
        return feats

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)["output"]

    def distance(self, elements: Sequence[int]) -> Tensor:
        """R = Σ_l ½‖W_l − P W_l‖² + ½‖b_l − P b_l‖² for the group of ``elements`` (PER's regulariser)."""
        perms = self.perms[list(elements)]
        r = torch.zeros((), dtype=self.fc1.weight.dtype, device=self.perms.device)
        for w, b, pin, pout in self.layers():
            r = r + 0.5 * (w - project(w, perms, pin, pout)).pow(2).sum()
            r = r + 0.5 * (b - project(b[:, None], perms, False, pout)[:, 0]).pow(2).sum()
        return r


def teacher_target(x: Tensor, seed: int, hidden: int, mirror: int, perms: Tensor) -> Tensor:
    """y = ½(t(x) + t(m x)), t a random one-hidden-layer tanh net: invariant to mirror ``m`` only."""
    gen = torch.Generator().manual_seed(10_007 * seed + 1)
    P = perms.shape[1]
    U = torch.randn(hidden, P, generator=gen, dtype=torch.float64) / math.sqrt(P)
    c = torch.randn(hidden, generator=gen, dtype=torch.float64)
    flat = x.reshape(x.shape[0], -1).double().cpu()

    def t(z: Tensor) -> Tensor:
        return torch.tanh(2.0 * z @ U.T) @ c

    y = 0.5 * (t(flat) + t(flat[:, perms[mirror]]))
    return y.unsqueeze(-1).to(x)


class PerTuner:
    """The strength rule of the official PER code (``AdjustEquiv``), in steps instead of epochs.

    Parameters
    ----------
    lam0
        The equal starting strength of every candidate group.
    adjust_at
        Step T at which the strengths are set.
    window
        Steps before T over which the smallest distance vector is tracked (the code: a
        100-epoch window whose first 50 updates are a warm-up, so 50 effective).
    power
        p in λ_k ← λ_k / (R_k / min_j R_j)^p.
    """

    def __init__(self, lam0: float, n_groups: int, adjust_at: int, window: int, power: float) -> None:
        self.lam = torch.full((n_groups,), float(lam0), dtype=torch.float64)
        self.adjust_at, self.window, self.power = adjust_at, window, power
        self.min_distance: Tensor | None = None
        self.done = False

    def observe(self, updates: int, distances: Tensor) -> bool:
        """Feed the distances after ``updates`` updates; returns True when the strengths were just set."""
        if self.done or updates <= self.adjust_at - self.window:
            return False
        d = distances.detach().double().cpu()
        if self.min_distance is None or bool((d < self.min_distance).any()):
            self.min_distance = d  # the code replaces the whole vector, not entry by entry
        if updates == self.adjust_at:
            active = self.lam > 0
            ref = self.min_distance[active].min() if bool(active.any()) else self.min_distance.min()
            self.lam = self.lam / (self.min_distance / ref).pow(self.power)
            self.done = True
            return True
        return False


class EquivarianceMixed(Engine):
    """Unconstrained, PER and hard-equivariant MLPs side by side on a one-mirror-symmetric target."""

    spec = EngineSpec(
        name="equivariance-mixed",
        title="Mixed symmetries: PER finds which mirror the data respect",
        description=(
            "One projection regulariser per candidate symmetry, strengths set by PER's rule; "
            "against an unconstrained and a hard-equivariant model."
        ),
        paper="Kim, Lee, Yang, Lee, Regularizing Towards Soft Equivariance Under Mixed Symmetries (PER), ICML 2023",
        params=(
            Param(
                "symmetry",
                "str",
                "left-right",
                choices=tuple(MIRRORS),
                help="the mirror the target is invariant to (the other one it is not)",
            ),
            Param(
                "reg_init",
                "float",
                10.0,
                low=0.0,
                high=1e5,
                log=True,
                help="λ₀, the equal starting strength of both projection regularisers",
            ),
            Param(
                "tune",
                "bool",
                True,
                help="apply PER's rule at adjust_at (off: both strengths stay at reg_init)",
            ),
            Param("adjust_at", "int", 150, low=2, high=1_000_000, unit="steps", help="step T of PER's rule"),
            Param(
                "window",
                "int",
                50,
                low=1,
                high=1_000_000,
                unit="steps",
                help="steps before T over which the smallest distances are tracked",
            ),
            Param("adjust_power", "float", 2.0, low=0.0, high=20.0, help="p in λ_k / (R_k / min R)^p"),
            Param(
                "lr", "float", 3e-3, low=1e-6, high=1.0, live=True, log=True, help="peak Adam learning rate"
            ),
            Param(
                "schedule_steps",
                "int",
                600,
                low=1,
                high=10_000_000,
                unit="steps",
                help="length of the cosine learning-rate decay (lr is 0 after it)",
            ),
            Param("channels", "int", 4, low=1, high=64, help="channels of the hidden 7×7 layers"),
            Param("image_size", "int", 7, low=3, high=15, unit="px", help="side of the square images"),
            Param("teacher_hidden", "int", 8, low=1, high=256, help="hidden units of the random target net"),
            Param("n_train", "int", 256, low=8, high=100_000, help="training images (full batch)"),
            Param("n_val", "int", 256, low=8, high=100_000, help="validation images (model selection)"),
            Param(
                "n_test", "int", 512, low=8, high=100_000, help="test images (the probe uses the first 64)"
            ),
        ),
        streams=(),
        probes={"equivariance": 25, "test": 10},
    )
    guarded = ("train_loss", "test_loss")

    def declared_streams(self) -> tuple[Stream, ...]:
        right, wrong = self._mirror_names()
        cols = ("e", "r180", "mirror left-right", "mirror up-down")
        return (
            Stream(
                "train_loss",
                "vector",
                (3,),
                labels=MODELS,
                log_scale=True,
                description="Mean squared error on the training images (without penalties), per model.",
                theory="The unconstrained model fits fastest; the hard model cannot fit the part the wrong mirror changes.",
            ),
            Stream(
                "test_loss",
                "vector",
                (3,),
                labels=MODELS,
                log_scale=True,
                description="Mean squared error on held-out images, per model (targets have unit variance).",
                theory="PER: below both the unconstrained and the hard-equivariant model.",
            ),
            Stream(
                "selected_test_loss",
                "vector",
                (3,),
                labels=MODELS,
                log_scale=True,
                description=(
                    "Test MSE at the step of lowest validation MSE so far (the number the paper reports); "
                    "PER's search starts at 2·adjust_at, as in the official code."
                ),
                theory="PER lowest.",
            ),
            Stream(
                "reg_strength",
                "vector",
                (2,),
                labels=tuple(f"λ {m}" for m in MIRRORS),
                log_scale=True,
                description="PER's strength λ_k of each candidate symmetry's projection regulariser.",
                theory=(
                    f"Equal until adjust_at; then the {right} mirror (the data's) keeps λ₀ and the {wrong} "
                    "mirror's λ drops by (R_wrong/R_right)^p."
                ),
            ),
            Stream(
                "projection_distance",
                "vector",
                (4,),
                labels=tuple(f"{model}: {m}" for model in ("PER", "unconstrained") for m in MIRRORS),
                log_scale=True,
                description="R_k = Σ_l ½‖W_l − P_k W_l‖² + ½‖b_l − P_k b_l‖²: distance of the weights to each group's equivariant subspace.",
                theory=f"The data pull the weights away from the {wrong} mirror's subspace only.",
            ),
            Stream(
                "equivariance_error",
                "heatmap",
                (3, 4),
                rows=("hidden 1", "hidden 2", "output"),
                cols=cols,
                log_scale=True,
                description=(
                    "PER model: ‖f_l(g·x) − g·f_l(x)‖ / ‖f_l(x)‖ of every layer (rows) for the elements "
                    "the two mirrors generate (columns), on test images; hidden layers are 7×7 maps the group moves."
                ),
                theory=f"Small in the {right}-mirror column at every layer, large in the {wrong} one.",
            ),
            Stream(
                "output_equivariance_error",
                "vector",
                (2,),
                labels=tuple(MIRRORS),
                log_scale=True,
                description="PER model's output invariance error under each mirror.",
                theory="The data's mirror → small; the other → the target's own error (reference line).",
            ),
            Stream(
                "target_wrong_mirror_error",
                "scalar",
                description=f"The target's own error under the {wrong} mirror: what a perfect fit shows there.",
            ),
        )

    def _mirror_names(self) -> tuple[str, str]:
        right = self.params["symmetry"]
        wrong = next(m for m in MIRRORS if m != right)
        return right, wrong

    def setup(self) -> None:
        p = self.params
        if p["window"] >= p["adjust_at"]:
            raise SpecError(f"window ({p['window']}) must be smaller than adjust_at ({p['adjust_at']})")
        dev, size = self.device, p["image_size"]
        self.perms = pixel_permutations(size)
        right, wrong = self._mirror_names()
        gen = torch.Generator().manual_seed(1_000_003 * self.seed + 7)
        xs = [torch.randn(p[k], 1, size, size, generator=gen) for k in ("n_train", "n_val", "n_test")]
        raw = [teacher_target(x, self.seed, p["teacher_hidden"], MIRRORS[right], self.perms) for x in xs]
        mean, std = raw[0].mean(), raw[0].std()
        (self.x_train, self.x_val, self.x_test) = (x.to(dev) for x in xs)
        (self.y_train, self.y_val, self.y_test) = (((y - mean) / std).to(dev) for y in raw)
        self.x_probe = self.x_test[:64]
        moved = teacher_target(
            d4_act(MIRRORS[wrong], xs[2][:64]), self.seed, p["teacher_hidden"], MIRRORS[right], self.perms
        )
        self.target_wrong_error = relative_error((moved - mean) / std, self.y_probe, self.y_probe)
        self.models = [
            PixelMLP(size, p["channels"], self.perms),
            PixelMLP(size, p["channels"], self.perms),
            PixelMLP(size, p["channels"], self.perms, constrain=KLEIN),
        ]
        for m in self.models[1:]:  # one initialisation for all three: differences are the method's
            m.load_state_dict(self.models[0].state_dict())
        self.models = [m.to(dev) for m in self.models]
        self.optimizers = [torch.optim.Adam(m.parameters(), lr=p["lr"]) for m in self.models]
        self.groups = [(0, MIRRORS[m]) for m in MIRRORS]
        self.tuner = PerTuner(p["reg_init"], len(MIRRORS), p["adjust_at"], p["window"], p["adjust_power"])
        self.best_val = [math.inf] * 3
        self.selected_test = [math.nan] * 3

    @property
    def y_probe(self) -> Tensor:
        return self.y_test[:64]

    def _lr(self, step: int) -> float:
        total = self.params["schedule_steps"]
        return self.params["lr"] * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))

    def _probe(self) -> dict[str, Any]:
        model = self.models[1]
        reps = {"hidden 1": d4_act, "hidden 2": d4_act, "output": trivial}
        with torch.no_grad():
            err = layer_errors(model.features, self.x_probe, D4, reps, elements=KLEIN)
        return {"equivariance_error": err, "output_equivariance_error": err[-1, 2:]}

    def _evaluate(self, step: int) -> dict[str, Any]:
        with torch.no_grad():
            val = [F.mse_loss(m(self.x_val), self.y_val).item() for m in self.models]
            test = [F.mse_loss(m(self.x_test), self.y_test).item() for m in self.models]
        for i in range(3):
            searching = i != 1 or step > 2 * self.params["adjust_at"]
            if searching and val[i] < self.best_val[i]:
                self.best_val[i], self.selected_test[i] = val[i], test[i]
        out: dict[str, Any] = {"test_loss": np.array(test)}
        if not any(math.isnan(v) for v in self.selected_test):
            out["selected_test_loss"] = np.array(self.selected_test)
        return out

    def train_step(self, step: int) -> Mapping[str, Any]:
        out: dict[str, Any] = {"target_wrong_mirror_error": self.target_wrong_error}
        if self.due("equivariance", step):
            with self.timed("equivariance"):
                out.update(self._probe())
        if self.due("test", step):
            out.update(self._evaluate(step))
        lr = self._lr(step)
        # Distances of the model after `step` updates: streamed, fed to the rule, and penalised.
        dist = torch.stack([self.models[1].distance(g) for g in self.groups])
        if self.params["tune"] and self.tuner.observe(step, dist):
            self.emit(
                "phase",
                name="PER strengths set",
                **{f"lambda {m}": float(v) for m, v in zip(MIRRORS, self.tuner.lam)},
            )
        with torch.no_grad():
            free_dist = torch.stack([self.models[0].distance(g) for g in self.groups])
        out["projection_distance"] = torch.cat([dist.detach(), free_dist])
        lam = self.tuner.lam
        out["reg_strength"] = lam.numpy().copy()
        train = []
        for i, (model, opt) in enumerate(zip(self.models, self.optimizers)):
            for group in opt.param_groups:
                group["lr"] = lr
            mse = F.mse_loss(model(self.x_train), self.y_train)
            loss = mse + (lam.to(dist) * dist).sum() if i == 1 else mse
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            train.append(mse.item())
        out["train_loss"] = np.array(train)
        return out
