"""Observations as the Kalman filters see them: values, error standard deviations, operator, locations.

The operator ``H`` is one of: an integer array of flat state indices (direct observations), a
``scipy.sparse`` matrix ``[p, n]`` (linear, e.g. interpolation or averaging), or a callable mapping
an ensemble ``[N, n]`` to ``[N, p]`` (nonlinear, evaluated member by member, e.g. drifters). R is
diagonal (``error`` holds standard deviations). Observation Datasets -- gridded with NaN where
unobserved, or points with ``y_index``/``x_index`` -- become one :class:`Observations` per time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import scipy.sparse as sp
import xarray as xr

from oceanda.errors import DataValidationError
from oceanda.fields import FieldLayout, spatial_dims

Operator = np.ndarray | sp.spmatrix | sp.sparray | Callable[[np.ndarray], np.ndarray]


def apply_operator(H: Operator, E: np.ndarray) -> np.ndarray:
    """``H`` applied to every member of ``E [N, n]`` -> ``[N, p]``.

    Parameters
    ----------
    H : index array, sparse matrix ``[p, n]`` or callable ``[N, n] -> [N, p]``
    E : ensemble ``[N, n]``

    Returns
    -------
    numpy.ndarray: ``[N, p]`` float64
    """
    E = np.asarray(E)
    if callable(H) and not sp.issparse(H):
        out = np.asarray(H(E), dtype=np.float64)
        if out.ndim != 2 or out.shape[0] != E.shape[0]:
            raise DataValidationError(f"observation operator returned shape {out.shape}; expected [{E.shape[0]} members, p]")
        return out
    if sp.issparse(H):
        return np.asarray((H @ E.T).T, dtype=np.float64)
    idx = np.asarray(H)
    if not np.issubdtype(idx.dtype, np.integer):
        raise DataValidationError(f"observation operator of dtype {idx.dtype}; expected integer state indices, a sparse matrix or a callable")
    return E[:, idx].astype(np.float64, copy=False)


@dataclass
class Observations:
    """One analysis time's observations: ``y [p]``, ``error [p]`` (std), operator ``H``, ``coords [p, d]``.

    ``coords`` are the observation locations used by localisation; for index or sparse operators
    they may be left ``None`` and are taken from the state grid (see :meth:`locations`).
    """

    y: np.ndarray
    error: np.ndarray
    H: Any
    coords: np.ndarray | None = None
    time: Any = None

    def __post_init__(self) -> None:
        self.y = np.atleast_1d(np.asarray(self.y, dtype=np.float64))
        err = np.asarray(self.error, dtype=np.float64)
        self.error = np.broadcast_to(err, self.y.shape).copy()
        if self.coords is not None:
            self.coords = np.asarray(self.coords, dtype=np.float64)
            if self.coords.ndim == 1:
                self.coords = self.coords[:, None]

    @property
    def size(self) -> int:
        return int(self.y.size)

    def apply(self, E: np.ndarray) -> np.ndarray:
        """The operator applied to every member of ``E``.

        Parameters
        ----------
        E : ensemble ``[N, n]``

        Returns
        -------
        numpy.ndarray: ``[N, p]``
        """
        return apply_operator(self.H, E)

    def subset(self, keep: np.ndarray) -> Observations:
        """Only the observations ``keep`` (boolean or indices).

        Parameters
        ----------
        keep : boolean mask ``[p]`` or integer indices

        Returns
        -------
        Observations
        """
        keep = np.asarray(keep)
        H = self.H
        if callable(H) and not sp.issparse(H):
            inner = H
            sel = keep

            def H(E: np.ndarray, _inner: Callable = inner, _sel: np.ndarray = sel) -> np.ndarray:
                return np.asarray(_inner(E))[:, _sel]
        elif sp.issparse(H):
            H = sp.csr_matrix(H)[keep]
        else:
            H = np.asarray(H)[keep]
        return replace(self, y=self.y[keep], error=self.error[keep], H=H,
                       coords=None if self.coords is None else self.coords[keep])

    def finite(self) -> Observations:
        """Drop NaN observations (and NaN or non-positive errors): they are simply not assimilated."""
        ok = np.isfinite(self.y) & np.isfinite(self.error) & (self.error > 0)
        return self if ok.all() else self.subset(ok)

    def state_index(self) -> np.ndarray | None:
        """The state index each observation sits on (direct: itself; sparse: largest weight)."""
        if callable(self.H) and not sp.issparse(self.H):
            return None
        if sp.issparse(self.H):
            H = sp.csr_matrix(self.H)
            return np.asarray(abs(H).argmax(axis=1)).ravel()
        return np.asarray(self.H, dtype=np.int64)

    def locations(self, localizer: Any) -> np.ndarray:
        """Observation locations in the localizer's coordinates.

        Parameters
        ----------
        localizer : the :class:`~oceanda.kalman.localization.Localizer` of the state

        Returns
        -------
        numpy.ndarray: locations ``[p, d]``
        """
        if self.coords is not None:
            return self.coords
        idx = self.state_index()
        if idx is None:
            raise DataValidationError("observations with a callable operator need explicit coords for localisation")
        return localizer.obs_coords_of_state(idx)


def as_observations(y: Any, error: Any = None, H: Any = None, coords: Any = None) -> Observations:
    """Accept an :class:`Observations` or the pieces ``(y, error, H, coords)``.

    Parameters
    ----------
    y : an :class:`Observations`, or the values ``[p]``
    error : error standard deviations
    H : observation operator
    coords : observation locations (optional)

    Returns
    -------
    Observations
    """
    if isinstance(y, Observations):
        return y
    if error is None or H is None:
        raise TypeError("give an Observations object or y, error and H")
    return Observations(y=y, error=error, H=H, coords=coords)


def selection_operator(indices: np.ndarray, n_state: int, scale: float | np.ndarray = 1.0) -> sp.csr_matrix:
    """A sparse ``H [p, n_state]`` sampling the flat state ``indices``, each times ``scale``.

    For an observed quantity proportional to a state variable (SSH = f0 psi1 / g with psi in the state).

    Parameters
    ----------
    indices : flat state index of each observation ``[p]``
    n_state : size of the flat state
    scale : factor from state to observation (scalar or ``[p]``)

    Returns
    -------
    scipy.sparse.csr_matrix
    """
    indices = np.asarray(indices, dtype=np.int64)
    data = np.broadcast_to(np.asarray(scale, dtype=np.float64), indices.shape).copy()
    return sp.csr_matrix((data, (np.arange(indices.size), indices)), shape=(indices.size, int(n_state)))


# ------------------------------------------------------------------------------------------------
# Datasets -> Observations
# ------------------------------------------------------------------------------------------------


def _channel_of(layout: FieldLayout, var: str, level: int | None, source: str) -> int:
    for i, (v, lev) in enumerate(layout.channels):
        if v == var and (lev == level or (level is None and lev is None)):
            return i
    if level is None and sum(v == var for v, _ in layout.channels) == 1:
        return next(i for i, (v, _) in enumerate(layout.channels) if v == var)
    raise DataValidationError(
        f"{source}: observed variable '{var}'{'' if level is None else f' level {level}'} is not in the state; "
        f"expected one of {sorted(set(layout.variables))}"
    )


def _error_values(obs: xr.Dataset, var: str, source: str) -> xr.DataArray:
    err = f"{var}_error"
    if err not in obs:
        raise DataValidationError(f"{source}: missing '{err}'; expected the observation error standard deviation of '{var}'")
    return obs[err]


def observations_from_dataset(obs: xr.Dataset, layout: FieldLayout, like: xr.Dataset, *,
                              source: str = "observations",
                              variables: Sequence[str] | None = None) -> list[Observations]:
    """Observation Dataset -> one :class:`Observations` per time, H as flat state indices.

    Gridded observations (same grid as the state, NaN where unobserved, dims ``(time, [level,] y, x)``)
    and point observations (dim ``obs`` with integer ``y_index``, ``x_index`` and optionally
    ``layer_index``, per-obs ``time``) are both understood. The flat index of grid point
    ``(c, iy, ix)`` is ``c*Y*X + iy*X + ix``. ``<var>_error`` may be a scalar or have the values' dims.

    Parameters
    ----------
    obs : observation Dataset (gridded or with an ``obs`` dim)
    layout : the state layout (channels and spatial dims)
    like : a state Dataset giving the grid
    source : what to call ``obs`` in errors
    variables : observed variables (default: every data variable)

    Returns
    -------
    list of Observations: one per time
    """
    names = list(variables) if variables is not None else [
        str(v) for v in obs.data_vars if not str(v).endswith("_error") and str(v) not in ("y_index", "x_index", "layer_index")
    ]
    if not names:
        raise DataValidationError(f"{source}: no observed variables; expected e.g. 'ssh' with 'ssh_error'")
    ydim, xdim = spatial_dims(like)
    grid = (like.sizes[ydim], like.sizes[xdim])
    if "obs" in obs.dims:
        return _point_observations(obs, layout, names, source, grid)
    if obs.sizes.get(ydim) != grid[0] or obs.sizes.get(xdim) != grid[1]:
        raise DataValidationError(
            f"{source}: gridded observations on a {obs.sizes.get(ydim)} x {obs.sizes.get(xdim)} grid; "
            f"expected the state grid {grid[0]} x {grid[1]} (dims {ydim}, {xdim})"
        )
    return _gridded_observations(obs, layout, names, source)


def _grid_shape(obs: xr.Dataset, layout: FieldLayout, source: str) -> tuple[int, int]:
    ydim, xdim = layout.spatial
    if ydim not in obs.dims or xdim not in obs.dims:
        raise DataValidationError(f"{source}: gridded observations lack dims ({ydim}, {xdim}); expected the state grid")
    return obs.sizes[ydim], obs.sizes[xdim]


def _gridded_observations(obs: xr.Dataset, layout: FieldLayout, names: list[str], source: str) -> list[Observations]:
    Y, X = _grid_shape(obs, layout, source)
    G = Y * X
    times = obs["time"].values if "time" in obs.dims else [None]
    out = []
    for ti, t in enumerate(times):
        ys, es, hs = [], [], []
        for v in names:
            da = obs[v]
            if "time" in da.dims:
                da = da.isel(time=ti)
            err = _error_values(obs, v, source)
            if "time" in err.dims:
                err = err.isel(time=ti)
            err = err.broadcast_like(da)
            lev_dim = layout.level_dim if layout.level_dim and layout.level_dim in da.dims else None
            levels = range(da.sizes[lev_dim]) if lev_dim else [None]
            for lev in levels:
                plane = da.isel({lev_dim: lev}) if lev_dim else da
                eplane = err.isel({lev_dim: lev}) if lev_dim else err
                vals = np.asarray(plane.transpose(*layout.spatial).values, dtype=np.float64).ravel()
                evals = np.asarray(eplane.transpose(*layout.spatial).values, dtype=np.float64).ravel()
                c = _channel_of(layout, v, lev, source)
                ok = np.flatnonzero(np.isfinite(vals))
                ys.append(vals[ok])
                es.append(evals[ok])
                hs.append(c * G + ok)
        o = Observations(np.concatenate(ys), np.concatenate(es), np.concatenate(hs).astype(np.int64), time=t)
        _check_errors(o, source)
        out.append(o)
    return out


def _point_observations(obs: xr.Dataset, layout: FieldLayout, names: list[str], source: str,
                        grid: tuple[int, int]) -> list[Observations]:
    for c in ("y_index", "x_index"):
        if c not in obs.variables:
            raise DataValidationError(f"{source}: point observations need integer '{c}'; expected the grid index of each obs")
    iy = np.asarray(obs["y_index"].values, dtype=np.int64)
    ix = np.asarray(obs["x_index"].values, dtype=np.int64)
    il = np.asarray(obs["layer_index"].values, dtype=np.int64) if "layer_index" in obs.variables else None
    Y, X = grid
    if (iy < 0).any() or (iy >= Y).any() or (ix < 0).any() or (ix >= X).any():
        raise DataValidationError(f"{source}: 'y_index'/'x_index' outside the state grid ({Y} x {X})")
    times = np.asarray(obs["time"].values) if "time" in obs.variables else np.zeros(obs.sizes["obs"])
    out = []
    for t in np.unique(times):
        sel = times == t
        ys, es, hs = [], [], []
        for v in names:
            vals = np.asarray(obs[v].values, dtype=np.float64)
            err = _error_values(obs, v, source)
            evals = np.broadcast_to(np.asarray(err.values, dtype=np.float64), vals.shape)
            level = None
            if layout.level_dim and sum(name == v for name, _ in layout.channels) > 1:
                if il is None:
                    raise DataValidationError(f"{source}: '{v}' has levels in the state; expected 'layer_index' per obs")
                chans = np.array([_channel_of(layout, v, int(lev), source) for lev in il[sel]])
            else:
                chans = np.full(sel.sum(), _channel_of(layout, v, level, source))
            ys.append(vals[sel])
            es.append(evals[sel])
            hs.append(chans * (Y * X) + iy[sel] * X + ix[sel])
        o = Observations(np.concatenate(ys), np.concatenate(es), np.concatenate(hs).astype(np.int64), time=t)
        _check_errors(o, source)
        out.append(o)
    return out


def _check_errors(o: Observations, source: str) -> None:
    bad = np.isfinite(o.y) & ~(np.isfinite(o.error) & (o.error > 0))
    if bad.any():
        raise DataValidationError(f"{source}: {int(bad.sum())} observation error(s) are not positive finite standard deviations")
