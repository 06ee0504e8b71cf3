"""Producer layouts -> oceanda's canonical layout (/tmp/team/layout.md): xarray in, xarray out, no file access.

Why a module of its own: real CF products name their axes as they like (``latitude``, ``nav_lat``,
``TIME``, ``time_counter``, ``lev``), carry bounds, grid mappings and masks, store longitudes in 0..360
or -180..180 (with a jump at the dateline), and flip latitudes. :func:`normalise` finds the axes by
their CF attributes (cf-xarray: ``standard_name``, ``axis``, ``units`` such as ``degrees_north``) --
by names only when a file has no such attribute at all -- and returns

- gridded fields on dims ``time``, optional ``layer`` / ``depth``, then ``(lat, lon)`` (1-D, increasing;
  lon strictly increasing and continuous, e.g. 150..250 across the dateline) or ``(y, x)`` (projected
  km axes, or a curvilinear grid with 2-D ``lat(y, x)`` / ``lon(y, x)``, lon unwrapped continuously);
- point observations on dim ``obs`` with coordinates ``time``, ``lat``, ``lon`` (optional ``depth``):
  L3 along-track files (everything along ``time``) are turned into this layout; point longitudes are
  left as in the file (attribute ``oceanda_point_lon``): the superobbing maps them onto a grid;
- land as NaN (a land/sea mask variable applied, then dropped); bounds, grid-mapping, scalar and
  non-numeric variables dropped unless named in ``variables``; ``<var>_error`` found under the names
  producers use (``sla_error`` for ``sla_filtered``, ``ancillary_variables``, ``... standard_error``).

Units are parsed with cf-units (:func:`parse_units`); :func:`fill_units` supplies missing ones from
``--units VAR=UNITS``.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from oceanda.errors import DataValidationError

#: Canonical names of the spatial dims (see the module docstring).
GRID_DIMS = ("lat", "lon", "y", "x")

#: Attributes that describe the values of a coordinate; wrong once the coordinate is flipped or unwrapped.
RANGE_ATTRS = ("actual_range", "valid_range", "valid_min", "valid_max")

#: Unit strings common in ocean files that UDUNITS does not parse, and what they mean.
UNIT_ALIASES = {"psu": "1e-3", "PSU": "1e-3", "PSS-78": "1e-3", "pss-78": "1e-3", "PSS78": "1e-3",
                "practical_salinity_units": "1e-3", "dimensionless": "1", "nondimensional": "1", "-": "1"}

#: Names of land/sea mask variables, and whether a non-zero value means sea (True) or land (False).
MASK_NAMES = {"tmask": True, "mask": True, "mask_rho": True, "sea_mask": True, "seamask": True, "ocean_mask": True,
              "wet": True, "lsm": False, "land_mask": False, "landmask": False, "lsmask": False, "land_sea_mask": False}
_MASK_STANDARD_NAMES = {"sea_binary_mask": True, "land_binary_mask": False, "sea_area_fraction": True,
                        "land_area_fraction": False}
_BOUNDS_NAME = re.compile(r"(_bnds|_bnd|_bounds)$|^(bounds|bnds)_")


# ----------------------------------------------------------------------------------------------
# Units
# ----------------------------------------------------------------------------------------------


def parse_units(units: Any) -> Any:
    """The cf-units ``Unit`` of a units string, or None when it is missing, empty or unparsable.

    Parameters
    ----------
    units : a units string such as ``m s-1``, ``degC`` or ``days since 2000-01-01`` (``psu`` reads as ``1e-3``)

    Returns
    -------
    cf_units.Unit or None
    """
    import cf_units

    if units is None:
        return None
    text = str(units).strip()
    text = UNIT_ALIASES.get(text, text)
    if not text:
        return None
    try:
        unit = cf_units.Unit(text)
    except (ValueError, TypeError):
        return None
    return None if unit.is_unknown() else unit


def fill_units(ds: xr.Dataset, source: str, units: Mapping[str, str] | None) -> xr.Dataset:
    """Give variables the units of ``units`` (``--units VAR=UNITS``) where the file has none or unparsable ones.

    A variable whose file units are valid but differ keeps the file's units, with a warning: the same
    ``--units`` go to every file a command reads, and the file knows best. ``<var>_error`` without units
    gets those of ``var``. Variables ``units`` names that the file lacks are ignored.

    Parameters
    ----------
    ds : the Dataset (modified copy returned)
    source : the file, for messages
    units : {variable: units string}

    Returns
    -------
    xarray.Dataset
    """
    units = dict(units or {})
    bad = [f"{k}={v}" for k, v in units.items() if parse_units(v) is None]
    if bad:
        raise DataValidationError(f"--units {' '.join(bad)}: not CF/UDUNITS units; expected e.g. --units sst=degC ssh=m")
    ds = ds.copy()
    for name, unit in units.items():
        if name not in ds.variables:
            continue
        have = ds[name].attrs.get("units")
        if parse_units(have) is None:
            ds[name].attrs["units"] = unit
        elif parse_units(have) != parse_units(unit):
            warnings.warn(f"{source}: variable '{name}' has units '{have}'; keeping them rather than --units {name}={unit}",
                          UserWarning, stacklevel=3)
    for name in list(ds.data_vars):
        base = str(name)[: -len("_error")] if str(name).endswith("_error") else None
        if base in ds.variables and "units" not in ds[name].attrs and "units" in ds[base].attrs:
            ds[name].attrs["units"] = ds[base].attrs["units"]
    return ds


# ----------------------------------------------------------------------------------------------
# Variables to drop, masks, error companions
# ----------------------------------------------------------------------------------------------


def _is_time_like(var: xr.Variable) -> bool:
    if np.issubdtype(var.dtype, np.datetime64):
        return True
    if var.dtype == object and var.size:
        import cftime

        return isinstance(np.ravel(var.values)[0], cftime.datetime)
    return False


def _attr_targets(var: xr.Variable, key: str) -> list[str]:
    """Variable names in an attribute such as ``bounds`` or ``grid_mapping: crs: lat lon``."""
    text = var.attrs.get(key, var.encoding.get(key))
    if not isinstance(text, str):
        return []
    return [t.rstrip(":") for t in text.split() if t.endswith(":") or ":" not in text]


def find_mask(ds: xr.Dataset, keep: Sequence[str] = (), time_dims: Sequence[str] = ("time",)) -> tuple[str, Any] | None:
    """``(name, rule)`` of the land/sea mask variable, or None; ``rule(values) -> bool sea``.

    Found by ``standard_name`` (``sea_binary_mask``, ``land_binary_mask``, ``*_area_fraction``), by
    ``flag_meanings`` naming land or sea/ocean/water, or by a name of :data:`MASK_NAMES` (non-zero
    ``tmask``/``mask`` is sea; ``lsm``/``land_mask`` >= 0.5 is land). A variable along one of
    ``time_dims`` (longer than one step) is no land mask: land does not move.
    """
    times = {d for d in time_dims if ds.sizes.get(d, 0) > 1}
    for name, var in ds.variables.items():
        if name in keep or name in ds.dims or var.ndim < 2 or times & set(var.dims):  # land does not move in time
            continue
        std = var.attrs.get("standard_name")
        if std in _MASK_STANDARD_NAMES:
            sea = _MASK_STANDARD_NAMES[std]
            return str(name), (lambda v, s=sea: (v >= 0.5) if s else (v < 0.5))
        meanings = str(var.attrs.get("flag_meanings", "")).lower().split()
        values = np.atleast_1d(var.attrs.get("flag_values", np.arange(len(meanings))))
        if meanings and len(values) == len(meanings) and any(k in m for m in meanings for k in ("land", "sea", "ocean", "water")):
            land = [v for v, m in zip(values, meanings) if "land" in m]
            wet = [v for v, m in zip(values, meanings) if any(k in m for k in ("sea", "ocean", "water")) and "land" not in m]
            if wet:
                return str(name), (lambda v, w=tuple(wet): np.isin(v, w))
            return str(name), (lambda v, la=tuple(land): ~np.isin(v, la))
        rule = MASK_NAMES.get(str(name).lower())
        if rule is not None:
            return str(name), ((lambda v: v != 0) if rule else (lambda v: v < 0.5))
    return None


def _non_numeric_field(var: xr.Variable, time_dims: set[str]) -> bool:
    """A time-varying gridded variable (a time dim and another) holding strings, booleans or complex numbers.

    Why: such a variable is where a field was expected (``ssh`` written as text); dropping it as auxiliary
    would score or analyse something else without a word. Times (datetime64, cftime) are not refused.
    """
    if var.ndim < 2 or not time_dims & set(map(str, var.dims)):
        return False
    kind = var.dtype.kind
    return kind in "USbc" or (kind == "O" and not _is_time_like(var))


def _drop_auxiliary(ds: xr.Dataset, keep: Sequence[str], mask: str | None, source: str = "dataset",
                    time_dims: Sequence[str] = ("time",)) -> xr.Dataset:
    """Drop bounds, grid mappings, scalar and non-numeric data variables (not those in ``keep`` or the mask).

    A non-numeric variable shaped like a field (:func:`_non_numeric_field`) is refused, naming ``source``.
    """
    keep = set(keep) | {f"{k}_error" for k in keep} | ({mask} if mask else set())
    drop: set[str] = set()
    for name, var in ds.variables.items():
        drop.update(_attr_targets(var, "bounds") + _attr_targets(var, "climatology") + _attr_targets(var, "grid_mapping"))
        if _BOUNDS_NAME.search(str(name)) or "grid_mapping_name" in var.attrs:
            drop.add(str(name))
    for name, var in ds.data_vars.items():
        numeric = np.issubdtype(var.dtype, np.floating) or np.issubdtype(var.dtype, np.integer)
        if var.attrs.get("oceanda_diagnostic"):  # oceanda's own per-time diagnostics (ESS, retrieved times)
            keep.add(str(name))
        elif not numeric and str(name) not in drop and str(name) not in keep \
                and _non_numeric_field(var.variable, set(time_dims)):
            raise DataValidationError(
                f"{source}: variable '{name}' has non-numeric dtype {var.dtype} on dims {tuple(map(str, var.dims))}; "
                "expected a float or integer field (or remove the variable from the file)")
        elif not numeric or (var.ndim == 0 and not str(name).endswith("_error")):
            drop.add(str(name))
    drop = {d for d in drop if d in ds.variables and d not in keep and d not in ds.dims}
    ds = ds.drop_vars(sorted(drop))
    for var in ds.variables.values():
        for key in ("bounds", "climatology", "grid_mapping"):
            var.attrs.pop(key, None)
            var.encoding.pop(key, None)
        anc = var.attrs.get("ancillary_variables")
        if isinstance(anc, str) and any(a not in ds.variables for a in anc.split()):
            var.attrs.pop("ancillary_variables")
    return ds


def _apply_mask(ds: xr.Dataset, found: tuple[str, Any] | None, tdim: str | None) -> xr.Dataset:
    """Land -> NaN in every data variable on the mask's grid; the mask variable dropped."""
    if found is None or found[0] not in ds.variables:
        return ds
    name, rule = found
    mask = ds[name]
    if tdim in mask.dims:
        mask = mask.isel({tdim: 0}, drop=True)
    values = np.asarray(mask.values)
    wet = rule(values) & (np.isfinite(values) if np.issubdtype(values.dtype, np.floating) else True)  # NaN: land
    sea = xr.DataArray(wet, dims=mask.dims, coords={d: mask[d] for d in mask.dims if d in mask.coords})
    ds = ds.drop_vars(name)
    for v in list(ds.data_vars):
        da = ds[v]
        m = sea
        for d in [d for d in m.dims if d not in da.dims]:
            m = m.isel({d: 0}, drop=True)
        if m.ndim < 2 or not set(m.dims) <= set(da.dims):
            continue
        attrs = {k: a for k, a in da.attrs.items() if k not in RANGE_ATTRS}
        ds[v] = da.where(m).assign_attrs(attrs)
        ds[v].encoding = da.encoding
    ds.attrs["oceanda_land_mask"] = f"land (NaN) from the file's mask variable '{name}'"
    return ds


def _error_candidates(ds: xr.Dataset, name: str) -> list[str]:
    var = ds[name]
    out = [a for a in str(var.attrs.get("ancillary_variables", "")).split()
           if a in ds.data_vars and ("standard_error" in str(ds[a].attrs.get("standard_name", "")) or a.endswith(("_error", "_err")))]
    prefix = name.split("_")[0]
    for cand in (f"{name}_err", f"{prefix}_error", f"{prefix}_err"):
        if cand in ds.data_vars and cand != name and not (cand.startswith(prefix + "_") and prefix in ds.data_vars and prefix != name):
            out.append(cand)
    std = var.attrs.get("standard_name")
    if std:
        out += [str(a) for a, v in ds.data_vars.items() if v.attrs.get("standard_name") == f"{std} standard_error"]
    return out


def _rename_errors(ds: xr.Dataset) -> xr.Dataset:
    """Copy each producer error variable (``sla_error``, ancillary standard errors) to ``<var>_error``."""
    used: set[str] = set()
    for name in [str(n) for n in ds.data_vars if not str(n).endswith(("_error", "_err"))]:
        if f"{name}_error" in ds.variables:
            continue
        cands = [c for c in _error_candidates(ds, name) if c != f"{name}_error"]
        if cands:
            ds[f"{name}_error"] = ds[cands[0]]
            used.add(cands[0])
    orphans = [u for u in used if not (u.endswith("_error") and u[: -len("_error")] in ds.data_vars)]
    return ds.drop_vars(orphans)


# ----------------------------------------------------------------------------------------------
# Axes
# ----------------------------------------------------------------------------------------------


def _cf_names(ds: xr.Dataset) -> dict[str, list[str]]:
    """Names of the latitude, longitude, time, vertical and X/Y variables, from CF attributes (cf-xarray)."""
    import cf_xarray  # noqa: F401  (registers ds.cf)

    every = ds.set_coords([v for v in ds.data_vars if ds[v].ndim <= 2])  # producers leave lat/lon as data variables too
    coords, axes = every.cf.coordinates, every.cf.axes
    time = list(dict.fromkeys(coords.get("time", []) + axes.get("T", [])
                              + [str(n) for n, v in ds.variables.items() if v.ndim == 1 and _is_time_like(v)]))
    found = {"lat": list(coords.get("latitude", [])), "lon": list(coords.get("longitude", [])), "time": time,
             "z": list(dict.fromkeys(coords.get("vertical", []) + axes.get("Z", []))),
             "Y": list(axes.get("Y", [])), "X": list(axes.get("X", []))}
    return {k: [n for n in v if n in ds.variables] for k, v in found.items()}


def _is_canonical(ds: xr.Dataset) -> bool:
    dims = {d for v in ds.data_vars.values() for d in v.dims}
    return "obs" in dims or {"lat", "lon"} <= dims or {"y", "x"} <= dims


def _pick_horizontal(ds: xr.Dataset, names: dict[str, list[str]]) -> tuple[str, str, str] | None:
    """``(kind, lat, lon)`` with kind ``rect`` (1-D on two dims), ``points`` (1-D on one dim) or ``curv`` (2-D)."""
    pairs = [(a, b) for a in names["lat"] for b in names["lon"]]
    for kind, test in (("rect", lambda a, b: a.ndim == b.ndim == 1 and a.dims != b.dims),
                       ("points", lambda a, b: a.ndim == b.ndim == 1 and a.dims == b.dims),
                       ("curv", lambda a, b: a.ndim == b.ndim == 2 and set(a.dims) == set(b.dims))):
        for a, b in pairs:
            if test(ds[a], ds[b]):
                return kind, a, b
    return None


def _rename(ds: xr.Dataset, var_to: Mapping[str, str], dim_to: Mapping[str, str]) -> xr.Dataset:
    """Rename variables and dims together; a coordinate that becomes its dim's name is made its index.

    A variable already bearing a target name, and not renamed itself, is dropped (it would clash); the
    index variable of a renamed dim follows the dim unless another variable takes the dim's new name.
    """
    var_to = dict(var_to)
    targets = set(var_to.values()) | set(dim_to.values())
    drop = {t for t in targets if t in ds.variables and t not in var_to and t not in dim_to}
    for old, new in dim_to.items():
        if old in ds.variables and old not in var_to:
            if new in var_to.values():
                drop.add(old)
            else:
                var_to[old] = new
    ds = ds.drop_vars(sorted(drop))
    mapping = {k: v for k, v in {**dim_to, **var_to}.items() if k != v and (k in ds.variables or k in ds.dims)}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not create an index.*")
        ds = ds.rename(mapping)
    for d in set(mapping.values()):
        if d in ds.dims and d in ds.variables and ds[d].dims == (d,) and d not in ds.indexes:
            ds = ds.set_xindex(d)
    return ds


def _time_of(ds: xr.Dataset, names: dict[str, list[str]], along: str | None = None) -> str | None:
    cands = [n for n in names["time"] if ds[n].ndim == 1 and (along is None or ds[n].dims == (along,))]
    index = [n for n in cands if n in ds.dims]
    return (index or cands or [None])[0]


def _canonical_vertical(ds: xr.Dataset, name: str) -> str:
    """``layer`` for model levels (no length unit), ``depth`` for coordinates in metres (or other lengths)."""
    unit = parse_units(ds[name].attrs.get("units"))
    if name == "layer" or unit is None or not unit.is_convertible("m"):
        return "layer"
    return "depth"


def _to_points(ds: xr.Dataset, names: dict[str, list[str]], lat: str, lon: str) -> xr.Dataset:
    """Everything along the dim of ``lat`` -> dim ``obs`` with coordinates time/lat/lon(/depth)."""
    dim = ds[lat].dims[0]
    tname = _time_of(ds, names, along=dim)
    var_to = {lat: "lat", lon: "lon"}
    if tname:
        var_to[tname] = "time"
    zs = [z for z in names["z"] if ds[z].dims == (dim,) and _canonical_vertical(ds, z) == "depth"]
    if zs:
        var_to[zs[0]] = "depth"
    if dim != "obs":
        ds = ds.swap_dims({dim: "obs"}) if dim in ds.indexes else ds.rename_dims({dim: "obs"})
    extra_times = [n for n in names["time"] if n in ds.variables and n != tname and ds[n].dims == ("obs",)]
    ds = _rename(ds.drop_vars(extra_times), var_to, {})
    labels = [str(n) for n, v in ds.data_vars.items() if np.issubdtype(v.dtype, np.integer)]  # cycle, track, platform
    ds = ds.set_coords([v for v in var_to.values() if v in ds.data_vars] + labels)
    ds.attrs["oceanda_point_lon"] = "longitudes as in the file (not wrapped); mapped onto a grid by superobbing"
    return ds


def _grid_renames(ds: xr.Dataset, names: dict[str, list[str]], horiz: tuple[str, str, str] | None) -> tuple[dict, dict]:
    var_to: dict[str, str] = {}
    dim_to: dict[str, str] = {}
    spatial: set[str] = set()
    if horiz and horiz[0] == "rect":
        _, lat, lon = horiz
        var_to.update({lat: "lat", lon: "lon"})
        dim_to.update({ds[lat].dims[0]: "lat", ds[lon].dims[0]: "lon"})
        spatial = {ds[lat].dims[0], ds[lon].dims[0]}
    else:
        ydim = xdim = None
        if horiz:  # curvilinear: index dims become y/x (the last dim of lat is x unless X/Y axes say otherwise)
            _, lat, lon = horiz
            var_to.update({lat: "lat", lon: "lon"})
            ydim, xdim = ds[lat].dims
        ys = [n for n in names["Y"] if ds[n].ndim == 1 and (ydim is None or ds[n].dims[0] in ds[lat].dims)]
        xs = [n for n in names["X"] if ds[n].ndim == 1 and (xdim is None or ds[n].dims[0] in ds[lat].dims)]
        if ys and xs and ds[ys[0]].dims != ds[xs[0]].dims:
            ydim, xdim = ds[ys[0]].dims[0], ds[xs[0]].dims[0]
            var_to.update({ys[0]: "y", xs[0]: "x"})
        if ydim and xdim:
            dim_to.update({ydim: "y", xdim: "x"})
            spatial = {ydim, xdim}
    tname = _time_of(ds, names)
    if tname and ds[tname].dims[0] not in spatial:
        var_to[tname] = "time"
        dim_to[ds[tname].dims[0]] = "time"
    zs = [z for z in names["z"] if ds[z].ndim == 1 and ds[z].dims[0] not in spatial | {"time"} and z not in var_to]
    if zs:
        var_to[zs[0]] = dim_to[ds[zs[0]].dims[0]] = _canonical_vertical(ds, zs[0])
    members = [str(n) for n, v in ds.variables.items() if v.ndim == 1 and v.attrs.get("standard_name") == "realization"]
    if members and ds[members[0]].dims[0] not in dim_to:  # ensemble members (CMIP-style 'realization')
        var_to[members[0]] = dim_to[ds[members[0]].dims[0]] = "member"
    return var_to, dim_to


# ----------------------------------------------------------------------------------------------
# Longitudes and latitudes
# ----------------------------------------------------------------------------------------------


def continuous_lon(values: np.ndarray) -> np.ndarray:
    """Longitudes unwrapped along the last axis (and the first column along the rows), shifted so the smallest lies in [-180, 360).

    ``150..180, -180..-110`` -> ``150..250``; ``354..359.5, 0..36`` -> ``-6..36``; values without a jump and
    within [-180, 360] are returned unchanged.
    """
    lon = np.asarray(values, dtype=np.float64)
    if lon.ndim == 2:
        col = np.unwrap(lon[:, 0], period=360.0)
        lon = np.unwrap(lon + (col - lon[:, 0])[:, None], period=360.0, axis=1)
    else:
        lon = np.unwrap(lon, period=360.0)
    lo = np.nanmin(lon)
    shift = 360.0 * np.floor((lo + 180.0) / 360.0) if lo < -180.0 or lo >= 360.0 else 0.0
    if np.nanmax(lon) - shift > 360.0 and lo - shift - 360.0 >= -180.0:
        shift += 360.0  # 354..396 (a domain across 0E) reads better as -6..36
    return lon - shift


def _changed(da: xr.DataArray, note: str) -> dict:
    attrs = {k: v for k, v in da.attrs.items() if k not in RANGE_ATTRS}
    attrs["comment"] = (str(attrs["comment"]) + "; " if attrs.get("comment") else "") + note
    return attrs


def _fix_rectilinear(ds: xr.Dataset) -> xr.Dataset:
    """Flip decreasing lat/lon with the data; make lon strictly increasing and continuous (no dateline jump)."""
    if "lat" in ds.dims and "lat" in ds.coords and ds.sizes["lat"] > 1 and ds["lat"].values[-1] < ds["lat"].values[0]:
        attrs = _changed(ds["lat"], "oceanda: flipped to increasing latitude")
        ds = ds.isel(lat=slice(None, None, -1))
        ds["lat"].attrs = attrs
    if "lon" not in ds.dims or "lon" not in ds.coords or ds["lon"].ndim != 1 or ds.sizes["lon"] < 2:
        return ds
    raw = np.asarray(ds["lon"].values, dtype=np.float64)
    notes = []
    k = _wrap_gap(raw)
    if k is not None:  # 0..36, 354..359.5 (a 0..360 product cut across 0E): the western part first, as -6..36
        order = np.r_[np.arange(k, raw.size), np.arange(k)]
        ds, raw = ds.isel(lon=order), raw[order]
        lon = np.r_[raw[: raw.size - k] - 360.0, raw[raw.size - k:]]
        notes.append("reordered across the 0/360 seam")
    else:
        lon = continuous_lon(raw)
    if lon[-1] < lon[0]:
        ds, lon, raw = ds.isel(lon=slice(None, None, -1)), lon[::-1], raw[::-1]
        notes.append("flipped to increasing longitude")
    if lon.size > 2 and np.isclose(lon[-1] - lon[0], 360.0):
        ds, lon, raw = ds.isel(lon=slice(None, -1)), lon[:-1], raw[:-1]
        notes.append("cyclic duplicate column dropped")
    if not np.array_equal(lon, raw):
        notes.append(f"made continuous ({lon[0]:g}..{lon[-1]:g}) from the file's {raw.min():g}..{raw.max():g}")
    if notes:
        attrs = _changed(ds["lon"], "oceanda: " + ", ".join(notes))
        ds = ds.assign_coords(lon=("lon", lon.astype(ds["lon"].dtype), attrs))
    return ds


def _wrap_gap(lon: np.ndarray) -> int | None:
    """Index after the one gap of an increasing regional lon that is contiguous across the 0/360 seam, else None."""
    if lon.size < 3 or np.any(np.diff(lon) <= 0):
        return None
    d = np.diff(lon)
    step = float(np.median(d))
    big = np.flatnonzero(d > 1.5 * step)
    if big.size != 1 or step <= 0:
        return None
    k = int(big[0]) + 1
    seam = lon[0] + 360.0 - lon[-1]  # the step across the seam if the eastern part came first
    return k if np.isclose(seam, step, rtol=0.01) or 0 < seam < 1.5 * step else None


def _fix_curvilinear(ds: xr.Dataset) -> xr.Dataset:
    if "lon" not in ds.coords or ds["lon"].ndim != 2:
        return ds
    raw = np.asarray(ds["lon"].values, dtype=np.float64)
    lon = continuous_lon(raw)
    if np.array_equal(lon, raw, equal_nan=True):
        return ds
    attrs = _changed(ds["lon"], "oceanda: unwrapped to continuous longitudes")
    return ds.assign_coords(lon=(ds["lon"].dims, lon.astype(ds["lon"].dtype), attrs))


#: Leading dims of a gridded variable, in this order; the spatial pair comes last, any other dim between.
LEADING_DIMS = ("time", "member", "layer", "depth")


def canonical_order(ds: xr.Dataset) -> xr.Dataset:
    """Every variable of a gridded Dataset in the dim order ``(time, [member], [layer|depth], ..., y, x)`` (or lat, lon).

    Why: a producer may store ``(time, x, y)`` or ``(y, x, time)``; the same states in any order must give
    the same arrays, grid fingerprint and analysis. Variables already in order are left as they are (no copy);
    point observations (dim ``obs``) are left alone. The on-disk chunking of a transposed variable is
    forgotten (it describes the file's order).
    """
    if "obs" in ds.dims:
        return ds
    spatial = next((p for p in (("y", "x"), ("lat", "lon")) if set(p) <= set(ds.dims)), None)
    if spatial is None:
        return ds
    order = [d for d in LEADING_DIMS if d in ds.dims]
    changed = []
    for name, var in ds.variables.items():
        dims = tuple(map(str, var.dims))
        want = tuple(d for d in order if d in dims) + tuple(d for d in dims if d not in order and d not in spatial) \
            + tuple(d for d in spatial if d in dims)
        if want != dims:
            changed.append(str(name))
    if not changed:
        return ds
    ds = ds.transpose(*order, ..., *spatial)
    for name in changed:
        for key in ("chunksizes", "preferred_chunks", "chunks", "contiguous"):
            ds.variables[name].encoding.pop(key, None)
    return ds


# ----------------------------------------------------------------------------------------------
# The entry point
# ----------------------------------------------------------------------------------------------


def normalise(ds: xr.Dataset, source: str, *, variables: Sequence[str] | None = None,
              units: Mapping[str, str] | None = None) -> xr.Dataset:
    """A producer Dataset in oceanda's canonical layout (module docstring); validation is left to :mod:`oceanda.io`.

    Parameters
    ----------
    ds : the Dataset as xarray opened it (CF-decoded: ``_FillValue`` -> NaN, times -> datetime64 or cftime)
    source : what to call it in messages (its file)
    variables : variables to keep even where they look auxiliary (they must then pass validation)
    units : {variable: units} for variables without (valid) units, from ``--units VAR=UNITS``

    Returns
    -------
    xarray.Dataset: canonical dims and coordinates, land NaN, auxiliary variables dropped
    """
    keep = list(variables or [])
    tdims = {ds[n].dims[0] for n in _cf_names(ds)["time"] if ds[n].ndim == 1} | {"time"}
    mask = find_mask(ds, keep, sorted(tdims))
    ds = _drop_auxiliary(ds, keep, mask[0] if mask else None, source, sorted(map(str, tdims)))
    names = _cf_names(ds)
    if not _is_canonical(ds) and not (names["lat"] or names["lon"] or names["X"] or names["Y"]):
        names = _cf_names(ds.cf.guess_coord_axis())  # no CF attribute at all: fall back to names
    horiz = _pick_horizontal(ds, names)
    if horiz and horiz[0] == "points":
        ds = _to_points(ds, names, horiz[1], horiz[2])
    else:
        if not (horiz is None and "obs" in ds.dims):
            var_to, dim_to = _grid_renames(ds, names, horiz)
            ds = _rename(ds, var_to, dim_to)
            ds = ds.set_coords([v for v in var_to.values() if v in ds.data_vars])
            extra_times = [n for n, v in ds.variables.items() if n != "time" and v.dims == ("time",) and _is_time_like(v)]
            ds = ds.drop_vars(extra_times)
        ds = _fix_rectilinear(ds) if "lat" in ds.dims else _fix_curvilinear(ds)
    ds = _apply_mask(ds, mask, "time" if "time" in ds.dims else None)
    ds = _rename_errors(ds)
    ds = canonical_order(ds)
    for var in ds.variables.values():  # xarray writes the coordinates attribute afresh; the file's may name dropped ones
        var.encoding.pop("coordinates", None)
    return fill_units(ds, source, units)
