"""Peak resident memory of global-mode analyses against a 200k-state QG library (goal: < 2 GB).

The library file is built once from the QG free-run library (bench_sampler_qg_data.py) by periodic
translations -- exact symmetries of the doubly periodic QG box, so every state is a valid QG state --
streamed chunk by chunk into NetCDF (SSH only: 200k x 64 x 64 float32 = 3.3 GB uncompressed, more
than this benchmark's memory goal). The encoder pair is fixed (8 x 8 block sums of the standardised
SSH and of the observed values), so the benchmark measures the library machinery, not training:
embeddings computed in chunks and cached, then analyses that read only the states with weight.

    .venv/bin/python benchmarks/bench_library_memory.py --work /tmp/qgwork --n 200000
Prints the peak RSS after each stage (from getrusage, so it includes everything the process held).
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np


def rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB -> GB


def build_library(work: Path, n: int, chunk: int = 2000) -> Path:
    import dask
    import dask.array as da
    import xarray as xr

    from oceanda import io

    path = work / f"library_{n}.nc"
    if path.exists():
        return path
    base = xr.open_dataset(work / "library.nc")
    ssh = base.ssh  # lazy
    nb = base.sizes["time"]
    ny, nx = base.sizes["y"], base.sizes["x"]

    def block(block_id=None):
        i = block_id[0]
        idx = np.arange(i * chunk, min((i + 1) * chunk, n))
        src = idx % nb
        shift = idx // nb
        u, inv = np.unique(src, return_inverse=True)
        s = np.asarray(ssh.isel(time=u).values)[inv]
        out = np.empty_like(s)
        for k in range(len(idx)):  # shift k: (7 k, 13 k) cells, wrapped
            out[k] = np.roll(s[k], (7 * shift[k] % ny, 13 * shift[k] % nx), axis=(0, 1))
        return out.astype(np.float32)

    nchunks = -(-n // chunk)
    arr = da.map_blocks(block, chunks=((chunk,) * (n // chunk) + ((n % chunk,) if n % chunk else ()), (ny,), (nx,)),
                        dtype=np.float32)
    time_c = np.datetime64("2001-01-01", "ns") + np.arange(n) * np.timedelta64(1, "h")
    ds = xr.Dataset({"ssh": (("time", "y", "x"), arr, dict(base.ssh.attrs))},
                    coords={"time": time_c, "y": base.y, "x": base.x, "lat": base.lat, "lon": base.lon})
    with dask.config.set(scheduler="synchronous"):
        io.write_netcdf(ds, path, overwrite=True)
    print(f"built {path} ({n} states, {nchunks} chunks); peak RSS {rss_gb():.2f} GB", flush=True)
    return path


def fixed_model(out: Path, lib) -> Path:
    """Whole-field model with fixed encoders: 8 x 8 block sums of state and of observed values."""
    from oceanda import fields
    from oceanda.contrastive.encoders import FixedEncoder
    from oceanda.contrastive.model import ContrastiveModel
    from oceanda.contrastive.similarity import Similarity

    ny, nx = lib.shape
    b = 8
    M = np.zeros(((ny // b) * (nx // b), ny * nx), np.float32)
    for iy in range(ny):
        for ix in range(nx):
            M[(iy // b) * (nx // b) + ix // b, iy * nx + ix] = 1.0 / b
    Mo = np.concatenate([M, np.zeros_like(M)], axis=1)
    sample = lib.read(np.arange(0, lib.n, max(1, lib.n // 2000)))
    st = fields.Standardizer.fit(sample)
    cfg = {"grid_fingerprint": fields.grid_fingerprint(lib.ds, ["ssh"]), "normalization": {"state": st.to_dict()},
           "extra": {"state_channels": [["ssh", None]], "obs_channels": [["ssh", None]]}}
    ContrastiveModel(FixedEncoder((1, ny, nx), matrix=M), FixedEncoder((2, ny, nx), matrix=Mo),
                     Similarity("neg_sq_distance", tau=4.0), cfg).save(out, overwrite=True)
    return out


def main() -> None:
    import torch
    import xarray as xr

    from oceanda.analysis import Library
    from oceanda.analysis.assimilate import assimilate

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("/tmp/qgwork"))
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--times", type=int, default=5)
    a = p.parse_args()
    torch.set_num_threads(2)
    path = a.work / f"library_{a.n}.nc"
    if not path.exists():  # build in a child process so its memory does not count below
        import subprocess
        import sys

        subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
                        f"import bench_library_memory as b; from pathlib import Path; b.build_library(Path({str(a.work)!r}), {a.n})"],
                       check=True)
    lib = Library.open(path, chunk=2000)
    mdir = fixed_model(a.work / f"memmodel_{a.n}", lib)
    print(f"library opened ({lib.n} states, {lib.nbytes / 1e9:.2f} GB as float32); peak RSS {rss_gb():.2f} GB", flush=True)
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_sampler_qg import track_obs

    truth = xr.open_dataset(a.work / "eval0.nc").load()
    sigma = 0.1 * float(truth.ssh.std())
    obs = track_obs(truth, 5, np.arange(4, 4 + 3 * a.times, 3), sigma, seed=0)
    t1 = time.perf_counter()
    ds = assimilate(mdir, lib, obs, mode="global", members=20, top_k=10, quiet=True)
    t2 = time.perf_counter()
    print(f"first call (embeds {lib.n} states in chunks, caches them): {t2 - t1:.1f} s; peak RSS {rss_gb():.2f} GB", flush=True)
    ds = assimilate(mdir, lib, obs, mode="global", members=20, top_k=10, quiet=True)
    t3 = time.perf_counter()
    print(f"second call (cached embeddings): {t3 - t2:.1f} s for {a.times} analyses, "
          f"{ds.attrs['seconds_per_analysis']:.2f} s per analysis; ESS {np.round(ds.ess.values, 1).tolist()}; "
          f"states read per analysis (non-negligible weight) {(ds.weight_index.values >= 0).sum(1).tolist()}")
    print(f"PEAK RESIDENT MEMORY {rss_gb():.2f} GB (goal < 2 GB) for a {lib.n}-state library "
          f"of {lib.nbytes / 1e9:.2f} GB", flush=True)


if __name__ == "__main__":
    main()
