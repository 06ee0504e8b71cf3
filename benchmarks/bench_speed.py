"""Issue 16's speed table in one run: seconds per analysis of every method on the same observations, at 64² and 256².

What it measures, all single-threaded (BLAS, OpenMP and torch at one thread) and as CPU seconds, medians
over the analysed days, so the ratios compare kernels and not the machine's load:

- local, hybrid (contrastive), EnOI and LETKF on the SAME observations (day 0..D-1 of
  ``obs_altimetry_eval_1.nc``) at 64² (the bundled sample) and at 256² (``oceanda sample-data --testbed qg
  --nx 256``, made once under ``$OCEANDA_BENCH_CACHE``, default /tmp/oceanda_bench_speed). The LETKF analyses
  a 20-member ensemble of library states (the cost of one cycled analysis without its forecast) twice: with
  the demo's tuned settings (``tuned.json`` qg_altimetry: tiles of 2 x 2 points at 64², the same 31 km tiles
  at every grid) and point-wise (block 1; transforms on a coarser grid where the spacing is under radius/4,
  ``weight_spacing='auto'``): ``letkf_256_over_64`` is the point-wise ratio. EnOI uses the demo's ``qg_enoi``
  settings. At 256² the bundled window model (trained at 64²) is applied to 256² windows: its skill there
  means nothing, its cost is what is measured, with a library of about as many windows as the bundled one
  (``--full-library``: every 8 px, as at 64²).
- the window search of one analysis (its 64 windows) against libraries of 1e4 .. 1e6 windows, with the posterior
  mass kept (``benchmarks/bench_local_engine.py``), one thread (CPU ms), and at 1e6 on every physical core as
  the package runs it by default (``query_wall_ms_1e6_cores``: wall ms; the same numbers, bit for bit);
- optionally (``--startup``, ``--memory``) the CLI start-up and the peak memory of enkf/evaluate.

    .venv/bin/python benchmarks/bench_speed.py [--days 3] [--json PATH] [--skip-256] [--startup] [--memory]

JSON keys: ``local_over_letkf_64``, ``letkf_256_over_64``, ``query_ms_1e6``, ``kept_mass_1e6`` and the whole table;
``local_over_letkf_64_paired`` (with its interquartile range): the median ratio of local and LETKF analyses timed
alternately, day by day (``--rounds`` times each day), what a drifting load moves least.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse
import json
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
SAMPLE, MODEL = ROOT / "sample_data" / "qg", ROOT / "sample_data" / "models" / "qg_window"
CACHE = Path(os.environ.get("OCEANDA_BENCH_CACHE", "/tmp/oceanda_bench_speed"))


def data_dir(nx: int) -> Path:
    """The QG sample at ``nx``: the bundled one at 64, else made once (sample-data --size small) under CACHE."""
    if nx == 64:
        return SAMPLE
    import oceanda

    out = CACHE / f"qg_nx{nx}"
    if not (out / "library.nc").exists():
        print(f"making the QG sample at {nx}x{nx} in {out} (once; a few minutes)", file=sys.stderr, flush=True)
        oceanda.sample_data("qg", out, nx=nx, size="small", seed=2026, quiet=True)
    return out


def _inputs(data: Path, days: int):
    from oceanda import io

    lib = io.open_states(data / "library.nc").load()
    obs = io.open_obs(data / "obs_altimetry_eval_1.nc", like=lib).load().isel(time=slice(0, days))
    truth = io.open_states(data / "truth_eval_1.nc").load().isel(time=slice(0, days))
    return lib, obs, truth


def _rmse_ratio(mean_ssh: np.ndarray, truth, lib) -> float:
    """SSH RMSE over the analysed days relative to climatology's (the library mean)."""
    tr = truth.ssh.values
    clim = lib.ssh.values.mean(axis=0)
    return float(np.sqrt(np.nanmean((mean_ssh - tr) ** 2)) / np.sqrt(np.nanmean((clim[None] - tr) ** 2)))


def contrastive(mode: str, lib, obs, truth, library_stride: int | None = None, precision: str = "fast") -> dict:
    """Median CPU seconds per analysis of the local or hybrid sampler (prepared once: embedding excluded)."""
    s = _sampler(mode, lib, library_stride, precision)
    inputs = s.read_obs(obs, s.library)
    ssh = s.library.layout.channels.index(("ssh", None))
    ts, means = [], []
    for d, inp in enumerate(inputs):
        t = time.process_time()
        a = s.analyse(inp, np.random.default_rng([0, d]))
        ts.append(time.process_time() - t)
        means.append(a.mean[ssh])
    return {"seconds": float(np.median(ts)), "rmse_clim": _rmse_ratio(np.stack(means), truth, lib),
            "library_windows": len(s.windows)}


def _sampler(mode: str, lib, library_stride: int | None = None, precision: str = "fast"):
    """The bundled window model's local or hybrid sampler, prepared on ``lib`` (embeddings cached under CACHE)."""
    from oceanda.analysis.assimilate import load_model, resolve_settings
    from oceanda.analysis.samplers import HybridSampler, LocalSampler

    model, enc = load_model(MODEL)
    cls = LocalSampler if mode == "local" else HybridSampler
    settings = resolve_settings(model, library_stride=library_stride, precision=precision)
    return cls(enc, settings).prepare(lib, cache_dir=CACHE / "library_cache")


def _letkf_members(lib, members: int = 20):
    """The LETKF's ensemble: ``members`` library states (seed 0), as a ``member`` dimension."""
    pick = np.sort(np.random.default_rng(0).choice(lib.sizes["time"], members, replace=False))
    return lib.isel(time=pick).rename(time="member").drop_vars("member", errors="ignore")


def library_stride(nx: int, states: int, windows: int = 26112) -> int | None:
    """The library stride (a power of 2 >= 8) giving about as many library windows as the bundled 64^2 library.

    Why: a window library cut every 8 px from every state grows with the grid area, and the search of each of
    the (also area-many) analysis windows with it: quadratic. Holding the library's size fixed measures what the
    analysis itself costs per grid point; ``--full-library`` keeps the model's stride instead.
    """
    if nx == 64:
        return None
    stride = 8
    while states * (nx // (2 * stride)) ** 2 >= windows:
        stride *= 2
    return stride


def kalman(method: str, lib, obs, truth, members: int = 20, **overrides) -> dict:
    """CPU seconds per analysis of EnOI (static library ensemble) or one LETKF analysis of ``members`` states."""
    from oceanda.kalman import analyse_dataset, tuned_filter

    if method == "enoi":
        ens, f = lib, tuned_filter("qg_enoi", **overrides)
    else:
        ens, f = _letkf_members(lib, members), tuned_filter("qg_altimetry", **overrides)
    ts, means = [], []
    for d in range(obs.sizes["time"]):
        t = time.process_time()
        ds = analyse_dataset(ens, obs.isel(time=[d]), f, periodic=True, rng=0)
        ts.append(time.process_time() - t)
        means.append(ds["ssh_mean"].values[0])
    return {"seconds": float(np.median(ts)), "rmse_clim": _rmse_ratio(np.stack(means), truth, lib)}


def grid_row(nx: int, days: int, full_library: bool = False, precision: str = "fast") -> dict:
    """Every method at one grid size on the same observations."""
    lib, obs, truth = _inputs(data_dir(nx), days)
    row = {"nx": nx, "library_states": int(lib.sizes["time"]),
           "observations_per_day": int(np.isfinite(obs.ssh.values).sum() / obs.sizes["time"])}
    stride = None if full_library else library_stride(nx, lib.sizes["time"])
    row["library_stride"] = stride
    for name, fn in (("local", lambda: contrastive("local", lib, obs, truth, stride, precision)),
                     ("hybrid", lambda: contrastive("hybrid", lib, obs, truth, stride, precision)),
                     # the other precision of local mode, for the record (bit for bit the loop engine when exact)
                     ("local_other", lambda: contrastive("local", lib, obs, truth, stride,
                                                         "exact" if precision == "fast" else "fast")),
                     ("enoi", lambda: kalman("enoi", lib, obs, truth)),
                     # the demo's tuned LETKF: 2 x 2 tiles at 64^2, i.e. tiles of 31 km: the same km at every nx
                     ("letkf", lambda: kalman("letkf", lib, obs, truth, block=max(1, 2 * nx // 64))),
                     # one local analysis per grid point, transforms on a coarser grid where dx << radius (auto)
                     ("letkf_points", lambda: kalman("letkf", lib, obs, truth, block=1))):
        row[name] = fn()
        print(f"  {nx}x{nx} {name:7s} {row[name]['seconds']:8.3f} CPU-s per analysis, "
              f"RMSE/clim {row[name]['rmse_clim']:.3f}", file=sys.stderr, flush=True)
    return row


def paired_64(days: int, rounds: int = 5) -> dict:
    """Local against LETKF analyses timed alternately, day by day: the median of ``rounds x days`` paired ratios.

    Why beside the per-method medians: on a shared machine the load drifts between one method's block of
    analyses and the next (the two ratios of back-to-back runs here ranged 0.85-1.95); a pair measured
    within a second sees the same load.
    """
    from oceanda.analysis.local_mode import BF16_ENV, bf16_products
    from oceanda.kalman import analyse_dataset, tuned_filter

    lib, obs, _ = _inputs(SAMPLE, days)
    s = _sampler("local", lib)
    inputs = s.read_obs(obs, s.library)
    ens = _letkf_members(lib)
    filters = {"tiles": tuned_filter("qg_altimetry", block=2), "points": tuned_filter("qg_altimetry", block=1)}
    ratios: dict = {"tiles": [], "points": [], "f32": []}
    bf16 = bf16_products()
    for r in range(rounds):
        for d, inp in enumerate(inputs):
            local = _cpu(lambda: s.analyse(inp, np.random.default_rng([0, d])))
            letkf = {k: _cpu(lambda: analyse_dataset(ens, obs.isel(time=[d]), f, periodic=True, rng=0))
                     for k, f in filters.items()}
            if bf16:  # the same analysis with float32 window means, for the record
                with mock.patch.dict(os.environ, {BF16_ENV: "0"}):
                    ratios["f32"].append(_cpu(lambda: s.analyse(inp, np.random.default_rng([0, d]))) / letkf["tiles"])
            for k, v in letkf.items():
                ratios[k].append(local / v)
    q = {k: np.percentile(v, [25, 50, 75]) if v else [np.nan] * 3 for k, v in ratios.items()}
    return {"local_over_letkf_64_paired": float(q["tiles"][1]), "local_over_letkf_64_paired_iqr": q["tiles"][[0, 2]].tolist(),
            "local_over_letkf_points_64_paired": float(q["points"][1]),
            "local_over_letkf_points_64_paired_iqr": q["points"][[0, 2]].tolist(), "paired_analyses": len(ratios["tiles"]),
            "local_bf16_means": bf16, "local_float32_means_over_letkf_64_paired": float(q["f32"][1])}


def _cpu(fn) -> float:
    """CPU seconds of one call."""
    t = time.process_time()
    fn()
    return time.process_time() - t


def search_row() -> dict:
    """The window search of one analysis at 1e4 .. 1e6 library windows (bench_local_engine's sweep, auto kind)."""
    from bench_local_engine import search_sweep

    from oceanda.analysis.search import auto_kind
    from oceanda.threads import physical_cores

    rows = [search_sweep((n,), (auto_kind(n),), repeats=3)[0] for n in (10**4, 10**5, 10**6)]
    for r in rows:
        print(f"  search {r['size']:>8.0e} windows ({r['kind']}): {r['ms']:7.1f} CPU-ms per analysis, "
              f"kept mass {r['kept_mass']:.5f}", file=sys.stderr, flush=True)
    top = rows[-1]
    out = {"search_sweep": rows, "query_ms_1e6": top["ms"], "kept_mass_1e6": top["kept_mass"],
           "query_gemm_ms_1e6": top.get("gemm_ms"), "query_kind_1e6": top["kind"],
           "query_rank_1e6": top.get("rank"), "query_logit_error_1e6": top.get("logit_error_max")}
    cores = physical_cores()
    if cores > 1 and top["kind"] == "fused":  # what a user waits on every core (the package's default)
        par = search_sweep((10**6,), ("fused",), repeats=3, threads=(cores,))[0]
        print(f"  search    1e+06 windows (fused, {cores} threads): {par['wall_ms']:7.1f} wall-ms per analysis "
              f"({par['ms']:.1f} CPU-ms), kept mass {par['kept_mass']:.5f}", file=sys.stderr, flush=True)
        out |= {"query_wall_ms_1e6_cores": par["wall_ms"], "query_cpu_ms_1e6_cores": par["ms"],
                "query_cores_1e6": cores, "kept_mass_1e6_cores": par["kept_mass"]}
    return out


def _print(res: dict) -> None:
    print(f"\noceanda speed (CPU s per analysis, one thread; load average {res['load_average']:.1f})")
    methods = ("local", "hybrid", "local_other", "enoi", "letkf", "letkf_points")
    print(f"{'grid':>8} {'local':>8} {'hybrid':>8} {'local*':>8} {'EnOI':>8} {'LETKF':>8} {'LETKF/pt':>8}   "
          f"RMSE/clim (same order; local* = local at the other precision)")
    for r in res["grids"]:
        secs = " ".join(f"{r[m]['seconds']:8.3f}" for m in methods)
        skill = " ".join(f"{r[m]['rmse_clim']:.3f}" for m in methods)
        print(f"{r['nx']:>4}x{r['nx']:<3} {secs}   {skill}")
    for k in ("local_over_letkf_64", "local_over_letkf_points_64", "local_other_over_letkf_64", "hybrid_over_letkf_64",
              "local_over_letkf_64_paired", "local_over_letkf_points_64_paired",
              "local_float32_means_over_letkf_64_paired", "letkf_256_over_64", "letkf_tiles_256_over_64",
              "local_256_over_64",
              "query_ms_1e6", "kept_mass_1e6", "query_wall_ms_1e6_cores", "query_cpu_ms_1e6_cores"):
        if k in res:
            print(f"{k:>24}: {res[k]:.4g}")
    if "local_bf16_means" in res:
        print(f"{'local_bf16_means':>24}: {res['local_bf16_means']}")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--days", type=int, default=3, help="analysed days of eval_1 (default 3)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--skip-256", action="store_true", help="64x64 only")
    p.add_argument("--skip-search", action="store_true", help="no library-size sweep")
    p.add_argument("--full-library", action="store_true",
                   help="at 256^2 cut library windows every 8 px as at 64^2 (4x the windows per state); default: "
                        "about as many library windows as the bundled 64^2 library")
    p.add_argument("--precision", choices=("exact", "fast"), default="fast",
                   help="local/hybrid sampler precision (SamplerSettings.precision; default fast, the package's; "
                        "local is also timed at the other one)")
    p.add_argument("--rounds", type=int, default=5, help="rounds of the paired local/LETKF timing at 64^2 (default 5)")
    p.add_argument("--startup", action="store_true", help="also the CLI start-up (bench_startup.py)")
    p.add_argument("--memory", action="store_true", help="also enkf/evaluate peak memory (bench_memory.py)")
    a = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    res: dict = {"load_average": os.getloadavg()[0], "days": a.days, "grids": []}
    for nx in (64,) if a.skip_256 else (64, 256):
        res["grids"].append(grid_row(nx, a.days, a.full_library, a.precision))
    g = {r["nx"]: r for r in res["grids"]}
    res["local_over_letkf_64"] = g[64]["local"]["seconds"] / g[64]["letkf"]["seconds"]
    res["hybrid_over_letkf_64"] = g[64]["hybrid"]["seconds"] / g[64]["letkf"]["seconds"]
    res["local_over_letkf_points_64"] = g[64]["local"]["seconds"] / g[64]["letkf_points"]["seconds"]
    res["local_other_over_letkf_64"] = g[64]["local_other"]["seconds"] / g[64]["letkf"]["seconds"]
    res["precision"] = a.precision
    res.update(paired_64(a.days, a.rounds))
    if 256 in g:
        res["letkf_256_over_64"] = g[256]["letkf_points"]["seconds"] / g[64]["letkf_points"]["seconds"]
        res["letkf_tiles_256_over_64"] = g[256]["letkf"]["seconds"] / g[64]["letkf"]["seconds"]
        res["local_256_over_64"] = g[256]["local"]["seconds"] / g[64]["local"]["seconds"]
    if not a.skip_search:
        res.update(search_row())
    if a.startup:
        from bench_startup import startup_seconds

        res["startup_seconds"] = startup_seconds()
    if a.memory:
        from bench_memory import peak_rss_mb

        res["peak_rss_mb"] = peak_rss_mb()
    _print(res)
    if a.json:
        a.json.write_text(json.dumps(res, indent=2, default=float))
    return res


if __name__ == "__main__":
    main()
