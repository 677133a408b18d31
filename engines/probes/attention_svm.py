"""The attention SVM of Tarzanagh, Li, Thrampoulidis & Oymak (2023), and its helpers.

For sequences ``X[i]`` (T tokens of dimension d), queries ``z_i`` and one selected
token ``alpha_i`` per sequence, the W-ATT-SVM is

    W^mm = argmin ||W||   s.t.   (x_{i,alpha_i} - x_{i,t})^T W z_i >= 1   for all t != alpha_i,

with ``||.||`` the Frobenius norm (the limit direction of gradient descent on W) or
the nuclear norm (the limit for the factorisation W = K Q^T). The scores are linear in
the rank-one features ``x_{it} z_i^T``, so this is a hard-margin SVM in R^{d x d} that
separates each sequence's selected token from the others; W^mm is a combination of
n rank-one terms, hence rank(W^mm) <= n.

Only numpy and cvxpy here: the probe is usable outside the engines and its tests.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Norm = Literal["fro", "nuc"]


class AttSVMError(RuntimeError):
    """The solver did not return an optimal solution (infeasible, unbounded, failed).

    Attributes
    ----------
    status
        The cvxpy status string (``"infeasible"``, ``"unbounded"``, ...), or ``"failed"``
        when the solver raised.
    """

    def __init__(self, status: str, detail: str = "") -> None:
        msg = f"attention SVM not solved: solver status {status!r}"
        if status in ("infeasible", "infeasible_inaccurate"):
            msg += (
                " (no W separates every selected token from the others of its sequence by a"
                " positive margin: is a selected token repeated in its sequence, or a query zero?)"
            )
        if detail:
            msg += f"; {detail}"
        super().__init__(msg)
        self.status = status


def _check_shapes(X: np.ndarray, Z: np.ndarray, alpha: np.ndarray) -> tuple[np.ndarray, ...]:
    X = np.asarray(X, dtype=np.float64)
    Z = np.asarray(Z, dtype=np.float64)
    alpha = np.asarray(alpha)
    if X.ndim != 3:
        raise ValueError(f"X must have shape (n, T, d), got {X.shape}")
    n, T, d = X.shape
    if Z.shape != (n, d):
        raise ValueError(f"Z must have shape (n, d) = ({n}, {d}), got {Z.shape}")
    if alpha.shape != (n,) or alpha.dtype.kind not in "iu":
        raise ValueError(f"alpha must be {n} integer token indices, got {alpha!r}")
    if np.any(alpha < 0) or np.any(alpha >= T):
        raise ValueError(f"alpha must lie in [0, {T - 1}], got {alpha.tolist()}")
    if T < 2:
        raise ValueError("each sequence needs at least two tokens")
    return X, Z, alpha.astype(np.int64)


def margin_features(X: np.ndarray, Z: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The SVM's constraint matrices ``(x_{i,alpha_i} - x_{it}) z_i^T`` for t != alpha_i.

    Returns
    -------
    np.ndarray
        Shape ``(n * (T - 1), d, d)``; ``<F_k, W>`` is the k-th constraint's left side.
    """
    X, Z, alpha = _check_shapes(X, Z, alpha)
    n, T, _ = X.shape
    rows = []
    for i in range(n):
        diff = X[i, alpha[i]][None, :] - np.delete(X[i], alpha[i], axis=0)  # (T-1, d)
        rows.append(diff[:, :, None] * Z[i][None, None, :])
    return np.concatenate(rows, axis=0)


def solve_att_svm(
    X: np.ndarray, Z: np.ndarray, alpha: np.ndarray, norm: Norm = "fro", *, solver: str | None = None
) -> np.ndarray:
    """Solve the W-ATT-SVM for the selected tokens ``alpha``.

    Parameters
    ----------
    X
        Tokens, shape ``(n, T, d)``.
    Z
        Queries, shape ``(n, d)`` (for self-attention, the query token of each sequence).
    alpha
        Selected token of each sequence, shape ``(n,)``.
    norm
        ``"fro"`` (Frobenius; limit of GD on W) or ``"nuc"`` (nuclear; limit of GD on
        the factors K, Q of W = K Q^T).
    solver
        A cvxpy solver name; ``None`` lets cvxpy choose (Clarabel in cvxpy 1.9).

    Returns
    -------
    np.ndarray
        W^mm, shape ``(d, d)``, float64, scaled so that the smallest margin is exactly 1
        (the solver's own answer meets the constraints only to about 1e-5).

    Raises
    ------
    AttSVMError
        If the solver's status is not ``"optimal"``; the error names the status.
    ValueError
        If the shapes or indices are inconsistent, or ``norm`` is unknown.
    """
    import cvxpy as cp  # ~0.5 s to import; only runs that solve pay for it

    if norm not in ("fro", "nuc"):
        raise ValueError(f"norm must be 'fro' or 'nuc', got {norm!r}")
    F = margin_features(X, Z, alpha)
    d = F.shape[1]
    # cvxpy's vec() stacks columns (Fortran order), so flatten the features the same way.
    A = F.transpose(0, 2, 1).reshape(F.shape[0], d * d)
    W = cp.Variable((d, d))
    objective = cp.norm(W, "fro") if norm == "fro" else cp.normNuc(W)
    problem = cp.Problem(cp.Minimize(objective), [A @ cp.vec(W, order="F") >= 1])
    try:
        problem.solve(solver=solver)
    except cp.error.SolverError as exc:
        raise AttSVMError("failed", str(exc)) from exc
    if problem.status != cp.OPTIMAL or W.value is None:
        raise AttSVMError(str(problem.status))
    sol = np.array(W.value, dtype=np.float64)
    # Interior-point solvers stop with constraints met only to ~1e-5 (measured with Clarabel).
    # Scaling by the smallest margin makes every margin >= 1 to float precision, at a
    # relative cost in the objective of the same ~1e-5: feasible beats a hair more optimal.
    smallest = float(np.min(A @ sol.ravel(order="F")))
    if not smallest > 0:
        raise AttSVMError(
            "optimal", f"but the solution violates the constraints (smallest margin {smallest:.3g})"
        )
    return sol / smallest


def constraint_slack(W: np.ndarray, X: np.ndarray, Z: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The margins ``(x_{i,alpha_i} - x_{it})^T W z_i`` for t != alpha_i, shape ``(n * (T - 1),)``."""
    F = margin_features(X, Z, alpha)
    return np.einsum("kab,ab->k", F, np.asarray(W, dtype=np.float64))


def svm_rank(W: np.ndarray, rtol: float = 1e-6) -> int:
    """Numerical rank: singular values above ``rtol`` times the largest one."""
    s = np.linalg.svd(np.asarray(W, dtype=np.float64), compute_uv=False)
    if s.size == 0 or s[0] == 0.0:
        return 0
    return int(np.sum(s > rtol * s[0]))


def token_scores(X: np.ndarray, Y: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The token scores ``gamma_{it} = Y_i v^T x_{it}``, shape ``(n, T)``."""
    X = np.asarray(X, dtype=np.float64)
    return np.asarray(Y, dtype=np.float64)[:, None] * (X @ np.asarray(v, dtype=np.float64))


def optimal_tokens(X: np.ndarray, Y: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The globally optimal token of each sequence, ``argmax_t gamma_{it}``, shape ``(n,)``."""
    return np.argmax(token_scores(X, Y, v), axis=1)


def selected_tokens(attention: np.ndarray) -> np.ndarray:
    """The token a trained softmax selects in each sequence, ``argmax_t p_{it}``.

    Parameters
    ----------
    attention
        Softmax probabilities (or scores: argmax is the same), shape ``(n, T)``.
    """
    return np.argmax(np.asarray(attention), axis=1)


def correlation(W1: np.ndarray, W2: np.ndarray) -> float:
    """The paper's "correlation coefficient" ``<W1, W2> / (||W1||_F ||W2||_F)``.

    Returns NaN when either matrix is zero (no direction).
    """
    a = np.asarray(W1, dtype=np.float64).ravel()
    b = np.asarray(W2, dtype=np.float64).ravel()
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    if denom == 0.0:
        return float("nan")
    return float(a @ b) / denom
