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
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import xarray as xr

from oceanda import grid, io
from oceanda.errors import ConfigurationError, DataValidationError
from oceanda.fields import FieldLayout, analysis_dataset, layout_of, moments_dataset, spatial_dims, to_array
from oceanda.kalman._core import as_rng
from oceanda.kalman.localization import DEFAULT_TAPER, Localizer, block_groups, estimate_radius
from oceanda.kalman.methods import METHODS, Filter, make_filter
from oceanda.kalman.obsspace import Observations, observations_from_dataset


def grid_metric(ds: xr.Dataset, periodic: bool = False) -> tuple[np.ndarray, str, list[float] | None]:
    """How far apart the points of the grid of ``ds`` are: ``(coords [G, 2], metric, period)``.

    The one rule of every localiser (this module's and the hybrid's): a ``(lat, lon)`` grid, or a
    ``(y, x)`` grid with 2-D ``lat``/``lon`` that is not declared periodic (curvilinear), is measured
    in great-circle km (which wraps in longitude by itself); a ``(y, x)`` grid in Euclidean units of
    its 1-D ``y``/``x`` (km), wrapped at ``size * spacing`` when ``periodic`` (a doubly periodic box
    such as the QG testbed: its lat/lon would miss neighbours across the edges). ``periodic`` is
    ignored on ``(lat, lon)`` grids.

    Parameters
    ----------
    ds : a gridded Dataset (its spatial dims and coordinates are used)
    periodic : the (y, x) grid is doubly periodic

    Returns
    -------
    ``(coords, metric, period)``: points in C order of the spatial dims, ``'great_circle'`` (coords
    (lat, lon) in degrees), ``'periodic'`` or ``'euclidean'``, and the periods (or None)
    """
    latlon = grid.lat_lon(ds)
    if latlon is not None and (spatial_dims(ds) == ("lat", "lon") or not periodic):
        return np.c_[np.asarray(latlon[0], float).ravel(), np.asarray(latlon[1], float).ravel()], "great_circle", None
    pts, per = grid.points(ds, periodic)
    return pts, ("periodic" if periodic else "euclidean"), (list(per) if per is not None else None)


def localizer_for_dataset(ds: xr.Dataset, radius_km: float, *, taper: str = DEFAULT_TAPER, block: int = 1,
                          periodic: bool = False) -> Localizer:
    """A localizer on the grid of ``ds``, distances by :func:`grid_metric` (great-circle or y/x km).

    Parameters
    ----------
    ds : a gridded Dataset (its spatial dims and coordinates are used)
    radius_km : the taper's half-width, in km (the y/x units on projected grids)
    taper : taper name
    block : side of the tiles of points sharing one local analysis
    periodic : the (y, x) grid is doubly periodic (distances wrap at its periods)

    Returns
    -------
    Localizer
    """
    coords, metric, period = grid_metric(ds, periodic)
    groups = None if block in (1, (1, 1)) else block_groups(grid.shape(ds), block)
    # the grid's shape lets the LETKF compute its transforms on a coarser grid (weight_spacing='auto')
    return Localizer(coords, radius_km, taper, metric, period=period, groups=groups, grid_shape=grid.shape(ds))


def _members_at(ens: xr.Dataset, layout: FieldLayout, t: Any, source: str) -> np.ndarray:
    """Ensemble ``[N, C, Y, X]`` valid at obs time ``t`` (the one background if it has no time)."""
    if "member" in ens.dims:
        e = ens
        if "time" in ens.dims:
            if ens.sizes["time"] == 1:
                e = ens.isel(time=0)
            else:
                match = []
                if t is not None:
                    _same_calendar(ens["time"].values, t, source)
                    match = np.flatnonzero(grid.time_days(ens["time"].values) == grid.time_days(t))
                if len(match) != 1:
                    raise DataValidationError(f"{source}: no ensemble at observation time {t}; expected one ensemble time per obs time or a single one")
                e = ens.isel(time=int(match[0]))
        arr, _ = to_array(e, replace(layout, sample_dim="member"), dtype=np.float64, source=source)
        return arr
    # a library: its times are the members
    arr, _ = to_array(ens, replace(layout, sample_dim="time"), dtype=np.float64, source=source)
    return arr


def _same_calendar(times: Any, t: Any, source: str) -> None:
    """Refuse matching an observation time against ensemble times of another calendar (days differ)."""
    a, b = grid.calendar_of(times), grid.calendar_of(t)
    if a != b:
        raise DataValidationError(f"{source}: ensemble times in the {a or 'no'} calendar, observation times in the "
                                  f"{b or 'no'} calendar; expected the same calendar")


def _check_members(ensemble: xr.Dataset, sample_dim: str, source: str) -> None:
    """Refuse an ensemble of fewer than 2 members (or a library of fewer than 2 states): no covariance."""
    n = int(ensemble.sizes[sample_dim])
    if n < 2:
        what = "member" if sample_dim == "member" else "state (time) in the library"
        raise DataValidationError(f"{source}: {n} {what} along '{sample_dim}'; expected at least 2 members "
                                  "(an ensemble covariance needs 2 or more)")


def _state_variables(ensemble: xr.Dataset, obs: xr.Dataset, sample_dim: str) -> list[str]:
    """Every ensemble variable with the sample dim; at least one of them must be observed."""
    observed = {str(v) for v in obs.data_vars if not str(v).endswith("_error")}
    variables = [str(v) for v in ensemble.data_vars if not str(v).endswith("_error") and sample_dim in ensemble[v].dims]
    if not observed & set(variables):
        raise DataValidationError(
            f"observations hold {sorted(observed)}; expected at least one of the ensemble's variables {variables}")
    return variables


def _attrs(f: Filter, seconds: list[float], members: int, loc_radius_km: float | None, taper: str | None,
           radius_source: str) -> dict[str, Any]:
    radius = getattr(f, "radius", None)
    attrs = {"title": f"oceanda ensemble Kalman analysis ({f.name})",
             "method": f.name, "mode": "kalman", "seconds_per_analysis": float(np.mean(seconds)),
             "inflation": float(getattr(f, "inflation", 1.0)), "rtps": float(getattr(f, "rtps", 0.0)),
             "rtpp": float(getattr(f, "rtpp", 0.0)), "taper": getattr(f, "taper", taper or DEFAULT_TAPER),
             "loc_radius_km": float(radius) if radius else 0.0, "members": int(members),
             "localization_radius_km": float(radius) if radius else 0.0, "localization_radius_source": radius_source}
    if f.name == "enoi":
        attrs["enoi_alpha"] = float(f.alpha)
    return attrs


#: Methods that localise (a radius is estimated for them when none is given).
LOCALISED = ("enoi", "letkf")


def _filter(method: str | Filter, loc_radius_km: float | None, settings: dict[str, Any]) -> tuple[Filter, str]:
    """The configured method and where its radius comes from (``'given'``, ``'none ...'`` or ``''``: to estimate).

    ``loc_radius_km=inf`` asks for no localisation (EnOI only: an unlocalised LETKF is the ETKF).
    """
    name = method.name if isinstance(method, Filter) else method
    if name not in METHODS:
        raise DataValidationError(f"unknown method '{method}'; expected one of {tuple(METHODS)}")
    unlocalised = loc_radius_km is not None and np.isposinf(loc_radius_km)
    if loc_radius_km is not None and not unlocalised and not loc_radius_km > 0:
        raise DataValidationError(f"loc_radius_km / --loc-radius {loc_radius_km}; expected a radius > 0 km, "
                                  "or inf for no localisation")
    if unlocalised and name == "letkf":
        raise DataValidationError("method 'letkf' with --loc-radius inf: an unlocalised LETKF is the ETKF; "
                                  "use --method etkf, or give a finite radius (or none: it is then estimated)")
    pending = name in LOCALISED and loc_radius_km is None and getattr(method, "radius", None) is None
    # a LETKF cannot be built without a radius: 1 km stands in until the estimate replaces it
    radius = 1.0 if pending and name == "letkf" else (None if unlocalised else loc_radius_km)
    f = make_filter(method, strict=False, radius=radius, **settings)
    if pending:
        return f, ""
    if name not in LOCALISED:
        return f, f"none: method '{name}' is not localised"
    if unlocalised:
        return (f.replace(radius=None) if f.radius is not None else f), "none: unlocalised, as asked (loc_radius_km=inf)"
    return f, "given"


def _estimate_radius(ensemble: xr.Dataset, layout: FieldLayout, f: Filter, observed: Sequence[str], t: Any,
                     periodic: bool, source: str) -> tuple[float, str]:
    """A radius for ``f`` from the ensemble's correlation length (:func:`~oceanda.kalman.localization.estimate_radius`)."""
    E, land, shape = _members_flat(ensemble, layout, t, source, quiet=True)  # the analysis warns, not this
    X = np.where(land, np.nan, E).reshape(-1, *shape)  # [N, C, Y, X], land NaN as before
    n = X.shape[0] if getattr(f, "members", None) is None else min(int(f.members), X.shape[0])
    sub = X[np.unique(np.linspace(0, X.shape[0] - 1, min(X.shape[0], 1000)).astype(np.int64))]  # bounded cost
    chans = [i for i, (v, _) in enumerate(layout.channels) if v in observed] or list(range(len(layout.channels)))
    coords, metric, period = grid_metric(ensemble, periodic)
    anomalies = [sub[:, c].reshape(len(sub), -1) for c in chans]
    try:
        radius, efold = estimate_radius(anomalies, coords, metric, period, rng=0, members=n)
    except ValueError as exc:
        raise DataValidationError(f"{source}: cannot estimate a localisation radius ({exc}); "
                                  "give one with loc_radius_km / --loc-radius KM") from exc
    names = ", ".join(dict.fromkeys(layout.channels[c][0] for c in chans))
    factor = radius / efold
    size = _domain_km(coords, metric, period)
    wide = (f"; the taper (zero beyond {2 * radius:.4g} km) spans the whole {size:.4g} km domain: effectively "
            "unlocalised -- long correlations (a seasonal cycle or trend in the ensemble?) or give --loc-radius"
            if 2 * radius > size else "")
    return radius, (f"estimated from the ensemble's spatial correlation: the mean anomaly correlation of {names} "
                    f"falls to 1/e at {efold:.4g} km; radius = {factor:.3g} x that (sqrt({n} members) / 8, "
                    f"clipped to [1, 3]; oceanda.kalman.localization.estimate_radius){wide}")


def _domain_km(coords: np.ndarray, metric: str, period: list[float] | None) -> float:
    """The largest distance between two grid points (half the periods on a periodic box), in km."""
    if period is not None:
        return float(np.hypot(*period) / 2)
    if metric == "great_circle":
        corners = coords[[0, -1]]
        far = grid.great_circle_km(corners[0, 0], corners[0, 1], coords[:, 0], coords[:, 1])
        back = grid.great_circle_km(corners[1, 0], corners[1, 1], coords[:, 0], coords[:, 1])
        return float(max(np.nanmax(far), np.nanmax(back)))
    return float(np.hypot(np.ptp(coords[:, 0]), np.ptp(coords[:, 1])))


def _clean_members(E: np.ndarray, land: np.ndarray, source: str, what: str, warned: set | None = None,
                   quiet: bool = False) -> np.ndarray:
    """Members ``E [N, n]`` without those NaN outside the land (cells NaN in every member), with a warning.

    Why: one NaN in one member enters every covariance and blanks the whole analysis; the other
    members still give one. Fewer than two clean members cannot, and are refused.
    """
    bad = (~np.isfinite(E) & ~land[None]).any(axis=1)
    if not bad.any():
        return E
    idx = np.flatnonzero(bad)
    head = ", ".join(str(int(i)) for i in idx[:8]) + (f", ... {idx.size - 8} more" if idx.size > 8 else "")
    msg = (f"{source}: {idx.size} of {len(E)} members ({what} indices {head}) are NaN where other members have "
           "values (outside the land)")
    if len(E) - idx.size < 2:
        raise DataValidationError(f"{msg}; expected NaN only on land (the same cells in every member) and at least "
                                  "2 members without other NaN")
    if not quiet and (warned is None or tuple(idx) not in warned):
        warnings.warn(f"{msg}: dropped, {len(E) - idx.size} members remain", UserWarning, stacklevel=3)
        if warned is not None:
            warned.add(tuple(idx))
    return E[~bad]


def _members_flat(ensemble: xr.Dataset, layout: FieldLayout, t: Any, source: str, warned: set | None = None,
                  quiet: bool = False) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """Usable members at ``t`` as ``(E [N, n] with land 0, land [n], state shape)``."""
    X = _members_at(ensemble, layout, t, source)  # [N, C, Y, X]
    E = X.reshape(X.shape[0], -1)
    land = ~np.isfinite(E).any(axis=0)
    when = np.datetime_as_string(t, unit="s") if isinstance(t, np.datetime64) else t
    at = f" at time {when}" if t is not None and "member" in ensemble.dims and "time" in ensemble.dims else ""
    if land.all():
        raise DataValidationError(f"{source}{at}: no finite value in any member; expected states with values")
    what = "member" if "member" in ensemble.dims else "time"
    E = _clean_members(E, land, f"{source}{at}", what, warned, quiet)
    return np.where(land, 0.0, E), land, X.shape[1:]


def _analyses(ensemble: xr.Dataset, layout: FieldLayout, obs_list: list[Observations], f: Filter, loc: Any,
              rng: np.random.Generator, source: str) -> Iterator[tuple[np.ndarray, Any, float]]:
    """One analysis per observation time, one at a time: ``(members [N, C, Y, X], time, seconds)``, land NaN.

    Why a generator: a caller that writes each time as it comes (``out=``) holds one time's ensemble,
    never the whole record; the times are analysed in order, so the random stream is the same.
    """
    warned: set = set()
    # a library or a single-time ensemble is the same background at every time: read and convert it once
    fixed = "member" not in ensemble.dims or "time" not in ensemble.dims or ensemble.sizes["time"] == 1
    members = None
    for o in obs_list:
        if members is None or not fixed:
            members = _members_flat(ensemble, layout, o.time, source, warned)
        E, land, shape = members
        tic = _time.perf_counter()
        Ea = f.assimilate(E.copy() if fixed else E, o, rng, loc)  # a copy: a filter may update in place
        seconds = _time.perf_counter() - tic
        Ea[:, land] = np.nan
        yield Ea.reshape(Ea.shape[0], *shape), o.time, seconds


def _analyse_times(ensemble: xr.Dataset, layout: FieldLayout, obs_list: list[Observations], f: Filter, loc: Any,
                   rng: np.random.Generator, source: str) -> tuple[list[np.ndarray], list[Any], list[float]]:
    """One analysis per observation time: ensembles ``[N, C, Y, X]``, times, seconds (land stays NaN)."""
    out, times, seconds = [], [], []
    for Ea, t, sec in _analyses(ensemble, layout, obs_list, f, loc, rng, source):
        out.append(Ea)
        times.append(t)
        seconds.append(sec)
    if not out:
        raise DataValidationError("observations: no observation time to analyse")
    return out, times, seconds


def _moments(Ea: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and spread (ddof=1) of one time's members ``[N, ...]``, as :func:`~oceanda.fields.analysis_dataset`."""
    mean = Ea.mean(axis=0)
    return mean, (Ea.std(axis=0, ddof=1) if Ea.shape[0] > 1 else np.zeros_like(mean))


def _load_members(path: Any, n: int, idx: Any) -> np.ndarray:
    """The first ``n`` members of one streamed time, channels ``idx`` (a list: levels; an int: no level)."""
    # memory-mapped: only this variable's channels are read (each variable of a time reads the same file)
    return np.array(np.load(path, mmap_mode="r", allow_pickle=False)[:n, idx])  # a copy: no map outlives the call


def _streamed_dataset(files: list[Any], n: int, mean: np.ndarray, spread: np.ndarray, layout: FieldLayout,
                      like: xr.Dataset, times: np.ndarray, attrs: dict[str, Any], keep_members: bool) -> xr.Dataset:
    """The layout of :func:`~oceanda.fields.analysis_dataset`, members read lazily (one time per chunk) from ``files``."""
    import dask
    import dask.array as dsa

    out = moments_dataset(mean, spread, layout, like, times)
    if keep_members:
        for v in layout.variables:
            idx = [i for i, (name, _) in enumerate(layout.channels) if name == v]
            level = [layout.channels[i][1] for i in idx] != [None]
            shape = (n, *((len(idx),) if level else ()), *mean.shape[2:])
            load = dask.delayed(_load_members, pure=True)
            chunks = [dsa.from_delayed(load(p, n, idx if level else idx[0]), shape, np.float64) for p in files]
            dims = ("time", "member", *((layout.level_dim,) if level else ()), *layout.spatial)
            out[v] = xr.DataArray(dsa.stack(chunks), dims=dims, attrs=dict(layout.attrs.get(v, {})))
            out[v].attrs["long_name"] = f"analysis ensemble of {v}"
        out = out.assign_coords(member=np.arange(n))
    out = out.assign_coords({c: v for c, v in like.coords.items() if c not in out.coords and set(v.dims) <= set(out.dims) and "time" not in v.dims})
    if "time" in like.coords:
        out["time"].attrs.update(like["time"].attrs)
    out.attrs.update(attrs)
    return out


def _stream(path: Any, analyses: Iterator[tuple[np.ndarray, Any, float]], layout: FieldLayout, like: xr.Dataset,
            attrs_of: Any, keep_members: bool, time_attrs: dict[str, Any], overwrite: bool,
            command: str | None) -> list[float]:
    """Write the analyses to ``path`` as they come: each time's members to a scratch file beside it, then the
    file through :func:`oceanda.io.write_netcdf` (atomic) one time per chunk; returns the seconds per analysis.

    Why scratch files: the file's member count (the fewest of any time) and its attributes are known only
    after the last analysis; memory holds one time's ensemble and the (small) means and spreads.
    """
    with io.scratch_dir(path) as scratch:
        files, counts, times, seconds, means, spreads = [], [], [], [], [], []
        for i, (Ea, t, sec) in enumerate(analyses):
            files.append(io.save_array(Ea, scratch / f"time{i}.npy"))
            counts.append(Ea.shape[0])
            times.append(t)
            seconds.append(sec)
            for acc, arr in zip((means, spreads), _moments(Ea)):
                acc.append(arr)
            del Ea
        if not files:
            raise DataValidationError("observations: no observation time to analyse")
        n = min(counts)
        for i in (i for i, c in enumerate(counts) if c != n):  # members dropped at another time: the first n
            means[i], spreads[i] = _moments(_load_members(files[i], n, slice(None)))
        tvals = np.asarray(times) if times[0] is not None else np.arange(len(times))
        ds = _streamed_dataset(files, n, np.stack(means), np.stack(spreads), layout, like, tvals,
                               attrs_of(seconds, n), keep_members)
        if "time" in ds.coords:
            ds["time"].attrs.update(time_attrs)
        import dask

        with dask.config.set(scheduler="synchronous"):  # read one time, write it, next: the file's writes are
            io.write_netcdf(ds, path, overwrite=overwrite, command=command)  # serial anyway (HDF5 lock)
    return seconds


def analyse_dataset(ensemble: xr.Dataset, obs: xr.Dataset, method: str | Filter = "letkf", *,
                    loc_radius_km: float | None = None, taper: str | None = None, inflation: float | None = None,
                    rtps: float | None = None, rtpp: float | None = None, alpha: float | None = None,
                    members: int | None = None, variables: Sequence[str] | None = None, block: int | None = None,
                    periodic: bool = False, rng: Any = 0, keep_members: bool = True, source: str = "ensemble",
                    attrs: dict[str, Any] | None = None, out: Any = None, overwrite: bool = False,
                    command: str | None = None, write_members: Any = None, obs_window: int = 1,
                    obs_age_growth: float | None = None) -> xr.Dataset:
    """Analyse ``ensemble`` with every time of ``obs``; returns the common analysis layout (times = obs times).

    ``ensemble`` has a ``member`` dimension (and optionally ``time``: then the member set at each
    obs time is used), or only ``time``: a library of states used as a static ensemble (EnOI's
    natural input; background = the library mean). ``loc_radius_km`` is the Gaspari-Cohn half-width
    (zero beyond twice it); with ``enoi`` it localises the static ensemble
    (:class:`~oceanda.kalman.methods.EnOI`, form ``auto``: the Schur product in observation space for
    direct or linear -- gridded, ``y_index``/``x_index``, or points at arbitrary positions through their
    sparse bilinear operator (:func:`~oceanda.kalman.obsspace.point_operator`, located at their own
    positions; attributes ``observation_operator`` and ``points_*`` say how they were used) --
    observations, else the LETKF transform). Without a
    radius ``letkf`` and ``enoi`` are never run unlocalised: the radius is estimated from the
    ensemble's spatial correlation (:func:`~oceanda.kalman.localization.estimate_radius`) and recorded
    in the attributes ``localization_radius_km`` / ``localization_radius_source``; ``loc_radius_km=inf``
    asks for no localisation (EnOI: the global ETKF transform). NaN grid points present in every
    member (land) stay NaN and are not updated.

    Parameters
    ----------
    ensemble : forecast ensemble (dim ``member``) or library of states (dim ``time``)
    obs : gridded or point observations with ``<var>_error``
    method : a name of :data:`~oceanda.kalman.methods.METHODS` or a configured :class:`Filter`
    loc_radius_km : Gaspari-Cohn half-width in km; None = estimated (localised methods); inf = none (EnOI)
    taper, inflation, rtps, rtpp, alpha, members, block : the method's settings
        (None = the method's default, or the given filter's value; settings a method lacks are ignored)
    variables : state variables analysed (default: every ensemble variable)
    periodic : doubly periodic grid (distances wrap)
    rng : random generator or seed
    keep_members, write_members : write the member ensemble too; only the members of these indices, or of
        ``write_members(n)`` for an ensemble of ``n`` (None: all); mean and spread still of all; not with ``out``
    source : what to call the ensemble in errors
    attrs : more global attributes of the result
    out : write the result to this NetCDF file as the times are analysed (one time's ensemble in memory,
        not the record's; atomic through :func:`oceanda.io.write_netcdf`) and return it opened lazily
    overwrite, command : ``out`` may replace an existing file; the command line in its history
    obs_window, obs_age_growth : days of observations in each analysis, those before it with errors grown by
        ``obs_age_growth`` x the ensemble's std a day (None: from a library's states; :mod:`oceanda.kalman.obswindow`)

    Returns
    -------
    xarray.Dataset in the analysis layout, one time per observation time (``out``: read lazily from it)
    """
    f, radius_source = _filter(method, loc_radius_km, {"taper": taper, "inflation": inflation, "rtps": rtps,
                                                       "rtpp": rtpp, "alpha": alpha, "members": members, "block": block})
    sample_dim = _check_inputs(ensemble, obs, source, out, overwrite, write_members)
    variables = _state_variables(ensemble, obs, sample_dim) if variables is None else variables
    base = _one_set(ensemble, sample_dim)
    layout = layout_of(base, variables, sample_dim=sample_dim, source=source)
    observed, obs_list, used = _observations(obs, layout, ensemble, periodic, (obs_window, obs_age_growth, source))
    if not radius_source:  # a localised method and no radius: never silently unlocalised
        est, radius_source = _estimate_radius(ensemble, layout, f, observed, obs_list[0].time if obs_list else None,
                                              periodic, source)
        f = f.replace(radius=est)
    radius = getattr(f, "radius", None)
    loc = localizer_for_dataset(ensemble, radius, taper=f.taper, block=f.block, periodic=periodic) if radius else None
    like = base.isel({sample_dim: 0}, drop=True)  # one state: the grid
    time_attrs = dict(obs["time"].attrs) if "time" in obs.coords else {}

    def attrs_of(seconds: list[float], n: int) -> dict[str, Any]:
        return {**_attrs(f, seconds, n, loc_radius_km, taper, radius_source), **used, **(attrs or {})}

    if out is not None:
        _stream(out, _analyses(ensemble, layout, obs_list, f, loc, as_rng(rng), source), layout, like, attrs_of,
                keep_members, time_attrs, overwrite, command)
        return xr.open_dataset(out)
    members_t, times, seconds = _analyse_times(ensemble, layout, obs_list, f, loc, as_rng(rng), source)
    nmin = min(a.shape[0] for a in members_t)
    tvals = np.asarray(times) if times[0] is not None else np.arange(len(times))
    ds = _written_members(members_t, nmin, write_members, layout, like, tvals, attrs_of(seconds, nmin), keep_members)
    if "time" in ds.coords:
        ds["time"].attrs.update(time_attrs)
    return ds


def _written_members(members_t: list[np.ndarray], n: int, keep: Sequence[int] | None, layout: FieldLayout,
                     like: xr.Dataset, times: np.ndarray, attrs: dict[str, Any], keep_members: bool) -> xr.Dataset:
    """:func:`analyse_dataset`'s result from the first ``n`` members of every time: all of them (``keep`` None), or
    only the members ``keep`` with the whole ensemble's mean and spread (:func:`_moments`, time by time; member
    coordinate ``0..k-1``, attribute ``n_members``). Why: a 200-member EnOI stacked whole (0.6 GB for 31 days)
    to write 20 members cost a quarter of its time."""
    keep = keep(n) if callable(keep) else keep
    if keep is None:
        return analysis_dataset(np.stack([a[:n] for a in members_t]), layout, like, times, attrs=attrs,
                                keep_members=keep_members)
    keep = np.asarray(keep, dtype=np.int64)
    if keep.ndim != 1 or keep.size == 0 or keep.min() < 0 or keep.max() >= n or np.unique(keep).size != keep.size:
        raise ConfigurationError(f"write_members: expected distinct member indices in [0, {n}); got {keep.tolist()[:8]}")
    mean, spread = (np.stack(m) for m in zip(*(_moments(a[:n]) for a in members_t)))
    ds = analysis_dataset(np.stack([a[keep] for a in members_t]), layout, like, times, attrs=attrs,
                          keep_members=keep_members, moments=(mean, spread))
    if "member" in ds.dims:
        ds = ds.assign_coords(member=np.arange(keep.size))
    ds.attrs["n_members"] = int(n)
    return ds


def _check_inputs(ensemble: xr.Dataset, obs: xr.Dataset, source: str, out: Any, overwrite: bool,
                  write_members: Any = None) -> str:
    """The ensemble's sample dim, 2 samples or more; ``out`` neither an input nor (without overwrite) existing."""
    if write_members is not None and out is not None:
        raise ConfigurationError("analyse_dataset: write_members with out= is not supported; expected one of them")
    sample_dim = "member" if "member" in ensemble.dims else "time"
    if sample_dim not in ensemble.dims:
        raise DataValidationError(f"{source}: no 'member' (or 'time') dimension; expected an ensemble of states")
    _check_members(ensemble, sample_dim, source)
    if out is not None:  # before any work
        io.check_distinct([*ensemble.encoding.get("oceanda_sources", []), *obs.encoding.get("oceanda_sources", [])], [out])
        io.refuse_existing(out, overwrite)
    return sample_dim


def _one_set(ensemble: xr.Dataset, sample_dim: str) -> xr.Dataset:
    """The ensemble's states along ``sample_dim``: a member ensemble per time gives its first time's members."""
    return ensemble.isel(time=0, drop=True) if sample_dim == "member" and "time" in ensemble.dims else ensemble


def _time_window(obs_list: list[Observations], ensemble: xr.Dataset, layout: FieldLayout, days: int,
                 growth: float | None, source: str, used: dict[str, Any]) -> list[Observations]:
    """Each time's observations with the ``days - 1`` days before it (:func:`~oceanda.kalman.obswindow.from_states`).

    The error growth scales with the ensemble's std (at most :data:`WINDOW_STATES` states of it); without
    ``growth`` it is estimated from a library's first consecutive states. Recorded in ``used``.
    """
    from oceanda.kalman.obswindow import WINDOW_STATES, from_states

    dim = layout.sample_dim
    base = _one_set(ensemble, dim)
    n = base.sizes[dim]

    def flat(sel: Any) -> np.ndarray:
        x = to_array(base.isel({dim: sel}), layout, dtype=np.float64)[0]
        return x.reshape(len(x), -1)

    def series() -> tuple:
        if dim != "time":
            raise ConfigurationError(f"obs_window={days}: {source} is a member ensemble; give obs_age_growth "
                                     "(the error growth per day), or a library along time to estimate it from")
        k = min(n, WINDOW_STATES)
        return flat(slice(0, k)), base["time"].values[:k], source

    out, used_growth = from_states(obs_list, days, growth, lambda: flat(slice(None, None, max(1, n // WINDOW_STATES))),
                                   series)
    if used_growth is not None:
        used.update(obs_window_days=int(days), obs_age_growth=used_growth)
    return out


def _observations(obs: xr.Dataset, layout: FieldLayout, ensemble: xr.Dataset, periodic: bool,
                  window: tuple = (1, None, "ensemble")) -> tuple[list[str], list[Observations], dict[str, Any]]:
    """``(observed variables, one Observations per time, how they were used)``; none on the grid is refused.

    ``window``: ``(obs_window, obs_age_growth, source)`` of :func:`_time_window`.
    """
    observed = [str(v) for v in obs.data_vars if str(v) in layout.variables]
    used: dict[str, Any] = {}  # how the observations were used (operator, point counts): into the attributes
    src = " + ".join(obs.encoding.get("oceanda_sources", [])) or "observations"
    obs_list = observations_from_dataset(obs, layout, ensemble, source=src, variables=observed,
                                         periodic=periodic, metric=grid_metric(ensemble, periodic)[1], report=used)
    if not obs_list:
        counts = ", ".join(f"{v} {k.replace('points_', '').replace('_', ' ')}" for k, v in used.items()
                           if str(k).startswith("points_") and isinstance(v, (int, np.integer)))
        raise DataValidationError(f"{src}: no observation falls on the ensemble's grid{f' ({counts})' if counts else ''}; "
                                  "expected observations inside the grid and its times")
    return observed, _time_window(obs_list, ensemble, layout, *window, used), used
