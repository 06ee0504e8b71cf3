"""Any observation set, one model: local and hybrid against EnOI per observation family, leave-one-pattern-out.

On the bundled QG sample, for the evaluation truths eval_1-3 (never used to train or tune) and each family
-- ``tracks`` (the shipped altimetry files), ``clouds`` (cloud-masked SSH, 30-70 % observed), ``points``
(20 Argo-like psi profiles a day; the contrastive sampler gets them superobbed, EnOI as points) and the
held-back ``swaths`` (one wide-swath pass a day, a pattern no model is trained on) -- the same observations go
to:

- the window model given by ``--model`` (default: the bundled one) in local and hybrid mode;
- with ``--leave-out``, a model trained like it (``--seconds`` each) without that family, evaluated on it;
- EnOI at its tuned settings (``tuned.json`` ``qg_enoi``).

With ``--obs-window N`` the hybrid's Kalman step and EnOI both use N days of observations per analysis
(``obs_window``: the days before each time, errors grown with age); the rows then also give EnOI of one day
(``enoi_1day``) and the hybrid's ratio to it.

Score: SSH RMSE / climatology (the library mean) over all days of the three truths; ratios to EnOI with paired
bootstrap 95 % intervals over (truth, day) blocks of 5 days, 2000 resamples.

    OMP_NUM_THREADS=1 python benchmarks/bench_obs_patterns.py [--leave-out] [--obs-window N] [--work DIR] [--json out.json]

About 10 min for the bundled model alone; add ~(training, 15-20 min, + 2 min) per left-out family (models cached
in ``--work``: a rerun only evaluates).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

import oceanda
from oceanda.analysis.obs_patterns import DEFAULT_FAMILIES, qg_family_obs
from oceanda.kalman import analyse_dataset, tuned_filter
from oceanda.sampledata import bundled_sample_dir

TRUTHS = ("eval_1", "eval_2", "eval_3")
FAMILIES = (*DEFAULT_FAMILIES, "swaths")
SHIPPED = {"tracks": "obs_altimetry_{}.nc", "clouds": "obs_gappy_{}.nc", "points": "obs_insitu_{}.nc"}


def observations(data: Path, lib, work: Path, family: str, truth_name: str, truth) -> Path:
    """The family's observation file of a truth: the shipped one where the sample has it, else generated (seeded)."""
    shipped = data / SHIPPED.get(family, "-").format(truth_name)
    if shipped.exists():
        return shipped
    path = work / f"obs_{family}_{truth_name}.nc"
    if not path.exists():
        seed = [18, FAMILIES.index(family), TRUTHS.index(truth_name)]
        oceanda.write(qg_family_obs(truth, lib, family, np.random.default_rng(seed)), path)
    return path


def squared_errors(analysis, truth, clim) -> tuple[np.ndarray, np.ndarray]:
    """Per-day spatial mean squared SSH error of an analysis and of climatology."""
    t = truth.sel(time=analysis.time.values)["ssh"].values
    se = np.nanmean((analysis["ssh_mean"].values - t) ** 2, axis=(1, 2))
    return se, np.nanmean((clim[None] - t) ** 2, axis=(1, 2))


def bootstrap_ratio(a: np.ndarray, b: np.ndarray, truth_id: np.ndarray, block: int = 5, n: int = 2000,
                    seed: int = 0) -> tuple[float, float, float]:
    """sqrt(sum a / sum b) and its paired block-bootstrap 95 % interval (blocks of days within each truth)."""
    rng = np.random.default_rng(seed)
    blocks = [np.flatnonzero(truth_id == k)[i:i + block] for k in np.unique(truth_id)
              for i in range(0, int((truth_id == k).sum()), block)]
    sa, sb = np.array([a[i].sum() for i in blocks]), np.array([b[i].sum() for i in blocks])
    pick = rng.integers(0, len(blocks), (n, len(blocks)))
    r = np.sqrt(sa[pick].sum(1) / sb[pick].sum(1))
    return float(np.sqrt(a.sum() / b.sum())), float(np.quantile(r, 0.025)), float(np.quantile(r, 0.975))


def enoi_errors(lib, obs_path: Path, truth, clim, window: int = 1) -> tuple[np.ndarray, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = oceanda.open_obs(obs_path, like=lib, superob=False).load()
    ds = analyse_dataset(lib, raw, tuned_filter("qg_enoi"), periodic=True, rng=0, keep_members=False, obs_window=window)
    return squared_errors(ds, truth, clim)


def contrastive_errors(model: Path, lib, obs_path: Path, truth, clim, mode: str, cache: Path, window: int = 1):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        obs = oceanda.open_obs(obs_path, like=lib).load()
        extra = {"obs_window": window} if mode == "hybrid" else {}
        ds = oceanda.assimilate(model, lib, obs, mode=mode, quiet=True, cache_dir=cache, **extra)
    return squared_errors(ds, truth, clim)


def leave_out_model(family: str, work: Path, seconds: float | None, data: Path) -> Path:
    """A pattern model trained like the bundled one without ``family`` (cached in ``work``), calibrated on truth_tune."""
    from oceanda.analysis.window_training import train_bundled_window_model

    out = work / f"model_without_{family}"
    if not (out / "model.safetensors").exists():
        keep = [f for f in DEFAULT_FAMILIES if f != family]
        t0 = time.perf_counter()
        train_bundled_window_model(data, out, families=keep, **({} if seconds is None else {"seconds": seconds}))
        print(f"  trained without {family} ({', '.join(keep)}) in {time.perf_counter() - t0:.0f} s", flush=True)
    return out


def evaluate(model: Path, family: str, lib, truths: dict, work: Path, data: Path, enoi_cache: dict,
             window: int = 1) -> dict:
    """Local, hybrid and EnOI RMSE / climatology of one family on eval_1-3, with the ratios' intervals.

    ``window`` > 1: hybrid and EnOI both use that many days of observations per analysis (``obs_window``);
    EnOI of one day is kept as ``enoi_1day`` (the issue's baseline) with the hybrid's ratio to it.
    """
    clim = lib["ssh"].mean("time").values
    rows = {"local": [], "hybrid": [], "enoi": [], "enoi_1day": [], "clim": [], "truth": []}
    for k, (name, truth) in enumerate(truths.items()):
        path = observations(data, lib, work, family, name, truth)
        for w in dict.fromkeys((window, 1)):
            if (family, name, w) not in enoi_cache:
                enoi_cache[(family, name, w)] = enoi_errors(lib, path, truth, clim, w)
        e, c = enoi_cache[(family, name, window)]
        rows["enoi"].append(e)
        rows["enoi_1day"].append(enoi_cache[(family, name, 1)][0])
        rows["clim"].append(c)
        rows["truth"].append(np.full(len(e), k))
        for mode in ("local", "hybrid"):
            rows[mode].append(contrastive_errors(model, lib, path, truth, clim, mode, work / "cache", window)[0])
    r = {k: np.concatenate(v) for k, v in rows.items()}
    out = {m: float(np.sqrt(r[m].sum() / r["clim"].sum())) for m in ("local", "hybrid", "enoi", "enoi_1day")}
    for m in ("local", "hybrid"):
        out[f"{m}_over_enoi"] = bootstrap_ratio(r[m], r["enoi"], r["truth"])
    out["hybrid_over_enoi_1day"] = bootstrap_ratio(r["hybrid"], r["enoi_1day"], r["truth"])
    out["days"], out["obs_window"] = int(len(r["enoi"])), int(window)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None, help="window model (default: the bundled one)")
    ap.add_argument("--families", default=",".join(FAMILIES), help="families to evaluate (comma list)")
    ap.add_argument("--leave-out", action="store_true", help="also train one model without each training family")
    ap.add_argument("--seconds", type=float, default=None,
                    help="training budget of each left-out model (default: the bundled model's, 200 epochs or 1200 s)")
    ap.add_argument("--work", type=Path, default=None, help="folder for generated files and models (kept)")
    ap.add_argument("--json", type=Path, default=None, help="write the results as JSON")
    ap.add_argument("--obs-window", type=int, default=1, metavar="DAYS",
                    help="days of observations in each Kalman step of the hybrid and of EnOI alike (default 1)")
    args = ap.parse_args()
    data = bundled_sample_dir("qg")
    model = args.model or data.parent / "models" / "qg_window"
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_obs_patterns_"))
    work.mkdir(parents=True, exist_ok=True)
    lib = oceanda.open_states(data / "library.nc").load()
    truths = {n: oceanda.open_states(data / f"truth_{n}.nc").load() for n in TRUTHS}
    enoi_cache: dict = {}
    results: dict = {"model": str(model), "truths": list(TRUTHS), "rows": []}
    t0 = time.perf_counter()
    for family in args.families.split(","):
        res = evaluate(model, family, lib, truths, work, data, enoi_cache, args.obs_window)
        results["rows"].append({"family": family, "model": "all families", **res})
        print(_row(family, "all families", res), flush=True)
        if args.leave_out and family in DEFAULT_FAMILIES:
            held = leave_out_model(family, work, args.seconds, data)
            res = evaluate(held, family, lib, truths, work, data, enoi_cache, args.obs_window)
            results["rows"].append({"family": family, "model": f"without {family}", **res})
            print(_row(family, f"without {family}", res), flush=True)
    results["seconds"] = time.perf_counter() - t0
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


def _row(family: str, model: str, r: dict) -> str:
    lo, li, l1 = r["local_over_enoi"], r["hybrid_over_enoi"], r["hybrid_over_enoi_1day"]
    one = f"  hybrid/EnOI(1 day) {l1[0]:.3f} [{l1[1]:.3f}, {l1[2]:.3f}]" if r["obs_window"] > 1 else ""
    return (f"{family:<7s} {model:<16s} local {r['local']:.3f}  hybrid {r['hybrid']:.3f}  EnOI {r['enoi']:.3f}  "
            f"local/EnOI {lo[0]:.3f} [{lo[1]:.3f}, {lo[2]:.3f}]  hybrid/EnOI {li[0]:.3f} [{li[1]:.3f}, {li[2]:.3f}]{one}")


if __name__ == "__main__":
    main()
