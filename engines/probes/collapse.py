"""Neural-collapse metrics (Papyan, Han & Donoho 2020; Tirer et al. 2023).

Everything here is numpy in, floats (or small arrays) out, computed in float64.
The cost is one pass over the features plus an SVD of the C×d class-mean matrix, so
the metrics can run every few steps on thousands of features.

Notation: features ``H`` (N×d), labels ``y`` (N,), classifier ``W`` (C×d), bias ``b``
(C,). ``M`` is the C×d matrix of centred class means ``μ_c − μ_G``.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "class_means",
    "cosine_matrix",
    "geometry_3d",
    "nc_metrics",
    "simplex_etf",
]


def class_means(
    features: np.ndarray, labels: np.ndarray, num_classes: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class means and the global mean of ``features``.

    Parameters
    ----------
    features
        N×d array.
    labels
        N integer labels in ``[0, num_classes)``.
    num_classes
        C; inferred as ``labels.max() + 1`` when omitted.

    Returns
    -------
    means, global_mean
        C×d class means ``μ_c`` and the d-vector ``μ_G``, the unweighted mean of the class
        means (Papyan et al.'s code and ``rhubarbwu/neural-collapse``). It equals the mean
        over all samples only when every class has the same number of samples; on
        imbalanced data the sample mean would tilt every centred mean towards the big
        classes.
    """
    H = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64).ravel()
    C = int(y.max()) + 1 if num_classes is None else int(num_classes)
    counts = np.bincount(y, minlength=C).astype(np.float64)
    if np.any(counts == 0):
        raise ValueError(
            f"every class needs at least one sample; empty: {np.flatnonzero(counts == 0).tolist()}"
        )
    # A C×N indicator product is ~50× faster than np.add.at for these sizes.
    indicator = np.zeros((C, H.shape[0]))
    indicator[y, np.arange(H.shape[0])] = 1.0
    means = (indicator @ H) / counts[:, None]
    return means, means.mean(axis=0)


def cosine_matrix(rows: np.ndarray) -> np.ndarray:
    """C×C cosines between the rows of ``rows`` (zero rows give cosine 0)."""
    A = np.asarray(rows, dtype=np.float64)
    norms = np.linalg.norm(A, axis=1)
    safe = np.where(norms > 0, norms, 1.0)
    U = A / safe[:, None]
    return U @ U.T


def _cv(x: np.ndarray) -> float:
    """Coefficient of variation std/mean with the sample std (ddof 1; 0 for an all-zero vector).

    ddof 1 is ``torch.std``'s default, which Papyan et al.'s code uses; with C = 10
    classes ddof 0 would read 5 % low, with C = 4 13 %.
    """
    m = float(np.mean(x))
    return float(np.std(x, ddof=1) / m) if m > 0 and x.size > 1 else 0.0


def _angle_stats(rows: np.ndarray) -> tuple[float, float]:
    """(std of off-diagonal cosines, mean |cos + 1/(C−1)|) of the rows."""
    C = rows.shape[0]
    cos = cosine_matrix(rows)
    off = cos[~np.eye(C, dtype=bool)]
    # The MEAN off-diagonal cosine of centred means is ≈ −1/(C−1) by construction
    # (they sum to zero), so it says nothing about collapse; the spread does.
    return float(np.std(off)), float(np.mean(np.abs(off + 1.0 / (C - 1))))


def nc_metrics(
    features: np.ndarray,
    labels: np.ndarray,
    W: np.ndarray,
    b: np.ndarray | None = None,
    num_classes: int | None = None,
) -> dict[str, float]:
    """Neural-collapse metrics of last-layer features and a linear classifier.

    Parameters
    ----------
    features
        N×d penultimate-layer features ``h_i``.
    labels
        N integer class labels.
    W
        C×d classifier (rows ``w_c``).
    b
        Optional C-vector bias (used only by the NCC mismatch).
    num_classes
        C; defaults to ``W.shape[0]``.

    Notes
    -----
    Conventions (those of Papyan, Han & Donoho's code and of ``rhubarbwu/neural-collapse``):

    * μ_G is the mean of the C class means, not the mean over samples; the two differ on
      imbalanced data, and the class-mean version weighs every class equally.
    * Σ_W = (1/N) Σ_i (h_i − μ_{y_i})(h_i − μ_{y_i})ᵀ: pooled over all N samples, so a
      big class weighs more in Σ_W (as in both references).
    * Σ_B = (1/C) Σ_c (μ_c − μ_G)(μ_c − μ_G)ᵀ.
    * Equinorm is std/mean with the sample std (ddof 1, ``torch.std``'s default).
    * Equiangularity is the population std (ddof 0) of the C(C−1) off-diagonal cosines
      (Papyan's Fig. 3 quantity; their code logs only the maximal-angle deviation).

    Returns
    -------
    dict
        ``nc1``: Tr(Σ_W Σ_B⁺)/C (Papyan et al.; the pseudo-inverse keeps the C−1
        non-null directions of Σ_B). ``nc1_trace_ratio``: Tr Σ_W / Tr Σ_B (Tirer et
        al.; better conditioned). ``equinorm_means``, ``equinorm_weights``:
        coefficients of variation of ‖μ_c − μ_G‖ and ‖w_c‖. ``equiangularity``,
        ``equiangularity_weights``: std of the off-diagonal cosines of the centred
        means / the classifier rows. ``max_angle``, ``max_angle_weights``: mean
        |cos + 1/(C−1)| over the off-diagonal pairs. ``nc3``: ‖Wᵀ/‖W‖ − Mᵀ/‖M‖‖²_F
        (self-duality). ``nc4``: fraction of samples where the classifier's argmax
        and the nearest class mean disagree. ``accuracy``: classifier accuracy.
    """
    H = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64).ravel()
    Wm = np.asarray(W, dtype=np.float64)
    C = Wm.shape[0] if num_classes is None else int(num_classes)
    if C < 2:
        raise ValueError("neural-collapse metrics need at least 2 classes")
    N = H.shape[0]
    mu, mu_g = class_means(H, y, C)
    M = mu - mu_g
    R = H - mu[y]  # within-class residuals

    # Σ_W = RᵀR/N and Σ_B = MᵀM/C = V S² Vᵀ/C, so Σ_B⁺ = C·V S⁻² Vᵀ and
    # Tr(Σ_W Σ_B⁺)/C = ‖R V S⁻¹‖²/N: an N×d×r product instead of a d×d pinv.
    _, s, Vt = np.linalg.svd(M, full_matrices=False)
    # Centred means have rank <= C−1 by construction: cap the rank there, so a
    # round-off singular value (≈1e-16·s_max) is never inverted.
    tol = max(M.shape) * np.finfo(np.float64).eps * (s[0] if s.size else 0.0)
    keep = (s > tol) & (np.arange(s.size) < C - 1)
    nc1 = float(np.sum((R @ Vt[keep].T / s[keep]) ** 2) / N) if np.any(keep) else float("inf")
    tr_w = float(np.sum(R**2) / N)
    tr_b = float(np.sum(M**2) / C)
    trace_ratio = tr_w / tr_b if tr_b > 0 else float("inf")

    eq_ang, max_ang = _angle_stats(M)
    eq_ang_w, max_ang_w = _angle_stats(Wm)
    nw, nm = np.linalg.norm(Wm), np.linalg.norm(M)
    nc3 = float(np.sum((Wm / nw - M / nm) ** 2)) if nw > 0 and nm > 0 else float("nan")

    logits = H @ Wm.T + (0.0 if b is None else np.asarray(b, dtype=np.float64))
    pred = logits.argmax(axis=1)
    # ‖h − μ_c‖² = ‖h‖² − 2 h·μ_c + ‖μ_c‖²; the ‖h‖² term does not change the argmin.
    ncc = (np.sum(mu**2, axis=1)[None, :] - 2.0 * H @ mu.T).argmin(axis=1)
    return {
        "nc1": nc1,
        "nc1_trace_ratio": trace_ratio,
        "equinorm_means": _cv(np.linalg.norm(M, axis=1)),
        "equinorm_weights": _cv(np.linalg.norm(Wm, axis=1)),
        "equiangularity": eq_ang,
        "equiangularity_weights": eq_ang_w,
        "max_angle": max_ang,
        "max_angle_weights": max_ang_w,
        "nc3": nc3,
        "nc4": float(np.mean(pred != ncc)),
        "accuracy": float(np.mean(pred == y)),
    }


def _spread_layout(num_classes: int) -> np.ndarray:
    """C×3 orthonormal columns, orthogonal to the all-ones vector, rows spread in 3-D.

    Rows start as a Fibonacci lattice on the sphere (deterministic, near-uniform), are
    centred (the centred means sum to zero) and orthonormalised; the rows of the result are
    where the classes of an exact simplex land in :func:`geometry_3d`.
    """
    i = np.arange(num_classes) + 0.5
    z = 1.0 - 2.0 * i / num_classes
    phi = np.pi * (1.0 + np.sqrt(5.0)) * i
    rho = np.sqrt(1.0 - z**2)
    T = np.stack([rho * np.cos(phi), rho * np.sin(phi), z], axis=1)
    T -= T.mean(axis=0)
    Q, _ = np.linalg.qr(T)
    return Q


def simplex_etf(num_classes: int, dim: int | None = None, scale: float = 1.0) -> np.ndarray:
    """The standard simplex equiangular tight frame, rows of norm ``scale``.

    Rows ``e_c`` have equal norm ``scale``, sum to zero, and pairwise cosine −1/(C−1).

    Parameters
    ----------
    num_classes
        C ≥ 2.
    dim
        Ambient dimension, ≥ C−1. ``None`` gives C (the textbook form
        sqrt(C/(C−1))·(I − 11ᵀ/C)); ``C−1`` gives coordinates in the frame's own span.
    scale
        Norm of every row.

    Returns
    -------
    numpy.ndarray
        C×dim array.
    """
    C = int(num_classes)
    if C < 2:
        raise ValueError("a simplex ETF needs at least 2 vertices")
    d = C if dim is None else int(dim)
    if d < C - 1:
        raise ValueError(f"a {C}-vertex simplex ETF needs dim >= {C - 1}, got {d}")
    E = np.sqrt(C / (C - 1)) * (np.eye(C) - 1.0 / C)
    if d != C:
        # Coordinates in an orthonormal basis of the frame's (C−1)-dim span, padded.
        U, _, _ = np.linalg.svd(E)
        E = E @ U[:, : C - 1]
        E = np.hstack([E, np.zeros((C, d - (C - 1)))])
    return scale * E


def geometry_3d(M: np.ndarray, W: np.ndarray, previous: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """3-D coordinates of the centred class means, the classifier and the nearest ETF.

    For C ≤ 4 the centred means span (at most) 3 dimensions and the basis is their top
    right singular vectors: exact coordinates in an orthonormal basis of their span. For
    larger C the basis is the orthonormal 3-frame in their span closest to a fixed,
    well-spread class layout (``_spread_layout``), so that an (exact) simplex shows all C
    means apart instead of PCA's arbitrary slice of equal singular directions.

    Parameters
    ----------
    M
        C×d centred class means.
    W
        C×d classifier rows; projected on the same basis and rescaled so that
        ‖W‖_F = ‖M‖_F (self-duality compares exactly these normalised matrices).
    previous
        The ``means`` coordinates from an earlier call; the new frame is rotated
        (orthogonal Procrustes in 3-D) to match them, so the picture does not jump
        when the SVD flips a sign or reorders nearly equal directions.

    Returns
    -------
    dict
        ``means``, ``classifier``, ``etf`` (each C×3) and ``basis`` (3×d). ``etf`` is
        the simplex ETF with rows of the means' RMS norm, rotated to be the closest
        one to the means (Procrustes in their span), then projected like them.
    """
    M = np.asarray(M, dtype=np.float64)
    Wm = np.asarray(W, dtype=np.float64)
    C, d = M.shape
    _, _, Vt = np.linalg.svd(M, full_matrices=False)
    r = min(C - 1, Vt.shape[0])  # centred means have rank <= C−1
    span = Vt[:r]  # r×d
    P = M @ span.T  # C×r coordinates of the means in their span
    scale = float(np.sqrt(np.mean(np.sum(M**2, axis=1))))
    E0 = simplex_etf(C, dim=r if r >= C - 1 else C - 1, scale=scale)[:, :r]
    # Rotate the ETF onto the means: Q = argmin ‖E0 Q − P‖ over orthogonal Q.
    U, _, Vq = np.linalg.svd(E0.T @ P)
    E = E0 @ (U @ Vq)
    nw = np.linalg.norm(Wm)
    Ws = Wm * (np.linalg.norm(M) / nw) if nw > 0 else Wm

    basis = np.zeros((3, d))
    k = min(3, r)
    B = np.eye(r)[:, :k]  # r×k: which directions of the span to show
    if r > 3:
        # PCA is useless here: near collapse all C−1 singular values are equal, so the
        # top three are an arbitrary slice and most means land near the centre. Instead
        # use the orthonormal 3-frame of the span closest to ``P^T A`` for a fixed, spread
        # class-space layout A: for an exact simplex the means then sit at the rows of A
        # (well apart), and since A names classes, not feature directions, the view does
        # not jump between steps. It is still an orthogonal projection of the means.
        A = _spread_layout(C)
        Ub, sb, Vbt = np.linalg.svd(P.T @ A, full_matrices=False)
        if sb[-1] > 1e-9 * max(sb[0], 1e-300):
            B = Ub @ Vbt
    basis[:k] = B.T @ span
    means3 = np.zeros((C, 3))
    etf3 = np.zeros((C, 3))
    means3[:, :k] = P @ B
    etf3[:, :k] = E @ B
    cls3 = Ws @ basis.T
    if previous is not None and np.shape(previous) == means3.shape:
        Ua, _, Vb = np.linalg.svd(means3.T @ np.asarray(previous, dtype=np.float64))
        Q = Ua @ Vb
        means3, cls3, etf3, basis = means3 @ Q, cls3 @ Q, etf3 @ Q, Q.T @ basis
    return {"means": means3, "classifier": cls3, "etf": etf3, "basis": basis}
