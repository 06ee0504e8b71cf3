"""`evaluate`: score analyses against a truth on the same grid; write metrics.json, metrics.csv and figures.

Why a module apart from ``oceanda.metrics``: the metrics are pure functions of arrays; this module
owns the choices around them (which variables, which times, which case of ensemble) so that every
method in a comparison is scored by the same rules, and writes them down next to the numbers.

Rules (documented here because the numbers depend on them):

- Times: each analysis is scored on the times it shares with the truth; none in common is an error.
  Maps are drawn at one time of those shared by the truth and every analysis (``time_index``: an
  integer index into them, a time string/datetime64 -- nearest --, or None for the middle one).
- Variables: every truth variable for which an analysis has ``<var>_mean`` (or members ``<var>``) is
  scored; a variable with a ``layer``/``depth`` dim is pooled over its levels. The headline numbers
  (the keys the issue names) are those of ``variables[0]`` if given, else (:func:`headline_variable`)
  of the first truth variable present in every analysis that the observations hold (SSH on the
  bundled sample), else of the first with a ``sea_surface_height*`` standard_name, else of the first;
  ``meta.headline_rule`` says which rule applied; ``"variables"`` holds the per-variable breakdown.
  Figures are drawn for the headline variable (maps of its first level).
- Checks, all before REPORT_DIR is made (a new one is built aside and renamed into place): an analysis
  variable in other units than the truth's is converted to them (cf-units: ``cm`` -> ``m``, with a
  warning) or, when incompatible (``K`` against ``m``), refused naming both files; Inf in a scored mean,
  member or spread, and a mean without a finite value at the scored times, are refused (an all-NaN
  member or spread is accepted); grids must agree.
- Units: every method and variable carries ``units`` (the truth variable's CF units) and
  ``score_units`` (RMSE, bias, spread, CRPS and energy score in the variable's units; spread_skill and
  nrmse_score dimensionless; effective resolution in km; seconds_per_analysis in s).
- Effective resolution: the wavelength where ``1 - PSD(error)/PSD(truth)`` falls below 0.5
  (:func:`oceanda.metrics.resolution_verdict`). When it is below 0.5 at every wavelength up to the
  domain size the key ``effective_resolution_km`` is null and ``effective_resolution_status`` is
  ``"not_resolved"`` ("not resolved at any scale up to the domain size", in
  ``effective_resolution_note``); ``"resolved_to_grid"`` gives the shortest wavelength, an upper
  bound; ``"no_score"`` (null) when there is no regular grid to take spectra on.
- Maps: drawn in the data's frame (:func:`oceanda.plotting.map_frame`: regional, centred on the
  domain, contiguous across the dateline; curvilinear grids on their 2-D coordinates; km axes without
  latitude/longitude); the error and spread panels of all methods share one colour scale.
- Ensembles: the mean is ``<var>_mean`` (else the member mean), the spread comes from the members
  (ddof=1); CRPS is the fair ensemble CRPS and the energy score the fair estimator, the whole field
  (layers included) being one vector per time.
- Without members (``crps_kind`` says which case applied): with ``<var>_spread`` the CRPS is that of
  the Gaussian N(mean, spread^2), the energy score null, and M is read from the attribute
  ``n_members`` / ``ensemble_size`` (else no finite-ensemble correction, ``n_members`` null);
  with ``<var>_mean`` only the analysis is a one-member ensemble: spread 0, CRPS = mean absolute
  error, energy score = norm of the error, no rank histogram.
- ``seconds_per_analysis`` is the analysis file's attribute of that name (null if absent).
"""

from __future__ import annotations

import contextlib
import csv
import io as _stdio
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from oceanda import io as oio
from oceanda import grid, metrics, plotting
from oceanda.errors import DataValidationError, GridMismatchError, OceandaError
from oceanda.fields import spatial_dims

#: The keys every method has in metrics.json (the issue's contract), in CSV column order.
HEADLINE_KEYS = (
    "rmse",
    "bias",
    "spread",
    "spread_skill",
    "crps",
    "energy_score",
    "nrmse_score",
    "effective_resolution_km",
    "seconds_per_analysis",
)
MEMBER_COUNT_ATTRS = ("n_members", "ensemble_size", "members", "n_ensemble")
#: Prefix of the CF standard names of sea surface height (above geoid, sea level, reference ellipsoid...).
SSH_STANDARD_NAME = "sea_surface_height"


def score_units(units: str) -> dict[str, str]:
    """The unit of each headline score of a variable in ``units`` (``"1"``: dimensionless).

    Parameters
    ----------
    units : the variable's CF units ("" when unknown)

    Returns
    -------
    dict of str
    """
    u = units or "(units of the variable)"
    return {"rmse": u, "bias": u, "spread": u, "spread_skill": "1", "crps": u, "energy_score": u,
            "nrmse_score": "1", "effective_resolution_km": "km", "seconds_per_analysis": "s"}


def _label(name: str, ds: xr.Dataset) -> str:
    src = ds.encoding.get("oceanda_sources") or ([ds.encoding["source"]] if "source" in ds.encoding else [])
    return f"{src[0]} (analysis '{name}')" if src else f"analysis '{name}'"


def _truth_label(ds: xr.Dataset, default: str = "truth") -> str:
    src = ds.encoding.get("oceanda_sources") or ([ds.encoding["source"]] if "source" in ds.encoding else [])
    return str(src[0]) if src else default


def truth_variables(truth: xr.Dataset) -> list[str]:
    """Gridded truth variables (with a time dim, not ``*_error``).

    Parameters
    ----------
    truth : xarray.Dataset
        The truth.

    Returns
    -------
    list of str
        Names of its variables that have a ``time`` dim, ``*_error`` excluded.
    """
    return [str(v) for v in truth.data_vars if "time" in truth[v].dims and not str(v).endswith("_error")]


def analysis_variables(ds: xr.Dataset, candidates: Sequence[str]) -> list[str]:
    """Which of ``candidates`` an analysis holds, as ``<var>_mean`` or an ensemble ``<var>`` with members.

    Parameters
    ----------
    ds : xarray.Dataset
        An analysis.
    candidates : sequence of str
        Variable names (those of the truth).

    Returns
    -------
    list of str
        The candidates present, in the candidates' order.
    """
    out = []
    for v in candidates:
        if f"{v}_mean" in ds or (v in ds and "member" in ds[v].dims):
            out.append(v)
    return out


def _n_members(ds: xr.Dataset, v: str) -> int | None:
    if v in ds and "member" in ds[v].dims:
        return int(ds[v].sizes["member"])
    for key in MEMBER_COUNT_ATTRS:
        if key in ds.attrs:
            try:
                return int(ds.attrs[key])
            except (TypeError, ValueError):
                pass
    return None


def _align_grid(da: xr.DataArray, truth: xr.DataArray, label: str) -> xr.DataArray:
    """Put ``da`` on the truth's grid coordinates after checking that the grids agree."""
    for d in truth.dims:
        if d == "time":
            continue
        if d not in da.dims:
            raise GridMismatchError(f"{label}: variable '{da.name}' lacks dimension '{d}'; expected the truth's dims {truth.dims}")
        if da.sizes[d] != truth.sizes[d]:
            raise GridMismatchError(
                f"{label}: variable '{da.name}' has {d}={da.sizes[d]}; expected {truth.sizes[d]} as in the truth"
            )
        if d in da.coords and d in truth.coords and np.issubdtype(truth[d].dtype, np.number):
            a, b = np.asarray(da[d].values, float), np.asarray(truth[d].values, float)
            if not np.allclose(a, b, rtol=1e-6, atol=1e-6 * (np.abs(b).max() + 1)):
                raise GridMismatchError(f"{label}: coordinate '{d}' of '{da.name}' differs from the truth's grid")
    extra = [d for d in da.dims if d not in truth.dims and d != "member"]
    if extra:
        raise DataValidationError(f"{label}: variable '{da.name}' has unexpected dims {extra}; expected {truth.dims} (+ member)")
    da = da.reset_coords(drop=True)
    return da.assign_coords({d: truth[d].values for d in truth.dims if d in truth.coords and d != "time"})


def _common_times(truth: xr.Dataset, ds: xr.Dataset, label: str, truth_label: str) -> np.ndarray:
    """The truth's times (its values) that ``ds`` holds too; calendars must agree (matched as days in it)."""
    if "time" not in ds.dims:
        raise DataValidationError(f"{label}: no dimension 'time'; expected analyses with a time dimension")
    check_calendar(ds["time"], truth["time"], label, f"the truth {truth_label}")
    tv = truth["time"].values
    _, it, _ = np.intersect1d(grid.time_days(tv), grid.time_days(ds["time"].values), return_indices=True)
    common = tv[np.sort(it)]
    if common.size == 0:
        t, a = truth["time"].values, ds["time"].values
        raise DataValidationError(
            f"{label}: no time in common with the truth {truth_label} (analysis: {a[0]} .. {a[-1]}, "
            f"truth: {t[0]} .. {t[-1]}); expected analyses of the truth's times"
        )
    return common


def check_calendar(times: Any, reference: Any, label: str, what: str) -> None:
    """Refuse times in another calendar than ``reference``'s (``label`` names them, ``what`` the reference).

    Parameters
    ----------
    times, reference : time values (datetime64, cftime or numbers)
    label : the file (or analysis) of ``times``, named in the error
    what : what ``reference`` is, e.g. ``the truth truth.nc``

    Raises
    ------
    DataValidationError
    """
    a, b = grid.calendar_of(times), grid.calendar_of(reference)
    if a != b:
        name = lambda c: f"the {c} calendar" if c else "plain numbers"  # noqa: E731
        raise DataValidationError(f"{label}: times in {name(a)}, those of {what} in {name(b)}; "
                                  "expected the same calendar (convert one of them)")


def _analysis_fields(
    analysis: xr.Dataset, var: str, truth: xr.DataArray, label: str
) -> tuple[xr.DataArray | None, xr.DataArray, xr.DataArray | None]:
    """``(members, mean, spread field)`` of ``var`` on the truth's grid; members or spread may be None."""
    ens = analysis[var] if var in analysis and "member" in analysis[var].dims else None
    if ens is not None:
        ens = _align_grid(ens.rename(var), truth, label)
    if f"{var}_mean" in analysis:
        mean = _align_grid(analysis[f"{var}_mean"].rename(var), truth, label)
    else:
        mean = ens.mean("member")
    sp_field = None
    if ens is None and f"{var}_spread" in analysis:
        sp_field = _align_grid(analysis[f"{var}_spread"].rename(var), truth, label)
    return ens, mean, sp_field


def _to_truth_units(ds: xr.Dataset, truth: xr.Dataset, variables: Sequence[str], label: str,
                    tlabel: str) -> xr.Dataset:
    """``ds`` with the mean, members and spread of ``variables`` in the truth's units (a copy if any changes).

    Why: a truth in m scored against an analysis in cm would give RMSEs 100 times too large; a truth in K
    against an analysis in m is no comparison at all and is refused, naming both files.
    """
    out = None
    for v in variables:
        want, done = truth[v].attrs.get("units"), {}
        for name, spread in ((f"{v}_mean", False), (v, False), (f"{v}_spread", True)):
            if name not in ds.data_vars:
                continue
            have = ds[name].attrs.get("units")
            try:
                change = oio.unit_conversion(have, want)
            except ValueError:
                raise DataValidationError(
                    f"{label}: variable '{name}' has units '{have}', incompatible with the units '{want}' of '{v}' "
                    f"in the truth {tlabel}; expected units convertible to '{want}'") from None
            if change is None:
                continue
            scale, offset = change
            out = ds.copy() if out is None else out
            da = ds[name]
            new = da * abs(scale) if spread else da * scale + offset  # a spread is a length: no offset
            out[name] = new.assign_attrs({**da.attrs, "units": want})
            done[name] = f"'{have}' (x {scale:g}" + (f", {offset:+g})" if offset and not spread else ")")
        if done:
            warnings.warn(f"{label}: {', '.join(f'{n} from {how}' for n, how in done.items())} converted to the "
                          f"truth's '{want}'", UserWarning, stacklevel=3)
    return ds if out is None else out


def _check_analysis_values(ds: xr.Dataset, variables: Sequence[str], times: np.ndarray, label: str) -> None:
    """Refuse Inf in a scored mean, member or spread, and a mean with no finite value, at the scored times.

    An all-NaN member or spread may be legitimate (a dropped member, a deterministic run); an Inf never
    is, and an all-NaN mean scores nothing (NaN metrics with exit 0).
    """
    import dask

    sub = ds.sel(time=times)
    checks: dict[str, Any] = {}
    for v in variables:
        names = [n for n in (f"{v}_mean", f"{v}_spread") if n in sub.data_vars]
        if v in sub.data_vars and "member" in sub[v].dims:
            names.append(v)
        for n in names:
            if sub[n].dtype.kind not in "fiu":
                raise DataValidationError(f"{label}: variable '{n}' has non-numeric dtype {sub[n].dtype}; "
                                          "expected a float or integer field")
            checks[f"inf {n}"] = np.isinf(sub[n].data).any() if sub[n].dtype.kind == "f" else False
        mean = sub[f"{v}_mean"] if f"{v}_mean" in sub.data_vars else sub[v]
        checks[f"finite {v}"] = mean.notnull().data.any()
    (done,) = dask.compute(checks)
    for key, value in done.items():
        kind, n = key.split(" ", 1)
        if kind == "inf" and bool(value):
            raise DataValidationError(f"{label}: variable '{n}' contains Inf values; expected finite values or NaN")
        if kind == "finite" and not bool(value):
            what = f"'{n}_mean'" if f"{n}_mean" in sub.data_vars else f"every member of '{n}'"
            raise DataValidationError(f"{label}: {what} is all NaN at the {len(times)} time(s) shared with the truth; "
                                      "expected an analysis with finite values")


#: Most bytes of one time chunk of an analysis variable while scoring: every score is computed chunk by chunk
#: (float64 copies, sorted members: a few times this per dask task), so the record is never in memory at once.
CHUNK_BYTES = 32 * 2**20


def time_chunked(ds: xr.Dataset, limit: float = CHUNK_BYTES) -> xr.Dataset:
    """``ds`` with time chunks of at most ``limit`` bytes in any variable (at least one time per chunk).

    Why: scores are per time, then averaged, so they stream over time; a whole ensemble record in one chunk
    (64 times by default, or numpy data) is materialised whole, with its float64 copies. Per-time values
    are unchanged; already small time chunks are kept (opening a file one time per chunk avoids reading
    more). Other dims are made one chunk each: a file's own chunking (one member per chunk) would make
    thousands of tiny tasks, 10x the time of the reads.

    Parameters
    ----------
    ds : an analysis (or truth) Dataset
    limit : bytes per chunk

    Returns
    -------
    xarray.Dataset
    """
    timed = [ds[v] for v in ds.data_vars if "time" in ds[v].dims and ds.sizes["time"] > 0]
    if not timed:
        return ds
    per_time = max(float(da.nbytes) / da.sizes["time"] for da in timed)
    k = max(1, int(limit // max(per_time, 1.0)))
    sizes = [max(da.chunksizes["time"]) if da.chunks is not None else da.sizes["time"] for da in timed]
    split = {str(d) for da in timed if da.chunks is not None for d, c in da.chunksizes.items() if d != "time" and len(c) > 1}
    if max(sizes) <= k and not split:
        return ds
    return ds.chunk({**({"time": k} if max(sizes) > k else {}), **{d: -1 for d in split}})


def _checked_analyses(truth: xr.Dataset, analyses: Mapping[str, xr.Dataset], times: dict[str, np.ndarray],
                      work: Sequence[tuple[str, str]], tlabel: str) -> dict[str, xr.Dataset]:
    """Every analysis in the truth's units, its values and grid checked: all before REPORT_DIR is made."""
    out = {}
    for name, ds in analyses.items():
        label = _label(name, ds)
        variables = [v for n, v in work if n == name]
        ds = time_chunked(_to_truth_units(ds, truth, variables, label, tlabel))
        _check_analysis_values(ds, variables, times[name], label)
        for v in variables:  # the grid checks of the scoring, now
            _analysis_fields(ds.sel(time=times[name]), v, truth[v].sel(time=times[name]), label)
        out[name] = ds
    return out


@contextlib.contextmanager
def _report_dir(path: str | os.PathLike, overwrite: bool) -> Any:
    """Where the report is written: a new REPORT_DIR is built aside and renamed into place (nothing is left
    on failure); an existing folder is written into, file by file (``--overwrite`` for a non-empty one)."""
    if os.path.lexists(path):
        yield oio.prepare_output_dir(path, overwrite=overwrite)
        return
    with oio.atomic_dir(path, overwrite=overwrite) as tmp:
        yield tmp


def _uncertainty_scores(
    ens: xr.DataArray | None,
    mean: xr.DataArray,
    sp_field: xr.DataArray | None,
    truth: xr.DataArray,
    n_members: int | None,
) -> tuple[int | None, str, dict[str, Any]]:
    """Member count, ``crps_kind`` and the lazy spread/CRPS/energy/rank scores of the case that applies."""
    if ens is not None:
        lazy = {
            "spread_series": metrics.spread(ens, truth=truth, per_time=True),
            "crps_map": metrics.crps_ensemble(ens, truth, fair=True),
            "es_series": metrics.energy_score(ens, truth, fair=True),
            "ranks": metrics.rank_histogram(ens, truth),
        }
        return int(ens.sizes["member"]), "ensemble_fair", lazy
    if sp_field is not None:
        lazy = {
            "spread_series": metrics.spread(spread_field=sp_field, truth=truth, per_time=True),
            "crps_map": metrics.crps_gaussian(mean, sp_field, truth),
        }
        return n_members, "gaussian", lazy
    lazy = {
        "spread_series": xr.zeros_like(metrics.rmse(mean, truth, per_time=True)),
        "crps_map": abs(mean - truth),
        "es_series": metrics.energy_score(mean.expand_dims(member=1), truth, fair=True),
    }
    return 1, "deterministic", lazy


def _lazy_scores(
    mean: xr.DataArray, truth: xr.DataArray, uncertainty: dict[str, Any], var: str, spectrum: str, label: str
) -> dict[str, Any]:
    """Every series and spectrum :func:`score_variable` computes, still lazy (one ``dask.compute``)."""
    err = mean - truth
    lazy = {
        "rmse_series": metrics.rmse(mean, truth, per_time=True),
        "bias_series": metrics.bias(mean, truth, per_time=True),
        "spread_series": uncertainty["spread_series"],
        "rms_truth_series": metrics.rms(truth, where=err.notnull(), per_time=True),
        "crps_series": metrics.spatial_mean(uncertainty["crps_map"].where(truth.notnull())),
        "es_series": uncertainty.get("es_series"),
        "ranks": uncertainty.get("ranks"),
    }
    try:
        lazy["psd_error"], lazy["psd_truth"] = metrics.error_spectra(mean, truth, kind=spectrum)
    except DataValidationError as exc:  # no regular km/degree grid: no spectra, the other scores stand
        warnings.warn(f"{label}: no spectra for '{var}' ({exc}); effective_resolution_km is null", stacklevel=3)
    return {k: v for k, v in lazy.items() if v is not None}


def _summary(done: dict[str, Any], m: int | None, kind: str, n_times: int) -> dict[str, Any]:
    """The numbers of one variable from its computed series (time means, NaN skipped)."""
    rmse_v = float(done["rmse_series"].mean(skipna=True))
    spread_v = float(done["spread_series"].mean(skipna=True))
    resolution = metrics.Resolution(float("nan"), "no_score")
    if "psd_error" in done:
        resolution = metrics.resolution_verdict_from_spectra(done["psd_error"], done["psd_truth"])
    return {
        "rmse": rmse_v,
        "bias": float(done["bias_series"].mean(skipna=True)),
        "spread": spread_v,
        "spread_skill": float(metrics.spread_skill_ratio(spread_v, rmse_v, m)) if rmse_v > 0 else float("nan"),
        "crps": float(done["crps_series"].mean(skipna=True)),
        "energy_score": float(done["es_series"].mean(skipna=True)) if "es_series" in done else float("nan"),
        "nrmse_score": 1.0 - rmse_v / float(done["rms_truth_series"].mean(skipna=True)),
        "effective_resolution_km": resolution.km,
        "effective_resolution_status": resolution.status,
        "effective_resolution_note": resolution.note,
        "n_members": m,
        "n_times": n_times,
        "crps_kind": kind,
        "_series": done,
        "_has_spread": kind != "deterministic",
    }


def score_variable(
    truth: xr.DataArray,
    analysis: xr.Dataset,
    var: str,
    *,
    n_members: int | None = None,
    spectrum: str = "isotropic",
    label: str = "analysis",
) -> dict[str, Any]:
    """All scores of one variable of one analysis (already on the truth's times); computes once with dask.

    Parameters
    ----------
    truth : xarray.DataArray
        The truth of ``var``, dims ``(time, [layer,] y, x)``.
    analysis : xarray.Dataset
        The analysis on the same times: ``<var>_mean``, members ``<var>`` and/or ``<var>_spread``.
    var : str
        Variable name.
    n_members : int, optional
        Ensemble size behind a ``<var>_spread`` (for the spread-skill correction); ignored with members.
    spectrum : {"isotropic", "x"}
        Spectra behind the effective resolution.
    label : str
        Names the analysis in errors and warnings.

    Returns
    -------
    dict
        The headline numbers, ``n_members``, ``n_times``, ``crps_kind``, plus ``_series`` (the computed
        series and spectra the figures need) and ``_has_spread``.
    """
    import dask

    ens, mean, sp_field = _analysis_fields(analysis, var, truth, label)
    m, kind, uncertainty = _uncertainty_scores(ens, mean, sp_field, truth, n_members)
    lazy = _lazy_scores(mean, truth, uncertainty, var, spectrum, label)
    (done,) = dask.compute(lazy)
    return _summary(done, m, kind, int(truth.sizes["time"]))


def _select_map_time(times: np.ndarray, time_index: Any) -> Any:
    if times.size == 0:
        raise OceandaError("no time is shared by the truth and every analysis; cannot draw the maps at one time")
    if time_index is None:
        return times[times.size // 2]
    if isinstance(time_index, (int, np.integer)):
        if not -times.size <= int(time_index) < times.size:
            raise OceandaError(
                f"time index {time_index} is out of range; expected -{times.size} .. {times.size - 1} "
                f"(the times shared by the truth and every analysis)"
            )
        return times[int(time_index)]
    try:
        if np.issubdtype(times.dtype, np.datetime64):
            target = np.asarray(time_index, dtype=times.dtype)
        elif times.dtype == object:  # cftime calendar: parse the string in that calendar
            target = xr.date_range(str(time_index), periods=1, calendar=times[0].calendar, use_cftime=True).values[0]
        else:
            target = float(time_index)
    except (TypeError, ValueError) as exc:
        raise OceandaError(f"time '{time_index}': not an index or a time; expected e.g. 3 or 2021-01-05") from exc
    k = int(np.argmin(np.abs(grid.time_days(times) - grid.time_days(target))))
    return times[k]


def observation_points(obs: xr.Dataset | None, var: str, when: Any, like: xr.Dataset) -> tuple[np.ndarray, np.ndarray] | None:
    """(lat, lon) of the observations at time ``when``: finite points of gridded obs, or point obs of that time.

    Parameters
    ----------
    obs : xarray.Dataset or None
        Gridded observations (NaN where unobserved) or point observations along an ``obs`` dim.
    var : str
        Variable to take the points of (else the first observed variable).
    when : time
        The map time; point observations within half the truth's time step of it are kept.
    like : xarray.Dataset
        The truth: its grid gives lat/lon when the obs have none, its times the time step.

    Returns
    -------
    tuple of numpy.ndarray or None
        ``(lat, lon)`` of the points, None when there is nothing to draw.
    """
    if obs is None:
        return None
    names = [str(v) for v in obs.data_vars if not str(v).endswith("_error")]
    if not names:
        return None
    name = var if var in names else names[0]
    da = obs[name]
    if "obs" in da.dims:
        if "lat" not in obs.coords or "lon" not in obs.coords:
            return None
        lat, lon = np.asarray(obs["lat"].values, float), np.asarray(obs["lon"].values, float)
        keep = np.ones(lat.shape, bool)
        if "time" in obs.coords and obs["time"].dims == ("obs",):
            t, w = grid.time_days(obs["time"].values), grid.time_days(when)  # any calendar
            times = grid.time_days(like["time"].values)
            half = (np.min(np.diff(times)) / 2) if times.size > 1 else None
            keep = (t == w) if half is None else (np.abs(t - w) <= half)
        return lat[keep], lon[keep]
    if "time" in da.dims:
        k = np.flatnonzero(grid.time_days(da["time"].values) == grid.time_days(when))  # any calendar
        if k.size == 0:
            return None  # no observation at the map time
        da = da.isel(time=int(k[0]))
    finite = np.isfinite(np.asarray(da.values, float))
    while finite.ndim > 2:  # levels: observed at any level
        finite = finite.any(axis=0)
    lat_lon = grid.lat_lon(obs if "lat" in obs.coords else like)
    if lat_lon is None:
        return None
    lat, lon = (np.asarray(a, float) for a in lat_lon)
    return lat[finite], lon[finite]


def _first_level(da: xr.DataArray) -> xr.DataArray:
    for d in ("layer", "depth"):
        if d in da.dims:
            da = da.isel({d: 0})
    return da


def _plane(da: xr.DataArray) -> np.ndarray:
    """The 2-D ``(row, column)`` values of a one-time field (first level)."""
    da = _first_level(da)
    return da.transpose(*spatial_dims(da)).values


def _map_fields(ds: xr.Dataset, var: str, truth: xr.DataArray, label: str, map_time: Any) -> tuple[Any, Any]:
    """2-D ``(mean, spread)`` of ``var`` at ``map_time`` (first level); spread None without one."""
    mean = ds[f"{var}_mean"] if f"{var}_mean" in ds else ds[var].mean("member")
    mean = _align_grid(mean.rename(var), truth, label)
    spread = None
    if var in ds and "member" in ds[var].dims:
        ens = _align_grid(ds[var].rename(var), truth, label)
        spread = ens.sel(time=map_time).load().std("member", ddof=1) if ens.sizes["member"] > 1 else None  # loaded: no dask 0/0 warnings on land
    elif f"{var}_spread" in ds:
        spread = _align_grid(ds[f"{var}_spread"].rename(var), truth, label).sel(time=map_time)
    return _plane(mean.sel(time=map_time)), (_plane(spread) if spread is not None else None)


def map_frame_of(da: xr.DataArray) -> tuple[Any, np.ndarray, np.ndarray] | None:
    """``(frame, lat, lon)`` to draw ``da``'s grid: geographic from its latitude/longitude (1-D or
    curvilinear), else plain km axes from y/x km coordinates (``lat, lon`` are then y, x); None without either.

    Parameters
    ----------
    da : a gridded variable

    Returns
    -------
    tuple or None
    """
    ll = grid.lat_lon(da)
    if ll is not None:
        lat, lon = (np.asarray(a, float) for a in ll)
        if np.isfinite(lat).all() and np.isfinite(lon).all():
            return plotting.map_frame(lat, lon), lat, lon
    ydim, xdim = spatial_dims(da)
    if ydim in da.coords and xdim in da.coords and str(da[xdim].attrs.get("units", "")).strip() in ("km", "m"):
        scale = 1e-3 if str(da[xdim].attrs.get("units")).strip() == "m" else 1.0
        y, x = scale * np.asarray(da[ydim].values, float), scale * np.asarray(da[xdim].values, float)
        return plotting.km_frame(y, x), y, x
    return None


def _spread_note(ds: xr.Dataset) -> str:
    """How to read the spread panel of a window-blended (local/hybrid) analysis (empty otherwise)."""
    if ds.attrs.get("mode") not in ("local", "hybrid") or ds.attrs.get("member_blend") == "variance_preserving":
        return ""
    size, stride = ds.attrs.get("window_size", "?"), ds.attrs.get("window_stride", "?")
    return (f"Spread: the members are tapered blends of {size}-pixel window analyses every {stride} pixels; "
            f"where windows overlap their independent deviations partly cancel, so the spread peaks at the "
            f"window centres, a lattice every {stride} pixels (a blending artefact, not information).")


def _map_figures(
    out: Path, var: str, truth: xr.Dataset, analyses: Mapping[str, xr.Dataset], scored: Any, obs: xr.Dataset | None,
    map_time: Any, worker: MapWorker,
) -> list[str]:
    """One map figure (truth, mean, error, spread) per scored analysis, error and spread colour scales
    shared by all of them; none on a grid without latitude/longitude or km axes."""
    drawn = map_frame_of(truth[var])
    if drawn is None:
        return []
    frame, lat, lon = drawn
    points = observation_points(obs, var, map_time, truth) if frame.kind == "geo" else None
    units = str(truth[var].attrs.get("units", ""))
    t2d = _plane(truth[var].sel(time=map_time))
    level = " (first level)" if any(d in truth[var].dims for d in ("layer", "depth")) else ""
    when = np.datetime_as_string(map_time, unit="s") if isinstance(map_time, np.datetime64) else map_time
    names = [n for n in analyses if n in scored]
    planes = {n: _map_fields(analyses[n], var, truth[var], _label(n, analyses[n]), map_time) for n in names}
    limits = plotting.analysis_map_limits(t2d, [m for m, _ in planes.values()], [s for _, s in planes.values()])
    shared = f"Error and spread colour scales are shared by the maps of all {len(names)} methods." if len(names) > 1 else ""
    jobs = []
    for name in names:
        m2d, s2d = planes[name]
        note = " ".join(t for t in (shared, _spread_note(analyses[name])) if t)
        jobs.append((out / f"map_{_safe(name)}_{var}.png",
                     dict(truth=t2d, mean=m2d, spread=s2d, lat=lat, lon=lon, points=points, units=units, variable=var,
                          title=f"{name}: {var}{level} at {when}", limits=limits, frame=frame, note=note)))
    return worker.draw(jobs)


#: Reports of this many methods on may draw half their maps in a second process (``evaluate(map_worker=True)``).
MAP_WORKER_FROM = 4


def _draw_map(job: tuple[Path, dict[str, Any]]) -> str:
    """One map figure (:func:`~oceanda.plotting.plot_analysis_maps` of ``job``'s arguments) saved to ``job``'s path."""
    path, kwargs = job
    return _save(plotting.plot_analysis_maps(**kwargs), path, plotting.pyplot())


def _map_worker_start() -> None:
    """The map worker's set-up: Agg, Ctrl-C left to the parent (which stops it), the map modules imported."""
    import signal

    import matplotlib

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    matplotlib.use("Agg")
    plotting.configure_cartopy_offline()
    import cartopy.crs  # noqa: F401 - imported while the parent scores, not when the first map is due
    import cartopy.feature  # noqa: F401


class MapWorker:
    """A second process that draws every second map figure of a report while this one draws the others.

    Why a process: drawing a figure is GIL-bound Python (two threads drew 8 maps in the time one did); on
    2 cores the 8 maps of the demo were 7 s of its 12 s evaluation. The process starts when the report does,
    so its imports overlap the scoring. Without one (``enabled`` False, one core, or none could be started)
    every map is drawn here; a worker that dies has its maps drawn here too.
    """

    def __init__(self, enabled: bool):
        import multiprocessing

        from oceanda.threads import physical_cores

        self.pool = self._owned = None
        # never from a child process (a script without a main guard, imported again by spawn: it would recurse)
        if enabled and physical_cores() > 1 and multiprocessing.parent_process() is None:
            from concurrent.futures import ProcessPoolExecutor

            try:
                self.pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                                initializer=_map_worker_start)
                self.pool.submit(int)  # starts the process now
                self._owned = self.pool
            except (OSError, RuntimeError, ValueError, AssertionError) as exc:  # a daemonic process has no children
                warnings.warn(f"evaluate: no map worker ({' '.join(str(exc).split())}); drawing every map here",
                              RuntimeWarning, stacklevel=2)
                self.pool = None

    def __enter__(self) -> MapWorker:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._owned is not None:  # before the report folder is kept or removed: no write after it
            self._owned.shutdown(wait=True, cancel_futures=True)

    def draw(self, jobs: list[tuple[Path, dict[str, Any]]]) -> list[str]:
        """Draw ``jobs`` (:func:`_draw_map`), every second one in the worker; their file names in order."""
        from concurrent.futures.process import BrokenProcessPool

        far = {}
        for i, j in enumerate(jobs):
            if self.pool is not None and i % 2:
                try:
                    far[i] = self.pool.submit(_draw_map, j)
                except (BrokenProcessPool, RuntimeError):  # it died before (start-up, killed): none of them there
                    self.pool = None
        names = {i: _draw_map(j) for i, j in enumerate(jobs) if i not in far}
        for i, f in far.items():
            try:
                names[i] = f.result()
            except BrokenProcessPool:  # the worker died (killed, out of memory): this process draws its maps
                names[i] = _draw_map(jobs[i])
        return [names[i] for i in range(len(jobs))]


def _figures(
    out: Path,
    var: str,
    truth: xr.Dataset,
    analyses: Mapping[str, xr.Dataset],
    results: dict[str, dict[str, Any]],
    obs: xr.Dataset | None,
    map_time: Any,
    worker: MapWorker,
) -> list[str]:
    """Maps, RMSE/spread time series, rank histograms and spectra of the headline variable; the file names."""
    plt = plotting.pyplot()
    units = str(truth[var].attrs.get("units", ""))
    files = _map_figures(out, var, truth, analyses, results, obs, map_time, worker)
    times = {n: r["_series"]["rmse_series"]["time"].values for n, r in results.items()}
    series = {
        n: {"rmse": r["_series"]["rmse_series"].values,
            "spread": r["_series"]["spread_series"].values if r["_has_spread"] else None}
        for n, r in results.items()
    }
    fig = plotting.plot_timeseries(times, series, ylabel=f"{var} ({units})" if units else var,
                                   title=f"{var}: RMSE of the mean (solid) and spread (dashed)")
    files.append(_save(fig, out / f"timeseries_{var}.png", plt))
    ranks = {n: r["_series"]["ranks"].values for n, r in results.items() if "ranks" in r["_series"]}
    fig = plotting.plot_rank_histograms(ranks, title=f"{var}: rank histograms")
    files.append(_save(fig, out / f"rank_histogram_{var}.png", plt))
    first = next(iter(results.values()))["_series"]
    if "psd_truth" not in first:
        return files
    labels = {n: f"{n} (not resolved at any scale)" if r["effective_resolution_status"] == "not_resolved" else n
              for n, r in results.items()}
    fig = plotting.plot_spectra(
        first["psd_truth"]["wavelength"].values,
        first["psd_truth"].values,
        {labels[n]: r["_series"]["psd_error"].values for n, r in results.items()},
        {labels[n]: r["effective_resolution_km"] for n, r in results.items()},
        title=f"{var}: error spectra", units=units,
    )
    files.append(_save(fig, out / f"spectra_{var}.png", plt))
    return files


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _save(fig: Any, path: Path, plt: Any) -> str:
    try:
        oio.save_figure(fig, path, overwrite=True)
    finally:
        plt.close(fig)
    return path.name


def _csv(methods: dict[str, dict[str, Any]]) -> str:
    cols = ["method", "variable", "units", *HEADLINE_KEYS, "effective_resolution_status", "n_members", "n_times",
            "crps_kind"]
    buf = _stdio.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for name, entry in methods.items():
        for var, vals in entry["variables"].items():
            row = [name, var]
            for c in cols[2:]:
                v = vals.get(c)
                row.append("" if v is None or (isinstance(v, float) and not np.isfinite(v)) else (f"{v:.6g}" if isinstance(v, float) else v))
            w.writerow(row)
    return buf.getvalue()


def headline_variable(truth: xr.Dataset, candidates: Sequence[str], obs: xr.Dataset | None = None) -> tuple[str, str]:
    """The variable whose numbers are the headline, and the rule that chose it.

    The first of ``candidates`` that the observations hold (what was observed is what a user judges
    an analysis by); without observations of any candidate, the first with a ``standard_name`` of
    sea surface height (``sea_surface_height*``); else the first candidate.

    Parameters
    ----------
    truth : xarray.Dataset
        The truth (its attributes give the standard names).
    candidates : sequence of str
        Truth variables present in every analysis, in the truth's order.
    obs : xarray.Dataset, optional
        The observations.

    Returns
    -------
    tuple of str
        ``(variable, rule)``.
    """
    if obs is not None:
        observed = {str(v) for v in obs.data_vars if not str(v).endswith("_error")}
        for v in candidates:
            if v in observed:
                return v, "the observed variable"
    for v in candidates:
        if str(truth[v].attrs.get("standard_name", "")).startswith(SSH_STANDARD_NAME):
            return v, f"standard_name {truth[v].attrs['standard_name']} (no observations of a scored variable given)"
    return candidates[0], "the first truth variable present in every analysis (none observed, none with an SSH standard_name)"


def _choose_variables(
    truth: xr.Dataset, analyses: Mapping[str, xr.Dataset], variables: Sequence[str] | None,
    obs: xr.Dataset | None = None,
) -> tuple[tuple[str, str], dict[str, list[str]], list[str] | None]:
    """``((headline, rule), present, scored)``: the headline variable and why, each analysis' truth
    variables, and the variables to score in every analysis (None: each analysis' own ``present`` list)."""
    tlabel = _truth_label(truth)
    tvars = truth_variables(truth)
    if not tvars:
        raise DataValidationError(f"{tlabel}: no gridded variable with a time dimension; expected e.g. ssh(time, y, x)")
    present = {name: analysis_variables(ds, tvars) for name, ds in analyses.items()}
    for name, vs in present.items():
        if not vs:
            raise DataValidationError(
                f"{_label(name, analyses[name])}: none of the truth variables {tvars} is present as '<var>_mean' or "
                f"an ensemble '<var>' with a 'member' dim"
            )
    if variables:
        for v in variables:
            if v not in tvars:
                raise DataValidationError(f"{tlabel}: variable '{v}' not found; expected one of {tvars}")
            for name, vs in present.items():
                if v not in vs:
                    raise DataValidationError(
                        f"{_label(name, analyses[name])}: variable '{v}' not found; expected '{v}_mean' or an ensemble '{v}'"
                    )
        return (variables[0], "given first (--variable)"), present, list(variables)
    common = [v for v in tvars if all(v in vs for vs in present.values())]
    if not common:
        raise DataValidationError(
            f"no truth variable is present in every analysis ({ {n: vs for n, vs in present.items()} }); "
            "pass --variable to choose one"
        )
    return headline_variable(truth, common, obs), present, None


def _score_all(
    truth: xr.Dataset,
    analyses: Mapping[str, xr.Dataset],
    times: dict[str, np.ndarray],
    work: list[tuple[str, str]],
    headline: str,
    spectrum: str,
    quiet: bool,
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Score every ``(analysis, variable)`` of ``work``: per-analysis variable tables and the headline results."""
    from tqdm.auto import tqdm

    methods: dict[str, dict[str, Any]] = {}
    headline_results: dict[str, dict[str, Any]] = {}
    bar = tqdm(work, desc="evaluate", disable=quiet or not sys.stderr.isatty(), leave=False)
    for name, var in bar:
        ds = analyses[name]
        tr = truth[var].sel(time=times[name])
        an = ds.sel(time=times[name])
        res = score_variable(tr, an, var, n_members=_n_members(ds, var), spectrum=spectrum, label=_label(name, ds))
        entry = methods.setdefault(name, {"variables": {}})
        entry["variables"][var] = {"units": str(truth[var].attrs.get("units", "")),
                                   **{k: v for k, v in res.items() if not k.startswith("_")}}
        if var == headline:
            headline_results[name] = res
    return methods, headline_results


def _seconds_per_analysis(ds: xr.Dataset) -> float:
    sec = ds.attrs.get("seconds_per_analysis")
    try:
        return float(sec) if sec is not None else float("nan")
    except (TypeError, ValueError):
        return float("nan")


def _method_entry(entry: dict[str, Any], ds: xr.Dataset, headline: str) -> dict[str, Any]:
    """One method of metrics.json: the headline numbers in contract order, then the per-variable table."""
    head = entry["variables"][headline]
    sec = _seconds_per_analysis(ds)
    for vals in entry["variables"].values():
        vals["seconds_per_analysis"] = sec
    ordered = {k: head[k] for k in HEADLINE_KEYS}
    ordered.update({"variable": headline, "units": head["units"], "score_units": score_units(head["units"]),
                    "effective_resolution_status": head["effective_resolution_status"],
                    "effective_resolution_note": head["effective_resolution_note"],
                    "n_members": head["n_members"], "n_times": head["n_times"],
                    "crps_kind": head["crps_kind"], "method": ds.attrs.get("method"), "mode": ds.attrs.get("mode")})
    ordered["variables"] = entry["variables"]
    return ordered


def _relative_to_climatology(methods: dict[str, Any]) -> None:
    """``rmse_over_climatology`` for every method when one is named ``climatology`` (the no-skill reference)."""
    clim = (methods.get("climatology") or {}).get("rmse")
    if clim is None or not np.isfinite(clim) or clim <= 0:
        return
    for m in methods.values():
        if m.get("rmse") is not None and np.isfinite(m["rmse"]):
            m["rmse_over_climatology"] = float(m["rmse"]) / float(clim)


def _meta(headline: tuple[str, str], units: str, map_time: Any, spectrum: str, figure_files: list[str]) -> dict[str, Any]:
    return {
        "headline_variable": headline[0],
        "headline_rule": headline[1],
        "headline_units": units,
        "score_units": score_units(units),
        "map_time": str(map_time),
        "spectrum": spectrum,
        "figures": figure_files,
        "aggregation": "spatial mean per time (layers pooled, NaN skipped), then time mean",
        "crps": "fair ensemble CRPS; gaussian from <var>_spread without members; |error| for a deterministic analysis",
        "energy_score": "fair estimator, one vector per time (whole field, layers included)",
        "effective_resolution": "shortest wavelength down to which 1 - PSD(error)/PSD(truth) >= 0.5; null with "
                                "status not_resolved when that holds at no scale up to the domain size",
    }


def evaluate(
    truth: xr.Dataset,
    analyses: Mapping[str, xr.Dataset],
    out_dir: str | os.PathLike,
    variables: Sequence[str] | None = None,
    obs: xr.Dataset | None = None,
    time_index: Any = None,
    overwrite: bool = False,
    *,
    spectrum: str = "isotropic",
    quiet: bool = False,
    figures: bool = True,
    map_worker: bool = False,
) -> dict[str, Any]:
    """Score every analysis against ``truth``; write ``metrics.json``, ``metrics.csv`` and PNG figures.

    See the module docstring for the rules (times, variables, deterministic analyses).

    Parameters
    ----------
    truth : xarray.Dataset
        The truth, gridded variables with a ``time`` dim.
    analyses : mapping of str to xarray.Dataset
        Analyses by method name (``<var>_mean``, members ``<var>``, ``<var>_spread``).
    out_dir : path
        Folder for metrics.json, metrics.csv and the figures.
    variables : sequence of str, optional
        Variables to score, the first being the headline; default every truth variable each analysis has.
    obs : xarray.Dataset, optional
        Observations drawn on the maps.
    time_index : int, str, datetime64 or None
        Time of the maps (see the module docstring); None for the middle shared time.
    overwrite : bool
        Replace an existing ``out_dir``.
    spectrum : {"isotropic", "x"}
        Spectra behind the effective resolution.
    quiet : bool
        No progress bar.
    figures : bool
        False writes the numbers only.
    map_worker : bool
        Draw every second map figure in a second process (:class:`MapWorker`; from :data:`MAP_WORKER_FROM`
        methods on). For the CLI and scripts with an ``if __name__ == "__main__":`` guard (the spawned process
        imports the main module); it draws with matplotlib's default settings, not a notebook's own.

    Returns
    -------
    dict
        The metrics.json content (NaN as None).
    """
    if not analyses:
        raise OceandaError("no analysis given; expected at least one NAME=FILE")
    (headline, rule), present, scored_vars = _choose_variables(truth, analyses, variables, obs)
    tlabel = _truth_label(truth)
    if obs is not None and "time" in obs.coords:  # drawn at the map time: matched in the truth's calendar
        check_calendar(obs["time"], truth["time"], _truth_label(obs, "observations"), f"the truth {tlabel}")
    times = {name: _common_times(truth, ds, _label(name, ds), tlabel) for name, ds in analyses.items()}
    all_common = truth["time"].values
    for t in times.values():
        all_common = np.intersect1d(all_common, t)
    map_time = _select_map_time(all_common, time_index)  # a bad --time fails before any folder or score
    work = [(n, v) for n in analyses for v in (scored_vars or present[n])]
    analyses = _checked_analyses(truth, analyses, times, work, tlabel)  # units, values, grids: before any folder
    worker = figures and map_worker and len(analyses) >= MAP_WORKER_FROM
    with _report_dir(out_dir, overwrite) as out, MapWorker(worker) as mw:
        methods, headline_results = _score_all(truth, analyses, times, work, headline, spectrum, quiet)
        methods = {name: _method_entry(methods[name], ds, headline) for name, ds in analyses.items()}
        figure_files = _figures(out, headline, truth, analyses, headline_results, obs, map_time, mw) if figures else []
        units = str(truth[headline].attrs.get("units", ""))
        _relative_to_climatology(methods)
        result = {"methods": methods, "meta": _meta((headline, rule), units, map_time, spectrum, figure_files)}
        oio.write_json(result, out / "metrics.json", overwrite=True)
        oio.write_text(_csv(methods), out / "metrics.csv", overwrite=True)
    return oio.read_json(Path(out_dir) / "metrics.json")  # exactly what was written (NaN -> None)
