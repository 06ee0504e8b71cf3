"""Cycled LETKF on the QG testbed with along-track altimetry: grid search, then evaluation.

Twin experiment: the truth is a free QG run from one shipped spun-up state, observed once a day by
along-track altimetry (SSH on the cells crossed by 4 daily tracks, noise 10 % of the SSH std);
the initial ensemble is N other shipped states (a climatological ensemble). The filter state is
the streamfunction psi (2 layers x 64 x 64 = 8192 values), so SSH = f0 psi1 / g is a sparse
linear operator; forecasts convert psi -> q, run the batched model for a day and convert back.

Localisation radius (Gaspari-Cohn half-width c, km, periodic distances) and inflation are tuned by a
grid search on a TUNING truth (shipped member 0); the chosen values are then scored on a separate
EVALUATION truth (shipped member 1): SSH RMSE against the climatological mean's RMSE, spread-skill
ratio and cycles per second. ``--write-tuned`` stores the choice in oceanda/kalman/tuned.json
("qg_altimetry"), where the demo reads it.

    .venv/bin/python benchmarks/tune_qg_letkf.py [--members 20] [--tune-days 30] [--eval-days 60] [--write-tuned]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import torch  # noqa: E402

from oceanda import io  # noqa: E402
from oceanda.kalman import FilterSettings, Observations, cycle, grid_localizer  # noqa: E402
from oceanda.observe import AlongTrackAltimetry  # noqa: E402
from oceanda.testbeds.qg import QGModel, perturbed_ensemble, spun_up_state  # noqa: E402


class QGTwin:
    def __init__(self, model: QGModel, truth_member: int, days: int, members: int, seed: int):
        self.model = model
        rng = np.random.default_rng(seed)
        ny, nx = model.ny, model.nx
        self.G = ny * nx
        shipped = spun_up_state(model=model)
        self.clim_psi = np.asarray(model.psi_from_q(shipped)).reshape(shipped.shape[0], -1).mean(0)
        q0 = shipped[truth_member : truth_member + 1]
        traj, _ = model.run(q0, days, save_every_days=1.0, include_initial=False)
        q_truth = np.asarray(traj)[:, 0]  # [days, 2, ny, nx]
        self.truth = np.asarray(model.psi_from_q(q_truth), dtype=np.float64).reshape(days, -1)
        self.scale = model.f0 / model.g  # ssh = scale * psi1
        ssh_truth = self.scale * self.truth[:, : self.G]
        ssh_clim_sd = float((self.scale * np.asarray(model.psi_from_q(shipped))[:, 0]).std())
        self.sigma = 0.1 * ssh_clim_sd
        alt = AlongTrackAltimetry()
        masks = alt.mask(ny, nx, np.arange(1, days + 1))
        self.observations = []
        for k in range(days):
            idx = np.flatnonzero(masks[k].ravel())
            H = sp.csr_matrix((np.full(idx.size, self.scale), (np.arange(idx.size), idx)), shape=(idx.size, 2 * self.G))
            y = ssh_truth[k, idx] + self.sigma * rng.standard_normal(idx.size)
            self.observations.append(Observations(y, np.full(idx.size, self.sigma), H, time=float(k + 1)))
        others = [m for m in range(shipped.shape[0]) if m not in (0, 1)]
        q_ens = perturbed_ensemble(members, rng, model=model, members=others, decorrelation_days=0.0 if members <= len(others) else 20.0)
        self.E0 = np.asarray(model.psi_from_q(q_ens), dtype=np.float64).reshape(members, -1)

    def forecast(self, E: np.ndarray, t0: float, t1: float) -> np.ndarray:
        m = self.model
        q = np.asarray(m.q_from_psi(E.reshape(-1, 2, m.ny, m.nx)))
        q = np.asarray(m.advance(q, t1 - t0))
        return np.asarray(m.psi_from_q(q), dtype=np.float64).reshape(E.shape[0], -1)

    def ssh_scores(self, res, skip: int) -> dict[str, float]:
        means = res.mean_analyses[skip:, : self.G] * self.scale
        truth = self.truth[skip:, : self.G] * self.scale
        rmse_t = np.sqrt(np.mean((means - truth) ** 2, axis=1))
        clim = np.sqrt(np.mean((self.clim_psi[None, : self.G] * self.scale - truth) ** 2, axis=1))
        s = res.summary(skip=skip)
        return {"ssh_rmse_m": float(rmse_t.mean()), "ssh_rmse_climatology_m": float(clim.mean()),
                "ssh_rmse_ratio": float(rmse_t.mean() / clim.mean()), "psi_rmse": s["rmse_a"], "psi_spread": s["spread_a"],
                "spread_skill": s["spread_a"] / s["rmse_a"], "seconds_per_analysis": s["seconds_per_analysis"],
                "cycles_per_second": s["cycles_per_second"]}


def run(twin: QGTwin, radius: float, inflation: float, rtps: float, block: int, skip: int, seed: int):
    m = twin.model
    loc = grid_localizer(m.y_km, m.x_km, radius, period=(m.W / 1e3, m.L / 1e3), block=block)
    settings = FilterSettings("letkf", inflation=inflation, rtps=rtps, localizer=loc)
    res = cycle(twin.forecast, twin.E0, twin.observations, settings, rng=seed, truth=twin.truth, keep_means=True, progress=False)
    return twin.ssh_scores(res, skip)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--members", type=int, default=20)
    p.add_argument("--tune-days", type=int, default=30)
    p.add_argument("--eval-days", type=int, default=60)
    p.add_argument("--radii", type=float, nargs="+", default=[40.0, 70.0, 100.0])
    p.add_argument("--inflations", type=float, nargs="+", default=[1.02, 1.08])
    p.add_argument("--rtps", type=float, default=0.0)
    p.add_argument("--block", type=int, default=2)
    p.add_argument("--write-tuned", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(1)
    model = QGModel()
    tic = time.perf_counter()
    tune = QGTwin(model, truth_member=0, days=a.tune_days, members=a.members, seed=10)
    print(f"tuning twin: {a.tune_days} days, {np.mean([o.size for o in tune.observations]):.0f} obs/day, "
          f"sigma_ssh {tune.sigma:.4g} m  [{time.perf_counter() - tic:.0f} s]", flush=True)
    best = None
    for radius, infl in itertools.product(a.radii, a.inflations):
        tic = time.perf_counter()
        sc = run(tune, radius, infl, a.rtps, a.block, a.tune_days // 2, seed=1)
        print(f"  c={radius:5.0f} km inflation={infl:.3f} rtps={a.rtps}: ssh rmse {sc['ssh_rmse_m']:.4g} m "
              f"(climatology {sc['ssh_rmse_climatology_m']:.4g}), spread/skill {sc['spread_skill']:.2f}  "
              f"[{time.perf_counter() - tic:.0f} s]", flush=True)
        if best is None or sc["ssh_rmse_m"] < best[0]:
            best = (sc["ssh_rmse_m"], radius, infl)
    _, radius, infl = best
    print(f"chosen: radius {radius} km, inflation {infl}, rtps {a.rtps}, block {a.block}", flush=True)
    ev = QGTwin(model, truth_member=1, days=a.eval_days, members=a.members, seed=20)
    sc = run(ev, radius, infl, a.rtps, a.block, min(10, a.eval_days // 3), seed=2)
    print("evaluation truth:", json.dumps({k: round(v, 6) for k, v in sc.items()}), flush=True)
    if a.write_tuned:
        path = Path(__file__).resolve().parents[1] / "oceanda" / "kalman" / "tuned.json"
        table = io.read_json(path)
        table["qg_altimetry"] = {
            "_note": "QG 64x64 two-layer, daily along-track altimetry (4 tracks/day, sigma 10% of SSH std); state psi; "
                     "tuned by benchmarks/tune_qg_letkf.py on a tuning truth, scored on a separate evaluation truth. "
                     "radius_km = Gaspari-Cohn half-width c (periodic distances); block = points per local analysis tile side.",
            "method": "letkf", "members": a.members, "radius_km": radius, "inflation": infl, "rtps": a.rtps, "block": a.block,
            "evaluation": {k: round(v, 6) for k, v in sc.items()},
        }
        io.write_json(table, path, overwrite=True)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
