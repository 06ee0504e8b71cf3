"""oceanda.conventions through the readers: producer-style files (tests/realformat.py) open to the canonical layout."""

import warnings
from pathlib import Path

import cftime
import numpy as np
import pytest
import xarray as xr

import oceanda
from oceanda import conventions, io
from oceanda.commands import add_units_argument, units_option
from oceanda.errors import ConfigurationError, DataValidationError
from oceanda.grid import time_days
from oceanda.pairs import segments_from_times
from oceanda.report import _select_map_time

import realformat as rf

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data" / "qg"
AUX = ("bounds_time", "lat_bnds", "lon_bnds", "crs", "processing_time", "latitude", "longitude", "nv")


def _quiet(fn, *a, **k):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*a, **k)


def _assert_continuous_lon(lon):
    d = np.diff(np.asarray(lon, float))
    assert np.all(d > 0) and np.all(d < 180), lon


def test_latlon_0360_dateline_opens_canonical(tmp_path):
    ds = oceanda.open_states(rf.write_sst_latlon(tmp_path / "sst.nc"))
    assert ds["sst"].dims == ("time", "lat", "lon") and ds.sizes == {"time": 40, "lat": 18, "lon": 30}
    _assert_continuous_lon(ds.lon)
    assert ds.lon.values[0] == pytest.approx(150) and ds.lon.values[-1] > 180  # 150..247, not wrapped
    assert not any(v in ds.variables for v in AUX)
    assert all("bounds" not in v.attrs and "grid_mapping" not in v.attrs for v in ds.variables.values())
    land = rf.land_mask(18, 30)
    nan = ds["sst"].isnull().values
    assert nan[:, land].all() and not nan[:, ~land].any()  # land NaN at every time, and only land
    assert ds["sst"].attrs["units"] == "K" and ds["sst"].dtype == np.float32
    assert ds["sst"].chunks is not None  # still lazy
    np.testing.assert_allclose(ds.lon.attrs["actual_range"], [150, ds.lon.values[-1]])  # unchanged, so still true


def test_minus180_jump_and_decreasing_lat_give_the_same_dataset(tmp_path):
    a = oceanda.open_states(rf.write_sst_latlon(tmp_path / "a.nc"))
    b = oceanda.open_states(rf.write_sst_latlon(tmp_path / "b.nc", lon_convention="pm180", lat_decreasing=True))
    raw = xr.open_dataset(tmp_path / "b.nc")
    assert np.any(np.diff(raw.longitude.values) < 0) and raw.latitude.values[0] > raw.latitude.values[-1]
    _assert_continuous_lon(b.lon)
    np.testing.assert_allclose(b.lon.values, a.lon.values, atol=1e-9)
    np.testing.assert_array_equal(b.lat.values, a.lat.values)
    np.testing.assert_array_equal(b.sst.values, a.sst.values)
    for c in ("lat", "lon"):  # the producer's ranges no longer hold once flipped / unwrapped
        assert "actual_range" not in b[c].attrs and "oceanda" in b[c].attrs["comment"]


@pytest.mark.parametrize("calendar", ["360_day", "noleap"])
def test_cftime_calendars_are_kept_and_checked(tmp_path, calendar):
    path = rf.write_sst_latlon(tmp_path / "cal.nc", calendar=calendar)
    ds = oceanda.open_states(path)
    t = ds.time.values
    assert isinstance(t[0], cftime.datetime) and t[0].calendar == calendar
    assert ds["sst"].chunks is not None
    days = time_days(t)
    np.testing.assert_allclose(np.diff(days), 1.0)
    assert (segments_from_times(t) == 0).all()
    nrm = xr.open_dataset(path, decode_times=False)  # the same file with times reversed is refused
    nrm = nrm.isel(time=slice(None, None, -1))
    nrm.to_netcdf(tmp_path / "rev.nc")
    with pytest.raises(DataValidationError, match="rev.nc.*'time'.*not increasing"):
        oceanda.open_states(tmp_path / "rev.nc")


def test_cftime_concatenation_and_map_time(tmp_path):
    p1 = rf.write_sst_latlon(tmp_path / "a.nc", calendar="360_day", nt=10)
    full = xr.open_dataset(p1, decode_times=False)
    later = full.assign_coords(time=full.time + 10.0)
    later.to_netcdf(tmp_path / "b.nc")
    ds = oceanda.open_states([p1, tmp_path / "b.nc"])
    assert ds.sizes["time"] == 20 and ds.time.values[0].calendar == "360_day"
    with pytest.raises(DataValidationError, match="time"):
        oceanda.open_states([p1, p1])
    t = ds.time.values
    assert _select_map_time(t, "2001-04-20") == t[4]  # 360_day: 2001-04-16 + 4 days


def test_nemo_curvilinear_with_tmask(tmp_path):
    ds = oceanda.open_states(rf.write_nemo_curvilinear(tmp_path / "nemo.nc", levels=3))
    assert ds["tos"].dims == ("time", "y", "x") and ds["thetao"].dims == ("time", "depth", "y", "x")
    assert ds.lat.dims == ("y", "x") and ds.lon.dims == ("y", "x")
    lon = ds.lon.values
    assert np.abs(np.diff(lon, axis=1)).max() < 10 and np.abs(np.diff(lon, axis=0)).max() < 10
    assert lon.max() > 180  # the dateline crossing is continuous, not wrapped back to -180
    land = rf.land_mask(18, 30)
    for v in ("tos", "thetao"):
        nan = ds[v].isnull().values
        assert nan[..., land].all() and not nan[..., ~land].any()
    assert not {"tmask", "time_centered", "time_counter", "time_counter_bounds", "nav_lat"} & set(ds.variables)
    assert isinstance(ds.time.values[0], cftime.DatetimeNoLeap)
    assert ds.depth.attrs["units"] == "m"


def test_masks_by_standard_name_flags_and_name():
    land = rf.land_mask(6, 8)
    base = xr.Dataset({"t": (("time", "lat", "lon"), np.ones((2, 6, 8)), {"units": "K"})},
                      coords={"time": [0.0, 1.0], "lat": np.arange(6.0), "lon": np.arange(8.0)})
    for name, values, attrs in [("m1", land.astype("i1"), {"standard_name": "land_binary_mask"}),
                                ("m2", (~land).astype("i1"), {"standard_name": "sea_binary_mask"}),
                                ("m3", np.where(land, 2, 5).astype("i1"), {"flag_values": [2, 5], "flag_meanings": "land sea"}),
                                ("lsm", land * 0.9, {}), ("mask", (~land).astype("i1"), {})]:
        out = conventions.normalise(base.assign({name: (("lat", "lon"), values, attrs)}), "f.nc")
        assert name not in out and (out.t.isnull().values[:, land]).all() and not out.t.isnull().values[:, ~land].any(), name


def test_missing_units_say_how_to_give_them(tmp_path):
    path = rf.write_sst_latlon(tmp_path / "nounits.nc", units=None)
    with pytest.raises(DataValidationError) as exc:
        oceanda.open_states(path)
    msg = str(exc.value)
    assert "nounits.nc" in msg and "'sst'" in msg and "--units sst=UNITS" in msg
    ds = oceanda.open_states(path, units={"sst": "K", "other": "m"})
    assert ds.sst.attrs["units"] == "K"
    with pytest.warns(UserWarning, match="keeping"):  # valid file units win over --units
        assert oceanda.open_states(rf.write_sst_latlon(tmp_path / "k.nc"), units={"sst": "degC"}).sst.attrs["units"] == "K"
    with pytest.raises(DataValidationError, match="--units sst=wibble"):
        oceanda.open_states(path, units={"sst": "wibble"})


def test_units_option_parsing():
    import argparse

    p = argparse.ArgumentParser()
    add_units_argument(p)
    args = p.parse_args(["--units", "sst=degC", "ssh=m", "--units", "psi=m2 s-1"])
    assert units_option(args.units) == {"sst": "degC", "ssh": "m", "psi": "m2 s-1"}
    assert units_option(None) is None
    with pytest.raises(ConfigurationError, match="--units sst"):
        units_option(["sst"])
    assert conventions.parse_units("psu") is not None and conventions.parse_units("wibbles") is None


def test_l3_alongtrack_becomes_points(tmp_path):
    o = _quiet(oceanda.open_obs, rf.write_l3_alongtrack(tmp_path / "l3.nc"))
    assert o["sla_filtered"].dims == ("obs",) and "time" not in o.dims
    for c in ("time", "lat", "lon"):
        assert o[c].dims == ("obs",) and c in o.coords
    assert np.issubdtype(o.time.dtype, np.datetime64)
    assert "cycle" in o.coords and "track" in o.coords  # integer labels are coordinates, not observations
    np.testing.assert_allclose(o["sla_filtered_error"].values, 0.03)  # the producer's 'sla_error'
    assert float(o.lon.min()) < 0 and "oceanda_point_lon" in o.attrs  # point lon left as in the file


def _states_sla(tmp_path, units="m", name="sla"):
    return oceanda.open_states(rf.write_sst_latlon(tmp_path / f"states_{name}_{units}.nc", name=name, units=units))


def test_l3_cm_converted_to_state_metres(tmp_path):
    states = _states_sla(tmp_path)
    path = rf.write_l3_alongtrack(tmp_path / "l3cm.nc", units="cm")
    raw = _quiet(io.open_obs, path)
    with pytest.warns(UserWarning, match="converted from 'cm' to the states' 'm'"):
        o = io.open_obs(path, like=states)  # the reader's points (oceanda.open_obs then superobs them onto the grid)
    assert list(o.data_vars) == ["sla", "sla_error"]  # sla_filtered read as sla; sla_unfiltered and dac dropped
    np.testing.assert_allclose(o["sla"].values, 0.01 * raw["sla_filtered"].values, rtol=1e-6)
    np.testing.assert_allclose(o["sla_error"].values, 0.03, rtol=1e-6)
    assert o["sla"].attrs["units"] == "m"


def test_incompatible_units_refused(tmp_path):
    states = _states_sla(tmp_path, units="K")
    with pytest.raises(DataValidationError) as exc:
        _quiet(io.open_obs, rf.write_l3_alongtrack(tmp_path / "l3.nc"), like=states)
    msg = str(exc.value)
    assert "l3.nc" in msg and "'sla'" in msg and "incompatible" in msg and "'K'" in msg


def test_gridded_obs_cm_converted(tmp_path):
    states = _states_sla(tmp_path, name="ssh")
    obs = xr.open_dataset(rf.write_sst_latlon(tmp_path / "o.nc", name="ssh", units="cm", seed=5))
    with pytest.warns(UserWarning, match="converted"):
        o = _quiet_except_conversion(tmp_path / "o.nc", states)
    np.testing.assert_allclose(o.ssh.values, 0.01 * obs.ssh.values, rtol=1e-6)


def _quiet_except_conversion(path, states):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*default observation error.*")
        return oceanda.open_obs(path, like=states)


def test_profiles_become_points_with_depth(tmp_path):
    o = oceanda.open_obs(rf.write_profiles(tmp_path / "prof.nc"))
    assert o.thetao.dims == ("obs",) and o.sizes["obs"] == 60
    for c in ("time", "lat", "lon", "depth"):
        assert c in o.coords and o[c].dims == ("obs",)
    assert o.depth.attrs["units"] == "m" and float(o.thetao_error.max()) == pytest.approx(0.1)


@pytest.mark.parametrize("name", ["library", "obs_altimetry_eval_1", "obs_insitu_eval_1", "obs_drifters_eval_1"])
def test_bundled_sample_opens_unchanged(name):
    path = SAMPLE / f"{name}.nc"
    if not path.exists():
        pytest.skip("no bundled sample")
    raw = xr.open_dataset(path)
    got = _quiet(io.open_obs, path) if name.startswith("obs") else io.open_states(path, check_values=False)
    assert set(got.variables) == set(raw.variables) and dict(got.sizes) == dict(raw.sizes)
    for v in raw.variables:
        assert got[v].dims == raw[v].dims and got[v].attrs == raw[v].attrs, v
        np.testing.assert_array_equal(got[v].values, raw[v].values)


def test_time_days_and_continuous_lon():
    t = np.array(["1970-01-02T12", "NaT"], dtype="datetime64[ns]")
    np.testing.assert_array_equal(time_days(t), [1.5, np.nan])
    np.testing.assert_array_equal(time_days([3, 4]), [3.0, 4.0])
    c = xr.date_range("2000-01-01", periods=2, freq="MS", calendar="360_day", use_cftime=True)
    assert np.diff(time_days(c))[0] == 30.0
    np.testing.assert_allclose(conventions.continuous_lon([170, 180, -170]), [170, 180, 190])
    np.testing.assert_allclose(conventions.continuous_lon([-180, 0, 170]), [-180, 0, 170])
    np.testing.assert_allclose(conventions.continuous_lon([400, 410]), [40, 50])


def test_large_file_opens_quickly(tmp_path):
    import time

    path = rf.write_sst_latlon(tmp_path / "large.nc", **rf.LARGE, dlon=0.5, dlat=0.3)
    t0 = time.perf_counter()
    ds = oceanda.open_states(path)
    assert ds.sizes == {"time": 200, "lat": 60, "lon": 100} and time.perf_counter() - t0 < 5
    _assert_continuous_lon(ds.lon)


def _generic(lon, tname="TIME", zname="lev", zattrs=None, lat_attrs=None, lon_attrs=None):
    nt, nz, ny = 3, 2, 4
    t = xr.DataArray(np.arange(nt) * 1.0, dims=tname, attrs={"axis": "T"})
    data = np.arange(nt * nz * ny * len(lon), dtype=float).reshape(nt, nz, ny, len(lon))
    return xr.Dataset(
        {"temp": ((tname, zname, "LAT", "LON"), data, {"units": "degC", "actual_range": [0.0, 1.0]})},
        coords={tname: t, zname: (zname, [5.0, 15.0], zattrs if zattrs is not None else {"units": "m", "positive": "down"}),
                "LAT": ("LAT", np.linspace(10, -10, ny), lat_attrs if lat_attrs is not None else {"units": "degrees_north"}),
                "LON": ("LON", np.asarray(lon, float), lon_attrs if lon_attrs is not None else {"units": "degrees_east"})})


def test_axes_found_by_attributes_not_names():
    out = conventions.normalise(_generic([170, 175, 180, -175, -170]), "g.nc")
    assert out.temp.dims == ("time", "depth", "lat", "lon")
    np.testing.assert_allclose(out.lon, [170, 175, 180, 185, 190])
    np.testing.assert_allclose(out.lat, np.linspace(-10, 10, 4))
    raw = _generic([170, 175, 180, -175, -170]).temp.values
    np.testing.assert_array_equal(out.temp.values[:, :, ::-1, [0, 1, 2, 3, 4]], raw)  # flipped with the data
    levels = conventions.normalise(_generic([0, 1, 2], zname="level", zattrs={"positive": "down"}), "g.nc")
    assert levels.temp.dims == ("time", "layer", "lat", "lon")  # model levels without a length unit
    decreasing = conventions.normalise(_generic([20, 10, 0, -10]), "g.nc")
    np.testing.assert_allclose(decreasing.lon, [-10, 0, 10, 20])
    np.testing.assert_array_equal(decreasing.temp.values[..., 0], _generic([20, 10, 0, -10]).temp.values[:, :, ::-1, -1])


def test_global_cyclic_column_dropped_and_name_fallback():
    out = conventions.normalise(_generic(np.arange(0, 361, 90)), "g.nc")
    np.testing.assert_allclose(out.lon, [0, 90, 180, 270])
    bare = _generic([1, 2, 3], lat_attrs={}, lon_attrs={}).rename(LAT="latitude", LON="longitude")
    out = conventions.normalise(bare, "bare.nc")  # no CF attribute at all: names are the fallback
    assert out.temp.dims[-2:] == ("lat", "lon")


def test_points_with_lat_lon_as_data_variables():
    n = 5
    d = xr.Dataset({"adt": ("time", np.arange(n) * 0.1, {"units": "m"}),
                    "latitude": ("time", np.arange(n) * 1.0, {"units": "degrees_north"}),
                    "longitude": ("time", np.arange(n) + 178.0, {"units": "degrees_east"})},
                   coords={"time": ("time", np.arange(n) * 1.0, {"axis": "T"})})
    out = conventions.normalise(d, "p.nc")
    assert out.adt.dims == ("obs",) and {"time", "lat", "lon"} <= set(out.coords) and list(out.data_vars) == ["adt"]


def test_gridded_obs_in_the_other_lon_convention_are_rolled_onto_the_states(tmp_path):
    d = xr.Dataset({"sst": (("time", "lat", "lon"), np.arange(24.0).reshape(3, 2, 4) + 1, {"units": "K"})},
                   coords={"time": ("time", [0, 1, 2], {"units": "days since 2000-01-01"}),
                           "lat": ("lat", [0.0, 1.0], {"units": "degrees_north"}),
                           "lon": ("lon", [0.0, 90, 180, 270], {"units": "degrees_east"})})
    d.to_netcdf(tmp_path / "s.nc")
    o = d.roll(lon=2, roll_coords=True)
    o.assign_coords(lon=(o.lon + 180) % 360 - 180).to_netcdf(tmp_path / "o.nc")  # -180, -90, 0, 90
    states = oceanda.open_states(tmp_path / "s.nc")
    obs = _quiet(io.open_obs, tmp_path / "o.nc", like=states)
    np.testing.assert_array_equal(obs.lon.values, states.lon.values)
    np.testing.assert_array_equal(obs.sst.values, states.sst.values)


def test_undecodable_times_are_one_line(tmp_path):
    d = xr.Dataset({"sst": (("time", "lat", "lon"), np.ones((3, 2, 2)), {"units": "K"})},
                   coords={"time": ("time", [0, 1, 2], {"units": "months since 2000-01-01", "calendar": "360_day"}),
                           "lat": ("lat", [0.0, 1.0], {"units": "degrees_north"}),
                           "lon": ("lon", [0.0, 1.0], {"units": "degrees_east"})})
    d.to_netcdf(tmp_path / "m360.nc")
    assert oceanda.open_states(tmp_path / "m360.nc").time.values[1].month == 2  # cftime can
    d.time.attrs["calendar"] = "standard"
    d.to_netcdf(tmp_path / "mstd.nc")
    with pytest.raises(DataValidationError, match="mstd.nc: times cannot be decoded"):
        oceanda.open_states(tmp_path / "mstd.nc")


def test_library_fingerprint_and_retrieved_time_with_cftime(tmp_path):
    from oceanda.analysis.library import Library
    from oceanda.analysis.posterior import WeightedPosterior
    from oceanda.analysis.result import _add_retrieval

    lib = Library.open(rf.write_sst_latlon(tmp_path / "lib.nc", calendar="noleap", nt=6))
    assert len(lib.fingerprint) == 16
    post = WeightedPosterior(indices=np.array([2, 0]), weights=np.array([0.7, 0.3]), dropped_mass=0.0, ess=1.7, tau=0.1,
                             top_indices=np.array([2]), top_scores=np.array([1.0]))
    short = WeightedPosterior(indices=np.array([1]), weights=np.array([1.0]), dropped_mass=0.0, ess=1.0, tau=0.1,
                              top_indices=np.array([], int), top_scores=np.array([]))
    ds = _add_retrieval(xr.Dataset(coords={"time": [0, 1]}), [post, short], lib)
    rt = ds["retrieved_time"]
    assert rt.attrs["calendar"] == "noleap" and np.isnan(rt.values[1, 0])
    assert rt.values[0, 0] == pytest.approx(time_days(lib.ds.time.values[2]))


def test_realization_becomes_member():
    d = _generic([0, 1, 2]).isel(lev=0, drop=True).expand_dims(ens=[1, 2, 3]).transpose("TIME", "ens", "LAT", "LON")
    d["ens"].attrs["standard_name"] = "realization"
    out = conventions.normalise(d, "ens.nc")
    assert out.temp.dims == ("time", "member", "lat", "lon") and list(out.member.values) == [1, 2, 3]


def test_time_varying_mask_is_not_land_and_nan_mask_is():
    land = rf.land_mask(6, 8)
    base = xr.Dataset({"t": (("time", "lat", "lon"), np.ones((2, 6, 8)), {"units": "K"})},
                      coords={"time": [0.0, 1.0], "lat": np.arange(6.0), "lon": np.arange(8.0)})
    cloud = base.assign(mask=(("time", "lat", "lon"), np.zeros((2, 6, 8)), {"units": "1"}))
    assert conventions.normalise(cloud, "c.nc").t.notnull().all()  # a mask that changes in time is data, not land
    nanmask = base.assign(tmask=(("lat", "lon"), np.where(land, np.nan, 1.0)))
    out = conventions.normalise(nanmask, "n.nc")
    assert out.t.isnull().values[:, land].all() and out.t.notnull().values[:, ~land].all()


def test_regional_0_360_grid_cut_across_greenwich_is_reordered_west_to_east():
    from oceanda import conventions

    lon = np.r_[np.arange(0, 36.5, 0.5), np.arange(354, 360, 0.5)]  # how a 0..360 Mediterranean cut comes sorted
    ds = xr.Dataset({"sst": (("time", "lat", "lon"), np.random.default_rng(0).random((2, 3, lon.size)), {"units": "degC"})},
                    coords={"time": ("time", [0.0, 1.0], {"units": "days since 2000-01-01"}),
                            "lat": ("lat", [1.0, 2.0, 3.0], {"units": "degrees_north", "standard_name": "latitude"}),
                            "lon": ("lon", lon, {"units": "degrees_east", "standard_name": "longitude"})})
    out = conventions.normalise(ds, "med.nc")
    assert out.lon.values[0] == -6.0 and out.lon.values[-1] == 36.0 and np.all(np.diff(out.lon.values) == 0.5)
    np.testing.assert_array_equal(out.sst.sel(lon=-5.0).values, ds.sst.sel(lon=355.0).values)
    np.testing.assert_array_equal(out.sst.sel(lon=20.0).values, ds.sst.sel(lon=20.0).values)


def test_continuous_lon_prefers_the_range_within_minus_180_to_360():
    from oceanda.conventions import continuous_lon

    np.testing.assert_array_equal(continuous_lon(np.r_[354.0, 356.0, 358.0, 0.0, 2.0]), [-6.0, -4.0, -2.0, 0.0, 2.0])
    np.testing.assert_array_equal(continuous_lon(np.r_[150.0, 170.0, -170.0, -150.0]), [150.0, 170.0, 190.0, 210.0])
    np.testing.assert_array_equal(continuous_lon(np.arange(0.0, 360.0, 90.0)), [0.0, 90.0, 180.0, 270.0])
