"""Hybrid mode: the local contrastive posterior as the background of an ensemble Kalman update.

Kalman side (``HybridSettings.kalman``): ``'schur'`` (default) is EnOI with a Schur-product
(Gaspari-Cohn) localised gain solved in observation space -- K = (rho_xo o B H^T)(rho_oo o H B H^T + R)^-1,
:func:`oceanda.kalman.schur_enoi` (re-exported here; distances by :func:`grid_localizer_for`, as ``oceanda enkf``),
cost linear in the state size, under a second per analysis for a 500-member static ensemble on the
QG grid; ``'letkf'`` calls :func:`oceanda.kalman.enoi` / LETKF (one ensemble-space analysis
per grid point: exact but about a minute per analysis there).

The contrastive analysis uses the observations only through the encoders; a Kalman update then
uses their values directly (what a long observation window needs). Background mean: the local
contrastive mean. Background covariance: ``ensemble='static'`` (default; EnOI with library
anomalies scaled by ``alpha``, Gaspari-Cohn localised -- what the prototype measured),
``'local'`` (the local posterior members: a flow-dependent ensemble, LETKF) or ``'both'`` (their
union: static anomalies scaled by ``alpha`` plus the local members' anomalies scaled by ``beta``).
Spread (``'static'`` with ``'schur'``): the local members recentred on the Kalman mean, their spread
the calibrated contrastive spread times the Kalman variance reduction (``spread='reduction'``), then
``spread_factor`` (fitted on a tuning run) on every path.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from oceanda.analysis.settings import HybridSettings
from oceanda.errors import DataValidationError
from oceanda.kalman import schur_enoi

#: The former name of :class:`~oceanda.analysis.settings.HybridSettings` (kept for callers).
HybridConfig = HybridSettings

__all__ = ["HybridConfig", "HybridSettings", "grid_localizer_for", "hybrid_update", "kalman_window", "localizer_for",
           "schur_enoi", "static_states"]


def static_states(library, members: int, rng: np.random.Generator) -> np.ndarray:
    """Library states drawn without replacement: EnOI's static ensemble.

    Parameters
    ----------
    library : a :class:`~oceanda.analysis.library.Library`
    members : states to draw (at most the library size)
    rng : the random generator of the draw

    Returns
    -------
    ``[m, n]`` flattened states, float64, in library order
    """
    m = min(int(members), library.n)
    idx = np.sort(rng.choice(library.n, size=m, replace=False))
    return library.read(idx).reshape(m, -1).astype(np.float64)


def kalman_window(obs_list: list, library, config: HybridSettings) -> tuple[list, float | None]:
    """The Kalman step's observations of every time with the ``config.obs_window`` days before it.

    Errors grow with age by ``config.obs_age_growth`` (None: :func:`~oceanda.kalman.obswindow.age_growth` of the
    library's first consecutive states) times the library's std at each observation
    (:func:`~oceanda.kalman.obswindow.windowed`).

    Parameters
    ----------
    obs_list : one :class:`oceanda.kalman.Observations` per time of the observation file, in time order
    library : the :class:`~oceanda.analysis.library.Library`
    config : the hybrid's settings

    Returns
    -------
    list of Observations, one per time; the growth used (None with ``obs_window`` 1)
    """
    from oceanda.kalman.obswindow import WINDOW_STATES, from_states

    def spread() -> np.ndarray:
        return static_states(library, config.static_members, np.random.default_rng([0, 99]))

    def series() -> tuple:
        k = min(library.n, WINDOW_STATES)
        return (library.read(np.arange(k)).reshape(k, -1), library.ds[library.sample_dim].values[:k],
                f"{library.source} (obs_window)")

    return from_states(obs_list, config.obs_window, config.obs_age_growth, spread, series, option="hybrid obs_window")


def hybrid_update(mean: np.ndarray, local_members: np.ndarray, observations: Any, *, localizer: Any,
                  static: np.ndarray | None, config: HybridSettings, rng: np.random.Generator) -> np.ndarray:
    """Kalman update of the contrastive background.

    With ``ensemble='static'`` this is EnOI with the contrastive mean as background, so it differs from
    the EnOI baseline only by its background.

    Parameters
    ----------
    mean : ``[C, Y, X]`` local-mode mean (the background)
    local_members : ``[M, C, Y, X]`` local-mode members
    observations : :class:`oceanda.kalman.Observations` on the same flat layout
    localizer : :func:`localizer_for` of the grid, an :class:`~oceanda.kalman.Localizer` (the Schur EnOI
        also takes ``(points, periods)``: periodic distances when periods are given, else Euclidean)
    static : library states ``[m, n]`` (:func:`static_states`; needed by ``'static'`` and ``'both'``)
    config : the hybrid's settings
    rng : random generator (perturbed observations of the LETKF paths)

    Returns
    -------
    the analysis ensemble ``[N, C, Y, X]``
    """
    shape = mean.shape
    xb = np.asarray(mean, dtype=np.float64).ravel()
    if config.ensemble in ("static", "both") and static is None:
        raise DataValidationError("hybrid: the static ensemble needs library states")
    land = ~np.isfinite(xb)
    if not land.any():
        return _update(xb, local_members, observations, localizer, static, config, rng).reshape(-1, *shape)
    # land (NaN in the background): analysed as zero-anomaly points, NaN again in the analysis
    xb = np.where(land, 0.0, xb)
    local_members = np.where(land.reshape(shape)[None], 0.0, local_members)
    static = None if static is None else np.where(land[None], 0.0, np.nan_to_num(static))
    Ea = _update(xb, local_members, observations, localizer, static, config, rng)
    Ea[:, land] = np.nan
    return Ea.reshape(-1, *shape)


def _update(xb: np.ndarray, local_members: np.ndarray, observations: Any, localizer: Any, static: np.ndarray | None,
            config: HybridSettings, rng: np.random.Generator) -> np.ndarray:
    """:func:`hybrid_update` on a finite flat background ``xb [n]``: the analysis ensemble ``[N, n]``."""
    from oceanda.kalman import enoi, letkf, static_ensemble

    if config.uses_schur:
        return _schur_update(xb, local_members, observations, localizer, static, config)
    if config.ensemble == "static":
        Ea = enoi(xb, static, observations, alpha=config.alpha, localizer=localizer, rng=rng)
        return _rescale(Ea, config.spread_factor)
    parts = []
    if config.ensemble == "both":
        parts.append(static_ensemble(static, xb, config.alpha))
    A = _anomalies(local_members)
    if config.ensemble == "both":  # equal footing in the sample covariance
        A = A * np.sqrt((static.shape[0] - 1) / max(A.shape[0] - 1, 1))
    parts.append(xb[None] + np.sqrt(config.beta) * A)
    E = np.concatenate(parts, axis=0)
    E = xb[None] + (E - E.mean(axis=0))  # centred on the contrastive mean
    Ea = letkf(E, observations, localizer=localizer, inflation=config.inflation, rng=rng)
    return _rescale(Ea, config.spread_factor)


def _anomalies(members: np.ndarray) -> np.ndarray:
    """``[M, ...]`` members -> ``[M, n]`` float64 deviations from their mean."""
    A = members.reshape(len(members), -1).astype(np.float64)
    return A - A.mean(axis=0)


def _schur_update(xb: np.ndarray, local_members: np.ndarray, observations: Any, localizer: Any, static: np.ndarray,
                  config: HybridSettings) -> np.ndarray:
    """Schur EnOI mean; the local members recentred on it with their spread rescaled (``[M, n]``)."""
    if isinstance(localizer, tuple):  # (points, periods): periodic if periods are given, else Euclidean
        (points, period), metric = localizer, None
    else:
        points, period, metric = localizer.coords, localizer.period, localizer.metric
    G = len(points)
    obs_ch = None if config.spread_channels == "all" else sorted({int(i) // G for i in observations.state_index()})
    xa, var = schur_enoi(xb, static, observations, alpha=config.alpha, radius=config.radius, points=points,
                         period=period, var_channels=obs_ch, metric=metric)
    A = _anomalies(local_members)
    scale = _member_scale(A, var, static, config)
    return xa[None] + A * (config.spread_factor * scale)[None]  # the local members, rescaled to the analysis spread


def _rescale(E: np.ndarray, factor: float) -> np.ndarray:
    """Members ``[N, n]`` with their anomalies about the mean multiplied by ``factor``."""
    if factor == 1.0:
        return E
    m = E.mean(axis=0)
    return m[None] + factor * (E - m[None])


def _member_scale(A: np.ndarray, var: np.ndarray, static: np.ndarray, config: HybridSettings) -> np.ndarray:
    """Per-point factor for the local members' anomalies ``A`` ``[M, n]`` after the Kalman update.

    ``'kalman'``: members get EnOI's analysis spread sqrt(diag((I - KH)(alpha B o rho))), which is
    only as calibrated as ``alpha`` (tuned for the mean, 0.3 on QG: spread/skill 0.47 in the demo).
    ``'reduction'``: the contrastive spread (calibrated on a tuning run) times the Kalman variance
    reduction sqrt(var_a / var_b), var_b = alpha diag(B): the update shrinks the spread where the
    observations inform, by the fraction the Kalman filter says, and leaves it elsewhere.
    NaN in ``var`` (unobserved channels) keeps the contrastive spread.
    """
    finite = np.isfinite(var)
    va = np.where(finite, var, 0.0)
    if config.spread == "kalman":
        sd = np.sqrt(np.maximum(np.sum(A * A, axis=0) / max(len(A) - 1, 1), 1e-30))
        return np.where(finite, np.sqrt(va) / sd, 1.0)
    vb = config.alpha * np.var(static, axis=0, ddof=1)
    ratio = np.where(finite & (vb > 0), va / np.where(vb > 0, vb, 1.0), 1.0)
    return np.sqrt(np.clip(ratio, 0.0, 1.0))


def grid_localizer_for(like, radius: float, periodic: bool):
    """A Gaspari-Cohn localizer on the grid of ``like``: the rule of ``oceanda enkf``.

    Distances by :func:`oceanda.kalman.dataset.grid_metric`: great-circle km on (lat, lon) and
    curvilinear grids, Euclidean km of ``y``/``x`` on projected grids (wrapped when ``periodic``),
    so the hybrid's Kalman step localises exactly as the EnOI / LETKF baselines do.

    Parameters
    ----------
    like : Dataset with the state grid
    radius : half-width in km
    periodic : the (y, x) grid is doubly periodic

    Returns
    -------
    oceanda.kalman.Localizer
    """
    from oceanda.kalman import localizer_for_dataset

    return localizer_for_dataset(like, radius, periodic=periodic)


def localizer_for(like, config: HybridSettings, periodic: bool):
    """What :func:`hybrid_update` localises with on the grid of ``like``: :func:`grid_localizer_for` of ``config.radius``.

    Parameters
    ----------
    like : Dataset with the state grid
    config : the hybrid's settings (its ``radius``)
    periodic : the (y, x) grid is doubly periodic

    Returns
    -------
    an :class:`oceanda.kalman.Localizer` (the Schur EnOI reads its points, metric and periods)
    """
    return grid_localizer_for(like, config.radius, periodic)
