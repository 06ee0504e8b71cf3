"""Cycled LETKF on the QG testbed: the altimetry twin experiment and the demo's cycled baseline.

Why here and not in ``oceanda.kalman``: both join the QG model (``testbeds.qg``), altimetry
(``observe``) and a filter, so they sit above the Kalman package, which knows only the
``forecast(E, t0, t1)`` protocol. The filter state is the streamfunction psi (2 layers x ny x nx,
flat in ``fields`` order; the demo's state adds ssh), so altimetry (SSH = f0 psi1 / g) is linear and
localisation is local in psi; a forecast converts psi -> q, advances every member in one batched
model call and converts back. Settings a caller leaves out (None) are the tuned values of
``tuned.json``'s ``qg_altimetry`` entry (:func:`qg_letkf_settings`), read in this one place.
Used by ``oceanda enkf --cycle qg``, ``oceanda demo`` and ``benchmarks/tune_qg_letkf.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from oceanda import fields
from oceanda.errors import OceandaError
from oceanda.kalman import (
    LETKF,
    CycleResult,
    EnOI,
    Localizer,
    Observations,
    cycle,
    grid_localizer,
    localizer_for_dataset,
    observations_from_dataset,
    selection_operator,
    tuned_filter,
    tuned_settings,
)
from oceanda.observe import AlongTrackAltimetry
from oceanda.settings import check_number
from oceanda.testbeds.qg import QGModel, perturbed_ensemble, spun_up_state

#: The ``tuned.json`` entry of the cycled QG LETKF.
TUNED = "qg_altimetry"
#: Daily cycles of a twin run when none are given (the CLI's documented default).
DEFAULT_DAYS = 60


def qg_letkf_settings(*, members: int | None = None, radius_km: float | None = None, inflation: float | None = None,
                      rtps: float | None = None, block: int | None = None,
                      taper: str | None = None) -> tuple[LETKF, int]:
    """The cycled QG LETKF: tuned settings with the caller's overrides (None = the tuned value).

    The tuned values are those tuned for the ensemble size in use (``tuned.json``'s ``by_members``
    table: the entry of that N, else of the nearest tuned N on a log scale; see
    :func:`oceanda.kalman.tuned.tuned_members_entry`); ``members`` None = the tuned default size.

    Parameters
    ----------
    members : ensemble size (None = the tuned default, 20)
    radius_km : Gaspari-Cohn half-width in km (periodic distances)
    inflation, rtps : multiplicative inflation, relaxation to prior spread
    block : side of the tiles of grid points sharing one local analysis
    taper : taper name

    Returns
    -------
    ``(LETKF, members)``
    """
    members = tuned_members(members)
    f = tuned_filter(TUNED, "letkf", members=members, radius=radius_km, inflation=inflation, rtps=rtps, block=block,
                     taper=taper)
    return f, members


def tuned_members(members: int | None = None) -> int:
    """The cycled QG LETKF's ensemble size: ``members``, or the tuned one when None.

    Parameters
    ----------
    members : ensemble size (at least 2)

    Returns
    -------
    int
    """
    members = tuned_settings(TUNED)["members"] if members is None else members
    check_number("members", members, lo=2, integer=True)
    return int(members)


@dataclass
class QGForecast:
    """``forecast(E, t0, t1)`` for flat psi states (optionally followed by an ssh channel) of the QG model."""

    model: QGModel
    channels: int = 2

    def __call__(self, E: np.ndarray, t0: float, t1: float) -> np.ndarray:
        """Advance ``E [N, channels * ny * nx]`` by ``t1 - t0`` days; ssh is re-derived from the new psi.

        Parameters
        ----------
        E : ensemble of flat states (psi layers 1, 2, then ssh if ``channels == 3``)
        t0, t1 : start and end times in days

        Returns
        -------
        numpy.ndarray of E's shape, float64
        """
        m = self.model
        X = E.reshape(E.shape[0], self.channels, m.ny, m.nx)
        q = np.asarray(m.q_from_psi(X[:, :2]))
        q = np.asarray(m.advance(q, t1 - t0))
        psi = np.asarray(m.psi_from_q(q), dtype=np.float64)
        out = np.concatenate([psi, (m.f0 / m.g) * psi[:, :1]], axis=1) if self.channels > 2 else psi
        return out.reshape(E.shape[0], -1)


class QGAltimetryTwin:
    """Truth from shipped member ``truth_member``; ensemble from other shipped members (never 0 or 1).

    ``days`` daily analyses; observation noise ``obs_error_fraction`` of the climatological SSH
    standard deviation; ``members`` None = the tuned ensemble size.
    """

    def __init__(self, model: QGModel | None = None, truth_member: int = 0, days: int = DEFAULT_DAYS,
                 members: int | None = None, seed: int = 0, obs_error_fraction: float = 0.1):
        self.model = model = model or QGModel()
        members = tuned_members(members)
        rng = np.random.default_rng(seed)
        self.G = model.ny * model.nx
        shipped = spun_up_state(model=model)
        psi_clim = np.asarray(model.psi_from_q(shipped), dtype=np.float64)
        self.clim_psi = psi_clim.reshape(shipped.shape[0], -1).mean(0)
        traj, _ = model.run(shipped[truth_member : truth_member + 1], days, save_every_days=1.0, include_initial=False)
        self.truth = np.asarray(model.psi_from_q(np.asarray(traj)[:, 0]), dtype=np.float64).reshape(days, -1)
        self.scale = model.f0 / model.g  # ssh = scale * psi1
        self.sigma = obs_error_fraction * float((self.scale * psi_clim[:, 0]).std())
        self.observations = self._observations(days, rng)
        others = [m for m in range(shipped.shape[0]) if m not in (0, 1, truth_member)]
        q_ens = perturbed_ensemble(members, rng, model=model, members=others,
                                   decorrelation_days=0.0 if members <= len(others) else 20.0)
        self.E0 = np.asarray(model.psi_from_q(q_ens), dtype=np.float64).reshape(members, -1)
        self.forecast = QGForecast(model)

    def _observations(self, days: int, rng: np.random.Generator) -> list[Observations]:
        masks = AlongTrackAltimetry().mask(self.model.ny, self.model.nx, np.arange(1, days + 1))
        out = []
        for k in range(days):
            idx = np.flatnonzero(masks[k].ravel())
            H = selection_operator(idx, 2 * self.G, self.scale)
            y = self.scale * self.truth[k, idx] + self.sigma * rng.standard_normal(idx.size)
            out.append(Observations(y, np.full(idx.size, self.sigma), H, time=float(k + 1)))
        return out

    def localizer(self, f: LETKF | EnOI) -> Localizer:
        """The localizer of ``f`` (its radius in km, taper and block) on the periodic model grid.

        Parameters
        ----------
        f : the filter settings

        Returns
        -------
        Localizer
        """
        m = self.model
        return grid_localizer(m.y_km, m.x_km, f.radius, taper=f.taper, period=(m.W / 1e3, m.L / 1e3), block=f.block)

    def ssh_scores(self, res: CycleResult, skip: int) -> dict[str, float]:
        """SSH RMSE of the analysis mean vs truth and vs the climatological mean; spread-skill; speed.

        Parameters
        ----------
        res : a run with ``keep_means=True``
        skip : cycles excluded at the start

        Returns
        -------
        dict of scores
        """
        means = res.mean_analyses[skip:, : self.G] * self.scale
        truth = self.truth[skip:, : self.G] * self.scale
        err = np.sqrt(np.mean((means - truth) ** 2, axis=1)).mean()
        clim = np.sqrt(np.mean((self.clim_psi[None, : self.G] * self.scale - truth) ** 2, axis=1)).mean()
        s = res.summary(skip=skip)
        return {"ssh_rmse_m": float(err), "ssh_rmse_climatology_m": float(clim), "ssh_rmse_ratio": float(err / clim),
                "psi_rmse": s["rmse_a"], "psi_spread": s["spread_a"], "spread_skill": s["spread_a"] / s["rmse_a"],
                "seconds_per_analysis": s["seconds_per_analysis"], "cycles_per_second": s["cycles_per_second"]}


def run_qg_altimetry(days: int | None = None, members: int | None = None, *, radius_km: float | None = None,
                     inflation: float | None = None, rtps: float | None = None, block: int | None = None,
                     taper: str | None = None, truth_member: int = 1, seed: int = 0,
                     **kw: Any) -> tuple[CycleResult, dict[str, float]]:
    """Cycled LETKF on the QG altimetry twin (settings: :func:`qg_letkf_settings`, None = tuned).

    Parameters
    ----------
    days : daily cycles (default :data:`DEFAULT_DAYS`)
    members, radius_km, inflation, rtps, block, taper : see :func:`qg_letkf_settings`
    truth_member : shipped state the truth starts from
    seed : seed of the observations and the ensemble (the filter uses ``seed + 1``)
    **kw : passed to :func:`oceanda.kalman.cycle` (checkpoints, progress, ...)

    Returns
    -------
    ``(CycleResult, SSH scores)`` (the first third of the cycles skipped in the scores)
    """
    f, members = qg_letkf_settings(members=members, radius_km=radius_km, inflation=inflation, rtps=rtps, block=block,
                                   taper=taper)
    days = DEFAULT_DAYS if days is None else days
    twin = QGAltimetryTwin(truth_member=truth_member, days=days, members=members, seed=seed)
    res = cycle(twin.forecast, twin.E0, twin.observations, f, localizer=twin.localizer(f), rng=seed + 1, truth=twin.truth,
                keep_means=True, **kw)
    return res, twin.ssh_scores(res, skip=days // 3)


def _daily_observations(obs: xr.Dataset, layout: fields.FieldLayout, library: xr.Dataset) -> list[Observations]:
    """One :class:`Observations` per obs time, its ``time`` in days since the first."""
    times = obs["time"].values
    days = (times - times[0]) / np.timedelta64(1, "D")
    obs_list = observations_from_dataset(obs, layout, library, variables=[v for v in obs.data_vars if v in layout.variables])
    return [Observations(o.y, o.error, o.H, o.coords, time=float(d)) for o, d in zip(obs_list, days)]


def cycled_letkf(library: xr.Dataset, obs: xr.Dataset, *, members: int | None = None, radius_km: float | None = None,
                 inflation: float | None = None, rtps: float | None = None, block: int | None = None,
                 taper: str | None = None, rng: np.random.Generator | int = 0, quiet: bool = True) -> xr.Dataset:
    """A cycled LETKF through every time of ``obs`` with QG forecasts between them.

    The initial ensemble is ``members`` library states (a climatological ensemble) forecast to the first
    observation time; the filter state holds every library variable (``psi`` per layer and ``ssh``),
    so SSH observations update psi through the ensemble covariances; forecasts re-derive ssh from psi.

    Parameters
    ----------
    library : QG states along ``time`` with ``psi`` (and ``ssh``); its attrs configure the model
    obs : observations of library variables, daily
    members, radius_km, inflation, rtps, block, taper : see :func:`qg_letkf_settings` (None = tuned for
        the ensemble size in use)
    rng : random generator or seed (the initial draw and the filter)
    quiet : no progress bar

    Returns
    -------
    xarray.Dataset in the analysis layout, one time per observation time
    """
    f, members = qg_letkf_settings(members=members, radius_km=radius_km, inflation=inflation, rtps=rtps, block=block,
                                   taper=taper)
    g = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    layout = fields.layout_of(library, [v for v in ("psi", "ssh") if v in library])
    if layout.variables[0] != "psi":
        raise OceandaError("cycled LETKF on the QG testbed needs 'psi' in the library")
    ny, nx = library.sizes[layout.spatial[0]], library.sizes[layout.spatial[1]]
    obs_list = _daily_observations(obs, layout, library)
    pick = np.sort(g.choice(library.sizes["time"], size=members, replace=False))
    X0, _ = fields.to_array(library.isel(time=pick), layout, dtype=np.float64)
    forecast = QGForecast(QGModel.from_attrs(library.attrs), layout.n_channels)
    loc = localizer_for_dataset(library, f.radius, taper=f.taper, block=f.block, periodic=True)
    r = cycle(forecast, X0.reshape(members, -1), obs_list, f, localizer=loc, rng=g, t0=obs_list[0].time - 1.0,
              progress=False if quiet else None, keep_ensembles=True)
    members_arr = r.analyses.reshape(len(obs_list), members, layout.n_channels, ny, nx)
    return fields.analysis_dataset(
        members_arr.astype(np.float32), layout, library, obs["time"].values,
        attrs={"method": "letkf", "mode": "kalman (cycled)", "seconds_per_analysis": float(np.mean(r.stats["seconds_analysis"])),
               "members": members, "loc_radius_km": float(f.radius), "inflation": float(f.inflation), "rtps": float(f.rtps)},
    )
