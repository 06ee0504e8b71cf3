"""Seconds for N local-mode analyses of the bundled QG sample: one process vs a dask LocalCluster of 2 workers.

Both runs analyse the same observation times with the same model (``sample_data/models/qg_window``)
and library (``sample_data/qg/library.nc``); ``identical`` says whether every output variable is
equal bit for bit. The library embeddings are computed once first (into a temporary cache), so the
timed runs measure the analyses; the embedding by the workers is timed on its own (a fresh cache).
The cluster's start-up (worker processes importing torch) is reported apart from the analyses, and
CPU seconds (this process + every worker) beside the wall clock: on a shared machine the wall clock
of 2 workers says more about the neighbours than about the method.

    python benchmarks/bench_distributed.py [--times N] [--workers 2] [--json PATH]

"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data"


def _identical(a, b) -> bool:
    if set(a.variables) != set(b.variables):
        return False
    for v in a.variables:
        x, y = a[v].values, b[v].values
        if x.shape != y.shape or x.dtype != y.dtype:
            return False
        if not (np.array_equal(x, y, equal_nan=True) if x.dtype.kind == "f" else (x == y).all()):
            return False
    return True


def _worker_cpu(client) -> float:
    return float(sum(client.run(time.process_time).values()))


def run(times: int, workers: int, obs_file: str) -> dict:
    from distributed import Client

    from oceanda import api
    from oceanda.analysis.assimilate import local_cluster

    model = SAMPLE / "models" / "qg_window"
    lib_path = SAMPLE / "qg" / "library.nc"
    obs = api.open_obs(SAMPLE / "qg" / obs_file, like=api.open_library(lib_path).ds)
    obs = obs.isel(time=slice(0, times))
    with tempfile.TemporaryDirectory(prefix="bench-distributed-") as tmp:
        cache, fresh = Path(tmp) / "cache", Path(tmp) / "fresh"
        t = time.perf_counter()
        api.assimilate(model, api.open_library(lib_path), obs.isel(time=[0]), cache_dir=cache, quiet=True)
        embed_local = time.perf_counter() - t  # embedding + one analysis, in this process
        t, c = time.perf_counter(), time.process_time()
        local = api.assimilate(model, api.open_library(lib_path), obs, cache_dir=cache, quiet=True)
        local_s, local_cpu = time.perf_counter() - t, time.process_time() - c
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cluster = local_cluster(workers)  # what --scheduler local:N starts
        with cluster, Client(cluster) as client:
            client.run(lambda: __import__("torch").set_num_threads(1))  # torch imported on every worker
            start_s = time.perf_counter() - t
            t, c, w = time.perf_counter(), time.process_time(), _worker_cpu(client)
            dist = api.assimilate(model, api.open_library(lib_path), obs, cache_dir=cache, quiet=True, scheduler=client)
            dist_s, client_cpu, worker_cpu = time.perf_counter() - t, time.process_time() - c, _worker_cpu(client) - w
            t = time.perf_counter()
            api.assimilate(model, api.open_library(lib_path), obs.isel(time=[0]), cache_dir=fresh, quiet=True,
                           scheduler=client)
            embed_dist = time.perf_counter() - t
    n = int(local.sizes["time"])
    return {"analyses": n, "workers": workers, "observations": obs_file,
            "local_seconds": local_s, "distributed_seconds": dist_s, "cluster_start_seconds": start_s,
            "local_seconds_per_analysis": local_s / n, "distributed_seconds_per_analysis": dist_s / n,
            "speedup": local_s / dist_s, "identical": _identical(local, dist),
            "local_cpu_seconds_per_analysis": local_cpu / n,
            "distributed_cpu_seconds_per_analysis": (client_cpu + worker_cpu) / n,
            "distributed_worker_cpu_seconds_per_analysis": worker_cpu / n,
            "embed_plus_one_analysis_local_seconds": embed_local,
            "embed_plus_one_analysis_distributed_seconds": embed_dist}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--times", type=int, default=12, help="observation times analysed (default 12)")
    p.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes (default 2)")
    p.add_argument("--obs", default="obs_altimetry_eval_1.nc", help="observation file of sample_data/qg")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the numbers as JSON")
    args = p.parse_args(argv)
    r = run(args.times, args.workers, args.obs)
    print(f"{r['analyses']} local-mode analyses of {r['observations']} (bundled QG sample, model qg_window)")
    print(f"  single process        {r['local_seconds']:8.2f} s  ({r['local_seconds_per_analysis']:.3f} s/analysis)")
    print(f"  LocalCluster {r['workers']} workers {r['distributed_seconds']:8.2f} s  "
          f"({r['distributed_seconds_per_analysis']:.3f} s/analysis; start-up {r['cluster_start_seconds']:.1f} s apart)")
    print(f"  speed-up {r['speedup']:.2f}x   identical={r['identical']}")
    print(f"  CPU s per analysis: single process {r['local_cpu_seconds_per_analysis']:.3f}, distributed "
          f"{r['distributed_cpu_seconds_per_analysis']:.3f} (workers {r['distributed_worker_cpu_seconds_per_analysis']:.3f})")
    print(f"  library embedding + 1 analysis: local {r['embed_plus_one_analysis_local_seconds']:.2f} s, "
          f"workers {r['embed_plus_one_analysis_distributed_seconds']:.2f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2) + "\n")
    return 0 if r["identical"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
