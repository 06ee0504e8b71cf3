"""Resolution of window critics at forecast-error scale, and their one-shot local skill (issue 15).

For every model: :func:`oceanda.metrics.likelihood_resolution` of a cycled LETKF ensemble (N = 20, eval_1)
at ``--day`` -- the analysis members of that day and the one-day forecast of the previous day's analysis
(what a filter weights) -- at the model's sampler temperature; and the one-shot local analysis
(``oceanda.assimilate(..., mode='local')``) SSH RMSE / climatology over every day of eval_1.
Gate (issue 15): rank correlation >= 0.5, local ratio <= 1.05 x the bundled model's.

    nice -n 10 env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_critic_resolution.py \\
        --model bundled=sample_data/models/qg_window --model negsq_nb=/tmp/critics/negsq_nb --json out.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def inputs(sample: Path, run: str = "eval_1") -> dict:
    from oceanda import io

    lib = io.open_states(sample / "library.nc").load()
    return {"library": lib, "truth": io.open_states(sample / f"truth_{run}.nc").load(),
            "obs": io.open_obs(sample / f"obs_altimetry_{run}.nc", like=lib).load()}


def cycled_ensembles(data: dict, day: int, members: int = 20, seed: int = 0) -> dict:
    """``{"analysis": Dataset, "forecast": Dataset}`` of the cycled LETKF at ``day`` (member dim)."""
    from oceanda import fields
    from oceanda.experiments.qg_twin import QGForecast, cycled_letkf
    from oceanda.testbeds.qg import QGModel

    lib = data["library"]
    cyc = cycled_letkf(lib, data["obs"], members=members, rng=seed)
    prev = cyc.isel(time=day - 1)[["psi", "ssh"]]
    lay = fields.layout_of(prev, ["psi", "ssh"], sample_dim="member")
    arr, _ = fields.to_array(prev, lay, dtype=np.float64)
    fc = QGForecast(QGModel.from_attrs(lib.attrs), lay.n_channels)(arr.reshape(len(arr), -1), 0.0, 1.0)
    fcst = fields.from_array(fc.reshape(arr.shape).astype(np.float32), lay, prev, sample_coord=prev["member"].values,
                             sample_dim="member")
    return {"analysis": cyc.isel(time=day), "forecast": fcst, "cycle": cyc}


def local_skill(model_dir, data: dict, **kw) -> float:
    """One-shot local analysis SSH RMSE / climatology (library mean) RMSE over every time of ``obs``."""
    import oceanda

    ds = oceanda.assimilate(str(model_dir), data["library"], data["obs"], mode="local", **kw)
    tr = data["truth"]["ssh"].sel(time=ds.time.values).values.astype(np.float64)
    clim = data["library"]["ssh"].values.astype(np.float64).mean(axis=0)
    return float(np.sqrt(np.nanmean((ds["ssh_mean"].values - tr) ** 2)) / np.sqrt(np.nanmean((clim[None] - tr) ** 2)))


def score(name: str, model_dir: str, data: dict, ens: dict, day: int, skill: bool, tau: float | None) -> dict:
    from oceanda.metrics import likelihood_resolution

    out = {"model": model_dir}
    for which in ("analysis", "forecast"):
        r = likelihood_resolution(model_dir, ens[which], data["truth"].isel(time=day), data["obs"].isel(time=day), tau=tau)
        out[which] = {k: round(float(v), 4) for k, v in r.summary.items()}
        out["tau"] = r.tau
    if skill:
        t0 = time.process_time()
        out["local_rmse_over_clim"] = round(local_skill(model_dir, data, tau=tau), 4)
        out["local_cpu_s"] = round(time.process_time() - t0, 1)
    print(name, json.dumps(out), flush=True)
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", action="append", required=True, help="NAME=MODEL_DIR (repeatable)")
    p.add_argument("--sample", default="sample_data/qg")
    p.add_argument("--day", type=int, default=20)
    p.add_argument("--tau", type=float, default=None, help="logit temperature (default: each model's sampler tau)")
    p.add_argument("--no-skill", action="store_true", help="skip the one-shot local analyses")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    data = inputs(Path(a.sample))
    ens = cycled_ensembles(data, a.day)
    res = {}
    for spec in a.model:
        name, _, path = spec.partition("=")
        res[name] = score(name, path, data, ens, a.day, not a.no_skill, a.tau)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
