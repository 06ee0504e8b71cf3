"""L3-style along-track points against the gridded altimetry of the same tracks (bundled QG sample, eval_1).

Two kinds of points, both along the ground tracks of ``obs_altimetry_eval_1.nc``, with its noise:

- ``nearest``: points at arbitrary positions that carry the value of the cell they fall in -- what a gridded
  product's cells hold; superobbing must give back the gridded product's skill;
- ``bilinear``: points sampling the field between cell centres, as a real altimeter does; they carry less
  information than cell-centre values (the filter's own predicted spread says so too).

For each, EnOI (Schur-localised at 100 km, periodic) on the gridded product, on the superobbed points
(``oceanda.open_obs(..., like=)``, what the contrastive sampler gets) and on the raw points (the Kalman
filters' bilinear operator, what ``oceanda enkf`` uses); optionally the bundled window model in local mode.

    OMP_NUM_THREADS=1 python benchmarks/bench_points_vs_gridded.py --days 31 [--local]
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import numpy as np

import oceanda
from oceanda import observe
from oceanda.sampledata import bundled_sample_dir


def _rmse(analysis, truth) -> float:
    return float(np.sqrt(np.nanmean((analysis["ssh_mean"].values - truth["ssh"].values) ** 2)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=31)
    ap.add_argument("--local", action="store_true", help="also the bundled window model in local mode")
    args = ap.parse_args()
    data = bundled_sample_dir("qg")
    lib = oceanda.open_states(data / "library.nc").load()
    truth = oceanda.open_states(data / "truth_eval_1.nc").load().isel(time=slice(0, args.days))
    gridded = oceanda.open_obs(data / "obs_altimetry_eval_1.nc", like=lib).load().isel(time=slice(0, args.days))
    work = Path(tempfile.mkdtemp(prefix="bench_points_"))
    enoi = dict(loc_radius_km=100, periodic=True)
    base = {"enoi": _rmse(oceanda.analyse(lib, gridded, "enoi", **enoi), truth)}
    if args.local:
        local = oceanda.assimilate(data.parent / "models" / "qg_window", lib, gridded, mode="local", quiet=True,
                                   cache_dir=work / "cache")
        base["local"] = _rmse(local, truth)
    print(f"{args.days} days; gridded altimetry: " + ", ".join(f"{k} {v:.5f} m" for k, v in base.items()))
    for interp in ("nearest", "bilinear"):
        pts = observe.AlongTrackPoints(sigma=float(gridded.ssh_error), interpolation=interp).observe(
            truth, np.random.default_rng(1))
        path = oceanda.write(pts, work / f"points_{interp}.nc")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            superobs = oceanda.open_obs(path, like=lib).load()
            raw = oceanda.open_obs(path, like=lib, superob=False).load()
        rows = {"enoi, superobs": _rmse(oceanda.analyse(lib, superobs, "enoi", **enoi), truth) / base["enoi"],
                "enoi, raw points": _rmse(oceanda.analyse(lib, raw, "enoi", **enoi), truth) / base["enoi"]}
        if args.local:
            a = oceanda.assimilate(data.parent / "models" / "qg_window", lib, superobs, mode="local", quiet=True,
                                   cache_dir=work / "cache")
            rows["local, superobs"] = _rmse(a, truth) / base["local"]
        print(f"points ({interp}, {pts.sizes['obs']} points): "
              + ", ".join(f"{k} {v:.4f} x gridded" for k, v in rows.items()))


if __name__ == "__main__":
    main()
