"""Twin experiments on the QG testbed: truth run, along-track altimetry, climatological initial ensemble.

The filter state is the streamfunction psi (2 layers x ny x nx, flat in ``fields`` order), so
altimetry (SSH = f0 psi1 / g) is a sparse linear operator and localisation is local in psi; the
forecast converts psi -> q, advances every member in one batched model call and converts back.
Used by ``benchmarks/tune_qg_letkf.py`` and by :func:`run_qg_altimetry`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from oceanda.kalman.cycling import CycleResult, FilterSettings, cycle
from oceanda.kalman.localization import grid_localizer
from oceanda.kalman.obsspace import Observations


class QGAltimetryTwin:
    """Truth from shipped member ``truth_member``; ensemble from other shipped members (never 0 or 1).

    ``days`` daily analyses; observation noise 10 % of the climatological SSH standard deviation.
    """

    def __init__(self, model: Any = None, truth_member: int = 0, days: int = 30, members: int = 20, seed: int = 0,
                 obs_error_fraction: float = 0.1):
        from oceanda.observe import AlongTrackAltimetry
        from oceanda.testbeds.qg import QGModel, perturbed_ensemble, spun_up_state

        self.model = model = model or QGModel()
        rng = np.random.default_rng(seed)
        ny, nx = model.ny, model.nx
        self.G = ny * nx
        shipped = spun_up_state(model=model)
        psi_clim = np.asarray(model.psi_from_q(shipped), dtype=np.float64)
        self.clim_psi = psi_clim.reshape(shipped.shape[0], -1).mean(0)
        traj, _ = model.run(shipped[truth_member : truth_member + 1], days, save_every_days=1.0, include_initial=False)
        q_truth = np.asarray(traj)[:, 0]
        self.truth = np.asarray(model.psi_from_q(q_truth), dtype=np.float64).reshape(days, -1)
        self.scale = model.f0 / model.g  # ssh = scale * psi1
        self.sigma = obs_error_fraction * float((self.scale * psi_clim[:, 0]).std())
        masks = AlongTrackAltimetry().mask(ny, nx, np.arange(1, days + 1))
        self.observations: list[Observations] = []
        for k in range(days):
            idx = np.flatnonzero(masks[k].ravel())
            H = sp.csr_matrix((np.full(idx.size, self.scale), (np.arange(idx.size), idx)), shape=(idx.size, 2 * self.G))
            y = self.scale * self.truth[k, idx] + self.sigma * rng.standard_normal(idx.size)
            self.observations.append(Observations(y, np.full(idx.size, self.sigma), H, time=float(k + 1)))
        others = [m for m in range(shipped.shape[0]) if m not in (0, 1, truth_member)]
        q_ens = perturbed_ensemble(members, rng, model=model, members=others,
                                   decorrelation_days=0.0 if members <= len(others) else 20.0)
        self.E0 = np.asarray(model.psi_from_q(q_ens), dtype=np.float64).reshape(members, -1)

    def forecast(self, E: np.ndarray, t0: float, t1: float) -> np.ndarray:
        m = self.model
        q = np.asarray(m.q_from_psi(E.reshape(-1, 2, m.ny, m.nx)))
        q = np.asarray(m.advance(q, t1 - t0))
        return np.asarray(m.psi_from_q(q), dtype=np.float64).reshape(E.shape[0], -1)

    def localizer(self, radius_km: float, block: int = 2, taper: str = "gaspari_cohn") -> Any:
        m = self.model
        return grid_localizer(m.y_km, m.x_km, radius_km, taper=taper, period=(m.W / 1e3, m.L / 1e3), block=block)

    def ssh_scores(self, res: CycleResult, skip: int) -> dict[str, float]:
        """SSH RMSE of the analysis mean vs truth and vs the climatological mean; spread-skill; speed."""
        means = res.mean_analyses[skip:, : self.G] * self.scale
        truth = self.truth[skip:, : self.G] * self.scale
        err = np.sqrt(np.mean((means - truth) ** 2, axis=1)).mean()
        clim = np.sqrt(np.mean((self.clim_psi[None, : self.G] * self.scale - truth) ** 2, axis=1)).mean()
        s = res.summary(skip=skip)
        return {"ssh_rmse_m": float(err), "ssh_rmse_climatology_m": float(clim), "ssh_rmse_ratio": float(err / clim),
                "psi_rmse": s["rmse_a"], "psi_spread": s["spread_a"], "spread_skill": s["spread_a"] / s["rmse_a"],
                "seconds_per_analysis": s["seconds_per_analysis"], "cycles_per_second": s["cycles_per_second"]}


def run_qg_altimetry(days: int = 30, members: int = 20, *, radius_km: float = 50.0, inflation: float = 1.05,
                     rtps: float = 0.0, block: int = 2, truth_member: int = 1, seed: int = 0, **kw: Any) -> tuple[CycleResult, dict[str, float]]:
    """Cycled LETKF on the QG altimetry twin; returns the per-cycle result and SSH scores (first third skipped)."""
    twin = QGAltimetryTwin(truth_member=truth_member, days=days, members=members, seed=seed)
    settings = FilterSettings("letkf", inflation=inflation, rtps=rtps, localizer=twin.localizer(radius_km, block))
    res = cycle(twin.forecast, twin.E0, twin.observations, settings, rng=seed + 1, truth=twin.truth, keep_means=True, **kw)
    return res, twin.ssh_scores(res, skip=days // 3)
