"""LETKF: local ensemble transform Kalman filter with R-localisation (Hunt et al. 2007), batched.

Every horizontal grid point gets its own ETKF analysis using the observations within ``2c`` of it,
each weighted by the taper (R-localisation: the taper multiplies R^-1). All channels (variables,
layers) at a point share its analysis. The local analyses are computed together: local obs lists
are padded to a common length (padding has weight 0, which is exactly "no observation"), the
N x N ensemble-space matrices are built with one batched matmul and diagonalised with one
batched ``eigh`` per chunk of points -- no Python loop over grid points.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from threadpoolctl import ThreadpoolController

from oceanda.errors import DataValidationError
from oceanda.kalman._core import etkf_weights, normalised_innovations, prepare, relax
from oceanda.kalman.localization import Localizer
from oceanda.kalman.obsspace import as_observations

_CONTROLLER: ThreadpoolController | None = None


def _single_threaded_blas():  # type: ignore[no-untyped-def]
    """Many tiny LAPACK calls: BLAS threads only add overhead (20x slower on a busy 2-core machine)."""
    global _CONTROLLER
    if _CONTROLLER is None:
        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=1, user_api="blas")


def _apply_local_transforms(Yl: np.ndarray, dl: np.ndarray, Ag: np.ndarray) -> np.ndarray:
    """Batched local ETKF updates of the anomalies ``Ag [g, N, m]``: returns ``(w + T) Ag`` (before the mean).

    ``Yl [g, N, K]`` are the tapered normalised obs anomalies, ``dl [g, K]`` the innovations. With
    K >= N the N x N form of :func:`etkf_weights` is used. With fewer local observations than
    members the eigenproblem is solved in observation space (K x K) and no N x N matrix is formed:
    with Yl^T Yl = V diag(x) V^T and Z = Yl V, w = Z diag(1/(N-1+x)) V^T dl and
    T = I + Z diag(h) Z^T, h = (sqrt((N-1)/(N-1+x)) - 1)/x written without the 0/0 at x = 0.
    """
    _, N, K = Yl.shape
    if K >= N:
        w, T = etkf_weights(Yl, dl)
        return (T + w[:, None, :]) @ Ag
    a = N - 1.0
    x, V = np.linalg.eigh(np.swapaxes(Yl, 1, 2) @ Yl)  # [g, K], [g, K, K]
    x = np.maximum(x, 0.0)
    Z = Yl @ V  # [g, N, K]
    Vd = (np.swapaxes(V, 1, 2) @ dl[..., None])[..., 0]  # [g, K]
    w = (Z @ (Vd / (a + x))[..., None])[..., 0]  # [g, N]
    h = -1.0 / (np.sqrt(a + x) * (np.sqrt(a) + np.sqrt(a + x)))
    mean_inc = (w[:, None, :] @ Ag)  # [g, 1, m]: the same mean increment for every member
    return Ag + Z @ (h[..., None] * (np.swapaxes(Z, 1, 2) @ Ag)) + mean_inc


def letkf(E: np.ndarray, y: Any, error: Any = None, H: Any = None, *, localizer: Localizer, inflation: float = 1.0,
          rtps: float = 0.0, rtpp: float = 0.0, rng: Any = None, chunk: int = 512) -> np.ndarray:
    """LETKF analysis of ``E [N, n]`` with observations ``y`` (an Observations or ``y, error, H``).

    ``localizer`` knows the ``G`` grid-point locations; the state is ``C`` channels of ``G`` points
    (flat index ``c*G + g``). Observation locations come from ``Observations.coords`` or, for
    index/sparse operators, from the state points they sample. ``chunk`` bounds memory
    (``chunk * N * K`` values at a time, K = most obs seen by one point).
    With an infinite radius (every taper 1) the result equals :func:`~oceanda.kalman.filters.etkf`.

    Parameters
    ----------
    E : forecast ensemble ``[N, n]``
    y, error, H : an :class:`Observations`, or its values, error standard deviations and operator
    localizer : where the grid points are, the radius and taper, the analysis groups
    inflation : multiplicative factor on the forecast anomalies
    rtps, rtpp : relaxation of the analysis to the prior spread / perturbations, in [0, 1]
    rng : generator for member repair
    chunk : local analyses computed together

    Returns
    -------
    numpy.ndarray: the analysis ensemble ``[N, n]``
    """
    obs = as_observations(y, error, H)
    E, Eo, obs = prepare(np.asarray(E, dtype=np.float64), obs, inflation, rng)
    N, n = E.shape
    G = localizer.n_points
    if n % G:
        raise DataValidationError(f"state of size {n} is not a whole number of channels on the localizer's {G} points")
    if obs.size == 0:
        return E
    C = n // G
    xm, A, Ys, d = normalised_innovations(E, Eo, obs)
    loc = localizer.local_weights(obs.locations(localizer))
    members = localizer.group_members  # [M, S] points of each analysis group, -1 = padding
    A3 = A.reshape(N, C, G)
    X3 = xm.reshape(C, G)
    Ea3 = E.reshape(N, C, G).copy()
    active = np.flatnonzero(loc.count > 0)  # analyses without obs keep the forecast
    active = active[np.argsort(loc.count[active], kind="stable")]  # similar counts share a chunk: less padding
    with _single_threaded_blas():
        for s in range(0, active.size, chunk):
            grp = active[s:s + chunk]
            K = max(int(loc.count[grp].max()), 1)
            idx = loc.index[grp, :K]
            sw = np.sqrt(loc.weight[grp, :K])
            Yl = np.transpose(Ys[:, idx], (1, 0, 2)) * sw[:, None, :]  # [g, N, K]
            dl = d[idx] * sw  # [g, K]
            pts = members[grp]  # [g, S]
            valid = pts >= 0
            pc = np.where(valid, pts, 0)
            S = pc.shape[1]
            Ag = np.transpose(A3[:, :, pc], (2, 0, 3, 1)).reshape(len(grp), N, S * C)  # [g, N, S*C]
            upd = _apply_local_transforms(Yl, dl, Ag).reshape(len(grp), N, S, C)
            upd = np.transpose(upd, (0, 2, 1, 3)) + np.transpose(X3[:, pc], (1, 2, 0))[:, :, None, :]  # [g, S, N, C]
            gi, si = np.nonzero(valid)
            Ea3[:, :, pts[gi, si]] = np.transpose(upd[gi, si], (1, 2, 0))
    Ea = Ea3.reshape(N, n)
    return relax(Ea, E, rtps_alpha=rtps, rtpp_alpha=rtpp)
