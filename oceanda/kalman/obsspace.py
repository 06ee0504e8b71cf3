"""Observations as the Kalman filters see them: values, error standard deviations, operator, locations.

The operator ``H`` is one of: an integer array of flat state indices (direct observations), a
``scipy.sparse`` matrix ``[p, n]`` (linear, e.g. interpolation or averaging), or a callable mapping
an ensemble ``[N, n]`` to ``[N, p]`` (nonlinear, evaluated member by member, e.g. drifters). R is
diagonal (``error`` holds standard deviations). Observation Datasets -- gridded with NaN where
unobserved, points with ``y_index``/``x_index``, or points at arbitrary positions (L3 along-track,
profiles: a sparse bilinear ``H``, :func:`point_operator`) -- become one :class:`Observations` per time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import scipy.sparse as sp
import xarray as xr

from oceanda import grid
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
                              source: str = "observations", variables: Sequence[str] | None = None,
                              periodic: bool = False, metric: str | None = None,
                              report: dict[str, Any] | None = None) -> list[Observations]:
    """Observation Dataset -> one :class:`Observations` per time.

    Gridded observations (same grid as the state, NaN where unobserved, dims ``(time, [level,] y, x)``)
    and point observations with integer ``y_index``, ``x_index`` (optionally ``layer_index``; per-obs
    ``time``) get H as flat state indices: the flat index of grid point ``(c, iy, ix)`` is
    ``c*Y*X + iy*X + ix``. Point observations at arbitrary positions (dim ``obs``, coords ``y``/``x`` km
    or ``lat``/``lon``) get the sparse bilinear H of :func:`point_operator`, one analysis per distinct
    ``time`` (snap raw times first: :func:`oceanda.api.analyse` does). ``<var>_error`` may be a scalar or
    have the values' dims.

    Parameters
    ----------
    obs : observation Dataset (gridded or with an ``obs`` dim)
    layout : the state layout (channels and spatial dims)
    like : a state Dataset giving the grid (and, for positioned points, the land)
    source : what to call ``obs`` in errors
    variables : observed variables (default: every data variable)
    periodic : positioned points: the (y, x) km grid is doubly periodic
    metric : positioned points: the localisation metric (``great_circle``: the points' lat/lon become their
        locations; ``periodic``/``euclidean``: their y/x); None = located at their largest-weight cell
    report : a dict to receive how the observations were used (``observation_operator``, point counts)

    Returns
    -------
    list of Observations: one per time
    """
    names = list(variables) if variables is not None else [
        str(v) for v in obs.data_vars if not str(v).endswith("_error") and str(v) not in ("y_index", "x_index", "layer_index")
    ]
    if not names:
        raise DataValidationError(f"{source}: no observed variables; expected e.g. 'ssh' with 'ssh_error'")
    report = {} if report is None else report
    ydim, xdim = spatial_dims(like)
    shape = (like.sizes[ydim], like.sizes[xdim])
    if "obs" in obs.dims and not ("y_index" in obs.variables or "x_index" in obs.variables):
        return point_operator(obs, layout, like, names, source=source, periodic=periodic, metric=metric,
                              report=report)
    if "obs" in obs.dims:
        report["observation_operator"] = "selection of grid cells (points with y_index/x_index)"
        return _point_observations(obs, layout, names, source, shape)
    if obs.sizes.get(ydim) != shape[0] or obs.sizes.get(xdim) != shape[1]:
        raise DataValidationError(
            f"{source}: gridded observations on a {obs.sizes.get(ydim)} x {obs.sizes.get(xdim)} grid; "
            f"expected the state grid {shape[0]} x {shape[1]} (dims {ydim}, {xdim})"
        )
    superobs = obs.attrs.get("operator") == "superob"
    report["observation_operator"] = "selection of grid cells" + (" (superobservations of points)" if superobs else "")
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
                check_values(vals, evals, source, v)
                ok = np.flatnonzero(np.isfinite(vals))
                ys.append(vals[ok])
                es.append(evals[ok])
                hs.append(c * G + ok)
        o = Observations(np.concatenate(ys), np.concatenate(es), np.concatenate(hs).astype(np.int64), time=t)
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
            check_values(vals[sel], evals[sel], source, v)
            ys.append(vals[sel])
            es.append(evals[sel])
            hs.append(chans * (Y * X) + iy[sel] * X + ix[sel])
        o = Observations(np.concatenate(ys), np.concatenate(es), np.concatenate(hs).astype(np.int64), time=t)
        out.append(o)
    return out


def check_values(vals: np.ndarray, errors: np.ndarray, source: str, var: str) -> None:
    """Refuse Inf values of ``var``, and errors that are not positive finite std where ``var`` is observed.

    Why here: this is where observations meet the filters; an Inf value or a zero, negative, NaN or
    Inf error would turn the gain into NaN (or infinitely trust one value).

    Parameters
    ----------
    vals : observed values (NaN unobserved)
    errors : their error standard deviations (same shape)
    source : the observation file, named in the error
    var : the observed variable

    Raises
    ------
    DataValidationError
    """
    if np.isinf(vals).any():
        raise DataValidationError(f"{source}: variable '{var}' contains Inf values; expected finite values or NaN")
    bad = np.isfinite(vals) & ~(np.isfinite(errors) & (errors > 0))
    if bad.any():
        raise DataValidationError(
            f"{source}: variable '{var}_error' is {errors[bad][0]:g} at {int(bad.sum())} observed point(s); "
            f"expected positive finite standard deviations of '{var}'"
        )


# ------------------------------------------------------------------------------------------------
# Points at arbitrary positions -> a sparse bilinear H
# ------------------------------------------------------------------------------------------------


def point_positions(obs: xr.Dataset, like: xr.Dataset, periodic: bool = False,
                    source: str = "observations") -> tuple[np.ndarray, np.ndarray, tuple[bool, bool], str]:
    """Fractional grid indices ``(j, i)`` of every point (NaN off the grid), the axes' periodicity, the rule.

    ``y``/``x`` km on a 1-D km grid (wrapped at its periods when ``periodic``); ``lat``/``lon`` on a
    (lat, lon) grid, longitudes of any convention shifted by whole turns onto the grid's continuous
    longitude (wrapped when the grid is global); on a curvilinear grid the nearest cell centre
    (:func:`oceanda.grid.nearest_cells`; integer indices: the operator selects that cell).

    Parameters
    ----------
    obs : point observations (dim ``obs``)
    like : a gridded Dataset giving the grid
    periodic : the (y, x) km grid is doubly periodic
    source : what to call ``obs`` in errors

    Returns
    -------
    ``(j, i, (periodic_y, periodic_x), rule)`` with rule ``'bilinear'`` or ``'nearest'``
    """
    ydim, xdim = spatial_dims(like)
    pv = obs.variables
    if (ydim, xdim) == ("y", "x") and all(c in like.coords and like[c].ndim == 1 for c in ("y", "x")) \
            and "y" in pv and "x" in pv:
        per = grid.periods(like) if periodic else (None, None)
        return (grid.fractional_index(obs["y"].values, like["y"].values, per[0]),
                grid.fractional_index(obs["x"].values, like["x"].values, per[1]), (bool(periodic),) * 2, "bilinear")
    ll = grid.lat_lon(like)
    if "lat" not in pv or "lon" not in pv or ll is None:
        raise DataValidationError(f"{source}: point observations need 'lat'/'lon' (or 'y'/'x' km on a km grid, or "
                                  "'y_index'/'x_index'); expected the canonical point layout")
    plat, plon = (np.asarray(obs[c].values, dtype=np.float64) for c in ("lat", "lon"))
    if (ydim, xdim) == ("lat", "lon"):
        lon = grid.axis_values(like, "lon")
        glob = grid.global_lon(lon)
        lon0 = grid.cell_edges(lon)[0]
        return (grid.fractional_index(plat, grid.axis_values(like, "lat")),
                grid.fractional_index(grid.shift_lon(plon, lon0), lon, 360.0 if glob else None), (False, glob), "bilinear")
    iy, ix = grid.nearest_cells(ll[0], ll[1], plat, plon)
    return np.where(iy >= 0, iy, np.nan), np.where(ix >= 0, ix, np.nan), (False, False), "nearest"


def _point_channels(obs: xr.Dataset, layout: FieldLayout, like: xr.Dataset, var: str, source: str) -> np.ndarray:
    """State channel of every point of ``var`` (-1 off the levels): ``layer_index``, else the nearest ``depth`` level."""
    n = obs.sizes["obs"]
    levels = [lev for v, lev in layout.channels if v == var]
    if len(levels) <= 1 or layout.level_dim is None:
        return np.full(n, _channel_of(layout, var, levels[0] if levels else None, source), dtype=np.int64)
    nl = like.sizes[layout.level_dim]
    if "layer_index" in obs.variables or "level_index" in obs.variables:
        li = np.asarray(obs["layer_index" if "layer_index" in obs.variables else "level_index"].values, dtype=np.int64)
    elif "depth" in obs.variables and layout.level_dim in like.coords:
        g = grid.fractional_index(obs["depth"].values, like[layout.level_dim].values)
        li = np.where(np.isfinite(g), np.rint(np.nan_to_num(g)), -1).astype(np.int64)
    else:
        raise DataValidationError(f"{source}: '{var}' has levels in the state; expected 'layer_index' or 'depth' per obs")
    chan = {lev: _channel_of(layout, var, lev, source) for lev in levels}
    return np.array([chan.get(int(k), -1) if 0 <= k < nl else -1 for k in li], dtype=np.int64)


def _land(like: xr.Dataset, layout: FieldLayout, channels: np.ndarray) -> dict[int, np.ndarray]:
    """Flat land masks ``[Y * X]`` of the given channels: NaN in ``like`` at its first sample (fixed land cells)."""
    out = {}
    for c in np.unique(channels[channels >= 0]):
        v, lev = layout.channels[int(c)]
        da = like[v]
        da = da.isel({d: 0 for d in ("time", "member") if d in da.dims})
        if lev is not None and layout.level_dim in da.dims:
            da = da.isel({layout.level_dim: lev})
        out[int(c)] = ~np.isfinite(np.asarray(da.transpose(*layout.spatial).values, dtype=np.float64)).ravel()
    return out


def _weights(j: np.ndarray, i: np.ndarray, shape: tuple[int, int], periodic: tuple[bool, bool]) -> tuple[np.ndarray, ...]:
    """Bilinear stencil ``(cells [p, 4], weights [p, 4], nearest cell [p])`` of finite fractional indices."""
    ny, nx = shape
    j0, j1, wy = grid.corners(ny, j, periodic[0])
    i0, i1, wx = grid.corners(nx, i, periodic[1])
    cells = np.stack([j0 * nx + i0, j0 * nx + i1, j1 * nx + i0, j1 * nx + i1], axis=1)
    w = np.stack([(1 - wy) * (1 - wx), (1 - wy) * wx, wy * (1 - wx), wy * wx], axis=1)
    jn, inn = np.rint(j).astype(np.int64), np.rint(i).astype(np.int64)
    jn = jn % ny if periodic[0] else np.clip(jn, 0, ny - 1)
    inn = inn % nx if periodic[1] else np.clip(inn, 0, nx - 1)
    return cells, w, jn * nx + inn


def _point_coords(obs: xr.Dataset, metric: str | None) -> np.ndarray | None:
    """Localisation locations ``[p, 2]`` of the points: their own lat/lon (great circle) or y/x (km), else None."""
    pair = ("lat", "lon") if metric == "great_circle" else ("y", "x") if metric in ("periodic", "euclidean") else None
    if pair is None or not all(c in obs.variables for c in pair):
        return None
    return np.c_[[np.asarray(obs[c].values, dtype=np.float64) for c in pair]].T


def point_operator(obs: xr.Dataset, layout: FieldLayout, like: xr.Dataset, names: Sequence[str], *,
                   source: str = "observations", periodic: bool = False, metric: str | None = None,
                   report: dict[str, Any] | None = None) -> list[Observations]:
    """Points at arbitrary positions -> one :class:`Observations` per distinct time, H sparse bilinear.

    Why: an L3 point is not a cell value; superobbing it (a cell mean of point values) misrepresents it
    by the sub-cell gradient. Here each point is the bilinear interpolation of the four surrounding cell
    centres (:func:`point_positions`; a single cell on curvilinear grids). A point whose stencil touches land
    (a NaN corner of non-zero weight) observes its containing cell instead (as the observation generators
    sample it); points in a land cell, off the grid or off the levels are dropped, and counted in ``report``
    (``points_used``, ``points_dropped_offgrid``, ``points_dropped_land``, ``points_missing_value``,
    ``points_nearest_cell_near_land``). Points at cell centres reduce to selecting that cell (weight 1).

    Parameters
    ----------
    obs : point observations (dim ``obs``, ``time``, positions, ``<var>`` and ``<var>_error``)
    layout : the state layout
    like : a state Dataset giving the grid and the land
    names : the observed variables
    source : what to call ``obs`` in errors
    periodic : the (y, x) km grid is doubly periodic
    metric : the localisation metric (see :func:`observations_from_dataset`)
    report : a dict receiving the operator's name and the point counts

    Returns
    -------
    list of Observations: one per distinct time
    """
    shape = (like.sizes[layout.spatial[0]], like.sizes[layout.spatial[1]])
    G = shape[0] * shape[1]
    j, i, per, rule = point_positions(obs, like, periodic, source)
    onto = np.isfinite(j) & np.isfinite(i)
    cells, w, near = _weights(np.where(onto, j, 0.0), np.where(onto, i, 0.0), shape, per)
    coords = _point_coords(obs, metric)
    times = np.asarray(obs["time"].values) if "time" in obs.variables else np.zeros(obs.sizes["obs"])
    counts = dict.fromkeys(("used", "offgrid", "land", "missing", "near_land"), 0)
    rows = []  # per variable: (time, y, error, cells [p, 4], weights [p, 4], coords)
    for v in names:
        vals = np.asarray(obs[v].values, dtype=np.float64)
        err = np.broadcast_to(np.asarray(_error_values(obs, v, source).values, dtype=np.float64), vals.shape)
        check_values(vals, err, source, v)
        chan = _point_channels(obs, layout, like, v, source)
        land = _land(like, layout, chan)
        finite = np.isfinite(vals)
        off = finite & ~(onto & (chan >= 0))
        ok = finite & ~off
        wet, on_land = np.ones((vals.size, 4), dtype=bool), np.zeros(vals.size, dtype=bool)
        for c, mask in land.items():
            sel = ok & (chan == c)
            wet[sel], on_land[sel] = ~mask[cells[sel]], mask[near[sel]]
        fallback = ok & ~on_land & ~np.all(wet | (w == 0), axis=1)
        use = ok & ~on_land
        vc, vw = cells.copy(), w.copy()
        vc[fallback] = near[fallback, None]
        vw[fallback] = np.array([1.0, 0.0, 0.0, 0.0])
        counts["used"] += int(use.sum())
        counts["offgrid"] += int(off.sum())
        counts["land"] += int(on_land.sum())
        counts["missing"] += int((~finite).sum())
        counts["near_land"] += int(fallback.sum())
        rows.append((times[use], vals[use], err[use], vc[use] + (chan[use] * G)[:, None], vw[use],
                     None if coords is None else coords[use]))
    out = _point_groups(rows, len(layout.channels) * G, coords is not None, source)
    if report is not None:
        report.update({"observation_operator": "bilinear interpolation of points" if rule == "bilinear"
                       else "nearest cell of points (curvilinear grid)",
                       "points_used": counts["used"], "points_dropped_offgrid": counts["offgrid"],
                       "points_dropped_land": counts["land"],
                       "points_missing_value": counts["missing"], "points_nearest_cell_near_land": counts["near_land"]})
    return out


def _point_groups(rows: list[tuple], n_state: int, located: bool, source: str) -> list[Observations]:
    """One :class:`Observations` per distinct time of the stacked ``rows`` (every variable's points)."""
    t = np.concatenate([r[0] for r in rows])
    y, e = (np.concatenate([r[k] for r in rows]) for k in (1, 2))
    cells, w = (np.concatenate([r[k] for r in rows]) for k in (3, 4))
    xy = np.concatenate([r[5] for r in rows]) if located else None
    out = []
    for tv in (np.unique(t) if t.size else []):
        sel = np.flatnonzero(t == tv)
        p = sel.size
        H = sp.csr_matrix((w[sel].ravel(), (np.repeat(np.arange(p), 4), cells[sel].ravel())), shape=(p, n_state))
        H.eliminate_zeros()
        o = Observations(y[sel], e[sel], H, coords=None if xy is None else xy[sel], time=tv)
        out.append(o)
    return out
