"""Cycled contrastive assimilation on the QG sample: does the sampler help a cycled LETKF beat its own tuning?

For every ensemble size N the same truths, observations, initial draws and QG forecasts serve every
scheme; SSH RMSE over climatology (the library mean), all 31 days and days 11-31:

- ``letkf``: the LETKF with the settings tuned for its N (``tuned.json`` ``qg_altimetry`` ``by_members``),
  climatological initial ensemble (library states) -- the baseline to beat;
- ``warm``: the same LETKF started from the one-shot contrastive hybrid analysis of the first day (N of its
  members, shifted and scaled element by element to its mean and spread: ``warm_draw='matched'``);
- ``warm_hybrid``: warm start plus hybrid covariance, (1 - beta) P_f + beta P_extra, beta and the extra
  members' source (contrastive posterior members of the same day, or static library states) chosen on
  the TUNING truth only;
- ``enoi_control`` / ``enoi_hybrid_control``: the same with an EnOI warm start (no contrastive model);
  ``warm_hybrid`` over ``enoi_hybrid_control`` is the contrastive model's own share;
- ``warm_hybrid_resampled``: ``warm_hybrid`` with the N members drawn as they are (``warm_draw='resampled'``,
  the draw before the matched one), for the record of what matching the moments gives.

Ratios to ``letkf`` pool the daily RMSE of the evaluation truths (eval_1-3, 93 days) and carry a
paired block-bootstrap 95 % interval (blocks of ``--block`` consecutive days within each truth).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_cycle.py [--members 10 20 40] [--json cycle.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
import xarray as xr

from oceanda import metrics
from oceanda.experiments import qg_cycle as qc

ROOT = Path(__file__).resolve().parents[1]
EVAL = ("eval_1", "eval_2", "eval_3")
BETAS = (0.0, 0.05, 0.1, 0.2, 0.3)
#: The tuned.json entry the demo, the CLI and the API read the contrastive cycle's settings from.
TUNED = "qg_contrastive_cycle"


def daily_ssh_rmse(setup: qc.Setup, analyses: np.ndarray, truth: xr.Dataset) -> np.ndarray:
    """Per-day RMSE of the analysis-mean SSH against the truth."""
    ds = qc.cycle_dataset(setup, analyses, {}, truth)
    return ds["ssh_rmse"].values.astype(np.float64)


def block_bootstrap(a: np.ndarray, b: np.ndarray, block: int, n: int = 4000, seed: int = 0) -> tuple[float, float, float]:
    """Ratio mean(a) / mean(b) of paired daily RMSE ``[truth, day]`` and its block-bootstrap 95 % interval."""
    g = np.random.default_rng(seed)
    T, D = a.shape
    starts = np.arange(0, D - block + 1)
    nb = int(np.ceil(D / block))
    ratios = np.empty(n)
    for i in range(n):
        s = g.choice(starts, size=(T, nb))
        idx = (s[..., None] + np.arange(block)).reshape(T, -1)[:, :D]
        rows = np.arange(T)[:, None]
        ratios[i] = a[rows, idx].mean() / b[rows, idx].mean()
    return float(a.mean() / b.mean()), float(np.quantile(ratios, 0.025)), float(np.quantile(ratios, 0.975))


class Truth:
    """One truth run: its setup, one-shot contrastive members, climatology RMSE per day."""

    def __init__(self, sample: Path, name: str, model: Path, members: int, cache: Path, seed: int):
        self.name = name
        lib = xr.open_dataset(sample / "library.nc").load()
        obs = xr.open_dataset(sample / f"obs_altimetry_{name}.nc").load()
        self.truth = xr.open_dataset(sample / f"truth_{name}.nc").load()
        self.setup = qc.Setup.of(lib, obs)
        tic = time.process_time()
        one = qc.contrastive_analyses(model, lib, obs, members, seed=seed, cache_dir=cache)
        self.oneshot_seconds = time.process_time() - tic
        self.oneshot = self.setup.states(one)
        self.clim = metrics.rmse(lib["ssh"].mean("time"), self.truth["ssh"], per_time=True).values.astype(np.float64)

    def run(self, choice: qc.CycleChoice, seed: int) -> np.ndarray:
        A, _ = qc.run_cycle(self.setup, choice, oneshot=self.oneshot, seed=seed)
        return daily_ssh_rmse(self.setup, A, self.truth)


def schemes(N: int, beta: float, extra: str) -> dict[str, qc.CycleChoice]:
    return {"letkf": qc.CycleChoice(members=N),
            "warm": qc.CycleChoice(members=N, initial="contrastive"),
            "warm_hybrid": qc.CycleChoice(members=N, initial="contrastive", hybrid_beta=beta, extra=extra),
            "enoi_control": qc.CycleChoice(members=N, initial="enoi"),
            "enoi_hybrid_control": qc.CycleChoice(members=N, initial="enoi", hybrid_beta=beta,
                                                  extra="library"),
            "warm_hybrid_resampled": qc.CycleChoice(members=N, initial="contrastive", hybrid_beta=beta, extra=extra,
                                                    warm_draw="resampled")}


def tune(tr: Truth, N: int, seed: int) -> tuple[float, str, list[dict]]:
    """beta and the extra source of ``warm_hybrid`` on the tuning truth (all 31 days)."""
    rows = []
    for beta, extra in itertools.product(BETAS, qc.EXTRAS):
        if beta == 0.0 and extra != qc.EXTRAS[0]:
            continue  # no extra members at beta 0: one run
        r = tr.run(qc.CycleChoice(members=N, initial="contrastive", hybrid_beta=beta, extra=extra), seed)
        rows.append({"beta": beta, "extra": extra, "ratio": float(r.mean() / tr.clim.mean())})
        print(f"  tune N={N} beta={beta:<5} extra={extra:<12} {rows[-1]['ratio']:.4f}", flush=True)
    best = min(rows, key=lambda r: r["ratio"])
    return best["beta"], best["extra"], rows


def evaluate(truths: list[Truth], N: int, beta: float, extra: str, seed: int, block: int) -> dict:
    out: dict = {"beta": beta, "extra": extra, "schemes": {}}
    daily = {}
    for name, choice in schemes(N, beta, extra).items():
        daily[name] = np.stack([tr.run(choice, seed) for tr in truths])
    clim = np.stack([tr.clim for tr in truths])
    for name, d in daily.items():
        r = {"ratio_all": float(d.mean() / clim.mean()), "ratio_late": float(d[:, 10:].mean() / clim[:, 10:].mean()),
             "per_truth": [float(x) for x in d.mean(1) / clim.mean(1)]}
        if name != "letkf":
            r["vs_letkf"] = block_bootstrap(d, daily["letkf"], block, seed=seed)
        out["schemes"][name] = r
    out["contrastive_share"] = block_bootstrap(daily["warm_hybrid"], daily["enoi_hybrid_control"], block, seed=seed)
    out["warm_share"] = block_bootstrap(daily["warm"], daily["enoi_control"], block, seed=seed)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sample", type=Path, default=ROOT / "sample_data" / "qg")
    p.add_argument("--model", type=Path, default=ROOT / "sample_data" / "models" / "qg_window")
    p.add_argument("--members", type=int, nargs="+", default=[10, 20, 40])
    p.add_argument("--oneshot-members", type=int, default=40, help="contrastive posterior members per day")
    p.add_argument("--block", type=int, default=5, help="days per bootstrap block")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", type=Path, default=Path("/tmp/oceanda_bench_cycle"))
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--write-tuned", action="store_true", help=f"store the chosen beta / extra per N in tuned.json ({TUNED})")
    a = p.parse_args()
    tune_truth = Truth(a.sample, "tune", a.model, a.oneshot_members, a.cache, a.seed)
    truths = [Truth(a.sample, n, a.model, a.oneshot_members, a.cache, a.seed) for n in EVAL]
    result = {"oneshot_cpu_seconds": [tr.oneshot_seconds for tr in [tune_truth, *truths]], "by_members": {}}
    for N in a.members:
        beta, extra, rows = tune(tune_truth, N, a.seed)
        ev = evaluate(truths, N, beta, extra, a.seed, a.block)
        ev["tuning"] = rows
        result["by_members"][str(N)] = ev
        print(f"N = {N}: beta {beta}, extra {extra}")
        for name, r in ev["schemes"].items():
            vs = r.get("vs_letkf")
            tail = f"  x letkf {vs[0]:.3f} [{vs[1]:.3f}, {vs[2]:.3f}]" if vs else ""
            print(f"  {name:<20s} {r['ratio_all']:.3f} / {r['ratio_late']:.3f}{tail}")
        s = ev["contrastive_share"]
        print(f"  contrastive share (warm_hybrid / enoi_hybrid_control) {s[0]:.3f} [{s[1]:.3f}, {s[2]:.3f}]", flush=True)
    if a.json:
        a.json.write_text(json.dumps(result, indent=1))
    if a.write_tuned:
        write_tuned(result)


def write_tuned(result: dict) -> None:
    """The chosen settings per N (with their tuning and evaluation scores) as tuned.json's :data:`TUNED`."""
    path = ROOT / "oceanda" / "kalman" / "tuned.json"
    table = json.loads(path.read_text())
    table[TUNED] = {
        "_note": "QG sample, cycled LETKF (settings of qg_altimetry by_members) started from the one-shot contrastive "
                 "hybrid analysis of the first day (its members drawn with matched mean and spread); hybrid covariance "
                 "(1 - beta) P_f + beta P_extra with extra members "
                 "from 'contrastive' (posterior members of the same day) or 'library' (static states); beta and extra "
                 "chosen on truth_tune by benchmarks/bench_cycle.py, scored on eval_1-3.",
        "initial": "contrastive",
        "warm_draw": "matched",
        "by_members": {N: {"hybrid_beta": ev["beta"], "extra": ev["extra"],
                           "evaluation": {k: round(v["ratio_all"], 4) for k, v in ev["schemes"].items()},
                           "vs_letkf": [round(x, 4) for x in ev["schemes"]["warm_hybrid"]["vs_letkf"]]}
                       for N, ev in result["by_members"].items()},
    }
    path.write_text(json.dumps(table, indent=2) + "\n")


if __name__ == "__main__":
    main()
