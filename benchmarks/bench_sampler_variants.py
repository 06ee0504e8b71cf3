"""Which similarity/loss gives the best-calibrated local ensemble? (issue 6, "Variants")

Trains one window model per variant (same architecture, data and time budget) on a library, then
runs local analyses of the tuning truth with 1-day altimetry -- no spread recalibration, so the raw
calibration of each variant shows -- and prints, per variant: RMSE / climatology, spread-skill
ratio (1 = calibrated), CRPS-like energy (mean ensemble variance) and the mean ESS per window.

    .venv/bin/python benchmarks/bench_sampler_variants.py --sample sample_data/qg --seconds 120

Theory (paper-notes 5): inner product and cosine models give the right conditional mean with too
much spread; negative squared distance with the one-sided state|obs loss matches the covariance.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    import torch

    from oceanda import io
    from oceanda.analysis.assimilate import assimilate, load_model
    from oceanda.analysis.library import Library
    from oceanda.analysis.window_training import VARIANTS, train_qg_window_model

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sample", type=Path, default=Path("sample_data/qg"))
    p.add_argument("--work", type=Path, default=Path("/tmp/qgvariants"))
    p.add_argument("--seconds", type=float, default=120.0)
    p.add_argument("--every", type=int, default=3)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (one model per variant and seed)")
    a = p.parse_args()
    torch.set_num_threads(2)
    lib = Library.open(a.sample / "library.nc")
    lib.load()
    truth = io.open_states(a.sample / "truth_tune.nc").load()
    obs = io.open_obs(a.sample / "obs_altimetry_tune.nc", like=lib.ds).load()
    idx = np.arange(0, obs.sizes["time"], a.every)
    tr = truth.ssh.sel(time=obs.time.values[idx]).values
    clim = lib.ds.ssh.mean("time").values
    clim_rmse = float(np.sqrt(np.mean((tr - clim) ** 2)))
    out = {}
    for v, seed in [(v, s) for s in a.seeds for v in a.variants]:
        mdir = a.work / f"{v.replace('|', '_')}_seed{seed}"
        t0 = time.time()
        train_qg_window_model(lib, mdir, seconds=a.seconds, variant=v, max_days=1, quiet=True, overwrite=True,
                              pairs_per_epoch=4096, val_pairs=1024, seed=seed)
        t1 = time.time()
        ds = assimilate(load_model(mdir), lib, obs, mode="local", members=20, spread_factor=1.0, times=idx,
                        cache_dir=mdir / "library_cache")
        err = ds.ssh_mean.values - tr
        rmse = float(np.sqrt(np.mean(err ** 2)))
        spread = float(np.sqrt(np.mean(ds.ssh_spread.values ** 2)))
        out[f"{v} seed {seed}"] = {"rmse_to_climatology": rmse / clim_rmse, "spread_skill": spread / rmse,
                  "mean_ess_per_window": float(ds.ess.mean()), "train_seconds": t1 - t0,
                  "seconds_per_analysis": float(ds.attrs["seconds_per_analysis"])}
        print(v, "seed", seed, json.dumps(out[f"{v} seed {seed}"]), flush=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
