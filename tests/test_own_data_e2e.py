"""Issue 14 acceptance, first line: a producer's own file goes through the whole CLI chain unedited.

Files are written here in producer layouts (not oceanda's): (a) 1-D latitude/longitude across the
dateline in 0..360, land as _FillValue, bounds variables, a 360_day calendar; (d) a tiny 12 x 20 grid
with 40 library times, axes named LAT/LON/TIME found by axis/units only, hours since, K. A library
and a truth run (another seed) each; the chain is observe -> train --kind window -> assimilate local
and hybrid -> enkf --method enoi -> evaluate, through ``oceanda.cli.main`` (in-process: no start-up).
Local and hybrid must beat climatology (the library mean) and the training health must pass without
--allow-weak on both grids (the tiny one needs distinct validation windows to get past chance).
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import xarray as xr

import realformat as rf
from oceanda import open_states
from oceanda.cli import main


def _fields(nt: int, ny: int, nx: int, seed: int, sigma: float, amp: float) -> np.ndarray:
    """Smooth random fields, AR(1) in time: something an analog method can learn."""
    return rf.smooth_fields(nt, ny, nx, seed=seed, sigma=sigma, ar=0.9, amplitude=amp)


def _land(ny: int, nx: int) -> np.ndarray:
    j, i = np.mgrid[0:ny, 0:nx]
    island = ((j - ny * 0.5) / (ny * 0.12 + 1)) ** 2 + ((i - nx * 0.35) / (nx * 0.08 + 1)) ** 2 <= 1
    return island | ((i >= nx - max(nx // 8, 2)) & (j < ny // 3))


def write_latlon_0360(path, nt: int, seed: int) -> None:
    """(a): adt on (time, latitude, longitude), lon 165..200 E, _FillValue land, bounds, crs, 360_day."""
    ny, nx = 20, 36
    lat, lon = -12.0 + 0.75 * np.arange(ny), 165.0 + np.arange(nx)
    v = 0.4 * np.cos(np.deg2rad(lat))[:, None] + 0.002 * (lon - 180)[None] + _fields(nt, ny, nx, seed, 3.0, 0.15)
    v[:, _land(ny, nx)] = np.nan
    t = 3.0 + np.arange(nt)
    tunits = "days since 1990-01-01"
    ds = xr.Dataset(
        {"adt": (("time", "latitude", "longitude"), v.astype("f4"),
                 {"units": "m", "standard_name": "sea_surface_height_above_geoid", "grid_mapping": "crs"}),
         "time_bnds": (("time", "nv"), np.c_[t - .5, t + .5], {"units": tunits, "calendar": "360_day"}),
         "lat_bnds": (("latitude", "nv"), np.c_[lat - .375, lat + .375]),
         "lon_bnds": (("longitude", "nv"), np.c_[lon - .5, lon + .5]),
         "crs": ((), np.int32(0), {"grid_mapping_name": "latitude_longitude"})},
        coords={"time": ("time", t, {"units": tunits, "calendar": "360_day", "axis": "T", "bounds": "time_bnds"}),
                "latitude": ("latitude", lat, {"units": "degrees_north", "standard_name": "latitude", "bounds": "lat_bnds"}),
                "longitude": ("longitude", lon, {"units": "degrees_east", "standard_name": "longitude",
                                                 "bounds": "lon_bnds"})},
        attrs={"Conventions": "CF-1.7", "title": "producer file (a)"})
    ds.to_netcdf(path, encoding={"adt": {"_FillValue": np.float32(-32767.0), "zlib": True}})


def write_tiny(path, nt: int, seed: int) -> None:
    """(d): TEMP on (TIME, LAT, LON), 12 x 20, axes known only by axis/units, hours since, proleptic_gregorian."""
    ny, nx = 12, 20
    v = 285.0 + _fields(nt, ny, nx, seed, 2.0, 1.0)
    v[:, _land(ny, nx)] = np.nan
    ds = xr.Dataset(
        {"TEMP": (("TIME", "LAT", "LON"), v, {"units": "K", "long_name": "surface temperature"})},
        coords={"TIME": ("TIME", 24.0 * (3 + np.arange(nt)), {"units": "hours since 2010-01-01",
                                                              "calendar": "proleptic_gregorian", "axis": "T"}),
                "LAT": ("LAT", 40.0 + 0.5 * np.arange(ny), {"units": "degrees_north", "axis": "Y"}),
                "LON": ("LON", -30.0 + 0.5 * np.arange(nx), {"units": "degrees_east", "axis": "X"})})
    ds.to_netcdf(path)


def _run(args: list[str]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = main(args)
    assert rc == 0, f"oceanda {' '.join(args)} exited {rc}"


def _chain(d, var: str, observe: list[str], seconds: str, capsys) -> dict[str, float]:
    """The CLI chain on d/library.nc and d/truth.nc; returns the RMSE of each analysis and of climatology."""
    lib, truth, obs = str(d / "library.nc"), str(d / "truth.nc"), str(d / "obs.nc")
    _run(["observe", "--states", truth, "--out", obs, "--seed", "1", *observe])
    _run(["train", "--kind", "window", "--states", lib, "--obs", obs, "--out", str(d / "model"), "--seconds", seconds,
          "--quiet"])
    train_log = capsys.readouterr().out
    assert "validation R@1" in train_log and "chance" in train_log and "WEAK" not in train_log, train_log
    health = json.loads((d / "model" / "config.json").read_text()).get("health") or {}
    assert health and not health.get("weak"), health
    for mode in ("local", "hybrid"):
        _run(["assimilate", "--model", str(d / "model"), "--library", lib, "--obs", obs, "--out", str(d / f"{mode}.nc"),
              "--mode", mode, "--quiet"])
    _run(["enkf", "--method", "enoi", "--ensemble", lib, "--obs", obs, "--out", str(d / "enoi.nc"), "--quiet"])
    _run(["evaluate", "--truth", truth, "--analysis", *(f"{m}={d / m}.nc" for m in ("local", "hybrid", "enoi")),
          "--obs", obs, "--out", str(d / "report"), "--quiet"])
    metrics = json.loads((d / "report" / "metrics.json").read_text())["methods"]
    assert set(metrics) == {"local", "hybrid", "enoi"}
    assert any(p.suffix == ".png" for p in (d / "report").iterdir())
    t = open_states(truth)[var].load()
    land = np.isnan(t.isel(time=0).values)
    assert land.any() and (~land).any()
    rmse = {"climatology": float(np.sqrt(np.nanmean((open_states(lib)[var].mean("time") - t).values ** 2)))}
    for m in ("local", "hybrid", "enoi"):
        mean = xr.open_dataset(d / f"{m}.nc")[f"{var}_mean"].load()
        assert np.array_equal(np.isnan(mean.values), np.broadcast_to(land, mean.shape)), f"{m}: NaN not exactly on land"
        rmse[m] = float(np.sqrt(np.nanmean((mean.transpose(*t.dims).values - t.sel(time=mean["time"]).values) ** 2)))
    return rmse


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["latlon_0360_360day", "tiny_12x20_40_samples"])
def test_own_producer_file_end_to_end(tmp_path, capsys, layout):
    if layout == "latlon_0360_360day":
        write_latlon_0360(tmp_path / "library.nc", 160, 1)
        write_latlon_0360(tmp_path / "truth.nc", 12, 99)
        rmse = _chain(tmp_path, "adt", ["--operator", "altimetry", "--sigma", "0.01"], "12", capsys)
    else:
        write_tiny(tmp_path / "library.nc", 40, 1)
        write_tiny(tmp_path / "truth.nc", 10, 99)
        rmse = _chain(tmp_path, "TEMP", ["--operator", "gappy", "--variables", "TEMP", "--sigma-fraction", "0.1"], "8",
                      capsys)
    print(layout, {k: round(v, 4) for k, v in rmse.items()})
    assert rmse["local"] < rmse["climatology"], rmse
    assert rmse["hybrid"] < rmse["climatology"], rmse


def test_validation_windows_are_distinct_on_a_tiny_grid():
    """40 times on 12 x 20: the validation pairs hold each (time, window) once, so a copy cannot tie with it."""
    from oceanda.analysis.window_training import WindowPairSampler
    from oceanda.analysis.windows import WindowSpec

    states = np.random.default_rng(0).normal(size=(40, 1, 12, 20)).astype(np.float32)
    spec = WindowSpec(12, 6, 4, False)
    mk = lambda distinct: WindowPairSampler(states, np.zeros(40, int), [0], [0],  # noqa: E731
                                            lambda n, rng: rng.random((n, 12, 20)) < 0.3, [0.1], spec,
                                            indices=np.arange(36, 40), distinct=distinct)
    s, _ = mk(True)(1000, np.random.default_rng(1))
    assert len(s) == 4 * 9  # 4 validation times x 9 window starts, each once
    assert len(np.unique(s.reshape(len(s), -1), axis=0)) == len(s)
    s, _ = mk(False)(1000, np.random.default_rng(1))
    assert len(s) == 1000 and len(np.unique(s.reshape(len(s), -1), axis=0)) <= 36  # the plain draw repeats

