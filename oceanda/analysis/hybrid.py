"""Hybrid mode: the local contrastive posterior as the background of an ensemble Kalman update.

Kalman side (``HybridConfig.kalman``): ``'schur'`` (default) is EnOI with a Schur-product
(Gaspari-Cohn) localised gain solved in observation space -- K = (rho_xo o B H^T)(rho_oo o H B H^T + R)^-1,
cost linear in the state size, a few seconds per analysis for a 500-member static ensemble on the
QG grid; ``'letkf'`` calls :func:`oceanda.kalman.filters.enoi` / LETKF (one ensemble-space analysis
per grid point: exact but about a minute per analysis there).

The contrastive analysis uses the observations only through the encoders; a Kalman update then
uses their values directly (what a long observation window needs). Background mean: the local
contrastive mean. Background covariance: ``ensemble='static'`` (default; EnOI with library
anomalies scaled by ``alpha``, Gaspari-Cohn localised -- what the prototype measured),
``'local'`` (the local posterior members: a flow-dependent ensemble, LETKF) or ``'both'`` (their
union: static anomalies scaled by ``alpha`` plus the local members' anomalies scaled by ``beta``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from oceanda.errors import DataValidationError


@dataclass
class HybridConfig:
    """Kalman side of the hybrid: covariance source, EnOI scaling, localisation radius (grid units)."""

    ensemble: str = "static"
    alpha: float = 0.3
    beta: float = 1.0
    radius: float = 200.0  # Gaspari-Cohn half-width, in the units of the grid coordinates (km)
    static_members: int = 500
    inflation: float = 1.0
    kalman: str = "schur"
    spread_channels: str = "observed"  # 'observed': Kalman spread on observed channels, contrastive spread elsewhere

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def static_states(library, members: int, rng: np.random.Generator) -> np.ndarray:
    """``[m, n]`` flattened library states drawn without replacement (EnOI's static ensemble)."""
    m = min(int(members), library.n)
    idx = np.sort(rng.choice(library.n, size=m, replace=False))
    return library.read(idx).reshape(m, -1).astype(np.float64)


def hybrid_update(mean: np.ndarray, local_members: np.ndarray, observations: Any, *, localizer: Any,
                  static: np.ndarray | None, config: HybridConfig, rng: np.random.Generator) -> np.ndarray:
    """Kalman update of the contrastive background; returns the analysis ensemble ``[N, C, Y, X]``.

    ``mean`` ``[C, Y, X]`` and ``local_members`` ``[M, C, Y, X]`` come from local mode;
    ``observations`` is an :class:`oceanda.kalman.obsspace.Observations` on the same flat layout;
    ``static`` are library states ``[m, n]`` (:func:`static_states`). With ``ensemble='static'``
    this is EnOI with the contrastive mean as background (``localizer`` = ``grid_points(...)`` for
    ``kalman='schur'``, a :class:`~oceanda.kalman.localization.Localizer` for ``'letkf'``), so it
    differs from the EnOI baseline only by its background.
    """
    from oceanda.kalman.filters import enoi, static_ensemble
    from oceanda.kalman.letkf import letkf

    shape = mean.shape
    xb = np.asarray(mean, dtype=np.float64).ravel()
    if config.ensemble in ("static", "both") and static is None:
        raise DataValidationError("hybrid: the static ensemble needs library states")
    if config.ensemble == "static" and config.kalman == "schur":
        points, period = localizer
        G = len(points)
        obs_ch = None if config.spread_channels == "all" else sorted({int(i) // G for i in observations.state_index()})
        xa, var = schur_enoi(xb, static, observations, alpha=config.alpha, radius=config.radius, points=points,
                             period=period, var_channels=obs_ch)
        A = local_members.reshape(len(local_members), -1).astype(np.float64)
        A = A - A.mean(axis=0)
        sd = np.sqrt(np.maximum(np.sum(A * A, axis=0) / max(len(A) - 1, 1), 1e-30))
        scale = np.where(np.isfinite(var), np.sqrt(np.where(np.isfinite(var), var, 0.0)) / sd, 1.0)
        Ea = xa[None] + A * scale[None]  # members: the local ones, rescaled to the analysis spread
        return Ea.reshape(-1, *shape)
    if config.ensemble == "static":
        Ea = enoi(xb, static, observations, alpha=config.alpha, localizer=localizer, rng=rng)
        return Ea.reshape(-1, *shape)
    parts = []
    if config.ensemble == "both":
        parts.append(static_ensemble(static, xb, config.alpha))
    if config.ensemble in ("local", "both"):
        A = local_members.reshape(len(local_members), -1).astype(np.float64)
        A = A - A.mean(axis=0)
        if config.ensemble == "both" and static is not None:  # equal footing in the sample covariance
            A = A * np.sqrt((static.shape[0] - 1) / max(A.shape[0] - 1, 1))
        parts.append(xb[None] + np.sqrt(config.beta) * A)
    if not parts:
        raise DataValidationError(f"hybrid ensemble '{config.ensemble}'; expected 'static', 'local' or 'both'")
    E = np.concatenate(parts, axis=0)
    E = xb[None] + (E - E.mean(axis=0))  # centred on the contrastive mean
    Ea = letkf(E, observations, localizer=localizer, inflation=config.inflation, rng=rng)
    return Ea.reshape(-1, *shape)


def grid_localizer_for(like, radius: float, periodic: bool):
    """A Gaspari-Cohn localizer on the grid of ``like`` (1-D ``y``/``x`` in km), periodic if asked."""
    from oceanda.fields import spatial_dims
    from oceanda.kalman.localization import grid_localizer

    ydim, xdim = spatial_dims(like)
    y = np.asarray(like[ydim].values, dtype=np.float64) if ydim in like.coords else np.arange(like.sizes[ydim], dtype=float)
    x = np.asarray(like[xdim].values, dtype=np.float64) if xdim in like.coords else np.arange(like.sizes[xdim], dtype=float)
    period = None
    if periodic:
        dy = float(np.median(np.diff(y))) if len(y) > 1 else 1.0
        dx = float(np.median(np.diff(x))) if len(x) > 1 else 1.0
        period = (len(y) * dy, len(x) * dx)
    return grid_localizer(y, x, radius, period=period)


def schur_enoi(xb: np.ndarray, static: np.ndarray, observations: Any, *, alpha: float, radius: float,
               points: np.ndarray, period: tuple | None = None, chunk: int = 4096,
               var_channels: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """EnOI with a Schur-localised gain in observation space: analysis mean ``[n]`` and variance ``[n]``.

    B = alpha A^T A / (m - 1) from the static states' anomalies ``A``; the flat state index ``i``
    sits at horizontal point ``i % G`` of ``points [G, 2]`` (``fields.to_array`` flattened), and the
    observations use direct (index) operators. The variance is the diagonal of (I - K H) B with the
    localised gain, computed only on the channels ``var_channels`` (default all; NaN elsewhere) because
    it costs n p^2 against n p m for the mean.
    """
    from oceanda.kalman.localization import gaspari_cohn, pairwise_distances

    obs = observations.finite() if hasattr(observations, "finite") else observations
    idx = obs.state_index()
    if idx is None:
        raise DataValidationError("schur EnOI needs direct (index or sparse) observation operators")
    xb = np.asarray(xb, dtype=np.float64)
    A = np.asarray(static, dtype=np.float64)
    A = (A - A.mean(axis=0)) * np.sqrt(alpha / (A.shape[0] - 1))  # B = A^T A
    G = len(points)
    metric = "periodic" if period is not None else "euclidean"
    ptso = points[idx % G]
    HA = A[:, idx]  # [m, p]
    rho_oo = gaspari_cohn(pairwise_distances(ptso, ptso, metric, period), radius)
    S = rho_oo * (HA.T @ HA) + np.diag(obs.error ** 2)
    d = obs.y - xb[idx]
    Sinv = np.linalg.inv(S)
    z = Sinv @ d
    xa = xb.copy()
    var = np.empty_like(xb)
    rho_go = gaspari_cohn(pairwise_distances(points, ptso, metric, period), radius)  # [G, p]
    chunk = G  # one channel at a time
    for a in range(0, xb.size, chunk):
        sl = slice(a, min(a + chunk, xb.size))
        g = np.arange(sl.start, sl.stop) % G
        P_xo = rho_go[g] * (A[:, sl].T @ HA)  # [c, p] localised B H^T
        xa[sl] += P_xo @ z
        if var_channels is None or (sl.start // G) in set(var_channels):
            K = P_xo @ Sinv
            var[sl] = np.maximum(np.sum(A[:, sl] ** 2, axis=0) - np.sum(K * P_xo, axis=1), 0.0)
        else:
            var[sl] = np.nan
    return xa, var


def grid_points(like, periodic: bool) -> tuple[np.ndarray, tuple | None]:
    """Horizontal grid-point coordinates ``[G, 2]`` (``y``, ``x`` in their units) and the periods."""
    from oceanda.fields import spatial_dims

    ydim, xdim = spatial_dims(like)
    y = np.asarray(like[ydim].values, dtype=np.float64) if ydim in like.coords else np.arange(like.sizes[ydim], dtype=float)
    x = np.asarray(like[xdim].values, dtype=np.float64) if xdim in like.coords else np.arange(like.sizes[xdim], dtype=float)
    yy, xx = np.meshgrid(y, x, indexing="ij")
    period = None
    if periodic:
        period = (len(y) * float(np.median(np.diff(y))), len(x) * float(np.median(np.diff(x))))
    return np.c_[yy.ravel(), xx.ravel()], period
