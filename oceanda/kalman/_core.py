"""The maths every ensemble Kalman analysis shares, in one private module.

Why one module: the global filters (``filters``), the LETKF (``letkf``), the Schur-localised EnOI
(``schur``) and the cycling driver all take the same steps -- coerce the random generator, repair
non-finite members, inflate and map to observation space, form the normalised innovations, build
the ETKF weights, relax towards the forecast afterwards. With the steps here the filter modules
import this one and never each other. Public names are re-exported by :mod:`oceanda.kalman`.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from oceanda.errors import DataValidationError
from oceanda.kalman.inflation import inflate, rtpp, rtps
from oceanda.kalman.obsspace import Observations


def as_rng(rng: Any) -> np.random.Generator:
    """A ``numpy.random.Generator``: ``rng`` itself, or one seeded with it.

    Parameters
    ----------
    rng : a Generator, a seed, or None (fresh entropy)

    Returns
    -------
    numpy.random.Generator
    """
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def repair_members(E: np.ndarray, rng: Any = None, jitter: float = 0.1, what: str = "ensemble") -> np.ndarray:
    """Replace members with non-finite values by resampled finite members plus jitter (with a warning).

    The jitter is Gaussian with ``jitter`` times the per-variable spread of the finite members, so
    replacements are not exact copies. Fewer than two finite members is an error: nothing sane
    can be resampled.

    Parameters
    ----------
    E : ensemble ``[N, n]``
    rng : random generator (or seed) for the resampling; used only when a member is bad
    jitter : noise on the copies, in units of the finite members' spread
    what : what to call the ensemble in the warning and the error

    Returns
    -------
    numpy.ndarray ``[N, n]`` float64, ``E`` itself when every member is finite
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
    g = as_rng(rng)
    src = g.choice(np.flatnonzero(good), size=bad.size)
    sd = E[good].std(axis=0, ddof=1)
    E = E.copy()
    E[bad] = E[src] + jitter * sd * g.standard_normal((bad.size, E.shape[1]))
    return E


def prepare(E: np.ndarray, obs: Observations, inflation: float, rng: Any) -> tuple[np.ndarray, np.ndarray, Observations]:
    """The common first steps: check, drop NaN observations, repair, inflate, map to observation space.

    Parameters
    ----------
    E : forecast ensemble ``[N, n]``
    obs : the observations of this analysis
    inflation : multiplicative factor on the anomalies
    rng : generator for member repair

    Returns
    -------
    ``(E, Eo, obs)``: the inflated ensemble, its image ``[N, p]`` and the finite observations
    """
    E = np.asarray(E, dtype=np.float64)
    if E.ndim != 2 or E.shape[0] < 2:
        n = E.shape[0] if E.ndim else 0
        raise DataValidationError(f"ensemble of shape {E.shape} ({n} member{'s' if n != 1 else ''}); expected an "
                                  "array [N, n] of at least 2 members (an ensemble covariance needs 2 or more)")
    obs = obs.finite()
    E = repair_members(E, rng)
    E = inflate(E, inflation)
    Eo = obs.apply(E)
    bad = ~np.isfinite(Eo).all(axis=1)
    if bad.any():  # e.g. a drifter left the domain in some members
        E = repair_members(np.where(bad[:, None], np.nan, E), rng, what="ensemble in observation space")
        Eo = obs.apply(E)
    return E, Eo, obs


def relax(Ea: np.ndarray, Ef: np.ndarray, rtps_alpha: float, rtpp_alpha: float) -> np.ndarray:
    """RTPP then RTPS of the analysis ``Ea`` towards the forecast ``Ef`` (no-ops at 0).

    Parameters
    ----------
    Ea, Ef : analysis and (inflated) forecast ensembles ``[N, n]``
    rtps_alpha, rtpp_alpha : relaxation weights in [0, 1]

    Returns
    -------
    numpy.ndarray ``[N, n]``
    """
    if rtpp_alpha:
        Ea = rtpp(Ea, Ef, rtpp_alpha)
    if rtps_alpha:
        Ea = rtps(Ea, Ef, rtps_alpha)
    return Ea


def normalised_innovations(E: np.ndarray, Eo: np.ndarray, obs: Observations) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """State mean and anomalies, observation anomalies and innovations, both divided by the error.

    Parameters
    ----------
    E : ensemble ``[N, n]``
    Eo : its image in observation space ``[N, p]``
    obs : the (finite) observations

    Returns
    -------
    ``(xmean [n], A [N, n], Ys [N, p], d [p])`` with Ys = (Eo - mean) / sigma, d = (y - mean Hx) / sigma
    """
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

    Parameters
    ----------
    Ys : normalised observation anomalies ``[..., N, p]`` (a batch of local analyses allowed)
    d : normalised innovations ``[..., p]``

    Returns
    -------
    ``(w [..., N], T [..., N, N])``
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


def static_ensemble(library: np.ndarray, background: np.ndarray, alpha: float = 1.0, members: int | None = None,
                    rng: Any = None) -> np.ndarray:
    """EnOI ensemble: ``background`` plus ``sqrt(alpha)`` times library anomalies (about the library mean).

    B = alpha A A^T / (N-1) is then the EnOI covariance.

    Parameters
    ----------
    library : states ``[M, n]`` sampled from a long run (climatology)
    background : the one background state ``[n]``
    alpha : covariance scaling
    members : draw that many library states without replacement (all if None)
    rng : generator for the draw

    Returns
    -------
    numpy.ndarray ``[N, n]`` float64
    """
    L = np.asarray(library, dtype=np.float64)
    if members is not None and members < L.shape[0]:
        L = L[np.sort(as_rng(rng).choice(L.shape[0], size=members, replace=False))]
    A = L - L.mean(axis=0)
    return np.asarray(background, dtype=np.float64)[None, :] + np.sqrt(alpha) * A
