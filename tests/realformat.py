"""Writers of producer-style NetCDF files (not oceanda's layout), for tests of the readers and the own-data path.

Each writer makes a file the way another producer would: its own axis names, bounds variables, grid
mappings, masks, calendars, packed/filled float32, ``actual_range`` attributes. Fields are spatially
smooth random (Gaussian-filtered noise, AR(1) in time) so models can be trained on them. Everything is
written with xarray in ``path``; nothing is downloaded. ``SMALL`` and ``LARGE`` are size presets.

Writers (one line each):

- :func:`write_sst_latlon`   gridded SST anomalies on 1-D latitude/longitude (0..360 or -180..180 with the
  dateline jump), land NaN via ``_FillValue``, ``bounds_time``/``lat_bnds``/``lon_bnds``, a ``crs`` variable,
  ``actual_range``; optional decreasing latitude, other calendars (``360_day``, ``noleap``), units or none.
- :func:`write_nemo_curvilinear`  NEMO-like ``nav_lat``/``nav_lon`` (y, x) on a rotated grid crossing the dateline,
  dims ``time_counter``/``y``/``x`` (optional ``deptht``), a ``tmask`` variable, ``time_centered`` and bounds.
- :func:`write_l3_alongtrack`  L3 along-track altimetry: dim ``time`` only, ``latitude(time)``/``longitude(time)``,
  ``sla_filtered``/``sla_unfiltered``/``dac``/``cycle``/``track``, optional ``sla_error``; units m or cm.
- :func:`write_profiles`     in-situ profiles flattened along ``obs``: ``time``/``latitude``/``longitude``/``depth(obs)``,
  ``thetao`` and ``thetao_error``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr
from scipy.ndimage import gaussian_filter

SMALL = {"nt": 40, "ny": 18, "nx": 30}
LARGE = {"nt": 200, "ny": 60, "nx": 100}
EPOCH = "days since 1981-01-01 00:00:00"


def smooth_fields(nt: int, ny: int, nx: int, *, seed: int = 0, sigma: float = 2.5, ar: float = 0.8,
                  amplitude: float = 1.0) -> np.ndarray:
    """``[nt, ny, nx]`` float64 spatially smooth (Gaussian-filtered) noise, AR(1) in time, std ~ ``amplitude``."""
    rng = np.random.default_rng(seed)
    noise = gaussian_filter(rng.normal(size=(nt, ny, nx)), sigma=(0, sigma, sigma), mode="wrap")
    noise /= noise.std()
    out = np.empty_like(noise)
    out[0] = noise[0]
    for t in range(1, nt):
        out[t] = ar * out[t - 1] + np.sqrt(1 - ar**2) * noise[t]
    return amplitude * out


def land_mask(ny: int, nx: int) -> np.ndarray:
    """``[ny, nx]`` bool: True on land -- an island and a coastal strip along the last rows' west end."""
    j, i = np.mgrid[0:ny, 0:nx]
    island = ((j - ny * 0.4) / max(ny * 0.15, 1.5)) ** 2 + ((i - nx * 0.6) / max(nx * 0.1, 1.5)) ** 2 <= 1.0
    coast = (j >= ny - max(ny // 6, 2)) & (i < nx // 4)
    return island | coast


def _time_values(nt: int, calendar: str, step: float = 1.0) -> tuple[np.ndarray, dict]:
    t = 7305.0 + step * np.arange(nt)  # 2001-01-01 (standard calendar) from 1981-01-01
    return t, {"standard_name": "time", "long_name": "time", "axis": "T", "units": EPOCH, "calendar": calendar}


def write_sst_latlon(path, *, nt: int = 40, ny: int = 18, nx: int = 30, lon0: float = 150.0, dlon: float = 100.0 / 30,
                     lat0: float = -10.0, dlat: float = 1.0, lon_convention: str = "0360", lat_decreasing: bool = False,
                     calendar: str = "standard", units: str | None = "K", seed: int = 0, name: str = "sst") -> Path:
    """Gridded SST anomalies (time, latitude, longitude), land NaN, bounds, crs and actual_range; returns the path.

    ``lon_convention``: ``"0360"`` writes e.g. 150..250; ``"pm180"`` the same points as 150..180, -180..-110.
    """
    lon = lon0 + dlon * np.arange(nx)
    lon_file = lon % 360.0 if lon_convention == "0360" else (lon + 180.0) % 360.0 - 180.0
    lat = lat0 + dlat * np.arange(ny)
    land = land_mask(ny, nx)
    sst = smooth_fields(nt, ny, nx, seed=seed, amplitude=0.6)
    sst[:, land] = np.nan
    if lat_decreasing:
        lat, sst, land = lat[::-1], sst[:, ::-1], land[::-1]
    t, tattrs = _time_values(nt, calendar)
    tattrs["bounds"] = "bounds_time"
    attrs = {"long_name": "sea surface temperature anomaly", "grid_mapping": "crs", "actual_range": [-5.0, 5.0],
             "coverage_content_type": "physicalMeasurement"}
    if units is not None:
        attrs["units"] = units
    ds = xr.Dataset(
        {name: (("time", "latitude", "longitude"), sst.astype(np.float32), attrs),
         "bounds_time": (("time", "nv"), np.c_[t - 0.5, t + 0.5], {"units": EPOCH, "calendar": calendar}),
         "lat_bnds": (("latitude", "nv"), np.c_[lat - dlat / 2, lat + dlat / 2]),
         "lon_bnds": (("longitude", "nv"), np.c_[lon_file - dlon / 2, lon_file + dlon / 2]),
         "crs": ((), np.int32(0), {"grid_mapping_name": "latitude_longitude", "semi_major_axis": 6371000.0}),
         "processing_time": ((), np.datetime64("2021-06-01T00:00:00", "ns"))},
        coords={"time": ("time", t, tattrs),
                "latitude": ("latitude", lat, {"standard_name": "latitude", "units": "degrees_north", "axis": "Y",
                                               "bounds": "lat_bnds", "actual_range": [lat.min(), lat.max()]}),
                "longitude": ("longitude", lon_file, {"standard_name": "longitude", "units": "degrees_east", "axis": "X",
                                                      "bounds": "lon_bnds", "actual_range": [lon_file.min(), lon_file.max()]})},
        attrs={"Conventions": "CF-1.8", "title": "SST anomalies (producer-style test file)", "institution": "nobody"},
    )
    enc = {name: {"dtype": "float32", "_FillValue": np.float32(-999.0), "zlib": True},
           "time": {"dtype": "float64"}, "bounds_time": {"dtype": "float64"}, "processing_time": {"units": EPOCH}}
    ds.to_netcdf(path, encoding=enc, format="NETCDF4")
    return Path(path)


def _rotated_grid(ny: int, nx: int) -> tuple[np.ndarray, np.ndarray]:
    """A curvilinear (rotated, sheared) Pacific grid centred near the dateline; lon in -180..180 (with a jump)."""
    j, i = np.mgrid[0:ny, 0:nx].astype(np.float64)
    lat = -5.0 + 0.9 * j + 0.15 * i
    lon = 165.0 + 1.1 * i - 0.2 * j + 0.002 * (i - nx / 2) ** 2
    return lat, (lon + 180.0) % 360.0 - 180.0


def write_nemo_curvilinear(path, *, nt: int = 40, ny: int = 18, nx: int = 30, levels: int = 0, calendar: str = "noleap",
                           seed: int = 1) -> Path:
    """NEMO-like output: ``thetao``/``tos`` on (time_counter, [deptht,] y, x), nav_lat/nav_lon, tmask; returns the path."""
    lat, lon = _rotated_grid(ny, nx)
    land = land_mask(ny, nx)
    t, tattrs = _time_values(nt, calendar)
    tattrs["bounds"] = "time_counter_bounds"
    tmask = (~land).astype(np.int8)
    field = 20.0 + smooth_fields(nt, ny, nx, seed=seed, amplitude=1.5)
    field[:, land] = 1e20  # NEMO writes land as a huge missing value, announced by missing_value
    coords = {"time_counter": ("time_counter", t, tattrs),
              "time_centered": ("time_counter", t, {"standard_name": "time", "long_name": "Time axis",
                                                    "units": EPOCH, "calendar": calendar, "bounds": "time_centered_bounds"}),
              "nav_lat": (("y", "x"), lat.astype(np.float32), {"standard_name": "latitude", "units": "degrees_north",
                                                               "long_name": "Latitude"}),
              "nav_lon": (("y", "x"), lon.astype(np.float32), {"standard_name": "longitude", "units": "degrees_east",
                                                               "long_name": "Longitude"})}
    attrs = {"units": "degC", "long_name": "sea surface temperature", "standard_name": "sea_surface_temperature",
             "missing_value": np.float32(1e20), "coordinates": "time_centered nav_lat nav_lon", "cell_methods": "time: mean"}
    data = {"tos": (("time_counter", "y", "x"), field.astype(np.float32), attrs),
            "time_counter_bounds": (("time_counter", "axis_nbounds"), np.c_[t - 0.5, t + 0.5]),
            "time_centered_bounds": (("time_counter", "axis_nbounds"), np.c_[t - 0.5, t + 0.5]),
            "tmask": (("y", "x"), tmask, {"long_name": "tmask", "flag_values": np.array([0, 1], np.int8),
                                          "flag_meanings": "land ocean"})}
    if levels:
        depth = 5.0 * 2.0 ** np.arange(levels)
        coords["deptht"] = ("deptht", depth, {"units": "m", "positive": "down", "long_name": "Vertical T levels",
                                              "standard_name": "depth", "axis": "Z"})
        prof = np.exp(-depth / 100.0)[None, :, None, None] * (field[:, None] - 20.0) + 20.0 - 0.01 * depth[None, :, None, None]
        prof[:, :, land] = 1e20
        data["thetao"] = (("time_counter", "deptht", "y", "x"), prof.astype(np.float32),
                          {**attrs, "standard_name": "sea_water_potential_temperature", "long_name": "temperature"})
    ds = xr.Dataset(data, coords=coords, attrs={"Conventions": "CF-1.6", "name": "NEMO-like test output",
                                                "description": "ocean T grid variables"})
    for v in ds.variables.values():
        v.attrs.pop("coordinates", None)  # xarray writes the coordinates attribute itself
    ds.to_netcdf(path, format="NETCDF4")
    return Path(path)


def write_l3_alongtrack(path, *, states: xr.Dataset | None = None, var: str = "sst", n_tracks: int = 12,
                        points_per_track: int = 40, lat_range=(-10.0, 8.0), lon_range=(150.0, 250.0), days=(0, 40),
                        lon_convention: str = "pm180", with_error: bool = True, units: str = "m", seed: int = 3) -> Path:
    """L3 along-track points (dim ``time``: latitude/longitude/sla_filtered...); values sampled from ``states[var]``
    (nearest cell of a canonical (lat, lon) grid) or smooth random; returns the path."""
    rng = np.random.default_rng(seed)
    t0 = 7305.0
    tracks = []
    for k in range(n_tracks):
        start = t0 + rng.uniform(*days)
        frac = np.linspace(0.0, 1.0, points_per_track)
        up = k % 2 == 0
        lat = lat_range[0] + (frac if up else 1 - frac) * (lat_range[1] - lat_range[0])
        lon = lon_range[0] + rng.uniform(0.05, 0.95) * (lon_range[1] - lon_range[0]) + 8.0 * (frac - 0.5) * (1 if up else -1)
        tracks.append((start + frac * 0.01, lat, lon, np.full(points_per_track, k)))
    t, lat, lon, track = (np.concatenate(a) for a in zip(*tracks))
    order = np.argsort(t)
    t, lat, lon, track = t[order], lat[order], lon[order], track[order]
    if states is not None:
        da = states[var]
        days_state = (da["time"].values - np.datetime64("1981-01-01", "ns")) / np.timedelta64(1, "D")
        it = np.clip(np.searchsorted(days_state, t), 0, da.sizes["time"] - 1)
        ij = np.abs(da["lat"].values[None, :] - lat[:, None]).argmin(1)
        ii = np.abs(da["lon"].values[None, :] - (lon[:, None] - da["lon"].values[0]) % 360 - da["lon"].values[0]).argmin(1)
        value = da.values[it, ij, ii]
    else:
        value = 0.1 * np.sin(np.deg2rad(lon) * 3) * np.cos(np.deg2rad(lat) * 5) + 0.02 * rng.normal(size=t.size)
    scale = 100.0 if units == "cm" else 1.0
    lon_file = lon % 360.0 if lon_convention == "0360" else (lon + 180.0) % 360.0 - 180.0
    vattrs = {"units": units, "standard_name": "sea_surface_height_above_sea_level", "coordinates": "longitude latitude"}
    data = {"sla_filtered": ("time", (scale * value).astype(np.float32), {**vattrs, "long_name": "filtered SLA"}),
            "sla_unfiltered": ("time", (scale * (value + 0.01 * rng.normal(size=t.size))).astype(np.float32),
                               {**vattrs, "long_name": "unfiltered SLA"}),
            "dac": ("time", (scale * 0.01 * rng.normal(size=t.size)).astype(np.float32),
                    {"units": units, "long_name": "dynamic atmospheric correction"}),
            "cycle": ("time", np.full(t.size, 42, np.int16), {"long_name": "cycle number"}),
            "track": ("time", track.astype(np.int16), {"long_name": "track number"})}
    if with_error:
        data["sla_error"] = ("time", np.full(t.size, 0.03 * scale, np.float32), {"units": units, "long_name": "SLA error"})
    ds = xr.Dataset(data, coords={
        "time": ("time", t, {"standard_name": "time", "axis": "T", "units": EPOCH, "calendar": "gregorian"}),
        "latitude": ("time", lat, {"standard_name": "latitude", "units": "degrees_north"}),
        "longitude": ("time", lon_file, {"standard_name": "longitude", "units": "degrees_east"})},
        attrs={"Conventions": "CF-1.6", "title": "L3 along-track SLA (producer-style test file)", "platform": "nobodysat"})
    ds.to_netcdf(path, format="NETCDF4")
    return Path(path)


def write_profiles(path, *, n_profiles: int = 20, depths=(5.0, 20.0, 50.0), lat_range=(-10.0, 8.0),
                   lon_range=(150.0, 250.0), days=(0, 40), seed: int = 4) -> Path:
    """In-situ temperature profiles flattened along ``obs`` (time/latitude/longitude/depth per point); returns the path."""
    rng = np.random.default_rng(seed)
    t = np.repeat(7305.0 + np.sort(rng.uniform(*days, n_profiles)), len(depths))
    lat = np.repeat(rng.uniform(*lat_range, n_profiles), len(depths))
    lon = np.repeat(rng.uniform(*lon_range, n_profiles), len(depths))
    depth = np.tile(np.asarray(depths, float), n_profiles)
    temp = 20.0 - 0.01 * depth + 0.3 * rng.normal(size=depth.size)
    lon_file = (lon + 180.0) % 360.0 - 180.0
    ds = xr.Dataset(
        {"thetao": ("obs", temp.astype(np.float32), {"units": "degC", "standard_name": "sea_water_potential_temperature"}),
         "thetao_error": ("obs", np.full(depth.size, 0.1, np.float32), {"units": "degC"}),
         "platform_id": ("obs", np.repeat(np.arange(n_profiles), len(depths)).astype(np.int32))},
        coords={"TIME": ("obs", t, {"standard_name": "time", "units": EPOCH}),
                "LATITUDE": ("obs", lat, {"standard_name": "latitude", "units": "degrees_north"}),
                "LONGITUDE": ("obs", lon_file, {"standard_name": "longitude", "units": "degrees_east"}),
                "DEPTH": ("obs", depth, {"standard_name": "depth", "units": "m", "positive": "down", "axis": "Z"})},
        attrs={"Conventions": "CF-1.6", "featureType": "point", "title": "profiles (producer-style test file)"})
    ds.to_netcdf(path, format="NETCDF4")
    return Path(path)
