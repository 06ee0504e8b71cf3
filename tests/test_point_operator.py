"""The exact observation operator of point observations at arbitrary positions (L3 along-track, profiles).

A point is the bilinear interpolation of the four surrounding cell centres (a sparse H, 4 weights per
row; the nearest cell on curvilinear grids); points off the grid or in a land cell are dropped and
counted; points at cell centres reduce to selecting the cell, so they analyse exactly like gridded
observations of those cells. Layouts are built here; nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import xarray as xr

import oceanda
from oceanda import grid, io
from oceanda.cli import main
from oceanda.fields import layout_of, to_array
from oceanda.kalman import analyse_dataset
from oceanda.kalman.obsspace import observations_from_dataset

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data" / "qg"
TIMES = np.array(["2001-01-01", "2001-01-02", "2001-01-03"], dtype="datetime64[ns]")


def _yx_states(ny=8, nx=10, d=10.0, nt=3, field=None):
    y, x = (np.arange(ny) + 0.5) * d, (np.arange(nx) + 0.5) * d
    yy, xx = np.meshgrid(y, x, indexing="ij")
    v = np.stack([field(yy, xx) + k for k in range(nt)]) if field else np.random.default_rng(0).normal(size=(nt, ny, nx))
    return xr.Dataset({"ssh": (("time", "y", "x"), v, {"units": "m"})},
                      coords={"time": TIMES[:nt], "y": ("y", y, {"units": "km"}), "x": ("x", x, {"units": "km"})})


def _latlon_states(lat, lon, field, nt=2):
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    v = np.stack([field(la, lo) + k for k in range(nt)])
    return xr.Dataset({"sst": (("time", "lat", "lon"), v, {"units": "K"})},
                      coords={"time": TIMES[:nt], "lat": ("lat", lat, {"units": "degrees_north"}),
                              "lon": ("lon", lon, {"units": "degrees_east"})})


def _points(var, values, time=None, error=0.1, **coords):
    n = len(next(iter(coords.values())))
    c = {k: ("obs", np.asarray(v, float)) for k, v in coords.items()}
    c["time"] = ("obs", np.full(n, TIMES[0]) if time is None else np.asarray(time))
    return xr.Dataset({var: ("obs", np.asarray(values, float), {"units": "m"}),
                       f"{var}_error": ("obs", np.full(n, error), {"units": "m"})}, coords=c)


def _operator(points, states, var, periodic=False, metric=None):
    layout = layout_of(states, [var], sample_dim="time")
    report = {}
    obs = observations_from_dataset(points, layout, states, variables=[var], periodic=periodic, metric=metric,
                                    report=report)
    return obs, report


def _state(states, var, t=0):
    arr, _ = to_array(states[[var]].isel(time=[t]), layout_of(states, [var], sample_dim="time"), dtype=np.float64)
    return arr.reshape(1, -1)


def test_bilinear_operator_reproduces_a_linear_field_at_arbitrary_points():
    lin = lambda y, x: 0.3 + 0.02 * y - 0.05 * x  # noqa: E731
    states = _yx_states(field=lin)
    rng = np.random.default_rng(3)
    py, px = rng.uniform(5.0, 75.0, 50), rng.uniform(5.0, 95.0, 50)  # between the outer centres
    (o,), report = _operator(_points("ssh", lin(py, px), y=py, x=px), states, "ssh", metric="euclidean")
    assert sp.issparse(o.H) and o.H.shape == (50, 80) and np.diff(o.H.indptr).max() <= 4
    np.testing.assert_allclose(o.H.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(o.apply(_state(states, "ssh"))[0], lin(py, px), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(o.coords, np.c_[py, px])  # localised at their own positions
    assert report["observation_operator"] == "bilinear interpolation of points" and report["points_used"] == 50


def test_points_off_the_grid_are_dropped_and_counted_and_outer_half_cells_clamp():
    states = _yx_states()
    py, px = np.array([2.0, 40.0, -6.0, 40.0, 40.0]), np.array([40.0, 98.0, 40.0, 101.0, 40.0])
    vals = np.array([1.0, 2.0, 3.0, 4.0, np.nan])
    (o,), report = _operator(_points("ssh", vals, y=py, x=px), states, "ssh")
    assert report["points_dropped_offgrid"] == 2 and report["points_missing_value"] == 1 and report["points_used"] == 2
    X = _state(states, "ssh").reshape(8, 10)
    # y = 2 km lies in row 0's outer half cell: constant along y there, linear along x between columns 3 and 4
    np.testing.assert_allclose(o.apply(X.reshape(1, -1))[0], [0.5 * (X[0, 3] + X[0, 4]), 0.5 * (X[3, 9] + X[4, 9])])


def test_periodic_wrap_between_the_last_and_the_first_cell():
    states = _yx_states()
    # x = 97.5 km: a quarter of the way from the last centre (95) to the first one across the edge (105 = 5 + 100)
    pts = _points("ssh", [0.0, 0.0, 0.0], y=[40.0, 40.0, 40.0 + 80.0], x=[97.5, 97.5 - 100.0, 97.5 + 200.0])
    (o,), _ = _operator(pts, states, "ssh", periodic=True, metric="periodic")
    X = _state(states, "ssh").reshape(8, 10)
    want = 0.5 * (0.75 * (X[3, 9] + X[4, 9]) + 0.25 * (X[3, 0] + X[4, 0]))
    np.testing.assert_allclose(o.apply(X.reshape(1, -1))[0], want, rtol=1e-12)
    (o2,), report = _operator(pts, states, "ssh", periodic=False)
    assert report["points_dropped_offgrid"] == 2 and o2.size == 1  # not periodic: only the one inside counts


def test_longitude_conventions_on_a_domain_across_the_dateline():
    lat, lon = np.arange(-10.0, 10.1, 2.0), np.arange(150.0, 250.1, 5.0)  # continuous 150..250
    lin = lambda la, lo: 280.0 + 0.1 * la + 0.01 * lo  # noqa: E731
    states = _latlon_states(lat, lon, lin)
    plat, plon = np.array([1.3, -7.1, 4.0, 0.0]), np.array([190.5, 233.3, 155.0, 100.0])  # 100 E: off the domain
    east = _operator(_points("sst", lin(plat, plon), lat=plat, lon=plon), states, "sst", metric="great_circle")
    west = _operator(_points("sst", lin(plat, plon), lat=plat, lon=((plon + 180) % 360) - 180), states, "sst",
                     metric="great_circle")
    (o,), report = east
    assert report["points_dropped_offgrid"] == 1 and west[1]["points_dropped_offgrid"] == 1
    assert (o.H != west[0][0].H).nnz == 0  # -180..180 and 0..360 give the same operator
    np.testing.assert_allclose(o.apply(_state(states, "sst"))[0], lin(plat, plon)[:3], rtol=1e-12)


def test_global_longitude_wraps_at_the_seam():
    lat, lon = np.arange(-60.0, 60.1, 10.0), np.arange(0.0, 360.0, 10.0)
    states = _latlon_states(lat, lon, lambda la, lo: np.cos(np.radians(lo)) + 0 * la)
    pts = _points("sst", [0.0, 0.0], lat=[0.0, 0.0], lon=[357.5, -2.5])
    (o,), report = _operator(pts, states, "sst")
    assert report["points_dropped_offgrid"] == 0
    X = _state(states, "sst").reshape(len(lat), len(lon))
    np.testing.assert_allclose(o.apply(X.reshape(1, -1))[0], 0.25 * X[6, 35] + 0.75 * X[6, 0], rtol=1e-12)


def test_land_drops_points_in_land_cells_and_uses_the_cell_next_to_land():
    states = _yx_states()
    states["ssh"][:, 4, 5] = np.nan
    # in the land cell; in the wet cell (3, 5) with a land corner; far from land
    pts = _points("ssh", [1.0, 2.0, 3.0], y=[45.0, 37.0, 20.0], x=[55.0, 53.0, 20.0])
    (o,), report = _operator(pts, states, "ssh")
    assert report["points_dropped_land"] == 1 and report["points_nearest_cell_near_land"] == 1
    assert report["points_used"] == 2
    H = o.H.toarray()
    assert H[0, 3 * 10 + 5] == 1.0 and np.count_nonzero(H[0]) == 1  # the containing cell only
    np.testing.assert_allclose(H[1, [11, 12, 21, 22]], 0.25)


def test_curvilinear_grid_selects_the_nearest_cell():
    ny, nx = 6, 7
    jj, ii = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    lat2, lon2 = 40.0 + 0.5 * jj + 0.1 * ii, -20.0 + 0.6 * ii - 0.05 * jj
    states = xr.Dataset({"ssh": (("time", "y", "x"), np.random.default_rng(1).normal(size=(2, ny, nx)), {"units": "m"})},
                        coords={"time": TIMES[:2], "lat": (("y", "x"), lat2), "lon": (("y", "x"), lon2 + 360.0)})
    pts = _points("ssh", [0.0, 0.0], lat=[lat2[2, 3] + 0.02, 10.0], lon=[lon2[2, 3] - 0.03, 0.0])
    (o,), report = _operator(pts, states, "ssh", metric="great_circle")
    assert report["points_dropped_offgrid"] == 1 and o.H.toarray()[0, 2 * nx + 3] == 1.0
    assert report["observation_operator"].startswith("nearest cell")


def _library_and_gridded_obs():
    rng = np.random.default_rng(5)
    ny, nx, d = 12, 12, 10.0
    k = np.arange(ny)[:, None] * 0 + np.arange(nx)[None]
    base = np.sin(2 * np.pi * k / nx)
    lib = np.stack([rng.normal() * base + rng.normal() * base.T + 0.3 * rng.normal(size=(ny, nx)) for _ in range(60)])
    y, x = (np.arange(ny) + 0.5) * d, (np.arange(nx) + 0.5) * d
    t = np.datetime64("1990-01-01", "ns") + np.arange(60) * np.timedelta64(1, "D")
    library = xr.Dataset({"ssh": (("time", "y", "x"), lib, {"units": "m"})},
                         coords={"time": t, "y": ("y", y, {"units": "km"}), "x": ("x", x, {"units": "km"})})
    obs = np.full((2, ny, nx), np.nan)
    obs[0, 3, :], obs[0, :, 7], obs[1, 8, 2:9] = 0.5, -0.4, 0.3
    obs += 0.01 * np.arange(ny * nx).reshape(ny, nx)
    gridded = xr.Dataset({"ssh": (("time", "y", "x"), obs, {"units": "m"}), "ssh_error": ((), 0.2, {"units": "m"})},
                         coords={"time": TIMES[:2], "y": library["y"], "x": library["x"]})
    return library, gridded


def _as_centre_points(gridded):
    t, j, i = np.nonzero(np.isfinite(gridded["ssh"].values))
    y, x = gridded["y"].values, gridded["x"].values
    return _points("ssh", gridded["ssh"].values[t, j, i], time=gridded["time"].values[t],
                   error=float(gridded["ssh_error"]), y=y[j], x=x[i])


@pytest.mark.parametrize("method", ["enoi", "letkf"])
def test_points_at_cell_centres_analyse_like_the_gridded_observations(method):
    library, gridded = _library_and_gridded_obs()
    points = _as_centre_points(gridded)
    kw = {"loc_radius_km": 30.0, "periodic": True, "rng": 0}
    a = oceanda.analyse(library, gridded, method, **kw)
    b = oceanda.analyse(library, points, method, **kw)
    # weight 1 on the cell, positions = the cell centres: the same numbers, bit for bit
    np.testing.assert_array_equal(b["ssh_mean"].values, a["ssh_mean"].values)
    np.testing.assert_array_equal(b["ssh_spread"].values, a["ssh_spread"].values)
    assert b.attrs["observation_operator"] == "bilinear interpolation of points"
    assert b.attrs["points_used"] == points.sizes["obs"] and b.attrs["points_dropped_time"] == 0
    assert a.attrs["observation_operator"] == "selection of grid cells"
    # off-centre points really are interpolated (the analysis changes)
    moved = points.assign_coords(x=points["x"] + 3.0)
    c = oceanda.analyse(library, moved, method, **kw)
    assert np.abs(c["ssh_mean"].values - a["ssh_mean"].values).max() > 1e-3


def test_raw_point_times_go_to_the_nearest_day_and_the_cli_uses_the_operator(tmp_path, capsys):
    library, gridded = _library_and_gridded_obs()
    points = _as_centre_points(gridded)
    late = points["time"].values + np.timedelta64(7, "h")  # along-track times within the day
    points = points.assign_coords(time=("obs", late))
    a = oceanda.analyse(library, points, "enoi", loc_radius_km=30.0, periodic=True, rng=0)
    np.testing.assert_array_equal(a["time"].values, TIMES[:2])
    assert a.attrs["points_time_rule"] == "nearest day (midnight)"
    lib_path, obs_path, out = tmp_path / "lib.nc", tmp_path / "l3.nc", tmp_path / "an.nc"
    io.write_netcdf(library, lib_path)
    io.write_netcdf(points, obs_path)
    assert main(["enkf", "--method", "enoi", "--ensemble", str(lib_path), "--obs", str(obs_path), "--out", str(out),
                 "--loc-radius", "30", "--periodic", "--quiet"]) == 0
    with xr.open_dataset(out) as ds:
        assert ds.attrs["observation_operator"] == "bilinear interpolation of points"
        assert ds.attrs["points_used"] == points.sizes["obs"]
        np.testing.assert_allclose(ds["ssh_mean"].values, a["ssh_mean"].values, rtol=1e-5, atol=1e-6)


def test_sample_insitu_points_by_position_equal_their_grid_indices():
    lib = oceanda.open_states(SAMPLE / "library.nc").isel(time=slice(0, 60)).load()
    ins = xr.open_dataset(SAMPLE / "obs_insitu_eval_1.nc").load()
    ins = ins.isel(obs=np.flatnonzero(ins["time"].values == ins["time"].values[0]))
    kw = {"loc_radius_km": 100.0, "periodic": True, "rng": 0, "keep_members": False}
    by_index = analyse_dataset(lib, ins, "enoi", **kw)
    by_position = analyse_dataset(lib, ins.drop_vars(["y_index", "x_index"]), "enoi", **kw)
    assert by_index.attrs["observation_operator"].startswith("selection of grid cells")
    assert by_position.attrs["observation_operator"] == "bilinear interpolation of points"
    assert by_position.attrs["points_used"] == ins.sizes["obs"]
    np.testing.assert_allclose(by_position["psi_mean"].values, by_index["psi_mean"].values, rtol=1e-9, atol=1e-9)


def test_fractional_index_on_a_decreasing_axis_and_corners():
    c = np.array([30.0, 20.0, 10.0])
    np.testing.assert_allclose(grid.fractional_index([25.0, 10.0, 33.0, 40.0], c), [0.5, 2.0, 0.0, np.nan])
    i0, i1, w = grid.corners(3, np.array([2.0, 0.25]), False)
    assert list(i0) == [1, 0] and list(i1) == [2, 1] and np.allclose(w, [1.0, 0.25])
