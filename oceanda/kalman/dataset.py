"""Dataset-level Kalman analyses: state-ensemble Dataset + observation Dataset -> analysis Dataset.

Why a layer of its own: the array-level methods know flat ensembles; this one reads the ensemble
(or library) Dataset into that layout, builds the localizer on its grid (:mod:`oceanda.grid`) and
the observation operators (:mod:`oceanda.kalman.obsspace`), runs one configured method
(:func:`~oceanda.kalman.methods.make_filter`) per observation time and writes the common analysis
layout of ``oceanda assimilate`` (``fields.analysis_dataset``): ``<var>_mean``, ``<var>_spread``,
the member ensemble ``<var>`` and ``seconds_per_analysis``. All state variables are analysed
together as one flat state (``fields.to_array`` order), so linear relations between them (e.g.
ssh = f0 psi1 / g) are kept exactly by the ensemble-space update.
"""

from __future__ import annotations

import time as _time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import xarray as xr

from oceanda import grid
from oceanda.errors import DataValidationError
from oceanda.fields import FieldLayout, analysis_dataset, layout_of, to_array
from oceanda.kalman._core import as_rng
from oceanda.kalman.localization import DEFAULT_TAPER, Localizer, grid_localizer
from oceanda.kalman.methods import METHODS, Filter, make_filter
from oceanda.kalman.obsspace import Observations, observations_from_dataset


def localizer_for_dataset(ds: xr.Dataset, radius_km: float, *, taper: str = DEFAULT_TAPER, block: int = 1,
                          periodic: bool = False) -> Localizer:
    """A localizer on the grid of ``ds``: great-circle km from ``lat``/``lon``, else ``y``/``x`` km.

    ``periodic=True`` uses the 1-D ``y``/``x`` coordinates (km) of a doubly periodic domain (such as
    the QG testbed) with periods ``size * spacing``; lat/lon would miss neighbours across the edges.

    Parameters
    ----------
    ds : a gridded Dataset (its spatial dims and coordinates are used)
    radius_km : the taper's half-width, in the coordinates' units (km)
    taper : taper name
    block : side of the tiles of points sharing one local analysis
    periodic : wrap distances at the grid's periods

    Returns
    -------
    Localizer
    """
    y, x = grid.coordinates(ds)
    if periodic:
        return grid_localizer(y, x, radius_km, taper=taper, period=grid.periods(ds), block=block)
    latlon = grid.lat_lon(ds)
    if latlon is not None:
        return grid_localizer(y, x, radius_km, taper=taper, block=block, lat=latlon[0], lon=latlon[1])
    return grid_localizer(y, x, radius_km, taper=taper, block=block)


def _members_at(ens: xr.Dataset, layout: FieldLayout, t: Any, source: str) -> np.ndarray:
    """Ensemble ``[N, C, Y, X]`` valid at obs time ``t`` (the one background if it has no time)."""
    if "member" in ens.dims:
        e = ens
        if "time" in ens.dims:
            if ens.sizes["time"] == 1:
                e = ens.isel(time=0)
            else:
                match = np.flatnonzero(np.asarray(ens["time"].values) == t) if t is not None else []
                if len(match) != 1:
                    raise DataValidationError(f"{source}: no ensemble at observation time {t}; expected one ensemble time per obs time or a single one")
                e = ens.isel(time=int(match[0]))
        arr, _ = to_array(e, replace(layout, sample_dim="member"), dtype=np.float64)
        return arr
    arr, _ = to_array(ens, replace(layout, sample_dim="time"), dtype=np.float64)  # a library: its times are the members
    return arr


def _state_variables(ensemble: xr.Dataset, obs: xr.Dataset, sample_dim: str) -> list[str]:
    """Every ensemble variable with the sample dim; at least one of them must be observed."""
    observed = {str(v) for v in obs.data_vars if not str(v).endswith("_error")}
    variables = [str(v) for v in ensemble.data_vars if not str(v).endswith("_error") and sample_dim in ensemble[v].dims]
    if not observed & set(variables):
        raise DataValidationError(
            f"observations hold {sorted(observed)}; expected at least one of the ensemble's variables {variables}")
    return variables


def _attrs(f: Filter, seconds: list[float], members: int, loc_radius_km: float | None, taper: str | None) -> dict[str, Any]:
    radius = getattr(f, "radius", None) or loc_radius_km
    attrs = {"method": f.name, "mode": "kalman", "seconds_per_analysis": float(np.mean(seconds)),
             "inflation": float(getattr(f, "inflation", 1.0)), "rtps": float(getattr(f, "rtps", 0.0)),
             "rtpp": float(getattr(f, "rtpp", 0.0)), "taper": getattr(f, "taper", taper or DEFAULT_TAPER),
             "loc_radius_km": float(radius) if radius else 0.0, "members": int(members)}
    if f.name == "enoi":
        attrs["enoi_alpha"] = float(f.alpha)
    return attrs


def _filter(method: str | Filter, loc_radius_km: float | None, settings: dict[str, Any]) -> Filter:
    name = method.name if isinstance(method, Filter) else method
    if name not in METHODS:
        raise DataValidationError(f"unknown method '{method}'; expected one of {tuple(METHODS)}")
    if name == "letkf" and not (loc_radius_km or getattr(method, "radius", None)):
        raise DataValidationError("method 'letkf' needs a localisation radius (loc_radius_km / --loc-radius KM)")
    return make_filter(method, strict=False, radius=loc_radius_km, **settings)


def _analyse_times(ensemble: xr.Dataset, layout: FieldLayout, obs_list: list[Observations], f: Filter, loc: Any,
                   rng: np.random.Generator, source: str) -> tuple[list[np.ndarray], list[Any], list[float]]:
    """One analysis per observation time: ensembles ``[N, C, Y, X]``, times, seconds (land stays NaN)."""
    out, times, seconds = [], [], []
    for o in obs_list:
        X = _members_at(ensemble, layout, o.time, source)  # [N, C, Y, X]
        E = X.reshape(X.shape[0], -1)
        land = ~np.isfinite(E).any(axis=0)
        E = np.where(land, 0.0, E)
        tic = _time.perf_counter()
        Ea = f.assimilate(E, o, rng, loc)
        seconds.append(_time.perf_counter() - tic)
        Ea[:, land] = np.nan
        out.append(Ea.reshape(Ea.shape[0], *X.shape[1:]))
        times.append(o.time)
    if not out:
        raise DataValidationError("observations: no observation time to analyse")
    return out, times, seconds


def analyse_dataset(ensemble: xr.Dataset, obs: xr.Dataset, method: str | Filter = "letkf", *,
                    loc_radius_km: float | None = None, taper: str | None = None, inflation: float | None = None,
                    rtps: float | None = None, rtpp: float | None = None, alpha: float | None = None,
                    members: int | None = None, variables: Sequence[str] | None = None, block: int | None = None,
                    periodic: bool = False, rng: Any = 0, keep_members: bool = True,
                    source: str = "ensemble") -> xr.Dataset:
    """Analyse ``ensemble`` with every time of ``obs``; returns the common analysis layout (times = obs times).

    ``ensemble`` has a ``member`` dimension (and optionally ``time``: then the member set at each
    obs time is used), or only ``time``: a library of states used as a static ensemble (EnOI's
    natural input; background = the library mean). ``loc_radius_km`` is the Gaspari-Cohn half-width
    (zero beyond twice it), required for ``letkf``; with ``enoi`` it localises the static ensemble
    (:class:`~oceanda.kalman.methods.EnOI`, form ``auto``: the Schur product in observation space for
    direct -- gridded or ``y_index``/``x_index`` -- observations, else the LETKF transform); without a
    radius EnOI is the global ETKF transform. NaN grid points present in every member (land) stay
    NaN and are not updated.

    Parameters
    ----------
    ensemble : forecast ensemble (dim ``member``) or library of states (dim ``time``)
    obs : gridded or point observations with ``<var>_error``
    method : a name of :data:`~oceanda.kalman.methods.METHODS` or a configured :class:`Filter`
    loc_radius_km, taper, inflation, rtps, rtpp, alpha, members, block : the method's settings
        (None = the method's default, or the given filter's value; settings a method lacks are ignored)
    variables : state variables analysed (default: every ensemble variable)
    periodic : doubly periodic grid (distances wrap)
    rng : random generator or seed
    keep_members : write the member ensemble too
    source : what to call the ensemble in errors

    Returns
    -------
    xarray.Dataset in the analysis layout, one time per observation time
    """
    f = _filter(method, loc_radius_km, {"taper": taper, "inflation": inflation, "rtps": rtps, "rtpp": rtpp,
                                        "alpha": alpha, "members": members, "block": block})
    sample_dim = "member" if "member" in ensemble.dims else "time"
    if sample_dim not in ensemble.dims:
        raise DataValidationError(f"{source}: no 'member' (or 'time') dimension; expected an ensemble of states")
    variables = _state_variables(ensemble, obs, sample_dim) if variables is None else variables
    base = ensemble.isel(time=0, drop=True) if sample_dim == "member" and "time" in ensemble.dims else ensemble
    layout = layout_of(base, variables, sample_dim=sample_dim)
    g = as_rng(rng)
    radius = getattr(f, "radius", None)
    loc = localizer_for_dataset(ensemble, radius, taper=f.taper, block=f.block, periodic=periodic) if radius else None
    obs_list = observations_from_dataset(obs, layout, ensemble, source="observations",
                                         variables=[v for v in obs.data_vars if str(v) in layout.variables])
    out, times, seconds = _analyse_times(ensemble, layout, obs_list, f, loc, g, source)
    nmin = min(a.shape[0] for a in out)
    like = ensemble.isel(member=0, drop=True) if "member" in ensemble.dims else ensemble
    tvals = np.asarray(times) if times[0] is not None else np.arange(len(times))
    if "time" in like.dims:
        like = like.isel(time=0, drop=True)
    ds = analysis_dataset(np.stack([a[:nmin] for a in out]), layout, like, tvals,
                          attrs=_attrs(f, seconds, nmin, loc_radius_km, taper), keep_members=keep_members)
    if "time" in obs.coords and "time" in ds.coords:
        ds["time"].attrs.update(obs["time"].attrs)
    return ds
