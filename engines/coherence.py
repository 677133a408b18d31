"""Gradient coherence on real vs random labels (Chatterjee & Zielinski 2022).

Two copies of one MLP (same initial weights, same minibatch order) train side by side
on sklearn's digits: one on the real labels, one on a fixed random permutation of them.
At a cadence, the m-coherence of per-example gradients on a fixed subset of m examples
is measured for each. Real labels make many examples pull the same way (high
coherence); random labels make gradients nearly orthogonal (m-coherence ≈ 1 or below).

One engine step is one SGD minibatch update of each model; with 1797 examples and
batch 64, an epoch is 29 steps (the last batch of an epoch is short).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from dynlab.engines.base import Engine
from dynlab.engines.data import Minibatches, digits_scaled
from dynlab.engines.probes.coherence import model_m_coherence
from dynlab.engines.spec import EngineSpec, Param, Stream

_LABELS = ("real", "random")


def make_mlp(width: int) -> nn.Sequential:
    """The 64-width-width-10 ReLU MLP of the recipe."""
    return nn.Sequential(
        nn.Linear(64, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10)
    )


class GradientCoherence(Engine):
    """Real-label and random-label MLPs trained side by side, with their m-coherence."""

    spec = EngineSpec(
        name="gradient-coherence",
        title="Gradient coherence: real vs random labels",
        description="m-coherence of per-example gradients separates real labels from random ones.",
        paper="Chatterjee & Zielinski, On the Generalization Mystery in Deep Learning, 2022",
        params=(
            Param(
                "lr", "float", 0.05, 1e-4, 1.0, live=True, log=True, help="SGD learning rate (both models)."
            ),
            Param("batch_size", "int", 64, 1, 1797, help="Minibatch size; one step is one minibatch."),
            Param("width", "int", 256, 8, 1024, help="Hidden width of the 64-w-w-10 ReLU MLP."),
            Param(
                "coherence_samples",
                "int",
                512,
                2,
                1797,
                help="m: size of the fixed example subset on which coherence is measured.",
            ),
        ),
        streams=(
            Stream(
                "m_coherence",
                "vector",
                (2,),
                labels=_LABELS,
                units="examples",
                description=(
                    "m-coherence m·||ḡ||²/mean||g_z||² of per-example cross-entropy gradients on a fixed "
                    "subset of m examples, for the model trained on real labels and the one on random labels."
                ),
                theory=(
                    "Real labels: well above 1 (many examples benefit from one example's step), "
                    "especially early. Random labels: about 1 or below (orthogonal or slightly "
                    "anti-aligned gradients); it may creep up late in training."
                ),
            ),
            Stream(
                "train_loss",
                "vector",
                (2,),
                labels=_LABELS,
                description="Cross-entropy of the minibatch each model's update uses.",
                theory="Real labels are fitted fast; random labels only by memorisation, much later.",
            ),
            Stream(
                "train_accuracy",
                "vector",
                (2,),
                labels=_LABELS,
                description="Accuracy on the minibatch each model's update uses (against its own labels).",
                theory="Random labels stay near chance (0.1) until the network starts memorising.",
            ),
        ),
        probes={"coherence": 29},
    )

    def setup(self) -> None:
        gen = torch.Generator().manual_seed(self.seed)
        x, y = digits_scaled()
        y_rand = y[torch.randperm(len(y), generator=gen)]
        dev = self.device
        self.x = x.to(dev)
        self.ys = (y.to(dev), y_rand.to(dev))
        m = min(self.params["coherence_samples"], len(x))
        self.subset = torch.randperm(len(x), generator=gen)[:m].to(dev)
        base = make_mlp(self.params["width"])
        self.models: list[nn.Module] = []
        for _ in _LABELS:
            model = make_mlp(self.params["width"]).to(dev)
            model.load_state_dict(base.state_dict())  # identical start: only the labels differ
            self.models.append(model)
        self.optimizers = [torch.optim.SGD(mdl.parameters(), lr=self.params["lr"]) for mdl in self.models]
        # The same generator goes on to shuffle the epochs; an epoch's last batch is short.
        self._batches = Minibatches(len(x), gen, drop_last=False)

    def train_step(self, step: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.due("coherence", step):
            with self.timed("coherence"):
                xs = self.x[self.subset]
                out["m_coherence"] = np.array(
                    [model_m_coherence(mdl, xs, ys[self.subset]) for mdl, ys in zip(self.models, self.ys)]
                )
        idx = self._batches.next_batch(self.params["batch_size"], self.device)
        losses, accs = [], []
        for mdl, opt, ys in zip(self.models, self.optimizers, self.ys):
            logits = mdl(self.x[idx])
            loss = nn.functional.cross_entropy(logits, ys[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.detach())
            accs.append((logits.detach().argmax(1) == ys[idx]).float().mean())
        out["train_loss"] = torch.stack(losses)
        out["train_accuracy"] = torch.stack(accs)
        return out
