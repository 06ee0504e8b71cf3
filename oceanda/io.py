"""The only module that touches files.

Reading is lazy (dask) and validated: every error names the file, the variable and what was
expected. Writing is atomic (temporary file in the target directory, fsync, rename), CF-1.8,
compressed (zlib + shuffle, set explicitly for both engines), float32 fields, and refuses to
overwrite an existing file -- or any file a Dataset was read from -- unless told.

Besides NetCDF, this module owns the other files oceanda writes: JSON reports, PNG figures and
model checkpoints (safetensors + JSON; nothing is ever unpickled).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import glob
import json
import os
import shlex
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import xarray as xr

from oceanda.conventions import normalise
from oceanda.errors import (
    CheckpointError,
    DataValidationError,
    GridMismatchError,
    OceandaError,
    OutputExistsError,
)
from oceanda.grid import EARTH_RADIUS_KM, time_days

PathLike = str | os.PathLike

#: Dimensions oceanda understands. Data variables may use no others.
KNOWN_DIMS = ("time", "member", "layer", "depth", "lat", "lon", "y", "x", "obs", "sample", "window", "coefficient", "mode", "run")
SPATIAL_DIM_PAIRS = (("y", "x"), ("lat", "lon"))

#: Default observation error (standard deviation) when a file has no ``<var>_error``:
#: this fraction of the standard deviation of the observed values, with a warning.
DEFAULT_OBS_ERROR_FRACTION = 0.1

#: CF standard names for the variables oceanda's testbeds and users commonly carry.
STANDARD_NAMES = {
    "ssh": "sea_surface_height_above_geoid",
    "zos": "sea_surface_height_above_geoid",
    "sst": "sea_surface_temperature",
    "sss": "sea_surface_salinity",
    "temp": "sea_water_potential_temperature",
    "thetao": "sea_water_potential_temperature",
    "so": "sea_water_salinity",
    "uo": "eastward_sea_water_velocity",
    "vo": "northward_sea_water_velocity",
    "u": "eastward_sea_water_velocity",
    "v": "northward_sea_water_velocity",
    "lat": "latitude",
    "lon": "longitude",
    "time": "time",
    "depth": "depth",
}

# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------


def _expand_paths(paths: PathLike | Sequence[PathLike]) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[Path] = []
    for p in paths:
        s = os.fspath(p)
        if any(ch in s for ch in "*?["):
            matches = sorted(glob.glob(s))
            if not matches:
                raise DataValidationError(f"{s}: no file matches this pattern")
            out.extend(Path(m) for m in matches)
        else:
            out.append(Path(s))
    if not out:
        raise DataValidationError("no input file given")
    for p in out:
        if not p.exists():
            raise DataValidationError(f"{p}: no such file")
    return out


def _open_one(path: Path, chunks: Any, engine: str | None) -> xr.Dataset:
    try:
        if path.suffix == ".zarr" or (path.is_dir() and ((path / ".zgroup").exists() or (path / "zarr.json").exists())):
            with warnings.catch_warnings():  # stores without consolidated metadata are fine, only slower to open
                warnings.filterwarnings("ignore", message=".*consolidated metadata.*", category=RuntimeWarning)
                return xr.open_zarr(path, chunks=chunks)
        return xr.open_dataset(path, chunks=chunks, engine=engine)
    except ValueError as exc:
        if "decode" not in str(exc) and "time" not in str(exc):
            raise DataValidationError(f"{path}: cannot be read as NetCDF or zarr ({exc})") from exc
        try:  # times numpy cannot hold (e.g. 'months since' in a 360_day calendar): cftime can
            return xr.open_dataset(path, chunks=chunks, engine=engine, decode_times=xr.coders.CFDatetimeCoder(use_cftime=True))
        except ValueError:
            raise DataValidationError(f"{path}: times cannot be decoded ({exc}); expected CF time units and calendar") from exc
    except OSError as exc:
        raise DataValidationError(f"{path}: cannot be read as NetCDF or zarr ({exc})") from exc


def _open_normalised(path: Path, chunks: Any, engine: str | None, variables: Sequence[str] | None,
                     units: Mapping[str, str] | None) -> xr.Dataset:
    """One file in the canonical layout; a time chunking request follows the time dim's new name."""
    ds = _open_one(path, {} if isinstance(chunks, Mapping) else chunks, engine)
    ds = normalise(ds, str(path), variables=variables, units=units)
    if isinstance(chunks, Mapping):
        ds = ds.chunk({d: c for d, c in chunks.items() if d in ds.dims})
    return ds


def units_are_known(units: str) -> bool:
    """Whether cf-units (UDUNITS-2) parses a units string (``psu`` and friends read as ``1e-3``).

    Parameters
    ----------
    units : a units string such as ``m s-1`` or ``days since 2000-01-01``

    Returns
    -------
    bool
    """
    from oceanda.conventions import parse_units

    return parse_units(units) is not None


def _check_coords(ds: xr.Dataset, source: str) -> None:
    for name in ds.dims:
        if name not in ds.coords:
            continue
        values = ds[name].values
        if values.ndim != 1 or values.size < 2:
            continue
        if name in ("member", "obs"):
            continue
        if name == "time" and values.dtype == object:  # cftime calendars: compare days, not objects
            values = time_days(values)
        if np.issubdtype(values.dtype, np.number) or np.issubdtype(values.dtype, np.datetime64):
            d = np.diff(values)
            zero = np.zeros((), dtype=d.dtype)
            if np.any(d == zero):
                dup = values[1:][d == zero][0]
                raise DataValidationError(
                    f"{source}: coordinate '{name}' has duplicated value {dup}; expected strictly monotonic values"
                )
            if name == "time":
                if not np.all(d > zero):
                    raise DataValidationError(
                        f"{source}: coordinate 'time' is not increasing; expected strictly increasing times"
                    )
            elif not (np.all(d > zero) or np.all(d < zero)):
                raise DataValidationError(
                    f"{source}: coordinate '{name}' is not monotonic; expected strictly monotonic values"
                )


def _check_units(da: xr.DataArray, name: str, source: str) -> None:
    """Refuse a missing or unparsable (cf-units) ``units`` attribute, telling how to supply one."""
    units = da.attrs.get("units")
    if units is None:
        raise DataValidationError(
            f"{source}: variable '{name}' has no 'units' attribute; expected CF units (give them with --units {name}=UNITS)"
        )
    if not units_are_known(str(units)):
        raise DataValidationError(
            f"{source}: variable '{name}' has unknown units '{units}'; expected UDUNITS units such as 'm', 'm s-1', "
            f"'degC' (give them with --units {name}=UNITS)"
        )


def _data_variables(ds: xr.Dataset, variables: Sequence[str] | None, source: str) -> list[str]:
    if variables is None:  # per-time diagnostics (e.g. an analysis' ESS, weights) are not fields
        return [v for v in ds.data_vars if not str(v).endswith("_error") and not ds[v].attrs.get("oceanda_diagnostic")]
    missing = [v for v in variables if v not in ds.data_vars]
    if missing:
        raise DataValidationError(
            f"{source}: missing variable(s) {missing}; expected {list(variables)}, found {sorted(map(str, ds.data_vars))}"
        )
    return list(variables)


def validate_dataset(
    ds: xr.Dataset,
    source: str,
    variables: Sequence[str] | None = None,
    *,
    require_time: bool = True,
    check_values: bool = True,
    check_units: bool = True,
    allow_all_nan: bool = False,
) -> list[str]:
    """Check layout, dtypes, units, coordinates and values; return the data-variable names.

    Raises :class:`DataValidationError` naming ``source`` and the offending variable.

    Parameters
    ----------
    ds : the Dataset to check
    source : what to call it in errors (usually its file)
    variables : data variables required (default: all but ``*_error`` and diagnostics)
    require_time, check_values, check_units : check the time dim, Inf/all-NaN values, units
    allow_all_nan : accept an all-NaN variable

    Returns
    -------
    list of str: the data-variable names
    """
    names = _data_variables(ds, variables, source)
    if not names:
        raise DataValidationError(f"{source}: no data variables; expected at least one gridded field")
    points = "obs" in ds.dims  # point/trajectory observations carry time as a coordinate along 'obs'
    if points and require_time and "time" not in ds.coords:
        raise DataValidationError(f"{source}: point observations without a 'time' coordinate; expected time along 'obs'")
    if require_time and not points and "time" not in ds.dims:
        raise DataValidationError(f"{source}: missing dimension 'time'; expected fields with a time dimension")
    for name in names:
        da = ds[name]
        if not (np.issubdtype(da.dtype, np.floating) or np.issubdtype(da.dtype, np.integer)):
            raise DataValidationError(
                f"{source}: variable '{name}' has non-numeric dtype {da.dtype}; expected a float or integer field"
            )
        extra = [d for d in da.dims if d not in KNOWN_DIMS]
        if extra:
            raise DataValidationError(
                f"{source}: variable '{name}' has unexpected dimension(s) {extra}; expected only {list(KNOWN_DIMS)}"
            )
        if require_time and "time" not in da.dims and "obs" not in da.dims:
            raise DataValidationError(
                f"{source}: variable '{name}' is missing dimension 'time'; expected dims like (time, [layer,] y, x)"
            )
        if "obs" not in da.dims and not any(a in da.dims and b in da.dims for a, b in SPATIAL_DIM_PAIRS):
            if da.ndim > 1 or "time" not in da.dims:
                raise DataValidationError(
                    f"{source}: variable '{name}' has dims {da.dims}; expected a spatial pair (y, x) or (lat, lon),"
                    " or an 'obs' dimension for point observations"
                )
        if check_units:
            _check_units(da, name, source)
    _check_coords(ds, source)
    if check_values:
        checks = {}
        for name in names:
            da = ds[name]
            if np.issubdtype(da.dtype, np.floating):
                checks[name] = (np.isinf(da.data).any(), np.isfinite(da.data).any())
        if checks:
            import dask

            (computed,) = dask.compute(checks)
            for name, (has_inf, has_finite) in computed.items():
                if bool(has_inf):
                    raise DataValidationError(f"{source}: variable '{name}' contains Inf values; expected finite values or NaN")
                if not bool(has_finite) and not allow_all_nan:
                    raise DataValidationError(f"{source}: variable '{name}' is all NaN; expected at least one finite value")
    return names


def open_states(
    paths: PathLike | Sequence[PathLike],
    chunks: Mapping[str, int] | str | None = "auto",
    *,
    variables: Sequence[str] | None = None,
    engine: str | None = None,
    check_values: bool = True,
    units: Mapping[str, str] | None = None,
) -> xr.Dataset:
    """Open model states lazily from one or more NetCDF/zarr files, concatenated along ``time``.

    ``chunks`` is passed to xarray (dask); by default one chunk spans whole fields. Every file is
    mapped to the canonical layout (:func:`oceanda.conventions.normalise`: CF axes found by their
    attributes, bounds and auxiliary variables dropped, land NaN, continuous longitudes), then
    validated on its own (so errors name it); the concatenation is checked for increasing,
    non-duplicated times.

    Parameters
    ----------
    paths : one file or zarr store, or a sequence of them (globs expanded)
    chunks : dask chunks for xarray (``"auto"``: 64 time steps per chunk)
    variables : data variables kept (default: all; their ``<var>_error`` too)
    engine : xarray engine for NetCDF (None: xarray's choice)
    check_values : reject Inf and all-NaN variables
    units : {variable: units} for variables the files give no (valid) units (CLI ``--units VAR=UNITS``)

    Returns
    -------
    xarray.Dataset: lazy, concatenated along ``time``
    """
    files = _expand_paths(paths)
    if chunks == "auto":
        chunks = {"time": 64}
    parts = []
    for f in files:
        ds = _open_normalised(f, chunks, engine, variables, units)
        validate_dataset(ds, str(f), variables, check_values=check_values)
        parts.append(ds)
    if len(parts) == 1:
        out = parts[0]
    else:
        first = parts[0]
        for f, p in zip(files[1:], parts[1:]):
            for d in first.dims:
                if d != "time" and d in p.dims and p.sizes[d] != first.sizes[d]:
                    raise GridMismatchError(
                        f"{f}: dimension '{d}' has size {p.sizes[d]}; expected {first.sizes[d]} as in {files[0]}"
                    )
        out = xr.concat(parts, dim="time", data_vars="minimal", coords="minimal", compat="override", join="override")
        _check_coords(out[["time"]] if "time" in out.coords else out, " + ".join(str(f) for f in files))
    out.encoding["oceanda_sources"] = [str(f.resolve()) for f in files]
    if variables is not None:
        keep = list(variables) + [f"{v}_error" for v in variables if f"{v}_error" in out]
        out = out[keep]
    return out


def _grid_mismatch(obs: xr.Dataset, like: xr.Dataset, source: str) -> None:
    for pair in SPATIAL_DIM_PAIRS:
        if all(d in like.dims for d in pair):
            for d in pair:
                if d not in obs.dims:
                    raise GridMismatchError(f"{source}: missing dimension '{d}'; expected the state grid {pair}")
                if obs.sizes[d] != like.sizes[d]:
                    raise GridMismatchError(
                        f"{source}: dimension '{d}' has size {obs.sizes[d]}; expected {like.sizes[d]} as in the states"
                    )
                if d in obs.coords and d in like.coords:
                    a, b = np.asarray(obs[d].values, float), np.asarray(like[d].values, float)
                    if not np.allclose(a, b, rtol=1e-6, atol=1e-6 * (np.abs(b).max() + 1)):
                        raise GridMismatchError(
                            f"{source}: coordinate '{d}' differs from the state grid; expected the same values"
                        )
            for c in ("lat", "lon"):
                if c in obs.coords and c in like.coords and obs[c].dims == like[c].dims and c not in pair:
                    if not np.allclose(obs[c].values, like[c].values, atol=1e-6):
                        raise GridMismatchError(f"{source}: coordinate '{c}' differs from the state grid")
            return


def _state_names(ds: xr.Dataset, like: xr.Dataset, variables: Sequence[str] | None, source: str) -> tuple[xr.Dataset, list[str]]:
    """Observed variables renamed to the state variables they observe; return the Dataset and their names.

    A variable that is not a state variable is read as the one state variable with the same
    ``standard_name``, or whose name it starts with (``sla_filtered`` -> ``sla``). In point files the
    variables that observe no state variable (``dac``, ``mdt``, ...) are dropped with a warning; in
    gridded files they are refused.
    """
    names = _data_variables(ds, variables, source)
    state = [str(v) for v in like.data_vars if not str(v).endswith("_error")]
    rename: dict[str, str] = {}
    for n in sorted(names, key=lambda n: "unfiltered" in n):  # L3: prefer the filtered value
        if n in state:
            continue
        std = ds[n].attrs.get("standard_name")
        cands = [v for v in state if (std and like[v].attrs.get("standard_name") == std) or n.startswith(v + "_")]
        if len(cands) == 1 and cands[0] not in names and cands[0] not in rename.values():
            rename[n] = cands[0]
    unknown = [n for n in names if n not in state and n not in rename]
    if unknown and ("obs" not in ds.dims or len(unknown) == len(names)):
        raise DataValidationError(
            f"{source}: observed variable(s) {unknown} are not state variables; expected some of {sorted(state)}"
        )
    if unknown:
        warnings.warn(f"{source}: ignoring variable(s) {unknown}, which observe no state variable", UserWarning, stacklevel=3)
        ds = ds.drop_vars(unknown + [f"{u}_error" for u in unknown if f"{u}_error" in ds.variables])
    for n, v in rename.items():
        warnings.warn(f"{source}: observed variable '{n}' read as the state variable '{v}'", UserWarning, stacklevel=3)
        ds = ds.rename({n: v, **({f"{n}_error": f"{v}_error"} if f"{n}_error" in ds.variables else {})})
    return ds, [rename.get(n, n) for n in names if n not in unknown]


def _to_state_units(ds: xr.Dataset, like: xr.Dataset, names: Sequence[str], source: str) -> xr.Dataset:
    """Observations (and their errors) converted to the units of the state variables (cf-units); incompatible ones refused."""
    from oceanda.conventions import parse_units

    for n in names:
        have, want = ds[n].attrs.get("units"), like[n].attrs.get("units") if n in like else None
        uh, uw = parse_units(have), parse_units(want)
        if uh is None or uw is None or uh == uw:
            continue
        if not uh.is_convertible(uw):
            raise DataValidationError(
                f"{source}: observed variable '{n}' has units '{have}', incompatible with the states' '{want}'; "
                f"expected units convertible to '{want}'"
            )
        offset = float(uh.convert(0.0, uw))
        scale = float(uh.convert(1.0, uw)) - offset
        how = f"x {scale:g}" + (f" {'+' if offset >= 0 else '-'} {abs(offset):g}" if offset else "")
        warnings.warn(f"{source}: observed '{n}' converted from '{have}' to the states' '{want}' ({how})",
                      UserWarning, stacklevel=3)
        ds[n] = (ds[n] * scale + offset).assign_attrs({**ds[n].attrs, "units": want})
        err = f"{n}_error"
        if err in ds.variables:
            ds[err] = (ds[err] * abs(scale)).assign_attrs({**ds[err].attrs, "units": want})
    return ds


def _check_errors(ds: xr.Dataset, names: Sequence[str], source: str, default_error_fraction: float) -> xr.Dataset:
    """Refuse non-positive ``<var>_error``; add the default error (with a warning) where missing."""
    for n in names:
        err = f"{n}_error"
        if err in ds:
            e = ds[err]
            if np.issubdtype(e.dtype, np.floating) and bool((e <= 0).any()):
                raise DataValidationError(f"{source}: variable '{err}' has non-positive values; expected standard deviations > 0")
        else:
            sd = float(ds[n].std(skipna=True).compute())
            if not np.isfinite(sd) or sd == 0:
                sd = float(abs(ds[n]).max(skipna=True).compute()) or 1.0
            value = default_error_fraction * sd
            warnings.warn(
                f"{source}: no '{err}' variable; using the default observation error "
                f"{default_error_fraction:g} x std of the observed '{n}' = {value:.4g} {ds[n].attrs.get('units', '')}",
                UserWarning,
                stacklevel=3,
            )
            ds[err] = xr.DataArray(value, attrs={"units": ds[n].attrs.get("units", "1"), "long_name": f"default error of {n}"})
    return ds


def _align_lon(obs: xr.Dataset, like: xr.Dataset) -> xr.Dataset:
    """Gridded observations whose 1-D lon is the states' modulo 360 (-180..180 against 0..360): rolled onto the states' lon."""
    if "lon" not in obs.dims or "lon" not in like.dims or obs.sizes["lon"] != like.sizes["lon"] or "lon" not in obs.coords:
        return obs
    a, b = np.asarray(obs["lon"].values, float), np.asarray(like["lon"].values, float)
    if np.allclose(a, b, atol=1e-6):
        return obs
    k = int(np.argmin(np.abs((a - b[0] + 180.0) % 360.0 - 180.0)))
    if not np.allclose((np.roll(a, -k) - b + 180.0) % 360.0 - 180.0, 0.0, atol=1e-6):
        return obs  # another grid: _grid_mismatch says so
    return obs.roll(lon=-k, roll_coords=True).assign_coords(lon=like["lon"])


def open_obs(
    path: PathLike | Sequence[PathLike],
    like: xr.Dataset | None = None,
    chunks: Mapping[str, int] | str | None = "auto",
    *,
    variables: Sequence[str] | None = None,
    engine: str | None = None,
    default_error_fraction: float = DEFAULT_OBS_ERROR_FRACTION,
    units: Mapping[str, str] | None = None,
) -> xr.Dataset:
    """Open observations: gridded (same grid as ``like``, NaN where unobserved) or points (``obs`` dim).

    Each file is mapped to the canonical layout first (:func:`oceanda.conventions.normalise`; L3
    along-track files become points along ``obs``). Every observed variable gets an error standard
    deviation ``<var>_error``: read from the file, or -- with a warning -- ``default_error_fraction``
    times the standard deviation of the observed values. With ``like``, gridded observations must
    sit on the state grid; observed variables are matched to state variables (by name, then
    ``standard_name``) and converted to their units with cf-units (``cm`` -> ``m``, with a warning;
    ``K`` against ``m`` refused).

    Parameters
    ----------
    path : one file or zarr store, or a sequence of them (globs expanded)
    like : the states the observations must match (None: no check)
    chunks, engine : as :func:`open_states`
    variables : observed variables required (default: every data variable)
    default_error_fraction : error std, as a fraction of the observed std, where ``<var>_error`` is missing
    units : {variable: units} for variables the files give no (valid) units (CLI ``--units VAR=UNITS``)

    Returns
    -------
    xarray.Dataset: the observations and a ``<var>_error`` per observed variable
    """
    files = _expand_paths(path)
    if chunks == "auto":
        chunks = {"time": 64}
    parts = []
    for f in files:
        ds = _open_normalised(f, chunks, engine, variables, units)
        names = variables
        if like is not None:
            ds, names = _state_names(ds, like, variables, str(f))
        names = validate_dataset(ds, str(f), names, allow_all_nan=False)
        if like is not None and "obs" not in ds.dims:
            ds = _align_lon(ds, like)
            _grid_mismatch(ds, like, str(f))
        ds = _check_errors(ds, names, str(f), default_error_fraction)
        if like is not None:
            ds = _to_state_units(ds, like, names, str(f))
        parts.append(ds)
    dim = "obs" if "obs" in parts[0].dims else "time"
    out = parts[0] if len(parts) == 1 else xr.concat(parts, dim=dim, data_vars="minimal", coords="minimal", compat="override")
    out.encoding["oceanda_sources"] = [str(f.resolve()) for f in files]
    return out


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------


_COMMAND_OVERRIDE: list[str] | None = None


def set_command_line(argv: Sequence[str] | None) -> None:
    """Record the command being run (the CLI calls this with its own argv; None reverts to sys.argv).

    Parameters
    ----------
    argv : the command's words, or None to use ``sys.argv`` again

    Returns
    -------
    None
    """
    global _COMMAND_OVERRIDE
    _COMMAND_OVERRIDE = None if argv is None else list(argv)


def command_line() -> str:
    """The command line of this process, for the ``history`` attribute."""
    argv = list(_COMMAND_OVERRIDE) if _COMMAND_OVERRIDE is not None else list(sys.argv)
    if argv and argv[0].endswith(("oceanda", "__main__.py")):
        argv[0] = "oceanda"
    return " ".join(shlex.quote(a) for a in argv)


def _source_files(ds: xr.Dataset) -> set[str]:
    found: set[str] = set()
    for obj in [ds, *ds.variables.values()]:
        src = obj.encoding.get("source")
        if src:
            found.add(os.path.realpath(src))
        for s in obj.encoding.get("oceanda_sources", []) if isinstance(obj, xr.Dataset) else []:
            found.add(os.path.realpath(s))
    return found


def refuse_existing(path: PathLike, overwrite: bool = False) -> Path:
    """Raise :class:`OutputExistsError` if ``path`` exists and ``overwrite`` is not given; return it as a Path.

    Parameters
    ----------
    path : an output file
    overwrite : an existing file may be replaced

    Returns
    -------
    pathlib.Path
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path}: exists already; pass overwrite=True (CLI: --overwrite) to replace it")
    return path


def check_distinct(inputs: Iterable[PathLike | None], outputs: Iterable[PathLike | None]) -> None:
    """Refuse an output that is (or, for a folder, contains or lies in) an input: inputs are never modified.

    Compared by resolved path and, where both exist, :func:`os.path.samefile` (hard links, bind mounts).

    Parameters
    ----------
    inputs : input files or folders (globs already expanded; None entries ignored)
    outputs : output files or folders (None entries ignored)
    """
    ins = [Path(p) for p in inputs if p is not None]
    for out in (Path(p) for p in outputs if p is not None):
        ro = Path(os.path.realpath(out))
        for inp in ins:
            ri = Path(os.path.realpath(inp))
            same = ro == ri or (ro.exists() and ri.exists() and os.path.samefile(ro, ri))
            if same or ri.is_relative_to(ro) or (ri.is_dir() and ro.is_relative_to(ri)):
                raise OutputExistsError(f"{out}: is the input {inp} (or holds it); oceanda never modifies an input, "
                                        "write the output elsewhere")


def available_memory() -> int:
    """Bytes of memory this process may still allocate (the smaller of free RAM and a cgroup limit)."""
    import psutil

    free = psutil.virtual_memory().available
    for f in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        with contextlib.suppress(OSError, ValueError):
            limit = int(Path(f).read_text().split()[0])
            used = psutil.Process().memory_info().rss
            free = min(free, max(limit - used, 0))
    return int(free)


def check_allocation(nbytes: float, what: str) -> None:
    """Refuse, in one line, an allocation that cannot fit in memory (before trying it).

    Parameters
    ----------
    nbytes : bytes about to be allocated
    what : what is being allocated, naming the file or option responsible
    """
    avail = available_memory()
    if nbytes > avail:
        raise DataValidationError(f"{what}: needs {nbytes / 2**30:.3g} GiB of memory; "
                                  f"only {avail / 2**30:.3g} GiB are available")


@contextlib.contextmanager
def atomic_path(path: PathLike, overwrite: bool = False, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success fsync it and rename it onto ``path``.

    On any exception the temporary file is removed and ``path`` is left as it was. Refuses an
    existing ``path`` unless ``overwrite``.

    Parameters
    ----------
    path : the final file
    overwrite : replace an existing ``path``
    suffix : suffix of the temporary file (default ``.tmp``)

    Yields
    ------
    pathlib.Path: the temporary file to write
    """
    path = refuse_existing(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    mode = 0o666 & ~umask  # mkstemp makes 0600 files; outputs get the usual permissions
    os.chmod(tmp, mode)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, mode)  # again: some writers (safetensors) replace the file with their own 0600 one
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        refuse_existing(path, overwrite)  # it may have appeared meanwhile
        os.replace(tmp_path, path)
        with contextlib.suppress(OSError):
            dfd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


#: Attributes that describe an input's values and no longer hold for what oceanda derives and writes
#: (means, spreads, members, observations with noise); packing attributes of decoded data go too.
_VALUE_ATTRS = ("actual_range", "valid_range", "valid_min", "valid_max", "_FillValue", "missing_value",
                "scale_factor", "add_offset", "_Unsigned")
#: Attributes naming other variables: dropped when the variable they name is not written.
_REFERENCE_ATTRS = ("bounds", "grid_mapping", "ancillary_variables", "cell_measures", "coordinates")

#: long_name of the coordinates and index variables oceanda writes (CF: every variable has one).
LONG_NAMES = {
    "time": "time", "member": "ensemble member", "run": "free run the state belongs to (0-based)",
    "rank": "retrieval rank (0 = most similar)", "particle": "slot of a library state with non-negligible weight",
    "layer": "model layer (1 = upper)", "depth": "depth", "lat": "latitude", "lon": "longitude",
    "obs": "observation number", "sample": "sample number", "cycle": "assimilation cycle (0-based)",
    "drifter": "drifter number", "window": "analysis window", "mode": "Fourier mode", "coefficient": "coefficient",
    "crs": "grid mapping of the projected x/y grid",
}

#: Canonical units of the standard names above (CF table): a standard name is added only where units fit.
_CANONICAL_UNITS = {
    "sea_surface_height_above_geoid": "m", "sea_surface_temperature": "K", "sea_surface_salinity": "1e-3",
    "sea_water_potential_temperature": "K", "sea_water_salinity": "1e-3", "eastward_sea_water_velocity": "m s-1",
    "northward_sea_water_velocity": "m s-1", "latitude": "degrees_north", "longitude": "degrees_east", "depth": "m",
}

#: Name of the grid mapping variable fields are pointed at when a Dataset carries one.
GRID_MAPPING_NAME = "crs"

_CDO_NOTE = ("{names}: 5-D (time, member, level, y, x) ensembles, which cdo does not read; cdo reads the 4-D "
             "<var>_mean / <var>_spread of this file; for one member select it first (ncks -d member,0 or "
             "xarray .isel(member=0)); oceanda and xarray read the file as it is")


def _base_name(name: str) -> str:
    for suffix in ("_background_mean", "_background_spread", "_mean", "_spread", "_error", "_index"):
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def _long_name(name: str, var: xr.DataArray) -> str:
    if name in LONG_NAMES:
        return LONG_NAMES[name]
    base = _base_name(name)
    if name.endswith("_error"):
        return f"observation error standard deviation of {base}"
    if name.endswith("_index"):
        return f"{base} index of the grid cell of each observation (0-based)"
    if name.endswith("_spread"):
        return f"ensemble standard deviation of {base}"
    if name.endswith("_mean"):
        return f"ensemble mean of {base}"
    return name.replace("_", " ")


def _is_time(var: xr.DataArray) -> bool:
    """Dates (datetime64, or cftime objects of a calendar) that xarray encodes with units and calendar."""
    if np.issubdtype(var.dtype, np.datetime64):
        return True
    return var.dtype == object and var.size > 0 and hasattr(var.values.flat[0], "calendar")


def _axis_attrs(ds: xr.Dataset) -> None:
    """CF identities of the grid axes: geographic lat/lon, or projection x/y (km) never read as lon/lat."""
    for name, std, axis in (("lat", "latitude", "Y"), ("lon", "longitude", "X")):
        if name in ds.variables:
            ds[name].attrs.setdefault("standard_name", std)
            ds[name].attrs.setdefault("units", "degrees_north" if name == "lat" else "degrees_east")
            if ds[name].dims == (name,):
                ds[name].attrs.setdefault("axis", axis)
    for name, axis in (("y", "Y"), ("x", "X")):
        if name not in ds.variables or not np.issubdtype(ds[name].dtype, np.number):
            continue
        var = ds[name]
        units = str(var.attrs.get("units", ""))
        if units in ("km", "m") and var.ndim == 1:
            var.attrs["standard_name"] = f"projection_{name}_coordinate"
            if var.dims == (name,):
                var.attrs["axis"] = axis
            var.attrs.setdefault("long_name", f"{name} coordinate of projection")
        elif var.attrs.get("axis") == axis and units not in ("km", "m"):
            var.attrs.pop("axis")  # a nondimensional or index axis: not a latitude/longitude
    if "time" in ds.variables:
        ds["time"].attrs.update(standard_name="time", **({"axis": "T"} if ds["time"].dims == ("time",) else {}))
    if "layer" in ds.dims and "layer" in ds.variables and ds["layer"].dims == ("layer",):
        # a model layer index: a dimensionless vertical axis (so T, Z, Y, X is recognised)
        ds["layer"].attrs.setdefault("positive", "down")
        if "units" not in ds["layer"].attrs:
            ds["layer"].attrs.update(units="1", axis="Z")


def _sinusoidal(ds: xr.Dataset) -> dict[str, Any] | None:
    """CF sinusoidal mapping (km) of a km y/x grid, when its 2-D lat/lon follow one (e.g. the QG box), else None.

    Sinusoidal: northing = R lat, easting = R (lon - lon0) cos(lat); fitted to the file's own lat/lon
    (described only where it reproduces them to a metre).
    """
    if not all(c in ds.coords for c in ("y", "x", "lat", "lon")) or ds["lat"].dims != ("y", "x"):
        return None
    if ds["y"].ndim != 1 or ds["x"].ndim != 1 or any(str(ds[c].attrs.get("units")) != "km" for c in ("y", "x")):
        return None
    k = EARTH_RADIUS_KM * np.pi / 180.0
    lat, lon = np.asarray(ds["lat"].values, float), np.asarray(ds["lon"].values, float)
    y, x = np.meshgrid(np.asarray(ds["y"].values, float), np.asarray(ds["x"].values, float), indexing="ij")
    false_northing = float(np.mean(y - k * lat))
    c = k * np.cos(np.radians(lat)).ravel()
    a = np.c_[c, -np.ones_like(c)]
    (lon0, false_easting), *_ = np.linalg.lstsq(a, c * lon.ravel() - x.ravel(), rcond=None)
    err_y = np.abs(y - k * lat - false_northing).max()
    err_x = np.abs(c * (lon.ravel() - lon0) + false_easting - x.ravel()).max()
    if not (np.isfinite(err_x) and max(err_x, err_y) < 1e-3):
        return None
    return {"grid_mapping_name": "sinusoidal", "longitude_of_projection_origin": float(lon0),
            "false_easting": float(false_easting), "false_northing": float(false_northing)}


def _grid_mapping(ds: xr.Dataset) -> xr.Dataset:
    """Point every (y, x) field at a ``crs`` grid mapping the Dataset carries; describe a sinusoidal km grid.

    A km grid whose lat/lon follow the sinusoidal projection (the QG box) gets that projection in the
    ``comment`` of ``x``/``y`` but no grid mapping variable: compliance-checker 6.1 refuses every
    ``sinusoidal`` mapping (it reads the name of its required attribute letter by letter), and the
    other CF projections miss the box's lat/lon by ~11 km. The lat/lon coordinates are exact.
    """
    name = GRID_MAPPING_NAME
    if name in ds.variables and "grid_mapping_name" in ds[name].attrs:
        for v in ds.data_vars.values():
            if "y" in v.dims and "x" in v.dims or "lat" in v.dims and "lon" in v.dims:
                v.attrs["grid_mapping"] = name
        return ds
    sinu = _sinusoidal(ds)
    if sinu is not None:
        note = ("x/y = sinusoidal projection of the lat/lon coordinates (CF grid_mapping_name sinusoidal, "
                f"longitude_of_projection_origin = {sinu['longitude_of_projection_origin']:.6g}, false_easting = "
                f"{sinu['false_easting']:.6g} km, false_northing = {sinu['false_northing']:.6g} km, earth_radius = "
                f"{EARTH_RADIUS_KM:g} km); lat/lon give the geolocation")
        for c in ("x", "y"):
            ds[c].attrs.setdefault("comment", note)
    return ds


def _units_fit(units: Any, standard_name: str) -> bool:
    """Whether ``units`` convert to the canonical units of ``standard_name`` (a nondimensional "u" is no velocity)."""
    from cf_units import Unit

    canonical = _CANONICAL_UNITS.get(standard_name)
    if canonical is None:
        return True
    try:
        return Unit(str(units)).is_convertible(Unit(canonical))
    except ValueError:
        return False


def _variable_attrs(ds: xr.Dataset) -> None:
    """Every variable: long_name, standard name where known, no stale value/packing attributes."""
    for name in list(ds.variables):
        var, key = ds[name], str(name)
        for attr in _VALUE_ATTRS:
            var.attrs.pop(attr, None)
        for attr in _REFERENCE_ATTRS:
            refs = str(var.attrs.get(attr, ""))
            names = [n for n in refs.split() if not n.endswith(":")]  # cell_measures: "area: cell_area"
            if attr in var.attrs and not all(n in ds.variables for n in names):
                var.attrs.pop(attr)
        std = STANDARD_NAMES.get(_base_name(key))
        if std and "standard_name" not in var.attrs and not key.endswith(("_spread", "_error", "_index")) \
                and _units_fit(var.attrs.get("units"), std):
            var.attrs["standard_name"] = std
        if not var.attrs.get("long_name"):
            var.attrs["long_name"] = _long_name(key, var)


def _global_attrs(ds: xr.Dataset, line: str, version: str, title: str | None) -> None:
    previous = ds.attrs.get("history")
    ds.attrs["history"] = f"{line}\n{previous}" if previous else line
    ds.attrs["Conventions"] = "CF-1.8"
    ds.attrs["oceanda_version"] = version
    ds.attrs.setdefault("source", "oceanda")
    ds.attrs.setdefault("title", title or "oceanda output")
    ds.attrs.setdefault("references", "oceanda (ocean data assimilation with contrastive learning as conditional "
                                      "probability): README.md and docs/architecture.md of the package")
    # the checker (and other tools) fetch a table that differs from the one they ship: a network access
    ds.attrs.pop("standard_name_vocabulary", None)
    five_d = sorted(str(n) for n, v in ds.data_vars.items() if v.ndim >= 5)
    note = _CDO_NOTE.format(names=", ".join(five_d)) if five_d else ""
    if note and note not in str(ds.attrs.get("comment", "")):  # an analysis read back and written again has it
        ds.attrs["comment"] = f"{ds.attrs['comment']}; {note}" if ds.attrs.get("comment") else note


def cf_attributes(ds: xr.Dataset, command: str | None = None, extra_history: str | None = None,
                  title: str | None = None) -> xr.Dataset:
    """Return a copy with CF-1.8 global attributes, standard names and provenance added.

    Every variable gets a ``long_name``; lat/lon and projected km ``x``/``y`` get their CF identity
    (and a ``crs`` grid mapping where the file's lat/lon follow one); range and packing attributes
    of inputs, wrong for derived values, are dropped.

    Parameters
    ----------
    ds : the Dataset (not modified)
    command : command line recorded in ``history`` (default: this process's)
    extra_history : note appended in brackets to the history line
    title : global ``title`` when ``ds`` has none (default: ``oceanda output``)

    Returns
    -------
    xarray.Dataset: the annotated copy
    """
    from oceanda._version import __version__

    ds = ds.copy()
    for name in ds.variables:  # attributes are edited in place below: never those of the caller's Dataset
        ds[name].attrs = dict(ds[name].attrs)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    line = f"{stamp}: oceanda {__version__}: {command if command is not None else command_line()}"
    if extra_history:
        line += f" ({extra_history})"
    if title is None and (command or command_line()).startswith("oceanda "):
        title = " ".join((command or command_line()).split()[:2]) + " output"
    _global_attrs(ds, line, __version__, title)
    _axis_attrs(ds)
    ds = _grid_mapping(ds)
    _variable_attrs(ds)
    return ds


def _time_encoding(var: xr.DataArray) -> dict[str, Any]:
    """Float ``days since`` (the input's epoch, else the first time's day) in the variable's own calendar."""
    old = var.encoding
    units = str(old.get("units", ""))
    values = var.values.ravel()
    if " since " in units:
        epoch = units.split(" since ", 1)[1].strip()
    else:
        first = values[0] if values.size else np.datetime64("1970-01-01")
        if isinstance(first, np.datetime64) and np.isnat(first):
            valid = values[~np.isnat(values)]
            first = valid[0] if valid.size else np.datetime64("1970-01-01")
        epoch = f"{first.year:04d}-{first.month:02d}-{first.day:02d}" if hasattr(first, "calendar") else \
            str(np.datetime64(first, "D"))
        epoch += " 00:00:00"
    calendar = old.get("calendar")
    if calendar is None:
        calendar = values[0].calendar if var.dtype == object and values.size else "proleptic_gregorian"
    return {"units": f"days since {epoch}", "calendar": calendar, "dtype": "float64"}


def _int_dtype(var: xr.DataArray) -> str | None:
    """int32 for 64-bit integers that fit (CF-1.8 checkers refuse int64), else None."""
    if var.dtype.kind not in "iu" or var.dtype.itemsize < 8 and var.dtype.kind == "i":
        return None
    values = np.asarray(var.values)
    if values.size == 0 or (values.min() >= np.iinfo(np.int32).min and values.max() <= np.iinfo(np.int32).max):
        return "int32"
    return None


def _compression(var: xr.DataArray, engine: str, complevel: int) -> dict[str, Any]:
    if var.ndim < 1 or not np.issubdtype(var.dtype, np.number):
        return {}
    # Chunks that match how data are read: one time step (one member) of a whole field.
    chunks = tuple(1 if d in ("time", "member", "sample") and var.ndim > 1 else var.sizes[d] for d in var.dims)
    e: dict[str, Any] = {"zlib": True, "complevel": complevel, "shuffle": True}
    if all(c > 0 for c in chunks):
        e["chunksizes"] = chunks
    if engine == "h5netcdf":
        e["compression"] = "gzip"
        e["compression_opts"] = e.pop("complevel")
        e.pop("zlib")
    return e


def _encoding_for(ds: xr.Dataset, engine: str, complevel: int = 4) -> dict[str, dict[str, Any]]:
    enc: dict[str, dict[str, Any]] = {}
    for name, var in ds.data_vars.items():
        e: dict[str, Any] = {}
        if _is_time(var):
            e.update(_time_encoding(var), _FillValue=np.float64(np.nan))
        elif np.issubdtype(var.dtype, np.floating) and " since " in str(var.attrs.get("units", "")):
            e.update(dtype="float64", _FillValue=np.float64(np.nan))  # times already in numbers: no rounding
        elif np.issubdtype(var.dtype, np.floating):
            e["dtype"] = "float32"
            e["_FillValue"] = np.float32(np.nan)
        elif (small := _int_dtype(var)):
            e["dtype"] = small
        e.update(_compression(var, engine, complevel))
        enc[str(name)] = e
    for name, var in ds.coords.items():  # coordinates: never a _FillValue (CF 5: no missing values)
        e = {"_FillValue": None}
        if _is_time(var):
            e.update(_time_encoding(var))
        elif (small := _int_dtype(var)):
            e["dtype"] = small
        enc[str(name)] = e
    return enc


def write_netcdf(
    ds: xr.Dataset,
    path: PathLike,
    overwrite: bool = False,
    *,
    engine: str = "netcdf4",
    command: str | None = None,
    complevel: int = 4,
    keep_float64: Sequence[str] = (),
    title: str | None = None,
) -> Path:
    """Write ``ds`` as compressed CF-1.8 NetCDF-4, atomically; return the path.

    ``keep_float64`` names variables stored in double precision (e.g. a filter checkpoint that
    must resume bit for bit).

    Floating fields are stored as float32 with zlib + shuffle, chunked by time step. The file is
    written to a temporary name in the target directory, fsynced and renamed. An existing file is
    refused unless ``overwrite``; a file the Dataset was read from is always refused.

    Parameters
    ----------
    ds : the Dataset
    path : output file
    overwrite : replace an existing file (never one ``ds`` was read from)
    engine : ``"netcdf4"`` or ``"h5netcdf"``
    command : command line recorded in ``history`` (default: this process's)
    complevel : zlib compression level
    keep_float64 : variables stored as float64
    title : global ``title`` when ``ds`` has none

    Returns
    -------
    pathlib.Path: ``path``
    """
    path = Path(path)
    if engine not in ("netcdf4", "h5netcdf"):
        raise OceandaError(f"{path}: unknown NetCDF engine '{engine}'; expected 'netcdf4' or 'h5netcdf'")
    if os.path.realpath(path) in _source_files(ds):
        raise OutputExistsError(f"{path}: is an input of this Dataset; oceanda never modifies an input file")
    ds = cf_attributes(ds, command=command, title=title)
    encoding = _encoding_for(ds, engine, complevel)
    for name in ds.variables:  # encodings inherited from an input may conflict with ours (time's is read above)
        ds[name].encoding = {}
    for name in keep_float64:
        if name in encoding and encoding[name].get("dtype") == "float32":
            encoding[name]["dtype"] = "float64"
            encoding[name]["_FillValue"] = np.float64(np.nan)
    with atomic_path(path, overwrite=overwrite, suffix=".nc.tmp") as tmp:
        ds.to_netcdf(tmp, engine=engine, encoding=encoding, format="NETCDF4")
    return path


def read_netcdf(path: PathLike) -> xr.Dataset:
    """Load a whole NetCDF file oceanda wrote itself (a checkpoint) into memory and close it.

    Parameters
    ----------
    path : a NetCDF file

    Returns
    -------
    xarray.Dataset, loaded into memory
    """
    path = Path(path)
    if not path.exists():
        raise DataValidationError(f"{path}: no such file")
    try:
        with xr.open_dataset(path) as ds:
            return ds.load()
    except (OSError, ValueError) as exc:
        raise DataValidationError(f"{path}: cannot be read as NetCDF ({exc})") from exc


def write_json(obj: Any, path: PathLike, overwrite: bool = False) -> Path:
    """Write JSON atomically (NaN written as null).

    Parameters
    ----------
    obj : JSON-able data (numpy values and paths are converted)
    path : output file
    overwrite : replace an existing file

    Returns
    -------
    pathlib.Path: ``path``
    """

    def clean(o: Any) -> Any:
        if isinstance(o, dict):
            return {str(k): clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        if isinstance(o, np.ndarray):
            return clean(o.tolist())
        if isinstance(o, (np.floating, float)):
            return float(o) if np.isfinite(o) else None
        if isinstance(o, np.integer):
            return int(o)
        if isinstance(o, np.bool_):
            return bool(o)
        if isinstance(o, Path):
            return str(o)
        return o

    with atomic_path(path, overwrite=overwrite, suffix=".json.tmp") as tmp:
        tmp.write_text(json.dumps(clean(obj), indent=2, sort_keys=False) + "\n")
    return Path(path)


def write_text(text: str, path: PathLike, overwrite: bool = False) -> Path:
    """Write a text file atomically.

    Parameters
    ----------
    text : the contents
    path : output file
    overwrite : replace an existing file

    Returns
    -------
    pathlib.Path: ``path``
    """
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(text)
    return Path(path)


def read_json(path: PathLike) -> Any:
    """Read a JSON file; a missing or invalid one raises :class:`OceandaError`.

    Parameters
    ----------
    path : a JSON file

    Returns
    -------
    the decoded object
    """
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise OceandaError(f"{path}: no such file") from exc
    except json.JSONDecodeError as exc:
        raise OceandaError(f"{path}: not valid JSON ({exc})") from exc


def save_figure(fig: Any, path: PathLike, overwrite: bool = True, dpi: int = 110) -> Path:
    """Save a matplotlib figure atomically (PNG by default).

    Parameters
    ----------
    fig : a matplotlib Figure
    path : output file (its suffix gives the format)
    overwrite : replace an existing file
    dpi : resolution

    Returns
    -------
    pathlib.Path: ``path``
    """
    path = Path(path)
    with atomic_path(path, overwrite=overwrite, suffix=path.suffix or ".png") as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=(path.suffix.lstrip(".") or "png"))
    return path


def prepare_output_dir(path: PathLike, overwrite: bool = False) -> Path:
    """Create an output directory; refuse a non-empty existing one unless ``overwrite``.

    Parameters
    ----------
    path : the directory
    overwrite : allow writing into a non-empty one

    Returns
    -------
    pathlib.Path: the directory
    """
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise OutputExistsError(f"{path}: exists and is not a directory")
        if any(path.iterdir()) and not overwrite:
            raise OutputExistsError(f"{path}: exists and is not empty; pass --overwrite to write into it")
    path.mkdir(parents=True, exist_ok=True)
    return path


def remove_tree(path: PathLike) -> None:
    """Delete a directory oceanda made (a scratch or cache folder); a missing one is fine.

    Parameters
    ----------
    path : the directory

    Returns
    -------
    None
    """
    import shutil

    shutil.rmtree(Path(path), ignore_errors=True)


def make_dir(path: PathLike) -> Path:
    """Create a directory (and its parents) if missing; return it.

    Parameters
    ----------
    path : the directory

    Returns
    -------
    pathlib.Path: the directory
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


# ----------------------------------------------------------------------------------------------
# Checkpoints: safetensors + JSON, never pickle
# ----------------------------------------------------------------------------------------------

CHECKPOINT_WEIGHTS = "model.safetensors"
CHECKPOINT_CONFIG = "config.json"


def save_checkpoint(directory: PathLike, tensors: Mapping[str, Any], config: Mapping[str, Any], overwrite: bool = False) -> Path:
    """Write ``model.safetensors`` and ``config.json`` into ``directory`` (atomically, file by file).

    Parameters
    ----------
    directory : checkpoint folder (created if missing)
    tensors : {name: torch tensor}
    config : JSON-able settings
    overwrite : replace an existing checkpoint

    Returns
    -------
    pathlib.Path: ``directory``
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    weights = directory / CHECKPOINT_WEIGHTS
    if weights.exists() and not overwrite:
        raise OutputExistsError(f"{directory}: holds a checkpoint already; pass overwrite=True (CLI: --overwrite)")
    directory.mkdir(parents=True, exist_ok=True)
    contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(weights, overwrite=True, suffix=".safetensors.tmp") as tmp:
        save_file(contiguous, str(tmp))
    write_json(dict(config), directory / CHECKPOINT_CONFIG, overwrite=True)
    return directory


def load_checkpoint(directory: PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read ``(tensors, config)`` from a checkpoint directory; nothing is unpickled.

    Parameters
    ----------
    directory : a folder written by :func:`save_checkpoint`

    Returns
    -------
    tuple (tensors, config): {name: torch tensor} and the settings dict
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    weights, config = directory / CHECKPOINT_WEIGHTS, directory / CHECKPOINT_CONFIG
    for f in (weights, config):
        if not f.exists():
            raise CheckpointError(f"{directory}: missing '{f.name}'; expected a checkpoint directory with {CHECKPOINT_WEIGHTS} and {CHECKPOINT_CONFIG}")
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights}: not a valid safetensors file ({exc})") from exc
    cfg = read_json(config)
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{config}: expected a JSON object")
    return tensors, cfg


def iter_files(paths: Iterable[PathLike]) -> list[Path]:
    """Expand globs and check existence (shared by the CLI verbs).

    Parameters
    ----------
    paths : file paths or glob patterns

    Returns
    -------
    list of pathlib.Path, all existing
    """
    return _expand_paths(list(paths))
