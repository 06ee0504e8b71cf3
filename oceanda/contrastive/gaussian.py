"""Closed forms for Gaussian data and linear encoders (paper-notes section 5), used as exact tests.

mu = N(0, C), C = [[Cuu, Cuv], [Cvu, Cvv]], u = state, v = obs, g_u = G u, g_v = H v, tau = 1.
Inner product similarity: s = u^T A v with A = G^T H. Negative squared distance:
s = -1/2 u^T B u + u^T A v - 1/2 v^T D v with A = G^T H, B = G^T G, D = H^T H.
All functions take and return float64 numpy arrays.
"""

from __future__ import annotations

import numpy as np


def _sym_pow(C: np.ndarray, p: float) -> np.ndarray:
    w, V = np.linalg.eigh(C)
    return (V * w**p) @ V.T


def _arrs(*mats):
    return [np.asarray(m, dtype=np.float64) for m in mats]


def conditional_state_given_obs(Cuu, Cuv, Cvv) -> tuple[np.ndarray, np.ndarray]:
    """True u|v = N(M v, Cu|v): returns (M, Cu|v).

    Parameters
    ----------
    Cuu, Cuv, Cvv : the covariance blocks of (u, v)

    Returns
    -------
    tuple of numpy.ndarray
        ``(M, Cu|v)``.
    """
    Cuu, Cuv, Cvv = _arrs(Cuu, Cuv, Cvv)
    M = np.linalg.solve(Cvv, Cuv.T).T
    return M, Cuu - M @ Cuv.T


def conditional_obs_given_state(Cuu, Cuv, Cvv) -> tuple[np.ndarray, np.ndarray]:
    """True v|u = N(M u, Cv|u): returns (M, Cv|u).

    Parameters
    ----------
    Cuu, Cuv, Cvv : the covariance blocks of (u, v)

    Returns
    -------
    tuple of numpy.ndarray
        ``(M, Cv|u)``.
    """
    Cuu, Cuv, Cvv = _arrs(Cuu, Cuv, Cvv)
    M = np.linalg.solve(Cuu, Cuv).T
    return M, Cvv - M @ Cuv


def canonical_correlations(Cuu, Cuv, Cvv) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SVD (U, s, Vt) of the whitened cross-covariance Cuu^-1/2 Cuv Cvv^-1/2.

    Parameters
    ----------
    Cuu, Cuv, Cvv : the covariance blocks of (u, v)

    Returns
    -------
    tuple of numpy.ndarray
        ``(U, s, Vt)``; ``s`` are the canonical correlations.
    """
    Cuu, Cuv, Cvv = _arrs(Cuu, Cuv, Cvv)
    return np.linalg.svd(_sym_pow(Cuu, -0.5) @ Cuv @ _sym_pow(Cvv, -0.5), full_matrices=False)


def inner_product_conditional_optimum(Cuu, Cuv, Cvv, rank: int | None = None) -> np.ndarray:
    """A* = Cuu^-1 Cuv Cvv^-1 (any conditional loss, inner product); rank r via truncated SVD.

    Parameters
    ----------
    Cuu, Cuv, Cvv : the covariance blocks of (u, v)
    rank : keep this many canonical directions (default: all)

    Returns
    -------
    numpy.ndarray
        ``A*`` ``[dim u, dim v]``.
    """
    Cuu, Cuv, Cvv = _arrs(Cuu, Cuv, Cvv)
    if rank is None:
        return np.linalg.solve(Cuu, np.linalg.solve(Cvv, Cuv.T).T)
    U, s, Vt = canonical_correlations(Cuu, Cuv, Cvv)
    r = int(rank)
    core = (U[:, :r] * s[:r]) @ Vt[:r]
    return _sym_pow(Cuu, -0.5) @ core @ _sym_pow(Cvv, -0.5)


def quadratic_one_sided_optimum(Cuu, Cuv, Cvv) -> tuple[np.ndarray, np.ndarray]:
    """(A*, B*) of the state|obs loss with negative squared distance: A* = Cu|v^-1 Cuv Cvv^-1,
    B* = Cu|v^-1 - Cuu^-1; the model conditional then equals the true one (mean and covariance).

    Parameters
    ----------
    Cuu, Cuv, Cvv : the covariance blocks of (u, v)

    Returns
    -------
    tuple of numpy.ndarray
        ``(A*, B*)``.
    """
    Cuu, Cuv, Cvv = _arrs(Cuu, Cuv, Cvv)
    _, Cc = conditional_state_given_obs(Cuu, Cuv, Cvv)
    Pc = np.linalg.inv(Cc)
    A = Pc @ np.linalg.solve(Cvv, Cuv.T).T
    B = Pc - np.linalg.inv(Cuu)
    return A, 0.5 * (B + B.T)


def _h(s: np.ndarray) -> np.ndarray:
    s = np.asarray(s, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (np.sqrt(1 + 4 * s**2) - 1) / (2 * s)
    return np.where(s > 0, out, 0.0)


def inner_product_joint_optimum(Cuu, Cuv, Cvv, rank: int | None = None) -> np.ndarray:
    """A* = Cuu^-1/2 U h(S) V^T Cvv^-1/2 with h(s) = (sqrt(1+4s^2)-1)/(2s) (joint loss, inner product).

    Parameters
    ----------
    Cuu, Cuv, Cvv : the covariance blocks of (u, v)
    rank : keep this many canonical directions (default: all)

    Returns
    -------
    numpy.ndarray
        ``A*`` ``[dim u, dim v]``.
    """
    Cuu, Cuv, Cvv = _arrs(Cuu, Cuv, Cvv)
    U, s, Vt = canonical_correlations(Cuu, Cuv, Cvv)
    r = len(s) if rank is None else int(rank)
    core = (U[:, :r] * _h(s[:r])) @ Vt[:r]
    return _sym_pow(Cuu, -0.5) @ core @ _sym_pow(Cvv, -0.5)


# --- model laws for given parameters -------------------------------------------------------------

def inner_product_model_state_given_obs(A, Cuu) -> tuple[np.ndarray, np.ndarray]:
    """Model u|v = N(Cuu A v, Cuu): returns (mean matrix, covariance).

    Parameters
    ----------
    A : the coupling ``G^T H``
    Cuu, Cuv, Cvv : the covariance blocks of (u, v)

    Returns
    -------
    tuple of numpy.ndarray
        ``(mean matrix, covariance)``.
    """
    A, Cuu = _arrs(A, Cuu)
    return Cuu @ A, Cuu.copy()


def inner_product_model_obs_given_state(A, Cvv) -> tuple[np.ndarray, np.ndarray]:
    """Model v|u = N(Cvv A^T u, Cvv).

    Parameters
    ----------
    A : the coupling ``G^T H``
    Cuu, Cuv, Cvv : the covariance blocks of (u, v)

    Returns
    -------
    tuple of numpy.ndarray
        ``(mean matrix, covariance)``.
    """
    A, Cvv = _arrs(A, Cvv)
    return Cvv @ A.T, Cvv.copy()


def inner_product_model_joint_covariance(A, Cuu, Cvv) -> np.ndarray:
    """Covariance of the tilted joint nu ∝ exp(u^T A v) mu_u mu_v (precision [[Cuu^-1, -A], [-A^T, Cvv^-1]]).

    Parameters
    ----------
    A : the coupling ``G^T H``
    Cuu, Cuv, Cvv : the covariance blocks of (u, v)

    Returns
    -------
    numpy.ndarray
        The joint covariance of (u, v).
    """
    A, Cuu, Cvv = _arrs(A, Cuu, Cvv)
    P = np.block([[np.linalg.inv(Cuu), -A], [-A.T, np.linalg.inv(Cvv)]])
    if np.linalg.eigvalsh(P).min() <= 0:
        raise ValueError("the tilted law is not normalisable for this A (precision not positive definite)")
    return np.linalg.inv(P)


def inner_product_model_state_marginal(A, Cuu, Cvv) -> np.ndarray:
    """Marginal covariance of u under the tilted joint: (Cuu^-1 - A Cvv A^T)^-1.

    Parameters
    ----------
    A : the coupling ``G^T H``
    Cuu, Cuv, Cvv : the covariance blocks of (u, v)

    Returns
    -------
    numpy.ndarray
        The covariance of u.
    """
    A, Cuu, Cvv = _arrs(A, Cuu, Cvv)
    return np.linalg.inv(np.linalg.inv(Cuu) - A @ Cvv @ A.T)


def inner_product_model_obs_marginal(A, Cuu, Cvv) -> np.ndarray:
    """Marginal covariance of v under the tilted joint: (Cvv^-1 - A^T Cuu A)^-1.

    Parameters
    ----------
    A : the coupling ``G^T H``
    Cuu, Cuv, Cvv : the covariance blocks of (u, v)

    Returns
    -------
    numpy.ndarray
        The covariance of v.
    """
    A, Cuu, Cvv = _arrs(A, Cuu, Cvv)
    return np.linalg.inv(np.linalg.inv(Cvv) - A.T @ Cuu @ A)


def quadratic_model_state_given_obs(A, B, Cuu) -> tuple[np.ndarray, np.ndarray]:
    """Model u|v = N((B + Cuu^-1)^-1 A v, (B + Cuu^-1)^-1) for negative squared distance.

    Parameters
    ----------
    A : the coupling ``G^T H``
    B : ``G^T G`` (negative squared distance)
    Cuu, Cuv, Cvv : the covariance blocks of (u, v)

    Returns
    -------
    tuple of numpy.ndarray
        ``(mean matrix, covariance)``.
    """
    A, B, Cuu = _arrs(A, B, Cuu)
    cov = np.linalg.inv(B + np.linalg.inv(Cuu))
    return cov @ A, cov


# --- closed-form population losses (with gradients, for exact minimisation) ---------------------

def inner_product_conditional_loss(A, Cuu, Cuv, Cvv, grad: bool = False):
    """-Tr(A Cvu) + 1/2 Tr(A^T Cuu A Cvv): population limit of clip, state|obs and obs|state.

    Parameters
    ----------
    A : the coupling ``G^T H``
    Cuu, Cuv, Cvv : the covariance blocks of (u, v)
    grad : also return the gradient(s)

    Returns
    -------
    float or tuple
        The loss, with ``grad`` ``(loss, dL/dA)``.
    """
    A, Cuu, Cuv, Cvv = _arrs(A, Cuu, Cuv, Cvv)
    L = -np.trace(A @ Cuv.T) + 0.5 * np.trace(A.T @ Cuu @ A @ Cvv)
    return (L, -Cuv + Cuu @ A @ Cvv) if grad else L


def inner_product_joint_loss(A, Cuu, Cuv, Cvv, grad: bool = False):
    """-Tr(A Cvu) - 1/2 log det(I - Cvv A^T Cuu A); +inf where the tilt is not normalisable.

    Parameters
    ----------
    A : the coupling ``G^T H``
    Cuu, Cuv, Cvv : the covariance blocks of (u, v)
    grad : also return the gradient(s)

    Returns
    -------
    float or tuple
        The loss, with ``grad`` ``(loss, dL/dA)``.
    """
    A, Cuu, Cuv, Cvv = _arrs(A, Cuu, Cuv, Cvv)
    K = A.T @ Cuu @ A
    Q_inv = np.linalg.inv(Cvv) - K
    if np.linalg.eigvalsh(0.5 * (Q_inv + Q_inv.T)).min() <= 0:
        return (np.inf, np.zeros_like(A)) if grad else np.inf
    _, logdet = np.linalg.slogdet(np.eye(len(Cvv)) - Cvv @ K)
    L = -np.trace(A @ Cuv.T) - 0.5 * logdet
    return (L, -Cuv + Cuu @ A @ np.linalg.inv(Q_inv)) if grad else L


def quadratic_state_given_obs_loss(A, B, Cuu, Cuv, Cvv, grad: bool = False):
    """Population state|obs loss for negative squared distance:
    1/2 Tr(B Cuu) - Tr(A Cvu) - 1/2 log det(I + Cuu B) + 1/2 Tr(A^T (B + Cuu^-1)^-1 A Cvv).
    With ``grad`` also returns (dL/dA, dL/dB).

    Parameters
    ----------
    A : the coupling ``G^T H``
    B : ``G^T G`` (negative squared distance)
    Cuu, Cuv, Cvv : the covariance blocks of (u, v)
    grad : also return the gradient(s)

    Returns
    -------
    float or tuple
        The loss, with ``grad`` ``(loss, dL/dA, dL/dB)``.
    """
    A, B, Cuu, Cuv, Cvv = _arrs(A, B, Cuu, Cuv, Cvv)
    P = B + np.linalg.inv(Cuu)
    if np.linalg.eigvalsh(0.5 * (P + P.T)).min() <= 0:
        return (np.inf, np.zeros_like(A), np.zeros_like(B)) if grad else np.inf
    Pi = np.linalg.inv(P)
    _, logdet = np.linalg.slogdet(np.eye(len(Cuu)) + Cuu @ B)
    L = 0.5 * np.trace(B @ Cuu) - np.trace(A @ Cuv.T) - 0.5 * logdet + 0.5 * np.trace(A.T @ Pi @ A @ Cvv)
    if not grad:
        return L
    gA = -Cuv + Pi @ A @ Cvv
    gB = 0.5 * Cuu - 0.5 * Pi.T - 0.5 * (Pi @ A @ Cvv @ A.T @ Pi).T
    return L, gA, gB
