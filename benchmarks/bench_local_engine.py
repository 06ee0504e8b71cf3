"""Local mode's engines and window search on the bundled QG sample (issue 16).

Why: local mode used to gather every candidate window per analysis window (the loop engine); the dense
engine does an analysis as a few matrix products on a window table. This prints, in one run:

- CPU seconds per local analysis, loop vs dense (median of repeats, single-threaded), and the RMSE of both
  against ``truth_eval_1.nc`` (the same to float32 rounding);
- the SEARCH alone (:class:`oceanda.analysis.search.WindowIndex`) at library sizes 1e4 .. 1e6 windows: real
  window embeddings of the bundled library at library stride 1 (408 states x 4096 positions ~ 1.7e6 windows,
  embedded once and cached under /tmp, never in the repository), subsampled; ms per analysis (all 64
  analysis windows) and the kept posterior mass measured exactly against brute force (float64 scores).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_local_engine.py [--days 3] [--repeats 3] [--json PATH]
        [--search-only] [--sizes 1e4 1e5 1e6] [--kinds exact flat ivf fused] [--threads 1 2]

``search_sweep``, ``local_seconds`` and ``query_1e6`` (the keys ``query_ms_1e6``, ``kept_mass_1e6``) are
importable (benchmarks/bench_speed.py). The fused search is timed with 1 and 2 torch threads (``--threads``).
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA, MODEL = ROOT / "sample_data" / "qg", ROOT / "sample_data" / "models" / "qg_window"
CACHE = Path(os.environ.get("OCEANDA_BENCH_CACHE", "/tmp/oceanda_bench_local"))


def _sampler(**settings):
    """A prepared LocalSampler on the bundled sample, its inputs of obs_altimetry_eval_1 and the truth."""
    import torch

    from oceanda import io
    from oceanda.analysis.assimilate import load_model, resolve_settings
    from oceanda.analysis.samplers import LocalSampler

    torch.set_num_threads(1)
    model, enc = load_model(MODEL)
    lib = io.open_states(DATA / "library.nc").load()
    obs = io.open_obs(DATA / "obs_altimetry_eval_1.nc", like=lib).load()
    truth = io.open_states(DATA / "truth_eval_1.nc").load()
    s = LocalSampler(enc, resolve_settings(model, **settings)).prepare(lib, cache_dir=CACHE / "library_cache")
    return s, s.read_obs(obs, s.library), truth


def local_seconds(days: int = 3, repeats: int = 3, engines=("loop", "dense"), **settings) -> dict:
    """CPU seconds per local analysis (median over days x repeats) and the ssh RMSE to the truth, per engine.

    Returns
    -------
    dict: ``{engine: {"seconds": .., "rmse_ssh": .., "dropped_mass": ..}}`` plus ``"dense_over_loop"``
    """
    s, inputs, truth = _sampler(**settings)
    ssh = s.library.layout.channels.index(("ssh", None))
    out = {}
    for eng in engines:
        s.engine = eng
        ts, err, dropped = [], [], []
        for d in range(days):
            for _ in range(repeats):
                t = time.process_time()
                a = s.analyse(inputs[d], np.random.default_rng([0, d]))
                ts.append(time.process_time() - t)
            err.append(np.mean((a.mean[ssh] - truth.ssh.values[d]) ** 2))
            dropped.append(a.dropped_mass)
        out[eng] = {"seconds": float(np.median(ts)), "rmse_ssh": float(np.sqrt(np.mean(err))),
                    "dropped_mass": float(np.mean(dropped))}
    if "loop" in out and "dense" in out:
        out["dense_over_loop"] = out["dense"]["seconds"] / out["loop"]["seconds"]
    return out


def _real_embeddings() -> tuple[np.ndarray, np.ndarray, str, float]:
    """Library window embeddings at library stride 1 (cached under CACHE) and the obs embeddings of 3 days."""
    zpath, qpath = CACHE / "z_stride1.npy", CACHE / "zo_eval1.npy"
    s, inputs, _ = _sampler(library_stride=1, search="exact") if not zpath.exists() else (None, None, None)
    if s is not None:
        from oceanda.analysis import windows as W

        CACHE.mkdir(parents=True, exist_ok=True)
        spec = s.encoders.window
        iy, ix = W.positions(*s.library.shape, spec)
        zo = np.stack([s.encoders.embed_obs(W.extract(o.values, iy, ix, spec.size, spec.halo, spec.periodic))
                       for o in inputs[:3]])
        np.save(zpath, s.embeddings.astype(np.float32))
        np.save(qpath, zo.astype(np.float32))
        (CACHE / "kind.json").write_text(json.dumps({"kind": s.encoders.kind, "tau": s.tau}))
    meta = json.loads((CACHE / "kind.json").read_text())
    return np.load(zpath, mmap_mode="r"), np.load(qpath), meta["kind"], float(meta["tau"])


def _gemm_ms(index, zo, repeats: int, low: bool = False) -> float | None:
    """CPU ms of the float32 product alone (blocked like the fused pass): the arithmetic floor of an exact search
    (``low``: of the low-rank rows the search scores, None without them)."""
    import torch

    from oceanda.analysis import search as S

    qs, _ = index._fused_queries(zo, index.tau)
    rows = index.xt
    if low:
        if index.low is None:
            return None
        qs, rows = index.low.queries(qs, index.low.basis.shape[0])[0], index.low.rows
    qT = torch.from_numpy(np.ascontiguousarray(qs.T))
    buf = torch.empty(S._FUSED_BLOCK, len(qs))
    ts = []
    for _ in range(repeats):
        t = time.process_time()
        for a in range(0, index.n, S._FUSED_BLOCK):
            xb = rows[a:a + S._FUSED_BLOCK]
            torch.mm(xb, qT, out=buf[:len(xb)])
        ts.append(time.process_time() - t)
    return 1e3 * float(np.median(ts))


def search_sweep(sizes=(10**4, 10**5, 10**6), kinds=("exact", "flat", "ivf", "fused"), keep_mass: float | None = None,
                 repeats: int = 3, seed: int = 0, threads=(1,)) -> list[dict]:
    """ms per analysis (64 queries) and exactly measured kept mass of every search kind at every library size.

    ``threads``: torch intra-op threads and block threads (``WindowIndex.workers``) the ``'fused'`` search is
    timed with; CPU ms then sums every thread's time, wall ms is what a user waits (the numpy kinds run on the
    BLAS threads of the environment, one in this benchmark). Every search is timed with the previous
    result released, as local mode does (the fused search then reuses its logits array).

    Returns
    -------
    list of dicts with ``size``, ``kind``, ``threads``, ``ms`` (median CPU ms), ``wall_ms``, ``build_s``,
    ``kept_mass`` (exact, mean over queries), ``kept_mass_min``, ``kept_mass_estimate``, ``recall_estimate``,
    ``candidates`` (mean share of the library), ``gemm_ms`` (fused: the float32 product of the full rows alone),
    ``gemm_low_ms`` and ``rank`` (fused: of its low-rank rows, None without), ``logit_error_max`` (the
    search's bound on its logits' error, nats; 0 for full-rank searches), ``load``
    """
    import torch

    from oceanda.analysis.posterior import softmax_weights
    from oceanda.analysis.search import WindowIndex
    from oceanda.analysis.settings import LOCAL_KEEP_MASS
    from oceanda.contrastive.similarity import numpy_scores

    keep_mass = LOCAL_KEEP_MASS if keep_mass is None else keep_mass
    z_all, zo_days, kind, tau = _real_embeddings()
    rng = np.random.default_rng(seed)
    rows, before = [], torch.get_num_threads()
    for n in sizes:
        z = np.ascontiguousarray(z_all[np.sort(rng.choice(len(z_all), min(n, len(z_all)), replace=False))])
        truth = [softmax_weights(numpy_scores(z, zo, kind, tau)) for zo in zo_days[:repeats]]
        for k in kinds:
            t = time.process_time()
            index = WindowIndex(z, kind, tau, k, seed=seed)
            build = time.process_time() - t
            for nt in (threads if k == "fused" else (1,)):
                torch.set_num_threads(nt)
                index.workers = nt  # the fused pass's block threads (the numbers do not depend on them)
                rows.append(_time_search(index, zo_days[:repeats], truth, keep_mass) | {
                    "size": len(z), "kind": k, "threads": nt, "build_s": build, "load": os.getloadavg()[0],
                    "gemm_ms": _gemm_ms(index, zo_days[0], repeats) if k == "fused" else None,
                    "gemm_low_ms": _gemm_ms(index, zo_days[0], repeats, low=True) if k == "fused" else None,
                    "rank": None if getattr(index, "low", None) is None else int(index.low.basis.shape[1])})
            del index
        torch.set_num_threads(before)
    return rows


def _time_search(index, queries, truth, keep_mass: float) -> dict:
    """Median CPU and wall ms of ``index.search`` over ``queries`` (one warm-up) and the kept mass against ``truth``."""
    res = index.search(queries[0], keep_mass)  # warm-up: first-touch pages, thread pools
    ts, ws, kept, kmin, est, rec, cand, lerr = [], [], [], [], [], [], [], []
    for zo, Wt in zip(queries, truth):
        res = None  # released before the next search, as local mode does
        t, w = time.process_time(), time.perf_counter()
        res = index.search(zo, keep_mass)
        ts.append(time.process_time() - t), ws.append(time.perf_counter() - w)
        got = [Wt[res.candidates(q)[0], q].sum() for q in range(len(zo))]
        kept.append(np.mean(got)), kmin.append(np.min(got))
        est.append(res.kept_mass.mean()), rec.append(res.recall.mean())
        cand.append(np.mean((res.logits >= res.threshold[None]).sum(axis=0)) / index.n)
        lerr.append(0.0 if res.logit_error is None else float(res.logit_error.max()))
    return {"ms": 1e3 * float(np.median(ts)), "wall_ms": 1e3 * float(np.median(ws)),
            "kept_mass": float(np.mean(kept)), "kept_mass_min": float(np.min(kmin)),
            "kept_mass_estimate": float(np.mean(est)), "recall_estimate": float(np.mean(rec)),
            "candidates": float(np.mean(cand)), "logit_error_max": float(np.max(lerr))}


def query_1e6(repeats: int = 3, threads: int = 1, kind: str = "auto") -> dict:
    """The search of one analysis (64 windows) in a 1e6-window library, for benchmarks/bench_speed.py.

    Returns
    -------
    dict: ``query_ms_1e6`` (median CPU ms), ``query_wall_ms_1e6``, ``kept_mass_1e6`` (exact, mean over
    windows), ``kept_mass_min_1e6``, ``query_gemm_ms_1e6`` (the float32 product of the full rows alone),
    ``query_gemm_low_ms_1e6``, ``query_rank_1e6`` and ``query_logit_error_1e6`` (the low-rank rows' product,
    their rank and the search's logit error bound), ``query_kind_1e6``, ``query_threads_1e6``, ``load_average``
    """
    from oceanda.analysis.search import auto_kind

    kind = auto_kind(10**6) if kind == "auto" else kind
    r = search_sweep((10**6,), (kind,), repeats=repeats, threads=(threads,))[0]
    return {"query_ms_1e6": r["ms"], "query_wall_ms_1e6": r["wall_ms"], "kept_mass_1e6": r["kept_mass"],
            "kept_mass_min_1e6": r["kept_mass_min"], "query_gemm_ms_1e6": r["gemm_ms"], "query_kind_1e6": kind,
            "query_gemm_low_ms_1e6": r.get("gemm_low_ms"), "query_rank_1e6": r.get("rank"),
            "query_logit_error_1e6": r["logit_error_max"],
            "query_threads_1e6": threads, "load_average": r["load"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--days", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--sizes", type=float, nargs="*", default=[1e4, 1e5, 1e6])
    p.add_argument("--kinds", nargs="*", default=["exact", "flat", "ivf", "fused"])
    p.add_argument("--threads", type=int, nargs="*", default=[1, 2], help="torch threads of the fused search")
    p.add_argument("--search-only", action="store_true", help="skip the local engines (loop vs dense)")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    print(f"cpus: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f} (CPU seconds, single thread)")
    loc = None if a.search_only else local_seconds(a.days, a.repeats)
    if loc is not None:
        print(f"{'engine':<8s} {'CPU s/analysis':>15s} {'RMSE ssh':>12s} {'dropped mass':>13s}")
        for eng in ("loop", "dense"):
            r = loc[eng]
            print(f"{eng:<8s} {r['seconds']:15.3f} {r['rmse_ssh']:12.6g} {r['dropped_mass']:13.2e}")
        print(f"dense / loop: {loc['dense_over_loop']:.3f}; "
              f"RMSE ratio {loc['dense']['rmse_ssh'] / loc['loop']['rmse_ssh']:.6f}")
    sweep = search_sweep([int(s) for s in a.sizes], a.kinds, repeats=a.repeats, threads=a.threads)
    print(f"{'windows':>9s} {'kind':<6s} {'thr':>3s} {'CPU ms':>8s} {'wall ms':>8s} {'gemm ms':>8s} {'build s':>8s} "
          f"{'kept (exact)':>13s} {'min':>8s} {'kept (est)':>11s} {'recall est':>11s} {'cand/N':>7s} {'load':>5s}")
    for r in sweep:
        gemm = "" if r["gemm_ms"] is None else f"{r['gemm_ms']:.1f}"
        print(f"{r['size']:9d} {r['kind']:<6s} {r['threads']:3d} {r['ms']:8.1f} {r['wall_ms']:8.1f} {gemm:>8s} "
              f"{r['build_s']:8.2f} {r['kept_mass']:13.5f} {r['kept_mass_min']:8.5f} {r['kept_mass_estimate']:11.5f} "
              f"{r['recall_estimate']:11.5f} {r['candidates']:7.3f} {r['load']:5.1f}")
    if a.json is not None:
        a.json.write_text(json.dumps({"local": loc, "search": sweep}, indent=1))


if __name__ == "__main__":
    main()
