"""Grid geometry read from Datasets: km testbed grids, lat/lon grids, grids without coordinates."""

from __future__ import annotations

import numpy as np
import xarray as xr

from oceanda import grid


def _km_grid(ny=4, nx=5, d=15.625):
    lat, lon = np.meshgrid(38 + np.arange(ny) * 0.1, -60 + np.arange(nx) * 0.1, indexing="ij")
    return xr.Dataset({"ssh": (("time", "y", "x"), np.zeros((2, ny, nx)))},
                      coords={"y": np.arange(ny) * d, "x": np.arange(nx) * d, "lat": (("y", "x"), lat),
                              "lon": (("y", "x"), lon)})


def test_km_grid_points_periods_and_spacing():
    ds = _km_grid()
    assert grid.shape(ds) == (4, 5) and grid.periods(ds) == (62.5, 78.125)
    assert grid.yx_spacing(ds) == (15.625, 15.625)
    pts, per = grid.points(ds, periodic=True)
    assert pts.shape == (20, 2) and per == (62.5, 78.125)
    np.testing.assert_array_equal(pts[6], [15.625, 15.625])  # C order: row 1, column 1
    assert grid.points(ds)[1] is None
    lat, lon = grid.lat_lon(ds)
    assert lat.shape == (4, 5) and lon[0, 1] == ds.lon.values[0, 1]


def test_lat_lon_grid_and_a_grid_without_coordinates():
    ll = xr.Dataset({"sst": (("lat", "lon"), np.zeros((3, 4)))},
                    coords={"lat": [10.0, 10.25, 10.5], "lon": [170.0, 170.25, 170.5, 170.75]})
    assert grid.coordinates(ll)[1].tolist() == [170.0, 170.25, 170.5, 170.75]
    assert grid.yx_spacing(ll) == (1.0, 1.0)  # no y/x: track widths are measured in cells
    lat, lon = grid.lat_lon(ll)
    assert lat[2, 0] == 10.5 and lon[0, 3] == 170.75
    bare = xr.Dataset({"v": (("time", "y", "x"), np.zeros((2, 3, 2)))})
    assert [c.tolist() for c in grid.coordinates(bare)] == [[0.0, 1.0, 2.0], [0.0, 1.0]]
    assert grid.lat_lon(bare) is None and grid.times(bare).tolist() == [0, 1]
    assert grid.spacing(np.array([5.0])) == 1.0
