"""Lorenz-96 filter benchmark (Sakov & Oke 2008 setting), the acceptance test of oceanda.kalman.

40 variables, F = 8, every variable observed every 0.05 time units with R = I; 1000 analysis cycles
after a burn-in, mean analysis RMSE over 3 seeds. Targets (DAPPER on a 2-core CPU in brackets):
LETKF N=20 <= 0.21 (0.198), ETKF N=20 <= 0.20 (0.186), stochastic EnKF N=40 <= 0.23 (0.218).
Settings come from oceanda/kalman/tuned.json; ``--tune`` first grid-searches inflation (and the
LETKF radius, Gaspari-Cohn half-width c in grid units) on seeds that are not used for scoring.

    .venv/bin/python benchmarks/bench_l96.py [--cycles 1000] [--burn-in 200] [--tune]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # tiny matrices: BLAS threads only add overhead

import argparse
import itertools
import time

import numpy as np
import torch

from oceanda.experiments.l96_twin import run_lorenz96
from oceanda.kalman import tuned_settings

TARGETS = {"letkf": (20, 0.21, 0.198), "etkf": (20, 0.20, 0.186), "enkf": (40, 0.23, 0.218)}


def score(method, members, settings, seeds, cycles, burn_in):
    out = []
    for s in seeds:
        r = run_lorenz96(method, members, cycles, seed=s, inflation=settings["inflation"], radius=settings.get("radius"),
                         burn_in=burn_in, progress=False)
        out.append(r.summary(skip=burn_in))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cycles", type=int, default=1000)
    p.add_argument("--burn-in", type=int, default=200)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--tune", action="store_true", help="grid-search inflation/radius on seeds 100, 101 first")
    p.add_argument("--methods", nargs="+", default=list(TARGETS))
    a = p.parse_args()
    torch.set_num_threads(1)
    tuned = tuned_settings("lorenz96")
    for method in a.methods:
        N, target, dapper = TARGETS[method]
        settings = dict(tuned[method])
        if a.tune:
            infl = [1.0, 1.005, 1.01, 1.02, 1.03, 1.05] if method != "enkf" else [1.02, 1.03, 1.04, 1.06]
            radii = [6.0, 9.0, 12.0, 16.0, 22.0] if method == "letkf" else [None]
            best = None
            for f, r in itertools.product(infl, radii):
                res = score(method, N, {"inflation": f, "radius": r}, [100, 101], 500, a.burn_in)
                m = float(np.mean([x["rmse_a"] for x in res]))
                print(f"  tune {method}: inflation {f:<6} radius {r}  rmse_a {m:.4f}", flush=True)
                if best is None or m < best[0]:
                    best = (m, f, r)
            settings = {"inflation": best[1], "radius": best[2]}
        tic = time.perf_counter()
        res = score(method, N, settings, a.seeds, a.cycles, a.burn_in)
        rm = [x["rmse_a"] for x in res]
        sp = [x["spread_a"] for x in res]
        ms = np.mean([x["seconds_per_analysis"] for x in res]) * 1e3
        print(f"{method:5s} N={N:2d} inflation={settings['inflation']} radius={settings.get('radius')}: "
              f"rmse_a per seed {np.round(rm, 4).tolist()} mean {np.mean(rm):.4f} (target <= {target}, DAPPER {dapper}) "
              f"spread_a {np.mean(sp):.4f}  {ms:.2f} ms/analysis  [{time.perf_counter() - tic:.0f} s]  "
              f"{'PASS' if np.mean(rm) <= target else 'FAIL'}", flush=True)


if __name__ == "__main__":
    main()
