"""Superobbing: point observations (L3 along-track, profiles) -> gridded observations on the model grid.

Why: the analyses (contrastive sampler, Kalman filters, evaluation) see observations on the state grid.
Points at arbitrary latitude/longitude/time are mapped to it here, once, so every verb accepts them.

Rules (recorded in the output attributes):

- **Cell**: grid indices ``y_index``/``x_index`` when the points carry them (oceanda's own in-situ files);
  else ``y``/``x`` km on a 1-D km grid (cells bounded half-way between centres, periodic boxes wrapped);
  else ``lat``/``lon``: on a (lat, lon) grid the cell whose bounds (half-way between centres) hold the
  point, longitudes of any convention (0..360, -180..180) shifted by whole turns onto the grid's
  continuous longitude; on a curvilinear grid the nearest cell centre (``scipy.spatial.cKDTree`` on 3-D
  unit vectors), off the grid when farther than 0.75 x that cell's largest neighbour distance.
- **Level**: ``layer_index``/``level_index`` when present, else the nearest ``depth`` level (points deeper
  or shallower than the levels by more than half a level spacing are off the grid).
- **Time**: when ``times`` is given, or at least half of the points fall within the state times of ``like``
  (+- half its time step), each point goes to the nearest of those times and points farther than half a
  step are dropped (``time``). Otherwise (``like`` is a library of other years) points are binned by
  day: each goes to the nearest midnight of its calendar, which becomes the observation time.
- **Land**: cells (per level) where ``like`` is NaN at its first time; points there are dropped.
- **Value and error**: the mean of the points in a (time, level, cell); error
  ``sqrt(mean(sigma_i^2) / n + r^2)``. ``r`` (representativeness: the sub-cell variability the model
  cannot represent) is the given ``representativeness`` (absolute, the variable's units) or, by default,
  estimated per variable: the pooled variance of the points about their cell means (cells with n >= 2)
  minus their mean error variance, floored at 0 -- sub-cell signal beyond the instrument noise.

Binning is ``numpy.bincount`` on flat cell indices (pyinterp, which has along-track binning, has no
wheel on the package registry here; scipy's cKDTree does the curvilinear nearest-cell lookup).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import xarray as xr

from oceanda import fields, grid
from oceanda.errors import DataValidationError
from oceanda.observe import step_days

LEVEL_DIMS = fields.LEVEL_DIMS


def _bin_1d(v: np.ndarray, centres: np.ndarray, period: float | None) -> np.ndarray:
    """Cell index of ``v`` on a 1-D axis (-1 off the axis); ``period`` wraps (periodic boxes, global lon)."""
    flip = centres.size > 1 and centres[-1] < centres[0]
    c = centres[::-1] if flip else centres
    e = grid.cell_edges(c)
    if period is not None:
        v = e[0] + np.mod(v - e[0], period)
    idx = np.searchsorted(e, v, side="right") - 1
    idx = np.where((idx >= 0) & (idx < c.size) & np.isfinite(v), idx, -1)
    return np.where(idx >= 0, c.size - 1 - idx, -1) if flip else idx




def cell_indices(points: xr.Dataset, like: xr.Dataset, periodic: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Grid cell ``(iy, ix)`` of every point (``-1`` where off the grid); see the module's rules.

    Parameters
    ----------
    points : point observations (dim ``obs``)
    like : a gridded Dataset giving the grid
    periodic : None = automatic, as :func:`oceanda.observe.geometry`

    Returns
    -------
    tuple of int64 arrays ``[obs]``
    """
    from oceanda.observe import geometry

    ydim, xdim = fields.spatial_dims(like)
    ny, nx = like.sizes[ydim], like.sizes[xdim]
    pv = points.variables
    if "y_index" in pv and "x_index" in pv:
        iy, ix = (np.asarray(points[c].values, np.int64) for c in ("y_index", "x_index"))
        off = (iy < 0) | (iy >= ny) | (ix < 0) | (ix >= nx)
        return np.where(off, -1, iy), np.where(off, -1, ix)
    geom = geometry(like, None, periodic)
    if geom.y is not None and "y" in pv and "x" in pv:
        per = [len(c) * grid.spacing(c) if p else None for c, p in ((geom.y, geom.periodic[0]), (geom.x, geom.periodic[1]))]
        return (_bin_1d(np.asarray(points["y"].values, float), geom.y, per[0]),
                _bin_1d(np.asarray(points["x"].values, float), geom.x, per[1]))
    if "lat" not in pv or "lon" not in pv or geom.lat is None:
        raise DataValidationError("point observations need 'lat'/'lon' (or 'y'/'x' km, or 'y_index'/'x_index') "
                                  "coordinates and a grid with latitude/longitude; expected the canonical point layout")
    plat, plon = np.asarray(points["lat"].values, float), np.asarray(points["lon"].values, float)
    if (ydim, xdim) == ("lat", "lon"):
        lon1 = np.asarray(like["lon"].values, float)
        e0 = grid.cell_edges(lon1)[0]
        return (_bin_1d(plat, np.asarray(like["lat"].values, float), None),
                _bin_1d(grid.shift_lon(plon, e0), lon1, 360.0 if geom.periodic[1] else None))
    return grid.nearest_cells(geom.lat, geom.lon, plat, plon)


def _level_indices(points: xr.Dataset, like: xr.Dataset, var: str) -> tuple[str | None, np.ndarray]:
    """(level dim of ``var`` or None, level index per point, -1 when off the levels)."""
    lev = next((d for d in LEVEL_DIMS if d in like[var].dims), None)
    n = points.sizes["obs"]
    if lev is None:
        return None, np.zeros(n, np.int64)
    nl = like.sizes[lev]
    for name in ("layer_index", "level_index"):
        if name in points.variables:
            li = np.asarray(points[name].values, np.int64)
            return lev, np.where((li >= 0) & (li < nl), li, -1)
    key = "depth" if "depth" in points.variables else (lev if lev in points.variables else None)
    if key is None or lev not in like.coords:
        raise DataValidationError(f"point observations of '{var}' have no 'depth' or 'layer_index'; "
                                  f"expected one to place them on the state's {lev} levels")
    levels = np.asarray(like[lev].values, float)
    return lev, _bin_1d(np.asarray(points[key].values, float), levels, None)


def _time_targets(ptimes: np.ndarray, like: xr.Dataset, times: Any) -> tuple[np.ndarray, np.ndarray, str]:
    """(time index per point (-1 dropped), the target time values, the rule used)."""
    pd = grid.time_days(ptimes)
    target = None if times is None else np.asarray(times)
    rule = "nearest of the given times"
    if target is None and "time" in like.coords and like["time"].size:
        ld = grid.time_days(like["time"].values)
        half = 0.5 * step_days(like["time"].values)
        if np.mean((pd >= ld.min() - half) & (pd <= ld.max() + half)) >= 0.5:
            target, rule = np.asarray(like["time"].values), "nearest state time"
    if target is None:
        day = np.floor(pd + 0.5)
        uniq, idx = np.unique(day, return_inverse=True)
        return idx.astype(np.int64), _days_to_times(uniq, ptimes), "nearest day (midnight)"
    td = grid.time_days(target)
    order = np.argsort(td)
    tds = td[order]
    k = np.clip(np.searchsorted(tds, pd), 1, max(tds.size - 1, 1))
    if tds.size == 1:
        k = np.zeros(pd.size, np.int64)
    else:
        k = np.where(np.abs(pd - tds[k - 1]) <= np.abs(pd - tds[k]), k - 1, k)
    half = 0.5 * step_days(target)
    idx = np.where(np.abs(pd - tds[k]) <= half + 1e-9, order[k], -1)
    return idx.astype(np.int64), target, rule


def _days_to_times(days: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 back to time values of the kind of ``template`` (datetime64, cftime, numbers)."""
    t = np.asarray(template)
    if np.issubdtype(t.dtype, np.datetime64):
        return np.datetime64("1970-01-01", "ns") + np.rint(days * 86400e9).astype("timedelta64[ns]")
    if t.dtype == object and t.size and hasattr(t.flat[0], "calendar"):
        import cftime

        return np.asarray(cftime.num2date(days, "days since 1970-01-01", calendar=t.flat[0].calendar), dtype=object)
    return days


def _representativeness(flat: np.ndarray, v: np.ndarray, e2: np.ndarray, size: int) -> float:
    """Pooled sub-cell standard deviation beyond the points' own errors (0 without cells of >= 2 points)."""
    n = np.bincount(flat, minlength=size)
    mean = np.bincount(flat, weights=v, minlength=size) / np.maximum(n, 1)
    multi = n[flat] >= 2
    dof = int(np.sum(n[n >= 2] - 1))
    if dof == 0:
        return 0.0
    within = float(np.sum((v[multi] - mean[flat[multi]]) ** 2)) / dof
    return float(np.sqrt(max(0.0, within - float(np.mean(e2[multi])))))


def _point_errors(points: xr.Dataset, var: str) -> np.ndarray:
    name = f"{var}_error"
    if name not in points:
        raise DataValidationError(f"point observations lack '{name}'; expected the error standard deviation of '{var}'")
    e = np.broadcast_to(np.asarray(points[name].values, np.float64), (points.sizes["obs"],))
    return np.array(e)


def _land(like: xr.Dataset, var: str, lev: str | None) -> np.ndarray:
    """Boolean ``[level, ny, nx]``: True where ``like[var]`` is NaN at its first time (land, per level)."""
    da = like[var]
    if "time" in da.dims:
        da = da.isel(time=0)
    if "member" in da.dims:
        da = da.isel(member=0)
    sp = fields.spatial_dims(da)
    da = da.transpose(lev, *sp) if lev else da.transpose(*sp).expand_dims("_level", 0)
    return ~np.isfinite(np.asarray(da.values, dtype=np.float64))


def _bin_variable(points: xr.Dataset, like: xr.Dataset, var: str, cells: tuple[np.ndarray, np.ndarray],
                  tidx: np.ndarray, ntime: int, representativeness: float | None) -> dict[str, Any]:
    """Cell means, errors and drop counts of one variable, on ``[ntime, level, ny, nx]``."""
    iy, ix = cells
    lev, li = _level_indices(points, like, var)
    land = _land(like, var, lev)
    nl, ny, nx = land.shape
    v = np.asarray(points[var].values, np.float64)
    e2 = _point_errors(points, var) ** 2
    finite = np.isfinite(v)
    off = finite & ((iy < 0) | (ix < 0) | (li < 0))
    on_land = finite & ~off & land[np.maximum(li, 0), np.maximum(iy, 0), np.maximum(ix, 0)]
    late = finite & ~off & ~on_land & (tidx < 0)
    use = finite & ~off & ~on_land & ~late
    size = ntime * nl * ny * nx
    flat = ((tidx[use] * nl + li[use]) * ny + iy[use]) * nx + ix[use]
    r = _representativeness(flat, v[use], e2[use], size) if representativeness is None else float(representativeness)
    n = np.bincount(flat, minlength=size)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(flat, weights=v[use], minlength=size) / n
        err = np.sqrt(np.bincount(flat, weights=e2[use], minlength=size) / n**2 + r**2)
    shape = (ntime, nl, ny, nx)
    return {"lev": lev, "mean": mean.reshape(shape), "error": err.reshape(shape), "count": n.reshape(shape),
            "r": r, "used": int(use.sum()), "offgrid": int(off.sum()), "land": int(on_land.sum()),
            "time": int(late.sum()), "missing": int((~finite).sum())}


def superob(points: xr.Dataset, like: xr.Dataset, *, representativeness: float | None = None,
            times: Sequence[Any] | None = None, variables: Sequence[str] | None = None,
            periodic: bool | None = None) -> xr.Dataset:
    """Point observations -> gridded observations on ``like``'s grid: cell means with σ/√n + representativeness errors.

    Parameters
    ----------
    points : point observations (dim ``obs``, coords ``time`` and ``lat``/``lon`` (or ``y``/``x`` km, or grid
        indices), optional ``depth``/``layer_index``), one variable per observed state variable, ``<var>_error``
    like : gridded states giving the grid, the levels, the land and (if they cover the points) the times
    representativeness : r in the variable's units (default: estimated, see the module docstring; 0 = none)
    times : the observation times to map onto (default: the module's time rule)
    variables : observed variables (default: every point variable that is a state variable)
    periodic : None = automatic (as :func:`oceanda.observe.geometry`)

    Returns
    -------
    xarray.Dataset: ``<var>`` and ``<var>_error`` on ``(time, [level,] row, column)``, NaN where no point fell;
    attributes ``superob_points_used``, ``superob_points_dropped_offgrid``, ``_land``, ``_time``, the rules
    """
    if "obs" not in points.dims:
        raise DataValidationError(f"superob: observations with dims {tuple(points.dims)}; expected point observations along 'obs'")
    names = list(variables) if variables is not None else [
        str(v) for v in points.data_vars if not str(v).endswith("_error") and str(v) in like.data_vars]
    missing = [v for v in names if v not in like.data_vars or v not in points.data_vars]
    if not names or missing:
        raise DataValidationError(f"superob: point variables {missing or sorted(map(str, points.data_vars))} are not "
                                  f"state variables; expected some of {sorted(map(str, like.data_vars))}")
    points = points.load()
    cells = cell_indices(points, like, periodic)
    tidx, target, rule = _time_targets(np.asarray(points["time"].values), like, times)
    binned = {v: _bin_variable(points, like, v, cells, tidx, len(target), representativeness) for v in names}
    keep = np.flatnonzero(np.any([b["count"].sum(axis=(1, 2, 3)) > 0 for b in binned.values()], axis=0))
    return _gridded(points, like, binned, np.asarray(target)[keep], keep, rule)


def _span(like: xr.Dataset, c: str) -> str:
    return f"{float(like[c].min()):g}..{float(like[c].max()):g}" if c in like.coords else "?"


def _gridded(points: xr.Dataset, like: xr.Dataset, binned: dict[str, dict], times: np.ndarray, keep: np.ndarray,
             rule: str) -> xr.Dataset:
    """The superobbed Dataset (grid coordinates of ``like``, counts and rules in the attributes)."""
    sp = fields.spatial_dims(like)
    coords: dict[str, Any] = {"time": ("time", times, {"long_name": "time", "standard_name": "time"})}
    for c in (*sp, "y", "x", "lat", "lon"):
        if c in like.coords and c not in coords and set(like[c].dims) <= set(sp):
            coords[c] = like[c]
    data: dict[str, Any] = {}
    for v, b in binned.items():
        attrs = {k: a for k, a in points[v].attrs.items() if k in ("units", "long_name", "standard_name")}
        dims = ("time", b["lev"], *sp) if b["lev"] else ("time", *sp)
        mean, err = b["mean"][keep], b["error"][keep]
        if not b["lev"]:
            mean, err = mean[:, 0], err[:, 0]
        elif b["lev"] in like.coords:
            coords[b["lev"]] = like[b["lev"]]
        data[v] = (dims, mean.astype(np.float32), attrs)
        data[f"{v}_error"] = (dims, err.astype(np.float32), {
            "units": attrs.get("units", "1"), "long_name": f"superobservation error standard deviation of {v}"})
    total = {k: sum(b[k] for b in binned.values()) for k in ("used", "offgrid", "land", "time", "missing")}
    if total["used"] == 0:
        source = " + ".join(points.encoding.get("oceanda_sources", [])) or "point observations"
        raise DataValidationError(
            f"{source}: none of the points lies on the state grid ({total['offgrid']} off the grid, {total['land']} on "
            f"land, {total['time']} outside the times, {total['missing']} missing values); expected points inside "
            f"lat {_span(like, 'lat')}, lon {_span(like, 'lon')}")
    out = xr.Dataset(data, coords=coords)
    out.attrs.update({
        "operator": "superob", "source_operator": str(points.attrs.get("operator", "points")),
        "observed_variable": " ".join(binned), "superob_points_used": total["used"],
        "superob_points_dropped_offgrid": total["offgrid"], "superob_points_dropped_land": total["land"],
        "superob_points_dropped_time": total["time"], "superob_points_missing_value": total["missing"],
        "superob_time_rule": rule, "superob_error_model": "sqrt(mean(sigma_i^2) / n + r^2)",
        **{f"superob_representativeness_{v}": b["r"] for v, b in binned.items()},
        "obs_error_std": float(np.nanmean([np.nanmean(b["error"]) for b in binned.values()])),
    })
    return out


def superobbable(obs: xr.Dataset, like: Any) -> bool:
    """Point observations (dim ``obs``) of state variables, and a gridded Dataset ``like`` to put them on."""
    if not isinstance(like, xr.Dataset) or "obs" not in obs.dims:
        return False
    gridded = any(all(d in like.dims for d in pair) for pair in fields.SPATIAL_PAIRS)
    names = [v for v in obs.data_vars if not str(v).endswith("_error")]
    return gridded and bool(names) and all(v in like.data_vars for v in names)


def to_grid(obs: xr.Dataset, like: Any, *, representativeness: float | None = None) -> xr.Dataset:
    """``obs`` superobbed onto ``like``'s grid when :func:`superobbable`, else as it is (gridded observations).

    What the contrastive sampler and training get from point files (they need gridded inputs).
    """
    if not superobbable(obs, like):
        return obs
    out = superob(obs, like, representativeness=representativeness)
    out.encoding["oceanda_sources"] = obs.encoding.get("oceanda_sources", [])
    return out


def points_at_times(obs: xr.Dataset, like: Any) -> tuple[xr.Dataset | None, dict[str, Any]]:
    """Raw positioned points moved to their analysis times (the superob time rule; late ones dropped), or None.

    What the Kalman filters get from point files: the points themselves (a bilinear operator), at the times
    superobbing would give them.
    """
    if not (superobbable(obs, like) and "y_index" not in obs.variables and "time" in obs.variables):
        return None, {}
    tidx, target, rule = _time_targets(np.asarray(obs["time"].values), like, None)
    keep = tidx >= 0
    points = obs.isel(obs=np.flatnonzero(keep))
    points = points.assign_coords(time=("obs", np.asarray(target)[tidx[keep]], dict(obs["time"].attrs)))
    return points, {"points_time_rule": rule, "points_dropped_time": int((~keep).sum())}
