"""EnOI with a Schur-product localised gain, solved in observation space (Oke et al. 2002; Houtekamer & Mitchell 2001).

The static covariance is B = alpha A^T A / (m - 1) from the anomalies ``A [m, n]`` of ``m`` library
states. Localisation multiplies it elementwise by a taper correlation rho (Gaspari-Cohn by default):

    K = (rho_xo o B H^T) (rho_oo o H B H^T + R)^-1,   x_a = x_b + K (y - H x_b),
    var_a = diag((I - K H)(B o rho)) = diag(B) - rowsum(K o (rho_xo o B H^T)).

The state is processed in blocks of grid points: ``rho_xo o B H^T`` is formed with dense matrix
products (cost ``n m p`` for the mean, ``n p^2`` for the variance, ``p^3`` for the ``p x p`` solve), or
from the taper's non-zero entries only when they are rare (very short radii on large grids). About
0.6 s per QG analysis (64 x 64 x 3 channels, 408 static members, ~370 altimetry observations) whatever
the radius, against 1 s (60 km) to 9 s (150 km) for the LETKF form of :func:`oceanda.kalman.filters.enoi`
(one ensemble-space analysis per grid point). Observation operators must be direct: integer state
indices (or a sparse matrix, located at its largest weight, see ``Observations.state_index``). With an
infinite radius the analysis mean and variance are those of the ETKF form, exactly.

Array level: :func:`schur_enoi` (mean and variance from grid points) and :func:`schur_enoi_ensemble`
(an analysis ensemble, the signature of :func:`~oceanda.kalman.filters.enoi`, localised by a
:class:`~oceanda.kalman.localization.Localizer`). The points of a Dataset grid are
:func:`oceanda.grid.points`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from oceanda.errors import DataValidationError
from oceanda.kalman._core import as_rng, static_ensemble
from oceanda.io import check_allocation
from oceanda.kalman.localization import DEFAULT_TAPER, _ball_tree, taper_pairs
from oceanda.kalman.obsspace import Observations, as_observations

#: Above this fraction of non-zero taper entries a block is computed with dense products (BLAS): gathering
#: the non-zero pairs only pays when they are very few (on the QG grid dense is as fast at 4 % and 10x faster at 28 %).
DENSE_FRACTION = 0.02
#: Grid points per tile of the local products (see :func:`_schur_update`): larger tiles share more of S^-1's
#: gathers, smaller ones see fewer observations; 256 is the fastest on the QG grid (fully observed, 100 km).
TILE_POINTS = 256

__all__ = ["DENSE_FRACTION", "TILE_POINTS", "schur_enoi", "schur_enoi_ensemble"]


def _direct(obs: Observations) -> np.ndarray:
    idx = obs.state_index()
    if idx is None:
        raise DataValidationError("Schur-localised EnOI needs direct (index or sparse) observation operators; "
                                  "got a callable one (use oceanda.kalman.filters.enoi)")
    return idx


def _obs_space_matrix(HX: np.ndarray, obs: Observations, obs_points: np.ndarray, radius: float, metric: str,
                      period: Sequence[float | None] | None, taper: str) -> np.ndarray:
    """``rho_oo o HX^T HX + R`` in one ``p x p`` buffer (the taper's non-zero pairs from a KD-tree)."""
    p = obs.size
    r, c, w = taper_pairs(obs_points, obs_points, radius, taper, metric, period)
    S = HX.T @ HX
    vals = S[r, c] * w
    S.fill(0.0)
    S[r, c] = vals
    S[np.diag_indices(p)] += obs.error ** 2
    return S


def _obs_space_inverse(HX: np.ndarray, obs: Observations, obs_points: np.ndarray, *, radius: float, metric: str,
                       period: Sequence[float | None] | None, taper: str) -> np.ndarray:
    """``(rho_oo o HX^T HX + R)^-1``, dense, from its Cholesky factor in place (LAPACK potrf + potri)."""
    p = obs.size
    check_allocation(1.2 * p * p * 8, f"Schur-localised EnOI with {p} observations (a {p} x {p} matrix)")
    args = (HX, obs, obs_points, radius, metric, period, taper)
    try:
        L, _ = scipy.linalg.cho_factor(_obs_space_matrix(*args), lower=True, overwrite_a=True, check_finite=False)
    except np.linalg.LinAlgError:  # a non-positive-definite taper (boxcar) can spoil S
        return np.linalg.pinv(_obs_space_matrix(*args))
    Sinv, info = scipy.linalg.lapack.dpotri(L, lower=1, overwrite_c=1)
    if info != 0:
        raise DataValidationError(f"Schur-localised EnOI: the observation-space matrix is singular (LAPACK info {info})")
    step = 1024  # the lower triangle holds the inverse: mirror it, a band of rows at a time (no p x p temporary)
    for a in range(0, p, step):
        b = min(a + step, p)
        Sinv[a:b, b:] = Sinv[b:, a:b].T
        blk = Sinv[a:b, a:b]
        up = np.triu_indices(b - a, 1)
        blk[up] = blk.T[up]
    return Sinv


def _tiles(points: np.ndarray, metric: str, period: Sequence[float | None] | None, size: int) -> list[np.ndarray]:
    """Grid points in compact tiles of at most ``size``: consecutive runs of a KD-tree's leaf order."""
    order = _ball_tree(points, metric, period).indices
    return [np.sort(order[a:a + size]) for a in range(0, len(order), size)]


def _schur_update(xb: np.ndarray, X: np.ndarray, obs: Observations, points: np.ndarray, obs_points: np.ndarray, *,
                  radius: float, metric: str, period: Sequence[float | None] | None, taper: str = DEFAULT_TAPER,
                  var_channels: Sequence[int] | None = None, perturbations: np.ndarray | None = None,
                  chunk: int = 4096) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The core: ``(x_a [n], var_a [n], analysis anomalies [m, n] or None)``.

    ``X [m, n]`` are anomalies with B = X^T X (already scaled); the flat state index ``i`` sits at
    ``points[i % G]``; ``obs_points [p, d]`` are the observation locations. With ``perturbations``
    ``[m, p]`` (observation errors drawn for each member, same scaling as ``X``) the anomalies of the
    perturbed-observation update of each member, X_i - K (H X_i - eps_i), are returned too.
    ``var_channels``: channels on which the variance is computed (NaN elsewhere; default all).
    Why tiles: the gain row of a state element is non-zero only on the observations within reach of it,
    so each compact tile of points (:data:`TILE_POINTS`, at most ``chunk``) multiplies only its
    observations' rows of ``rho o B H^T`` and their block of ``S^-1``: the same sums as the dense
    products (equal to rounding) at a fraction of the ``n p^2`` cost and memory.
    """
    n = xb.size
    G = len(points)
    if n % G:
        raise DataValidationError(f"state of size {n} is not a whole number of channels on {G} grid points")
    C = n // G
    HX = obs.apply(X)  # [m, p]
    d = obs.y - obs.apply(xb[None])[0]
    Sinv = _obs_space_inverse(HX, obs, obs_points, radius=radius, metric=metric, period=period, taper=taper)
    z = Sinv @ d  # [p]
    W = Sinv @ (HX - perturbations).T if perturbations is not None else None  # [p, m]
    r, j, w = taper_pairs(points, obs_points, radius, taper, metric, period)
    Rall = sp.csr_matrix((w, (r, j)), shape=(G, obs.size))
    xa = xb.copy()
    var = np.full(n, np.nan)
    Xa = X.copy() if W is not None else None
    chans = set(range(C)) if var_channels is None else {int(c) for c in var_channels}
    for pts in _tiles(points, metric, period, max(1, min(chunk, TILE_POINTS))):
        Rt = Rall[pts]
        J = np.unique(Rt.indices)
        if J.size == 0:  # no observation within reach: the background (and its variance) stay
            for c in chans:
                var[c * G + pts] = np.sum(X[:, c * G + pts] ** 2, axis=0)
            continue
        _tile_update(Rt[:, J].toarray(), X, HX[:, J], z[J], None if W is None else W[J],
                     Sinv[np.ix_(J, J)] if chans else None, pts, G, C, chans, xa, var, Xa)
    return xa, var, Xa


def _tile_update(R: np.ndarray, X: np.ndarray, HX: np.ndarray, z: np.ndarray, W: np.ndarray | None,
                 Sinv: np.ndarray | None, pts: np.ndarray, G: int, C: int, chans: set[int], xa: np.ndarray,
                 var: np.ndarray, Xa: np.ndarray | None) -> None:
    """One tile's points (``R [g, J]`` their taper on the tile's observations): mean, variance, anomalies in place."""
    dense = np.count_nonzero(R) > DENSE_FRACTION * R.size
    if not dense:
        r, j = np.nonzero(R)
        w = R[r, j]
        HXt = np.ascontiguousarray(HX.T)
    for c in range(C):
        i = c * G + pts
        Xt = np.ascontiguousarray(X[:, i].T)  # [g, m]
        if dense:
            P = R * (Xt @ HX)  # [g, J]: localised B H^T
        else:
            vals = np.einsum("km,km->k", Xt[r], HXt[j]) * w
            P = sp.csr_matrix((vals, (r, j)), shape=R.shape)
        xa[i] += P @ z
        if c in chans:
            K = np.asarray(P @ Sinv)  # [g, J]
            KP = np.asarray(P.multiply(K).sum(axis=1)).ravel() if sp.issparse(P) else np.sum(K * P, axis=1)
            var[i] = np.maximum(np.sum(Xt * Xt, axis=1) - KP, 0.0)
        if Xa is not None:
            Xa[:, i] -= np.asarray(P @ W).T


def schur_enoi(xb: np.ndarray, static: np.ndarray, observations: Any, *, alpha: float, radius: float,
               points: np.ndarray, period: tuple | None = None, chunk: int = 4096,
               var_channels: Sequence[int] | None = None, metric: str | None = None,
               taper: str = DEFAULT_TAPER) -> tuple[np.ndarray, np.ndarray]:
    """EnOI with a Schur-localised gain in observation space: analysis mean ``[n]`` and variance ``[n]``.

    B = alpha A^T A / (m - 1) from the anomalies ``A`` of the static states ``[m, n]``; the flat
    state index ``i`` sits at horizontal point ``i % G`` of ``points [G, d]`` (``fields.to_array``
    flattened), and the observations use direct (index) operators located at the points they sample
    (or ``Observations.coords``). Distances: ``metric`` (default ``'periodic'`` with ``period``, else
    ``'euclidean'``; ``'great_circle'`` wants (lat, lon) points). ``radius`` is the ``taper``'s half-width.
    The variance is the diagonal of (I - K H)(B o rho), computed only on the channels ``var_channels``
    (default all; NaN elsewhere).

    Parameters
    ----------
    xb : background state ``[n]``
    static : static states ``[m, n]``
    observations : an :class:`Observations` with a direct operator
    alpha : covariance scaling
    radius, taper : the taper's half-width and name
    points, period, metric : horizontal grid points ``[G, d]``, periods, distance metric
    chunk : grid points per block
    var_channels : channels whose variance is computed

    Returns
    -------
    ``(x_a [n], var_a [n])``
    """
    obs = as_observations(observations)
    obs = obs.finite()
    xb = np.asarray(xb, dtype=np.float64)
    A = np.asarray(static, dtype=np.float64)
    if A.ndim != 2 or A.shape[0] < 2 or A.shape[1] != xb.size:
        raise DataValidationError(f"static states of shape {A.shape}; expected [m >= 2, {xb.size}]")
    idx = _direct(obs)
    if obs.size == 0:
        var = np.sum((A - A.mean(axis=0)) ** 2, axis=0) * alpha / (A.shape[0] - 1)
        return xb.copy(), var
    A = (A - A.mean(axis=0)) * np.sqrt(alpha / (A.shape[0] - 1))  # B = A^T A
    points = np.asarray(points, dtype=np.float64)
    points = points[:, None] if points.ndim == 1 else points
    if metric is None:
        metric = "periodic" if period is not None else "euclidean"
    opts = obs.coords if obs.coords is not None else points[idx % len(points)]
    xa, var, _ = _schur_update(xb, A, obs, points, opts, radius=radius, metric=metric, period=period, taper=taper,
                               var_channels=var_channels, chunk=chunk)
    return xa, var


def schur_enoi_ensemble(background: np.ndarray, library: np.ndarray, y: Any, error: Any = None, H: Any = None, *,
                        localizer: Any, alpha: float = 1.0, members: int | None = None, rng: Any = None,
                        return_ensemble: bool = True) -> np.ndarray:
    """Schur-localised EnOI as an analysis ensemble ``[N, n]`` (the arguments of :func:`~oceanda.kalman.filters.enoi`).

    The covariance is that of ``background + sqrt(alpha) *`` library anomalies
    (:func:`~oceanda.kalman.static_ensemble`, ``members`` of them drawn with ``rng``), localised
    by the Schur product with ``localizer``'s taper (its points, metric, period, radius and taper;
    analysis groups are ignored: the gain is local to every state element). What the members are: the
    Schur-localised Kalman update of each static member with perturbed observations (errors drawn from
    ``rng`` and centred over the members, so the ensemble mean is the EnOI analysis mean exactly), with
    anomalies then rescaled point by point so that the ensemble standard deviation (ddof=1) is
    sqrt(diag((I - K H)(B o rho))), the analysis variance. With ``return_ensemble=False`` only the
    analysis mean ``[n]`` is returned. Observation operators must be direct (index or sparse).

    Parameters
    ----------
    background : background state ``[n]``
    library : states ``[M, n]`` whose anomalies give the covariance
    y, error, H : an :class:`Observations`, or its values, error standard deviations and operator
    localizer : the :class:`~oceanda.kalman.localization.Localizer` whose taper localises B
    alpha : covariance scaling
    members : library states drawn (all if None)
    rng : generator of the draw and the observation perturbations
    return_ensemble : False returns only the analysis mean

    Returns
    -------
    numpy.ndarray: the analysis ensemble ``[N, n]`` (or its mean ``[n]``)
    """
    obs = as_observations(y, error, H).finite()
    _direct(obs)
    g = as_rng(rng)
    xb = np.asarray(background, dtype=np.float64)
    E = static_ensemble(library, xb, alpha, members, g)
    N = E.shape[0]
    if N < 2:
        raise DataValidationError(f"static ensemble of {N} member(s); expected at least 2")
    if obs.size == 0:
        return E if return_ensemble else xb.copy()
    X = (E - xb) / np.sqrt(N - 1)  # B = X^T X
    eps = None
    if return_ensemble:
        eps = g.standard_normal((N, obs.size))
        eps = (eps - eps.mean(axis=0)) * np.sqrt(N / (N - 1)) * obs.error / np.sqrt(N - 1)
    points = localizer.coords
    xa, var, Xa = _schur_update(xb, X, obs, points, obs.locations(localizer), radius=localizer.radius,
                                metric=localizer.metric, period=localizer.period, taper=localizer.taper,
                                perturbations=eps)
    if not return_ensemble:
        return xa
    sd = np.sqrt(np.sum(Xa * Xa, axis=0))  # Xa carries the 1/sqrt(N-1): this is the ddof=1 std
    scale = np.where(sd > 0, np.sqrt(var) / np.where(sd > 0, sd, 1.0), 1.0)
    return xa[None] + Xa * (scale * np.sqrt(N - 1))[None]
