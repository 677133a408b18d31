"""Neural collapse (SCIENCE.md §4): metric unit tests and the engines' reproductions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynlab import presets
from dynlab.engines.base import get_engine
from dynlab.engines.probes.collapse import class_means, cosine_matrix, geometry_3d, nc_metrics, simplex_etf
from dynlab.engines.spec import SpecError

PRESETS = [
    "neural-collapse",
    "neural-collapse-4",
    "collapse-ufm",
    "collapse-perturbation",
    "neural-collapse-ce",
]


def _rotation(d: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q


def _etf_features(C: int = 10, d: int = 32, per_class: int = 20, noise: float = 0.0, seed: int = 0):
    """Features sitting exactly on a rotated, shifted simplex ETF (plus optional noise)."""
    Q = _rotation(d, seed)
    shift = np.random.default_rng(seed + 1).normal(size=d)
    means = simplex_etf(C, dim=d, scale=3.0) @ Q
    y = np.repeat(np.arange(C), per_class)
    H = means[y] + shift + noise * np.random.default_rng(seed + 2).normal(size=(C * per_class, d))
    return H, y, means, shift


# ----------------------------------------------------------------------------- metrics
def test_simplex_etf_has_equal_norms_and_simplex_angles():
    for C, dim in [(2, None), (4, 3), (10, None), (10, 32)]:
        E = simplex_etf(C, dim=dim, scale=2.5)
        assert np.allclose(np.linalg.norm(E, axis=1), 2.5)
        assert np.allclose(E.sum(axis=0), 0.0, atol=1e-12)
        cos = cosine_matrix(E)
        assert np.allclose(cos[~np.eye(C, dtype=bool)], -1.0 / (C - 1))
    with pytest.raises(ValueError):
        simplex_etf(10, dim=8)


def test_metrics_vanish_on_an_exact_simplex_etf():
    H, y, means, shift = _etf_features()
    W = 0.3 * means  # classifier = class means up to scale
    b = -W @ shift  # so the classifier's argmax is the nearest centre
    m = nc_metrics(H, y, W, b)
    for key in (
        "nc1",
        "nc1_trace_ratio",
        "equinorm_means",
        "equinorm_weights",
        "equiangularity",
        "equiangularity_weights",
        "max_angle",
        "max_angle_weights",
        "nc3",
    ):
        assert m[key] < 1e-12, (key, m[key])
    assert m["nc4"] == 0.0 and m["accuracy"] == 1.0
    mu, g = class_means(H, y)
    cos = cosine_matrix(mu - g)
    assert np.allclose(cos[~np.eye(10, dtype=bool)], -1.0 / 9, atol=1e-12)


@pytest.mark.parametrize("scale", [1e-3, 0.5, 40.0])
def test_nc3_is_zero_for_any_positive_multiple_of_the_means(scale):
    rng = np.random.default_rng(3)
    H = rng.normal(size=(300, 16))
    y = np.repeat(np.arange(6), 50)
    mu, g = class_means(H, y)
    assert nc_metrics(H, y, scale * (mu - g))["nc3"] < 1e-20
    assert nc_metrics(H, y, -scale * (mu - g))["nc3"] > 1.0  # the sign matters


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_features_are_far_from_collapse(seed):
    rng = np.random.default_rng(seed)
    H = rng.normal(size=(200, 32))
    y = np.repeat(np.arange(10), 20)
    m = nc_metrics(H, y, rng.normal(size=(10, 32)))
    assert m["nc1"] > 1.0 and m["nc1_trace_ratio"] > 5.0
    assert m["equiangularity"] > 0.05 and m["nc3"] > 0.5


def test_noise_increases_nc1_and_pinv_matches_the_definition():
    H, y, means, _ = _etf_features(noise=0.3)
    m = nc_metrics(H, y, means)
    # Reference: the textbook formula with dense covariances and numpy's pinv.
    mu, g = class_means(H, y)
    R = H - mu[y]
    sw = R.T @ R / len(y)
    sb = (mu - g).T @ (mu - g) / 10
    ref = np.trace(sw @ np.linalg.pinv(sb, rcond=1e-10)) / 10
    assert m["nc1"] == pytest.approx(ref, rel=1e-9)
    assert m["nc1_trace_ratio"] == pytest.approx(np.trace(sw) / np.trace(sb), rel=1e-12)
    assert nc_metrics(*_etf_features(noise=0.6)[:2], means)["nc1"] > 3 * m["nc1"]


def test_equiangularity_uses_the_spread_not_the_mean_cosine():
    # A rectangle's corners: equal norms, sum zero, pairwise cosines ±0.5 and −1. Their
    # MEAN cosine is exactly −1/(C−1) = −1/3, as for a simplex; only the spread tells.
    ang = np.deg2rad([0.0, 60.0, 180.0, 240.0])
    M = np.stack([np.cos(ang), np.sin(ang)], axis=1)
    y = np.repeat(np.arange(4), 3)
    m = nc_metrics(M[y], y, M)
    off = cosine_matrix(M)[~np.eye(4, dtype=bool)]
    assert off.mean() == pytest.approx(-1.0 / 3.0)
    assert m["equinorm_means"] < 1e-12
    assert m["equiangularity"] > 0.5 and m["max_angle"] > 0.5


def test_ncc_mismatch_counts_disagreements():
    H = np.array([[1.0, 0.0], [0.9, 0.0], [-1.0, 0.0], [-1.1, 0.0]])
    y = np.array([0, 0, 1, 1])
    W = np.array([[0.0, 1.0], [0.0, -1.0]])  # looks at the wrong coordinate: ties → class 0
    assert nc_metrics(H, y, W)["nc4"] == 0.5


def _papyan_reference(H, y, W, C):
    """Plain-numpy NC metrics written straight from Papyan, Han & Donoho's definitions.

    Loops over classes on purpose (no shared helper with the probe): μ_G is the mean of the
    class means, Σ_W pools all N samples, Σ_B averages over the C classes, equinorm uses the
    sample standard deviation (``statistics.stdev``, i.e. ddof 1, as ``torch.std``).
    """
    import statistics

    N, d = H.shape
    mus = [H[y == c].mean(axis=0) for c in range(C)]
    mu_g = sum(mus) / C
    sw = np.zeros((d, d))
    for i in range(N):
        r = H[i] - mus[y[i]]
        sw += np.outer(r, r)
    sw /= N
    sb = sum(np.outer(m - mu_g, m - mu_g) for m in mus) / C
    # Σ_B has rank C − 1: invert it on its top C − 1 eigen-directions only.
    evals, evecs = np.linalg.eigh(sb)
    top = evecs[:, -(C - 1) :]
    sb_pinv = top @ np.diag(1.0 / evals[-(C - 1) :]) @ top.T
    centred = np.array([m - mu_g for m in mus])
    mean_norms = [float(np.sqrt(np.sum(m**2))) for m in centred]
    w_norms = [float(np.sqrt(np.sum(w**2))) for w in W]
    Mn = centred / np.sqrt(np.sum(centred**2))
    Wn = W / np.sqrt(np.sum(W**2))
    return {
        "nc1": float(np.trace(sw @ sb_pinv) / C),
        "nc1_trace_ratio": float(np.trace(sw) / np.trace(sb)),
        "equinorm_means": statistics.stdev(mean_norms) / statistics.mean(mean_norms),
        "equinorm_weights": statistics.stdev(w_norms) / statistics.mean(w_norms),
        "nc3": float(np.sum((Wn - Mn) ** 2)),
    }


@pytest.mark.parametrize("C", [4, 10])
def test_metrics_on_imbalanced_classes_match_an_independent_implementation(C):
    """Class sizes 5..60: the sample mean and the mean of class means differ, and so would
    NC1 and NC3 under the wrong convention; ddof 0 would read equinorm 5-13 % low."""
    rng = np.random.default_rng(11)
    d = 12
    sizes = np.linspace(5, 60, C).astype(int)
    y = np.repeat(np.arange(C), sizes)
    centres = 2.0 * rng.normal(size=(C, d))
    H = centres[y] + 0.7 * rng.normal(size=(y.size, d)) + 3.0  # an offset: μ_G matters
    W = centres + 0.5 * rng.normal(size=(C, d))
    ref = _papyan_reference(H, y, W, C)
    got = nc_metrics(H, y, W)
    for key, value in ref.items():
        assert got[key] == pytest.approx(value, rel=1e-9), key
    mu, g = class_means(H, y, C)
    np.testing.assert_allclose(g, mu.mean(axis=0), rtol=1e-12)
    assert np.abs(g - H.mean(axis=0)).max() > 0.05  # the imbalance is real


def test_geometry_3d_is_exact_for_four_classes():
    E = simplex_etf(4, dim=16, scale=2.0) @ _rotation(16, 5)
    g = geometry_3d(E, 0.1 * E)
    assert np.allclose(np.linalg.norm(g["means"], axis=1), 2.0)  # nothing lost to projection
    assert np.allclose(g["means"], g["etf"], atol=1e-12)
    assert np.allclose(g["classifier"], g["means"], atol=1e-12)  # rescaled to the means' norm
    d = np.linalg.norm(g["means"][:, None] - g["means"][None], axis=2)
    assert np.allclose(d[~np.eye(4, dtype=bool)], d[0, 1])  # a regular tetrahedron
    # The `previous` alignment keeps a slowly changing picture from jumping.
    g2 = geometry_3d(1.01 * E, E, previous=g["means"])
    assert np.allclose(g2["means"], 1.01 * g["means"], atol=1e-10)


@pytest.mark.parametrize("C", [5, 10])
def test_geometry_3d_spreads_a_large_simplex(C):
    """PCA of an exact simplex is degenerate (equal singular values): the 3-D view must
    still show every class mean apart, the same picture for any rotation of features."""
    E = simplex_etf(C, dim=16, scale=1.0) @ _rotation(16, 7)
    g = geometry_3d(E, E)
    d = np.linalg.norm(g["means"][:, None] - g["means"][None], axis=2)
    off = d[~np.eye(C, dtype=bool)]
    assert off.min() >= 0.3 * off.mean()
    assert np.allclose(g["means"], g["etf"], atol=1e-10)
    # An orthogonal projection of the means (the basis is orthonormal, inside their span).
    assert np.allclose(g["basis"] @ g["basis"].T, np.eye(3), atol=1e-10)
    assert np.allclose(g["means"], E @ g["basis"].T, atol=1e-10)
    # Fixed across steps: a perturbed, rotated-in-feature-space copy gives (nearly) the
    # same coordinates, without help from ``previous``.
    E2 = (E + 0.01 * np.random.default_rng(0).standard_normal(E.shape)) @ _rotation(16, 8)
    E2 -= E2.mean(axis=0)
    g2 = geometry_3d(E2, E2)
    assert np.abs(g2["means"] - g["means"]).max() < 0.1 * off.mean()


# ----------------------------------------------------------------------------- engines
@pytest.mark.parametrize("name", PRESETS)
def test_presets_validate_and_show_the_phenomenon(name):
    p = presets.load(name)
    kinds = {v.kind for v in p.views}
    # The CE negative control keeps to the metrics and the 3-D frame (it never forms one).
    assert ({"points"} if name == "neural-collapse-ce" else {"points", "heatmap"}) <= kinds
    assert any(v.log_y and "nc1" in v.streams or "nc1_trace_ratio" in v.streams for v in p.views)


def test_streams_have_fixed_shapes_labels_and_groups():
    e = get_engine("neural-collapse")(
        {"num_classes": 4, "samples_per_class": 5, "width": 16}, seed=0, probes={"collapse": 2}
    )
    streams = {s.name: s for s in e.streams}
    pts = streams["class_means"]
    assert pts.shape == (12, 3) and pts.groups == ("mean",) * 4 + ("classifier",) * 4 + ("etf",) * 4
    assert len(pts.labels) == 12
    assert streams["mean_cosines"].shape == (4, 4) and len(streams["mean_cosines"].rows) == 4
    assert all(s.description and s.theory for s in e.streams if s.name != "probe_seconds")
    frames = list(e.frames(3))
    assert "nc1" in frames[0].data and "nc1" not in frames[1].data and "nc1" in frames[2].data
    assert frames[0].data["class_means"].shape == (12, 3)
    assert all("train_loss" in f.data for f in frames)


def test_live_changes_reach_the_optimizer():
    e = get_engine("neural-collapse")({"samples_per_class": 5, "width": 16}, seed=0)
    e.step()
    e.set("weight_decay", 0.01)
    e.set("lr", 0.02)
    assert all(g["weight_decay"] == 0.01 and g["lr"] == 0.02 for g in e.optimizers[0].param_groups)
    with pytest.raises(SpecError):
        e.set("num_classes", 3)  # not live


def test_same_seed_same_run():
    def run(seed):
        e = get_engine("collapse-ufm")({"num_classes": 4, "samples_per_class": 3}, seed=seed)
        return [f.data["train_loss"].item() for f in e.frames(5)]

    assert run(1) == run(1) and run(1) != run(2)


def _final(name: str, steps: int, seed: int = 0, every: int | None = None, **params):
    """Run ``steps`` updates; return {step: frame data} of the frames with collapse metrics."""
    torch.set_num_threads(1)
    e = get_engine(name)(params, seed=seed, device="cpu", probes={"collapse": every or steps})
    out = {}
    for f in e.frames(steps + 1):
        if "nc1" in f.data:
            out[f.step] = {k: np.asarray(v) for k, v in f.data.items()}
    return out


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ufm_collapses_exactly(seed):
    m = _final("collapse-ufm", 3000, seed)[3000]
    assert m["nc1"] <= 1e-6  # measured ≈ 8e-12
    assert m["equinorm"] <= 1e-2 and m["equinorm_classifier"] <= 1e-2
    assert m["max_angle"] <= 1e-2 and m["self_duality"] <= 1e-3
    assert m["ncc_mismatch"] == 0.0
    # The picture: means sit on the ETF vertices.
    pts = m["class_means"]
    assert np.abs(pts[:10] - pts[20:]).max() < 1e-3 * np.abs(pts[:10]).max()


@pytest.mark.slow
def test_mlp_with_mse_collapses():
    # 3000 epochs instead of SCIENCE's 8000 to keep CI short: every criterion the brief
    # asks for already holds (NC1 4.1e-3 at 3000, 1.4e-3 at 8000; see the report).
    res = _final("neural-collapse", 3000, every=500)
    early, last = res[500], res[3000]
    assert last["train_accuracy"] == 1.0
    assert last["nc1"] < 1e-2 and last["nc1"] < early["nc1"] / 5
    assert last["ncc_mismatch"] == 0.0
    assert last["equinorm"] < 0.1 and last["equiangularity"] < 0.06
    assert last["self_duality"] < early["self_duality"] / 3  # NC3 still falling (< 0.05 by 4500)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_perturbation_model_is_monotone_in_beta_and_below_h0(seed):
    ratios = []
    for beta in (0.01, 0.1, 1.0, 10.0):
        res = _final("collapse-perturbation", 1500, seed, every=500, beta=beta)
        last = res[1500]
        h0 = float(last["h0_trace_ratio"])
        if beta >= 0.1:  # converged: no change in the last 500 steps
            assert abs(last["nc1_trace_ratio"] - res[1000]["nc1_trace_ratio"]) < 1e-3
        ratios.append(float(last["nc1_trace_ratio"]))
    assert all(r < h0 for r in ratios), (ratios, h0)
    assert all(a <= b for a, b in zip(ratios, ratios[1:])), ratios
    assert h0 - ratios[-1] < 0.02  # β = 10 is almost H₀ itself


@pytest.mark.slow
def test_cross_entropy_control_does_not_collapse():
    p = presets.load("neural-collapse-ce")
    res = _final("neural-collapse", 3000, every=3000, **p.hyperparameters)
    assert res[3000]["train_accuracy"] == 1.0
    assert res[3000]["nc1"] > 0.1
