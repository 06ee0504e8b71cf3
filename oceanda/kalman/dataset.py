"""Dataset-level Kalman analyses: state-ensemble Dataset + observation Dataset -> analysis Dataset.

The output has the common analysis layout of ``oceanda assimilate`` (``fields.analysis_dataset``):
``<var>_mean``, ``<var>_spread``, the member ensemble ``<var>`` and ``seconds_per_analysis``. All
state variables are analysed together as one flat state (``fields.to_array`` order), so linear
relations between them (e.g. ssh = f0 psi1 / g) are kept exactly by the ensemble-space update.
"""

from __future__ import annotations

import time as _time
from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from oceanda.errors import DataValidationError
from oceanda.fields import analysis_dataset, layout_of, spatial_dims, to_array
from oceanda.kalman.filters import enkf, enoi, etkf
from oceanda.kalman.letkf import letkf
from oceanda.kalman.localization import Localizer, grid_localizer
from oceanda.kalman.obsspace import observations_from_dataset
from oceanda.kalman.schur import schur_enoi_ensemble

METHODS = ("enkf", "etkf", "letkf", "enoi")


def localizer_for_dataset(ds: xr.Dataset, radius_km: float, *, taper: str = "gaspari_cohn", block: int = 1,
                          periodic: bool = False) -> Localizer:
    """A localizer on the grid of ``ds``: great-circle km from 2-D ``lat``/``lon``, else ``y``/``x`` km.

    ``periodic=True`` uses the 1-D ``y``/``x`` coordinates (km) of a doubly periodic domain (such as
    the QG testbed) with periods ``size * spacing``; lat/lon would miss neighbours across the edges.
    """
    ydim, xdim = spatial_dims(ds)
    yv = np.asarray(ds[ydim].values, dtype=np.float64) if ydim in ds.coords else np.arange(ds.sizes[ydim], dtype=float)
    xv = np.asarray(ds[xdim].values, dtype=np.float64) if xdim in ds.coords else np.arange(ds.sizes[xdim], dtype=float)
    if periodic:
        def period(v: np.ndarray) -> float | None:
            return float(len(v) * abs(v[1] - v[0])) if len(v) > 1 else None
        return grid_localizer(yv, xv, radius_km, taper=taper, period=(period(yv), period(xv)), block=block)
    if "lat" in ds.coords and "lon" in ds.coords and ds["lat"].ndim == 2:
        lat = ds["lat"].transpose(ydim, xdim).values
        lon = ds["lon"].transpose(ydim, xdim).values
        return grid_localizer(yv, xv, radius_km, taper=taper, block=block, lat=lat, lon=lon)
    if (ydim, xdim) == ("lat", "lon"):
        lat, lon = np.meshgrid(yv, xv, indexing="ij")
        return grid_localizer(yv, xv, radius_km, taper=taper, block=block, lat=lat, lon=lon)
    return grid_localizer(yv, xv, radius_km, taper=taper, block=block)


def _index_operator(o: Any) -> bool:
    """Direct observations: ``H`` is an array of integer flat state indices."""
    H = o.H
    return isinstance(H, np.ndarray) and np.issubdtype(H.dtype, np.integer)


def _members_at(ens: xr.Dataset, layout: Any, t: Any, source: str) -> np.ndarray:
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
        arr, _ = to_array(e, _as_sample(layout, "member"), dtype=np.float64)
        return arr
    arr, _ = to_array(ens, _as_sample(layout, "time"), dtype=np.float64)  # a library: its times are the members
    return arr


def _as_sample(layout: Any, dim: str) -> Any:
    from dataclasses import replace

    return replace(layout, sample_dim=dim)


def analyse_dataset(ensemble: xr.Dataset, obs: xr.Dataset, method: str = "letkf", *, loc_radius_km: float | None = None,
                    taper: str = "gaspari_cohn", inflation: float = 1.0, rtps: float = 0.0, rtpp: float = 0.0,
                    alpha: float = 1.0, members: int | None = None, variables: Sequence[str] | None = None,
                    block: int = 1, periodic: bool = False, rng: Any = 0, keep_members: bool = True,
                    source: str = "ensemble") -> xr.Dataset:
    """Analyse ``ensemble`` with every time of ``obs``; returns the common analysis layout (times = obs times).

    ``ensemble`` has a ``member`` dimension (and optionally ``time``: then the member set at each
    obs time is used), or only ``time``: a library of states used as a static ensemble (EnOI's
    natural input; background = the library mean). ``loc_radius_km`` is the Gaspari-Cohn half-width
    (zero beyond twice it) and is required for ``letkf``; with ``enoi`` it localises the static
    ensemble: for direct (index) observations -- gridded or ``y_index``/``x_index`` points -- by the
    Schur product in observation space (:func:`oceanda.kalman.schur.schur_enoi_ensemble`: members are
    the perturbed-observation updates of the static members, rescaled to the analysis variance),
    otherwise by the LETKF transform (:func:`oceanda.kalman.filters.enoi`); without a radius EnOI is
    the global ETKF transform. ``block`` only groups LETKF analyses. NaN grid points present in every
    member (land) stay NaN and are not updated.
    """
    if method not in METHODS:
        raise DataValidationError(f"unknown method '{method}'; expected one of {METHODS}")
    if method == "letkf" and not loc_radius_km:
        raise DataValidationError("method 'letkf' needs a localisation radius (loc_radius_km / --loc-radius KM)")
    sample_dim = "member" if "member" in ensemble.dims else "time"
    if sample_dim not in ensemble.dims:
        raise DataValidationError(f"{source}: no 'member' (or 'time') dimension; expected an ensemble of states")
    if variables is None:
        observed = {str(v) for v in obs.data_vars if not str(v).endswith("_error")}
        variables = [str(v) for v in ensemble.data_vars if not str(v).endswith("_error") and sample_dim in ensemble[v].dims]
        if not observed & set(variables):
            raise DataValidationError(
                f"observations hold {sorted(observed)}; expected at least one of the ensemble's variables {variables}")
    base = ensemble.isel(time=0, drop=True) if sample_dim == "member" and "time" in ensemble.dims else ensemble
    layout = layout_of(base, variables, sample_dim=sample_dim)
    g = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    loc = localizer_for_dataset(ensemble, loc_radius_km, taper=taper, block=block, periodic=periodic) if loc_radius_km else None
    obs_list = observations_from_dataset(obs, layout, ensemble, source="observations",
                                         variables=[v for v in obs.data_vars if str(v) in layout.variables])
    out, times, seconds = [], [], []
    for o in obs_list:
        X = _members_at(ensemble, layout, o.time, source)  # [N, C, Y, X]
        shape = X.shape
        E = X.reshape(shape[0], -1)
        land = ~np.isfinite(E).any(axis=0)
        E = np.where(land, 0.0, E)
        tic = _time.perf_counter()
        kw = {"inflation": inflation, "rtps": rtps, "rtpp": rtpp, "rng": g}
        if method == "etkf":
            Ea = etkf(E, o, **kw)
        elif method == "enkf":
            Ea = enkf(E, o, **kw)
        elif method == "letkf":
            Ea = letkf(E, o, localizer=loc, **kw)
        elif loc is not None and _index_operator(o):  # Schur-localised gain in observation space
            Ea = schur_enoi_ensemble(E.mean(axis=0), E, o, alpha=alpha, members=members, localizer=loc, rng=g)
        else:
            Ea = enoi(E.mean(axis=0), E, o, alpha=alpha, members=members, localizer=loc, rng=g)
        seconds.append(_time.perf_counter() - tic)
        Ea[:, land] = np.nan
        out.append(Ea.reshape(Ea.shape[0], *shape[1:]))
        times.append(o.time)
    if not out:
        raise DataValidationError("observations: no observation time to analyse")
    nmin = min(a.shape[0] for a in out)
    members_arr = np.stack([a[:nmin] for a in out])
    like = ensemble.isel(member=0, drop=True) if "member" in ensemble.dims else ensemble
    attrs = {"method": method, "mode": "kalman", "seconds_per_analysis": float(np.mean(seconds)),
             "inflation": float(inflation), "rtps": float(rtps), "rtpp": float(rtpp), "taper": taper,
             "loc_radius_km": float(loc_radius_km) if loc_radius_km else 0.0, "members": int(nmin)}
    if method == "enoi":
        attrs["enoi_alpha"] = float(alpha)
    tvals = np.asarray(times) if times[0] is not None else np.arange(len(times))
    if "time" in like.dims:
        like = like.isel(time=0, drop=True)
    ds = analysis_dataset(members_arr, layout, like, tvals, attrs=attrs, keep_members=keep_members)
    if "time" in obs.coords and "time" in ds.coords:
        ds["time"].attrs.update(obs["time"].attrs)
    return ds
