"""Lorenz-96: the standard chaotic toy model for validating ensemble filters.

dx_i/dt = (x_{i+1} - x_{i-2}) x_{i-1} - x_i + F on a periodic ring of ``n`` variables. With
n = 40, F = 8 and dt = 0.05 (Lorenz & Emanuel 1998) the published filter benchmarks (Sakov & Oke
2008, DAPPER) apply, so a filter can be checked against known RMSE values. Integration is RK4 and
batched over any leading dimensions (ensemble members, seeds).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr


class Lorenz96:
    """Batched RK4 Lorenz-96 model on arrays ``[..., n]`` (numpy)."""

    def __init__(self, n: int = 40, forcing: float = 8.0, dt: float = 0.05):
        if n < 4:
            raise ValueError(f"Lorenz96 needs n >= 4 variables, got {n}")
        self.n = int(n)
        self.forcing = float(forcing)
        self.dt = float(dt)

    def tendency(self, x: np.ndarray) -> np.ndarray:
        """dx/dt for a batch of states ``[..., n]``.

        Parameters
        ----------
        x : states ``[..., n]``

        Returns
        -------
        numpy.ndarray: like ``x``
        """
        return (np.roll(x, -1, axis=-1) - np.roll(x, 2, axis=-1)) * np.roll(x, 1, axis=-1) - x + self.forcing

    def step(self, x: np.ndarray, dt: float | None = None) -> np.ndarray:
        """One RK4 step of length ``dt`` (default ``self.dt``); returns a new array.

        Parameters
        ----------
        x : states ``[..., n]``
        dt : step length (None = ``self.dt``)

        Returns
        -------
        numpy.ndarray: like ``x``
        """
        h = self.dt if dt is None else float(dt)
        x = np.asarray(x, dtype=np.float64)
        k1 = self.tendency(x)
        k2 = self.tendency(x + 0.5 * h * k1)
        k3 = self.tendency(x + 0.5 * h * k2)
        k4 = self.tendency(x + h * k3)
        return x + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)

    def forecast(self, x: np.ndarray, duration: float) -> np.ndarray:
        """Integrate for ``duration`` time units (a whole number of steps of ``dt``).

        Parameters
        ----------
        x : states ``[..., n]``
        duration : model time units

        Returns
        -------
        numpy.ndarray: float64, like ``x``
        """
        nsteps = round(duration / self.dt)
        if nsteps < 0 or abs(nsteps * self.dt - duration) > 1e-9 * max(1.0, abs(duration)):
            raise ValueError(f"duration {duration} is not a non-negative multiple of dt = {self.dt}")
        for _ in range(nsteps):
            x = self.step(x)
        return np.asarray(x, dtype=np.float64)

    def run(self, x0: np.ndarray, nsteps: int, save_every: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Integrate ``nsteps`` steps from ``x0 [..., n]``.

        Returns ``(traj, times)``: ``traj [nsave, ..., n]`` holds ``x0`` and every ``save_every``-th
        state; ``times`` are in model time units starting at 0.

        Parameters
        ----------
        x0 : initial states ``[..., n]``
        nsteps : number of steps
        save_every : steps between saved states

        Returns
        -------
        tuple of numpy.ndarray: (traj, times)
        """
        if save_every < 1:
            raise ValueError("save_every must be >= 1")
        x = np.asarray(x0, dtype=np.float64)
        if x.shape[-1] != self.n:
            raise ValueError(f"x0 has last dimension {x.shape[-1]}; expected n = {self.n}")
        out = [x.copy()]
        times = [0.0]
        for k in range(1, nsteps + 1):
            x = self.step(x)
            if k % save_every == 0:
                out.append(x.copy())
                times.append(k * self.dt)
        return np.stack(out), np.asarray(times)

    def initial_state(self, rng: np.random.Generator, shape: tuple[int, ...] = (), spinup: int = 0) -> np.ndarray:
        """F plus small Gaussian noise, optionally spun up onto the attractor for ``spinup`` steps.

        Parameters
        ----------
        rng : random generator
        shape : leading batch shape
        spinup : number of spin-up steps

        Returns
        -------
        numpy.ndarray: ``[*shape, n]``
        """
        x = self.forcing + 0.01 * rng.standard_normal((*shape, self.n))
        for _ in range(spinup):
            x = self.step(x)
        return x

    def to_dataset(self, traj: np.ndarray, times: Any, attrs: dict[str, Any] | None = None,
                   as_grid: bool = False) -> xr.Dataset:
        """A trajectory ``[time, n]`` (or ``[time, member, n]``) as a Dataset with variable ``X``.

        Dims are ``(time, [member,] x)``. The variable is ``X`` (units "1"), not ``x``: xarray
        cannot hold a data variable named like its own dimension. ``as_grid=True`` adds a
        length-1 ``y`` dimension, ``(time, [member,] y, x)``, the gridded layout that
        ``oceanda.io.open_states`` and ``oceanda.fields`` accept (a one-row periodic grid).

        Parameters
        ----------
        traj : trajectory ``[time, n]`` or ``[time, member, n]``
        times : model times
        attrs : extra global attributes
        as_grid : add the length-1 ``y`` dimension

        Returns
        -------
        xarray.Dataset
        """
        traj = np.asarray(traj)
        if traj.ndim not in (2, 3) or traj.shape[-1] != self.n:
            raise ValueError(f"trajectory of shape {traj.shape}; expected [time, {self.n}] or [time, member, {self.n}]")
        dims: tuple[str, ...] = ("time", "x") if traj.ndim == 2 else ("time", "member", "x")
        coords: dict[str, Any] = {"time": ("time", np.asarray(times, dtype=np.float64), {"units": "1", "long_name": "model time"}),
                                  "x": ("x", np.arange(self.n), {"long_name": "variable index on the ring"})}
        if traj.ndim == 3:
            coords["member"] = ("member", np.arange(traj.shape[1]))
        if as_grid:
            traj = traj[..., None, :]
            dims = (*dims[:-1], "y", "x")
            coords["y"] = ("y", np.zeros(1))
        ds = xr.Dataset({"X": (dims, traj, {"units": "1", "long_name": "Lorenz-96 state"})}, coords=coords)
        ds.attrs.update({"model": "Lorenz96", "n": self.n, "forcing": self.forcing, "dt": self.dt, **(attrs or {})})
        return ds
