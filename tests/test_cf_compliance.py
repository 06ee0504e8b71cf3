"""Every NetCDF oceanda writes passes the IOOS compliance-checker (``--test=cf:1.8``) with 0 errors.

The outputs are made here, in tmp_path, by short runs of the CLI on the bundled QG sample (two
observation times, a 120-state library) and on a foreign-producer file (1-D latitude/longitude,
360_day calendar, range attributes, bounds). The checker runs in-process with the network cut:
it must use the CF standard-name table it ships.
"""

import json
import socket

import netCDF4
import numpy as np
import pytest
import xarray as xr

from oceanda import io
from oceanda.cli import main
from oceanda.sampledata import bundled_sample_dir

pytest.importorskip("compliance_checker")
pytestmark = pytest.mark.filterwarnings("ignore:The ioos_sos checker is deprecated:DeprecationWarning")

SAMPLE = bundled_sample_dir("qg")
MODELS = SAMPLE.parent / "models"


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """No connection leaves the test: the checker must not fetch a standard-name table."""

    def refuse(self, *args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: refuse(None, *a))


def cf_check(path, tmp_path):
    """(errors, warnings, score): the high- and medium-priority failures of ``cf:1.8``, as the CLI counts them."""
    from compliance_checker.runner import CheckSuite, ComplianceChecker

    CheckSuite.load_all_available_checkers()
    report = tmp_path / f"{path.name}.cc.json"
    ComplianceChecker.run_checker(str(path), ["cf:1.8"], 0, "normal", output_filename=str(report), output_format="json")
    res = json.loads(report.read_text())["cf:1.8"]

    def failed(key):
        return [m for r in res[key] if r["value"][0] < r["value"][1] for m in (r["msgs"] or [r["name"]])]

    return failed("high_priorities"), failed("medium_priorities"), res["scored_points"] / res["possible_points"]


def assert_cf_clean(path, tmp_path):
    errors, warnings, score = cf_check(path, tmp_path)
    assert not errors, f"{path.name}: {len(errors)} CF-1.8 error(s) (score {score:.1%}):\n  " + "\n  ".join(
        errors) + "\nwarnings:\n  " + "\n  ".join(warnings)


def run(*argv):
    assert main([*map(str, argv), "--quiet"]) == 0, argv


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("cf_inputs")
    with xr.open_dataset(SAMPLE / "library.nc") as lib:
        lib.isel(time=slice(0, 120)).to_netcdf(d / "library.nc")
    with xr.open_dataset(SAMPLE / "obs_altimetry_eval_1.nc") as obs:
        obs.isel(time=slice(0, 2)).to_netcdf(d / "obs.nc")
    with xr.open_dataset(SAMPLE / "obs_insitu_eval_1.nc") as obs:
        t = obs["time"].values
        obs.isel(obs=np.flatnonzero(t <= np.unique(t)[1])).to_netcdf(d / "points.nc")
    with xr.open_dataset(SAMPLE / "truth_eval_1.nc") as truth:
        truth.isel(time=slice(0, 3)).to_netcdf(d / "truth.nc")
    return d


@pytest.fixture(scope="module")
def outputs(inputs, tmp_path_factory):
    """One file per kind of output oceanda writes, by the CLI, on the QG sample."""
    d = tmp_path_factory.mktemp("cf_outputs")
    lib, obs = inputs / "library.nc", inputs / "obs.nc"
    for mode, model in (("global", "qg_field"), ("local", "qg_window"), ("hybrid", "qg_window")):
        run("assimilate", "--model", MODELS / model, "--library", lib, "--obs", obs, "--out", d / f"assimilate_{mode}.nc",
            "--mode", mode, "--members", 5, "--cache-dir", d / f"cache_{model}")
    for method in ("enoi", "letkf"):
        run("enkf", "--method", method, "--ensemble", lib, "--obs", obs, "--out", d / f"enkf_{method}.nc",
            "--loc-radius", 100, "--periodic", "--members", 40)
    run("enkf", "--method", "enoi", "--ensemble", lib, "--obs", inputs / "points.nc", "--out", d / "enkf_points.nc",
        "--loc-radius", 100, "--periodic", "--members", 40, "--no-members")
    run("enkf", "--cycle", "qg", "--cycles", 2, "--burn-in", 0, "--members", 6, "--out", d / "cycle_qg.nc",
        "--checkpoint-dir", d / "checkpoints")
    for op in ("altimetry", "points", "profiles"):
        run("observe", "--states", inputs / "truth.nc", "--operator", op, "--seed", 1, "--out", d / f"observe_{op}.nc")
    run("sample-data", "--testbed", "qg", "--size", "tiny", "--out", d / "sample")
    return d


QG_OUTPUTS = ["assimilate_global.nc", "assimilate_local.nc", "assimilate_hybrid.nc", "enkf_enoi.nc", "enkf_letkf.nc",
              "enkf_points.nc", "cycle_qg.nc", "checkpoints/cycle_000001.nc", "observe_altimetry.nc",
              "observe_points.nc", "observe_profiles.nc", "sample/library.nc", "sample/truth_tune.nc",
              "sample/obs_altimetry_eval_1.nc", "sample/obs_gappy_eval_1.nc", "sample/obs_insitu_eval_1.nc",
              "sample/obs_drifters_eval_1.nc", "sample/train_obs.nc"]


@pytest.mark.slow
@pytest.mark.parametrize("name", QG_OUTPUTS)
def test_output_has_no_cf_errors(outputs, name, tmp_path):
    assert_cf_clean(outputs / name, tmp_path)


@pytest.mark.slow
def test_ensemble_output_encoding(outputs):
    """Float CF time, int32 labelled member/rank/particle, projection x/y, no fill on coordinates."""
    with netCDF4.Dataset(outputs / "assimilate_global.nc") as nc:
        t = nc["time"]
        assert t.dtype == np.float64 and t.units.startswith("days since ") and t.calendar
        for name in ("member", "rank", "particle", "layer", "retrieved_index", "weight_index"):
            assert nc[name].dtype == np.int32 and nc[name].long_name, name
        assert nc["x"].standard_name == "projection_x_coordinate" and nc["x"].units == "km" and nc["x"].axis == "X"
        assert nc["y"].standard_name == "projection_y_coordinate" and nc["y"].axis == "Y"
        assert "sinusoidal" in nc["x"].comment  # the QG box's lat/lon, described exactly
        for name in ("time", "x", "y", "lat", "lon", "member", "layer"):
            assert "_FillValue" not in nc[name].ncattrs(), name
        assert nc.title and nc.Conventions == "CF-1.8" and nc.history and nc.source
        assert "cdo" in nc.comment and "psi" in nc.comment  # the 5-D ensemble: how to read it with cdo
    with xr.open_dataset(outputs / "assimilate_global.nc") as ds:  # and it reads back as it was
        assert np.issubdtype(ds["time"].dtype, np.datetime64) and np.issubdtype(ds["retrieved_time"].dtype, np.datetime64)


@pytest.mark.parametrize("testbed,files", [
    ("lorenz96", ["library.nc", "truth_tune.nc", "obs_half_eval_1.nc", "train_obs.nc"]),
    ("torus", ["library.nc", "obs_gappy_eval_1.nc", "obs_insitu_eval_1.nc"]),
])
def test_other_testbeds_sample_data(testbed, files, tmp_path):
    """Nondimensional model clocks are written as CF dates, the model time kept as ``model_time``."""
    run("sample-data", "--testbed", testbed, "--size", "tiny", "--out", tmp_path / "s")
    for name in files:
        assert_cf_clean(tmp_path / "s" / name, tmp_path)
    with xr.open_dataset(tmp_path / "s" / "library.nc") as lib:
        assert np.issubdtype(lib["time"].dtype, np.datetime64) and "model_time" in lib.coords
        if testbed == "lorenz96":  # 0.05 model time units = 6 hours
            step = (lib["time"].values[1] - lib["time"].values[0]) / np.timedelta64(1, "h")
            assert step == pytest.approx(6.0 * lib["model_time"].values[1] / 0.05)


def _foreign_product(path):
    """Another producer's SST: 1-D latitude/longitude, 360_day calendar, ranges and bounds, land."""
    rng = np.random.default_rng(0)
    nt, ny, nx = 24, 10, 14
    f = (rng.normal(size=(nt, ny, nx)).cumsum(0) * 0.1).astype("f4")
    f[:, :2, :3] = np.nan
    t = np.arange(nt, dtype=float)
    ds = xr.Dataset(
        {"sst": (("time", "latitude", "longitude"), f, {
            "units": "K", "standard_name": "sea_surface_temperature", "long_name": "SST anomaly",
            "actual_range": np.array([-0.5, 0.5], "f4"), "valid_min": np.float32(-1), "valid_max": np.float32(1)}),
         "time_bnds": (("time", "nv"), np.c_[t - 0.5, t + 0.5])},
        coords={"time": ("time", t, {"units": "days since 2000-01-01", "calendar": "360_day", "bounds": "time_bnds"}),
                "latitude": ("latitude", np.linspace(10, 19, ny), {"units": "degrees_north", "actual_range": [10., 19.]}),
                "longitude": ("longitude", np.linspace(170, 196, nx), {"units": "degrees_east"})},
        attrs={"title": "foreign SST", "standard_name_vocabulary": "CF Standard Name Table v79"})
    ds.to_netcdf(path)
    obs = ds[["sst"]].isel(time=slice(0, 2))
    obs["sst"] = obs["sst"].where(rng.random(obs["sst"].shape) < 0.3)
    obs["sst_error"] = xr.DataArray(np.float32(0.05), attrs={"units": "K"})
    obs.to_netcdf(path.with_name("foreign_obs.nc"))
    return path


@pytest.mark.slow
def test_foreign_product_outputs(tmp_path):
    """Range attributes of the input are not copied; its 360_day calendar is kept; 0 errors."""
    states = _foreign_product(tmp_path / "foreign.nc")
    run("enkf", "--method", "enoi", "--ensemble", states, "--obs", tmp_path / "foreign_obs.nc",
        "--out", tmp_path / "enoi.nc", "--loc-radius", 300)
    run("observe", "--states", states, "--operator", "gappy", "--seed", 2, "--out", tmp_path / "gappy.nc")
    for name in ("enoi.nc", "gappy.nc"):
        assert_cf_clean(tmp_path / name, tmp_path)
        with netCDF4.Dataset(tmp_path / name) as nc:
            assert nc["time"].calendar == "360_day" and nc["time"].dtype == np.float64
            assert "standard_name_vocabulary" not in nc.ncattrs()
            for v in nc.variables.values():
                assert not {"actual_range", "valid_min", "valid_max", "valid_range"} & set(v.ncattrs()), v.name


def test_write_netcdf_attributes(tmp_path):
    """The writer's rules on a small Dataset: long names, int32, stale references dropped, caller's attrs kept."""
    time = np.datetime64("2021-01-01", "ns") + np.arange(3) * np.timedelta64(12, "h")
    ds = xr.Dataset(
        {"ssh_mean": (("time", "lat", "lon"), np.zeros((3, 2, 4)), {"units": "m", "valid_range": [-1.0, 1.0],
                                                                     "ancillary_variables": "ssh_flag"}),
         "y_index": ("obs", np.arange(5, dtype=np.int64))},
        coords={"time": ("time", time, {"bounds": "time_bnds"}), "lat": [10.0, 11.0], "lon": [0.0, 1.0, 2.0, 3.0],
                "run": ("time", np.arange(3))})
    path = io.write_netcdf(ds, tmp_path / "out.nc", command="oceanda test")
    assert "valid_range" in ds["ssh_mean"].attrs and "long_name" not in ds["run"].attrs  # the caller's Dataset unchanged
    with netCDF4.Dataset(path) as nc:
        assert nc["time"].units.startswith("days since 2021-01-01") and list(nc["time"][:]) == [0.0, 0.5, 1.0]
        assert "bounds" not in nc["time"].ncattrs() and "ancillary_variables" not in nc["ssh_mean"].ncattrs()
        assert "valid_range" not in nc["ssh_mean"].ncattrs()
        assert nc["run"].dtype == np.int32 and nc["run"].long_name and nc["y_index"].long_name
        assert nc["lat"].axis == "Y" and nc["lon"].standard_name == "longitude"
        assert nc.title == "oceanda test output"
    assert_cf_clean(path, tmp_path)
