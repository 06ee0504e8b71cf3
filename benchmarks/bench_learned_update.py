"""Cycled QG filter whose update is the learned likelihood alone (issue 15), beside the cycled LETKF.

Same initial draw (``cycled_letkf``'s: library states picked with ``default_rng(seed)``, forecast one day to
the first observation), same QG forecasts; the update is
:class:`oceanda.analysis.learned_update.LearnedLikelihoodUpdate` (localised tempered particle weights +
moment-matching transform). Scored: SSH RMSE of the analysis mean / climatology over all days (and days 11-31).
Settings (``--min-ess``, ``--rtps``, ``--tau``) are picked on ``--run tune``, then scored on eval_1.

    nice -n 10 env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_learned_update.py --model /tmp/critics/negsq_nb
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def run(model: str, sample: Path, run_name: str, members: int, seed: int, min_ess: float, rtps: float,
        tau: float | None) -> dict:
    from oceanda import fields, io
    from oceanda.analysis.learned_update import LearnedLikelihoodUpdate, learned_cycle
    from oceanda.experiments.qg_twin import QGForecast, cycled_letkf
    from oceanda.testbeds.qg import QGModel

    lib = io.open_states(sample / "library.nc").load()
    truth = io.open_states(sample / f"truth_{run_name}.nc").load()
    obs = io.open_obs(sample / f"obs_altimetry_{run_name}.nc", like=lib).load()
    layout = fields.layout_of(lib, ["psi", "ssh"])
    ny, nx = lib.sizes["y"], lib.sizes["x"]
    g = np.random.default_rng(seed)  # the draw cycled_letkf makes with rng=seed
    pick = np.sort(g.choice(lib.sizes["time"], size=members, replace=False))
    X0, _ = fields.to_array(lib.isel(time=pick), layout, dtype=np.float64)
    days = (obs["time"].values - obs["time"].values[0]) / np.timedelta64(1, "D")
    ob = obs["ssh"].values.astype(np.float64)[:, None]
    if model.startswith("gaussian:"):  # the exact likelihood of the day's observations (the upper bound)
        from oceanda.analysis.resolution import GaussianCritic
        from oceanda.analysis.windows import WindowSpec

        model = GaussianCritic(float(model.split(":")[1]), WindowSpec(16, 8, 8, True))
    upd = LearnedLikelihoodUpdate(model, layout.channels, (ny, nx), tau=tau, min_ess=min_ess, rtps=rtps)
    fc = QGForecast(QGModel.from_attrs(lib.attrs), layout.n_channels)
    A = learned_cycle(fc, X0.reshape(members, -1), list(ob), list(days), upd, t0=float(days[0]) - 1.0, rng=seed)
    ssh = A.reshape(len(days), members, layout.n_channels, ny, nx)[:, :, 2].mean(axis=1)
    tr = truth["ssh"].values.astype(np.float64)
    clim = lib["ssh"].values.astype(np.float64).mean(axis=0)[None]
    let = cycled_letkf(lib, obs, members=members, rng=seed)["ssh_mean"].values.astype(np.float64)

    def ratio(m, sl=slice(None)):
        return float(np.sqrt(np.mean((m[sl] - tr[sl]) ** 2)) / np.sqrt(np.mean((clim - tr[sl]) ** 2)))

    return {"run": run_name, "min_ess": min_ess, "rtps": rtps, "tau": upd.critic.tau,
            "learned": [round(ratio(ssh), 4), round(ratio(ssh, slice(10, None)), 4)],
            "letkf": [round(ratio(let), 4), round(ratio(let, slice(10, None)), 4)], "ess": upd.last}


def main(argv=None) -> list:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", required=True)
    p.add_argument("--sample", default="sample_data/qg")
    p.add_argument("--run", default="eval_1")
    p.add_argument("--members", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-ess", type=float, nargs="+", default=[5.0])
    p.add_argument("--rtps", type=float, nargs="+", default=[0.5])
    p.add_argument("--tau", type=float, default=None)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    out = []
    for me in a.min_ess:
        for rt in a.rtps:
            r = run(a.model, Path(a.sample), a.run, a.members, a.seed, me, rt, a.tau)
            print(json.dumps(r), flush=True)
            out.append(r)
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
