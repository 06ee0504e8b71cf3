"""The paper's torus flow (Baptista, Stuart & Tran 2025, section 6) and its drifters.

On the torus [0, 1)^2, psi(x, t) = Re sum_k psi_k exp(i omega_k t) e_k(x), e_k(x) = exp(2 pi i k.x),
over K = 49 wavevectors k (the 49 shortest in a half-plane, so no two modes are complex
conjugates); velocity w = J grad psi with J = [[0, 1], [-1, 0]], i.e. u = dpsi/dy, v = -dpsi/dx,
divergence-free by construction. A flow is its 98 real coefficients (Re psi_k, Im psi_k); the
frequencies omega_k belong to the flow family (drawn once from a seed, shared by every flow),
so the coefficients determine the flow. Drifters are advected with classical RK4 (default: one
drifter from (0.75, 0.75), dt = 1e-5 to T = 0.1, every 10th position kept), vectorised over flows
with torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import xarray as xr

from oceanda.errors import OceandaError
from oceanda.testbeds._threads import torch_threads


def half_plane_wavevectors(n: int = 49) -> np.ndarray:
    """The ``n`` shortest integer wavevectors with k2 > 0 or (k2 == 0 and k1 > 0), [n, 2]; ties by angle.

    Parameters
    ----------
    n : number of wavevectors

    Returns
    -------
    numpy.ndarray: int64 ``[n, 2]``
    """
    r = int(np.ceil(np.sqrt(2 * n))) + 2
    ks = [(a, b) for a in range(-r, r + 1) for b in range(r + 1) if b > 0 or a > 0]
    ks.sort(key=lambda k: (k[0] ** 2 + k[1] ** 2, np.arctan2(k[1], k[0])))
    return np.array(ks[:n], dtype=np.int64)


@dataclass
class TorusFlow:
    """A family of random time-dependent incompressible flows on the unit torus.

    Coefficient prior: psi_k complex normal with standard deviation ``amplitude * |k|^-decay`` (per
    real part: that over sqrt 2); frequencies omega_k ~ N(0, omega_scale^2), fixed by ``seed``.
    ``device``: torch device of the drifter integration (e.g. "cuda"; the paper's 32k flows at
    dt = 1e-5 take over an hour on 2 CPU cores).
    """

    n_modes: int = 49
    amplitude: float = 1.0
    decay: float = 2.0
    omega_scale: float = 20.0
    seed: int = 0
    threads: int | None = 1
    device: str = "cpu"
    k: np.ndarray = field(init=False, repr=False)
    omega: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.k = half_plane_wavevectors(self.n_modes)
        self.omega = np.random.default_rng(self.seed).normal(0.0, self.omega_scale, self.n_modes)
        self.kmag = np.sqrt((self.k**2).sum(1))

    @property
    def n_coefficients(self) -> int:
        return 2 * self.n_modes

    def _threads(self):
        return torch_threads(self.threads)

    # ------------------------------------------------------------------ coefficients
    def sample_coefficients(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` flows from the prior: [n, 98] real coefficients (Re psi_k for all k, then Im psi_k).

        Parameters
        ----------
        n : number of flows
        rng : random generator

        Returns
        -------
        numpy.ndarray
        """
        sd = self.amplitude * self.kmag ** (-self.decay) / np.sqrt(2.0)
        return np.concatenate([sd * rng.standard_normal((n, self.n_modes)), sd * rng.standard_normal((n, self.n_modes))], 1)

    def complex_coefficients(self, coeffs: Any) -> np.ndarray:
        """Complex psi_k ``[..., K]`` from real coefficients ``[..., 2K]``.

        Parameters
        ----------
        coeffs : real coefficients (Re psi_k, then Im psi_k)

        Returns
        -------
        numpy.ndarray: complex128
        """
        c = np.asarray(coeffs, dtype=np.float64)
        if c.shape[-1] != self.n_coefficients:
            raise OceandaError(f"TorusFlow: coefficients of shape {c.shape}; expected [..., {self.n_coefficients}]")
        return c[..., : self.n_modes] + 1j * c[..., self.n_modes :]

    # ------------------------------------------------------------------ fields
    def _ct(self, coeffs: Any, t: float | torch.Tensor) -> torch.Tensor:
        """Time-dependent complex coefficients c_k(t) = psi_k exp(i omega_k t), [F, K] (t scalar or [F])."""
        c = torch.as_tensor(self.complex_coefficients(coeffs))
        om = torch.as_tensor(self.omega)
        t = torch.as_tensor(t, dtype=torch.float64)
        ph = om * (t[..., None] if t.ndim else t)
        return c * torch.exp(1j * ph)

    def velocity_at(self, coeffs: Any, x: Any, y: Any, t: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Velocity (u, v) of flows [F, 98] at positions x, y [F, n] at time t.

        Parameters
        ----------
        coeffs : real flow coefficients ``[F, 98]``
        x, y : positions ``[F, n]``
        t : time

        Returns
        -------
        tuple of numpy.ndarray: (u, v), each ``[F, n]``
        """
        with self._threads():
            c = self._ct(coeffs, t)
            u, v = self._vel(c, torch.as_tensor(np.array(x, float)), torch.as_tensor(np.array(y, float)))
        return u.numpy(), v.numpy()

    def _vel(self, c: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """u = dpsi/dy, v = -dpsi/dx at (x, y) [F, n] for coefficients c [F, K] (complex) or (cr, ci)."""
        if not hasattr(self, "_kT"):
            self._kT = torch.as_tensor(2 * np.pi * self.k.T, dtype=torch.float64)  # [2, K]
            self._kmat = torch.as_tensor(np.stack([-self.k[:, 1], self.k[:, 0]], 1) * 2 * np.pi, dtype=torch.float64)
        cr, ci = (c.real, c.imag) if torch.is_tensor(c) else c
        kT = self._kT.to(device=x.device, dtype=x.dtype)
        th = torch.stack([x, y], -1) @ kT  # [F, n, K]
        im = cr[:, None, :] * torch.sin(th) + ci[:, None, :] * torch.cos(th)  # Im(c_k e_k)
        w = im @ self._kmat.to(device=x.device, dtype=x.dtype)  # grad psi = -2 pi k Im(c e);  u = psi_y, v = -psi_x
        return w[..., 0], w[..., 1]

    def grid(self, n: int = 32) -> np.ndarray:
        """Grid nodes j / n, j = 0..n-1 (periodic).

        Parameters
        ----------
        n : number of nodes

        Returns
        -------
        numpy.ndarray
        """
        return np.arange(n) / n

    def gridded(self, coeffs: Any, times: Any = (0.0,), n: int = 32) -> dict[str, np.ndarray]:
        """psi, u, v on an n x n grid: each [F, time, n(y), n(x)].

        Parameters
        ----------
        coeffs : real flow coefficients ``[F, 98]`` (or one flow ``[98]``)
        times : times of the fields
        n : grid size

        Returns
        -------
        dict: ``psi``, ``u``, ``v`` arrays
        """
        c = self.complex_coefficients(np.atleast_2d(coeffs))  # [F, K]
        times = np.atleast_1d(np.asarray(times, float))
        g = self.grid(n)
        X, Y = np.meshgrid(g, g)  # [y, x]
        e = np.exp(2j * np.pi * (X[..., None] * self.k[:, 0] + Y[..., None] * self.k[:, 1]))  # [n, n, K]
        ct = c[:, None, :] * np.exp(1j * self.omega[None, None, :] * times[None, :, None])  # [F, T, K]
        psi = np.einsum("ftk,yxk->ftyx", ct, e).real
        dx = np.einsum("ftk,yxk->ftyx", ct * (2j * np.pi * self.k[:, 0]), e).real
        dy = np.einsum("ftk,yxk->ftyx", ct * (2j * np.pi * self.k[:, 1]), e).real
        return {"psi": psi, "u": dy, "v": -dx}

    # ------------------------------------------------------------------ drifters
    def drifters(self, coeffs: Any, x0: Any = (0.75,), y0: Any = (0.75,), dt: float = 1e-5, T: float = 0.1,
                 keep_every: int = 10, wrap: bool = True, progress: bool = False,
                 chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """RK4 trajectories of drifters for every flow: (positions [F, n_keep, n_drifters, 2], times [n_keep]).

        Positions exclude the start and are taken every ``keep_every`` steps (T/dt steps in all):
        the paper's default gives 1000 positions. ``wrap`` maps them into [0, 1); unwrapped
        positions are continuous paths on the covering plane.

        Parameters
        ----------
        coeffs : real flow coefficients ``[F, 98]``
        x0, y0 : start positions (``[n_drifters]`` or ``[F, n_drifters]``)
        dt, T : RK4 step and end time
        keep_every : steps between kept positions
        wrap : map positions into [0, 1)
        progress : show a progress bar
        chunk : flows integrated together (memory bound)

        Returns
        -------
        tuple of numpy.ndarray: (positions, times)
        """
        coeffs = np.atleast_2d(np.asarray(coeffs, float))
        nsteps = int(round(T / dt))
        if abs(nsteps * dt - T) > 1e-9 * max(T, 1) or nsteps % keep_every:
            raise OceandaError(f"TorusFlow.drifters: T={T}, dt={dt}, keep_every={keep_every}; expected T/dt a whole multiple of keep_every")
        F = coeffs.shape[0]
        x0 = np.broadcast_to(np.asarray(x0, float), (F, np.size(x0)) if np.ndim(x0) <= 1 else np.shape(x0))
        y0 = np.broadcast_to(np.asarray(y0, float), x0.shape)
        out = np.empty((F, nsteps // keep_every, x0.shape[1], 2))
        with self._threads():
            for s in range(0, F, chunk):
                sl = slice(s, s + chunk)
                out[sl] = self._rk4(coeffs[sl], x0[sl], y0[sl], dt, nsteps, keep_every,
                                    progress and f"drifters {s + 1}-{min(s + chunk, F)} of {F}")
        if wrap:
            out = np.mod(out, 1.0)
        times = dt * keep_every * np.arange(1, nsteps // keep_every + 1)
        return out, times

    def _rk4(self, coeffs, x0, y0, dt, nsteps, keep_every, progress: str | bool = False) -> np.ndarray:
        dev = torch.device(self.device)
        c0 = torch.as_tensor(self.complex_coefficients(coeffs), device=dev)  # [F, K]
        om = torch.as_tensor(self.omega, device=dev)
        x = torch.as_tensor(np.array(x0, float), device=dev)
        y = torch.as_tensor(np.array(y0, float), device=dev)
        kept = []

        def parts(t: float) -> tuple[torch.Tensor, torch.Tensor]:
            ct = c0 * torch.exp(1j * om * t)
            return ct.real.contiguous(), ct.imag.contiguous()

        c = parts(0.0)
        steps = range(nsteps)
        if progress:
            from tqdm.auto import tqdm

            steps = tqdm(steps, desc=str(progress), unit="step", leave=False, disable=None, mininterval=1.0)
        for i in steps:
            ch = parts(dt * (i + 0.5))
            c1 = parts(dt * (i + 1))
            u1, v1 = self._vel(c, x, y)
            u2, v2 = self._vel(ch, x + 0.5 * dt * u1, y + 0.5 * dt * v1)
            u3, v3 = self._vel(ch, x + 0.5 * dt * u2, y + 0.5 * dt * v2)
            u4, v4 = self._vel(c1, x + dt * u3, y + dt * v3)
            x = x + dt / 6 * (u1 + 2 * u2 + 2 * u3 + u4)
            y = y + dt / 6 * (v1 + 2 * v2 + 2 * v3 + v4)
            c = c1
            if (i + 1) % keep_every == 0:
                kept.append(torch.stack([x, y], -1))
        return torch.stack(kept, 1).cpu().numpy()

    # ------------------------------------------------------------------ datasets
    def to_dataset(self, coeffs: Any, positions: np.ndarray | None = None, times: np.ndarray | None = None,
                   n: int = 32, grid_times: Any = (0.0,)) -> xr.Dataset:
        """CF-style Dataset of flows: coefficients (sample, coefficient), gridded psi/u/v (sample, time, y, x)
        at ``grid_times``, and drifter positions (sample, obs, drifter) if given.

        Parameters
        ----------
        coeffs : real flow coefficients ``[F, 98]``
        positions : drifter positions ``[F, n_keep, n_drifters, 2]`` (optional)
        times : times of the kept positions (with ``positions``)
        n : grid size of the fields
        grid_times : times of the gridded fields

        Returns
        -------
        xarray.Dataset
        """
        coeffs = np.atleast_2d(np.asarray(coeffs, float))
        g = self.gridded(coeffs, grid_times, n)
        gx = self.grid(n)
        data = {
            "coefficients": (("sample", "coefficient"), coeffs,
                             {"units": "1", "long_name": "real coefficients: Re psi_k (k = 0..K-1) then Im psi_k"}),
            "psi": (("sample", "time", "y", "x"), g["psi"], {"units": "1", "long_name": "streamfunction"}),
            "u": (("sample", "time", "y", "x"), g["u"], {"units": "1", "long_name": "x velocity (dpsi/dy)"}),
            "v": (("sample", "time", "y", "x"), g["v"], {"units": "1", "long_name": "y velocity (-dpsi/dx)"}),
        }
        coords = {
            "time": ("time", np.atleast_1d(np.asarray(grid_times, float)), {"units": "1", "long_name": "nondimensional time"}),
            "y": ("y", gx, {"units": "1"}),
            "x": ("x", gx, {"units": "1"}),
            "wavenumber_x": ("mode", self.k[:, 0].astype(np.int32)),
            "wavenumber_y": ("mode", self.k[:, 1].astype(np.int32)),
            "frequency": ("mode", self.omega, {"units": "1"}),
        }
        if positions is not None:
            pos = np.asarray(positions)
            data["drifter_x"] = (("sample", "obs", "drifter"), pos[..., 0], {"units": "1", "long_name": "drifter x position (wrapped)"})
            data["drifter_y"] = (("sample", "obs", "drifter"), pos[..., 1], {"units": "1", "long_name": "drifter y position (wrapped)"})
            coords["obs_time"] = ("obs", np.asarray(times, float), {"units": "1", "long_name": "time of each kept position"})
        ds = xr.Dataset(data, coords=coords)
        ds.attrs.update({"source": "oceanda torus flow testbed (Baptista, Stuart & Tran 2025, section 6)",
                         "torus_n_modes": self.n_modes, "torus_amplitude": self.amplitude, "torus_decay": self.decay,
                         "torus_omega_scale": self.omega_scale, "torus_seed": self.seed,
                         "velocity_convention": "u = dpsi/dy, v = -dpsi/dx (w = J grad psi, J = [[0, 1], [-1, 0]])"})
        return ds


def spectral_divergence(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """du/dx + dv/dy of periodic fields [..., n(y), n(x)] on the unit torus by FFT derivatives.

    Parameters
    ----------
    u, v : velocity components ``[..., n(y), n(x)]``

    Returns
    -------
    numpy.ndarray: like ``u``
    """
    ny, nx = u.shape[-2:]
    kx = 2j * np.pi * np.fft.fftfreq(nx, d=1.0 / nx)
    ky = 2j * np.pi * np.fft.fftfreq(ny, d=1.0 / ny)
    du = np.fft.ifft(np.fft.fft(u, axis=-1) * kx, axis=-1).real
    dv = np.fft.ifft(np.fft.fft(v, axis=-2) * ky[:, None], axis=-2).real
    return du + dv
