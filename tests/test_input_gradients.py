"""Input gradients on BlockDigits (Shah, Jain, Netrapalli 2021): construction, probes and the claim."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynlab.engines.base import get_engine
from dynlab.engines.input_gradients import (
    BLOCK,
    block_digits,
    make_mlp,
    null_pattern,
    pgd_l2,
    signal_aligned,
    signal_fraction,
)
from dynlab.engines.spec import SpecError

torch.set_num_threads(1)


def test_block_digits_has_one_digit_block_and_one_fixed_null_block() -> None:
    images, labels, top = block_digits((3, 8), seed=0)
    assert images.shape[1:] == (2 * BLOCK, BLOCK) and len(images) == len(labels) == len(top)
    null = np.where(top[:, None, None], images[:, BLOCK:], images[:, :BLOCK])
    assert np.array_equal(null, np.broadcast_to(null_pattern(), null.shape))  # identical in every image
    assert 0.4 < top.mean() < 0.6  # placed at random
    assert set(np.unique(labels)) == {0, 1}
    # The null block is not informative: its pixels are the same for both labels.
    assert np.array_equal(null[labels == 0].mean(0), null[labels == 1].mean(0))


def test_signal_fraction_and_alignment() -> None:
    g = torch.zeros(2, 2 * BLOCK, BLOCK)
    g[0, :BLOCK] = 3.0  # image 0: signal on top, all mass there
    g[1, :BLOCK] = 1.0  # image 1: signal at the bottom, 1/4 of the mass there
    g[1, BLOCK:] = -1.0 / 3.0
    top = torch.tensor([True, False])
    frac = signal_fraction(g, top)
    assert torch.allclose(frac, torch.tensor([1.0, 0.25]))
    aligned = signal_aligned(g, top)
    assert torch.equal(aligned[1, :BLOCK], g[1, BLOCK:]) and torch.equal(aligned[0], g[0])


def test_pgd_stays_in_the_ball_and_raises_the_loss() -> None:
    torch.manual_seed(0)
    model = make_mlp(16)
    x = torch.rand(32, 2 * BLOCK, BLOCK)
    y = torch.randint(0, 2, (32,))
    x_adv = pgd_l2(model, x, y, eps=0.5, steps=5)
    assert (x_adv - x).flatten(1).norm(dim=1).max() <= 0.5 + 1e-5
    ce = torch.nn.functional.cross_entropy
    assert ce(model(x_adv), y) > ce(model(x), y)


def test_engine_streams_and_bad_classes() -> None:
    eng = get_engine("input-gradients")({"width": 16}, seed=0, probes={"gradients": 2})
    frames = list(eng.frames(3))
    d = frames[2].data
    assert d["signal_fraction"].shape == (2,) and d["gradient_map_robust"].shape == (16, 8)
    assert abs(d["gradient_map_standard"].sum() - 1.0) < 1e-5
    assert "signal_fraction" not in frames[1].data
    with pytest.raises(SpecError, match="differ"):
        get_engine("input-gradients")({"class_a": 4, "class_b": 4}).start()


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_robust_gradients_concentrate_on_the_signal_standard_ones_leak(seed: int) -> None:
    """Measured at step 400: standard 0.563 / 0.546, robust 0.736 / 0.730 (seeds 0, 1)."""
    eng = get_engine("input-gradients")({}, seed=seed, probes={"gradients": 400})
    *_, last = eng.frames(401)
    standard, robust = last.data["signal_fraction"]
    assert last.data["test_accuracy"].min() >= 0.95
    assert robust >= standard + 0.1, (standard, robust)
    assert robust >= 0.65 and standard <= 0.62, (
        standard,
        robust,
    )  # ≥ 38 % of the standard mass on the null block
    assert last.data["adversarial_accuracy"][1] > last.data["adversarial_accuracy"][0] + 0.2
