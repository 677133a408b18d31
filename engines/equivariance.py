"""Equivariance heatmaps: how symmetric is each layer, and what makes it so.

Two engines here (SCIENCE.md §6):

* ``equivariance-c4``: regression on 9×9 images with a C4-invariant target, with a plain
  CNN, a C4 group-CNN written here (lifting + group convolution), the plain CNN
  group-averaged (Reynolds operator), or the plain CNN with a live soft-invariance
  regulariser λ·E_g‖f(gx) − f(x)‖².
* ``equivariance-frames``: point clouds under O(3) and translations; a plain MLP beside
  its PCA frame-averaged version (Puny et al. 2022), plus the degenerate-covariance
  clouds on which the frame is not unique and frame averaging honestly fails.
* ``equivariance-mixed`` (PER, one projection regulariser per candidate symmetry) lives
  in :mod:`dynlab.engines.equivariance_mixed`.

Image sizes are odd so that rot90 is an exact pixel permutation about the centre pixel.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dynlab.engines.base import Engine
from dynlab.engines.probes.equivariance import (
    C4,
    Group,
    Rep,
    c4_regular,
    c4_spatial,
    layer_errors,
    mean_abs_lie_derivative,
    pca_frames,
    random_orthogonal,
    relative_lie_derivative,
    rotation_generator,
    trivial,
)
from dynlab.engines.spec import EngineSpec, Param, SpecError, Stream

# ====================================================================== models (images)


class PlainCNN(nn.Module):
    """conv3×3 → ReLU → conv3×3 → ReLU → global average pool → linear (one output)."""

    layer_reps: dict[str, Rep] = {"conv1": c4_spatial, "conv2": c4_spatial, "output": trivial}

    def __init__(self, channels: int = 8, in_channels: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.head = nn.Linear(channels, 1)

    def features(self, x: Tensor) -> dict[str, Tensor]:
        h1 = F.relu(self.conv1(x))
        h2 = F.relu(self.conv2(h1))
        return {"conv1": h1, "conv2": h2, "output": self.head(h2.mean(dim=(-2, -1)))}

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)["output"]


class C4LiftingConv(nn.Module):
    """Z² → C4 lifting convolution: output orientation k correlates with the filter rotated k times.

    Output shape (B, C_out, 4, H, W). Equivariant with the regular representation:
    rotating the input rotates every map and shifts the orientation axis by one.
    """

    def __init__(self, c_in: int, c_out: int, k: int = 3) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in, k, k) / math.sqrt(c_in * k * k))
        self.bias = nn.Parameter(torch.zeros(c_out))

    def forward(self, x: Tensor) -> Tensor:
        w = torch.stack([torch.rot90(self.weight, r, dims=(-2, -1)) for r in range(4)], dim=1)
        c_out = self.weight.shape[0]
        y = F.conv2d(x, w.reshape(c_out * 4, *self.weight.shape[1:]), padding=self.weight.shape[-1] // 2)
        y = y.reshape(x.shape[0], c_out, 4, *y.shape[-2:])
        return y + self.bias[:, None, None, None]  # one bias per channel, shared by orientations


class C4GroupConv(nn.Module):
    """C4 → C4 group convolution on (B, C, 4, H, W) maps.

    out[k] = Σ_j f[j] ⋆ rot^k(W[(j − k) mod 4]): the filter is rotated and its
    orientation axis rolled, so out(g·f) = g·out(f) for the regular representation.
    """

    def __init__(self, c_in: int, c_out: int, k: int = 3) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in, 4, k, k) / math.sqrt(c_in * 4 * k * k))
        self.bias = nn.Parameter(torch.zeros(c_out))

    def forward(self, f: Tensor) -> Tensor:
        c_out, c_in, _, k, _ = self.weight.shape
        w = torch.stack(
            [torch.rot90(torch.roll(self.weight, r, dims=2), r, dims=(-2, -1)) for r in range(4)], dim=1
        )
        y = F.conv2d(
            f.reshape(f.shape[0], c_in * 4, *f.shape[-2:]),
            w.reshape(c_out * 4, c_in * 4, k, k),
            padding=k // 2,
        )
        y = y.reshape(f.shape[0], c_out, 4, *y.shape[-2:])
        return y + self.bias[:, None, None, None]


class C4GCNN(nn.Module):
    """Lifting conv → ReLU → group conv → ReLU → pool over orientations and space → linear."""

    layer_reps: dict[str, Rep] = {"lift": c4_regular, "gconv": c4_regular, "output": trivial}

    def __init__(self, channels: int = 8, in_channels: int = 1) -> None:
        super().__init__()
        self.lift = C4LiftingConv(in_channels, channels)
        self.gconv = C4GroupConv(channels, channels)
        self.head = nn.Linear(channels, 1)

    def features(self, x: Tensor) -> dict[str, Tensor]:
        h1 = F.relu(self.lift(x))
        h2 = F.relu(self.gconv(h1))
        return {"lift": h1, "gconv": h2, "output": self.head(h2.mean(dim=(-3, -2, -1)))}

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)["output"]


class GroupAveraged(nn.Module):
    """A plain CNN averaged over C4: f̄(x) = ¼ Σ_j f(r^{-j} x) (the Reynolds operator).

    Its hidden layers are the orbit-stacked maps h[j] = r^j f_l(r^{-j} x), shape
    (B, C, 4, H, W), which transform by the same regular representation as a G-CNN's.
    """

    layer_reps: dict[str, Rep] = {"conv1": c4_regular, "conv2": c4_regular, "output": trivial}

    def __init__(self, channels: int = 8, in_channels: int = 1) -> None:
        super().__init__()
        self.base = PlainCNN(channels, in_channels)

    def features(self, x: Tensor) -> dict[str, Tensor]:
        B = x.shape[0]
        orbit = torch.cat([torch.rot90(x, -j, dims=(-2, -1)) for j in range(4)])  # one batched pass
        feats = self.base.features(orbit)
        out: dict[str, Tensor] = {}
        for name in ("conv1", "conv2"):
            h = feats[name].reshape(4, B, *feats[name].shape[1:])
            out[name] = torch.stack([torch.rot90(h[j], j, dims=(-2, -1)) for j in range(4)], dim=2)
        out["output"] = feats["output"].reshape(4, B, -1).mean(dim=0)
        return out

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)["output"]


_LAYER_LABELS = {
    "plain": ("conv1", "conv2", "output"),
    "regularized": ("conv1", "conv2", "output"),
    "gcnn": ("lift", "gconv", "output"),
    "averaged": ("conv1 (orbit)", "conv2 (orbit)", "output"),
}


def make_image_model(kind: str, channels: int = 8) -> PlainCNN | C4GCNN | GroupAveraged:
    """The model named by the ``model`` hyperparameter (plain, regularized, gcnn, averaged)."""
    if kind in ("plain", "regularized"):
        return PlainCNN(channels)
    if kind == "gcnn":
        return C4GCNN(channels)
    if kind == "averaged":
        return GroupAveraged(channels)
    raise SpecError(f"model must be one of plain, gcnn, averaged, regularized; got {kind!r}")


def c4_invariant_target(x: Tensor) -> Tensor:
    """y = ½·mean(r·x²) + mean(x·1[r < 2]), r = distance to the centre pixel: exactly C4-invariant."""
    H, W = x.shape[-2:]
    ii, jj = torch.meshgrid(torch.arange(H, dtype=x.dtype), torch.arange(W, dtype=x.dtype), indexing="ij")
    r = torch.sqrt((ii - (H - 1) / 2) ** 2 + (jj - (W - 1) / 2) ** 2).to(x.device)
    return (0.5 * (r * x**2).mean(dim=(-3, -2, -1)) + (x * (r < 2)).mean(dim=(-3, -2, -1))).unsqueeze(-1)


def rotate_per_sample(x: Tensor, k: Tensor) -> Tensor:
    """Rotate sample i of ``x`` by ``k[i]`` quarter turns."""
    out = x.clone()
    for r in (1, 2, 3):
        m = k == r
        if bool(m.any()):
            out[m] = torch.rot90(x[m], r, dims=(-2, -1))
    return out


def _image_data(seed: int, n: int, size: int, offset: int, device: str) -> Tensor:
    gen = torch.Generator().manual_seed(seed * 1_000_003 + offset)
    return torch.randn(n, 1, size, size, generator=gen).to(device)


_HEATMAP_DESC = (
    "Relative equivariance error ‖f_l(g·x) − ρ_l(g) f_l(x)‖ / ‖f_l(x)‖ of every layer (rows, input → "
    "output; the last row is the model's invariant output) for every group element (columns), "
    "on a fixed batch of test images."
)


# ====================================================================== C4 engine


class EquivarianceC4(Engine):
    """C4-invariant regression on odd-sized images with four model choices."""

    spec = EngineSpec(
        name="equivariance-c4",
        title="Equivariance heatmap: plain CNN, G-CNN, group averaging, soft regulariser",
        description="Per-layer C4 equivariance error while a CNN regresses a rotation-invariant target.",
        paper=(
            "Kim et al., Regularizing Towards Soft Equivariance Under Mixed Symmetries, ICML 2023; "
            "Cohen & Welling, Group Equivariant Convolutional Networks, ICML 2016"
        ),
        params=(
            Param(
                "model",
                "str",
                "regularized",
                choices=("plain", "gcnn", "averaged", "regularized"),
                help="plain CNN, C4 group-CNN, group-averaged plain CNN, or plain CNN + soft regulariser",
            ),
            Param(
                "reg_strength",
                "float",
                0.0,
                low=0.0,
                high=1e4,
                live=True,
                log=True,
                help="λ of the soft-invariance penalty λ·E_g‖f(gx) − f(x)‖² (model = regularized only)",
            ),
            Param("lr", "float", 3e-3, low=1e-6, high=1.0, live=True, log=True, help="Adam learning rate"),
            Param("channels", "int", 8, low=1, high=128, help="feature channels per layer"),
            Param("image_size", "int", 9, low=3, high=65, unit="px", help="side of the square images (odd)"),
            Param("n_train", "int", 512, low=8, high=100_000, help="training images"),
            Param(
                "batch_size", "int", 512, low=1, high=100_000, help="images per step (≥ n_train: full batch)"
            ),
            Param(
                "n_test", "int", 256, low=8, high=100_000, help="test images (the probe uses the first 64)"
            ),
        ),
        streams=(),  # refined per model in declared_streams
        probes={"equivariance": 25, "test": 10},
    )

    def __init__(self, params: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        p = self.params
        if p["image_size"] % 2 == 0:
            raise SpecError(
                f"image_size must be odd so rot90 is an exact pixel permutation; got {p['image_size']}"
            )
        if p["reg_strength"] > 0 and p["model"] != "regularized":
            raise SpecError(f"reg_strength only acts on model = 'regularized' (model is {p['model']!r})")

    def declared_streams(self) -> tuple[Stream, ...]:
        rows = _LAYER_LABELS[self.params["model"]]
        return (
            Stream(
                "train_loss",
                "scalar",
                description="Mean squared error on the step's training batch.",
                theory="Falls for every model; the G-CNN and averaged models fit an invariant target with no penalty.",
                log_scale=True,
            ),
            Stream(
                "test_loss",
                "scalar",
                description="Mean squared error on held-out images.",
                log_scale=True,
                theory="PER: a strong soft-equivariance penalty can cost some accuracy (trade-off).",
            ),
            Stream(
                "equivariance_error",
                "heatmap",
                (len(rows), len(C4.names)),
                rows=rows,
                cols=C4.names,
                description=_HEATMAP_DESC,
                log_scale=True,
                theory=(
                    "G-CNN and group averaging: 0 up to float round-off at every layer. Plain CNN: hidden "
                    "layers ≈ 1, output ≈ 0.1. An output-level regulariser lowers the last row but "
                    "barely moves the hidden rows. The identity column is exactly 0."
                ),
            ),
            Stream(
                "output_equivariance_error",
                "scalar",
                log_scale=True,
                description="Output invariance error E‖f(gx) − f(x)‖ / E‖f(x)‖, mean over g = 90°, 180°, 270°.",
                theory="Falls monotonically as reg_strength rises (SCIENCE §6: 0.029 at λ=0 to 0.002 at λ=100).",
            ),
            Stream(
                "reg_strength",
                "scalar",
                description="λ, the soft-invariance penalty in force.",
                theory="Raise it mid-run: the output error drops within a few hundred steps.",
            ),
        )

    def setup(self) -> None:
        p = self.params
        size, dev = p["image_size"], self.device
        self.x_train = _image_data(self.seed, p["n_train"], size, 1, dev)
        self.y_train = c4_invariant_target(self.x_train)
        self.x_test = _image_data(self.seed, p["n_test"], size, 2, dev)
        self.y_test = c4_invariant_target(self.x_test)
        self.x_probe = self.x_test[:64]
        self.batch_gen = torch.Generator().manual_seed(self.seed + 17)
        self.model = make_image_model(p["model"], p["channels"]).to(dev)
        self.optimizers = [torch.optim.Adam(self.model.parameters(), lr=p["lr"])]

    def on_set(self, name: str, new: Any, old: Any) -> None:
        if name == "reg_strength" and self.params["model"] != "regularized" and new != 0:
            raise SpecError(
                f"reg_strength only acts on model = 'regularized'; this run's model is {self.params['model']!r}"
            )
        super().on_set(name, new, old)

    def probe(self) -> Tensor:
        """The (layers × C4) error matrix of the current model on the probe batch."""
        self.model.eval()
        err = layer_errors(self.model.features, self.x_probe, C4, self.model.layer_reps)
        self.model.train()
        return torch.from_numpy(err)

    def train_step(self, step: int) -> Mapping[str, Any]:
        p = self.params
        out: dict[str, Any] = {"reg_strength": p["reg_strength"]}
        # Probes first: the frame at step t describes the model before update t.
        if self.due("equivariance", step):
            with self.timed("equivariance"):
                err = self.probe()
            out["equivariance_error"] = err
            out["output_equivariance_error"] = err[-1, 1:].mean()
        if self.due("test", step):
            with torch.no_grad():
                out["test_loss"] = F.mse_loss(self.model(self.x_test), self.y_test)
        x, y = self._batch()
        pred = self.model(x)
        mse = F.mse_loss(pred, y)
        loss = mse
        lam = p["reg_strength"]
        if p["model"] == "regularized" and lam > 0:
            k = torch.randint(1, 4, (x.shape[0],), generator=self.batch_gen).to(x.device)
            loss = loss + lam * (self.model(rotate_per_sample(x, k)) - pred).pow(2).mean()
        self.optimizers[0].zero_grad(set_to_none=True)
        loss.backward()
        self.optimizers[0].step()
        out["train_loss"] = mse.detach()
        return out

    def _batch(self) -> tuple[Tensor, Tensor]:
        n, b = self.x_train.shape[0], self.params["batch_size"]
        if b >= n:
            return self.x_train, self.y_train
        idx = torch.randint(0, n, (b,), generator=self.batch_gen).to(self.x_train.device)
        return self.x_train[idx], self.y_train[idx]


# ====================================================================== point clouds (O(3) + translations)


class CloudMLP(nn.Module):
    """A point-wise MLP with mean pooling (DeepSets): x_i → MLP → mean over points → linear → 3-vector.

    It is permutation-invariant but knows nothing about rotations, reflections or shifts.
    Hidden layers are per-point features, shape (B, n, hidden).
    """

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh())
        self.head = nn.Linear(hidden, 3)

    def features(self, X: Tensor) -> dict[str, Tensor]:
        h1 = self.net[1](self.net[0](X))
        h2 = self.net[3](self.net[2](h1))
        return {"hidden 1": h1, "hidden 2": h2, "output": self.head(h2.mean(dim=-2))}

    def forward(self, X: Tensor) -> Tensor:
        return self.head(self.net(X).mean(dim=-2))


class FrameAveragedMLP(nn.Module):
    """⟨φ⟩(X) = (1/|F|) Σ_R R φ(Rᵀ(X − t)) over the 8 PCA frames with sign flips (O(3)).

    Hidden layers are reported as their frame means (1/|F|) Σ_R h_l(Rᵀ(X − t)), which are
    invariant: the frame of a moved cloud is the moved frame, up to a re-ordering.
    """

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.phi = CloudMLP(hidden)

    def features(self, X: Tensor) -> dict[str, Tensor]:
        t, R = pca_frames(X)
        B, nF = R.shape[:2]
        canon = ((X - t).unsqueeze(1) @ R).reshape(B * nF, *X.shape[1:])
        feats = self.phi.features(canon)
        out = {
            name: h.reshape(B, nF, *h.shape[1:]).mean(dim=1) for name, h in feats.items() if name != "output"
        }
        y = feats["output"].reshape(B, nF, 3, 1)
        out["output"] = (R @ y).squeeze(-1).mean(dim=1)
        return out

    def forward(self, X: Tensor) -> Tensor:
        return self.features(X)["output"]


def skew_target(X: Tensor) -> Tensor:
    """y(X) = (1/n) Σ ‖x̃_i‖ x̃_i with x̃ = x − centroid: O(3)-equivariant, translation-invariant."""
    Xc = X - X.mean(dim=-2, keepdim=True)
    return (Xc.norm(dim=-1, keepdim=True) * Xc).mean(dim=-2)


def anisotropic_clouds(
    n: int, n_points: int, gen: torch.Generator, scales: tuple[float, ...] = (3.0, 2.0, 1.0)
) -> Tensor:
    """Gaussian clouds with axis scales ``scales``, each under a random O(3) element and shift."""
    Z = torch.randn(n, n_points, 3, generator=gen, dtype=torch.float64) * torch.tensor(
        scales, dtype=torch.float64
    )
    Q = torch.stack([random_orthogonal(3, gen) for _ in range(n)])
    shift = 2.0 * torch.randn(n, 1, 3, generator=gen, dtype=torch.float64)
    return Z @ Q.transpose(-1, -2) + shift


def degenerate_clouds(n: int, n_points: int, gen: torch.Generator) -> Tensor:
    """Clouds with a 4-fold symmetry axis: two equal covariance eigenvalues, so no unique frame."""
    if n_points % 4:
        raise SpecError(f"n_points must be a multiple of 4 for the degenerate clouds; got {n_points}")
    seed = torch.randn(n, n_points // 4, 3, generator=gen, dtype=torch.float64) * torch.tensor(
        [2.0, 2.0, 1.0], dtype=torch.float64
    )
    quarter = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    parts, P = [], seed
    for _ in range(4):  # the orbit under 90° turns about z: cov_xx = cov_yy exactly
        parts.append(P)
        P = P @ quarter.T
    Z = torch.cat(parts, dim=1)
    Q = torch.stack([random_orthogonal(3, gen) for _ in range(n)])
    return Z @ Q.transpose(-1, -2) + 2.0 * torch.randn(n, 1, 3, generator=gen, dtype=torch.float64)


def euclidean_elements(gen: torch.Generator) -> tuple[tuple[str, ...], Tensor, Tensor]:
    """Named O(3) + translation elements for the heatmap columns: names, Q (G,3,3), shifts (G,3)."""
    dt = torch.float64
    eye = torch.eye(3, dtype=dt)
    c, s = math.cos(math.pi / 3), math.sin(math.pi / 3)
    rz90 = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=dt)
    rx60 = torch.tensor([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]], dtype=dt)
    mirror = torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=dt))
    names = ("e", "shift", "Rz 90°", "Rx 60°", "mirror x", "−I", "O(3) #1 + shift", "O(3) #2 + shift")
    Q = torch.stack(
        [eye, eye, rz90, rx60, mirror, -eye, random_orthogonal(3, gen), random_orthogonal(3, gen)]
    )
    shifts = torch.zeros(len(names), 3, dtype=dt)
    shifts[1] = torch.tensor([1.5, -2.0, 0.5], dtype=dt)
    shifts[6:] = 2.0 * torch.randn(2, 3, generator=gen, dtype=dt)
    return names, Q, shifts


class EquivarianceFrames(Engine):
    #: The symmetry group is built by setup() from the hyperparameters: configuration, not state.
    state_exclude = ("group",)
    """A plain MLP and its frame-averaged twin learn an O(3)-equivariant vector of a point cloud."""

    spec = EngineSpec(
        name="equivariance-frames",
        title="Frame averaging: exact O(3) equivariance for point clouds (and where it fails)",
        description="Plain MLP vs PCA frame-averaged MLP on point clouds under rotations, reflections and shifts.",
        paper="Puny et al., Frame Averaging for Invariant and Equivariant Network Design, ICLR 2022",
        params=(
            Param(
                "lr",
                "float",
                1e-3,
                low=1e-6,
                high=1.0,
                live=True,
                log=True,
                help="Adam learning rate (both models)",
            ),
            Param("n_points", "int", 16, low=4, high=256, help="points per cloud (a multiple of 4)"),
            Param("hidden", "int", 64, low=4, high=1024, help="MLP width"),
            Param("n_train", "int", 1024, low=16, high=100_000, help="training clouds"),
            Param("batch_size", "int", 64, low=1, high=100_000, help="clouds per step"),
            Param(
                "n_test", "int", 256, low=16, high=100_000, help="test clouds (the probe uses the first 64)"
            ),
        ),
        streams=(),
        probes={"equivariance": 25, "test": 10},
    )

    def declared_streams(self) -> tuple[Stream, ...]:
        return (
            Stream(
                "train_loss",
                "vector",
                (2,),
                labels=("MLP", "FA"),
                log_scale=True,
                description="MSE of the predicted 3-vector on the step's training batch (float64).",
                theory="The frame-averaged model needs to learn one function on canonical clouds; the MLP must learn every pose.",
            ),
            Stream(
                "test_loss",
                "vector",
                (2,),
                labels=("MLP", "FA"),
                log_scale=True,
                description="MSE on held-out clouds in random poses.",
                theory="FA generalises across poses for free; the plain MLP does not.",
            ),
            Stream(
                "equivariance_error",
                "heatmap",
                (3, len(self.cols)),
                rows=("hidden 1 (frame mean)", "hidden 2 (frame mean)", "output"),
                cols=self.cols,
                log_scale=True,
                description=(
                    "Frame-averaged model: relative error of each layer (hidden layers as frame means, "
                    "which should be invariant; the output should rotate with the cloud) for named "
                    "rotations, reflections and shifts, on generic anisotropic test clouds."
                ),
                theory="Exact up to float64 round-off (≈1e-15) everywhere; the identity column is exactly 0.",
            ),
            Stream(
                "output_equivariance_error",
                "scalar",
                log_scale=True,
                description="FA model output error ‖f(Qx+τ) − Qf(x)‖/‖f(x)‖, mean over the non-identity columns.",
                theory="≈ 1e-15 on clouds with distinct covariance eigenvalues.",
            ),
            Stream(
                "mlp_output_equivariance_error",
                "scalar",
                log_scale=True,
                description="The same error for the plain MLP.",
                theory="Order 1 (0.93 untrained in SCIENCE §6); training on random poses lowers it only partly.",
            ),
            Stream(
                "degenerate_output_equivariance_error",
                "scalar",
                log_scale=True,
                description="FA model output error on clouds with a 4-fold symmetry axis (two equal covariance eigenvalues).",
                theory="Not small: the PCA frame is not unique when eigenvalues coincide, so frame averaging is not equivariant there (SCIENCE §6 measured 0.03).",
            ),
            Stream(
                "lie_derivative",
                "vector",
                (2,),
                labels=("MLP", "FA"),
                log_scale=True,
                description="Relative Lie derivative E‖L_A f‖/E‖f‖ along z-rotations (A = so(3) generator), by a JVP.",
                theory="0 for an exactly rotation-equivariant map (FA ≈ 1e-15); order 1 for the MLP.",
            ),
            Stream(
                "lie_derivative_abs",
                "vector",
                (2,),
                labels=("MLP", "FA"),
                log_scale=True,
                description=(
                    "Gruver et al.'s unnormalised form: mean |L_A f| over clouds and the 3 output "
                    "components (their tables apply it to a classifier's softmax probabilities; "
                    "here f is the raw 3-vector)."
                ),
                theory="0 for an exactly equivariant map; its size follows the output's scale.",
            ),
        )

    @property
    def cols(self) -> tuple[str, ...]:
        return ("e", "shift", "Rz 90°", "Rx 60°", "mirror x", "−I", "O(3) #1 + shift", "O(3) #2 + shift")

    def setup(self) -> None:
        p = self.params
        if p["n_points"] % 4:
            raise SpecError(
                f"n_points must be a multiple of 4 (degenerate clouds are 4-fold orbits); got {p['n_points']}"
            )
        gen = torch.Generator().manual_seed(self.seed)
        dev, n = self.device, p["n_points"]
        self.x_train = anisotropic_clouds(p["n_train"], n, gen).to(dev)
        self.x_test = anisotropic_clouds(p["n_test"], n, gen).to(dev)
        scale = skew_target(self.x_train).std()  # unit-variance targets
        self.y_train = skew_target(self.x_train) / scale
        self.y_test = skew_target(self.x_test) / scale
        self.x_probe = self.x_test[:64]
        self.x_degenerate = degenerate_clouds(64, n, gen).to(dev)
        names, Q, shifts = euclidean_elements(gen)
        self.Q, self.shifts = Q.to(dev), shifts.to(dev)
        self.group = Group(names, self._act)
        self.batch_gen = torch.Generator().manual_seed(self.seed + 17)
        self.mlp = CloudMLP(p["hidden"]).double().to(dev)
        self.fa = FrameAveragedMLP(p["hidden"]).double().to(dev)
        self.optimizers = [torch.optim.Adam([*self.mlp.parameters(), *self.fa.parameters()], lr=p["lr"])]

    def _act(self, k: int, X: Tensor) -> Tensor:
        return X @ self.Q[k].T + self.shifts[k]

    def _rotate_output(self, k: int, y: Tensor) -> Tensor:
        return y @ self.Q[k].T

    def probe(self) -> dict[str, Any]:
        """Heatmap, output errors and Lie derivatives of the current models."""
        reps: dict[str, Rep] = {"hidden 1": trivial, "hidden 2": trivial, "output": self._rotate_output}
        heat = layer_errors(self.fa.features, self.x_probe, self.group, reps)
        mlp = layer_errors(
            lambda X: {"output": self.mlp(X)}, self.x_probe, self.group, {"output": self._rotate_output}
        )
        deg = layer_errors(
            lambda X: {"output": self.fa(X)}, self.x_degenerate, self.group, {"output": self._rotate_output}
        )
        A = rotation_generator(2).to(self.x_probe)
        lee = [relative_lie_derivative(m, self.x_probe, A, equivariant=True) for m in (self.mlp, self.fa)]
        lee_abs = [mean_abs_lie_derivative(m, self.x_probe, A, equivariant=True) for m in (self.mlp, self.fa)]
        return {
            "equivariance_error": heat,
            "output_equivariance_error": heat[-1, 1:].mean(),
            "mlp_output_equivariance_error": mlp[-1, 1:].mean(),
            "degenerate_output_equivariance_error": deg[-1, 1:].mean(),
            "lie_derivative": torch.tensor(lee),
            "lie_derivative_abs": torch.tensor(lee_abs),
        }

    def train_step(self, step: int) -> Mapping[str, Any]:
        out: dict[str, Any] = {}
        if self.due("equivariance", step):
            with self.timed("equivariance"):
                out.update(self.probe())
        if self.due("test", step):
            with torch.no_grad():
                out["test_loss"] = torch.stack(
                    [F.mse_loss(m(self.x_test), self.y_test) for m in (self.mlp, self.fa)]
                )
        n, b = self.x_train.shape[0], self.params["batch_size"]
        idx = torch.randint(0, n, (min(b, n),), generator=self.batch_gen).to(self.x_train.device)
        x, y = self.x_train[idx], self.y_train[idx]
        losses = torch.stack([F.mse_loss(m(x), y) for m in (self.mlp, self.fa)])
        self.optimizers[0].zero_grad(set_to_none=True)
        losses.sum().backward()  # independent models: the sum's gradient is each model's own
        self.optimizers[0].step()
        out["train_loss"] = losses.detach()
        return out
