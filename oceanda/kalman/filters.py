"""Global ensemble Kalman analyses on arrays: stochastic EnKF, ETKF (symmetric square root), EnOI.

Conventions: an ensemble is ``E [N, n]`` (members x flat state), observations are an
:class:`~oceanda.kalman.obsspace.Observations` (or ``y, error, H``), R is diagonal. All algebra is
done in ensemble space (N x N), so cost is linear in the number of observations and state size.
Inflation: ``inflation`` scales the forecast anomalies before the update (prior multiplicative),
``rtps``/``rtpp`` relax the analysis towards the forecast afterwards. NaN observations are
skipped; members with non-finite values are reported and replaced (:func:`repair_members`).
The steps every analysis shares live in :mod:`oceanda.kalman._core`; the configured objects that
call these functions are in :mod:`oceanda.kalman.methods`.
References: Evensen (2009), Burgers et al. (1998), Hunt et al. (2007), Sakov & Oke (2008), Oke et al. (2002).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from oceanda.kalman._core import (
    as_rng,
    etkf_weights,
    normalised_innovations,
    prepare,
    relax,
    repair_members,
    static_ensemble,
)
from oceanda.kalman.letkf import letkf
from oceanda.kalman.obsspace import as_observations

__all__ = ["enkf", "enoi", "etkf", "etkf_weights", "normalised_innovations", "repair_members", "static_ensemble"]


def etkf(E: np.ndarray, y: Any, error: Any = None, H: Any = None, *, inflation: float = 1.0, rtps: float = 0.0,
         rtpp: float = 0.0, rng: Any = None) -> np.ndarray:
    """Ensemble transform Kalman filter analysis (symmetric square root), global.

    Deterministic: with a linear H the analysis mean and covariance equal the Kalman filter's for
    the ensemble's sample covariance, exactly.

    Parameters
    ----------
    E : forecast ensemble ``[N, n]``
    y, error, H : an :class:`Observations`, or its values, error standard deviations and operator
    inflation : multiplicative factor on the forecast anomalies
    rtps, rtpp : relaxation of the analysis to the prior spread / perturbations, in [0, 1]
    rng : generator for member repair

    Returns
    -------
    numpy.ndarray: the analysis ensemble ``[N, n]``
    """
    obs = as_observations(y, error, H)
    Ef0 = np.asarray(E, dtype=np.float64)
    E, Eo, obs = prepare(Ef0, obs, inflation, rng)
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
    return relax(Ea, E, rtps_alpha=rtps, rtpp_alpha=rtpp)


def enkf(E: np.ndarray, y: Any, error: Any = None, H: Any = None, *, rng: Any = None, inflation: float = 1.0,
         rtps: float = 0.0, rtpp: float = 0.0, center_perturbations: bool = True) -> np.ndarray:
    """Stochastic EnKF with perturbed observations (Burgers et al. 1998), global.

    Each member assimilates ``y + eps_m`` with eps_m ~ N(0, R) drawn from ``rng`` (centred over
    members by default, which removes the sampling error of their mean). Solved in ensemble space:
    E_a = E + D Ys^T (Ys Ys^T + (N-1) I)^-1 A, with D the normalised member innovations.

    Parameters
    ----------
    E : forecast ensemble ``[N, n]``
    y, error, H : an :class:`Observations`, or its values, error standard deviations and operator
    rng : generator (or seed) of the observation perturbations
    inflation, rtps, rtpp : as :func:`etkf`
    center_perturbations : centre the perturbations over the members

    Returns
    -------
    numpy.ndarray: the analysis ensemble ``[N, n]``
    """
    obs = as_observations(y, error, H)
    g = as_rng(rng)
    E, Eo, obs = prepare(np.asarray(E, dtype=np.float64), obs, inflation, g)
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
    return relax(Ea, E, rtps_alpha=rtps, rtpp_alpha=rtpp)


def enoi(background: np.ndarray, library: np.ndarray, y: Any, error: Any = None, H: Any = None, *,
         alpha: float = 1.0, members: int | None = None, localizer: Any = None, rng: Any = None,
         return_ensemble: bool = True) -> np.ndarray:
    """Ensemble optimal interpolation (Oke et al. 2002): a Kalman update with a static, scaled ensemble.

    The covariance comes from ``library`` anomalies scaled by ``alpha``; the background is one state
    (e.g. climatology or a forecast). The update is the ETKF's (LETKF's when ``localizer`` is given)
    applied to ``background + sqrt(alpha) * anomalies``, so the result is an ensemble whose mean is
    the EnOI analysis and whose spread is the analysis uncertainty under B.

    Parameters
    ----------
    background : the background state ``[n]``
    library : states ``[M, n]`` whose anomalies give the covariance
    y, error, H : an :class:`Observations`, or its values, error standard deviations and operator
    alpha : covariance scaling
    members : library states drawn (all if None)
    localizer : a :class:`~oceanda.kalman.localization.Localizer` (LETKF transform) or None (global)
    rng : generator for the draw
    return_ensemble : False returns only the analysis mean ``[n]``

    Returns
    -------
    numpy.ndarray: the analysis ensemble ``[N, n]`` (or its mean)
    """
    E = static_ensemble(library, background, alpha, members, rng)
    if localizer is None:
        Ea = etkf(E, y, error, H, rng=rng)
    else:
        Ea = letkf(E, y, error, H, localizer=localizer, rng=rng)
    return Ea if return_ensemble else Ea.mean(axis=0)
