"""Two-layer quasi-geostrophic ocean (pyqg's "eddy" configuration), pseudo-spectral and batched.

Doubly periodic beta-plane box, baroclinically unstable mean shear, linear bottom drag and
pyqg's exponential small-scale filter, third-order Adams-Bashforth. The state is potential
vorticity ``q`` with shape ``[member, 2, ny, nx]`` (layer 0 = upper); every member is advanced in
the same FFT calls, so an ensemble forecast costs about one member's Python overhead. Written
from the equations in pyqg's documentation (pyqg itself is not a dependency).

Equations (layer n = 1, 2; F1 = 1/(rd^2 (1 + delta)), F2 = delta F1, delta = H1/H2)::

    q1 = lap psi1 + F1 (psi2 - psi1),   q2 = lap psi2 + F2 (psi1 - psi2)
    d/dt q_n + J(psi_n, q_n) + U_n d/dx q_n + Qy_n d/dx psi_n = -rek lap psi2 [n = 2]
    Qy1 = beta + F1 (U1 - U2),  Qy2 = beta - F2 (U1 - U2)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from oceanda.errors import DataValidationError, OceandaError
from oceanda.testbeds._threads import torch_threads

OMEGA = 7.2921e-5  #: Earth's rotation rate [s-1]
SECONDS_PER_DAY = 86400.0
KM_PER_DEG_LAT = 111.195
#: Shipped spun-up state (float32 q, [member, 2, 64, 64]; see ``spin_up``).
SPUN_UP_FILE = "qg_spunup_nx64.npy"
TIME_ORIGIN = np.datetime64("2001-01-01T00:00:00", "ns")


def data_dir() -> Path:
    return Path(str(resources.files("oceanda") / "testbeds" / "data"))


def _with_threads(fn):
    """Run a QGModel method under the model's torch thread setting."""
    import functools

    @functools.wraps(fn)
    def wrapper(self, *a, **k):
        with self._threads():
            return fn(self, *a, **k)

    return wrapper


class QGModel:
    """Batched two-layer QG model; defaults are pyqg's two-layer defaults ("eddy" configuration).

    Parameters use SI units. ``dtype`` float32 (default; about twice as fast on CPU) or float64;
    ``device`` any torch device. Arrays in and out may be numpy or torch: numpy in,
    numpy out. ``threads``: torch CPU threads used while integrating (restored afterwards); 1 by
    default because 64 x 64 FFTs gain nothing from threads and oversubscribed cores make them
    up to 70 times slower; None leaves torch's setting alone.
    """

    def __init__(
        self,
        nx: int = 64,
        ny: int | None = None,
        L: float = 1.0e6,
        W: float | None = None,
        dt: float = 7200.0,
        rd: float = 15000.0,
        delta: float = 0.25,
        H1: float = 500.0,
        U1: float = 0.025,
        U2: float = 0.0,
        beta: float = 1.5e-11,
        rek: float = 5.787e-7,
        filterfac: float = 23.6,
        lat0: float = 38.0,
        lon0: float = -60.0,
        g: float = 9.81,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        threads: int | None = 1,
    ) -> None:
        self.nx, self.ny = int(nx), int(ny if ny is not None else nx)
        self.L, self.W = float(L), float(W if W is not None else L)
        self.dt, self.rd, self.delta = float(dt), float(rd), float(delta)
        self.H1 = float(H1)
        self.H2 = self.H1 / self.delta
        self.H = self.H1 + self.H2
        self.U = (float(U1), float(U2))
        self.beta, self.rek, self.filterfac = float(beta), float(rek), float(filterfac)
        self.lat0, self.lon0, self.g = float(lat0), float(lon0), float(g)
        self.f0 = 2 * OMEGA * math.sin(math.radians(self.lat0))
        self.dtype = dtype
        self.threads = threads
        self.cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
        self.device = torch.device(device)
        self.dx, self.dy = self.L / self.nx, self.W / self.ny
        self.F1 = self.rd**-2 / (1.0 + self.delta)
        self.F2 = self.delta * self.F1
        shear = self.U[0] - self.U[1]
        self.Qy = (self.beta + self.F1 * shear, self.beta - self.F2 * shear)
        if self.ny % 2 or self.nx % 2:
            raise OceandaError(f"QGModel: nx={self.nx}, ny={self.ny}; expected even grid sizes")

        k = 2 * np.pi * np.fft.rfftfreq(self.nx, d=self.dx)  # [nk]
        l = 2 * np.pi * np.fft.fftfreq(self.ny, d=self.dy)  # [ny]
        kk, ll = np.meshgrid(k, l)
        wv2 = kk**2 + ll**2
        det = wv2 * (wv2 + self.F1 + self.F2)
        with np.errstate(divide="ignore", invalid="ignore"):
            inv_det = np.where(det > 0, 1.0 / det, 0.0)
        # psi_hat = A q_hat, A = M^-1, M = [[-(k2+F1), F1], [F2, -(k2+F2)]]
        a11 = -(wv2 + self.F2) * inv_det
        a12 = -self.F1 * inv_det
        a21 = -self.F2 * inv_det
        a22 = -(wv2 + self.F1) * inv_det
        wvx = np.sqrt((kk * self.dx) ** 2 + (ll * self.dy) ** 2)
        cphi = 0.65 * np.pi
        filt = np.where(wvx <= cphi, 1.0, np.exp(-self.filterfac * (wvx - cphi) ** 4))
        self._k_np, self._l_np, self._wv2_np = kk, ll, wv2
        t = lambda a: torch.as_tensor(a, dtype=self.dtype, device=self.device)
        self.ik = 1j * t(kk).to(self.cdtype)
        self.il = 1j * t(ll).to(self.cdtype)
        self.wv2 = t(wv2)
        self.inv = t(np.stack([np.stack([a11, a12]), np.stack([a21, a22])]))  # [2, 2, ny, nk]
        self.filtr = t(filt)
        self.Ubg = t(np.array(self.U)).view(1, 2, 1, 1)
        Qy = t(np.array(self.Qy)).view(1, 2, 1, 1)
        self.ikQy = self.ik * Qy  # [1, 2, ny, nk]
        self.ikU = self.ik * self.Ubg
        self.Mq = t(np.stack([np.stack([-(wv2 + self.F1), self.F1 + 0 * wv2]), np.stack([self.F2 + 0 * wv2, -(wv2 + self.F2)])]))

    # ------------------------------------------------------------------ grid
    @property
    def x_km(self) -> np.ndarray:
        return (np.arange(self.nx) + 0.5) * self.dx / 1e3

    @property
    def y_km(self) -> np.ndarray:
        return (np.arange(self.ny) + 0.5) * self.dy / 1e3

    def latlon(self) -> tuple[np.ndarray, np.ndarray]:
        """2-D (lat, lon) of cell centres: the box on a local tangent plane centred on (lat0, lon0)."""
        yy, xx = np.meshgrid(self.y_km - self.W / 2e3, self.x_km - self.L / 2e3, indexing="ij")
        lat = self.lat0 + yy / KM_PER_DEG_LAT
        lon = self.lon0 + xx / (KM_PER_DEG_LAT * np.cos(np.radians(lat)))
        return lat, lon

    @property
    def kd(self) -> float:
        """Deformation wavenumber 1/rd [rad m-1]."""
        return 1.0 / self.rd

    # ------------------------------------------------------------------ conversions
    def _in(self, a: Any) -> tuple[torch.Tensor, bool, bool]:
        """-> (tensor [M, ..., ny, nx], was_numpy, had_batch_dim)."""
        is_np = not isinstance(a, torch.Tensor)
        t = torch.as_tensor(np.asarray(a) if is_np else a, device=self.device).to(self.dtype)
        return t, is_np, True

    @staticmethod
    def _out(t: torch.Tensor, is_np: bool) -> Any:
        return t.detach().cpu().numpy() if is_np else t

    def _check_q(self, q: torch.Tensor, what: str = "q") -> torch.Tensor:
        if q.ndim == 3:
            q = q.unsqueeze(0)
        if q.ndim != 4 or tuple(q.shape[1:]) != (2, self.ny, self.nx):
            raise DataValidationError(
                f"QGModel: {what} has shape {tuple(q.shape)}; expected [member, 2, {self.ny}, {self.nx}]"
            )
        return q

    def _fft(self, a: torch.Tensor) -> torch.Tensor:
        return torch.fft.rfft2(a)

    def _ifft(self, a: torch.Tensor) -> torch.Tensor:
        return torch.fft.irfft2(a, s=(self.ny, self.nx))

    def _invert(self, qh: torch.Tensor) -> torch.Tensor:
        inv = self.inv
        p1 = inv[0, 0] * qh[:, 0] + inv[0, 1] * qh[:, 1]
        p2 = inv[1, 0] * qh[:, 0] + inv[1, 1] * qh[:, 1]
        return torch.stack([p1, p2], dim=1)

    @_with_threads
    def psi_from_q(self, q: Any) -> Any:
        """Streamfunction [m2 s-1] from potential vorticity [s-1] (both [member, 2, ny, nx]).

        Parameters
        ----------
        q : potential vorticity [s-1] ``[member, 2, ny, nx]`` (numpy or torch)

        Returns
        -------
        numpy.ndarray or torch.Tensor: psi, like ``q``
        """
        t, is_np, _ = self._in(q)
        t = self._check_q(t)
        return self._out(self._ifft(self._invert(self._fft(t))), is_np)

    @_with_threads
    def q_from_psi(self, psi: Any) -> Any:
        """Potential vorticity from streamfunction (the inverse of ``psi_from_q`` up to the mean).

        Parameters
        ----------
        psi : streamfunction [m2 s-1] ``[member, 2, ny, nx]``

        Returns
        -------
        numpy.ndarray or torch.Tensor: q, like ``psi``
        """
        t, is_np, _ = self._in(psi)
        t = self._check_q(t, "psi")
        ph = self._fft(t)
        M = self.Mq
        q1 = M[0, 0] * ph[:, 0] + M[0, 1] * ph[:, 1]
        q2 = M[1, 0] * ph[:, 0] + M[1, 1] * ph[:, 1]
        return self._out(self._ifft(torch.stack([q1, q2], dim=1)), is_np)

    @_with_threads
    def velocity(self, psi: Any, include_mean: bool = True) -> tuple[Any, Any]:
        """(u, v) [m s-1], each [member, 2, ny, nx]; u = -dpsi/dy + U_n, v = dpsi/dx.

        Parameters
        ----------
        psi : streamfunction ``[member, 2, ny, nx]``
        include_mean : add the mean flow U_n to u

        Returns
        -------
        tuple: (u, v), numpy or torch like ``psi``
        """
        t, is_np, _ = self._in(psi)
        ph = self._fft(self._check_q(t, "psi"))
        u = self._ifft(-self.il * ph)
        v = self._ifft(self.ik * ph)
        if include_mean:
            u = u + self.Ubg
        return self._out(u, is_np), self._out(v, is_np)

    def ssh(self, psi: Any) -> Any:
        """Sea-surface height eta = f0 psi1 / g [m], shape [member, ny, nx].

        Parameters
        ----------
        psi : streamfunction ``[..., 2, ny, nx]`` (numpy or torch)

        Returns
        -------
        numpy.ndarray or torch.Tensor: the upper layer's SSH
        """
        if isinstance(psi, torch.Tensor):
            return psi[..., 0, :, :] * (self.f0 / self.g)
        return np.asarray(psi)[..., 0, :, :] * (self.f0 / self.g)

    # ------------------------------------------------------------------ dynamics
    def _tendency(self, qh: torch.Tensor) -> torch.Tensor:
        ph = self._invert(qh)
        u = self._ifft(-self.il * ph)
        v = self._ifft(self.ik * ph)
        q = self._ifft(qh)
        uqh = self._fft((u + self.Ubg) * q)
        vqh = self._fft(v * q)
        dq = -self.ik * uqh - self.il * vqh - self.ikQy * ph
        dq[:, 1] = dq[:, 1] + self.rek * self.wv2 * ph[:, 1]
        return dq

    def _integrate(self, qh: torch.Tensor, nsteps: int, hist: list[torch.Tensor]) -> torch.Tensor:
        dt = self.dt
        for _ in range(nsteps):
            d = self._tendency(qh)
            if len(hist) == 0:
                inc = d
            elif len(hist) == 1:
                inc = 1.5 * d - 0.5 * hist[0]
            else:
                inc = (23.0 / 12.0) * d - (16.0 / 12.0) * hist[0] + (5.0 / 12.0) * hist[1]
            qh = self.filtr * (qh + dt * inc)
            hist.insert(0, d)
            del hist[2:]
        return qh

    def steps_per_day(self) -> int:
        n = SECONDS_PER_DAY / self.dt
        if abs(n - round(n)) > 1e-9:
            raise OceandaError(f"QGModel: dt={self.dt} s does not divide a day; expected 86400/dt to be an integer")
        return int(round(n))

    def _threads(self):
        return torch_threads(self.threads if self.device.type == "cpu" else None)

    def step(self, q: Any, nsteps: int = 1) -> Any:
        """Advance ``q`` [member, 2, ny, nx] by ``nsteps`` time steps (AB3, started with Euler/AB2).

        Parameters
        ----------
        q : potential vorticity [s-1] ``[member, 2, ny, nx]`` (numpy or torch)
        nsteps : number of time steps

        Returns
        -------
        numpy.ndarray or torch.Tensor: the new q
        """
        t, is_np, _ = self._in(q)
        t = self._check_q(t)
        with self._threads():
            qh = self._integrate(self._fft(t), int(nsteps), [])
        return self._out(self._ifft(qh), is_np)

    def advance(self, q: Any, days: float) -> Any:
        """Forecast: advance every member of ``q`` by ``days`` (a multiple of dt) and return the new q.

        Parameters
        ----------
        q : potential vorticity [s-1] ``[member, 2, ny, nx]`` (numpy or torch)
        days : forecast length in days

        Returns
        -------
        numpy.ndarray or torch.Tensor: the new q
        """
        n = days * SECONDS_PER_DAY / self.dt
        if abs(n - round(n)) > 1e-6:
            raise OceandaError(f"QGModel.advance: {days} days is not a whole number of {self.dt:g} s steps")
        return self.step(q, int(round(n)))

    def run(self, q0: Any, ndays: float, save_every_days: float = 1.0, include_initial: bool = True,
            progress: bool = False) -> tuple[Any, np.ndarray]:
        """Integrate ``ndays``; return (trajectory [time, member, 2, ny, nx], times in days).

        The multistep history is kept across saves, so saving does not change the trajectory.

        Parameters
        ----------
        q0 : initial PV ``[member, 2, ny, nx]``
        ndays : run length in days
        save_every_days : interval between saved states
        include_initial : save ``q0`` first
        progress : show a progress bar

        Returns
        -------
        tuple: (trajectory, numpy or torch like ``q0``, numpy.ndarray of times in days)
        """
        t, is_np, _ = self._in(q0)
        t = self._check_q(t)
        per = save_every_days * SECONDS_PER_DAY / self.dt
        nsave = ndays / save_every_days
        if abs(per - round(per)) > 1e-6 or abs(nsave - round(nsave)) > 1e-6 or round(per) < 1:
            raise OceandaError(
                f"QGModel.run: ndays={ndays}, save_every_days={save_every_days}; expected whole numbers of "
                f"{self.dt:g} s steps between saves and of saves in the run"
            )
        per, nsave = int(round(per)), int(round(nsave))
        out = [t.clone()] if include_initial else []
        qh = self._fft(t)
        hist: list[torch.Tensor] = []
        it = range(nsave)
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(it, desc="QG run", unit="save", leave=False, disable=None)
        with self._threads():
            for _ in it:
                qh = self._integrate(qh, per, hist)
                out.append(self._ifft(qh))
        traj = torch.stack(out, 0)
        times = np.arange(0 if include_initial else 1, nsave + 1) * float(save_every_days)
        return self._out(traj, is_np), times

    # ------------------------------------------------------------------ diagnostics
    @_with_threads
    def kinetic_energy(self, q: Any) -> np.ndarray:
        """Depth-averaged eddy kinetic energy per member [m2 s-2] (pyqg's ``ke``).

        Parameters
        ----------
        q : potential vorticity [s-1] ``[member, 2, ny, nx]`` (numpy or torch)

        Returns
        -------
        numpy.ndarray: ``[member]``
        """
        t, _, _ = self._in(q)
        t = self._check_q(t)
        u, v = self.velocity(self.psi_from_q(t), include_mean=False)
        ke = 0.5 * (u**2 + v**2).mean(dim=(-1, -2))  # [M, 2]
        w = torch.tensor([self.H1 / self.H, self.H2 / self.H], dtype=self.dtype, device=self.device)
        return (ke * w).sum(-1).cpu().numpy()

    @_with_threads
    def energy_spectrum(self, q: Any, layer: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Isotropic KE spectrum (k [rad m-1], E(k)), averaged over members; depth-weighted if layer is None.

        Parameters
        ----------
        q : potential vorticity [s-1] ``[member, 2, ny, nx]`` (numpy or torch)
        layer : layer index (None = depth-weighted)

        Returns
        -------
        tuple of numpy.ndarray: (wavenumbers, spectrum)
        """
        t, _, _ = self._in(q)
        ph = self._invert(self._fft(self._check_q(t))).cpu().numpy()
        e = 0.5 * self._wv2_np * np.abs(ph) ** 2  # [M, 2, ny, nk]
        e[..., 1:-1] *= 2  # rfft: interior k columns stand for +k and -k
        e = e.mean(0)
        e = e[layer] if layer is not None else (self.H1 * e[0] + self.H2 * e[1]) / self.H
        kmag = np.sqrt(self._wv2_np)
        dk = 2 * np.pi / self.L
        bins = np.arange(0.5, min(self.nx, self.ny) // 2 + 0.5) * dk
        idx = np.digitize(kmag.ravel(), bins)
        spec = np.bincount(idx, weights=e.ravel(), minlength=len(bins) + 1)[1 : len(bins)]
        kc = 0.5 * (bins[1:] + bins[:-1])
        return kc, spec

    @_with_threads
    def cfl(self, q: Any) -> float:
        """Advective Courant number max(|u| dt/dx + |v| dt/dy) over members, layers and grid.

        Parameters
        ----------
        q : potential vorticity [s-1] ``[member, 2, ny, nx]`` (numpy or torch)

        Returns
        -------
        float
        """
        u, v = self.velocity(self.psi_from_q(self._in(q)[0]), include_mean=True)
        c = u.abs() * self.dt / self.dx + v.abs() * self.dt / self.dy
        return float(c.max())

    # ------------------------------------------------------------------ datasets
    def to_dataset(self, q_traj: Any, times: Sequence[float] | np.ndarray, member: Any = None,
                   attrs: dict[str, Any] | None = None, include_q: bool = True) -> xr.Dataset:
        """CF Dataset (psi, q, ssh; coords time, [member,] layer, y, x, lat, lon) from [time, (member,) 2, ny, nx].

        ``times`` are model days (converted to datetimes from 2001-01-01) or datetime64 values. With
        a 5-D trajectory and ``member`` None the member dimension is kept only if it has size > 1.

        Parameters
        ----------
        q_traj : PV trajectory ``[time, (member,) 2, ny, nx]``
        times : model days or datetime64 values, one per state
        member : member labels (forces a member dim)
        attrs : extra global attributes
        include_q : write ``q`` too

        Returns
        -------
        xarray.Dataset
        """
        q = q_traj.detach().cpu().numpy() if isinstance(q_traj, torch.Tensor) else np.asarray(q_traj)
        if q.ndim == 4:
            q = q[:, None]
        if q.ndim != 5 or q.shape[2:] != (2, self.ny, self.nx):
            raise DataValidationError(
                f"QGModel.to_dataset: trajectory of shape {q.shape}; expected [time, (member,) 2, {self.ny}, {self.nx}]"
            )
        nt, nm = q.shape[:2]
        psi = np.stack([np.asarray(self.psi_from_q(q[i])) for i in range(nt)])
        ssh = self.ssh(psi)
        times = np.asarray(times)
        if np.issubdtype(times.dtype, np.datetime64):
            tcoord = times.astype("datetime64[ns]")
        else:
            tcoord = TIME_ORIGIN + np.round(times.astype(float) * SECONDS_PER_DAY * 1e9).astype("timedelta64[ns]")
        if len(tcoord) != nt:
            raise DataValidationError(f"QGModel.to_dataset: {len(tcoord)} times for {nt} states")
        keep_member = member is not None or nm > 1
        lat, lon = self.latlon()
        if keep_member:
            dims4, dims3 = ("time", "member", "layer", "y", "x"), ("time", "member", "y", "x")
        else:
            psi, q, ssh = psi[:, 0], q[:, 0], ssh[:, 0]
            dims4, dims3 = ("time", "layer", "y", "x"), ("time", "y", "x")
        data = {
            "psi": (dims4, psi.astype(np.float32), {"units": "m2 s-1", "long_name": "streamfunction"}),
            "ssh": (dims3, ssh.astype(np.float32), {"units": "m", "long_name": "sea surface height (f0 psi1 / g)"}),
        }
        if include_q:
            data["q"] = (dims4, q.astype(np.float32), {"units": "s-1", "long_name": "potential vorticity anomaly"})
        coords = {
            "time": ("time", tcoord, {"standard_name": "time", "axis": "T"}),
            "layer": ("layer", np.array([1, 2], dtype=np.int32), {"long_name": "layer (1 = upper)", "positive": "down"}),
            "y": ("y", self.y_km, {"units": "km", "long_name": "y distance of cell centre", "axis": "Y"}),
            "x": ("x", self.x_km, {"units": "km", "long_name": "x distance of cell centre", "axis": "X"}),
            "lat": (("y", "x"), lat, {"units": "degrees_north", "standard_name": "latitude"}),
            "lon": (("y", "x"), lon, {"units": "degrees_east", "standard_name": "longitude"}),
        }
        if keep_member:
            coords["member"] = ("member", np.asarray(member if member is not None else np.arange(nm)))
        ds = xr.Dataset(data, coords=coords)
        ds.attrs.update(self.config_attrs())
        ds.attrs.update(attrs or {})
        return ds

    def config_attrs(self) -> dict[str, Any]:
        return {
            "source": "oceanda two-layer QG testbed (pyqg eddy configuration)",
            "qg_nx": self.nx, "qg_ny": self.ny, "qg_L_m": self.L, "qg_W_m": self.W, "qg_dt_s": self.dt,
            "qg_rd_m": self.rd, "qg_delta": self.delta, "qg_H1_m": self.H1, "qg_U1_m_s": self.U[0],
            "qg_U2_m_s": self.U[1], "qg_beta": self.beta, "qg_rek_s": self.rek, "qg_filterfac": self.filterfac,
            "qg_f0_s": self.f0, "qg_g_m_s2": self.g, "qg_lat0": self.lat0, "qg_lon0": self.lon0,
        }

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any], **kwargs: Any) -> QGModel:
        """The model that wrote a Dataset (its ``qg_*`` attributes); ``kwargs`` override (e.g. dtype).

        Parameters
        ----------
        attrs : a Dataset's attributes
        **kwargs : settings overriding the attributes

        Returns
        -------
        QGModel
        """
        names = {"nx": "qg_nx", "ny": "qg_ny", "L": "qg_L_m", "W": "qg_W_m", "dt": "qg_dt_s", "rd": "qg_rd_m",
                 "delta": "qg_delta", "H1": "qg_H1_m", "U1": "qg_U1_m_s", "U2": "qg_U2_m_s", "beta": "qg_beta",
                 "rek": "qg_rek_s", "filterfac": "qg_filterfac", "lat0": "qg_lat0", "lon0": "qg_lon0", "g": "qg_g_m_s2"}
        missing = [a for a in names.values() if a not in attrs]
        if missing:
            raise DataValidationError(f"dataset attributes lack {missing}; expected a file written by the oceanda QG testbed")
        cfg = {k: attrs[a] for k, a in names.items()}
        cfg["nx"], cfg["ny"] = int(cfg["nx"]), int(cfg["ny"])
        cfg.update(kwargs)
        return cls(**cfg)

    def q_from_dataset(self, ds: xr.Dataset) -> np.ndarray:
        """[time, (member,) 2, ny, nx] potential vorticity from a Dataset (from ``psi`` if ``q`` is absent).

        Parameters
        ----------
        ds : a Dataset written by :meth:`to_dataset`

        Returns
        -------
        numpy.ndarray: float64 PV
        """
        if "q" in ds:
            return np.asarray(ds["q"].values, dtype=np.float64)
        if "psi" not in ds:
            raise DataValidationError("QG Dataset has neither 'q' nor 'psi'; expected one of them")
        psi = np.asarray(ds["psi"].values, dtype=np.float64)
        flat = psi.reshape(-1, 2, self.ny, self.nx)
        return np.asarray(self.q_from_psi(flat)).reshape(psi.shape)


# ---------------------------------------------------------------------- initial states


def noise_state(model: QGModel, n: int, rng: np.random.Generator, amplitude: float = 1e-7) -> np.ndarray:
    """Small random PV [n, 2, ny, nx] (white noise, amplitude in s-1): a cold start.

    Parameters
    ----------
    model : the QG model (grid size)
    n : number of members
    rng : random generator
    amplitude : noise standard deviation [s-1]

    Returns
    -------
    numpy.ndarray
    """
    return amplitude * rng.standard_normal((n, 2, model.ny, model.nx))


def spin_up(model: QGModel, n: int, rng: np.random.Generator, years: float = 5.0, progress: bool = True) -> np.ndarray:
    """Spin up ``n`` independent members from noise; returns q [n, 2, ny, nx] (used to make the shipped file).

    Parameters
    ----------
    model : the QG model
    n : number of members
    rng : random generator
    years : spin-up length in model years
    progress : show a progress bar

    Returns
    -------
    numpy.ndarray
    """
    q = noise_state(model, n, rng)
    days = int(round(years * 365))
    traj, _ = model.run(q, days, save_every_days=days, include_initial=False, progress=progress)
    return traj[-1]


def spectral_regrid(q: np.ndarray, nx: int, ny: int | None = None) -> np.ndarray:
    """Resample periodic fields [..., ny0, nx0] to [..., ny, nx] by zero-padding/truncating Fourier modes.

    Parameters
    ----------
    q : periodic fields ``[..., ny0, nx0]``
    nx, ny : target grid size (ny defaults to nx)

    Returns
    -------
    numpy.ndarray: float64 ``[..., ny, nx]``
    """
    ny = ny or nx
    q = np.asarray(q, dtype=np.float64)
    ny0, nx0 = q.shape[-2:]
    if (ny0, nx0) == (ny, nx):
        return q.copy()
    F = np.fft.fftshift(np.fft.fft2(q), axes=(-2, -1))
    out = np.zeros(q.shape[:-2] + (ny, nx), dtype=complex)
    cy0, cx0, cy, cx = ny0 // 2, nx0 // 2, ny // 2, nx // 2
    hy, hx = min(ny0, ny) // 2, min(nx0, nx) // 2
    out[..., cy - hy : cy + hy, cx - hx : cx + hx] = F[..., cy0 - hy : cy0 + hy, cx0 - hx : cx0 + hx]
    return np.real(np.fft.ifft2(np.fft.ifftshift(out, axes=(-2, -1)))) * (ny * nx) / (ny0 * nx0)


def spun_up_state(member: int | Sequence[int] | None = None, model: QGModel | None = None) -> np.ndarray:
    """The shipped statistically steady PV, [members, 2, ny, nx] float64 (an int member keeps the batch axis).

    The file holds 32 independent members spun up for 5 model years from noise at 64 x 64 with the
    default configuration; for another ``model.nx`` the fields are regridded spectrally (which
    then needs a short adjustment run).

    Parameters
    ----------
    member : member index or indices (None = all)
    model : regrid to this model's grid when it differs (None = 64 x 64)

    Returns
    -------
    numpy.ndarray
    """
    path = data_dir() / SPUN_UP_FILE
    if not path.exists():
        raise OceandaError(f"{path}: shipped QG spun-up state missing; expected it in the package data")
    q = np.load(path, allow_pickle=False).astype(np.float64)
    if member is not None:
        idx = [member] if np.isscalar(member) else list(member)
        if any(i < -q.shape[0] or i >= q.shape[0] for i in idx):
            raise OceandaError(f"{path}: member {member} requested; the file holds {q.shape[0]} members")
        q = q[idx]
    if model is not None and (model.nx, model.ny) != q.shape[-1:-3:-1]:
        q = spectral_regrid(q, model.nx, model.ny)
    return q


def perturbed_ensemble(n: int, rng: np.random.Generator, model: QGModel | None = None,
                       decorrelation_days: float = 120.0, amplitude: float = 0.05,
                       members: Sequence[int] | None = None, progress: bool = False,
                       base: np.ndarray | None = None) -> np.ndarray:
    """``n`` steady-state members: shipped states + small noise, then a free run of ``decorrelation_days``.

    Member i starts from shipped member ``members[i % len(members)]`` (default: all shipped members
    in order). The shipped members are independent; two members started from the same shipped
    member stay correlated (about 0.5-0.7 in SSH after 120 days), so pass disjoint ``members`` for
    runs that must be independent (e.g. a library and its truth runs). ``amplitude`` is the noise
    standard deviation relative to each layer's PV standard deviation.

    Parameters
    ----------
    n : number of members
    rng : random generator
    model : the QG model (default QGModel())
    decorrelation_days : length of the free run (0 = none)
    amplitude : noise std relative to each layer's PV std
    members : shipped members to start from (default: all)
    progress : show a progress bar
    base : the steady states to start from ``[k, 2, ny, nx]`` on ``model``'s grid (default: the shipped
        state, regridded; at 128-512 pass :func:`spun_up_state_nx`)

    Returns
    -------
    numpy.ndarray: PV ``[n, 2, ny, nx]``
    """
    model = model or QGModel()
    base = spun_up_state(model=model) if base is None else np.asarray(base, dtype=np.float64)
    if base.shape[-2:] != (model.ny, model.nx):
        raise DataValidationError(f"perturbed_ensemble: base states of shape {base.shape}; expected [k, 2, "
                                  f"{model.ny}, {model.nx}] (the model's grid)")
    idx = np.arange(base.shape[0]) if members is None else np.asarray(members, dtype=int)
    if idx.size == 0 or idx.min() < -base.shape[0] or idx.max() >= base.shape[0]:
        raise OceandaError(f"perturbed_ensemble: members {list(idx)}; the shipped state holds {base.shape[0]} members")
    q = base[idx[np.arange(n) % idx.size]].copy()
    sd = q.std(axis=(-2, -1), keepdims=True)
    q = q + amplitude * sd * rng.standard_normal(q.shape)
    if decorrelation_days > 0:
        traj, _ = model.run(q, decorrelation_days, save_every_days=decorrelation_days, include_initial=False,
                            progress=progress)
        q = np.asarray(traj[-1])
    return q


# ---------------------------------------------------------------------- finer grids

#: Grid sizes of the testbed: one 1000 km box, dx = 15.6, 7.8, 3.9, 1.95 km.
QG_NX = (64, 128, 256, 512)
#: Days each finer grid is spun up for, starting from the next coarser grid's spun-up state regridded
#: spectrally (128 from the shipped 64 x 64 state, 256 from 128, 512 from 256): the new octave of small
#: scales fills in within ~20 days; the 128 run also takes up most of the slow drift of the energy level.
SPINUP_DAYS = {128: 180, 256: 60, 512: 20}
#: Independent members of each cached spun-up state (the shipped 64 x 64 state's first members, regridded).
SPINUP_MEMBERS = 12
#: Bump when the spin-up procedure changes: old cache entries are then never read.
SPINUP_VERSION = 1
SPINUP_CACHE = "qg_spinup"


def testbed_model(nx: int = 64, **kwargs: Any) -> QGModel:
    """The testbed at ``nx`` x ``nx``: the 64 x 64 model's box and physics, dt = 7200 s x 64 / nx.

    Why dt ~ dx: the 64 x 64 run sits at an advective Courant number of ~0.15 (AB3 is stable to ~0.23
    in that measure) and spun-up velocities barely change with resolution, so the Courant number stays
    ~0.15 at every nx. The small-scale filter acts on k dx, so it follows the grid by construction;
    rd, beta, the shear and the drag are physical and unchanged. ``testbed_model(64)`` is ``QGModel()``.

    Parameters
    ----------
    nx : one of :data:`QG_NX`
    **kwargs : other QGModel settings (dtype, device, threads)

    Returns
    -------
    QGModel
    """
    from oceanda.settings import check_choice

    check_choice("nx", nx, QG_NX)
    return QGModel(nx=int(nx), dt=7200.0 * 64 / int(nx), **kwargs)


def spinup_settings(nx: int, members: int = SPINUP_MEMBERS, days: float | None = None) -> dict[str, Any]:
    """What a cached spun-up state at ``nx`` is computed from (its cache key hashes this).

    Parameters
    ----------
    nx : target grid (128, 256 or 512)
    members : independent members
    days : spin-up days at ``nx`` (default :data:`SPINUP_DAYS`)

    Returns
    -------
    dict (JSON-able)
    """
    import hashlib

    from oceanda.settings import check_choice, check_number

    check_choice("nx", nx, QG_NX[1:])
    shipped = spun_up_state()
    check_number("members", members, lo=1, hi=shipped.shape[0], integer=True)
    days = SPINUP_DAYS[nx] if days is None else days
    check_number("days", days, lo=0, hi=100 * 365)
    if nx // 2 == 64:
        source = "shipped:" + hashlib.sha256(shipped.tobytes()).hexdigest()[:16]
    else:
        source = spinup_key(spinup_settings(nx // 2, members))
    model = testbed_model(nx).config_attrs()
    return {"version": SPINUP_VERSION, "nx": int(nx), "members": int(members), "days": float(days),
            "source": source, "model": {k: v for k, v in model.items() if k != "source"}}


def spinup_key(settings: dict[str, Any]) -> str:
    """16 hex digits of the settings' canonical JSON."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def spinup_path(nx: int, members: int = SPINUP_MEMBERS, days: float | None = None) -> Path:
    """``cache_root()/qg_spinup/nx{nx}-{key}.nc``: where the spun-up state at ``nx`` is cached."""
    return _spinup_file(spinup_settings(nx, members, days))


def _spinup_file(settings: dict[str, Any]) -> Path:
    """The cache file of the spun-up state made from ``settings`` (named by their key)."""
    from oceanda import io

    return io.cache_root() / SPINUP_CACHE / f"nx{settings['nx']}-{spinup_key(settings)}.nc"


def _read_spinup(path: Path, settings: dict[str, Any]) -> np.ndarray | None:
    """The cached state at ``path`` if it is whole and made from ``settings``; None (with a warning) if not."""
    import warnings

    from oceanda import io

    if not path.exists():
        return None
    nx, m = settings["nx"], settings["members"]
    try:
        ds = io.read_netcdf(path)
        problem = None
        if ds.attrs.get("qg_spinup_key") != spinup_key(settings):
            problem = "made from other settings"
        elif "q" not in ds or ds["q"].shape != (m, 2, nx, nx):
            problem = f"no q of shape {(m, 2, nx, nx)}"
        elif not np.isfinite(ds["q"].values).all():
            problem = "non-finite q"
    except OceandaError as exc:
        problem = str(exc)
    if problem is None:
        return np.asarray(ds["q"].values, dtype=np.float64)
    warnings.warn(f"{path}: cached QG spin-up unusable ({problem}); regenerating it", UserWarning, stacklevel=3)
    return None


def _spin_up_nx(settings: dict[str, Any], coarse: np.ndarray) -> np.ndarray:
    """Run the spin-up ``settings`` describe: the coarser spun-up state, regridded, run ``days`` at ``nx``."""
    nx = settings["nx"]
    model = testbed_model(nx)
    q = spectral_regrid(coarse, nx)
    steps = int(round(settings["days"] * model.steps_per_day()))
    if steps:
        q = model.step(q, steps)
    # float32 like the shipped state: a freshly made state equals the one read back from the cache
    return np.asarray(q, dtype=np.float32).astype(np.float64)


def spun_up_state_nx(nx: int, members: int = SPINUP_MEMBERS, days: float | None = None,
                     progress: bool = False) -> np.ndarray:
    """Statistically steady PV ``[members, 2, nx, nx]`` (float64) at ``nx``; made on first use and cached.

    64: the shipped state's first ``members``. Finer grids: the next coarser spun-up state, regridded
    spectrally and run ``days`` (default :data:`SPINUP_DAYS`) at :func:`testbed_model` ``(nx)``; cached under
    ``oceanda.io.cache_root()/qg_spinup/nx{nx}-{key}.nc`` (key: a hash of everything it is made from),
    written atomically. A cache file that is damaged or made otherwise is regenerated with a warning.

    Parameters
    ----------
    nx : one of :data:`QG_NX`
    members : independent members (the shipped state's first ones)
    days : spin-up days at ``nx``
    progress : print when a spin-up starts and ends

    Returns
    -------
    numpy.ndarray
    """
    import json
    import time

    from oceanda import io

    if nx == 64:
        return spun_up_state(member=list(range(members)))
    settings = spinup_settings(nx, members, days)
    path = _spinup_file(settings)
    q = _read_spinup(path, settings)
    if q is not None:
        return q
    coarse = spun_up_state_nx(nx // 2, members, progress=progress)  # the next coarser grid (cached too)
    if progress:
        print(f"QG: spinning up {members} members at {nx} x {nx} for {settings['days']:g} days (cached in {path})",
              flush=True)
    t0, c0 = time.perf_counter(), time.process_time()
    q = _spin_up_nx(settings, coarse)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    model = testbed_model(nx)
    ds = xr.Dataset(
        {"q": (("member", "layer", "y", "x"), q.astype(np.float32),
               {"units": "s-1", "long_name": "potential vorticity anomaly"})},
        coords={"member": np.arange(members, dtype=np.int32), "layer": np.array([1, 2], dtype=np.int32),
                "y": ("y", model.y_km, {"units": "km", "axis": "Y"}), "x": ("x", model.x_km, {"units": "km", "axis": "X"})},
        attrs={**model.config_attrs(), "title": f"spun-up QG state at {nx} x {nx}", "qg_spinup_key": spinup_key(settings),
               "qg_spinup_settings": json.dumps(settings, sort_keys=True),
               "qg_spinup_seconds": round(seconds, 2), "qg_spinup_cpu_seconds": round(cpu, 2)})
    io.write_netcdf(ds, path, overwrite=True)
    if progress:
        print(f"QG: spin-up at {nx} x {nx} took {seconds:.0f} s ({cpu:.0f} CPU-s)", flush=True)
    return q
