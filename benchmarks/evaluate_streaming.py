"""Does `oceanda.evaluate` stream over time? Peak memory for a short and a 4x longer record.

Writes a synthetic truth (ssh, 64x64) and a 24-member ensemble analysis to a temporary directory,
opens them lazily with oceanda.open_states (chunks of 64 times) and scores them (figures off).
Prints the on-disk ensemble size, the wall time and the peak resident memory of each run (each in a
fresh subprocess). Streaming means the peak stays flat while the record grows.

    .venv/bin/python benchmarks/evaluate_streaming.py [--times 96 384] [--members 24]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import json, sys, time
import dask, numpy as np
def hwm():  # peak RSS of this process image (ru_maxrss would carry the parent's peak across exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
dask.config.set(scheduler="threads", num_workers=2)
import torch; torch.set_num_threads(1)
import oceanda
d = sys.argv[1]
base = hwm()
t0 = time.perf_counter()
truth = oceanda.open_states(f"{d}/truth.nc")
ens = oceanda.open_states(f"{d}/ens.nc", check_values=False)
res = oceanda.evaluate(truth, {"ens": ens}, f"{d}/report", figures=False, quiet=True, overwrite=True)
print(json.dumps({"seconds": time.perf_counter() - t0, "base_rss_mb": base, "peak_rss_mb": hwm(),
                  "rmse": res["methods"]["ens"]["rmse"], "spread_skill": res["methods"]["ens"]["spread_skill"]}))
"""


def make(d: str, nt: int, m: int, n: int = 64) -> int:
    import numpy as np
    import xarray as xr

    from oceanda import fields, io

    rng = np.random.default_rng(0)
    y = np.arange(n) * 10.0 + 5
    time_ = np.datetime64("2020-01-01") + np.arange(nt) * np.timedelta64(1, "D")
    lat = 35 + (y[:, None] / 111.0) + 0 * y[None, :]
    lon = -60 + (y[None, :] / 90.0) + 0 * y[:, None]
    coords = {"time": time_, "y": ("y", y, {"units": "km"}), "x": ("x", y, {"units": "km"}),
              "lat": (("y", "x"), lat), "lon": (("y", "x"), lon)}
    truth = xr.Dataset({"ssh": (("time", "y", "x"), rng.normal(size=(nt, n, n)).astype("f4"), {"units": "m"})}, coords=coords)
    io.write_netcdf(truth, f"{d}/truth.nc", complevel=1)
    layout = fields.layout_of(truth)
    parts = []
    for t0 in range(0, nt, 32):  # build the file in pieces, so the benchmark itself stays small
        arr, _ = fields.to_array(truth.isel(time=slice(t0, t0 + 32)))
        centre = arr - 0.5 * rng.normal(size=arr.shape).astype("f4")
        members = centre[:, None] + 0.5 * rng.normal(size=(arr.shape[0], m, *arr.shape[1:])).astype("f4")
        parts.append(fields.analysis_dataset(members, layout, truth, truth.time.values[t0:t0 + 32]))
    ens = xr.concat(parts, dim="time")
    ens.attrs["seconds_per_analysis"] = 0.0
    io.write_netcdf(ens, f"{d}/ens.nc", complevel=1)
    return os.path.getsize(f"{d}/ens.nc")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--times", type=int, nargs="+", default=[96, 384])
    ap.add_argument("--members", type=int, default=24)
    args = ap.parse_args()
    for nt in args.times:
        with tempfile.TemporaryDirectory() as d:
            size = make(d, nt, args.members)
            out = subprocess.run([sys.executable, "-c", CHILD, d], capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            in_memory = nt * args.members * 64 * 64 * 8 / 2**20
            print(f"times={nt:5d} members={args.members} ensemble file {size / 2**20:7.1f} MiB "
                  f"(float64 in memory {in_memory:7.1f} MiB): {r['seconds']:6.1f} s, "
                  f"peak RSS {r['peak_rss_mb']:7.1f} MiB (after imports {r['base_rss_mb']:6.1f}), "
                  f"rmse {r['rmse']:.4f}, spread_skill {r['spread_skill']:.3f}")


if __name__ == "__main__":
    main()
