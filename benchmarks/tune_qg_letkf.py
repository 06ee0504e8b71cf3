"""Cycled LETKF on the QG testbed with along-track altimetry: grid search, then evaluation.

Twin experiment: the truth is a free QG run from one shipped spun-up state, observed once a day by
along-track altimetry (SSH on the cells crossed by 4 daily tracks, noise 10 % of the SSH std);
the initial ensemble is N other shipped states (a climatological ensemble). The filter state is
the streamfunction psi (2 layers x 64 x 64 = 8192 values), so SSH = f0 psi1 / g is a sparse
linear operator; forecasts convert psi -> q, run the batched model for a day and convert back.

Localisation radius (Gaspari-Cohn half-width c, km, periodic distances) and inflation are tuned by a
grid search on a TUNING truth (shipped member 0); the chosen values are then scored on a separate
EVALUATION truth (shipped member 1): SSH RMSE against the climatological mean's RMSE, spread-skill
ratio and cycles per second. ``--write-tuned`` stores the choice in oceanda/kalman/tuned.json
("qg_altimetry"), where the demo reads it.

``--enoi`` tunes the one-shot EnOI baseline instead ("qg_enoi"): a static ensemble of ``--library``
states from a long free run (every 5 days, from a shipped state used by neither truth), background =
its mean, radius and alpha (covariance scaling) searched on tuning-truth days, scored on evaluation days;
the Schur-localised form (``EnOI(form='schur')``, ``kalman.schur_enoi_ensemble``), the one
``analyse_dataset(method='enoi')`` and the demo use.

``--sample sample_data/qg --members 10 20 40`` tunes per ensemble size in the DEMO's setting instead
("qg_altimetry".by_members): ``cycled_letkf(library, obs_altimetry_tune)`` (the demo's cycled LETKF:
N library states as the initial ensemble, seed 0 for the draw and the filter at every grid point)
scored against truth_tune.nc as the demo table scores it (SSH RMSE of the analysis mean / RMSE of the
library mean; all 31 days, and days 11-31), grid radius x inflation (rtps 0, block 2), selected on
all 31 days; the chosen settings are then scored on eval_1-3 (never used to select) beside the single
entry that served every N before. ``--write-tuned`` writes the by_members table (the settings, the
tuning grid, the evaluation scores); ``--json OUT`` writes the same with the reference rows.

    .venv/bin/python benchmarks/tune_qg_letkf.py [--members 20] [--tune-days 30] [--eval-days 60] [--write-tuned]
    .venv/bin/python benchmarks/tune_qg_letkf.py --sample sample_data/qg --members 10 20 40 [--write-tuned] [--json OUT]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import itertools
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from oceanda import io
from oceanda.experiments.qg_twin import QGAltimetryTwin
from oceanda.kalman import LETKF, EnOI, cycle
from oceanda.testbeds.qg import QGModel


def run(twin: QGAltimetryTwin, radius: float, inflation: float, rtps: float, block: int, skip: int, seed: int):
    f = LETKF(radius=radius, inflation=inflation, rtps=rtps, block=block)
    res = cycle(twin.forecast, twin.E0, twin.observations, f, localizer=twin.localizer(f), rng=seed, truth=twin.truth,
                keep_means=True, progress=False)
    return twin.ssh_scores(res, skip)


def enoi_scores(twin: QGAltimetryTwin, library: np.ndarray, radius: float, alpha: float, days: range) -> dict[str, float]:
    f = EnOI(alpha=alpha, radius=radius, form="schur")  # the form analyse_dataset('enoi') uses for altimetry
    loc = twin.localizer(f)
    bg = library.mean(0)
    err, spr, sec = [], [], []
    for k in days:
        tic = time.perf_counter()
        Ea = f.assimilate(library, twin.observations[k], rng=k, localizer=loc, background=bg)
        sec.append(time.perf_counter() - tic)
        m = Ea.mean(0)[: twin.G] * twin.scale
        err.append(np.sqrt(np.mean((m - twin.truth[k, : twin.G] * twin.scale) ** 2)))
        spr.append(np.sqrt(np.mean(Ea[:, : twin.G].var(0, ddof=1))) * twin.scale)
    clim = np.mean([np.sqrt(np.mean(((bg - twin.truth[k])[: twin.G] * twin.scale) ** 2)) for k in days])
    return {"ssh_rmse_m": float(np.mean(err)), "ssh_rmse_climatology_m": float(clim), "ssh_rmse_ratio": float(np.mean(err) / clim),
            "ssh_spread_skill": float(np.mean(spr) / np.mean(err)), "seconds_per_analysis": float(np.mean(sec))}


def tune_enoi(model: QGModel, a: argparse.Namespace) -> None:
    from oceanda.testbeds.qg import spun_up_state

    tic = time.perf_counter()
    q0 = spun_up_state(member=31, model=model)
    traj, _ = model.run(q0, 5.0 * a.library, save_every_days=5.0, include_initial=False)
    library = np.asarray(model.psi_from_q(np.asarray(traj)[:, 0]), dtype=np.float64).reshape(a.library, -1)
    print(f"library: {a.library} states, 5 days apart  [{time.perf_counter() - tic:.0f} s]", flush=True)
    days = min(a.tune_days, 10)
    tune = QGAltimetryTwin(model, truth_member=0, days=days, members=2, seed=10)
    best = None
    for radius, alpha in itertools.product(a.radii, a.alphas):
        sc = enoi_scores(tune, library, radius, alpha, range(days))
        print(f"  EnOI c={radius:5.0f} km alpha={alpha}: ssh rmse {sc['ssh_rmse_m']:.4g} m (background "
              f"{sc['ssh_rmse_climatology_m']:.4g}), spread/skill {sc['ssh_spread_skill']:.2f}, "
              f"{sc['seconds_per_analysis']:.2f} s/analysis", flush=True)
        if best is None or sc["ssh_rmse_m"] < best[0]:
            best = (sc["ssh_rmse_m"], radius, alpha)
    _, radius, alpha = best
    ev = QGAltimetryTwin(model, truth_member=1, days=days, members=2, seed=20)
    sc = enoi_scores(ev, library, radius, alpha, range(days))
    print(f"chosen: radius {radius} km, alpha {alpha}; evaluation truth:", json.dumps({k: round(v, 6) for k, v in sc.items()}))
    if a.write_tuned:
        path = Path(__file__).resolve().parents[1] / "oceanda" / "kalman" / "tuned.json"
        table = io.read_json(path)
        table["qg_enoi"] = {
            "_note": "QG 64x64, one-shot EnOI with daily along-track altimetry; static ensemble of library states "
                     "(5 days apart), background = library mean, Schur-localised gain (kalman.schur); "
                     "tuned by benchmarks/tune_qg_letkf.py --enoi.",
            "method": "enoi", "members": a.library, "radius_km": radius, "alpha": alpha,
            "evaluation": {k: round(v, 6) for k, v in sc.items()},
            **{k: v for k, v in table["qg_altimetry"].items() if k in ("by_members", "_note_by_members")},  # --sample's
        }
        io.write_json(table, path, overwrite=True)
        print(f"wrote {path}")


# --- --sample: tuning per ensemble size in the demo's setting ---------------------------------------------------------

#: Days 11-31 of the 31-day sample runs: the scores once the cycle is spun up.
SPUN_UP = 10
#: The evaluation runs of the sample (scored only, never used to select).
EVAL_RUNS = ("eval_1", "eval_2", "eval_3")
#: What ``qg_altimetry.by_members`` holds (written beside it).
BY_MEMBERS_NOTE = ("by_members: settings tuned per ensemble size N in the demo's setting (cycled_letkf on the QG "
                   "sample, initial ensemble N library states, seed 0), by benchmarks/tune_qg_letkf.py --sample: "
                   "selected on truth_tune (SSH RMSE / library-mean RMSE, 31 days), scored on eval_1-3. "
                   "qg_letkf_settings / cycled_letkf / oceanda enkf --cycle qg use the entry of the N in use (another "
                   "N: the nearest tuned N on a log scale); the top-level settings are tuned_filter's without members.")


def sample_case(sample: Path, library, run: str):
    """``(obs, truth ssh, climatology ssh)`` of ``run``; climatology = the library mean, as the demo's row."""
    obs = io.open_obs(sample / f"obs_altimetry_{run}.nc", like=library).load()
    truth = io.open_states(sample / f"truth_{run}.nc").load()["ssh"]
    mean = library["ssh"].values.astype(np.float64).mean(0).astype(np.float32)  # demo: climatology_analysis
    return obs, truth, truth.copy(data=np.broadcast_to(mean, truth.shape).copy())


def sample_scores(library, case, members: int, radius: float, inflation: float, rtps: float, block: int,
                  seed: int) -> dict[str, float]:
    """SSH RMSE / climatology RMSE of the demo's cycled LETKF (all days; days 11-31), as ``oceanda.report``.

    Why these definitions: the demo table's ``RMSE/clim`` is the time mean of the per-day spatial RMSE of
    ``ssh_mean`` over the time mean of the climatology's (``metrics.rmse``); the same here, so the
    N = 20 project setting on eval_1 reproduces the demo's row (0.224).
    """
    from oceanda import metrics
    from oceanda.experiments.qg_twin import cycled_letkf

    obs, truth, clim = case
    tic = time.process_time()
    ds = cycled_letkf(library, obs, members=members, radius_km=radius, inflation=inflation, rtps=rtps, block=block,
                      rng=seed)
    cpu = time.process_time() - tic
    err = metrics.rmse(ds["ssh_mean"].assign_coords(time=truth["time"].values), truth, per_time=True).values
    ref = metrics.rmse(clim, truth, per_time=True).values
    return {"ssh_rmse_m": float(err.mean()), "ssh_rmse_climatology_m": float(ref.mean()),
            "ssh_rmse_ratio": float(err.mean() / ref.mean()),
            "ssh_rmse_ratio_days_11_31": float(err[SPUN_UP:].mean() / ref[SPUN_UP:].mean()),
            "cpu_seconds": float(cpu), "_err": err, "_ref": ref}


def _public(sc: dict[str, Any]) -> dict[str, float]:
    return {k: round(v, 6) for k, v in sc.items() if not k.startswith("_")}


def _pooled(scores: list[dict[str, Any]]) -> dict[str, float]:
    """Ratios over the evaluation runs' days pooled (93 days: mean RMSE over mean climatology RMSE)."""
    err, ref = np.concatenate([s["_err"] for s in scores]), np.concatenate([s["_ref"] for s in scores])
    late_e = np.concatenate([s["_err"][SPUN_UP:] for s in scores])
    late_r = np.concatenate([s["_ref"][SPUN_UP:] for s in scores])
    return {"ssh_rmse_ratio": round(float(err.mean() / ref.mean()), 6),
            "ssh_rmse_ratio_days_11_31": round(float(late_e.mean() / late_r.mean()), 6)}


def tune_members(library, tune_case, members: int, a: argparse.Namespace) -> tuple[dict[str, Any], list[dict]]:
    """Grid search at one N on the tuning run (selection: all-days ratio); ``(chosen settings, grid rows)``."""
    rows = []
    for radius, infl in itertools.product(a.radii, a.inflations):
        sc = sample_scores(library, tune_case, members, radius, infl, a.rtps, a.block, a.seed)
        rows.append({"radius_km": radius, "inflation": infl, **_public(sc)})
        print(f"  N={members:3d} c={radius:5.0f} km inflation={infl:.3f}: tune ratio {sc['ssh_rmse_ratio']:.4f} "
              f"(days 11-31 {sc['ssh_rmse_ratio_days_11_31']:.4f})  [{sc['cpu_seconds']:.1f} CPU-s]", flush=True)
    best = min(rows, key=lambda r: r["ssh_rmse_ratio"])
    return {"radius_km": best["radius_km"], "inflation": best["inflation"], "rtps": a.rtps, "block": a.block}, rows


def evaluate_settings(library, cases: dict[str, Any], members: int, s: dict[str, Any], seed: int) -> dict[str, Any]:
    """Scores of settings ``s`` on every evaluation run, and pooled over them."""
    runs = {run: sample_scores(library, case, members, s["radius_km"], s["inflation"], s["rtps"], s["block"], seed)
            for run, case in cases.items()}
    return {**{run: _public(sc) for run, sc in runs.items()}, "pooled": _pooled(list(runs.values()))}


def _grid_row(r: dict[str, Any]) -> dict[str, float]:
    return {k: r[k] for k in ("radius_km", "inflation", "ssh_rmse_ratio", "ssh_rmse_ratio_days_11_31")}


def by_members_entry(library, tune_case, cases, members: int, a: argparse.Namespace) -> dict[str, Any]:
    """One ``by_members`` value: the settings chosen on the tuning run, its grid, the evaluation scores."""
    chosen, rows = tune_members(library, tune_case, members, a)
    pick = next(r for r in rows if (r["radius_km"], r["inflation"]) == (chosen["radius_km"], chosen["inflation"]))
    project = {k: a.project[k] for k in ("radius_km", "inflation", "rtps", "block")}
    same = [r for r in rows if (r["radius_km"], r["inflation"]) == (project["radius_km"], project["inflation"])]
    proj_tune = same[0] if same and (a.rtps, a.block) == (project["rtps"], project["block"]) else _public(
        sample_scores(library, tune_case, members, project["radius_km"], project["inflation"], project["rtps"],
                      project["block"], a.seed))
    proj_eval = evaluate_settings(library, cases, members, project, a.seed)
    evaluation = evaluate_settings(library, cases, members, chosen, a.seed)
    evaluation["single_entry_settings"] = {**project, **{r: {k: v for k, v in sc.items() if "ratio" in k}
                                                         for r, sc in proj_eval.items()}}
    return {**chosen,
            "tuning": {"truth": "truth_tune.nc", "obs": "obs_altimetry_tune.nc", "seed": a.seed,
                       "selected_on": "ssh_rmse_ratio (SSH RMSE / library-mean RMSE, all 31 days)",
                       "chosen": _grid_row(pick), "project": _grid_row({**project, **proj_tune}),
                       "grid": [_grid_row(r) for r in rows]},
            "evaluation": evaluation, "_project": project, "_project_eval": proj_eval}


def _print_table(table: dict[str, dict[str, Any]]) -> None:
    head = f"{'N':>4s} {'setting':<22s} {'tune all':>9s} {'tune 11-31':>11s}" + "".join(
        f" {r + ' all':>11s} {r + ' 11-31':>13s}" for r in (*EVAL_RUNS, "pooled"))
    print("\n" + head + "\n" + "-" * len(head))
    for n, e in table.items():
        for label, s, tune, ev in (("chosen", e, e["tuning"]["chosen"], e["evaluation"]),
                                   ("project", e["_project"], e["tuning"]["project"], e["_project_eval"])):
            name = f"{label} {s['radius_km']:.0f} km/{s['inflation']:.2f}"
            row = f"{n:>4s} {name:<22s} {tune['ssh_rmse_ratio']:>9.4f} {tune['ssh_rmse_ratio_days_11_31']:>11.4f}"
            row += "".join(f" {ev[r]['ssh_rmse_ratio']:>11.4f} {ev[r]['ssh_rmse_ratio_days_11_31']:>13.4f}"
                           for r in (*EVAL_RUNS, "pooled"))
            print(row)


def tune_sample(a: argparse.Namespace) -> None:
    """``--sample``: tune per N in the demo's setting, score on eval_1-3, optionally write ``by_members``."""
    sample = Path(a.sample)
    path = Path(__file__).resolve().parents[1] / "oceanda" / "kalman" / "tuned.json"
    table = io.read_json(path)
    a.project = table["qg_altimetry"]  # the single entry served every N so far: the reference row
    library = io.open_states(sample / "library.nc").load()
    tune_case = sample_case(sample, library, "tune")
    cases = {run: sample_case(sample, library, run) for run in EVAL_RUNS}
    out = {str(n): by_members_entry(library, tune_case, cases, n, a) for n in a.members}
    _print_table(out)
    if a.json:
        io.write_json(out, a.json, overwrite=True)
        print(f"wrote {a.json}")
    if a.write_tuned:
        entry = table["qg_altimetry"]
        entry["_note_by_members"] = BY_MEMBERS_NOTE
        entry["by_members"] = {**entry.get("by_members", {}),
                               **{n: {k: v for k, v in e.items() if not k.startswith("_")} for n, e in out.items()}}
        io.write_json(table, path, overwrite=True)
        print(f"wrote {path} (qg_altimetry.by_members: {sorted(entry['by_members'], key=int)})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--members", type=int, nargs="+", default=[20], help="ensemble size (--sample: one or more)")
    p.add_argument("--sample", default=None, metavar="DIR", help="tune per N in the demo's setting on this sample")
    p.add_argument("--seed", type=int, default=0, help="--sample: seed of the initial draw and the filter")
    p.add_argument("--json", default=None, metavar="OUT", help="--sample: write the results here")
    p.add_argument("--tune-days", type=int, default=30)
    p.add_argument("--eval-days", type=int, default=60)
    p.add_argument("--radii", type=float, nargs="+", default=None, help="default 40 70 100 (--sample: 30 40 50 60)")
    p.add_argument("--inflations", type=float, nargs="+", default=None, help="default 1.02 1.08 (--sample: 1.03 1.06 1.10)")
    p.add_argument("--rtps", type=float, default=0.0)
    p.add_argument("--block", type=int, default=2)
    p.add_argument("--write-tuned", action="store_true")
    p.add_argument("--enoi", action="store_true", help="tune the EnOI baseline (radius, alpha) instead of the LETKF")
    p.add_argument("--library", type=int, default=200, help="--enoi: static ensemble size (states 5 days apart)")
    p.add_argument("--alphas", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    a = p.parse_args()
    torch.set_num_threads(1)
    if a.sample:
        a.radii, a.inflations = a.radii or [30.0, 40.0, 50.0, 60.0], a.inflations or [1.03, 1.06, 1.10]
        return tune_sample(a)
    a.radii, a.inflations = a.radii or [40.0, 70.0, 100.0], a.inflations or [1.02, 1.08]
    if len(a.members) != 1:
        p.error("--members: one ensemble size (several only with --sample)")
    a.members = a.members[0]
    model = QGModel()
    if a.enoi:
        return tune_enoi(model, a)
    tic = time.perf_counter()
    tune = QGAltimetryTwin(model, truth_member=0, days=a.tune_days, members=a.members, seed=10)
    print(f"tuning twin: {a.tune_days} days, {np.mean([o.size for o in tune.observations]):.0f} obs/day, "
          f"sigma_ssh {tune.sigma:.4g} m  [{time.perf_counter() - tic:.0f} s]", flush=True)
    best = None
    for radius, infl in itertools.product(a.radii, a.inflations):
        tic = time.perf_counter()
        sc = run(tune, radius, infl, a.rtps, a.block, a.tune_days // 2, seed=1)
        print(f"  c={radius:5.0f} km inflation={infl:.3f} rtps={a.rtps}: ssh rmse {sc['ssh_rmse_m']:.4g} m "
              f"(climatology {sc['ssh_rmse_climatology_m']:.4g}), spread/skill {sc['spread_skill']:.2f}  "
              f"[{time.perf_counter() - tic:.0f} s]", flush=True)
        if best is None or sc["ssh_rmse_m"] < best[0]:
            best = (sc["ssh_rmse_m"], radius, infl)
    _, radius, infl = best
    print(f"chosen: radius {radius} km, inflation {infl}, rtps {a.rtps}, block {a.block}", flush=True)
    ev = QGAltimetryTwin(model, truth_member=1, days=a.eval_days, members=a.members, seed=20)
    sc = run(ev, radius, infl, a.rtps, a.block, min(10, a.eval_days // 3), seed=2)
    print("evaluation truth:", json.dumps({k: round(v, 6) for k, v in sc.items()}), flush=True)
    if a.write_tuned:
        path = Path(__file__).resolve().parents[1] / "oceanda" / "kalman" / "tuned.json"
        table = io.read_json(path)
        table["qg_altimetry"] = {
            "_note": "QG 64x64 two-layer, daily along-track altimetry (4 tracks/day, sigma 10% of SSH std); state psi; "
                     "tuned by benchmarks/tune_qg_letkf.py on a tuning truth, scored on a separate evaluation truth. "
                     "radius_km = Gaspari-Cohn half-width c (periodic distances); block = points per local analysis tile side.",
            "method": "letkf", "members": a.members, "radius_km": radius, "inflation": infl, "rtps": a.rtps, "block": a.block,
            "evaluation": {k: round(v, 6) for k, v in sc.items()},
        }
        io.write_json(table, path, overwrite=True)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
