"""Observation generators on any grid: lat/lon across the dateline, curvilinear with depth, land, global, the CLI.

Grids are producer-style files from tests/realformat.py read by oceanda's readers, or built in memory.
"""

import numpy as np
import pytest
import xarray as xr

import oceanda
import realformat as rf
from oceanda import api, observe
from oceanda.errors import ConfigurationError
from oceanda.superob import superob


@pytest.fixture(scope="module")
def sst(tmp_path_factory):
    """Pacific (lat, lon) grid, 0..360 longitudes crossing the dateline (150..247), land, 40 daily times."""
    path = rf.write_sst_latlon(tmp_path_factory.mktemp("sst") / "sst.nc")
    return oceanda.open_states(path).load()


@pytest.fixture(scope="module")
def nemo(tmp_path_factory):
    """Curvilinear (y, x) grid with 2-D lat/lon across the dateline, 3 depth levels, land from tmask, noleap."""
    path = rf.write_nemo_curvilinear(tmp_path_factory.mktemp("nemo") / "nemo.nc", levels=3)
    return oceanda.open_states(path).load()


def _land(ds, var):
    return ~np.isfinite(ds[var].isel(time=0).values)


@pytest.mark.parametrize("operator", ["altimetry", "gappy"])
def test_gridded_operators_on_latlon_never_observe_land(sst, operator):
    obs = api.observe_states(sst, operator, sigma=0.05, seed=1)
    assert obs["sst"].dims == ("time", "lat", "lon") and obs.attrs["operator"] in ("along_track_altimetry", "gappy_gridded")
    on = np.isfinite(obs["sst"].values)
    assert not on[:, _land(sst, "sst")].any() and on.any()
    ocean = ~_land(sst, "sst")
    cover = on[:, ocean].mean()
    assert (0.05 < cover < 0.5) if operator == "altimetry" else (0.2 < cover < 0.8)
    resid = (obs["sst"] - sst["sst"]).values[on]
    assert resid.std() == pytest.approx(0.05, rel=0.15)
    again = api.observe_states(sst, operator, sigma=0.05, seed=1)
    xr.testing.assert_identical(obs, again)


def test_altimetry_options_in_km(sst):
    dy, dx = oceanda.grid.km_spacing(sst)
    assert dy == pytest.approx(111.2, rel=0.01) and 300 < dx < 370  # 1 degree of latitude; 3.33 deg of lon near the equator
    wide = api.observe_states(sst, "altimetry", seed=0, track_spacing_km=1000.0, track_width_km=400.0)
    narrow = api.observe_states(sst, "altimetry", seed=0, track_spacing_km=3000.0, track_width_km=400.0)
    assert np.isfinite(wide["sst"].values).sum() > 2 * np.isfinite(narrow["sst"].values).sum()
    assert wide.attrs["track_spacing_km"] == pytest.approx(1000.0) and wide.attrs["track_width_km"] == pytest.approx(400.0)
    frac = api.observe_states(sst, "altimetry", seed=0, sigma_fraction=0.5)
    assert float(frac["sst_error"]) == pytest.approx(0.5 * float(np.nanstd(sst["sst"].values)), rel=1e-5)


def test_gappy_cloud_fraction_counts_ocean_cells(sst):
    obs = api.observe_states(sst, "gappy", seed=0, cloud_fraction=0.4, cloud_size_km=500.0)
    ocean = ~_land(sst, "sst")
    clear = np.isfinite(obs["sst"].values)[:, ocean].mean(axis=1)
    np.testing.assert_allclose(clear, 0.6, atol=0.02)


def test_points_along_track_on_latlon_dateline(sst):
    pts = api.observe_states(sst, "points", sigma=0.02, seed=2, along_track_km=50.0)
    assert set(pts.dims) == {"obs"} and {"time", "lat", "lon"} <= set(pts.coords) and "sst_error" in pts
    lon = pts.lon.values
    assert lon.min() >= 150.0 - 2 and lon.max() <= 246.7 + 2 and (lon > 180).any()  # continuous across 180
    # bilinear samples of the truth plus noise of the given size
    t = np.searchsorted(sst.time.values, pts.time.values + np.timedelta64(12, "h")) - 1
    truth = np.array([sst["sst"].interp(time=sst.time[a], lat=b, lon=c).item() for a, b, c in
                      zip(t[:200], pts.lat.values[:200], lon[:200])])
    ok = np.isfinite(truth)
    assert ok.mean() > 0.8
    assert np.std(pts["sst"].values[:200][ok] - truth[ok]) == pytest.approx(0.02, rel=0.3)
    # superobbed back onto the grid: no land, every point used (none off the grid or out of time)
    g = superob(pts, sst)
    assert not np.isfinite(g["sst"].values[:, _land(sst, "sst")]).any()
    assert g.attrs["superob_points_used"] + g.attrs["superob_points_dropped_land"] == pts.sizes["obs"]


def test_points_lie_on_the_gridded_tracks_of_the_testbed_box():
    y = x = (np.arange(64) + 0.5) * 15.625
    ds = xr.Dataset({"ssh": (("time", "y", "x"), np.random.default_rng(0).normal(size=(3, 64, 64)), {"units": "m"})},
                    coords={"time": np.arange(3) * np.timedelta64(1, "D") + np.datetime64("2005-01-01", "ns"),
                            "y": ("y", y, {"units": "km"}), "x": ("x", x, {"units": "km"})})
    grid_obs = observe.AlongTrackAltimetry(sigma=0.1).observe(ds, np.random.default_rng(0))
    pts = observe.AlongTrackPoints(sigma=0.1).observe(ds, np.random.default_rng(0))
    day = np.searchsorted(ds.time.values, pts.time.values + np.timedelta64(12, "h")) - 1
    iy, ix = (np.floor(pts[c].values / 15.625).astype(int) for c in ("y", "x"))
    mask = np.isfinite(grid_obs["ssh"].values)
    on_track = mask[day, iy, ix]
    assert on_track.mean() > 0.98 and pts.sizes["obs"] > 3 * 4 * 64
    # the rest clip a corner the gridded track (sampled every quarter cell) stepped over: next to a track cell
    near = np.zeros(int((~on_track).sum()), bool)
    for dj in (-1, 0, 1):
        for di in (-1, 0, 1):
            near |= mask[day[~on_track], (iy[~on_track] + dj) % 64, (ix[~on_track] + di) % 64]
    assert near.all()


def test_profiles_with_depth_on_a_curvilinear_grid(nemo, tmp_path):
    prof = api.observe_states(nemo, "profiles", variables=["thetao"], sigma=0.1, seed=3, profiles_per_day=10)
    assert {"time", "lat", "lon", "depth", "profile"} <= set(prof.coords)
    assert prof.sizes["obs"] == 10 * 3 * nemo.sizes["time"]
    assert set(np.unique(prof.depth.values)) == set(nemo.depth.values)
    g = oceanda.open_obs(api.write(prof, tmp_path / "profiles.nc"), like=nemo)
    assert g["thetao"].dims == ("time", "depth", "y", "x")
    assert g.attrs["superob_points_used"] + g.attrs["superob_points_dropped_land"] == prof.sizes["obs"]
    assert not np.isfinite(g["thetao"].values[:, :, _land(nemo, "tos")]).any()


def test_curvilinear_altimetry_and_points(nemo):
    alt = api.observe_states(nemo, "altimetry", variables=["tos"], seed=0)
    assert alt["tos"].dims == ("time", "y", "x") and not np.isfinite(alt["tos"].values[:, _land(nemo, "tos")]).any()
    pts = api.observe_states(nemo, "points", variables=["tos"], seed=0)
    assert pts.sizes["obs"] > 0 and np.all(np.diff(np.sort(pts.lon.values)) < 10)  # no jump at the dateline


def test_global_grid_is_periodic_in_longitude():
    lat = np.arange(-60.0, 61.0, 10.0)
    lon = np.arange(0.0, 360.0, 10.0)
    v = np.cos(np.radians(lon))[None, None, :] + 0 * lat[None, :, None] + np.zeros((2, 1, 1))
    ds = xr.Dataset({"ssh": (("time", "lat", "lon"), v, {"units": "m"})},
                    coords={"time": np.array(["2001-01-01", "2001-01-02"], "datetime64[ns]"), "lat": lat, "lon": lon})
    geom = observe.geometry(ds)
    assert geom.periodic == (False, True)
    pts = api.observe_states(ds, "points", sigma=1e-6, seed=0, along_track_km=100.0)
    seam = (pts.lon.values % 360 > 350) | (pts.lon.values % 360 < 0.0 + 1e-9)
    assert seam.any()
    # across the seam the bilinear value is the cosine's interpolation between lon 350 and 360 = 0
    expect = np.interp(pts.lon.values % 360, np.r_[lon, 360.0], np.r_[np.cos(np.radians(lon)), 1.0])
    np.testing.assert_allclose(pts["ssh"].values, expect, atol=1e-4)
    g = superob(pts.assign_coords(lon=((pts.lon + 180) % 360) - 180), ds)
    assert g.attrs["superob_points_dropped_offgrid"] == 0


def test_training_rebuilds_any_grid_altimetry_from_attributes(sst):
    from oceanda.pairs import mask_sampler

    obs = api.observe_states(sst, "altimetry", seed=0)
    fn = mask_sampler(obs, "sst", sst.sizes["lat"], sst.sizes["lon"])
    a, b = fn(6, np.random.default_rng(0)), fn(6, np.random.default_rng(1))
    assert a.shape == (6, 18, 30) and a.any() and not np.array_equal(a, b)


def test_operator_errors_are_one_line(sst):
    with pytest.raises(ConfigurationError, match="cloud_fraction"):
        api.observe_states(sst, "altimetry", cloud_fraction=0.3)
    with pytest.raises(ConfigurationError, match="operator"):
        api.observe_states(sst, "radar")
    with pytest.raises(ConfigurationError, match="sigma"):
        api.observe_states(sst, "points", sigma=0.1, sigma_fraction=0.2)


def test_cli_observe_writes_a_file_that_opens_again(tmp_path, capsys):
    from oceanda.cli import main

    states = rf.write_sst_latlon(tmp_path / "sst.nc", lon_convention="pm180")
    out = tmp_path / "obs.nc"
    args = ["observe", "--states", str(states), "--operator", "points", "--sigma-fraction", "0.1", "--seed", "4",
            "--along-track-km", "60", "--out", str(out)]
    assert main(args) == 0
    assert "observations of sst" in capsys.readouterr().out
    st = oceanda.open_states(states)
    g = oceanda.open_obs(out, like=st)
    assert g["sst"].dims == ("time", "lat", "lon") and g.attrs["superob_points_used"] > 0
    assert main(args) == 2  # exists: refused without --overwrite
    assert main(args + ["--overwrite", "--quiet"]) == 0
    assert main(["observe", "--states", str(states), "--operator", "gappy", "--cloud-fraction", "0.2", "0.5",
                 "--cloud-size-km", "300", "--out", str(tmp_path / "gappy.nc")]) == 0


def test_cli_help_has_an_example(capsys):
    from oceanda.cli import main

    with pytest.raises(SystemExit):
        main(["observe", "--help"])
    text = capsys.readouterr().out
    assert "Example" in text and "--operator points" in text and "--sigma-fraction" in text


def test_regional_km_grid_with_land_not_periodic():
    y, x = 10.0 * np.arange(20) + 5.0, 10.0 * np.arange(30) + 5.0
    v = np.random.default_rng(0).normal(size=(5, 20, 30))
    v[:, 12:, :8] = np.nan  # a coast
    ds = xr.Dataset({"sst": (("time", "y", "x"), v, {"units": "K"})},
                    coords={"time": np.arange(5) * np.timedelta64(1, "D") + np.datetime64("2001-01-01", "ns"),
                            "y": ("y", y, {"units": "km"}), "x": ("x", x, {"units": "km"})})
    land = ~np.isfinite(v[0])
    for op in ("altimetry", "gappy"):
        o = api.observe_states(ds, op, seed=0, periodic=False, **({"cloud_size_km": 40.0} if op == "gappy" else {}))
        assert not np.isfinite(o["sst"].values[:, land]).any() and np.isfinite(o["sst"].values).any()
    pts = api.observe_states(ds, "points", seed=0, periodic=False, sigma=0.01)
    assert pts.y.min() >= 0 and pts.y.max() <= 200 and pts.x.min() >= 0 and pts.x.max() <= 300  # no wrapping
    g = superob(pts, ds, periodic=False)
    assert g.attrs["superob_points_dropped_offgrid"] == 0 and not np.isfinite(g["sst"].values[:, land]).any()
    prof = api.observe_states(ds, "profiles", seed=0, periodic=False, profiles_per_day=7)
    assert prof.sizes["obs"] == 35 and np.isfinite(prof["sst"].values).all()
