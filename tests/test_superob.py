"""Superobbing point observations onto model grids: exact on cell centres, counted drops, lon conventions, errors."""

import numpy as np
import pytest
import xarray as xr

from oceanda.errors import DataValidationError
from oceanda.superob import superob


def _latlon_states(nt=4, ny=6, nx=8, lon0=170.0, land=True):
    """A regional (lat, lon) grid crossing the dateline (lon 170..205 continuous), land NaN in one corner."""
    rng = np.random.default_rng(0)
    lat = -5.0 + 1.0 * np.arange(ny)
    lon = lon0 + 5.0 * np.arange(nx)
    v = rng.normal(size=(nt, ny, nx)).astype(np.float32)
    if land:
        v[:, :2, :2] = np.nan
    time = np.datetime64("2001-01-01", "ns") + np.arange(nt) * np.timedelta64(1, "D")
    return xr.Dataset({"sst": (("time", "lat", "lon"), v, {"units": "K"})},
                      coords={"time": time, "lat": ("lat", lat, {"units": "degrees_north"}),
                              "lon": ("lon", lon, {"units": "degrees_east"})})


def _points(time, lat, lon, value, error=0.1, var="sst"):
    n = len(value)
    return xr.Dataset({var: ("obs", np.asarray(value, np.float32), {"units": "K"}),
                       f"{var}_error": ("obs", np.full(n, error, np.float32), {"units": "K"})},
                      coords={"time": ("obs", np.asarray(time)), "lat": ("obs", np.asarray(lat, float)),
                              "lon": ("obs", np.asarray(lon, float))})


def _centre_points(states, every=2):
    """One point at the centre of every ``every``-th ocean cell at every time, value = the state."""
    v = states["sst"].values
    t, j, i = np.nonzero(np.isfinite(v))
    keep = (j + i) % every == 0
    t, j, i = t[keep], j[keep], i[keep]
    return _points(states.time.values[t], states.lat.values[j], states.lon.values[i], v[t, j, i]), (t, j, i)


def test_points_at_cell_centres_reproduce_the_gridded_field():
    states = _latlon_states()
    pts, (t, j, i) = _centre_points(states)
    out = superob(pts, states)
    assert out["sst"].dims == ("time", "lat", "lon") and np.array_equal(out.time.values, states.time.values)
    got = out["sst"].values
    np.testing.assert_array_equal(got[t, j, i], states["sst"].values[t, j, i])
    assert int(np.isfinite(got).sum()) == len(t)  # nothing where no point fell
    # one point per cell: no sub-cell variability to estimate, the error is the point's own
    assert out.attrs["superob_representativeness_sst"] == 0.0
    np.testing.assert_allclose(out["sst_error"].values[t, j, i], 0.1, rtol=1e-6)
    assert out.attrs["superob_points_used"] == len(t) and out.attrs["superob_points_dropped_offgrid"] == 0


def test_dropped_points_are_counted_by_reason():
    states = _latlon_states()
    pts, _ = _centre_points(states)
    t0 = states.time.values[0]
    extra = _points([t0] * 3 + [t0 + np.timedelta64(30, "D")] * 2,
                    [30.0, -5.0, 0.0, 0.0, -1.0],  # far north (off), land corner, ... then 2 a month later
                    [180.0, 170.0, 120.0, 180.0, 185.0],  # ..., lon 120 is west of the domain (off)
                    [1.0, 2.0, 3.0, 4.0, 5.0])
    out = superob(xr.concat([pts, extra], dim="obs"), states)
    assert out.attrs["superob_points_dropped_offgrid"] == 2
    assert out.attrs["superob_points_dropped_land"] == 1
    assert out.attrs["superob_points_dropped_time"] == 2
    assert out.attrs["superob_points_used"] == pts.sizes["obs"]
    assert out.attrs["superob_time_rule"] == "nearest state time"


def test_longitude_conventions_map_to_the_same_cells():
    states = _latlon_states()
    pts, _ = _centre_points(states)
    pm180 = pts.assign_coords(lon=((pts.lon + 180.0) % 360.0) - 180.0)  # 190 -> -170: across the dateline
    assert float(pm180.lon.min()) < 0
    shifted = pts.assign_coords(lon=pts.lon + 720.0)
    a, b, c = superob(pts, states), superob(pm180, states), superob(shifted, states)
    xr.testing.assert_identical(a["sst"], b["sst"])
    xr.testing.assert_identical(a["sst"], c["sst"])


def test_cell_mean_and_error_with_representativeness():
    states = _latlon_states(land=False)
    t0 = states.time.values[1] + np.timedelta64(6, "h")  # 6 h after a state time: goes to it
    pts = _points([t0] * 3, [0.2, -0.3, -3.0], [180.4, 179.0, 190.0], [1.0, 2.0, 5.0], error=0.3)
    out = superob(pts, states, representativeness=0.4)
    j, i = int(np.argmin(np.abs(states.lat.values - 0.0))), int(np.argmin(np.abs(states.lon.values - 180.0)))
    assert out.sizes["time"] == 1 and out.time.values[0] == states.time.values[1]
    assert float(out["sst"][0, j, i]) == pytest.approx(1.5)
    assert float(out["sst_error"][0, j, i]) == pytest.approx(np.sqrt(0.3**2 / 2 + 0.4**2), rel=1e-6)
    # estimated r: pooled within-cell variance (0.5) beyond the points' error variance (0.09)
    est = superob(pts, states)
    assert est.attrs["superob_representativeness_sst"] == pytest.approx(np.sqrt(0.5 - 0.09), rel=1e-6)


def test_curvilinear_grid_nearest_cell_and_offgrid():
    j, i = np.mgrid[0:7, 0:9].astype(float)
    lat = -5.0 + 0.9 * j + 0.15 * i
    lon = 175.0 + 1.1 * i - 0.2 * j  # continuous across 180
    v = np.random.default_rng(1).normal(size=(2, 7, 9)).astype(np.float32)
    v[:, 0, 0] = np.nan
    states = xr.Dataset({"sst": (("time", "y", "x"), v, {"units": "K"})},
                        coords={"time": np.array(["2001-01-01", "2001-01-02"], "datetime64[ns]"),
                                "lat": (("y", "x"), lat), "lon": (("y", "x"), lon)})
    tt, jj, ii = np.nonzero(np.isfinite(v))
    pts = _points(states.time.values[tt], lat[jj, ii], ((lon[jj, ii] + 180) % 360) - 180, v[tt, jj, ii])
    far = _points(states.time.values[:2], [40.0, lat[0, 0]], [0.0, lon[0, 0]], [9.0, 9.0])  # off grid, on land
    out = superob(xr.concat([pts, far], dim="obs"), states)
    np.testing.assert_array_equal(out["sst"].values[tt, jj, ii], v[tt, jj, ii])
    assert out.attrs["superob_points_dropped_offgrid"] == 1 and out.attrs["superob_points_dropped_land"] == 1


def test_daily_bins_when_the_grid_is_a_library_of_other_years():
    states = _latlon_states(land=False)  # 2001
    t = np.datetime64("2005-06-01T00:00", "ns") + np.array([-3, 5, 20, 30], "timedelta64[h]")
    out = superob(_points(t, [0.0] * 4, [180.0] * 4, [1.0, 2.0, 3.0, 4.0]), states)
    assert out.attrs["superob_time_rule"] == "nearest day (midnight)"
    np.testing.assert_array_equal(out.time.values, np.array(["2005-06-01", "2005-06-02"], "datetime64[ns]"))
    assert out.attrs["superob_points_used"] == 4 and np.nansum(out["sst"].values) == pytest.approx(1.5 + 3.5)


def test_levels_from_depth_and_layer_index():
    states = _latlon_states(land=False)
    field = np.stack([states["sst"].values, 10 + states["sst"].values], axis=1)
    s3 = xr.Dataset({"temp": (("time", "depth", "lat", "lon"), field, {"units": "degC"})},
                    coords={**{c: states[c] for c in ("time", "lat", "lon")}, "depth": ("depth", [5.0, 50.0], {"units": "m"})})
    t0 = states.time.values[0]
    pts = _points([t0] * 3, [0.0] * 3, [180.0] * 3, [1.0, 2.0, 3.0], var="temp").assign_coords(depth=("obs", [4.0, 60.0, 900.0]))
    out = superob(pts, s3)
    assert out["temp"].dims == ("time", "depth", "lat", "lon")
    assert np.nansum(out["temp"].values[:, 0]) == 1.0 and np.nansum(out["temp"].values[:, 1]) == 2.0
    assert out.attrs["superob_points_dropped_offgrid"] == 1  # 900 m: below the levels
    with pytest.raises(DataValidationError, match="depth"):
        superob(pts.drop_vars("depth"), s3)


def test_api_open_obs_superobs_points_and_keeps_the_escape(tmp_path):
    import oceanda
    from oceanda import api

    states = _latlon_states()
    pts, (t, j, i) = _centre_points(states)
    path = api.write(pts, tmp_path / "points.nc")
    gridded = oceanda.open_obs(path, like=states)
    assert gridded.attrs["operator"] == "superob" and gridded["sst"].dims == ("time", "lat", "lon")
    np.testing.assert_allclose(gridded["sst"].values[t, j, i], states["sst"].values[t, j, i])
    raw = oceanda.open_obs(path, like=states, superob=False)
    assert raw.sizes["obs"] == len(t)


def test_km_box_centres_reproduce_gridded_altimetry_and_wrap():
    from oceanda.observe import AlongTrackAltimetry

    y = x = (np.arange(32) + 0.5) * 15.625
    ds = xr.Dataset({"ssh": (("time", "y", "x"), np.random.default_rng(2).normal(size=(3, 32, 32)), {"units": "m"})},
                    coords={"time": np.arange(3) * np.timedelta64(1, "D") + np.datetime64("2005-01-01", "ns"),
                            "y": ("y", y, {"units": "km"}), "x": ("x", x, {"units": "km"})})
    g = AlongTrackAltimetry(sigma=0.01).observe(ds, np.random.default_rng(0))
    t, j, i = np.nonzero(np.isfinite(g["ssh"].values))
    period = 32 * 15.625
    xs = x[i] + period * (np.arange(len(i)) % 3 - 1)  # a third a box west, a third east: the periodic box wraps
    pts = xr.Dataset({"ssh": ("obs", g["ssh"].values[t, j, i], {"units": "m"}),
                      "ssh_error": ("obs", np.full(len(t), 0.01, np.float32), {"units": "m"})},
                     coords={"time": ("obs", ds.time.values[t]), "y": ("obs", y[j]), "x": ("obs", xs)})
    out = superob(pts, ds)
    np.testing.assert_array_equal(out["ssh"].values, g["ssh"].values)
    np.testing.assert_allclose(out["ssh_error"].values[t, j, i], 0.01, rtol=1e-6)
    assert out.attrs["superob_points_dropped_offgrid"] == 0
    assert superob(pts, ds, periodic=False).attrs["superob_points_dropped_offgrid"] == int((np.arange(len(i)) % 3 != 1).sum())


def test_points_all_off_the_grid_are_one_clean_error_naming_the_file(tmp_path):
    import oceanda
    from oceanda.errors import DataValidationError
    from oceanda.sampledata import bundled_sample_dir

    data = bundled_sample_dir("qg")
    lib = oceanda.open_states(data / "library.nc")
    times = lib.time.values[:2]
    path = tmp_path / "far.nc"
    xr.Dataset({"ssh": ("time", np.zeros(4), {"units": "m"}), "ssh_error": ("time", np.full(4, 0.01), {"units": "m"})},
               coords={"time": ("time", np.repeat(times, 2)),
                       "latitude": ("time", np.full(4, -60.0), {"units": "degrees_north", "standard_name": "latitude"}),
                       "longitude": ("time", np.full(4, 120.0), {"units": "degrees_east", "standard_name": "longitude"})}
               ).to_netcdf(path)
    with pytest.raises(DataValidationError, match=r"far\.nc: none of the points lies on the state grid \(4 off the grid"):
        oceanda.open_obs(path, like=lib)
