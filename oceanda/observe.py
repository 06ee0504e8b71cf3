"""Observation operators: state Dataset -> observation Dataset (with errors), and their fresh patterns.

Along-track altimetry, gappy (cloud-masked) gridded fields, in-situ points (Argo-like) and drifters.
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

from oceanda import grid
from oceanda.errors import DataValidationError

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


def _field(ds: xr.Dataset, var: str, layer: int | None) -> xr.DataArray:
    if var not in ds:
        raise DataValidationError(f"state dataset has no variable '{var}'; expected one of {sorted(map(str, ds.data_vars))}")
    da = ds[var]
    if "layer" in da.dims:
        if layer is None:
            raise DataValidationError(f"variable '{var}' has a layer dimension; expected a layer index for this operator")
        da = da.isel(layer=layer)
    if "member" in da.dims:
        raise DataValidationError(f"variable '{var}' has a member dimension; observe one trajectory (select a member) at a time")
    return da.transpose("time", "y", "x")


def _default_sigma(values: np.ndarray, fraction: float) -> float:
    sd = float(np.nanstd(values))
    return fraction * sd if sd > 0 else fraction


# ---------------------------------------------------------------------- along-track altimetry


@dataclass
class AlongTrackAltimetry:
    """SSH on the grid cells crossed by straight satellite ground tracks on the (periodic) box.

    Each satellite makes ``passes_per_day`` passes a day (alternately ascending and descending, at
    ``angle_deg`` to the x axis); the day-d tracks are shifted by ``shift_steps / repeat_days`` of the
    box width per day, so the pattern repeats every ``repeat_days``. Defaults: 2 satellites x 2 passes
    = 4 tracks a day, 10-day repeat, noise 10 % of the SSH standard deviation.
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
        th = np.radians(self.angle_deg)
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
        ny, nx, dy, dx = _grid(ds)
        nt = da.sizes["time"]
        days = np.arange(nt) if days is None else np.asarray(days)
        values = np.asarray(da.values)
        sigma = self.resolve_sigma(values)
        masks = self._masks(ny, nx, days, np.full(days.shape, self.phase), dy, dx)
        obs = apply_mask(values, masks, sigma, rng)
        return _gridded_obs_dataset(ds, self.var, obs, sigma, da.attrs, self.name, self._attrs(sigma))

    def _attrs(self, sigma: float) -> dict[str, Any]:
        return {"n_satellites": self.n_satellites, "passes_per_day": self.passes_per_day,
                "repeat_days": self.repeat_days, "track_angle_deg": self.angle_deg, "shift_steps": self.shift_steps,
                "orbit_phase": self.phase, "obs_error_std": sigma}


def _gridded_obs_dataset(ds: xr.Dataset, var: str, obs: np.ndarray, sigma: float, attrs: dict, operator: str,
                         extra: dict[str, Any]) -> xr.Dataset:
    a = {k: v for k, v in attrs.items() if k in ("units", "long_name", "standard_name")}
    out = xr.Dataset(
        {
            var: (("time", "y", "x"), obs.astype(np.float32), a),
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

    Cloud cover per time is uniform in ``cloud_fraction``; gaps have correlation length
    ``length_km`` (Gaussian spectral filter). ``var``/``layer`` pick the observed field.
    """

    var: str = "ssh"
    layer: int | None = None
    cloud_fraction: tuple[float, float] = (0.3, 0.7)
    length_km: float = 100.0
    sigma: float | None = None
    sigma_fraction: float = 0.1

    name = "gappy_gridded"

    def sample_mask(self, n: int, rng: np.random.Generator, ny: int = 64, nx: int = 64, dy: float = 15.625,
                    dx: float = 15.625) -> np.ndarray:
        """``n`` boolean masks [n, ny, nx], True = clear sky (observed).

        Parameters
        ----------
        n : number of masks
        rng : random generator
        ny, nx : grid size
        dy, dx : grid spacing (km)

        Returns
        -------
        numpy.ndarray
        """
        ky = 2 * np.pi * np.fft.fftfreq(ny, d=dy)
        kx = 2 * np.pi * np.fft.rfftfreq(nx, d=dx)
        k2 = ky[:, None] ** 2 + kx[None, :] ** 2
        filt = np.exp(-0.5 * k2 * self.length_km**2)
        noise = rng.standard_normal((n, ny, nx))
        field = np.fft.irfft2(np.fft.rfft2(noise) * filt, s=(ny, nx))
        cover = rng.uniform(*self.cloud_fraction, size=n)
        thr = np.array([np.quantile(f, c) for f, c in zip(field.reshape(n, -1), cover)])
        return field > thr[:, None, None]

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
        ny, nx, dy, dx = _grid(ds)
        values = np.asarray(da.values)
        sigma = self.resolve_sigma(values)
        masks = self.sample_mask(values.shape[0], rng, ny, nx, dy, dx)
        obs = apply_mask(values, masks, sigma, rng)
        extra = {"cloud_fraction_range": list(self.cloud_fraction), "gap_length_km": self.length_km,
                 "obs_error_std": sigma}
        if self.layer is not None:
            extra["observed_layer_index"] = self.layer
        if self.layer is None:
            return _gridded_obs_dataset(ds, self.var, obs, sigma, da.attrs, self.name, extra)
        return _layer_obs_dataset(ds, self.var, obs, sigma, da.attrs, self.layer, self.name, extra)


def _layer_obs_dataset(ds, var, obs, sigma, attrs, layer, operator, extra):
    """Gridded obs of one layer of a layered variable: stored with a size-1 ``layer`` dim, NaN elsewhere."""
    nl = ds.sizes["layer"]
    full = np.full((obs.shape[0], nl) + obs.shape[1:], np.nan, dtype=np.float32)
    full[:, layer] = obs
    a = {k: v for k, v in attrs.items() if k in ("units", "long_name", "standard_name")}
    out = xr.Dataset(
        {var: (("time", "layer", "y", "x"), full, a),
         f"{var}_error": ((), np.float32(sigma), {"units": attrs.get("units", "1")})},
        coords={"time": ds["time"], "layer": ds["layer"], **_grid_coords(ds)},
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
        if self.var not in ds:
            raise DataValidationError(f"state dataset has no variable '{self.var}'; expected it for in-situ points")
        da = ds[self.var]
        if "member" in da.dims:
            raise DataValidationError(f"variable '{self.var}' has a member dimension; observe one trajectory at a time")
        layered = "layer" in da.dims
        da = da.transpose("time", "layer", "y", "x") if layered else da.transpose("time", "y", "x").expand_dims("layer", 1)
        values = np.asarray(da.values)
        nt, nl, ny, nx = values.shape
        sigma = self.resolve_sigma(values)
        cells = np.stack([rng.choice(ny * nx, size=min(self.n_profiles, ny * nx), replace=False) for _ in range(nt)])
        ti = np.repeat(np.arange(nt), cells.shape[1] * nl)
        li = np.tile(np.repeat(np.arange(nl), 1), nt * cells.shape[1])
        ci = np.repeat(cells.ravel(), nl)
        iy, ix = ci // nx, ci % nx
        truth = values[ti, li, iy, ix]
        obs = truth + sigma * rng.standard_normal(truth.shape)
        times = grid.times(ds)
        coords = {
            "time": ("obs", times[ti]),
            "y_index": ("obs", iy.astype(np.int32)),
            "x_index": ("obs", ix.astype(np.int32)),
            "layer_index": ("obs", li.astype(np.int32)),
        }
        if "lat" in ds.coords:
            coords["lat"] = ("obs", np.asarray(ds["lat"].values)[iy, ix], {"units": "degrees_north"})
            coords["lon"] = ("obs", np.asarray(ds["lon"].values)[iy, ix], {"units": "degrees_east"})
        if "y" in ds.coords:
            coords["y"] = ("obs", np.asarray(ds["y"].values)[iy], dict(ds["y"].attrs))
            coords["x"] = ("obs", np.asarray(ds["x"].values)[ix], dict(ds["x"].attrs))
        a = {k: v for k, v in ds[self.var].attrs.items() if k in ("units", "long_name", "standard_name")}
        out = xr.Dataset(
            {self.var: ("obs", obs.astype(np.float32), a),
             f"{self.var}_error": ("obs", np.full(obs.shape, sigma, np.float32), {"units": a.get("units", "1")})},
            coords=coords,
        )
        out.attrs.update({"operator": self.name, "observed_variable": self.var, "n_profiles_per_time": self.n_profiles,
                          "obs_error_std": sigma, "layered": int(layered)})
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
