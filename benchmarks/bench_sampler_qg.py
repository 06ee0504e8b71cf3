"""QG acceptance benchmark of the contrastive sampler: local, hybrid, global vs EnOI and climatology.

Protocol (issue 6): library and training from free runs (bench_sampler_qg_data.py); localisation,
the local and hybrid spread factors and EnOI (alpha, radius) tuned on the tuning run only; then >= 3 held-out truth runs,
identical observations for every method: 1-day along-track altimetry (4 tracks) and a 5-day window
(the last 5 days of tracks, each day's observations of that day's state, latest wins), noise 10 % of
the library's SSH standard deviation. RMSE of SSH (and psi) as a fraction of the climatology RMSE;
paired bootstrap over analysis times for hybrid / EnOI. Prints every number.

    .venv/bin/python benchmarks/bench_sampler_qg.py --work /tmp/qgwork --model /tmp/qgwork/model
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import xarray as xr


def track_obs(truth: xr.Dataset, days: int, times: np.ndarray, sigma: float, seed: int) -> xr.Dataset:
    """Gridded SSH observations valid at ``times`` (indices): union of the last ``days`` days of tracks."""
    from oceanda.observe import AlongTrackAltimetry

    alt = AlongTrackAltimetry(sigma=sigma)
    ny, nx = truth.sizes["y"], truth.sizes["x"]
    dy = float(truth.y[1] - truth.y[0])
    dx = float(truth.x[1] - truth.x[0])
    rng = np.random.default_rng(seed)
    ssh = truth.ssh.values
    out = np.full((len(times), ny, nx), np.nan, np.float32)
    for j, t in enumerate(times):
        for k in range(days - 1, -1, -1):  # oldest first: the latest day wins
            d = int(t) - k
            m = alt.mask(ny, nx, d, dy, dx)[0]
            noisy = ssh[d] + sigma * rng.standard_normal((ny, nx))
            out[j][m] = noisy[m]
    obs = xr.Dataset({"ssh": (("time", "y", "x"), out, {"units": "m"}),
                      "ssh_error": ((), np.float32(sigma), {"units": "m"})},
                     coords={"time": truth.time.values[times], "y": truth.y, "x": truth.x,
                             "lat": truth.lat, "lon": truth.lon})
    obs.attrs["operator"] = f"along_track_altimetry ({days}-day window)"
    return obs


def enoi_analyses(lib, obs: xr.Dataset, background: np.ndarray, alpha: float, radius: float, members: int,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
    """EnOI (Schur-localised gain, the hybrid's Kalman step) of every obs time: (mean, spread, s/analysis)."""
    from oceanda import grid
    from oceanda.analysis.hybrid import static_states
    from oceanda.kalman import observations_from_dataset, schur_enoi

    static = static_states(lib, members, np.random.default_rng([seed, 99]))
    points, period = grid.points(lib.ds, True)
    ol = observations_from_dataset(obs, lib.layout, lib.ds, variables=["ssh"])
    means, spreads = [], []
    t0 = time.perf_counter()
    for o in ol:
        xa, var = schur_enoi(background.ravel(), static, o, alpha=alpha, radius=radius, points=points, period=period,
                             var_channels=[lib.layout.channels.index(("ssh", None))])
        means.append(xa.reshape(background.shape))
        spreads.append(np.sqrt(var).reshape(background.shape))
    return np.stack(means), np.stack(spreads), (time.perf_counter() - t0) / max(len(ol), 1)


def rmse_per_time(a: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return np.sqrt(np.mean((a - truth) ** 2, axis=tuple(range(1, a.ndim))))


def bootstrap_ratio(mse_a: np.ndarray, mse_b: np.ndarray, n: int = 4000, seed: int = 0) -> tuple[float, float, float]:
    """Ratio sqrt(mean mse_a / mean mse_b) and its paired-bootstrap 95 % interval."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(mse_a), size=(n, len(mse_a)))
    r = np.sqrt(mse_a[idx].mean(1) / mse_b[idx].mean(1))
    return float(np.sqrt(mse_a.mean() / mse_b.mean())), float(np.quantile(r, 0.025)), float(np.quantile(r, 0.975))


def main() -> None:
    import torch

    from oceanda import fields
    from oceanda.analysis import HybridSettings, Library
    from oceanda.analysis.assimilate import assimilate
    from oceanda.analysis.encoding import load_model
    from oceanda.analysis.local_mode import calibrate_spread

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("/tmp/qgwork"))
    p.add_argument("--model", type=Path, default=None)
    p.add_argument("--every", type=int, default=6, help="days between analysis times")
    p.add_argument("--tune-every", type=int, default=10, help="days between tuning analysis times")
    p.add_argument("--enoi-members", type=int, default=500)
    p.add_argument("--alphas", type=float, nargs="+", default=[1.0])
    p.add_argument("--radii", type=float, nargs="+", default=[60.0, 120.0, 200.0])
    p.add_argument("--eval-runs", type=int, default=3)
    p.add_argument("--out", type=Path, default=None, help="JSON with every number")
    p.add_argument("--days", type=int, nargs="+", default=[1, 5], help="observation windows (days of tracks)")
    p.add_argument("--tau", type=float, default=None, help="temperature (chosen on the tuning run; default: the model's)")
    p.add_argument("--max-keep", type=int, default=8192, help="most library windows kept per analysis window")
    a = p.parse_args()
    torch.set_num_threads(2)
    lib = Library(Library.open(a.work / "library.nc").ds, variables=["psi", "ssh"], source=str(a.work / "library.nc"))
    lib.load(3e9)
    model_dir = a.model or (a.work / "model")
    model, enc = load_model(model_dir)
    ch_ssh = lib.layout.channels.index(("ssh", None))
    sigma = 0.1 * float(np.std(lib.read(np.arange(0, lib.n, 7))[:, ch_ssh]))
    clim = lib.read(np.arange(lib.n)).mean(axis=0)  # [C, Y, X]
    results: dict = {"tau": a.tau, "max_keep": a.max_keep, "sigma": sigma, "library_size": lib.n, "model": str(model_dir), "windows": enc.window.to_dict()}

    def run_setting(truth_path: Path, days: int, seed: int, spread_factor: float | None, alpha: float, radius: float,
                    modes=("local", "hybrid", "enoi"), every: int | None = None, hybrid_alpha: float | None = None,
                    hybrid_spread: float = 1.0) -> dict:
        truth = xr.open_dataset(truth_path).load()
        times = np.arange(max(days, 5) - 1, truth.sizes["time"], every or a.every)
        obs = track_obs(truth, days, times, sigma, seed)
        tr, _ = fields.to_array(truth.isel(time=times), lib.layout)
        out = {"times": len(times), "clim_mse_ssh": (rmse_per_time(np.broadcast_to(clim[ch_ssh], tr[:, ch_ssh].shape), tr[:, ch_ssh]) ** 2)}
        hyb = HybridSettings(alpha=alpha if hybrid_alpha is None else hybrid_alpha, radius=radius, static_members=a.enoi_members,
                             spread_factor=hybrid_spread)

        def arrays(ds, suffix):
            sub = ds[[f"{v}{suffix}" for v in lib.layout.variables]].rename({f"{v}{suffix}": v for v in lib.layout.variables})
            return fields.to_array(sub, lib.layout)[0]

        def score(mean, spread, sec):
            return {"mse_ssh": rmse_per_time(mean[:, ch_ssh], tr[:, ch_ssh]) ** 2,
                    "var_ssh": np.mean(spread[:, ch_ssh] ** 2, axis=(1, 2)),
                    "mse_all_std": np.mean(((mean - tr) / clim_std[None, :, None, None]) ** 2, axis=(1, 2, 3)),
                    "seconds": sec}

        if "enoi" in modes:
            out["enoi"] = score(*enoi_analyses(lib, obs, clim, alpha, radius, a.enoi_members))
        if "hybrid" in modes or "local" in modes:  # one call: hybrid mode also returns its local background
            mode = "hybrid" if "hybrid" in modes else "local"
            ds = assimilate((model, enc), lib, obs, mode=mode, members=20, spread_factor=spread_factor, hybrid=hyb,
                            seed=seed, cache_dir=model_dir / "library_cache", tau=a.tau, max_keep=a.max_keep)
            sec = float(ds.attrs["seconds_per_analysis"])
            if mode == "hybrid":
                out["hybrid"] = score(arrays(ds, "_mean"), arrays(ds, "_spread"), sec)
                out["local"] = score(arrays(ds, "_background_mean"), arrays(ds, "_background_spread"), sec)
            else:
                out["local"] = score(arrays(ds, "_mean"), arrays(ds, "_spread"), sec)
            out["local"]["ess"] = ds.ess.values
        out["clim_mse_all_std"] = np.mean(((clim[None] - tr) / clim_std[None, :, None, None]) ** 2, axis=(1, 2, 3))
        return out

    clim_std = lib.read(np.arange(0, lib.n, 7)).std(axis=(0, 2, 3))

    # ---- tuning run: EnOI (alpha, radius), then the local spread factor -------------------------
    t0 = time.perf_counter()
    tuning = {}
    for days in a.days:
        best = None
        for alpha in a.alphas:
            for radius in a.radii:
                r = run_setting(a.work / "tuning.nc", days, 1000 + days, 1.0, alpha, radius, modes=("enoi",),
                                every=a.tune_every)
                score = r["enoi"]["mse_ssh"].mean()
                print(f"tuning {days}-day EnOI alpha={alpha} radius={radius}: ratio "
                      f"{np.sqrt(score / r['clim_mse_ssh'].mean()):.3f}", flush=True)
                if best is None or score < best[0]:
                    best = (score, alpha, radius)
        r = run_setting(a.work / "tuning.nc", days, 1000 + days, 1.0, best[1], best[2], modes=("local",),
                        every=a.tune_every)
        sf = calibrate_spread(r["local"]["mse_ssh"], r["local"]["var_ssh"])
        lr = float(np.sqrt(r["local"]["mse_ssh"].mean() / r["clim_mse_ssh"].mean()))
        # the hybrid's background is the local analysis, whose error variance is lr^2 that of climatology:
        # its B is EnOI's scaled by lr^2 (measured on the tuning run, no extra tuning of the hybrid)
        # the hybrid's spread factor, fitted on the same tuning times (local members already calibrated)
        r = run_setting(a.work / "tuning.nc", days, 1000 + days, sf, best[1], best[2], modes=("hybrid",),
                        every=a.tune_every, hybrid_alpha=best[1] * lr ** 2)
        hsf = calibrate_spread(r["hybrid"]["mse_ssh"], r["hybrid"]["var_ssh"])
        tuning[days] = {"alpha": best[1], "radius": best[2], "spread_factor": sf, "local_ratio_tuning": lr,
                        "hybrid_alpha": best[1] * lr ** 2, "hybrid_spread_factor": hsf}
        print(f"tuning {days}-day: {tuning[days]}", flush=True)
    results["tuning"] = tuning
    results["tuning_seconds"] = time.perf_counter() - t0

    # ---- evaluation runs ----------------------------------------------------------------------
    for days in a.days:
        tu = tuning[days]
        agg: dict = {}
        for i in range(a.eval_runs):
            r = run_setting(a.work / f"eval{i}.nc", days, 2000 + 10 * i + days, tu["spread_factor"], tu["alpha"], tu["radius"],
                            hybrid_alpha=tu["hybrid_alpha"], hybrid_spread=tu["hybrid_spread_factor"])
            for k, v in r.items():
                if isinstance(v, dict):
                    for kk, vv in v.items():
                        agg.setdefault(k, {}).setdefault(kk, []).append(np.atleast_1d(vv))
                elif k != "times":
                    agg.setdefault(k, []).append(np.atleast_1d(v))
        clim_mse = np.concatenate(agg["clim_mse_ssh"])
        clim_all = np.concatenate(agg["clim_mse_all_std"])
        summary = {"analyses": int(clim_mse.size)}
        mse = {}
        for mode in ("local", "hybrid", "enoi"):
            m = np.concatenate(agg[mode]["mse_ssh"])
            v = np.concatenate(agg[mode]["var_ssh"])
            mse[mode] = m
            summary[mode] = {
                "ratio_ssh_to_climatology": bootstrap_ratio(m, clim_mse),
                "ratio_all_variables_to_climatology": float(np.sqrt(np.concatenate(agg[mode]["mse_all_std"]).mean() / clim_all.mean())),
                "spread_skill_ssh": float(np.sqrt(v.mean() / m.mean())),
                "seconds_per_analysis": float(np.mean(np.concatenate(agg[mode]["seconds"]))),
            }
            if "ess" in agg[mode]:
                summary[mode]["mean_ess_per_window"] = float(np.mean(np.concatenate(agg[mode]["ess"])))
        summary["hybrid_to_enoi"] = bootstrap_ratio(mse["hybrid"], mse["enoi"])
        summary["local_to_enoi"] = bootstrap_ratio(mse["local"], mse["enoi"])
        results[f"{days}-day"] = summary
        print(json.dumps({f"{days}-day": summary}, indent=1), flush=True)
    if a.out:
        a.out.write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
