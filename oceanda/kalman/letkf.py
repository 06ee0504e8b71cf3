"""LETKF: local ensemble transform Kalman filter with R-localisation (Hunt et al. 2007), batched.

Every horizontal grid point gets its own ETKF analysis using the observations within ``2c`` of it,
each weighted by the taper (R-localisation: the taper multiplies R^-1). All channels (variables,
layers) at a point share its analysis. The local analyses are computed together: local obs lists
are padded to a common length (padding has weight 0, which is exactly "no observation"), the
N x N ensemble-space matrices are built with one batched matmul and diagonalised with one
batched ``eigh`` per chunk of points -- no Python loop over grid points.

Weight interpolation (Yang, Kalnay, Hunt & Bowler 2009, QJRMS 135): on a grid the transform
``W = w 1^T + T`` varies slowly over a localisation radius, so with ``weight_spacing`` k > 1 it is
solved only every k-th point along each axis and interpolated bilinearly (periodic where the grid
wraps) to the points between; the eigen-solves, the only super-linear part, then cost 1 / k^2.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from threadpoolctl import ThreadpoolController

from oceanda.errors import DataValidationError
from oceanda.io import check_allocation
from oceanda.kalman._core import etkf_weights, normalised_innovations, prepare, relax
from oceanda.kalman.localization import Localizer, WeightInterpolation
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


def _transform_matrices(Yl: np.ndarray, dl: np.ndarray) -> np.ndarray:
    """The local N x N transforms ``W = T + 1 w^T`` (so the analysis anomalies are ``W Ag``), both branches.

    Weight interpolation needs the matrix itself; with K < N it is formed from the observation-space
    solution of :func:`_apply_local_transforms`: ``W = I + Z diag(h) Z^T + 1 w^T``.
    """
    _, N, K = Yl.shape
    if K >= N:
        w, T = etkf_weights(Yl, dl)
        return T + w[:, None, :]
    a = N - 1.0
    x, V = np.linalg.eigh(np.swapaxes(Yl, 1, 2) @ Yl)
    x = np.maximum(x, 0.0)
    Z = Yl @ V
    Vd = (np.swapaxes(V, 1, 2) @ dl[..., None])[..., 0]
    w = (Z @ (Vd / (a + x))[..., None])[..., 0]
    h = -1.0 / (np.sqrt(a + x) * (np.sqrt(a) + np.sqrt(a + x)))
    return np.eye(N) + (Z * h[:, None, :]) @ np.swapaxes(Z, 1, 2) + w[:, None, :]


def _local_problem(loc: Any, grp: np.ndarray, Ys: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tapered obs anomalies ``Yl [g, N, K]`` and innovations ``dl [g, K]`` of the analyses ``grp``."""
    K = max(int(loc.count[grp].max()), 1)
    idx = loc.index[grp, :K]
    sw = np.sqrt(loc.weight[grp, :K])
    Yl = np.transpose(Ys[:, idx], (1, 0, 2)) * sw[:, None, :]  # [g, N, K]
    dl = d[idx] * sw  # [g, K]
    return Yl, dl


def _active(loc: Any) -> np.ndarray:
    """Analyses that see an observation (the others keep the forecast), similar counts together: less padding."""
    active = np.flatnonzero(loc.count > 0)
    return active[np.argsort(loc.count[active], kind="stable")]


def _pointwise(Ea3: np.ndarray, A3: np.ndarray, X3: np.ndarray, Ys: np.ndarray, d: np.ndarray, loc: Any,
               members: np.ndarray, chunk: int) -> None:
    """One local analysis per analysis group (per point unless ``block``), written into ``Ea3 [N, C, G]``."""
    N, C, _ = A3.shape
    active = _active(loc)
    for s in range(0, active.size, chunk):
        grp = active[s:s + chunk]
        Yl, dl = _local_problem(loc, grp, Ys, d)
        pts = members[grp]  # [g, S]
        valid = pts >= 0
        pc = np.where(valid, pts, 0)
        S = pc.shape[1]
        Ag = np.transpose(A3[:, :, pc], (2, 0, 3, 1)).reshape(len(grp), N, S * C)  # [g, N, S*C]
        upd = _apply_local_transforms(Yl, dl, Ag).reshape(len(grp), N, S, C)
        upd = np.transpose(upd, (0, 2, 1, 3)) + np.transpose(X3[:, pc], (1, 2, 0))[:, :, None, :]  # [g, S, N, C]
        gi, si = np.nonzero(valid)
        Ea3[:, :, pts[gi, si]] = np.transpose(upd[gi, si], (1, 2, 0))


def _coarse_transforms(loc: Any, Ys: np.ndarray, d: np.ndarray, N: int, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """Transforms of the coarse points that see observations: ``(W [a + 1, N, N], slot [Mc])``.

    ``slot[j]`` is coarse point ``j``'s row of ``W``; points without observations share the last row, I.
    """
    active = _active(loc)
    check_allocation(8.0 * (active.size + 1) * N * N, "letkf weight_spacing: the transforms of the coarse points")
    W = np.empty((active.size + 1, N, N))
    W[-1] = np.eye(N)
    for s in range(0, active.size, chunk):
        grp = active[s:s + chunk]
        W[s:s + grp.size] = _transform_matrices(*_local_problem(loc, grp, Ys, d))
    slot = np.full(loc.count.shape[0], active.size, dtype=np.int64)
    slot[active] = np.arange(active.size)
    return W, slot


def _interpolated(Ea3: np.ndarray, A3: np.ndarray, X3: np.ndarray, Ys: np.ndarray, d: np.ndarray, loc: Any,
                  wi: WeightInterpolation, chunk: int) -> None:
    """Transforms on the coarse points (local weights ``loc`` of ``wi.localizer``), bilinear to every point.

    Per cell, ``sum_j b_j (W_j A)`` over its four corners: the interpolated transform applied to each
    point's anomalies. A point all of whose corners of non-zero weight see no observation keeps the
    forecast bit for bit (its interpolated transform is I: Yang et al. 2009).
    """
    N, C, _ = A3.shape
    W, slot = _coarse_transforms(loc, Ys, d, N, chunk)
    sl = slot[wi.corners]  # [cells, 4]
    touched = (((sl < W.shape[0] - 1)[:, :, None] & (wi.weights > 0)).any(axis=1)) & (wi.points >= 0)  # [cells, P]
    cells = np.flatnonzero(touched.any(axis=1))
    P = wi.points.shape[1]
    step = max(1, chunk // P)
    for s in range(0, cells.size, step):
        cc = cells[s:s + step]
        pts = wi.points[cc]
        pc = np.where(pts >= 0, pts, 0)
        Ag = np.transpose(A3[:, :, pc], (2, 0, 3, 1))  # [c, N, P, C]
        Ab = (wi.weights[cc][:, :, None, :, None] * Ag[:, None]).reshape(cc.size, 4, N, P * C)
        inc = (W[sl[cc]] @ Ab).sum(axis=1).reshape(cc.size, N, P, C)
        upd = inc + np.transpose(X3[:, pc], (1, 2, 0))[:, None]  # [c, N, P, C]
        gi, pi = np.nonzero(touched[cc])
        Ea3[:, :, pts[gi, pi]] = np.transpose(upd[gi, :, pi], (1, 2, 0))


def letkf(E: np.ndarray, y: Any, error: Any = None, H: Any = None, *, localizer: Localizer, inflation: float = 1.0,
          rtps: float = 0.0, rtpp: float = 0.0, rng: Any = None, chunk: int = 512,
          weight_spacing: Any = "auto") -> np.ndarray:
    """LETKF analysis of ``E [N, n]`` with observations ``y`` (an Observations or ``y, error, H``).

    ``localizer`` knows the ``G`` grid-point locations; the state is ``C`` channels of ``G`` points
    (flat index ``c*G + g``). Observation locations come from ``Observations.coords`` or, for
    index/sparse operators, from the state points they sample. ``chunk`` bounds memory
    (``chunk * N * K`` values at a time, K = most obs seen by one point).
    With an infinite radius (every taper 1) the result equals :func:`~oceanda.kalman.filters.etkf`.
    ``weight_spacing`` (grid steps, on localizers of a grid: :func:`~oceanda.kalman.grid_localizer`):
    the transforms are computed every ``k``-th point along each axis and interpolated bilinearly to
    the others (Yang et al. 2009); ``auto`` = ``max(1, floor(radius / 4 / grid step))``
    (:meth:`~oceanda.kalman.localization.Localizer.weight_spacing`), 1 = one analysis per point, exactly.

    Parameters
    ----------
    E : forecast ensemble ``[N, n]``
    y, error, H : an :class:`Observations`, or its values, error standard deviations and operator
    localizer : where the grid points are, the radius and taper, the analysis groups
    inflation : multiplicative factor on the forecast anomalies
    rtps, rtpp : relaxation of the analysis to the prior spread / perturbations, in [0, 1]
    rng : generator for member repair
    chunk : local analyses computed together
    weight_spacing : ``auto``, an integer >= 1 or ``(ky, kx)``: grid steps between computed transforms

    Returns
    -------
    numpy.ndarray: the analysis ensemble ``[N, n]``
    """
    obs = as_observations(y, error, H)
    wi = localizer.weight_interpolation(weight_spacing)
    E, Eo, obs = prepare(np.asarray(E, dtype=np.float64), obs, inflation, rng)
    N, n = E.shape
    G = localizer.n_points
    if n % G:
        raise DataValidationError(f"state of size {n} is not a whole number of channels on the localizer's {G} points")
    if obs.size == 0:
        return E
    C = n // G
    xm, A, Ys, d = normalised_innovations(E, Eo, obs)
    A3 = A.reshape(N, C, G)
    X3 = xm.reshape(C, G)
    Ea3 = E.reshape(N, C, G).copy()
    with _single_threaded_blas():
        if wi is None:
            loc = localizer.local_weights(obs.locations(localizer))
            _pointwise(Ea3, A3, X3, Ys, d, loc, localizer.group_members, chunk)
        else:
            loc = wi.localizer.local_weights(obs.locations(localizer))
            _interpolated(Ea3, A3, X3, Ys, d, loc, wi, chunk)
    Ea = Ea3.reshape(N, n)
    return relax(Ea, E, rtps_alpha=rtps, rtpp_alpha=rtpp)
