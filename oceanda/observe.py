"""Observation operators: state Dataset -> observation Dataset (with errors), and their fresh patterns.

Along-track altimetry (gridded, or L3-style points along the tracks), gappy (cloud-masked) gridded
fields, profiles and in-situ points (Argo-like) and drifters. The altimetry, gappy, points and profiles
operators work on any grid of the canonical layout (1-D y/x km, 1-D lat/lon, curvilinear 2-D lat/lon,
regional or global, land as NaN never observed) with options in km (:class:`Geometry`);
:func:`observe_states` runs them by name (``oceanda observe``). On the testbeds' doubly periodic km boxes
the historical code paths are kept bit for bit.
Every random choice comes from a passed ``numpy.random.Generator``. Gridded observations sit on the
state grid with NaN where unobserved plus ``<var>_error``; point and trajectory observations carry
an ``obs`` dimension with ``lat``, ``lon``, ``time`` (and grid indices for grid testbeds).

The operator H that maps a flat state to these observations is built in one place,
:func:`oceanda.kalman.observations_from_dataset` (from the observation Dataset and the state layout;
flat index ``c*Y*X + iy*X + ix``); grid geometry comes from :mod:`oceanda.grid`. Contrastive training
redraws observation patterns every epoch: ``sample_mask(n, rng)`` returns fresh boolean masks and
``apply_mask`` turns true fields into noisy, NaN-masked observations, both vectorised.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from oceanda import fields, grid
from oceanda.errors import DataValidationError

LEVEL_DIMS = fields.LEVEL_DIMS

# ---------------------------------------------------------------------- helpers


def apply_mask(values: np.ndarray, mask: np.ndarray, sigma: float | np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
    """Noisy observations of ``values`` where ``mask`` is True, NaN elsewhere (float32 kept if given).

    Parameters
    ----------
    values : true fields
    mask : boolean, True = observed (broadcast to ``values``)
    sigma : noise standard deviation (scalar or broadcastable)
    rng : noise generator (None = no noise)

    Returns
    -------
    numpy.ndarray: like ``values``, NaN where unobserved
    """
    values = np.asarray(values)
    dtype = values.dtype if values.dtype.kind == "f" else np.float64
    out = values.astype(dtype)
    if rng is not None:
        out = out + (np.asarray(sigma) * rng.standard_normal(values.shape)).astype(dtype)
    return np.where(np.asarray(mask, bool), out, np.nan).astype(dtype)


def _grid(ds: xr.Dataset) -> tuple[int, int, float, float]:
    """(ny, nx, dy_km, dx_km) of a testbed Dataset with 1-D y, x in km (or a unit grid without coords)."""
    if "y" not in ds.dims or "x" not in ds.dims:
        raise DataValidationError(f"dataset with dims {tuple(ds.dims)}; expected a (y, x) grid")
    return ds.sizes["y"], ds.sizes["x"], *grid.yx_spacing(ds)


def _grid_coords(ds: xr.Dataset) -> dict[str, Any]:
    return {c: ds[c] for c in ("y", "x", "lat", "lon") if c in ds.coords}


def _states_label(ds: xr.Dataset) -> str:
    """The states' file(s) for an error message (``state dataset`` when they were not read from a file)."""
    return fields.source_of(ds) or "state dataset"


def _field(ds: xr.Dataset, var: str, layer: int | None) -> xr.DataArray:
    src = _states_label(ds)
    if var not in ds:
        raise DataValidationError(f"{src}: no variable '{var}'; expected one of {sorted(map(str, ds.data_vars))}")
    da = ds[var]
    for dim in LEVEL_DIMS:
        if dim in da.dims:
            if layer is None:
                raise DataValidationError(f"{src}: variable '{var}' has a {dim} dimension; expected a level index "
                                          "(--layer) for this operator")
            da = da.isel({dim: layer})
    if "member" in da.dims:
        raise DataValidationError(f"{src}: variable '{var}' has a member dimension; observe one trajectory (select a "
                                  "member) at a time")
    return da.transpose("time", *fields.spatial_dims(da, src))


def _default_sigma(values: np.ndarray, fraction: float) -> float:
    sd = float(np.nanstd(values))
    return fraction * sd if sd > 0 else fraction


# ---------------------------------------------------------------------- any grid: geometry, time, sampling


@dataclass
class Geometry:
    """Where the cells of a canonical grid are, in km: what every generator needs on any grid.

    Why one object: tracks, clouds and points are laid out in a planar "index-km" frame -- the centre of
    cell ``(j, i)`` at ``((j + 0.5) dy, (i + 0.5) dx)`` with ``dy``, ``dx`` the grid's median spacing in km
    (:func:`oceanda.grid.km_spacing`) -- and sampled in index space, which is exact on every layout (1-D y/x
    km, 1-D lat/lon, curvilinear 2-D lat/lon). On a large or strongly curvilinear grid a straight track in
    this frame is gently curved on the sphere; the testbeds' doubly periodic km boxes (``legacy``) keep the
    historical code paths bit for bit.
    """

    spatial: tuple[str, str]
    ny: int
    nx: int
    dy: float
    dx: float
    periodic: tuple[bool, bool]
    legacy: bool
    ocean: np.ndarray | None = None
    lat: np.ndarray | None = None
    lon: np.ndarray | None = None
    y: np.ndarray | None = None
    x: np.ndarray | None = None

    @property
    def has_land(self) -> bool:
        """Whether some cells are land (NaN at every time in the observed field)."""
        return self.ocean is not None and not bool(self.ocean.all())

    def point_coords(self, j: np.ndarray, i: np.ndarray) -> dict[str, Any]:
        """Coordinates along ``obs`` of points at fractional indices ``(j, i)``: lat/lon (and y/x km)."""
        out: dict[str, Any] = {}
        if self.lat is not None and self.lon is not None:
            out["lat"] = ("obs", _bilinear(self.lat[None], np.zeros(j.shape, int), j, i, self.periodic),
                          {"units": "degrees_north", "standard_name": "latitude", "long_name": "latitude"})
            out["lon"] = ("obs", _bilinear_lon(self.lon, j, i, self.periodic),
                          {"units": "degrees_east", "standard_name": "longitude", "long_name": "longitude"})
        if self.y is not None and self.x is not None:
            for name, g, c, n, p in (("y", j, self.y, self.ny, self.periodic[0]), ("x", i, self.x, self.nx, self.periodic[1])):
                d = grid.spacing(c)
                v = c[0] + g * d
                if p:
                    v = c[0] - 0.5 * d + np.mod(v - c[0] + 0.5 * d, n * d)
                out[name] = ("obs", v, {"units": "km", "long_name": f"{name} distance of the observation"})
        return out




def geometry(ds: xr.Dataset, values: np.ndarray | None = None, periodic: bool | None = None) -> Geometry:
    """The :class:`Geometry` of ``ds``'s grid; ``values`` (fields ``[..., ny, nx]``) mark land as never-finite cells.

    Parameters
    ----------
    ds : a gridded Dataset (or observations on its grid)
    values : the observed field(s), to find land (None: no land known)
    periodic : None = automatic (1-D y/x km boxes doubly periodic as the testbeds; lat/lon periodic in lon when
        global; curvilinear grids not periodic), else True/False for both axes (latitude is never periodic)

    Returns
    -------
    Geometry
    """
    ydim, xdim = fields.spatial_dims(ds)
    ny, nx = int(ds.sizes[ydim]), int(ds.sizes[xdim])
    yx_1d = (ydim, xdim) == ("y", "x") and all(c in ds.coords and ds[c].ndim == 1 for c in ("y", "x"))
    ll = grid.lat_lon(ds)
    lat, lon = (np.asarray(a, dtype=np.float64) for a in ll) if ll is not None else (None, None)
    if (ydim, xdim) == ("lat", "lon"):
        per = (False, grid.global_lon(np.asarray(ds["lon"].values, float)) if periodic is None else bool(periodic))
    elif periodic is None:
        per = (yx_1d or ll is None,) * 2
    else:
        per = (bool(periodic),) * 2
    ocean = None
    if values is not None:
        v = np.asarray(values)
        ocean = np.isfinite(v.reshape((-1, ny, nx))).any(axis=0)
    dy, dx = grid.km_spacing(ds)
    return Geometry((ydim, xdim), ny, nx, dy, dx, per, yx_1d and all(per), ocean, lat, lon,
                    np.asarray(ds["y"].values, float) if yx_1d else None, np.asarray(ds["x"].values, float) if yx_1d else None)




def _bilinear(f: np.ndarray, t: np.ndarray, j: np.ndarray, i: np.ndarray, periodic: tuple[bool, bool]) -> np.ndarray:
    """Bilinear values of fields ``f [nt, ny, nx]`` at time index ``t`` and fractional ``(j, i)`` (NaN if a corner is)."""
    j0, j1, wy = grid.corners(f.shape[-2], np.asarray(j, float), periodic[0])
    i0, i1, wx = grid.corners(f.shape[-1], np.asarray(i, float), periodic[1])
    return (f[t, j0, i0] * (1 - wy) * (1 - wx) + f[t, j0, i1] * (1 - wy) * wx
            + f[t, j1, i0] * wy * (1 - wx) + f[t, j1, i1] * wy * wx)


def _bilinear_lon(lon: np.ndarray, j: np.ndarray, i: np.ndarray, periodic: tuple[bool, bool]) -> np.ndarray:
    """Bilinear longitude: corners taken relative to the first one, so continuous across the dateline and the seam."""
    j0, j1, wy = grid.corners(lon.shape[0], np.asarray(j, float), periodic[0])
    i0, i1, wx = grid.corners(lon.shape[1], np.asarray(i, float), periodic[1])
    ref = lon[j0, i0]

    def rel(a: np.ndarray) -> np.ndarray:
        return ((a - ref + 180.0) % 360.0) - 180.0

    return ref + (rel(lon[j0, i1]) * (1 - wy) * wx + rel(lon[j1, i0]) * wy * (1 - wx) + rel(lon[j1, i1]) * wy * wx)


def _sample(values: np.ndarray, t: np.ndarray, j: np.ndarray, i: np.ndarray, periodic: tuple[bool, bool],
            interpolation: str = "bilinear") -> np.ndarray:
    """Field values at points: bilinear where its four cells are ocean, else the containing cell's value (NaN on land).

    ``interpolation="nearest"`` takes the containing cell's value everywhere (the grid's finite-volume view:
    no sub-cell variability, so superobs carry no representativeness error).
    """
    if interpolation not in ("bilinear", "nearest"):
        raise DataValidationError(f"interpolation = {interpolation!r}; expected 'bilinear' or 'nearest'")
    f = np.asarray(values, dtype=np.float64)
    out = _bilinear(f, t, j, i, periodic) if interpolation == "bilinear" else np.full(np.shape(j), np.nan)
    bad = ~np.isfinite(out)
    if bad.any():
        jn = np.rint(j[bad]).astype(np.int64)
        inn = np.rint(i[bad]).astype(np.int64)
        jn = jn % f.shape[-2] if periodic[0] else np.clip(jn, 0, f.shape[-2] - 1)
        inn = inn % f.shape[-1] if periodic[1] else np.clip(inn, 0, f.shape[-1] - 1)
        out[bad] = f[t[bad], jn, inn]
    return out


def add_days(values: Any, days: np.ndarray) -> np.ndarray:
    """``values + days`` for datetime64, cftime or numeric times (no arithmetic on encoded numbers)."""
    v = np.asarray(values)
    d = np.asarray(days, dtype=np.float64)
    if np.issubdtype(v.dtype, np.datetime64):
        return v.astype("datetime64[ns]") + np.rint(d * 86400e9).astype("timedelta64[ns]")
    if v.dtype == object:
        import datetime

        return np.array([a + datetime.timedelta(days=float(b)) for a, b in zip(*np.broadcast_arrays(v, d))], dtype=object)
    return v + d


def step_days(times: Any) -> float:
    """Median spacing of the state times in days (1 for a single time)."""
    t = grid.time_days(times)
    return float(np.median(np.diff(t))) if t.size > 1 else 1.0


def _var_attrs(attrs: dict) -> dict[str, Any]:
    return {k: v for k, v in attrs.items() if k in ("units", "long_name", "standard_name")}


def _points_dataset(var: str, values: np.ndarray, sigma: float, attrs: dict, coords: dict[str, Any], operator: str,
                    extra: dict[str, Any]) -> xr.Dataset:
    """The canonical point layout: dim ``obs``, coords time/lat/lon (y/x, depth, ...), ``<var>`` and ``<var>_error``."""
    a = _var_attrs(attrs)
    err_attrs = {"units": a.get("units", "1"), "long_name": f"observation error standard deviation of {var}"}
    out = xr.Dataset({var: ("obs", values.astype(np.float32), a),
                      f"{var}_error": ("obs", np.full(values.shape, sigma, np.float32), err_attrs)}, coords=coords)
    out.attrs.update({"operator": operator, "observed_variable": var, "obs_error_std": sigma, **extra})
    return out


# ---------------------------------------------------------------------- along-track altimetry


@dataclass
class AlongTrackAltimetry:
    """SSH on the grid cells crossed by straight satellite ground tracks on the (periodic) box.

    Each satellite makes ``passes_per_day`` passes a day (alternately ascending and descending, at
    ``angle_deg`` to the x axis); the day-d tracks are shifted by ``shift_steps / repeat_days`` of the
    box width per day, so the pattern repeats every ``repeat_days``. Defaults: 2 satellites x 2 passes
    = 4 tracks a day, 10-day repeat, noise 10 % of the SSH standard deviation.

    On any other grid (lat/lon, curvilinear, regional, with land; see :class:`Geometry`) and whenever
    ``track_spacing_km`` or ``track_width_km`` is set, tracks are straight lines in the grid's km frame:
    same-direction tracks of one day ``track_spacing_km`` apart along x (default: half the domain width,
    which is the testbed geometry), cells whose centre lies within ``track_width_km / 2`` of a track
    observed (default: the cells the line crosses); the day index is days since the first state time.
    Land (NaN) is never observed.
    """

    n_satellites: int = 2
    passes_per_day: int = 2
    repeat_days: int = 10
    shift_steps: int = 3
    angle_deg: float = 60.0
    phase: float = 0.0
    sigma: float | None = None
    sigma_fraction: float = 0.1
    var: str = "ssh"
    track_spacing_km: float | None = None
    track_width_km: float | None = None
    periodic: bool | None = None

    name = "along_track_altimetry"

    def _offsets(self, days: np.ndarray, phases: np.ndarray) -> np.ndarray:
        """x-intercepts (fraction of the box) [n, tracks] and pass direction per track."""
        s = np.arange(self.n_satellites)[:, None]
        p = np.arange(self.passes_per_day)[None, :]
        base = (s / self.n_satellites + p / (self.n_satellites * self.passes_per_day)).ravel()  # [tracks]
        shift = (np.asarray(days)[:, None] % self.repeat_days) * self.shift_steps / self.repeat_days
        return (phases[:, None] + base[None, :] + shift) % 1.0

    def _masks(self, ny: int, nx: int, days: np.ndarray, phases: np.ndarray, dy: float = 1.0, dx: float = 1.0) -> np.ndarray:
        days = np.atleast_1d(np.asarray(days))
        phases = np.broadcast_to(np.asarray(phases, dtype=float), days.shape)
        L, W = nx * dx, ny * dy
        x0 = self._offsets(days, phases) * L  # [n, T]
        ntr = x0.shape[1]
        direction = np.where(np.arange(ntr) % 2 == 0, 1.0, -1.0)  # ascending / descending
        th = np.radians(self.angle_deg % 180.0)  # a track at -30 deg is the line at 150 deg
        length = W / np.sin(th)
        s = np.arange(0.0, length, min(dx, dy) / 4.0)
        xs = x0[..., None] + direction[None, :, None] * np.cos(th) * s  # [n, T, S]
        ys = np.broadcast_to(np.sin(th) * s, xs.shape)
        ix = np.floor(xs / dx).astype(np.int64) % nx
        iy = np.floor(ys / dy).astype(np.int64) % ny
        n = days.size
        masks = np.zeros((n, ny * nx), dtype=bool)
        rows = np.broadcast_to(np.arange(n)[:, None, None], ix.shape)
        masks[rows.ravel(), (iy * nx + ix).ravel()] = True
        return masks.reshape(n, ny, nx)

    def mask(self, ny: int, nx: int, day: int | Sequence[int], dy: float = 1.0, dx: float = 1.0) -> np.ndarray:
        """Boolean [n_days, ny, nx] observed cells for model day index(es) ``day`` (deterministic).

        Parameters
        ----------
        ny, nx : grid size
        day : model day index(es)
        dy, dx : grid spacing (km)

        Returns
        -------
        numpy.ndarray
        """
        days = np.atleast_1d(np.asarray(day))
        return self._masks(ny, nx, days, np.full(days.shape, self.phase), dy, dx)

    def sample_mask(self, n: int, rng: np.random.Generator, ny: int = 64, nx: int = 64, day_offset: int | None = None,
                    dy: float = 1.0, dx: float = 1.0) -> np.ndarray:
        """``n`` fresh patterns [n, ny, nx]: random orbit phase (and random day unless ``day_offset``).

        Parameters
        ----------
        n : number of patterns
        rng : random generator
        ny, nx : grid size
        day_offset : fixed day index (None = random)
        dy, dx : grid spacing (km)

        Returns
        -------
        numpy.ndarray
        """
        days = rng.integers(0, self.repeat_days, size=n) if day_offset is None else np.full(n, int(day_offset))
        return self._masks(ny, nx, days, rng.random(n), dy, dx)

    def resolve_sigma(self, values: np.ndarray) -> float:
        """The error std: ``sigma``, else ``sigma_fraction`` x the std of ``values``.

        Parameters
        ----------
        values : the true fields (used only when ``sigma`` is None)

        Returns
        -------
        float: the observation error standard deviation
        """
        return float(self.sigma) if self.sigma is not None else _default_sigma(values, self.sigma_fraction)

    def draw(self, values: np.ndarray, rng: np.random.Generator, dy: float = 1.0, dx: float = 1.0) -> np.ndarray:
        """Fresh noisy along-track observations of fields [n, ny, nx] (new pattern each): for training epochs.

        Parameters
        ----------
        values : true fields ``[n, ny, nx]``
        rng : random generator (patterns and noise)
        dy, dx : grid spacing (km)

        Returns
        -------
        numpy.ndarray: NaN where unobserved
        """
        values = np.asarray(values)
        n, ny, nx = values.shape
        return apply_mask(values, self.sample_mask(n, rng, ny, nx, dy=dy, dx=dx), self.resolve_sigma(values), rng)

    def observe(self, ds: xr.Dataset, rng: np.random.Generator, days: Sequence[int] | None = None) -> xr.Dataset:
        """Gridded along-track observations of ``ds[var]`` at every time of ``ds`` (day index = position unless ``days``).

        Parameters
        ----------
        ds : state Dataset with ``var`` on a (time, y, x) grid
        rng : noise generator
        days : day index of each time (default 0, 1, ...)

        Returns
        -------
        xarray.Dataset: gridded observations with ``<var>_error``
        """
        da = _field(ds, self.var, None)
        values = np.asarray(da.values)
        geom = geometry(ds, values, self.periodic)
        sigma = self.resolve_sigma(values)
        if self._legacy(geom):
            ny, nx, dy, dx = _grid(ds)
            days = np.arange(da.sizes["time"]) if days is None else np.asarray(days)
            masks = self._masks(ny, nx, days, np.full(days.shape, self.phase), dy, dx)
            extra = self._attrs(sigma)
        else:
            days = self.day_index(ds["time"].values) if days is None else np.asarray(days)
            masks = self.general_masks(geom, days, np.full(days.shape, self.phase))
            extra = {**self._attrs(sigma), **self._general_attrs(geom)}
        obs = apply_mask(values, masks, sigma, rng)
        return _gridded_obs_dataset(ds, self.var, obs, sigma, da.attrs, self.name, extra)

    def _legacy(self, geom: Geometry) -> bool:
        return geom.legacy and self.track_spacing_km is None and self.track_width_km is None

    @staticmethod
    def day_index(times: Any) -> np.ndarray:
        """Whole days since the first time (the orbit's repeat-cycle day of each state)."""
        t = grid.time_days(times)
        return np.floor(t - t[0] + 0.5).astype(np.int64)

    def track_layout(self, geom: Geometry) -> tuple[float, float]:
        """``(period_km, half_width_km)``: each track's line family repeats every ``period_km`` along x."""
        ntracks = self.n_satellites * self.passes_per_day
        spacing = self.track_spacing_km if self.track_spacing_km is not None else geom.nx * geom.dx / 2.0
        if spacing <= 0:
            raise DataValidationError(f"track_spacing_km = {spacing}; expected a positive distance in km")
        th = np.radians(self.angle_deg)
        if self.track_width_km is not None:
            half = 0.5 * float(self.track_width_km)
        else:  # half the extent of a cell across the track: the cells the line crosses
            half = 0.5 * (geom.dx * np.sin(th) + geom.dy * abs(np.cos(th)))
        return float(spacing) * int(np.ceil(ntracks / 2)), half

    def general_masks(self, geom: Geometry, days: np.ndarray, phases: np.ndarray) -> np.ndarray:
        """Boolean ``[n, ny, nx]``: cells within half a swath of a track of each day, on any grid."""
        days = np.atleast_1d(np.asarray(days))
        phases = np.broadcast_to(np.asarray(phases, dtype=float), days.shape)
        period, half = self.track_layout(geom)
        x0 = self._offsets(days, phases) * period  # [n, T]
        direction = np.where(np.arange(x0.shape[1]) % 2 == 0, 1.0, -1.0)
        th = np.radians(self.angle_deg)
        yc = (np.arange(geom.ny) + 0.5)[:, None] * geom.dy
        xc = (np.arange(geom.nx) + 0.5)[None, :] * geom.dx
        out = np.zeros((days.size, geom.ny, geom.nx), dtype=bool)
        for k in range(days.size):
            for tr in range(x0.shape[1]):
                u = xc - direction[tr] * yc / np.tan(th) - x0[k, tr]
                u = (u + period / 2) % period - period / 2
                out[k] |= np.abs(u) * np.sin(th) <= half
        return out

    def pattern_sampler(self, like: xr.Dataset) -> Any:
        """``mask_fn(n, rng) -> bool [n, ny, nx]``: fresh patterns (random day and orbit phase) on ``like``'s grid."""
        geom = geometry(like, None, self.periodic)
        if self._legacy(geom):
            dy, dx = grid.yx_spacing(like)
            return lambda n, rng: self.sample_mask(n, rng, ny=geom.ny, nx=geom.nx, dy=dy, dx=dx)

        def sample(n: int, rng: np.random.Generator) -> np.ndarray:
            days = rng.integers(0, self.repeat_days, size=n)
            return self.general_masks(geom, days, rng.random(n))

        return sample

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any], var: str) -> "AlongTrackAltimetry":
        """Rebuild the operator from the attributes it wrote into an observation file."""
        kw: dict[str, Any] = {}
        for key, attr, typ in (("n_satellites", "n_satellites", int), ("passes_per_day", "passes_per_day", int),
                               ("repeat_days", "repeat_days", int), ("angle_deg", "track_angle_deg", float),
                               ("shift_steps", "shift_steps", int), ("track_spacing_km", "track_spacing_km", float),
                               ("track_width_km", "track_width_km", float)):
            if attr in attrs:
                kw[key] = typ(attrs[attr])
        if "periodic_x" in attrs:
            kw["periodic"] = bool(int(attrs["periodic_x"]))
        return cls(var=var, **kw)

    def _general_attrs(self, geom: Geometry) -> dict[str, Any]:
        period, half = self.track_layout(geom)
        return {"track_spacing_km": period / int(np.ceil(self.n_satellites * self.passes_per_day / 2)),
                "track_width_km": 2 * half, "periodic_x": int(geom.periodic[1])}

    def _attrs(self, sigma: float) -> dict[str, Any]:
        return {"n_satellites": self.n_satellites, "passes_per_day": self.passes_per_day,
                "repeat_days": self.repeat_days, "track_angle_deg": self.angle_deg, "shift_steps": self.shift_steps,
                "orbit_phase": self.phase, "obs_error_std": sigma}


def _gridded_obs_dataset(ds: xr.Dataset, var: str, obs: np.ndarray, sigma: float, attrs: dict, operator: str,
                         extra: dict[str, Any]) -> xr.Dataset:
    a = {k: v for k, v in attrs.items() if k in ("units", "long_name", "standard_name")}
    out = xr.Dataset(
        {
            var: (("time", *fields.spatial_dims(ds)), obs.astype(np.float32), a),
            f"{var}_error": ((), np.float32(sigma), {"units": attrs.get("units", "1"),
                                                      "long_name": f"observation error standard deviation of {var}"}),
        },
        coords={"time": ds["time"], **_grid_coords(ds)},
    )
    out.attrs.update({"operator": operator, "observed_variable": var, **extra})
    return out


# ---------------------------------------------------------------------- gappy gridded fields


@dataclass
class GappyField:
    """The full grid minus cloud-like gaps: a smooth periodic random field thresholded at a random cover.

    Cloud cover per time is uniform in ``cloud_fraction`` (a (min, max) range or one number) of the ocean
    cells; clouds have correlation length ``length_km`` (Gaussian spectral filter, in km on any grid:
    see :class:`Geometry`). ``var``/``layer`` pick the observed field; land is never observed.
    """

    var: str = "ssh"
    layer: int | None = None
    cloud_fraction: tuple[float, float] | float = (0.3, 0.7)
    length_km: float = 100.0
    sigma: float | None = None
    sigma_fraction: float = 0.1
    periodic: bool | None = None

    name = "gappy_gridded"

    def sample_mask(self, n: int, rng: np.random.Generator, ny: int = 64, nx: int = 64, dy: float = 15.625,
                    dx: float = 15.625, periodic: tuple[bool, bool] = (True, True),
                    ocean: np.ndarray | None = None) -> np.ndarray:
        """``n`` boolean masks [n, ny, nx], True = clear sky (observed).

        A non-periodic axis is padded by three cloud lengths before the FFT (no clouds wrapping round
        a regional domain); with ``ocean`` the cloud cover is the fraction of ocean cells covered.

        Parameters
        ----------
        n : number of masks
        rng : random generator
        ny, nx : grid size
        dy, dx : grid spacing (km)
        periodic : (y, x) periodicity of the grid
        ocean : boolean [ny, nx], False on land (None: no land)

        Returns
        -------
        numpy.ndarray
        """
        lo, hi = self._cover()
        pad = [0 if p else int(np.ceil(3 * self.length_km / d)) for p, d in zip(periodic, (dy, dx))]
        my, mx = ny + pad[0], nx + pad[1]
        ky = 2 * np.pi * np.fft.fftfreq(my, d=dy)
        kx = 2 * np.pi * np.fft.rfftfreq(mx, d=dx)
        k2 = ky[:, None] ** 2 + kx[None, :] ** 2
        filt = np.exp(-0.5 * k2 * self.length_km**2)
        noise = rng.standard_normal((n, my, mx))
        field = np.fft.irfft2(np.fft.rfft2(noise) * filt, s=(my, mx))[:, :ny, :nx]
        cover = rng.uniform(lo, hi, size=n)
        flat = field.reshape(n, -1) if ocean is None or ocean.all() else field[:, np.asarray(ocean, bool)]
        thr = np.array([np.quantile(f, c) for f, c in zip(flat, cover)])
        return field > thr[:, None, None]

    def _cover(self) -> tuple[float, float]:
        """``cloud_fraction`` as a (min, max) range; a single number is a fixed cover."""
        cf = np.atleast_1d(np.asarray(self.cloud_fraction, dtype=float))
        lo, hi = (float(cf[0]), float(cf[-1]))
        if not (0.0 <= lo <= hi < 1.0):
            raise DataValidationError(f"cloud_fraction = {self.cloud_fraction}; expected 0 <= min <= max < 1")
        return lo, hi

    def resolve_sigma(self, values: np.ndarray) -> float:
        """The error std: ``sigma``, else ``sigma_fraction`` x the std of ``values``.

        Parameters
        ----------
        values : the true fields (used only when ``sigma`` is None)

        Returns
        -------
        float: the observation error standard deviation
        """
        return float(self.sigma) if self.sigma is not None else _default_sigma(values, self.sigma_fraction)

    def draw(self, values: np.ndarray, rng: np.random.Generator, dy: float = 15.625, dx: float = 15.625) -> np.ndarray:
        """Fresh noisy cloud-masked observations of fields [n, ny, nx] (new gaps each): for training epochs.

        Parameters
        ----------
        values : true fields ``[n, ny, nx]``
        rng : random generator (patterns and noise)
        dy, dx : grid spacing (km)

        Returns
        -------
        numpy.ndarray: NaN where unobserved
        """
        values = np.asarray(values)
        n, ny, nx = values.shape
        return apply_mask(values, self.sample_mask(n, rng, ny, nx, dy, dx), self.resolve_sigma(values), rng)

    def observe(self, ds: xr.Dataset, rng: np.random.Generator) -> xr.Dataset:
        """Cloud-masked noisy observations of ``ds[var]`` (one ``layer`` if set) at every time.

        Parameters
        ----------
        ds : state Dataset on a (time, [layer,] y, x) grid
        rng : random generator (patterns and noise)

        Returns
        -------
        xarray.Dataset: gridded observations with ``<var>_error``
        """
        da = _field(ds, self.var, self.layer)
        values = np.asarray(da.values)
        geom = geometry(ds, values, self.periodic)
        sigma = self.resolve_sigma(values)
        if geom.legacy:
            ny, nx, dy, dx = _grid(ds)
            masks = self.sample_mask(values.shape[0], rng, ny, nx, dy, dx, ocean=geom.ocean)
        else:
            masks = self.sample_mask(values.shape[0], rng, geom.ny, geom.nx, geom.dy, geom.dx, geom.periodic, geom.ocean)
        obs = apply_mask(values, masks, sigma, rng)
        extra = {"cloud_fraction_range": list(self._cover()), "gap_length_km": self.length_km,
                 "obs_error_std": sigma}
        if self.layer is not None:
            extra["observed_layer_index"] = self.layer
        if self.layer is None:
            return _gridded_obs_dataset(ds, self.var, obs, sigma, da.attrs, self.name, extra)
        return _layer_obs_dataset(ds, self.var, obs, sigma, da.attrs, self.layer, self.name, extra)


def swath_masks(n: int, rng: np.random.Generator, ny: int, nx: int, dy: float, dx: float, width_km: Any = 60.0,
                gap_km: float = 20.0, spacing_km: float = 1e9) -> np.ndarray:
    """``bool [n, ny, nx]`` wide-swath patterns: two ``width_km`` swaths either side of a ``gap_km`` nadir gap.

    Passes ``spacing_km`` apart (default: one) at a random angle and offset; ``width_km`` one number or one per
    pattern. Cells at ``j * dy, i * dx`` km.
    """
    j, i = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    y, x = j * float(dy), i * float(dx)
    theta = rng.uniform(0.0, np.pi, n)
    lo = np.minimum(0.0, (nx - 1) * float(dx) * np.cos(theta))  # x cos(theta) < 0 past 90 degrees
    off = lo + rng.uniform(0, 1, n) * min(spacing_km, max(ny * dy, nx * dx))  # a pass somewhere across the grid
    d = x[None] * np.cos(theta)[:, None, None] + y[None] * np.sin(theta)[:, None, None] - off[:, None, None]
    r = np.mod(d, spacing_km)
    dist = np.minimum(r, spacing_km - r)
    w = np.broadcast_to(np.asarray(width_km, np.float64), (n,))[:, None, None]
    return (dist >= 0.5 * gap_km) & (dist < 0.5 * gap_km + w)


@dataclass
class WideSwath:
    """Wide-swath altimetry (SWOT-like): per time, one pass of two ``width_km`` swaths either side of a
    ``gap_km`` nadir gap, at a random angle and position, noise ``sigma`` (else ``sigma_fraction`` x std)."""

    var: str = "ssh"
    width_km: float = 60.0
    gap_km: float = 20.0
    sigma: float | None = None
    sigma_fraction: float = 0.1

    name = "wide_swath"

    def observe(self, ds: xr.Dataset, rng: np.random.Generator) -> xr.Dataset:
        """Swath observations of ``ds[var]`` at every time (gridded, NaN outside the swaths, ``<var>_error``)."""
        da = _field(ds, self.var, None)
        values = np.asarray(da.values)
        sigma = float(self.sigma) if self.sigma is not None else _default_sigma(values, self.sigma_fraction)
        dy, dx = grid.km_spacing(ds)
        masks = swath_masks(values.shape[0], rng, values.shape[-2], values.shape[-1], dy, dx, self.width_km, self.gap_km)
        masks &= np.isfinite(values)
        obs = apply_mask(values, masks, sigma, rng)
        extra = {"swath_width_km": self.width_km, "nadir_gap_km": self.gap_km, "obs_error_std": sigma}
        return _gridded_obs_dataset(ds, self.var, obs, sigma, da.attrs, self.name, extra)


def _layer_obs_dataset(ds, var, obs, sigma, attrs, layer, operator, extra):
    """Gridded obs of one level of a layered (or depth) variable: all levels stored, NaN but at ``layer``."""
    lev = next(d for d in LEVEL_DIMS if d in ds[var].dims)
    nl = ds.sizes[lev]
    full = np.full((obs.shape[0], nl) + obs.shape[1:], np.nan, dtype=np.float32)
    full[:, layer] = obs
    a = {k: v for k, v in attrs.items() if k in ("units", "long_name", "standard_name")}
    level = {lev: ds[lev]} if lev in ds.coords else {}
    out = xr.Dataset(
        {var: (("time", lev, *fields.spatial_dims(ds)), full, a),
         f"{var}_error": ((), np.float32(sigma), {"units": attrs.get("units", "1")})},
        coords={"time": ds["time"], **level, **_grid_coords(ds)},
    )
    out.attrs.update({"operator": operator, "observed_variable": var, **extra})
    return out


# ---------------------------------------------------------------------- in-situ points


@dataclass
class InSituPoints:
    """Argo-like profiles: ``n_profiles`` random grid cells per time, every layer observed there."""

    n_profiles: int = 20
    var: str = "psi"
    sigma: float | None = None
    sigma_fraction: float = 0.1

    name = "in_situ_points"

    def resolve_sigma(self, values: np.ndarray) -> float:
        """The error std: ``sigma``, else ``sigma_fraction`` x the std of ``values``.

        Parameters
        ----------
        values : the true fields (used only when ``sigma`` is None)

        Returns
        -------
        float: the observation error standard deviation
        """
        return float(self.sigma) if self.sigma is not None else _default_sigma(values, self.sigma_fraction)

    def observe(self, ds: xr.Dataset, rng: np.random.Generator) -> xr.Dataset:
        """Noisy point observations of ``ds[var]`` at random cells per time, every layer.

        Parameters
        ----------
        ds : state Dataset on a (time, [layer,] y, x) grid
        rng : random generator (patterns and noise)

        Returns
        -------
        xarray.Dataset: ``obs`` dim with time, grid indices (and lat/lon, y/x)
        """
        src = _states_label(ds)
        if self.var not in ds:
            raise DataValidationError(f"{src}: no variable '{self.var}'; expected it for in-situ points")
        da = ds[self.var]
        if "member" in da.dims:
            raise DataValidationError(f"{src}: variable '{self.var}' has a member dimension; observe one trajectory at a time")
        lev = next((d for d in LEVEL_DIMS if d in da.dims), None)
        sp = fields.spatial_dims(da, src)
        da = da.transpose("time", lev, *sp) if lev else da.transpose("time", *sp).expand_dims("layer", 1)
        values = np.asarray(da.values)
        nt, nl, ny, nx = values.shape
        sigma = self.resolve_sigma(values)
        geom = geometry(ds, values[:, 0], False)
        if geom.has_land:  # profiles only in ocean cells
            wet = np.flatnonzero(geom.ocean.ravel())
            cells = np.stack([wet[rng.choice(wet.size, size=min(self.n_profiles, wet.size), replace=False)] for _ in range(nt)])
        else:
            cells = np.stack([rng.choice(ny * nx, size=min(self.n_profiles, ny * nx), replace=False) for _ in range(nt)])
        ti = np.repeat(np.arange(nt), cells.shape[1] * nl)
        li = np.tile(np.repeat(np.arange(nl), 1), nt * cells.shape[1])
        ci = np.repeat(cells.ravel(), nl)
        iy, ix = ci // nx, ci % nx
        truth = values[ti, li, iy, ix]
        obs = truth + sigma * rng.standard_normal(truth.shape)
        keep = np.isfinite(obs)  # levels below the sea floor of a cell
        coords = self._coords(ds, geom, ti, iy, ix, li, lev)
        coords = {k: (v[0], np.asarray(v[1])[keep], *v[2:]) for k, v in coords.items()}
        a = {k: v for k, v in ds[self.var].attrs.items() if k in ("units", "long_name", "standard_name")}
        out = xr.Dataset(
            {self.var: ("obs", obs[keep].astype(np.float32), a),
             f"{self.var}_error": ("obs", np.full(int(keep.sum()), sigma, np.float32), {"units": a.get("units", "1")})},
            coords=coords,
        )
        out.attrs.update({"operator": self.name, "observed_variable": self.var, "n_profiles_per_time": self.n_profiles,
                          "obs_error_std": sigma, "layered": int(lev is not None)})
        return out

    @staticmethod
    def _coords(ds: xr.Dataset, geom: Geometry, ti, iy, ix, li, lev) -> dict[str, Any]:
        times = grid.times(ds)
        coords: dict[str, Any] = {
            "time": ("obs", times[ti]),
            "y_index": ("obs", iy.astype(np.int32)),
            "x_index": ("obs", ix.astype(np.int32)),
            "layer_index": ("obs", li.astype(np.int32)),
        }
        if geom.lat is not None:
            coords["lat"] = ("obs", geom.lat[iy, ix], {"units": "degrees_north"})
            coords["lon"] = ("obs", geom.lon[iy, ix], {"units": "degrees_east"})
        if geom.y is not None:
            coords["y"] = ("obs", np.asarray(ds["y"].values)[iy], dict(ds["y"].attrs))
            coords["x"] = ("obs", np.asarray(ds["x"].values)[ix], dict(ds["x"].attrs))
        if lev == "depth" and "depth" in ds.coords:
            coords["depth"] = ("obs", np.asarray(ds["depth"].values, float)[li], dict(ds["depth"].attrs))
        return coords


# ---------------------------------------------------------------------- L3-style points: along-track, profiles


@dataclass
class AlongTrackPoints(AlongTrackAltimetry):
    """L3-style along-track altimetry: points every ``along_track_km`` along the ground tracks, at arbitrary positions.

    The tracks are those of :class:`AlongTrackAltimetry` with the same settings (on the testbed box, the
    very tracks of its gridded observations); each pass starts at a random along-track offset, values are
    the state bilinearly interpolated at the point (the containing cell's value next to land; points on
    land are dropped; ``interpolation="nearest"``: the containing cell's value), plus noise. Times: the state time plus the pass's time of day (passes spread over
    +-3/8 of a time step), so the nearest state time is the one sampled. Output: the canonical point
    layout (dim ``obs``, coords ``time``, ``lat``, ``lon`` and ``y``/``x`` km on a km grid, ``<var>_error``).
    """

    along_track_km: float | None = None
    interpolation: str = "bilinear"

    name = "along_track_points"

    def _lines(self, geom: Geometry, day: int) -> list[tuple[int, float, float]]:
        """(track, x-intercept km, direction) of every track line of ``day`` crossing the domain."""
        period, _ = self.track_layout(geom)  # the testbed box: its width, as the gridded tracks
        x0 = self._offsets(np.array([day]), np.array([self.phase]))[0] * period
        cot = 1.0 / np.tan(np.radians(self.angle_deg))
        wx, wy = geom.nx * geom.dx, geom.ny * geom.dy
        lines = []
        for tr, x in enumerate(x0):
            d = 1.0 if tr % 2 == 0 else -1.0
            reach = d * cot * wy
            m_lo = int(np.floor((-x - max(0.0, reach)) / period))
            m_hi = int(np.ceil((wx - x - min(0.0, reach)) / period))
            lines += [(tr, x + m * period, d) for m in range(m_lo, m_hi + 1)]
        return lines

    def track_points(self, geom: Geometry, day: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """Fractional indices ``(j, i)`` and track number of the points of one day (inside the domain)."""
        step = float(self.along_track_km) if self.along_track_km is not None else 0.5 * min(geom.dx, geom.dy)
        if step <= 0:
            raise DataValidationError(f"along_track_km = {step}; expected a positive distance in km")
        th = np.radians(self.angle_deg)
        wx, wy = geom.nx * geom.dx, geom.ny * geom.dy
        js, is_, ks = [], [], []
        for tr, x, d in self._lines(geom, day):
            s = np.arange(rng.uniform(0.0, step), wy / np.sin(th), step)
            y = s * np.sin(th)
            xx = x + d * y / np.tan(th)
            ok = (xx >= 0) & (xx < wx)
            js.append(y[ok] / geom.dy - 0.5)
            is_.append(xx[ok] / geom.dx - 0.5)
            ks.append(np.full(int(ok.sum()), tr))
        return np.concatenate(js), np.concatenate(is_), np.concatenate(ks)

    def observe(self, ds: xr.Dataset, rng: np.random.Generator, days: Sequence[int] | None = None) -> xr.Dataset:
        """Noisy along-track point observations of ``ds[var]`` at every time of ``ds``.

        Parameters
        ----------
        ds : state Dataset with ``var`` on any canonical grid
        rng : random generator (offsets along track and noise)
        days : repeat-cycle day of each time (default: as :class:`AlongTrackAltimetry`)

        Returns
        -------
        xarray.Dataset: the canonical point layout
        """
        da = _field(ds, self.var, None)
        values = np.asarray(da.values, dtype=np.float64)
        geom = geometry(ds, values, self.periodic)
        sigma = self.resolve_sigma(values)
        nt = values.shape[0]
        if days is None:
            days = np.arange(nt) if self._legacy(geom) else self.day_index(ds["time"].values)
        ntracks = self.n_satellites * self.passes_per_day
        parts = [(np.full(j.size, t), j, i, k) for t in range(nt) for j, i, k in [self.track_points(geom, int(days[t]), rng)]]
        t, j, i, k = (np.concatenate(p) for p in zip(*parts))
        truth = _sample(values, t, j, i, geom.periodic, self.interpolation)
        ok = np.isfinite(truth)
        t, j, i, k, truth = t[ok], j[ok], i[ok], k[ok], truth[ok]
        obs = truth + sigma * rng.standard_normal(truth.shape)
        offset = ((k + 0.5) / ntracks - 0.5) * step_days(ds["time"].values)
        coords = {"time": ("obs", add_days(ds["time"].values[t], offset)), **geom.point_coords(j, i),
                  "track": ("obs", k.astype(np.int32), {"long_name": "index of the ground track of the day"})}
        extra = {**self._attrs(sigma), **self._general_attrs(geom),
                 "along_track_km": float(self.along_track_km or 0.5 * min(geom.dx, geom.dy)),
                 "interpolation": self.interpolation}
        return _points_dataset(self.var, obs, sigma, da.attrs, coords, self.name, extra)


@dataclass
class Profiles:
    """Argo-like profiles at random positions: ``per_day`` a day, every level of the variable(s) observed there.

    Positions are uniform within random ocean cells (not cell centres); values bilinear per level (the
    cell's own value next to land; levels below the sea floor dropped). A variable without a level dim
    gives plain points. Output: the canonical point layout with ``depth`` (state depth coordinate) or
    ``layer_index``, and a ``profile`` number.
    """

    variables: tuple[str, ...] = ("psi",)
    per_day: float = 20.0
    sigma: float | None = None
    sigma_fraction: float = 0.1
    periodic: bool | None = None

    name = "profiles"

    def observe(self, ds: xr.Dataset, rng: np.random.Generator) -> xr.Dataset:
        """Noisy profiles of every variable of ``variables`` (same positions) at every time of ``ds``.

        Parameters
        ----------
        ds : state Dataset on any canonical grid, with or without a ``layer``/``depth`` dim
        rng : random generator (positions and noise)

        Returns
        -------
        xarray.Dataset: the canonical point layout
        """
        first = _field_levels(ds, self.variables[0])
        geom = geometry(ds, first.values[:, 0], self.periodic)
        nt = first.sizes["time"]
        n = max(1, int(round(self.per_day * step_days(ds["time"].values))))
        wet = np.flatnonzero(geom.ocean.ravel()) if geom.ocean is not None else np.arange(geom.ny * geom.nx)
        cells = rng.choice(wet, size=(nt, n))
        j = (cells // geom.nx).ravel() + rng.uniform(-0.5, 0.5, cells.size)
        i = (cells % geom.nx).ravel() + rng.uniform(-0.5, 0.5, cells.size)
        if not geom.periodic[0]:
            j = np.clip(j, -0.5, geom.ny - 0.5 - 1e-9)
        t = np.repeat(np.arange(nt), n)
        arrays = [self._values(ds, var, geom, t, j, i, rng) for var in self.variables]
        lev, nl = arrays[0][0], arrays[0][1].shape[1]
        if any(a[1].shape[1] != nl for a in arrays):
            raise DataValidationError(f"variables {list(self.variables)} have different numbers of levels; expected the same for one profile set")
        finite = np.any([np.isfinite(a[1]) for a in arrays], axis=0).ravel()  # [profile * level]
        p = np.repeat(np.arange(t.size), nl)[finite]
        li = np.tile(np.arange(nl), t.size)[finite]
        coords = {"time": ("obs", ds["time"].values[t[p]]), **geom.point_coords(j[p], i[p]),
                  "profile": ("obs", p.astype(np.int32), {"long_name": "profile number"})}
        if lev != "_level":
            coords["layer_index" if lev == "layer" else "level_index"] = ("obs", li.astype(np.int32),
                                                                          {"long_name": f"index of the {lev}"})
            if lev in ds.coords:
                coords[lev] = ("obs", np.asarray(ds[lev].values)[li], dict(ds[lev].attrs))
        extra = {"profiles_per_day": self.per_day, "layered": int(lev != "_level")}
        parts = [_points_dataset(var, a[1].ravel()[finite], a[2], a[3], coords, self.name, extra)
                 for var, a in zip(self.variables, arrays)]
        out = xr.merge(parts, combine_attrs="drop_conflicts")
        out.attrs["observed_variable"] = " ".join(self.variables)
        return out

    def _values(self, ds, var, geom, t, j, i, rng) -> tuple[str, np.ndarray, float, dict]:
        """(level dim, noisy values [profile, level] NaN below the floor, sigma, attrs) of one variable."""
        da = _field_levels(ds, var)
        values = np.asarray(da.values, dtype=np.float64)  # [nt, nl, ny, nx]
        sigma = float(self.sigma) if self.sigma is not None else _default_sigma(values, self.sigma_fraction)
        truth = np.stack([_sample(values[:, k], t, j, i, geom.periodic) for k in range(values.shape[1])], axis=1)
        return str(da.dims[1]), truth + sigma * rng.standard_normal(truth.shape), sigma, dict(da.attrs)


def _field_levels(ds: xr.Dataset, var: str) -> xr.DataArray:
    """``ds[var]`` as ``(time, level, row, col)``; a variable without levels gets a size-1 ``_level``."""
    src = _states_label(ds)
    if var not in ds:
        raise DataValidationError(f"{src}: no variable '{var}'; expected one of {sorted(map(str, ds.data_vars))}")
    da = ds[var]
    if "member" in da.dims:
        raise DataValidationError(f"{src}: variable '{var}' has a member dimension; observe one trajectory at a time")
    lev = next((d for d in LEVEL_DIMS if d in da.dims), None)
    sp = fields.spatial_dims(da, src)
    return da.transpose("time", lev, *sp) if lev else da.transpose("time", *sp).expand_dims("_level", 1)


# ---------------------------------------------------------------------- the front door: any operator by name

#: Operator names of ``oceanda observe`` -> the options each takes (names of the API / CLI, in physical units).
OPERATORS: dict[str, tuple[str, ...]] = {
    "altimetry": ("track_spacing_km", "track_width_km", "repeat_days", "n_satellites", "passes_per_day", "angle_deg",
                  "phase", "periodic"),
    "gappy": ("cloud_fraction", "cloud_size_km", "layer", "periodic"),
    "points": ("track_spacing_km", "track_width_km", "along_track_km", "repeat_days", "n_satellites", "passes_per_day",
               "angle_deg", "phase", "interpolation", "periodic"),
    "profiles": ("profiles_per_day", "periodic"),
}
_RENAMED = {"cloud_size_km": "length_km", "profiles_per_day": "per_day"}


def _default_variables(states: xr.Dataset, operator: str) -> list[str]:
    """The observed variable when none is named: SSH for the altimeters, levelled fields for profiles, else the only one."""
    names = [str(v) for v in states.data_vars if not str(v).endswith("_error")]
    if operator in ("altimetry", "points"):
        ssh = [v for v in names if v in ("ssh", "zos", "adt", "sla") or "sea_surface_height" in str(states[v].attrs.get("standard_name", ""))]
        if ssh:
            return ssh[:1]
    if operator == "profiles":
        levelled = [v for v in names if any(d in states[v].dims for d in LEVEL_DIMS)]
        if levelled:
            return levelled
    if operator == "gappy":
        surface = [v for v in names if not any(d in states[v].dims for d in LEVEL_DIMS)]
        if len(surface) == 1:
            return surface
    if len(names) == 1:
        return names
    raise DataValidationError(f"{_states_label(states)}: states have variables {names}; expected --variables to name "
                              f"the one the '{operator}' operator observes")


def make_operator(states: xr.Dataset, operator: str, sigma: float | None = None, sigma_fraction: float | None = None,
                  variables: Sequence[str] | None = None, **options: Any) -> Any:
    """The observation operator ``operator`` (see :data:`OPERATORS`) for ``states``, options in physical units.

    Parameters
    ----------
    states : the states to observe (to pick the default variable)
    operator : ``altimetry``, ``gappy``, ``points`` or ``profiles``
    sigma, sigma_fraction : absolute noise std, or fraction of the field's std (default 0.1)
    variables : observed variable(s) (one, except for profiles)
    **options : the operator's options (:data:`OPERATORS`)

    Returns
    -------
    an operator with ``observe(states, rng)``
    """
    from oceanda.errors import ConfigurationError

    if operator not in OPERATORS:
        raise ConfigurationError(f"--operator {operator!r}; expected one of {list(OPERATORS)}")
    unknown = sorted(k for k, v in options.items() if v is not None and k not in OPERATORS[operator])
    if unknown:
        raise ConfigurationError(f"option(s) {unknown} do not apply to --operator {operator}; expected some of {list(OPERATORS[operator])}")
    if sigma is not None and sigma_fraction is not None:
        raise ConfigurationError("--sigma and --sigma-fraction both given; expected one of them")
    if sigma is not None and not sigma > 0:
        raise ConfigurationError(f"--sigma {sigma}; expected a positive standard deviation")
    names = list(variables) if variables else _default_variables(states, operator)
    missing = [v for v in names if v not in states.data_vars]
    if missing:
        raise DataValidationError(f"{_states_label(states)}: states have no variable(s) {missing}; expected some of "
                                  f"{sorted(map(str, states.data_vars))}")
    if operator != "profiles" and len(names) != 1:
        raise ConfigurationError(f"--variables {names}: the '{operator}' operator observes one variable; expected one name")
    kw = {_RENAMED.get(k, k): v for k, v in options.items() if v is not None}
    kw["sigma"], kw["sigma_fraction"] = sigma, 0.1 if sigma_fraction is None else float(sigma_fraction)
    if operator == "profiles":
        return Profiles(variables=tuple(names), **kw)
    cls = {"altimetry": AlongTrackAltimetry, "gappy": GappyField, "points": AlongTrackPoints}[operator]
    return cls(var=names[0], **kw)


#: Most satellites / passes a day of one satellite: beyond, a typo (a real constellation: a few x 28 passes).
MAX_TRACKS = 100
#: Longest distance option (track spacing and width, along-track step, cloud size): 2.5 x the equator.
MAX_KM = 1e5
#: Largest noise: absolute (well inside float32, whatever the variable's units) and relative to the field's std.
MAX_SIGMA, MAX_SIGMA_FRACTION = 1e30, 100.0
#: Longest orbit repeat cycle in days (real altimeters: 10 .. 35).
MAX_REPEAT_DAYS = 10000


def check_operator(op: Any, states: xr.Dataset) -> None:
    """Refuse an operator option out of range, or observations that cannot fit in memory, before observing.

    Parameters
    ----------
    op : an operator of :func:`make_operator`
    states : the states it will observe
    """
    from oceanda.errors import ConfigurationError
    from oceanda.settings import check_number

    get = lambda name: getattr(op, name, None)  # noqa: E731 - the options an operator has
    check_number("sigma", get("sigma"), lo=0, lo_open=True, hi=MAX_SIGMA, optional=True)
    check_number("sigma_fraction", get("sigma_fraction"), lo=0, lo_open=True, hi=MAX_SIGMA_FRACTION, optional=True)
    for name in ("track_spacing_km", "track_width_km", "along_track_km"):
        check_number(name, get(name), lo=0, lo_open=True, hi=MAX_KM, optional=True)
    for name in ("n_satellites", "passes_per_day"):
        check_number(name, get(name), lo=1, hi=MAX_TRACKS, integer=True, optional=True)
    check_number("repeat_days", get("repeat_days"), lo=1, hi=MAX_REPEAT_DAYS, integer=True, optional=True)
    check_number("angle_deg", get("angle_deg"), lo=-360, hi=360, optional=True)
    if get("angle_deg") is not None and abs(np.sin(np.radians(op.angle_deg))) < 1e-2:
        raise ConfigurationError(f"angle_deg={op.angle_deg}; expected a track angle across the x axis "
                                 "(not a multiple of 180 degrees), e.g. 60")
    check_number("cloud_size_km", get("length_km"), lo=0, lo_open=True, hi=MAX_KM, optional=True)
    cover = np.atleast_1d(np.asarray(get("cloud_fraction") if get("cloud_fraction") is not None else [], dtype=object))
    for f in cover:
        check_number("cloud_fraction", f, lo=0, hi=1, hi_open=True)
    if cover.size > 2 or (cover.size == 2 and not cover[0] <= cover[1]):
        raise ConfigurationError(f"cloud_fraction={tuple(cover)}; expected one cover, or MIN MAX with MIN <= MAX")
    check_number("profiles_per_day", get("per_day"), lo=0, lo_open=True, optional=True)
    check_number("layer", get("layer"), lo=0, integer=True, optional=True)
    if get("layer") is not None:
        da = states[op.var] if op.var in states else None
        dim = next((d for d in LEVEL_DIMS if da is not None and d in da.dims), None)
        if dim is None and da is not None:
            raise ConfigurationError(f"layer={op.layer}: variable '{op.var}' has no level dimension; expected no "
                                     "layer (or --variables naming a levelled variable)")
        if dim is not None and op.layer >= da.sizes[dim]:
            raise ConfigurationError(f"layer={op.layer}; expected 0 .. {da.sizes[dim] - 1} (variable '{op.var}' has "
                                      f"{da.sizes[dim]} levels along '{dim}')")
    _check_memory(op, states)


def _check_memory(op: Any, states: xr.Dataset) -> None:
    """The observations' size from the options, against free memory (an along-track step of 1e-7 km is refused)."""
    from oceanda import io

    geom = geometry(states, None, getattr(op, "periodic", None))
    nt = int(states.sizes.get("time", 1))
    wx, wy = geom.nx * geom.dx, geom.ny * geom.dy
    if isinstance(op, AlongTrackPoints):
        th = np.radians(op.angle_deg)
        period, _ = op.track_layout(geom)
        lines = op.n_satellites * op.passes_per_day * ((wx + wy * abs(1 / np.tan(th))) / period + 2)
        step = float(op.along_track_km) if op.along_track_km is not None else 0.5 * min(geom.dx, geom.dy)
        io.check_allocation(80.0 * nt * lines * (wy / abs(np.sin(th)) / step + 1), f"along_track_km={op.along_track_km}")
    elif isinstance(op, Profiles):
        n = max(1.0, op.per_day * step_days(states["time"].values)) if nt > 1 else max(1.0, op.per_day)
        first = states[op.variables[0]] if op.variables[0] in states else None
        levels = 1 if first is None else max(int(np.prod(first.shape[1:])) // (geom.ny * geom.nx), 1)
        io.check_allocation(80.0 * nt * n * levels * len(op.variables), f"profiles_per_day={op.per_day}")
    elif isinstance(op, GappyField):
        pad = [0 if p else 3 * op.length_km / d for p, d in zip(geom.periodic, (geom.dy, geom.dx))]
        io.check_allocation(32.0 * nt * (geom.ny + pad[0]) * (geom.nx + pad[1]), f"cloud_size_km={op.length_km}")


def observe_states(states: xr.Dataset, operator: str, *, sigma: float | None = None, sigma_fraction: float | None = None,
                   seed: int = 0, variables: Sequence[str] | None = None, **options: Any) -> xr.Dataset:
    """Synthetic observations of ``states`` by the named operator (what ``oceanda observe`` and ``oceanda.observe_states`` run).

    Parameters
    ----------
    states : gridded states on any canonical grid (one trajectory: no ``member`` dim)
    operator, sigma, sigma_fraction, variables, **options : as :func:`make_operator`
    seed : seed of the one random generator

    Returns
    -------
    xarray.Dataset: gridded observations (altimetry, gappy) or points along ``obs`` (points, profiles)
    """
    op = make_operator(states, operator, sigma, sigma_fraction, variables, **options)
    check_operator(op, states)
    names = list(op.variables) if operator == "profiles" else [op.var]
    ds = states[names].load()
    out = op.observe(ds, np.random.default_rng(seed))
    out.attrs.update({"title": f"synthetic '{operator}' observations of {', '.join(names)} (oceanda observe)",
                      "observe_operator": operator, "observe_seed": int(seed)})
    return out


# ---------------------------------------------------------------------- drifters (nonlinear)


def _bilinear_periodic(f: np.ndarray, x: np.ndarray, y: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """Interpolate cell-centred periodic field(s) f [..., ny, nx] at positions (x, y) (same units as dx, dy).

    ``f`` may carry a leading batch axis matching x's leading axis (per-flow fields).
    """
    ny, nx = f.shape[-2:]
    gx = x / dx - 0.5
    gy = y / dy - 0.5
    i0 = np.floor(gx).astype(np.int64)
    j0 = np.floor(gy).astype(np.int64)
    tx, ty = gx - i0, gy - j0
    i0 %= nx
    j0 %= ny
    i1, j1 = (i0 + 1) % nx, (j0 + 1) % ny
    if f.ndim == 2:
        g = lambda j, i: f[j, i]
    else:
        b = np.arange(f.shape[0]).reshape((-1,) + (1,) * (x.ndim - 1))
        g = lambda j, i: f[b, j, i]
    return (g(j0, i0) * (1 - tx) * (1 - ty) + g(j0, i1) * tx * (1 - ty) + g(j1, i0) * (1 - tx) * ty + g(j1, i1) * tx * ty)


def advect_gridded(u: np.ndarray, v: np.ndarray, t: np.ndarray, x0: np.ndarray, y0: np.ndarray, L: float, W: float,
                   substeps: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """RK4 drifters in gridded periodic velocities u, v [time, ny, nx] (linear in time between saves).

    Positions and box sizes in metres, ``t`` in seconds. Returns unwrapped (x, y) [time, n]; wrap
    with ``% L``/``% W`` for grid positions.

    Parameters
    ----------
    u, v : velocities [m s-1] ``[time, ny, nx]``
    t : save times [s] ``[time]``
    x0, y0 : start positions [m] ``[n]``
    L, W : box size [m]
    substeps : RK4 steps between saves

    Returns
    -------
    tuple of numpy.ndarray: (x, y)
    """
    u, v = np.asarray(u, float), np.asarray(v, float)
    nt, ny, nx = u.shape
    dx, dy = L / nx, W / ny
    x, y = np.asarray(x0, float).copy(), np.asarray(y0, float).copy()
    xs, ys = [x.copy()], [y.copy()]

    def vel(k, a, xx, yy):
        uu = (1 - a) * _bilinear_periodic(u[k], xx % L, yy % W, dx, dy) + a * _bilinear_periodic(u[k + 1], xx % L, yy % W, dx, dy)
        vv = (1 - a) * _bilinear_periodic(v[k], xx % L, yy % W, dx, dy) + a * _bilinear_periodic(v[k + 1], xx % L, yy % W, dx, dy)
        return uu, vv

    for k in range(nt - 1):
        h = (t[k + 1] - t[k]) / substeps
        for s in range(substeps):
            a0, a1 = s / substeps, (s + 0.5) / substeps
            a2 = (s + 1) / substeps
            k1 = vel(k, a0, x, y)
            k2 = vel(k, a1, x + 0.5 * h * k1[0], y + 0.5 * h * k1[1])
            k3 = vel(k, a1, x + 0.5 * h * k2[0], y + 0.5 * h * k2[1])
            k4 = vel(k, a2, x + h * k3[0], y + h * k3[1])
            x = x + h / 6 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0])
            y = y + h / 6 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])
        xs.append(x.copy())
        ys.append(y.copy())
    return np.stack(xs), np.stack(ys)


@dataclass
class QGDrifters:
    """Surface drifters in the QG upper-layer velocity (mean flow included), positions observed with noise.

    Nonlinear: ``simulate`` integrates one trajectory (one member) at a time.
    """

    n_drifters: int = 10
    layer: int = 0
    position_error_km: float = 1.0
    substeps: int = 12

    name = "drifters"

    def simulate(self, model: Any, q_traj: np.ndarray, days: np.ndarray, x0_km: np.ndarray, y0_km: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Unwrapped drifter positions (x_km, y_km) [time, n] for one PV trajectory [time, 2, ny, nx].

        Parameters
        ----------
        model : the :class:`~oceanda.testbeds.qg.QGModel`
        q_traj : PV ``[time, 2, ny, nx]``
        days : model day of each state
        x0_km, y0_km : start positions [km] ``[n]``

        Returns
        -------
        tuple of numpy.ndarray: (x_km, y_km)
        """
        q_traj = np.asarray(q_traj)
        psi = np.asarray(model.psi_from_q(q_traj))
        u, v = model.velocity(psi, include_mean=True)
        t = np.asarray(days, float) * 86400.0
        x, y = advect_gridded(np.asarray(u)[:, self.layer], np.asarray(v)[:, self.layer], t,
                              np.asarray(x0_km) * 1e3, np.asarray(y0_km) * 1e3, model.L, model.W, self.substeps)
        return x / 1e3, y / 1e3

    def observe(self, model: Any, q_traj: np.ndarray, days: np.ndarray, rng: np.random.Generator,
                time_coord: Any = None) -> xr.Dataset:
        """Drifter position observations (obs dim: time, drifter, x, y, lat, lon, grid indices).

        Parameters
        ----------
        model : the :class:`~oceanda.testbeds.qg.QGModel`
        q_traj : PV ``[time, 2, ny, nx]``
        days : model day of each state
        rng : random generator (start positions and noise)
        time_coord : time values written (default ``days``)

        Returns
        -------
        xarray.Dataset
        """
        x0 = rng.uniform(0, model.L / 1e3, self.n_drifters)
        y0 = rng.uniform(0, model.W / 1e3, self.n_drifters)
        xk, yk = self.simulate(model, q_traj, days, x0, y0)
        nt, n = xk.shape
        xo = (xk + self.position_error_km * rng.standard_normal(xk.shape)) % (model.L / 1e3)
        yo = (yk + self.position_error_km * rng.standard_normal(yk.shape)) % (model.W / 1e3)
        lat0, lon0 = model.lat0, model.lon0
        from oceanda.testbeds.qg import KM_PER_DEG_LAT

        lat = lat0 + (yo - model.W / 2e3) / KM_PER_DEG_LAT
        lon = lon0 + (xo - model.L / 2e3) / (KM_PER_DEG_LAT * np.cos(np.radians(lat)))
        times = np.asarray(time_coord) if time_coord is not None else np.asarray(days)
        ti = np.repeat(np.arange(nt), n)
        out = xr.Dataset(
            {
                "x_position": ("obs", xo.ravel().astype(np.float32), {"units": "km", "long_name": "drifter x position"}),
                "y_position": ("obs", yo.ravel().astype(np.float32), {"units": "km", "long_name": "drifter y position"}),
                "x_position_error": ((), np.float32(self.position_error_km), {"units": "km"}),
                "y_position_error": ((), np.float32(self.position_error_km), {"units": "km"}),
            },
            coords={
                "time": ("obs", times[ti]),
                "drifter": ("obs", np.tile(np.arange(n), nt).astype(np.int32)),
                "lat": ("obs", lat.ravel(), {"units": "degrees_north"}),
                "lon": ("obs", lon.ravel(), {"units": "degrees_east"}),
                "y_index": ("obs", (np.floor(yo / (model.dy / 1e3)).astype(np.int32) % model.ny).ravel()),
                "x_index": ("obs", (np.floor(xo / (model.dx / 1e3)).astype(np.int32) % model.nx).ravel()),
            },
        )
        out.attrs.update({"operator": self.name, "n_drifters": n, "advected_in_layer": self.layer + 1,
                          "position_error_km": self.position_error_km})
        return out


@dataclass
class TorusDrifters:
    """Drifter positions in the torus flow (the paper's Lagrangian observations), with optional noise.

    Nonlinear in the 98 coefficients; ``observe`` integrates every flow (vectorised) and returns an
    ``obs`` Dataset per (flow, kept position): sample, time, drifter, x, y.
    """

    x0: tuple[float, ...] = (0.75,)
    y0: tuple[float, ...] = (0.75,)
    dt: float = 1e-5
    T: float = 0.1
    keep_every: int = 10
    position_error: float = 0.0

    name = "drifters"

    def positions(self, flow: Any, coeffs: np.ndarray, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        """([F, n_keep, n_drifters, 2] wrapped positions (+ noise), times).

        Parameters
        ----------
        flow : the :class:`~oceanda.testbeds.torus.TorusFlow`
        coeffs : flow coefficients ``[F, 98]``
        rng : noise generator (needed if noisy)

        Returns
        -------
        tuple of numpy.ndarray: (positions, times)
        """
        pos, t = flow.drifters(coeffs, x0=self.x0, y0=self.y0, dt=self.dt, T=self.T, keep_every=self.keep_every)
        if self.position_error > 0:
            if rng is None:
                raise DataValidationError("TorusDrifters: position_error > 0 needs a numpy Generator for the noise")
            pos = np.mod(pos + self.position_error * rng.standard_normal(pos.shape), 1.0)
        return pos, t

    def observe(self, flow: Any, coeffs: np.ndarray, rng: np.random.Generator | None = None) -> xr.Dataset:
        """Drifter position observations of every flow as an ``obs`` Dataset.

        Parameters
        ----------
        flow : the :class:`~oceanda.testbeds.torus.TorusFlow`
        coeffs : flow coefficients ``[F, 98]`` (or ``[98]``)
        rng : noise generator (needed if noisy)

        Returns
        -------
        xarray.Dataset
        """
        pos, t = self.positions(flow, np.atleast_2d(coeffs), rng)
        F, nk, nd, _ = pos.shape
        s, k, d = np.meshgrid(np.arange(F), np.arange(nk), np.arange(nd), indexing="ij")
        out = xr.Dataset(
            {"x_position": ("obs", pos[..., 0].ravel(), {"units": "1"}),
             "y_position": ("obs", pos[..., 1].ravel(), {"units": "1"}),
             "x_position_error": ((), max(self.position_error, 0.0), {"units": "1"}),
             "y_position_error": ((), max(self.position_error, 0.0), {"units": "1"})},
            coords={"sample_index": ("obs", s.ravel().astype(np.int32)), "time": ("obs", t[k.ravel()]),
                    "drifter": ("obs", d.ravel().astype(np.int32))},
        )
        out.attrs.update({"operator": self.name, "dt": self.dt, "T": self.T, "keep_every": self.keep_every})
        return out
