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

``--enoi`` tunes the one-shot EnOI baseline instead ("qg_enoi"): a static ensemble of ``--library``
states from a long free run (every 5 days, from a shipped state used by neither truth), background =
its mean, radius and alpha (covariance scaling) searched on tuning-truth days, scored on evaluation days;
the Schur-localised form (``EnOI(form='schur')``, ``kalman.schur_enoi_ensemble``), the one
``analyse_dataset(method='enoi')`` and the demo use.

    .venv/bin/python benchmarks/tune_qg_letkf.py [--members 20] [--tune-days 30] [--eval-days 60] [--write-tuned]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
import torch

from oceanda import io
from oceanda.experiments.qg_twin import QGAltimetryTwin
from oceanda.kalman import LETKF, EnOI, cycle
from oceanda.testbeds.qg import QGModel


def run(twin: QGAltimetryTwin, radius: float, inflation: float, rtps: float, block: int, skip: int, seed: int):
    f = LETKF(radius=radius, inflation=inflation, rtps=rtps, block=block)
    res = cycle(twin.forecast, twin.E0, twin.observations, f, localizer=twin.localizer(f), rng=seed, truth=twin.truth,
                keep_means=True, progress=False)
    return twin.ssh_scores(res, skip)


def enoi_scores(twin: QGAltimetryTwin, library: np.ndarray, radius: float, alpha: float, days: range) -> dict[str, float]:
    f = EnOI(alpha=alpha, radius=radius, form="schur")  # the form analyse_dataset('enoi') uses for altimetry
    loc = twin.localizer(f)
    bg = library.mean(0)
    err, spr, sec = [], [], []
    for k in days:
        tic = time.perf_counter()
        Ea = f.assimilate(library, twin.observations[k], rng=k, localizer=loc, background=bg)
        sec.append(time.perf_counter() - tic)
        m = Ea.mean(0)[: twin.G] * twin.scale
        err.append(np.sqrt(np.mean((m - twin.truth[k, : twin.G] * twin.scale) ** 2)))
        spr.append(np.sqrt(np.mean(Ea[:, : twin.G].var(0, ddof=1))) * twin.scale)
    clim = np.mean([np.sqrt(np.mean(((bg - twin.truth[k])[: twin.G] * twin.scale) ** 2)) for k in days])
    return {"ssh_rmse_m": float(np.mean(err)), "ssh_rmse_climatology_m": float(clim), "ssh_rmse_ratio": float(np.mean(err) / clim),
            "ssh_spread_skill": float(np.mean(spr) / np.mean(err)), "seconds_per_analysis": float(np.mean(sec))}


def tune_enoi(model: QGModel, a: argparse.Namespace) -> None:
    from oceanda.testbeds.qg import spun_up_state

    tic = time.perf_counter()
    q0 = spun_up_state(member=31, model=model)
    traj, _ = model.run(q0, 5.0 * a.library, save_every_days=5.0, include_initial=False)
    library = np.asarray(model.psi_from_q(np.asarray(traj)[:, 0]), dtype=np.float64).reshape(a.library, -1)
    print(f"library: {a.library} states, 5 days apart  [{time.perf_counter() - tic:.0f} s]", flush=True)
    days = min(a.tune_days, 10)
    tune = QGAltimetryTwin(model, truth_member=0, days=days, members=2, seed=10)
    best = None
    for radius, alpha in itertools.product(a.radii, a.alphas):
        sc = enoi_scores(tune, library, radius, alpha, range(days))
        print(f"  EnOI c={radius:5.0f} km alpha={alpha}: ssh rmse {sc['ssh_rmse_m']:.4g} m (background "
              f"{sc['ssh_rmse_climatology_m']:.4g}), spread/skill {sc['ssh_spread_skill']:.2f}, "
              f"{sc['seconds_per_analysis']:.2f} s/analysis", flush=True)
        if best is None or sc["ssh_rmse_m"] < best[0]:
            best = (sc["ssh_rmse_m"], radius, alpha)
    _, radius, alpha = best
    ev = QGAltimetryTwin(model, truth_member=1, days=days, members=2, seed=20)
    sc = enoi_scores(ev, library, radius, alpha, range(days))
    print(f"chosen: radius {radius} km, alpha {alpha}; evaluation truth:", json.dumps({k: round(v, 6) for k, v in sc.items()}))
    if a.write_tuned:
        path = Path(__file__).resolve().parents[1] / "oceanda" / "kalman" / "tuned.json"
        table = io.read_json(path)
        table["qg_enoi"] = {
            "_note": "QG 64x64, one-shot EnOI with daily along-track altimetry; static ensemble of library states "
                     "(5 days apart), background = library mean, Schur-localised gain (kalman.schur); "
                     "tuned by benchmarks/tune_qg_letkf.py --enoi.",
            "method": "enoi", "members": a.library, "radius_km": radius, "alpha": alpha,
            "evaluation": {k: round(v, 6) for k, v in sc.items()},
        }
        io.write_json(table, path, overwrite=True)
        print(f"wrote {path}")


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
    p.add_argument("--enoi", action="store_true", help="tune the EnOI baseline (radius, alpha) instead of the LETKF")
    p.add_argument("--library", type=int, default=200, help="--enoi: static ensemble size (states 5 days apart)")
    p.add_argument("--alphas", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    a = p.parse_args()
    torch.set_num_threads(1)
    model = QGModel()
    if a.enoi:
        return tune_enoi(model, a)
    tic = time.perf_counter()
    tune = QGAltimetryTwin(model, truth_member=0, days=a.tune_days, members=a.members, seed=10)
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
    ev = QGAltimetryTwin(model, truth_member=1, days=a.eval_days, members=a.members, seed=20)
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
