"""Global ensemble Kalman analyses on arrays: stochastic EnKF, ETKF (symmetric square root), EnOI.

Conventions: an ensemble is ``E [N, n]`` (members x flat state), observations are an
:class:`~oceanda.kalman.obsspace.Observations` (or ``y, error, H``), R is diagonal. All algebra is
done in ensemble space (N x N), so cost is linear in the number of observations and state size.
Inflation: ``inflation`` scales the forecast anomalies before the update (prior multiplicative),
``rtps``/``rtpp`` relax the analysis towards the forecast afterwards. NaN observations are
skipped; members with non-finite values are reported and replaced (:func:`repair_members`).
References: Evensen (2009), Burgers et al. (1998), Hunt et al. (2007), Sakov & Oke (2008), Oke et al. (2002).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from oceanda.errors import DataValidationError
from oceanda.kalman.inflation import inflate, rtpp, rtps
from oceanda.kalman.obsspace import Observations, as_observations


def _rng(rng: Any) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def repair_members(E: np.ndarray, rng: Any = None, jitter: float = 0.1, what: str = "ensemble") -> np.ndarray:
    """Replace members with non-finite values by resampled finite members plus jitter (with a warning).

    The jitter is Gaussian with ``jitter`` times the per-variable spread of the finite members, so
    replacements are not exact copies. Fewer than two finite members is an error: nothing sane
    can be resampled.
    """
    E = np.asarray(E, dtype=np.float64)
    good = np.isfinite(E).all(axis=1)
    if good.all():
        return E
    bad = np.flatnonzero(~good)
    if good.sum() < 2:
        raise DataValidationError(f"{what}: {bad.size} of {E.shape[0]} members are non-finite; cannot resample from fewer than 2 finite members")
    warnings.warn(f"{what}: member(s) {bad.tolist()} have non-finite values; replaced by resampled finite members with jitter",
                  RuntimeWarning, stacklevel=2)
    g = _rng(rng)
    src = g.choice(np.flatnonzero(good), size=bad.size)
    sd = E[good].std(axis=0, ddof=1)
    E = E.copy()
    E[bad] = E[src] + jitter * sd * g.standard_normal((bad.size, E.shape[1]))
    return E


def _prepare(E: np.ndarray, obs: Observations, inflation: float, rng: Any) -> tuple[np.ndarray, np.ndarray, Observations]:
    E = np.asarray(E, dtype=np.float64)
    if E.ndim != 2 or E.shape[0] < 2:
        raise DataValidationError(f"ensemble of shape {E.shape}; expected [N >= 2 members, n]")
    obs = obs.finite()
    E = repair_members(E, rng)
    E = inflate(E, inflation)
    Eo = obs.apply(E)
    bad = ~np.isfinite(Eo).all(axis=1)
    if bad.any():  # e.g. a drifter left the domain in some members
        E = repair_members(np.where(bad[:, None], np.nan, E), rng, what="ensemble in observation space")
        Eo = obs.apply(E)
    return E, Eo, obs


def normalised_innovations(E: np.ndarray, Eo: np.ndarray, obs: Observations) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(xmean, A, Ys, d)``: state mean and anomalies, obs anomalies / sigma, (y - mean Hx) / sigma."""
    xm = E.mean(axis=0)
    A = E - xm
    ym = Eo.mean(axis=0)
    Ys = (Eo - ym) / obs.error
    d = (obs.y - ym) / obs.error
    return xm, A, Ys, d


def etkf_weights(Ys: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean weights ``w [N]`` and symmetric square-root transform ``T [N, N]`` of the ETKF.

    With C = Ys Ys^T + (N-1) I = V diag(lam) V^T: w = C^-1 Ys d and T = V diag(sqrt((N-1)/lam)) V^T,
    so that E_a = mean + (w + T)^T-weighted anomalies (Hunt et al. 2007, eqs. 22-24).
    Works on a batch: ``Ys [..., N, p]``, ``d [..., p]``.
    """
    N = Ys.shape[-2]
    C = Ys @ np.swapaxes(Ys, -1, -2)
    C = C + (N - 1) * np.eye(N)
    lam, V = np.linalg.eigh(C)
    lam = np.maximum(lam, (N - 1) * 1e-12)
    Vt = np.swapaxes(V, -1, -2)
    Ysd = (Ys @ d[..., None])[..., 0]
    w = (V @ (((Vt @ Ysd[..., None])[..., 0] / lam)[..., None]))[..., 0]
    T = (V * np.sqrt((N - 1) / lam)[..., None, :]) @ Vt
    return w, T


def etkf(E: np.ndarray, y: Any, error: Any = None, H: Any = None, *, inflation: float = 1.0, rtps: float = 0.0,
         rtpp: float = 0.0, rng: Any = None) -> np.ndarray:
    """Ensemble transform Kalman filter analysis (symmetric square root), global.

    ``E [N, n]`` forecast ensemble; ``y`` an :class:`Observations` (or ``y, error, H``).
    Returns the analysis ensemble ``[N, n]``. Deterministic: with a linear H the analysis mean and
    covariance equal the Kalman filter's for the ensemble's sample covariance, exactly.
    """
    obs = as_observations(y, error, H)
    Ef0 = np.asarray(E, dtype=np.float64)
    E, Eo, obs = _prepare(Ef0, obs, inflation, rng)
    if obs.size == 0:
        return E
    xm, A, Ys, d = normalised_innovations(E, Eo, obs)
    N = E.shape[0]
    if obs.size < N:  # thin SVD Ys = U s V^T: T = I + U (sqrt((N-1)/((N-1)+s^2)) - 1) U^T, never N x N
        U, sv, _ = np.linalg.svd(Ys, full_matrices=False)
        lam = (N - 1) + sv**2
        w = U @ ((U.T @ (Ys @ d)) / lam)
        UA = U.T @ A
        Ea = xm + w @ A + A + U @ ((np.sqrt((N - 1) / lam) - 1.0)[:, None] * UA)
    else:
        w, T = etkf_weights(Ys, d)
        Ea = xm + (w[None, :] + T) @ A
    return _relax(Ea, E, rtps_alpha=rtps, rtpp_alpha=rtpp)


def _relax(Ea: np.ndarray, Ef: np.ndarray, rtps_alpha: float, rtpp_alpha: float) -> np.ndarray:
    if rtpp_alpha:
        Ea = rtpp(Ea, Ef, rtpp_alpha)
    if rtps_alpha:
        Ea = rtps(Ea, Ef, rtps_alpha)
    return Ea


def enkf(E: np.ndarray, y: Any, error: Any = None, H: Any = None, *, rng: Any = None, inflation: float = 1.0,
         rtps: float = 0.0, rtpp: float = 0.0, center_perturbations: bool = True) -> np.ndarray:
    """Stochastic EnKF with perturbed observations (Burgers et al. 1998), global.

    Each member assimilates ``y + eps_m`` with eps_m ~ N(0, R) drawn from ``rng`` (centred over
    members by default, which removes the sampling error of their mean). Solved in ensemble space:
    E_a = E + D Ys^T (Ys Ys^T + (N-1) I)^-1 A, with D the normalised member innovations.
    """
    obs = as_observations(y, error, H)
    g = _rng(rng)
    E, Eo, obs = _prepare(np.asarray(E, dtype=np.float64), obs, inflation, g)
    if obs.size == 0:
        return E
    N = E.shape[0]
    _, A, Ys, _ = normalised_innovations(E, Eo, obs)
    eps = g.standard_normal((N, obs.size))
    if center_perturbations:
        eps = (eps - eps.mean(0)) * np.sqrt(N / (N - 1))
    D = (obs.y + eps * obs.error - Eo) / obs.error  # [N, p]
    if obs.size < N:  # observation space: (Ys^T Ys + (N-1) I_p) is the smaller system
        S = Ys.T @ Ys + (N - 1) * np.eye(obs.size)
        Ea = E + np.linalg.solve(S, D.T).T @ (Ys.T @ A)
    else:  # ensemble space
        C = Ys @ Ys.T + (N - 1) * np.eye(N)
        W = np.linalg.solve(C, Ys @ D.T).T  # [N, N]: member m's weights on the anomalies
        Ea = E + W @ A
    return _relax(Ea, E, rtps_alpha=rtps, rtpp_alpha=rtpp)


def static_ensemble(library: np.ndarray, background: np.ndarray, alpha: float = 1.0, members: int | None = None,
                    rng: Any = None) -> np.ndarray:
    """EnOI ensemble: ``background`` plus ``sqrt(alpha)`` times library anomalies (about the library mean).

    ``library [M, n]`` are states sampled from a long run (climatology); ``members`` draws that many
    of them without replacement (all if None). B = alpha A A^T / (N-1) is then the EnOI covariance.
    """
    L = np.asarray(library, dtype=np.float64)
    if members is not None and members < L.shape[0]:
        L = L[np.sort(_rng(rng).choice(L.shape[0], size=members, replace=False))]
    A = L - L.mean(axis=0)
    return np.asarray(background, dtype=np.float64)[None, :] + np.sqrt(alpha) * A


def enoi(background: np.ndarray, library: np.ndarray, y: Any, error: Any = None, H: Any = None, *,
         alpha: float = 1.0, members: int | None = None, localizer: Any = None, rng: Any = None,
         return_ensemble: bool = True) -> np.ndarray:
    """Ensemble optimal interpolation (Oke et al. 2002): a Kalman update with a static, scaled ensemble.

    The covariance comes from ``library`` anomalies scaled by ``alpha``; the background is one state
    (e.g. climatology or a forecast). The update is the ETKF's (LETKF's when ``localizer`` is given)
    applied to ``background + sqrt(alpha) * anomalies``, so the result is an ensemble whose mean is
    the EnOI analysis and whose spread is the analysis uncertainty under B. With
    ``return_ensemble=False`` only the analysis mean ``[n]`` is returned.
    """
    E = static_ensemble(library, background, alpha, members, rng)
    if localizer is None:
        Ea = etkf(E, y, error, H, rng=rng)
    else:
        from oceanda.kalman.letkf import letkf

        Ea = letkf(E, y, error, H, localizer=localizer, rng=rng)
    return Ea if return_ensemble else Ea.mean(axis=0)
