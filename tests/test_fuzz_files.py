"""File-mutation fuzz suite: one malformed (or oddly legitimate) input file, one verb, the README's promises.

Each case copies one of the small base inputs (``fuzzkit.base_inputs``: library, altimetry, truth,
profile points; plus a member ensemble and an analysis built once per module), changes one thing
about it -- its file kind, its bytes, a variable, a dimension, a coordinate, a dtype, a value, a
unit, a calendar or an attribute -- and runs ONE verb on it (assimilate, enkf enoi/letkf, evaluate,
observe, train) in-process through ``fuzzkit.run_cli``. The expectation of every case is decided
here, by what a producer could legitimately write:

* ``error``: garbage; exit code 2, one error line naming the mutated file (or the variable/option in
  ``names``), no traceback, inputs unchanged, nothing left beside the output;
* ``ok``: a legitimate file (int16 packing, other calendars, ``cm`` units, NetCDF-3, zarr, ...): exit 0
  and finite outputs -- and, where the change is only a change of representation (``cm`` for ``m``,
  transposed dimensions, 0..360 longitudes), the same analysis as the unchanged input;
* ``any``: either is honest (a clean error, or a finite output -- the same as the unchanged input's where
  ``same`` is set); e.g. a bit flip that may or may not touch data, one NaN in one ensemble member.

Bit flips are classified when the file is made: a file xarray cannot read must be refused, one whose
content reads identical must be accepted, anything in between is ``any``.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import math
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import xarray as xr

import fuzzkit

# ----------------------------------------------------------------------------------------------
# Targets: which verb reads the mutated file, in which argument
# ----------------------------------------------------------------------------------------------

#: target -> (verb, base input mutated, its file name, the variable mutations act on)
TARGETS = {
    "assimilate-library": ("assimilate", "library", "library.nc", "ssh"),
    "assimilate-obs": ("assimilate", "obs", "obs.nc", "ssh"),
    "enoi-ensemble": ("enkf", "library", "library.nc", "ssh"),
    "enoi-obs": ("enkf", "obs", "obs.nc", "ssh"),
    "enoi-points": ("enkf", "points", "points.nc", "psi"),
    "letkf-ensemble": ("enkf", "ens", "ens.nc", "ssh"),
    "evaluate-truth": ("evaluate", "truth", "truth.nc", "ssh"),
    "evaluate-analysis": ("evaluate", "analysis", "analysis.nc", "ssh_mean"),
    "observe-states": ("observe", "truth", "truth.nc", "ssh"),
    "train-states": ("train", "library", "library.nc", "ssh"),
    "train-obs": ("train", "obs", "obs.nc", "ssh"),
}


def _argv(target: str, base: dict, made: dict[str, Path], out: Path) -> tuple[list, list[Path]]:
    """The command line of ``target`` with the ``made`` files for the base inputs; every input it reads."""
    verb = TARGETS[target][0]
    p = {**base, **made}
    if target.startswith("assimilate"):
        argv = ["assimilate", "--model", p["model"], "--library", p["library"], "--obs", p["obs"],
                "--out", out, "--mode", "local", "--cache-dir", base["cache"], "--quiet"]
        return argv, [p["library"], p["obs"], p["model"]]
    if target.startswith("enoi"):
        obs = p["points"] if target == "enoi-points" else p["obs"]
        argv = ["enkf", "--method", "enoi", "--ensemble", p["library"], "--obs", obs, "--out", out,
                "--no-members", "--quiet"]
        return argv, [p["library"], obs]
    if target.startswith("letkf"):
        return (["enkf", "--method", "letkf", "--ensemble", p["ens"], "--obs", p["obs"], "--out", out,
                 "--loc-radius", "100", "--block", "4", "--quiet"], [p["ens"], p["obs"]])
    if verb == "evaluate":
        argv = ["evaluate", "--truth", p["truth"], "--analysis", f"a={p['analysis']}", "--out", out,
                "--quiet"]
        return argv, [p["truth"], p["analysis"]]
    if verb == "observe":
        argv = ["observe", "--states", p["truth"], "--operator", "altimetry", "--out", out, "--quiet"]
        return argv, [p["truth"]]
    return (["train", "--states", p["library"], "--obs", p["obs"], "--out", out, "--epochs", "1", "--quiet"],
            [p["library"], p["obs"]])


def _out_name(target: str) -> str:
    return {"evaluate": "report", "train": "model"}.get(TARGETS[target][0], "out.nc")


# ----------------------------------------------------------------------------------------------
# Mutations of a Dataset (raw: decode_times=False, mask_and_scale=False), var = the target's variable
# ----------------------------------------------------------------------------------------------


def _set_value(ds: xr.Dataset, v: str, value: float, where: str = "first") -> xr.Dataset:
    a = ds[v].values.copy()
    finite = np.argwhere(np.isfinite(a))
    a[tuple(finite[0] if where == "first" else finite[len(finite) // 2])] = value
    ds[v] = ds[v].copy(data=a)
    return ds


def _with_time(ds: xr.Dataset, values, **attrs) -> xr.Dataset:
    """``time`` replaced by ``values`` (same dim), its attributes updated."""
    t = ds["time"]
    values = np.asarray(values)
    keep = {k: x for k, x in t.attrs.items() if not (k == "_FillValue" and values.dtype.kind != "f")}
    new = xr.Variable(t.dims, values, {**keep, **attrs})
    return ds.assign_coords(time=new)


def _time_values(ds: xr.Dataset) -> np.ndarray:
    return np.asarray(ds["time"].values).copy()


def _edit_time(fn: Callable[[np.ndarray], np.ndarray]) -> Callable:
    def change(ds: xr.Dataset, v: str) -> xr.Dataset:  # noqa: ARG001 - every mutation takes the variable
        return _with_time(ds, fn(_time_values(ds).astype(float)))
    return change


def _coord_edit(name: str, fn: Callable[[np.ndarray], np.ndarray]) -> Callable:
    def change(ds: xr.Dataset, v: str) -> xr.Dataset:  # noqa: ARG001
        c = ds[name]
        return ds.assign_coords({name: c.copy(data=fn(np.asarray(c.values, dtype=float).copy()))})
    return change


def _nan_at(a: np.ndarray, frac: float = 0.3) -> np.ndarray:
    a.reshape(-1)[int(a.size * frac)] = np.nan
    return a


def _drop_var(ds, v):
    return ds.drop_vars([v])


def _drop_all(ds, v):  # noqa: ARG001
    return ds.drop_vars(list(ds.data_vars))


def _rename_plain(ds, v):
    ds = ds.rename({v: "eta", **({f"{v}_error": "eta_error"} if f"{v}_error" in ds else {})})
    for k in ("standard_name", "long_name"):
        ds["eta"].attrs.pop(k, None)
    return ds


def _rename_std(ds, v):
    """``ssh`` as ``sla`` with its CF standard_name kept: documented to be read as the state variable."""
    return ds.rename({v: "sla", **({f"{v}_error": "sla_error"} if f"{v}_error" in ds else {})})


def _extra_var(ds, v):
    units = ds[v].attrs.get("units", "m")
    ds["ssh_detrended"] = (ds[v] * 0.5).assign_attrs(units=units, long_name="extra field")
    return ds


def _extra_obs_psi(ds, v):  # noqa: ARG001
    """Gridded observations of a second state variable (psi, upper layer) where ssh is observed."""
    psi = (ds["ssh"] * 6.5e4).expand_dims(layer=np.array([1], dtype="int32"), axis=1)
    ds["psi"] = psi.assign_attrs(units="m2 s-1", long_name="streamfunction", _FillValue=np.float32(np.nan))
    ds["psi_error"] = xr.DataArray(np.float32(100.0), attrs={"units": "m2 s-1"})
    return ds


def _aux_crs_bounds(ds, v):
    """A grid-mapping variable and time bounds, as many producers write them."""
    attrs = {"grid_mapping_name": "sinusoidal", "longitude_of_central_meridian": -60.0}
    ds["crs"] = xr.DataArray(np.int32(0), attrs=attrs)
    ds[v].attrs["grid_mapping"] = "crs"
    t = ds["time"].values.astype(float)
    ds["time_bnds"] = (("time", "nv"), np.stack([t - 0.5, t + 0.5], axis=1))
    ds["time"].attrs["bounds"] = "time_bnds"
    return ds


def _transpose(ds, v):  # noqa: ARG001
    return ds.transpose(..., "x", "y")


def _time_last(ds, v):
    ds[v] = ds[v].transpose(..., "time")
    return ds


def _one_d(ds, v):
    keep = [d for d in ds[v].dims if d == "time"] or [ds[v].dims[0]]
    ds[v] = ds[v].isel({d: 0 for d in ds[v].dims if d not in keep}, drop=True)
    return ds


def _five_d(ds, v):
    ds[v] = ds[v].expand_dims(band=2, sensor=1).transpose("time", ...)
    return ds


def _to_string(ds, v):
    a = ds[v].values
    ds[v] = (ds[v].dims, np.char.mod("%.4f", a.astype(float)), {"units": ds[v].attrs.get("units", "m")})
    return ds


def _to_bool(ds, v):
    attrs = {k: val for k, val in ds[v].attrs.items() if k != "_FillValue"}
    ds[v] = (ds[v].dims, np.nan_to_num(ds[v].values) > 0, attrs)
    return ds


def _to_complex(ds, v):
    attrs = {k: val for k, val in ds[v].attrs.items() if k != "_FillValue"}
    ds[v] = (ds[v].dims, np.nan_to_num(ds[v].values).astype(np.complex64) * (1 + 1j), attrs)
    return ds


def _isel(**sel):
    def change(ds, v):  # noqa: ARG001
        return ds.isel(**sel)
    return change


def _band_dim(ds, v):
    ds[v] = ds[v].expand_dims(band=np.array([1, 2], dtype="int32"), axis=1)
    return ds


def _pack(dtype: str = "int16", scale: float | None = None):
    """The target variable packed as ``dtype`` with scale_factor/add_offset (NaN: _FillValue): legitimate CF.

    A given ``scale`` (0, NaN) makes the packing garbage.
    """
    def change(ds, v):
        a = ds[v].values.astype(float)
        lo, hi = np.nanmin(a), np.nanmax(a)
        info = np.iinfo(dtype)
        off = (hi + lo) / 2
        sc = ((hi - lo) / (info.max - info.min - 4) or 1.0) if scale is None else scale
        fill = np.dtype(dtype).type(info.min)
        packed = np.round((a - off) / sc) if sc and np.isfinite(sc) else np.zeros_like(a)
        packed = np.where(np.isfinite(a), packed, fill).astype(dtype)
        attrs = {k: val for k, val in ds[v].attrs.items() if k != "_FillValue"}
        ds[v] = (ds[v].dims, packed, {**attrs, "_FillValue": fill, "scale_factor": np.float32(sc),
                                      "add_offset": np.float32(off)})
        return ds
    return change


def _as_float64(ds, v):
    ds[v] = ds[v].astype("float64")
    ds[v].attrs["_FillValue"] = np.float64(np.nan)
    return ds


def _time_dtype(dtype: str):
    def change(ds, v):  # noqa: ARG001
        return _with_time(ds, _time_values(ds).astype(dtype))
    return change


def _mm_int(ds, v):
    """Integers in mm (a common SSH product layout): values x 1000, units mm, errors in mm."""
    a = ds[v].values.astype(float) * 1000.0
    fill = np.int32(-2147483647)
    ds[v] = (ds[v].dims, np.where(np.isfinite(a), np.round(a), fill).astype("int32"),
             {**{k: x for k, x in ds[v].attrs.items() if k != "_FillValue"}, "units": "mm",
              "_FillValue": fill})
    if f"{v}_error" in ds:
        ds[f"{v}_error"] = (ds[f"{v}_error"] * 1000.0).assign_attrs({**ds[f"{v}_error"].attrs, "units": "mm"})
    return ds


def _value(x: float, where: str = "first"):
    def change(ds, v):
        return _set_value(ds, v, x, where)
    return change


def _all_nan(ds, v):
    ds[v] = ds[v].copy(data=np.full(ds[v].shape, np.nan, dtype=ds[v].dtype))
    return ds


def _day_nan(ds, v):
    a = ds[v].values.copy()
    a[1] = np.nan
    ds[v] = ds[v].copy(data=a)
    return ds


def _one_nan(ds, v):
    a = ds[v].values.copy()
    idx = np.argwhere(np.isfinite(a))
    a[tuple(idx[len(idx) // 3])] = np.nan
    ds[v] = ds[v].copy(data=a)
    return ds


def _constant(ds, v):
    a = ds[v].values.copy()
    a[np.isfinite(a)] = 0.05
    ds[v] = ds[v].copy(data=a)
    return ds


def _error(value: float, field: bool = False):
    """The target's ``<var>_error`` set to ``value`` (everywhere, or at one point of a per-point field)."""
    def change(ds, v):
        e = f"{v}_error"
        if field:
            a = np.full(ds[v].shape, float(ds[e].values.reshape(-1)[0]), dtype="float32")
            a.reshape(-1)[np.flatnonzero(np.isfinite(ds[v].values))[5]] = value
            ds[e] = (ds[v].dims, a, ds[e].attrs)
        else:
            ds[e] = ds[e].copy(data=np.full(ds[e].shape, value, dtype=ds[e].dtype))
        return ds
    return change


def _units(units: str | None, factor: float = 1.0):
    """The target's units set to ``units`` (None: removed), its values (and errors) scaled by ``factor``."""
    def change(ds, v):
        names = [v] + ([f"{v}_error"] if f"{v}_error" in ds else [])
        for n in names:
            attrs = dict(ds[n].attrs)
            if units is None:
                attrs.pop("units", None)
            else:
                attrs["units"] = units
            values = ds[n].values * factor if factor != 1.0 else ds[n].values
            ds[n] = (ds[n].dims, values.astype(ds[n].dtype), attrs)
        return ds
    return change


def _calendar(calendar: str, units: str | None = None, values=None):
    def change(ds, v):  # noqa: ARG001
        t = _time_values(ds) if values is None else np.asarray(values(len(ds["time"])), dtype=float)
        attrs = {"calendar": calendar, **({"units": units} if units else {})}
        return _with_time(ds, t, **attrs)
    return change


def _time_units(units: str, scale: float = 1.0):
    def change(ds, v):  # noqa: ARG001
        return _with_time(ds, _time_values(ds).astype(float) * scale, units=units)
    return change


def _huge_global(ds, v):  # noqa: ARG001
    ds.attrs["history"] = "x" * 2_000_000
    return ds


def _huge_var_attr(ds, v):
    ds[v].attrs["comment"] = "a long comment. " * 50_000
    ds[v].attrs["flag_values"] = np.arange(20_000, dtype="float64")
    return ds


def _many_attrs(ds, v):  # noqa: ARG001
    ds.attrs.update({f"attr_{i:04d}": f"value {i}" for i in range(2000)})
    return ds


def _fill(declared: float | None, written: float, missing_value: float | None = None):
    """NaN cells written as ``written`` with ``_FillValue`` = ``declared`` (and/or ``missing_value``)."""
    def change(ds, v):
        a = ds[v].values.copy()
        if missing_value is not None:  # half of the gaps written with the missing_value instead
            gaps = np.flatnonzero(~np.isfinite(a))
            a.reshape(-1)[gaps[::2]] = missing_value
        a[~np.isfinite(a)] = written
        attrs = {k: x for k, x in ds[v].attrs.items() if k != "_FillValue"}
        if declared is not None:
            attrs["_FillValue"] = a.dtype.type(declared)
        if missing_value is not None:
            attrs["missing_value"] = a.dtype.type(missing_value)
        ds[v] = (ds[v].dims, a, attrs)
        return ds
    return change


def _fill_double(ds, v):
    """A float64 _FillValue on a float32 variable (netCDF-C casts it): harmless."""
    ds[v].attrs["_FillValue"] = np.float64(-1e20)
    return ds


# ----------------------------------------------------------------------------------------------
# Mutations of the file itself
# ----------------------------------------------------------------------------------------------


def _kind(kind: str):
    def make(src: Path, dest: Path) -> Path:
        if kind == "random":
            return fuzzkit.random_bytes(dest, 50_000, seed=len(str(dest)))
        if kind == "hdf5-random":  # a valid HDF5 signature followed by noise
            return fuzzkit.random_bytes(dest, 50_000, seed=1, prefix=b"\x89HDF\r\n\x1a\n")
        if kind == "zarr-empty":
            dest = dest.with_suffix(".zarr")
            dest.mkdir()
            return dest
        if kind == "zarr-group-only":
            dest = dest.with_suffix(".zarr")
            dest.mkdir()
            (dest / ".zgroup").write_text('{"zarr_format": 2}')
            return dest
        if kind == "gzip":
            dest.write_bytes(gzip.compress(src.read_bytes()))
            return dest
        if kind == "csv":
            dest.write_text("time,y,x,ssh\n0,7.8,7.8,0.01\n1,7.8,23.4,0.02\n")
            return dest
        if kind == "noperm":
            shutil.copyfile(src, dest)
            dest.chmod(0)
            return dest
        return fuzzkit.special_file(kind, dest)
    return make


def _legit_kind(kind: str):
    def make(src: Path, dest: Path) -> Path:
        if kind == "netcdf3":
            with xr.open_dataset(src, decode_times=False, mask_and_scale=False) as ds:
                ds = ds.load()
            for var in ds.variables.values():
                var.encoding = {}
            ds.to_netcdf(dest, format="NETCDF3_64BIT")
            return dest
        if kind == "zarr":
            dest = dest.with_suffix(".zarr")
            with xr.open_dataset(src, decode_times=False, mask_and_scale=False) as ds:
                ds = ds.load()
            for var in ds.variables.values():
                var.encoding = {}
            ds.to_zarr(dest, zarr_format=2, consolidated=True)
            return dest
        if kind == "symlink":
            real = dest.parent / "real" / dest.name
            real.parent.mkdir()
            shutil.copyfile(src, real)
            dest.symlink_to(real)
            return dest
        if kind == "space":
            sub = dest.parent / "my data (copy)"
            sub.mkdir()
            return Path(shutil.copyfile(src, sub / dest.name))
        raise ValueError(kind)
    return make


def _truncate(fraction: float):
    return lambda src, dest: fuzzkit.truncate(src, dest, fraction)


def _flip(seed: int | None = None, at: float | None = None):
    if at is not None:
        return lambda src, dest: fuzzkit.flip_at(src, dest, at)
    return lambda src, dest: fuzzkit.flip_bytes(src, dest, seed)


def _h5_write(change: Callable):
    """``change(ds)`` written by h5netcdf (invalid_netcdf: float16, complex): HDF5 netCDF-C may not know."""
    def make(src: Path, dest: Path, v: str) -> Path:
        with xr.open_dataset(src, decode_times=False, mask_and_scale=False) as ds:
            new = change(ds.load().copy(deep=True), v)
        for var in new.variables.values():
            var.encoding = {}
            var.attrs.pop("_FillValue", None)
        new.to_netcdf(dest, engine="h5netcdf", invalid_netcdf=True)
        return dest
    return make


def _float16(ds, v):
    ds[v] = ds[v].astype("float16")
    return ds


# ----------------------------------------------------------------------------------------------
# The case table
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
    category: str
    name: str
    target: str
    expect: str  # "error", "ok", "any"; "flip": decided when the file is made
    raw: Callable | None = None  # (src, dest) -> path: a change of the file itself
    change: Callable | None = None  # (ds, var) -> ds: a change of its content
    h5: Callable | None = None  # (src, dest, var) -> path: written by h5netcdf, run in a child process
    names: tuple[str, ...] = ("path",)  # what the error may name: "path" (the mutated file), "model", "other"
    same: float | None = None  # max |mean - unchanged input's mean| (m) for a change of representation only
    pair: bool = False  # the same change to the obs (assimilate, enoi) or the analysis (evaluate) too

    @property
    def id(self) -> str:
        return f"{self.category}-{self.name}{'-pair' if self.pair else ''}-{self.target}"


A_LIB, A_OBS, E_ENS, E_OBS = "assimilate-library", "assimilate-obs", "enoi-ensemble", "enoi-obs"
E_PTS, L_ENS, V_TRUTH, V_ANA = "enoi-points", "letkf-ensemble", "evaluate-truth", "evaluate-analysis"
O_ST, T_ST, T_OBS = "observe-states", "train-states", "train-obs"
HALF = _isel(y=slice(None, None, 2), x=slice(None, None, 2))  # a 32 x 32 grid
NO_GRID = ["y", "x", "lat", "lon"]


class _Table(list):
    """The cases, added a mutation at a time for several targets."""

    def add(self, category: str, name: str, targets: list[str], expect: str, **kw) -> None:
        self.extend(Case(category, name, t, expect, **kw) for t in targets)


def _file_cases(c: _Table) -> None:
    """File kinds, truncation, bit flips."""
    add = c.add
    # -- file kinds
    add("kind", "fifo", [A_LIB, E_OBS, V_ANA, O_ST, T_ST], "error", raw=_kind("fifo"))
    add("kind", "empty", [A_LIB, A_OBS, E_OBS, E_PTS, L_ENS, V_ANA, O_ST, T_OBS], "error", raw=_kind("empty"))
    add("kind", "directory", [A_LIB, E_OBS, V_TRUTH, O_ST], "error", raw=_kind("dir"))
    add("kind", "dangling-symlink", [A_OBS, E_ENS, V_ANA, O_ST], "error", raw=_kind("dangling"))
    add("kind", "csv-text", [A_OBS, E_ENS, E_PTS, V_TRUTH, O_ST, T_OBS], "error", raw=_kind("csv"))
    add("kind", "pickle", [A_LIB, E_OBS, V_ANA, O_ST], "error", raw=_kind("pickle"))
    add("kind", "random-bytes", [A_LIB, A_OBS, E_ENS, E_OBS, V_TRUTH, O_ST, T_ST], "error",
        raw=_kind("random"))
    add("kind", "hdf5-signature-noise", [A_OBS, E_ENS, O_ST], "error", raw=_kind("hdf5-random"))
    add("kind", "zarr-empty-folder", [A_LIB, E_OBS, V_TRUTH, O_ST], "error", raw=_kind("zarr-empty"))
    add("kind", "zarr-group-no-arrays", [A_OBS, E_ENS, O_ST], "error", raw=_kind("zarr-group-only"))
    add("kind", "gzip", [E_OBS, O_ST], "error", raw=_kind("gzip"))
    add("kind", "no-read-permission", [A_OBS, E_ENS, O_ST], "error", raw=_kind("noperm"))
    add("kind", "netcdf3", [E_OBS, O_ST], "ok", raw=_legit_kind("netcdf3"))
    add("kind", "zarr-store", [E_ENS, O_ST], "ok", raw=_legit_kind("zarr"))
    add("kind", "symlink-to-valid", [O_ST], "ok", raw=_legit_kind("symlink"))
    add("kind", "path-with-spaces", [E_OBS, O_ST], "ok", raw=_legit_kind("space"))

    # -- truncation
    for frac, targets in [(0.01, [E_ENS, O_ST]), (0.1, [A_LIB, E_OBS]), (0.3, [A_OBS, V_ANA]),
                          (0.5, [A_LIB, E_ENS, V_TRUTH, O_ST, T_OBS]), (0.7, [A_OBS]),
                          (0.9, [A_LIB, E_OBS, V_ANA]), (0.99, [O_ST]), (0.999, [A_LIB, E_OBS])]:
        add("truncate", f"{frac:g}", targets, "error", raw=_truncate(frac))

    # -- bit flips (classified when made)
    for seed, targets in [(1, [A_LIB, A_OBS, V_TRUTH, O_ST, E_PTS]), (2, [A_LIB, A_OBS, V_TRUTH, O_ST]),
                          (3, [A_LIB, E_OBS, V_ANA, O_ST, E_PTS]), (4, [E_OBS, E_ENS, O_ST]),
                          (5, [E_OBS, O_ST])]:
        add("bitflip", f"seed{seed}", targets, "flip", raw=_flip(seed=seed))
    for at, targets in [(0.25, [E_OBS, O_ST]), (0.5, [A_LIB, V_ANA, O_ST]), (0.75, [E_OBS, O_ST]),
                        (0.9, [A_OBS])]:
        add("bitflip", f"at{at:g}", targets, "flip", raw=_flip(at=at))



def _structure_cases(c: _Table) -> None:
    """Variables, dimensions, coordinates."""
    add = c.add
    # -- variables
    add("variable", "missing", [A_OBS, E_OBS, E_PTS], "error", change=_drop_var)
    add("variable", "missing", [A_LIB, E_ENS], "error", change=_drop_var, names=("path", "other"))
    add("variable", "none-left", [O_ST, V_TRUTH, V_ANA, L_ENS, T_ST], "error", change=_drop_all)
    add("variable", "renamed", [A_OBS, E_OBS, T_OBS], "error", change=_rename_plain)
    add("variable", "renamed", [A_LIB, E_ENS], "error", change=_rename_plain, names=("path", "other"))
    add("variable", "renamed-cf-standard-name", [A_OBS, E_OBS], "ok", change=_rename_std)
    add("variable", "extra", [A_LIB, E_ENS, O_ST], "ok", change=_extra_var)
    add("variable", "extra-observed-psi", [E_OBS], "ok", change=_extra_obs_psi)
    add("variable", "crs-and-time-bounds", [E_OBS, O_ST], "ok", change=_aux_crs_bounds)
    add("variable", "dims-x-y", [A_LIB, E_ENS], "ok", change=_transpose, same=1e-5)
    add("variable", "dims-x-y", [O_ST], "ok", change=_transpose)
    add("variable", "dims-time-last", [E_OBS], "ok", change=_time_last, same=1e-5)
    add("variable", "dims-time-last", [O_ST], "ok", change=_time_last)
    add("variable", "1d", [A_LIB, A_OBS, E_ENS, O_ST, V_ANA], "error", change=_one_d)
    add("variable", "5d", [A_LIB, E_OBS, O_ST, V_TRUTH], "error", change=_five_d)
    add("variable", "string-dtype", [A_OBS, E_ENS, O_ST, V_ANA], "error", change=_to_string)
    add("variable", "bool-dtype", [A_LIB, E_OBS, O_ST], "error", change=_to_bool)
    add("variable", "complex-dtype", [O_ST], "error", h5=_h5_write(_to_complex))  # in a child process: ~4 s

    # -- dimensions
    add("dimension", "time-size-0", [A_LIB, A_OBS, E_ENS, E_OBS, L_ENS, V_TRUTH, V_ANA, O_ST], "error",
        change=_isel(time=slice(0, 0)))
    add("dimension", "y-size-0", [A_LIB, E_OBS, V_ANA, O_ST], "error", change=_isel(y=slice(0, 0)))
    add("dimension", "time-size-1", [E_OBS, O_ST], "ok", change=_isel(time=[0]))
    add("dimension", "one-member", [E_ENS], "error", change=_isel(time=[0]))
    add("dimension", "one-member", [L_ENS], "error", change=_isel(member=[0]))
    add("dimension", "grid-32x32", [A_LIB], "error", change=HALF, names=("path", "model", "other"))
    add("dimension", "grid-32x32", [A_OBS, E_OBS, V_ANA], "error", change=HALF)
    add("dimension", "grid-32x32", [L_ENS], "error", change=HALF, names=("path", "other"))
    add("dimension", "grid-48x40", [O_ST], "ok", change=_isel(y=slice(0, 48), x=slice(0, 40)))
    add("dimension", "grid-48x40", [E_ENS], "ok", change=_isel(y=slice(0, 48), x=slice(0, 40)), pair=True)
    add("dimension", "grid-32x32", [A_LIB], "error", change=HALF, names=("path", "model"),
        pair=True)  # library and obs agree, the model does not
    add("dimension", "extra-dim-band", [A_LIB, E_OBS, O_ST, V_TRUTH], "error", change=_band_dim)

    # -- coordinates
    add("coordinate", "time-missing", [A_OBS, E_OBS, O_ST, V_TRUTH, E_PTS], "error",
        change=lambda ds, v: ds.drop_vars("time"))
    add("coordinate", "grid-coords-missing", [A_LIB], "error", change=lambda ds, v: ds.drop_vars(NO_GRID),
        names=("path", "model"))
    add("coordinate", "grid-coords-missing", [E_OBS, O_ST], "any", change=lambda ds, v: ds.drop_vars(NO_GRID))
    add("coordinate", "time-duplicated", [A_LIB, A_OBS, E_ENS, E_OBS, O_ST, V_TRUTH],
        "error", change=_edit_time(lambda t: np.r_[t[:1], t[:1], t[2:]]))
    add("coordinate", "time-decreasing", [A_OBS, E_OBS, O_ST, V_ANA], "error",
        change=_edit_time(lambda t: t[::-1]))
    add("coordinate", "time-not-monotonic", [A_LIB, E_ENS, O_ST], "error",
        change=_edit_time(lambda t: np.r_[t[:1], t[2:3], t[1:2], t[3:]]))
    time_nan = _edit_time(lambda t: _nan_at(t, 0.5))
    add("coordinate", "time-nan", [A_OBS, E_OBS, O_ST, V_TRUTH], "error", change=time_nan)
    add("coordinate", "time-nan", [E_PTS], "any", change=time_nan)  # one point: may be dropped and counted
    add("coordinate", "x-nan", [A_LIB, E_OBS, O_ST], "error", change=_coord_edit("x", lambda a: _nan_at(a)))
    lat_nan = _coord_edit("lat", lambda a: _nan_at(a))
    add("coordinate", "lat-nan", [A_OBS, E_OBS, O_ST], "error", change=lat_nan)
    add("coordinate", "lat-nan", [E_PTS], "any", change=lat_nan)  # one point: may be dropped and counted
    add("coordinate", "lat-out-of-range", [A_LIB, E_OBS, O_ST, E_PTS], "error",
        change=_coord_edit("lat", lambda a: a + 100))
    add("coordinate", "lon-1e6", [A_OBS, E_ENS, O_ST, E_PTS], "error",
        change=_coord_edit("lon", lambda a: a + 1e6))
    add("coordinate", "lon-0-360", [E_OBS], "ok", change=_coord_edit("lon", lambda a: a % 360), same=1e-5)
    add("coordinate", "lon-0-360", [O_ST], "ok", change=_coord_edit("lon", lambda a: a % 360))
    add("coordinate", "y-decreasing", [O_ST], "ok", change=_isel(y=slice(None, None, -1)))
    add("coordinate", "y-decreasing", [E_OBS], "any", change=_isel(y=slice(None, None, -1)), same=1e-5)



def _value_cases(c: _Table) -> None:
    """Dtypes, values, observation errors."""
    add = c.add
    # -- dtypes
    add("dtype", "int16-packed", [A_OBS, E_OBS], "ok", change=_pack("int16"), same=2e-4)
    add("dtype", "int16-packed", [A_LIB, E_ENS, O_ST], "ok", change=_pack("int16"))
    add("dtype", "float64", [O_ST], "ok", change=_as_float64)
    add("dtype", "int64-time", [E_OBS, O_ST], "ok", change=_time_dtype("int64"))
    add("dtype", "int16-packed", [V_TRUTH], "ok", change=_pack("int16"))
    add("dtype", "float32-time", [O_ST], "ok", change=_time_dtype("float32"))
    # rounding to 1 mm moves the EnOI mean by 1.2 mm; mm taken for m would move it by metres
    add("dtype", "int32-mm", [E_OBS], "ok", change=_mm_int, same=3e-3)
    add("dtype", "int32-mm", [O_ST], "ok", change=_mm_int)
    add("dtype", "float16-hdf5", [E_OBS], "any", h5=_h5_write(_float16))  # netCDF-C segfaulted on it: a child

    # -- values
    add("value", "inf", [A_LIB, A_OBS, E_ENS, E_OBS, L_ENS, E_PTS, V_TRUTH, V_ANA, O_ST, T_ST], "error",
        change=_value(np.inf, "middle"))
    add("value", "minus-inf", [A_OBS, O_ST], "error", change=_value(-np.inf))
    add("value", "all-nan", [A_LIB, A_OBS, E_ENS, E_OBS, V_ANA, O_ST, T_OBS], "error", change=_all_nan)
    add("value", "one-day-all-nan", [A_OBS, E_OBS], "ok", change=_day_nan)
    add("value", "one-nan", [A_LIB, E_ENS, L_ENS], "any", change=_one_nan)
    add("value", "one-nan", [E_OBS, O_ST], "ok", change=_one_nan)
    add("value", "1e30", [A_LIB, A_OBS, E_ENS, E_OBS, E_PTS, O_ST], "error", change=_value(1e30, "middle"))
    add("value", "minus-1e30", [E_OBS, L_ENS], "error", change=_value(-1e30))
    add("value", "constant", [A_LIB, E_ENS, O_ST], "any", change=_constant)
    add("value", "constant", [E_OBS], "ok", change=_constant)
    add("obs-error", "negative", [A_OBS, E_OBS, E_PTS], "error", change=_error(-0.001))
    add("obs-error", "zero", [A_OBS, E_OBS, E_PTS, T_OBS], "error", change=_error(0.0))
    add("obs-error", "nan", [A_OBS, E_OBS, E_PTS], "error", change=_error(np.nan))
    add("obs-error", "inf", [E_OBS], "error", change=_error(np.inf))
    add("obs-error", "one-negative-in-field", [E_OBS, A_OBS], "error", change=_error(-1.0, field=True))
    add("obs-error", "one-nan-in-field", [E_OBS], "error", change=_error(np.nan, field=True))
    add("obs-error", "missing", [E_OBS], "ok", change=lambda ds, v: ds.drop_vars(f"{v}_error"))



def _metadata_cases(c: _Table) -> None:
    """Units, calendars, attributes."""
    add = c.add
    # -- units
    add("units", "missing", [A_LIB, A_OBS, E_ENS, E_OBS, E_PTS, V_TRUTH, V_ANA, O_ST, T_OBS], "error",
        change=_units(None))
    add("units", "unknown", [A_OBS, E_ENS, E_OBS, V_TRUTH, O_ST], "error", change=_units("bananas"))
    add("units", "cm", [A_OBS, E_OBS], "ok", change=_units("cm", 100.0), same=1e-5)
    add("units", "cm2", [E_PTS], "ok", change=_units("cm2 s-1", 1e4))
    add("units", "cm", [A_LIB, E_ENS], "any", change=_units("cm", 100.0), same=1e-5)
    add("units", "K", [A_OBS, E_OBS, E_PTS], "error", change=_units("K"))
    add("units", "K", [A_LIB, V_TRUTH], "error", change=_units("K"), names=("path", "other"))
    add("units", "meters", [O_ST], "ok", change=_units("meters"))

    # -- calendars
    for cal in ("360_day", "noleap", "julian", "all_leap", "proleptic_gregorian", "standard", "gregorian"):
        add("calendar", cal, [O_ST], "ok", change=_calendar(cal))
    for cal in ("360_day", "noleap", "all_leap", "julian"):
        add("calendar", cal, [E_OBS], "ok", change=_calendar(cal))
    add("calendar", "360_day", [A_OBS, E_ENS], "ok", change=_calendar("360_day"))
    add("calendar", "noleap", [A_LIB], "ok", change=_calendar("noleap"))
    add("calendar", "360_day", [V_TRUTH], "ok", change=_calendar("360_day"), pair=True)
    add("calendar", "months-since-360_day", [E_OBS, O_ST], "ok",
        change=_calendar("360_day", "months since 2005-04-01", lambda n: np.arange(n)))
    add("calendar", "bogus-name", [A_OBS, E_OBS, O_ST, V_TRUTH], "error", change=_calendar("martian"))
    add("calendar", "bad-units", [E_OBS, O_ST], "error", change=_time_units("days since the beginning"))
    add("calendar", "seconds-since", [O_ST], "ok", change=_time_units("seconds since 2005-04-26", 86400.0))

    # -- attributes
    add("attribute", "huge-global", [O_ST], "ok", change=_huge_global)
    add("attribute", "huge-variable-attrs", [O_ST], "ok", change=_huge_var_attr)
    add("attribute", "2000-attrs", [O_ST], "ok", change=_many_attrs)
    add("attribute", "fill-declared", [A_OBS, E_OBS], "ok", change=_fill(-9999.0, -9999.0))
    add("attribute", "missing-value-only", [E_OBS], "ok", change=_fill(None, -9999.0, missing_value=-9999.0))
    add("attribute", "fill-and-missing-value", [E_OBS], "ok",
        change=_fill(-9999.0, -9999.0, missing_value=-8888.0))
    add("attribute", "fill-undeclared", [A_OBS, E_OBS], "error", change=_fill(1e20, -999.0))
    add("attribute", "fill-float64-on-float32", [O_ST], "ok", change=_fill_double)
    add("attribute", "scale-factor-0", [E_OBS, O_ST], "error", change=_pack("int16", scale=0.0))
    add("attribute", "scale-factor-nan", [E_OBS], "error", change=_pack("int16", scale=float("nan")))


def _cases() -> list[Case]:
    c = _Table()
    for part in (_file_cases, _structure_cases, _value_cases, _metadata_cases):
        part(c)
    return list(c)


CASES = _cases()
ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False


# ----------------------------------------------------------------------------------------------
# Fixture: the base inputs, once per module
# ----------------------------------------------------------------------------------------------


def _hand_analysis(truth: Path, dest: Path, members: int = 10) -> Path:
    """An analysis in oceanda's layout: the truth plus noise (only if the enkf verb cannot make one)."""
    rng = np.random.default_rng(0)
    with xr.open_dataset(truth, decode_times=False) as t:
        t = t.load()
    ds = xr.Dataset(coords={c: t[c] for c in ("time", "layer", "y", "x", "lat", "lon")})
    ds = ds.assign_coords(member=("member", np.arange(members, dtype="int32")))
    for v in ("psi", "ssh"):
        sd = float(t[v].std())
        ens = t[v].values[:, None] + rng.normal(0, 0.3 * sd, (t[v].shape[0], members) + t[v].shape[1:])
        ens = ens.astype("float32")
        dims = ("time", "member") + t[v].dims[1:]
        ds[v] = (dims, ens, {"units": t[v].attrs["units"]})
        ds[f"{v}_mean"] = (t[v].dims, ens.mean(1), {"units": t[v].attrs["units"]})
        ds[f"{v}_spread"] = (t[v].dims, ens.std(1, ddof=1), {"units": t[v].attrs["units"]})
    ds.to_netcdf(dest)
    return dest


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("fuzz_files_base")
    paths = dict(fuzzkit.base_inputs(folder))
    paths["ens"] = fuzzkit.member_ensemble(paths["library"], folder / "ens.nc", paths["obs"])
    paths["points"] = fuzzkit.mutate(paths["points"], folder / "points3.nc",  # obs.nc's 3 days: 120 points
                                     lambda ds: ds.isel(obs=np.flatnonzero(ds["time"].values < 3)))
    paths["cache"] = folder / "cache"
    analysis = folder / "analysis.nc"
    oc = fuzzkit.run_cli(["enkf", "--method", "enoi", "--ensemble", paths["library"], "--obs", paths["obs"],
                          "--out", analysis, "--members", "10", "--loc-radius", "100", "--quiet"])
    if oc.rc != 0 or not analysis.exists():
        _hand_analysis(paths["truth"], analysis)
    paths["analysis"] = analysis
    paths["_folder"] = folder
    paths["_ref"] = {}
    return paths


def _reference(base: dict, target: str) -> Path | None:
    """The output of ``target`` on the unchanged inputs (computed once), for ``same`` comparisons."""
    ref, key = base["_ref"], target.split("-")[0]
    if key not in ref:
        out = base["_folder"] / f"ref-{key}.nc"
        argv, _ = _argv(target, base, {}, out)
        oc = fuzzkit.run_cli(argv)
        ref[key] = out if oc.rc == 0 else None
    return ref[key]


# ----------------------------------------------------------------------------------------------
# Checks
# ----------------------------------------------------------------------------------------------


def _key_attrs(var) -> dict:
    keys = ("units", "calendar", "standard_name", "_FillValue", "scale_factor", "add_offset", "missing_value")
    return {k: str(var.attrs.get(k)) for k in keys}


def _flip_expect(src: Path, dest: Path) -> str:
    """``error`` if xarray cannot read the flipped file, ``ok`` if it reads the same content, else ``any``."""
    try:
        with xr.open_dataset(src, decode_times=False, mask_and_scale=False) as a, \
                xr.open_dataset(dest, decode_times=False, mask_and_scale=False) as b:
            a, b = a.load(), b.load()
    except Exception:  # noqa: BLE001 - unreadable by xarray: nothing can read it
        return "error"
    if set(a.variables) != set(b.variables) or dict(a.sizes) != dict(b.sizes):
        return "any"
    for n in a.variables:
        va, vb = a[n], b[n]
        if va.dims != vb.dims or va.dtype != vb.dtype or _key_attrs(va) != _key_attrs(vb):
            return "any"
        if va.dtype.kind in "fc" and not np.array_equal(va.values, vb.values, equal_nan=True):
            return "any"
        if va.dtype.kind not in "fc" and not np.array_equal(va.values, vb.values):
            return "any"
    return "ok"


def _finite(out: Path, verb: str) -> str | None:
    """None if the output of a successful run holds finite results, else what is wrong."""
    if verb == "evaluate":
        m = out / "metrics.json"
        if not m.exists():
            return f"no {m}"
        methods = json.loads(m.read_text()).get("methods", {})
        rmse = methods.get("a", {}).get("rmse")
        return None if isinstance(rmse, (int, float)) and math.isfinite(rmse) else f"rmse {rmse!r}"
    if verb == "train":
        return None
    if not out.exists():
        return f"no output at {out}"
    return None if fuzzkit.finite_output(out) else f"non-finite output (Inf, or an all-NaN field) in {out}"


def _mean_diff(out: Path, ref: Path) -> float:
    """max |ssh_mean(out) - ssh_mean(ref)| in metres (an output in cm is converted)."""
    with xr.open_dataset(out) as a, xr.open_dataset(ref) as b:
        x = a["ssh_mean"].load()
        y = b["ssh_mean"].load()
    factor = {"cm": 0.01, "mm": 0.001}.get(str(x.attrs.get("units")), 1.0)
    x = x.transpose(*y.dims) * factor
    for d in y.dims:  # stored in another order (y decreasing): compare cell by cell
        if d != "time" and d in x.coords and d in y.coords:
            x = x.sel({d: y[d].values}, method="nearest")
    d = np.abs(np.asarray(x.values, float) - np.asarray(y.values, float))
    if np.isnan(d).sum() > np.isnan(np.asarray(y.values, float)).sum():
        return float("inf")
    return float(np.nanmax(d))


def _names(case: Case, base: dict, f: Path) -> list[str]:
    out = []
    for n in case.names:
        if n == "path":
            out.append(str(f))
        elif n == "model":
            out.append(str(base["model"]))
        elif n == "other":
            role = TARGETS[case.target][1]
            out += [str(base[r]) for r in ("library", "obs", "truth", "analysis") if r != role]
        else:
            out.append(n)
    return out


class _Unblock:
    """Opens a FIFO for writing (and closes it) until stopped: a reader stuck in open() gets EOF, no hang."""

    def __init__(self, fifo: Path, after: float):
        self.fifo, self.after, self.stop = fifo, after, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        if self.stop.wait(self.after):
            return
        while not self.stop.is_set():
            try:
                fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
                os.close(fd)
            except OSError:
                pass
            self.stop.wait(0.2)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(2)


#: the second file a ``pair`` case changes: target -> (role, file name, variable)
PAIRED = {"assimilate-library": ("obs", "obs.nc", "ssh"), "enoi-ensemble": ("obs", "obs.nc", "ssh"),
          "evaluate-truth": ("analysis", "analysis.nc", "ssh_mean")}


def _make(case: Case, base: dict, folder: Path) -> dict[str, Path]:
    """The mutated file(s), by role."""
    verb, role, fname, var = TARGETS[case.target]
    src, dest = base[role], folder / fname
    if case.raw is not None:
        return {role: case.raw(src, dest)}
    if case.h5 is not None:
        return {role: case.h5(src, dest, var)}
    made = {role: fuzzkit.mutate(src, dest, lambda ds: case.change(ds, var))}
    if case.pair:
        r2, f2, v2 = PAIRED[case.target]
        made[r2] = fuzzkit.mutate(base[r2], folder / f2, lambda ds: case.change(ds, v2))
    return made


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_file_mutation(case: Case, base: dict, tmp_path: Path) -> None:
    start = time.monotonic()
    if case.name == "no-read-permission" and ROOT:
        pytest.skip("root reads any file")
    verb, role = TARGETS[case.target][:2]
    made = _make(case, base, tmp_path)
    f = made[role]
    expect = _flip_expect(base[role], f) if case.expect == "flip" else case.expect
    out = tmp_path / _out_name(case.target)
    argv, inputs = _argv(case.target, base, made, out)
    timeout = 90 if expect != "error" else (20 if verb == "train" else 10)
    if case.raw is not None and case.name in ("fifo", "no-read-permission"):
        with _Unblock(f, 2.5):  # a FIFO has no content to compare, an unreadable file cannot be hashed
            oc = fuzzkit.run_cli(argv, [p for p in inputs if p != f], [out], timeout=2)
    elif case.h5 is not None:
        oc = fuzzkit.run_cli_isolated(argv, inputs, [out], timeout=timeout)
    else:
        oc = fuzzkit.run_cli(argv, inputs, [out], timeout=timeout)
    if oc.exception and case.h5 is None:  # where in oceanda it escaped (run_cli keeps only the last frame)
        oc.exception += f" [{_oceanda_frame(argv, out)}]"
    names = _names(case, base, f) + [str(p) for r, p in made.items() if r != role]
    if expect == "any":  # a clean error, or a correct output
        problems = oc.problems("ok") if oc.rc == 0 else oc.problems("error", names)
    else:
        problems = oc.problems(expect, names)
    if expect == "error" and oc.rc == 0:  # say what was accepted: a finite output, or NaN/Inf
        problems.append(_finite(out, verb) or "finite output")
    if oc.rc == 0 and expect in ("ok", "any") and not problems:
        bad = _finite(out, verb)
        if bad:
            problems.append(bad)
        elif case.same is not None:
            ref = _reference(base, case.target)
            if ref is None:
                problems.append("the unchanged input fails too (no reference output)")
            else:
                d = _mean_diff(out, ref)
                if not d <= case.same:
                    problems.append(f"analysis differs from the unchanged input's: max |d ssh_mean| {d:.2g}")
    _log(case, expect, oc, problems, argv, time.monotonic() - start)
    assert not problems, f"[expect {expect}] {problems} -- oceanda {' '.join(map(str, argv))}"


def _oceanda_frame(argv: list, out: Path) -> str:
    """Rerun ``argv`` (to a fresh output); the innermost oceanda frame of the exception that escapes."""
    import contextlib
    import io
    import traceback

    from oceanda import cli

    again = [str(out.with_name("again-" + out.name)) if str(a) == str(out) else str(a) for a in argv]
    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            cli.main(again)
    except BaseException as exc:  # noqa: BLE001 - the exception the first run let escape
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/oceanda/" in f.filename]
        if frames:
            f = frames[-1]
            return f"oceanda/{f.filename.split('/oceanda/')[-1]}:{f.lineno} {f.name}"
    return "not reproduced"


def _log(case: Case, expect: str, oc, problems: list[str], argv: list, seconds: float) -> None:
    """One JSON line per case to $FUZZ_FILES_LOG (if set): the raw material of the findings file."""
    path = os.environ.get("FUZZ_FILES_LOG")
    if not path:
        return
    rec = {"id": case.id, "category": case.category, "target": case.target, "expect": expect, "rc": oc.rc,
           "problems": problems, "exception": oc.exception, "hung": oc.hung,
           "error_line": (oc.error_lines or [""])[0][:500], "stderr_tail": oc.stderr.strip()[-300:],
           "argv": [str(a) for a in argv], "seconds": round(seconds, 2)}
    with open(path, "a") as fh:
        fh.write(json.dumps(rec) + "\n")
