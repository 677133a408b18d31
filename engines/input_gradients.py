"""Do input gradients highlight discriminative features? (Shah, Jain, Netrapalli, NeurIPS 2021).

BlockDigits, built from sklearn's 8×8 digits the way the paper builds BlockMNIST from
MNIST: every image stacks two 8×8 blocks vertically (16×8). One is the *signal* block, a
digit of one of two classes (the label); the other is the *null* block, one fixed pattern
(a hollow square) that is the same in every image and so carries no information about the
label. Which block is on top is drawn at random, per image.

A standard MLP and an ℓ2-adversarially-trained copy (PGD, Madry et al.), from the same
initial weights and minibatches, train side by side. The probe takes the input gradient of
the true class's logit on every test image and measures the fraction of its ℓ1 mass that
falls on the signal block. The paper's finding: standard models' gradients leak onto the
null block (where a digit could have been), robust models' gradients concentrate on the
signal.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dynlab.engines.base import Engine
from dynlab.engines.data import digits_images
from dynlab.engines.spec import EngineSpec, Param, SpecError, Stream

MODELS: tuple[str, ...] = ("standard", "robust (ℓ2 PGD)")
BLOCK = 8  # sklearn digits are 8×8


def null_pattern() -> np.ndarray:
    """The null block: a hollow square, the same in every image."""
    b = np.zeros((BLOCK, BLOCK))
    b[1:7, 1:7] = 1.0
    b[2:6, 2:6] = 0.0
    return b


def block_digits(classes: tuple[int, int], seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BlockDigits images (n, 16, 8), labels (0 for ``classes[0]``, 1 for the other) and signal-on-top flags.

    Parameters
    ----------
    classes
        The two digit classes of the binary task.
    seed
        Draws which block goes on top, independently for every image.
    """
    images, target = digits_images()
    keep = np.isin(target, classes)
    digits, labels = images[keep], (target[keep] == classes[1]).astype(np.int64)
    top = np.random.default_rng(seed).random(len(digits)) < 0.5
    null = null_pattern()
    out = np.empty((len(digits), 2 * BLOCK, BLOCK))
    out[:, :BLOCK] = np.where(top[:, None, None], digits, null)
    out[:, BLOCK:] = np.where(top[:, None, None], null, digits)
    return out, labels, top


def pgd_l2(model: nn.Module, x: Tensor, y: Tensor, eps: float, steps: int) -> Tensor:
    """ℓ2 PGD from the clean point: normalised-gradient ascent steps of 2.5·ε/steps, projected on the ε-ball."""
    if eps <= 0 or steps <= 0:
        return x
    alpha = 2.5 * eps / steps
    delta = torch.zeros_like(x)
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = F.cross_entropy(model(x + delta), y)
        (g,) = torch.autograd.grad(loss, delta)
        g_norm = g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1)
        delta = delta.detach() + alpha * g / g_norm
        d_norm = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1)
        delta = delta * torch.clamp(eps / d_norm, max=1.0)
    return (x + delta).detach()


def input_gradients(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """∂ logit_y / ∂x for every image (the attribution the paper tests)."""
    x = x.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(x).gather(1, y[:, None]).sum(), x)
    return g


def signal_aligned(maps: Tensor, top: Tensor) -> Tensor:
    """Re-stack each (16, 8) map so its signal block is on top and its null block below."""
    swapped = torch.cat([maps[:, BLOCK:], maps[:, :BLOCK]], dim=1)
    return torch.where(top[:, None, None], maps, swapped)


def signal_fraction(grads: Tensor, top: Tensor) -> Tensor:
    """Per image, the fraction of Σ|g| that lies on the signal block."""
    aligned = signal_aligned(grads.abs(), top)
    return aligned[:, :BLOCK].flatten(1).sum(1) / aligned.flatten(1).sum(1).clamp_min(1e-30)


def make_mlp(width: int) -> nn.Sequential:
    """16×8 image → width → width → 2 logits, ReLU."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(2 * BLOCK * BLOCK, width),
        nn.ReLU(),
        nn.Linear(width, width),
        nn.ReLU(),
        nn.Linear(width, 2),
    )


_ROWS = tuple(f"signal {i + 1}" for i in range(BLOCK)) + tuple(f"null {i + 1}" for i in range(BLOCK))
_COLS = tuple(str(i + 1) for i in range(BLOCK))


class InputGradients(Engine):
    """Standard and ℓ2-robust MLPs on BlockDigits: where does the input gradient's mass fall?"""

    spec = EngineSpec(
        name="input-gradients",
        title="Input gradients: standard vs robust models on BlockDigits",
        description=(
            "Fraction of input-gradient mass on the discriminative block, for a standard and an "
            "ℓ2-adversarially-trained MLP."
        ),
        paper="Shah, Jain, Netrapalli, Do Input Gradients Highlight Discriminative Features?, NeurIPS 2021",
        params=(
            Param("class_a", "int", 0, low=0, high=9, help="digit class labelled 0"),
            Param("class_b", "int", 1, low=0, high=9, help="digit class labelled 1"),
            Param(
                "epsilon",
                "float",
                1.0,
                low=0.0,
                high=10.0,
                live=True,
                help="ℓ2 radius of the robust model's PGD attack (pixels in [0, 1]; 128 of them)",
            ),
            Param("pgd_steps", "int", 7, low=1, high=100, live=True, help="PGD steps per attack"),
            Param("lr", "float", 1e-3, low=1e-6, high=1.0, live=True, log=True, help="Adam learning rate"),
            Param("width", "int", 128, low=4, high=2048, help="hidden width of the two ReLU layers"),
            Param("batch_size", "int", 64, low=1, high=4096, help="images per step"),
            Param(
                "train_fraction",
                "float",
                0.7,
                low=0.1,
                high=0.95,
                help="share of the images used for training",
            ),
        ),
        streams=(
            Stream(
                "signal_fraction",
                "vector",
                (2,),
                labels=MODELS,
                description=(
                    "Mean over test images of Σ_signal|∂logit_y/∂x| / Σ_all|∂logit_y/∂x|: the share of "
                    "input-gradient mass on the digit block (0.5 = no preference)."
                ),
                theory=(
                    "Shah et al.: standard models leak gradient mass onto the null block (here ≈ 0.55); "
                    "robust models concentrate it on the signal block (here ≈ 0.7–0.75)."
                ),
            ),
            Stream(
                "gradient_map_standard",
                "heatmap",
                (2 * BLOCK, BLOCK),
                rows=_ROWS,
                cols=_COLS,
                description=(
                    "Standard model: mean over test images of |∂logit_y/∂x| (each image's map normalised to "
                    "sum 1), re-stacked so the signal block is on top and the null block below."
                ),
                theory="Bright in both halves: the gradient highlights where a digit could be, not where it is.",
            ),
            Stream(
                "gradient_map_robust",
                "heatmap",
                (2 * BLOCK, BLOCK),
                rows=_ROWS,
                cols=_COLS,
                description="As gradient_map_standard, for the ℓ2-robust model.",
                theory="Bright on the signal (top) half, dim on the null half.",
            ),
            Stream(
                "train_loss",
                "vector",
                (2,),
                labels=("standard (clean)", "robust (adversarial)"),
                log_scale=True,
                description="Cross-entropy on the step's minibatch: clean for the standard model, on PGD points for the robust one.",
            ),
            Stream(
                "test_accuracy",
                "vector",
                (2,),
                labels=MODELS,
                description="Accuracy on clean held-out images.",
                theory="Both near 1: the digits are easy; the models differ in how, not whether, they classify.",
            ),
            Stream(
                "adversarial_accuracy",
                "vector",
                (2,),
                labels=MODELS,
                description="Accuracy on held-out images under an ℓ2 PGD attack of radius epsilon.",
                theory="The robust model keeps most of it; the standard model loses much of it.",
            ),
        ),
        probes={"gradients": 25},
    )

    def setup(self) -> None:
        p = self.params
        if p["class_a"] == p["class_b"]:
            raise SpecError(f"class_a and class_b must differ; both are {p['class_a']}")
        images, labels, top = block_digits((p["class_a"], p["class_b"]), self.seed)
        order = np.random.default_rng(self.seed + 1).permutation(len(images))
        n_train = int(round(p["train_fraction"] * len(images)))
        dev = self.device

        def part(idx: np.ndarray) -> tuple[Tensor, Tensor, Tensor]:
            return (
                torch.tensor(images[idx], dtype=torch.float32, device=dev),
                torch.tensor(labels[idx], device=dev),
                torch.tensor(top[idx], device=dev),
            )

        self.x_train, self.y_train, _ = part(order[:n_train])
        self.x_test, self.y_test, self.top_test = part(order[n_train:])
        self.models = [make_mlp(p["width"]).to(dev), make_mlp(p["width"]).to(dev)]
        self.models[1].load_state_dict(self.models[0].state_dict())
        self.optimizers = [torch.optim.Adam(m.parameters(), lr=p["lr"]) for m in self.models]
        self.batch_gen = torch.Generator().manual_seed(self.seed + 17)

    def _probe(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        fractions, accs, adv_accs = [], [], []
        for model, key in zip(self.models, ("gradient_map_standard", "gradient_map_robust")):
            g = input_gradients(model, self.x_test, self.y_test)
            fractions.append(signal_fraction(g, self.top_test).mean())
            a = g.abs()
            a = a / a.flatten(1).sum(1).clamp_min(1e-30).view(-1, 1, 1)
            out[key] = signal_aligned(a, self.top_test).mean(0)
            x_adv = pgd_l2(model, self.x_test, self.y_test, self.params["epsilon"], self.params["pgd_steps"])
            with torch.no_grad():
                accs.append((model(self.x_test).argmax(1) == self.y_test).float().mean())
                adv_accs.append((model(x_adv).argmax(1) == self.y_test).float().mean())
        out["signal_fraction"] = torch.stack(fractions)
        out["test_accuracy"] = torch.stack(accs)
        out["adversarial_accuracy"] = torch.stack(adv_accs)
        return out

    def train_step(self, step: int) -> Mapping[str, Any]:
        out: dict[str, Any] = {}
        if self.due("gradients", step):
            with self.timed("gradients"):
                out.update(self._probe())
        n, b = self.x_train.shape[0], self.params["batch_size"]
        idx = torch.randint(0, n, (min(b, n),), generator=self.batch_gen).to(self.x_train.device)
        x, y = self.x_train[idx], self.y_train[idx]
        losses = []
        for i, (model, opt) in enumerate(zip(self.models, self.optimizers)):
            if i == 1:
                x = pgd_l2(model, x, y, self.params["epsilon"], self.params["pgd_steps"])
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.detach())
        out["train_loss"] = torch.stack(losses)
        return out
