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
import re
import shlex
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import xarray as xr

from oceanda.errors import (
    CheckpointError,
    DataValidationError,
    GridMismatchError,
    OceandaError,
    OutputExistsError,
)

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

# Unit symbols accepted by the units check (UDUNITS-style products and powers of these).
_KNOWN_UNIT_SYMBOLS = {
    "1", "m", "km", "cm", "mm", "s", "sec", "second", "seconds", "day", "days", "hour", "hours", "h",
    "minute", "minutes", "min", "kg", "g", "K", "degC", "celsius", "degree_Celsius", "degrees_Celsius",
    "psu", "PSU", "Pa", "hPa", "dbar", "N", "W", "J", "mol", "rad", "radian", "radians", "percent", "%",
    "degrees_north", "degree_north", "degrees_N", "degrees_east", "degree_east", "degrees_E", "degree",
    "degrees", "1e-3", "0.001", "ppt", "dimensionless", "count", "nondimensional",
    "meter", "meters", "metre", "metres", "kilometer", "kilometers", "kilometre", "kilometres", "centimeter",
    "centimeters", "degree_C", "degrees_C", "deg_C", "Celsius", "kelvin", "Kelvin", "degree_Kelvin", "gram", "kilogram",
    "pascal", "decibar", "watt", "joule", "newton", "ms", "year", "years", "yr", "month", "months", "PSS-78", "g/kg",
}
_UNIT_TOKEN = re.compile(r"^([A-Za-z_%]+|[0-9.eE+-]+)(\^?-?[0-9]+)?$")


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
    except (OSError, ValueError) as exc:
        raise DataValidationError(f"{path}: cannot be read as NetCDF or zarr ({exc})") from exc


def units_are_known(units: str) -> bool:
    """Whether a UDUNITS-like string is made of unit symbols oceanda recognises.

    Parameters
    ----------
    units : a units string such as ``m s-1`` or ``days since 2000-01-01``

    Returns
    -------
    bool
    """
    units = units.strip()
    if not units:
        return False
    if " since " in units:  # time units, decoded by xarray
        return True
    for token in re.split(r"[\s.*/]+", units):
        if not token:
            continue
        m = _UNIT_TOKEN.match(token)
        if m is None:
            return False
        base = m.group(1)
        if base not in _KNOWN_UNIT_SYMBOLS and not re.fullmatch(r"[0-9.eE+-]+", base):
            return False
    return True


def _check_coords(ds: xr.Dataset, source: str) -> None:
    for name in ds.dims:
        if name not in ds.coords:
            continue
        values = ds[name].values
        if values.ndim != 1 or values.size < 2:
            continue
        if name in ("member", "obs"):
            continue
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
            units = da.attrs.get("units")
            if units is None:
                raise DataValidationError(f"{source}: variable '{name}' has no 'units' attribute; expected CF units")
            if not units_are_known(str(units)):
                raise DataValidationError(
                    f"{source}: variable '{name}' has unknown units '{units}'; expected UDUNITS units such as 'm', 'm s-1', 'degC'"
                )
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
) -> xr.Dataset:
    """Open model states lazily from one or more NetCDF/zarr files, concatenated along ``time``.

    ``chunks`` is passed to xarray (dask); by default one chunk spans whole fields. Every file is
    validated on its own (so errors name it) and the concatenation is checked for increasing,
    non-duplicated times.

    Parameters
    ----------
    paths : one file or zarr store, or a sequence of them (globs expanded)
    chunks : dask chunks for xarray (``"auto"``: 64 time steps per chunk)
    variables : data variables kept (default: all; their ``<var>_error`` too)
    engine : xarray engine for NetCDF (None: xarray's choice)
    check_values : reject Inf and all-NaN variables

    Returns
    -------
    xarray.Dataset: lazy, concatenated along ``time``
    """
    files = _expand_paths(paths)
    if chunks == "auto":
        chunks = {"time": 64}
    parts = []
    for f in files:
        ds = _open_one(f, chunks, engine)
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


def open_obs(
    path: PathLike | Sequence[PathLike],
    like: xr.Dataset | None = None,
    chunks: Mapping[str, int] | str | None = "auto",
    *,
    variables: Sequence[str] | None = None,
    engine: str | None = None,
    default_error_fraction: float = DEFAULT_OBS_ERROR_FRACTION,
) -> xr.Dataset:
    """Open observations: gridded (same grid as ``like``, NaN where unobserved) or points (``obs`` dim).

    Every observed variable gets an error standard deviation ``<var>_error``: read from the file,
    or -- with a warning -- ``default_error_fraction`` times the standard deviation of the observed
    values. With ``like``, gridded observations must sit on the state grid and name state variables.

    Parameters
    ----------
    path : one file or zarr store, or a sequence of them (globs expanded)
    like : the states the gridded observations must match (None: no check)
    chunks, engine : as :func:`open_states`
    variables : observed variables required (default: every data variable)
    default_error_fraction : error std, as a fraction of the observed std, where ``<var>_error`` is missing

    Returns
    -------
    xarray.Dataset: the observations and a ``<var>_error`` per observed variable
    """
    files = _expand_paths(path)
    if chunks == "auto":
        chunks = {"time": 64}
    parts = []
    for f in files:
        ds = _open_one(f, chunks, engine)
        names = validate_dataset(ds, str(f), variables, allow_all_nan=False)
        if like is not None:
            unknown = [n for n in names if n not in like.data_vars]
            if unknown:
                raise DataValidationError(
                    f"{f}: observed variable(s) {unknown} are not state variables; expected some of {sorted(map(str, like.data_vars))}"
                )
            if "obs" not in ds.dims:
                _grid_mismatch(ds, like, str(f))
        for n in names:
            err = f"{n}_error"
            if err in ds:
                e = ds[err]
                if np.issubdtype(e.dtype, np.floating) and bool((e <= 0).any()):
                    raise DataValidationError(f"{f}: variable '{err}' has non-positive values; expected standard deviations > 0")
            else:
                sd = float(ds[n].std(skipna=True).compute())
                if not np.isfinite(sd) or sd == 0:
                    sd = float(abs(ds[n]).max(skipna=True).compute()) or 1.0
                value = default_error_fraction * sd
                warnings.warn(
                    f"{f}: no '{err}' variable; using the default observation error "
                    f"{default_error_fraction:g} x std of the observed '{n}' = {value:.4g} {ds[n].attrs.get('units', '')}",
                    UserWarning,
                    stacklevel=2,
                )
                ds[err] = xr.DataArray(value, attrs={"units": ds[n].attrs.get("units", "1"), "long_name": f"default error of {n}"})
        parts.append(ds)
    out = parts[0] if len(parts) == 1 else xr.concat(parts, dim="time", data_vars="minimal", coords="minimal", compat="override")
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


def cf_attributes(ds: xr.Dataset, command: str | None = None, extra_history: str | None = None) -> xr.Dataset:
    """Return a copy with CF-1.8 global attributes, standard names and provenance added.

    Parameters
    ----------
    ds : the Dataset (not modified)
    command : command line recorded in ``history`` (default: this process's)
    extra_history : note appended in brackets to the history line

    Returns
    -------
    xarray.Dataset: the annotated copy
    """
    from oceanda._version import __version__

    ds = ds.copy()
    ds.attrs["Conventions"] = "CF-1.8"
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    line = f"{stamp}: oceanda {__version__}: {command if command is not None else command_line()}"
    if extra_history:
        line += f" ({extra_history})"
    previous = ds.attrs.get("history")
    ds.attrs["history"] = f"{line}\n{previous}" if previous else line
    ds.attrs["oceanda_version"] = __version__
    ds.attrs.setdefault("source", "oceanda")
    for name in list(ds.variables):
        base = str(name)
        for suffix in ("_mean", "_spread", "_error"):
            if base.endswith(suffix):
                base = base[: -len(suffix)]
        std = STANDARD_NAMES.get(base)
        var = ds[name]
        if std and "standard_name" not in var.attrs and not str(name).endswith(("_spread", "_error")):
            var.attrs["standard_name"] = std
        if name == "lat":
            var.attrs.setdefault("units", "degrees_north")
        if name == "lon":
            var.attrs.setdefault("units", "degrees_east")
    return ds


def _encoding_for(ds: xr.Dataset, engine: str, complevel: int = 4) -> dict[str, dict[str, Any]]:
    enc: dict[str, dict[str, Any]] = {}
    for name, var in ds.data_vars.items():
        e: dict[str, Any] = {}
        if np.issubdtype(var.dtype, np.floating):
            e["dtype"] = "float32"
            e["_FillValue"] = np.float32(np.nan)
        if var.ndim >= 1 and (np.issubdtype(var.dtype, np.number)):
            e["zlib"] = True
            e["complevel"] = complevel
            e["shuffle"] = True
            # Chunks that match how data are read: one time step (one member) of a whole field.
            chunks = []
            for d in var.dims:
                size = var.sizes[d]
                chunks.append(1 if d in ("time", "member", "sample") and var.ndim > 1 else size)
            if var.ndim > 0 and all(c > 0 for c in chunks):
                e["chunksizes"] = tuple(chunks)
        if engine == "h5netcdf" and "zlib" in e:
            e["compression"] = "gzip"
            e["compression_opts"] = e.pop("complevel")
            e.pop("zlib")
        enc[str(name)] = e
    for name in ds.coords:
        if np.issubdtype(ds[name].dtype, np.floating):
            enc[str(name)] = {"_FillValue": None}
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

    Returns
    -------
    pathlib.Path: ``path``
    """
    path = Path(path)
    if engine not in ("netcdf4", "h5netcdf"):
        raise OceandaError(f"{path}: unknown NetCDF engine '{engine}'; expected 'netcdf4' or 'h5netcdf'")
    if os.path.realpath(path) in _source_files(ds):
        raise OutputExistsError(f"{path}: is an input of this Dataset; oceanda never modifies an input file")
    ds = cf_attributes(ds, command=command)
    for name in ds.data_vars:  # encodings inherited from an input may conflict with ours
        ds[name].encoding = {}
    encoding = _encoding_for(ds, engine, complevel)
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
