"""Equivariance probes: per-layer error over a group, Lie derivatives, frame averaging.

Definitions follow SCIENCE.md §6. For a layer l with representation ρ_l and a group
element g acting on inputs by ρ_in(g),

    e_l(g) = E_x ‖f_l(ρ_in(g) x) − ρ_l(g) f_l(x)‖ / E_x ‖f_l(x)‖,

norms taken per sample over every non-batch axis. The identity element is answered
from the same forward pass as the reference, so its column is exactly 0 by
construction, not merely small.

Representations provided here:

* ``c4_spatial``: rot90 of the last two (spatial) axes, for plain CNN feature maps.
* ``c4_regular``: rot90 plus a cyclic shift of the orientation axis (axis −3), for
  C4 group-CNN feature maps shaped (B, C, 4, H, W).
* ``trivial``: the identity, for invariant outputs.

Also: the Lie derivative of a map along a one-parameter subgroup (a JVP through
``torch.func.jvp``), reported two ways: relative, E‖L f‖/E‖f‖ (scale-free), and as
Gruver et al. (2022) tabulate it, the unnormalised mean |L f| (of softmax probabilities
for classifiers); and PCA frame averaging for point clouds under O(d) or SO(d)
plus translations (Puny et al. 2022).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

#: Names of the C4 elements, k quarter turns counter-clockwise.
C4_NAMES: tuple[str, ...] = ("e", "r90", "r180", "r270")

#: A representation: ``rep(k, h)`` applies group element number ``k`` to features ``h``.
Rep = Callable[[int, Tensor], Tensor]


def c4_spatial(k: int, h: Tensor) -> Tensor:
    """Rotate the last two axes by ``k`` quarter turns (exact on odd-sized grids)."""
    return torch.rot90(h, k % 4, dims=(-2, -1))


def c4_regular(k: int, h: Tensor) -> Tensor:
    """Rotate spatially and shift the orientation axis (−3) cyclically by ``k``."""
    return torch.roll(c4_spatial(k, h), shifts=k % 4, dims=-3)


def trivial(k: int, h: Tensor) -> Tensor:
    """The trivial representation: invariant features do not move."""
    return h


def d4_act(k: int, x: Tensor) -> Tensor:
    """Dihedral group D4 on images: k < 4 rotates by k·90°, k ≥ 4 flips (left↔right) first.

    Element ``4 + j`` is ``r^j ∘ m`` with ``m`` the horizontal flip.
    """
    if k >= 4:
        x = torch.flip(x, dims=(-1,))
    return c4_spatial(k % 4, x)


D4_NAMES: tuple[str, ...] = ("e", "r90", "r180", "r270", "flip h", "flip anti", "flip v", "flip diag")


@dataclass(frozen=True)
class Group:
    """A finite set of group elements acting on the inputs.

    Parameters
    ----------
    names
        One name per element; they label the heatmap's columns.
    act
        ``act(k, x)`` applies element ``k`` to a batch of inputs.
    identity
        Index of the identity element (its column is exactly 0).
    """

    names: tuple[str, ...]
    act: Rep
    identity: int = 0


C4 = Group(C4_NAMES, c4_spatial)
D4 = Group(D4_NAMES, d4_act)


def _sample_norms(h: Tensor) -> Tensor:
    return h.reshape(h.shape[0], -1).norm(dim=1)


def relative_error(transformed: Tensor, expected: Tensor, reference: Tensor) -> float:
    """E‖transformed − expected‖ / E‖reference‖ over the batch (0 when the reference is 0)."""
    num = _sample_norms(transformed - expected).mean()
    den = _sample_norms(reference).mean()
    if float(den) == 0.0:
        return 0.0 if float(num) == 0.0 else float("inf")
    return float(num / den)


@torch.no_grad()
def layer_errors(
    features: Callable[[Tensor], Mapping[str, Tensor]],
    x: Tensor,
    group: Group,
    reps: Mapping[str, Rep],
    elements: Sequence[int] | None = None,
) -> np.ndarray:
    """Equivariance error of every layer for every group element.

    Parameters
    ----------
    features
        ``features(x)`` returns ``{layer name: activation}`` for a batch, input → output.
    x
        A batch of inputs (first axis = batch).
    group
        The elements and how they act on inputs.
    reps
        The representation ``ρ_l`` of each layer named by ``features``.
    elements
        Which elements to evaluate (default all), in column order.

    Returns
    -------
    numpy.ndarray
        Shape (layers, elements); rows in the order ``features`` returns them.
    """
    ks = list(range(len(group.names))) if elements is None else list(elements)
    base = features(x)
    out = np.zeros((len(base), len(ks)))
    for j, k in enumerate(ks):
        # The identity reuses the reference pass: f(e·x) is f(x), bit for bit.
        moved = base if k == group.identity else features(group.act(k, x))
        for i, name in enumerate(base):
            rep = reps[name]
            out[i, j] = relative_error(moved[name], rep(k, base[name]), base[name])
    return out


# ------------------------------------------------------------------ Lie derivatives
def rotation_generator(axis: int = 2, d: int = 3, dtype: torch.dtype = torch.float64) -> Tensor:
    """The so(d) generator of rotations in the plane orthogonal to ``axis`` (d = 3) or the plane (d = 2)."""
    A = torch.zeros(d, d, dtype=dtype)
    i, j = [a for a in range(3) if a != axis] if d == 3 else (0, 1)
    A[i, j], A[j, i] = -1.0, 1.0
    return A


def lie_derivative(
    f: Callable[[Tensor], Tensor],
    x: Tensor,
    act_in: Callable[[Tensor, Tensor], Tensor],
    act_out: Callable[[Tensor, Tensor], Tensor],
) -> Tensor:
    """L f(x) = d/dt [ρ_out(−t) f(ρ_in(t) x)] at t = 0, by forward-mode AD.

    ``act_in(t, x)`` and ``act_out(t, y)`` apply the one-parameter subgroup element at
    parameter ``t`` (a 0-d tensor). Exactly equivariant maps give 0.
    """
    t0 = torch.zeros((), dtype=x.dtype, device=x.device)

    def path(t: Tensor) -> Tensor:
        return act_out(-t, f(act_in(t, x)))

    return torch.func.jvp(path, (t0,), (torch.ones_like(t0),))[1]


def point_rotation(A: Tensor) -> Callable[[Tensor, Tensor], Tensor]:
    """``act(t, X)``: rotate point rows by exp(tA) (X shaped (..., n, d) or (..., d))."""

    def act(t: Tensor, X: Tensor) -> Tensor:
        R = torch.linalg.matrix_exp(t * A.to(X))
        return X @ R.transpose(-1, -2)

    return act


def _rotation_lie_derivative(
    f: Callable[[Tensor], Tensor], X: Tensor, A: Tensor, *, equivariant: bool
) -> tuple[Tensor, Tensor]:
    """(L_A f(X), f(X)) for rotations exp(tA) of point clouds, by one JVP."""
    act_in = point_rotation(A)
    act_out = point_rotation(A) if equivariant else (lambda t, y: y)
    with torch.enable_grad():
        d = lie_derivative(f, X, act_in, act_out)
    with torch.no_grad():
        return d.detach(), f(X)


def relative_lie_derivative(
    f: Callable[[Tensor], Tensor], X: Tensor, A: Tensor, *, equivariant: bool
) -> float:
    """Relative Lie derivative E‖L_A f‖ / E‖f‖ over a batch of point clouds.

    Norms are per sample over every output axis, then averaged over the batch (the same
    ratio of means as :func:`relative_error`). Scale-free, so it compares models whose
    outputs have different sizes; it is *not* the number Gruver et al. tabulate (see
    :func:`mean_abs_lie_derivative`). ``equivariant=True`` treats the output as vectors
    rotated by the group; else as invariant.
    """
    d, y = _rotation_lie_derivative(f, X, A, equivariant=equivariant)
    return relative_error(d, torch.zeros_like(d), y)


def mean_abs_lie_derivative(
    f: Callable[[Tensor], Tensor],
    X: Tensor,
    A: Tensor,
    *,
    equivariant: bool,
    softmax: bool = False,
) -> float:
    """Gruver et al.'s local equivariance error: mean |L_A g| over samples and output entries.

    Unnormalised, so its size depends on the output's scale. With ``softmax=True``, g is
    the softmax of ``f``'s last axis (class logits → probabilities) and the number is the
    one Gruver et al. (2022) report for classifiers (``lee/e2e_lee.py``: the Lie derivative
    of ``softmax(model(x))``, ``abs().mean(-1)`` per image, then the mean over images).
    Probabilities are invariant outputs, so ``softmax`` needs ``equivariant=False``.
    """
    if softmax and equivariant:
        raise ValueError("softmax outputs are class probabilities: they cannot rotate (equivariant=False)")
    g = (lambda Z: torch.softmax(f(Z), dim=-1)) if softmax else f
    d, _ = _rotation_lie_derivative(g, X, A, equivariant=equivariant)
    return float(d.abs().mean())


# ------------------------------------------------------------------ frame averaging
def pca_frames(X: Tensor, *, proper: bool = False) -> tuple[Tensor, Tensor]:
    """Centroid and PCA frame of each point cloud (Puny et al. 2022).

    Parameters
    ----------
    X
        Point clouds, shape (B, n, d).
    proper
        ``False``: all 2^d sign flips (the frame for O(d)); ``True``: the 2^(d−1) flips with
        determinant +1 (SO(d)).

    Returns
    -------
    (t, R)
        ``t`` shaped (B, 1, d); ``R`` shaped (B, F, d, d), each R an orthogonal matrix whose
        columns are the principal axes with one sign pattern. The frame is unique only when
        the covariance eigenvalues are distinct: degenerate clouds break equivariance.
    """
    t = X.mean(dim=-2, keepdim=True)
    Xc = X - t
    cov = Xc.transpose(-1, -2) @ Xc
    _, U = torch.linalg.eigh(cov)  # ascending eigenvalues, so the axis order is canonical
    d = X.shape[-1]
    signs = torch.tensor(list(itertools.product((1.0, -1.0), repeat=d)), dtype=X.dtype, device=X.device)
    R = U.unsqueeze(1) * signs[None, :, None, :]  # flip column j by signs[:, j]
    if proper:
        # det(U·S) = det(U)·det(S): choose the flips per cloud that give det +1.
        detU = torch.linalg.det(U)  # (B,)
        detS = signs.prod(dim=1)  # (F,)
        keep = (detU[:, None] * detS[None, :]) > 0
        R = R[keep].reshape(X.shape[0], -1, d, d)
    return t, R


def frame_average(
    phi: Callable[[Tensor], Tensor], X: Tensor, *, equivariant: bool, proper: bool = False
) -> Tensor:
    """Frame-averaged ⟨φ⟩(X): invariant, or O(d)/SO(d)-equivariant vector output.

    ``phi`` maps canonicalised clouds (M, n, d) to (M, k) (invariant) or (M, d) (vectors).
    ⟨φ⟩(X) = (1/|F|) Σ_R R φ(Rᵀ(X − t)); translations are removed by the centroid, so
    vector outputs are translation-invariant (directions, not positions).
    """
    t, R = pca_frames(X, proper=proper)
    B, F = R.shape[:2]
    canon = (X - t).unsqueeze(1) @ R  # row form of Rᵀ(x − t) for each point
    y = phi(canon.reshape(B * F, *X.shape[1:])).reshape(B, F, -1)
    if equivariant:
        y = (R @ y.unsqueeze(-1)).squeeze(-1)
    return y.mean(dim=1)


def random_orthogonal(d: int, gen: torch.Generator, dtype: torch.dtype = torch.float64) -> Tensor:
    """A Haar-random element of O(d) (QR of a Gaussian matrix with the sign fix)."""
    Q, Rr = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=dtype))
    return Q * torch.sign(torch.diagonal(Rr)).unsqueeze(0)


def point_cloud_error(
    f: Callable[[Tensor], Tensor],
    X: Tensor,
    Q: Tensor,
    shift: Tensor,
    *,
    equivariant: bool,
) -> float:
    """Relative error of ``f`` under x ↦ Qx + shift for every point of every cloud.

    Vector outputs (``equivariant=True``) are expected to rotate by Q and ignore the shift.
    """
    with torch.no_grad():
        y = f(X)
        y_moved = f(X @ Q.T + shift)
        expected = y @ Q.T if equivariant else y
        return relative_error(y_moved, expected, y)
