"""QG data for the sampler benchmarks: a library of free runs, a tuning run and held-out truth runs.

Initial conditions are the shipped spun-up QG states (8 independent members, 5 model years from
noise): members 0-3 seed the library runs (8 perturbed copies each, run ``--decorrelate`` days
before saving so the copies are independent), member 4 the tuning run, members 5-7 the evaluation
truth runs -- never used for the library, training or tuning. The library's runs are laid end to end
on one time axis (run r, day d at day r * 1000 + d) so io can open it as one file.

    .venv/bin/python benchmarks/bench_sampler_qg_data.py --work /tmp/qgwork
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def make_data(work: Path, lib_runs: int = 32, lib_days: int = 200, decorrelate: int = 150, truth_days: int = 70,
              truth_warmup: int = 10, seed: int = 0, overwrite: bool = False) -> dict[str, Path]:
    import torch

    from oceanda import io
    from oceanda.testbeds.qg import QGModel, spun_up_state

    torch.set_num_threads(1)
    work.mkdir(parents=True, exist_ok=True)
    out = {"library": work / "library.nc", "tuning": work / "tuning.nc",
           **{f"eval{i}": work / f"eval{i}.nc" for i in range(3)}}
    if all(p.exists() for p in out.values()) and not overwrite:
        return out
    rng = np.random.default_rng(seed)
    m = QGModel()
    q0 = spun_up_state()
    t0 = time.time()
    base = np.repeat(q0[:4], lib_runs // 4, axis=0)
    pert = base + 0.01 * base.std() * rng.standard_normal(base.shape)
    q = m.advance(pert, decorrelate)
    traj, days = m.run(q, lib_days - 1, save_every_days=1.0, include_initial=True)  # [T, R, 2, ny, nx]
    T, R = traj.shape[:2]
    flat = np.transpose(traj, (1, 0, 2, 3, 4)).reshape(R * T, *traj.shape[2:])
    times = (np.arange(R)[:, None] * 1000 + np.arange(T)[None, :]).ravel().astype(float)
    ds = m.to_dataset(flat, times, attrs={"title": "QG library: free runs end to end", "runs": R, "days_per_run": T})
    ds["run"] = ("time", np.repeat(np.arange(R), T).astype(np.int32), {"units": "1", "long_name": "library run",
                                                                       "oceanda_diagnostic": 1})
    io.write_netcdf(ds, out["library"], overwrite=True)
    print(f"library: {R} runs x {T} days in {time.time() - t0:.0f} s")
    truth = q0[4:8]
    q = m.advance(truth, truth_warmup)
    traj, days = m.run(q, truth_days - 1, save_every_days=1.0, include_initial=True)
    for i, name in enumerate(["tuning", "eval0", "eval1", "eval2"]):
        d = m.to_dataset(traj[:, i], days + 5000 * (i + 1), attrs={"title": f"QG truth run ({name})",
                                                                 "initial_member": 4 + i})
        io.write_netcdf(d, out[name], overwrite=True)
    print(f"truth runs done in {time.time() - t0:.0f} s")
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("/tmp/qgwork"))
    p.add_argument("--lib-runs", type=int, default=32)
    p.add_argument("--lib-days", type=int, default=200)
    p.add_argument("--overwrite", action="store_true")
    a = p.parse_args()
    make_data(a.work, a.lib_runs, a.lib_days, overwrite=a.overwrite)
