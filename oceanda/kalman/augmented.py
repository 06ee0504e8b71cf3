"""Hybrid covariance by ensemble augmentation: the analysis uses (1 - beta) P_f + beta P_extra.

Why augmentation: a flow-dependent forecast ensemble of 10-20 members is rank-poor; members from
elsewhere (contrastive posterior members for the same observations, static library states) add
directions it lacks. Rescaling the two sets of anomalies about the forecast mean,

    a_i = sqrt((1 - beta) L / (N - 1)) (x_i - xbar_f),   b_j = sqrt(beta L / (M - 1)) (e_j - ebar),   L = N + M - 1,

gives an ``N + M`` ensemble whose mean is the forecast mean and whose sample covariance is exactly
``(1 - beta) P_f + beta P_extra`` -- so any square-root filter (ETKF, LETKF with its localisation)
runs on it unchanged. The forecast members' share of the analysis is kept: with the symmetric
transform the forecast block's analysis anomalies still sum to zero (the vector that is 1 on the
forecast block is in the null space of the augmented anomalies, so the transform leaves it alone),
and dividing them by the forecast scaling gives ``N`` members about the analysis mean.
``beta = 0`` calls the plain filter: bit-identical. The extra members come from a callback, so this
module knows nothing of where they come from (the contrastive sampler lives above ``kalman``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from oceanda.errors import ConfigurationError, DataValidationError
from oceanda.kalman._core import relax, repair_members
from oceanda.kalman.inflation import inflate
from oceanda.kalman.obsspace import Observations
from oceanda.settings import check_number


def check_beta(beta: float, option: str = "hybrid_beta") -> float:
    """``beta`` as a float in [0, 1) (at 1 the forecast members carry no covariance to keep).

    Parameters
    ----------
    beta : weight of the extra members' covariance
    option : the setting's name in the error

    Returns
    -------
    float
    """
    check_number(option, beta, lo=0.0, hi=1.0, hi_open=True)
    return float(beta)


def augmented_ensemble(E: np.ndarray, extra: np.ndarray, beta: float) -> tuple[np.ndarray, float]:
    """The ``[N + M, n]`` ensemble with ``E``'s mean and covariance ``(1 - beta) P_E + beta P_extra``.

    Parameters
    ----------
    E : forecast ensemble ``[N, n]``
    extra : extra members ``[M, n]`` (M >= 2)
    beta : weight of their covariance, in [0, 1)

    Returns
    -------
    ``(augmented ensemble, forecast scaling)``: the forecast anomalies were multiplied by the scaling
    """
    E = np.asarray(E, dtype=np.float64)
    X = _check_extra(extra, E.shape)
    N, M = E.shape[0], X.shape[0]
    L = N + M - 1
    cf = float(np.sqrt((1.0 - beta) * L / (N - 1)))
    ce = float(np.sqrt(beta * L / (M - 1)))
    xm = E.mean(axis=0)
    return np.concatenate([xm + cf * (E - xm), xm + ce * (X - X.mean(axis=0))]), cf


def _check_extra(extra: Any, shape: tuple[int, ...]) -> np.ndarray:
    X = np.asarray(extra, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != shape[1] or X.shape[0] < 2:
        raise DataValidationError(f"hybrid covariance: extra members of shape {X.shape}; expected [M >= 2, {shape[1]}] "
                                  "(states in the forecast ensemble's layout)")
    if not np.isfinite(X).all():
        raise DataValidationError("hybrid covariance: the extra members hold non-finite values; expected finite states")
    return X


def hybrid_assimilate(filter: Any, E: np.ndarray, observations: Observations, extra: np.ndarray | None, beta: float,
                      rng: Any = None, localizer: Any = None) -> np.ndarray:
    """``filter``'s analysis of ``E`` with the forecast covariance blended with that of ``extra``.

    The filter's inflation multiplies the forecast anomalies first (not the extra members') and its
    RTPS/RTPP relax the ``N`` kept members towards the inflated forecast afterwards, as in the plain filter.

    Parameters
    ----------
    filter : a cycling method (:class:`~oceanda.kalman.methods.ETKF`, ``LETKF``, ``EnKF``)
    E : forecast ensemble ``[N, n]``
    observations : this analysis time's observations
    extra : extra members ``[M, n]``, or None (the plain filter)
    beta : weight of their covariance, in [0, 1); 0 = the plain filter, bit for bit
    rng, localizer : as :meth:`~oceanda.kalman.methods.Filter.assimilate`

    Returns
    -------
    numpy.ndarray: the ``N`` analysis members
    """
    beta = check_beta(beta)
    if beta == 0.0 or extra is None:
        return filter.assimilate(E, observations, rng, localizer)
    if not getattr(filter, "cycles", False) or not hasattr(filter, "inflation"):
        raise ConfigurationError(f"hybrid covariance: filter {getattr(filter, 'name', filter)!r}; expected enkf, etkf or letkf")
    N = np.asarray(E).shape[0]
    Ef = inflate(repair_members(np.asarray(E, dtype=np.float64), rng), filter.inflation)
    Z, cf = augmented_ensemble(Ef, extra, beta)
    plain = dataclasses.replace(filter, inflation=1.0, rtps=0.0, rtpp=0.0)
    Za = plain.assimilate(Z, observations, rng, localizer)
    mean = Za.mean(axis=0)
    kept = Za[:N] - Za[:N].mean(axis=0)  # zero already for the square-root filters; the EnKF's perturbations are not
    return relax(mean + kept / cf, Ef, rtps_alpha=filter.rtps, rtpp_alpha=filter.rtpp)
