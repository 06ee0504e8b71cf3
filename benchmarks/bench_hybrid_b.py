"""Which background covariance the hybrid's Kalman step should use, measured on one truth and observation family.

The hybrid is a Schur-localised EnOI update of the contrastive local mean. This runs the bundled model's local
analyses once, then the Kalman step with several B's on the same local means and observations:
static library B x alpha, a per-point variance blended from the local members' spread (B = a D^1/2 C D^1/2,
D = (1 - w) var_local + w alpha var_static), other localisation radii, and the union of static and local
anomalies (``ensemble='both'``, local x beta). It also prints EnOI (library mean, alpha 1) as the reference.
SSH RMSE / climatology over the days. Choose on ``--truth tune``; eval_1-3 are for acceptance only.

    OMP_NUM_THREADS=1 python benchmarks/bench_hybrid_b.py --truth tune --family clouds [--days 31]
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import numpy as np

import oceanda
from oceanda.analysis.assimilate import resolve_settings
from oceanda.analysis.encoding import load_model, to_model_units
from oceanda.analysis.hybrid import _anomalies
from oceanda.analysis.library import Library
from oceanda.analysis.obs_patterns import qg_family_obs
from oceanda.analysis.samplers import sampler_for
from oceanda.kalman import schur_enoi
from oceanda.sampledata import bundled_sample_dir

SHIPPED = {"tracks": "obs_altimetry_{}.nc", "clouds": "obs_gappy_{}.nc", "points": "obs_insitu_{}.nc"}
FAMILIES = ("tracks", "clouds", "points", "swaths")
TRUTHS = ("eval_1", "eval_2", "eval_3", "tune")


def _obs(data: Path, truth, lib_ds, name: str, family: str, tmp: Path):
    """The shipped observation file of that family, else one drawn with the benchmark seed [18, family, truth]."""
    p = data / SHIPPED.get(family, "-{}").format(name)
    if not p.exists():
        p = tmp / f"obs_{family}_{name}.nc"
        rng = np.random.default_rng([18, FAMILIES.index(family), TRUTHS.index(name)])
        oceanda.write(qg_family_obs(truth, lib_ds, family, rng), p)
    return oceanda.open_obs(p, like=lib_ds).load()


def _setup(name: str, family: str, days: int, tmp: Path) -> dict:
    """Bundled model, sampler, observation inputs and the local analyses (mean, members) of every day."""
    data = bundled_sample_dir("qg")
    mdir = data.parent / "models" / "qg_window"
    lib_ds = oceanda.open_states(data / "library.nc").load()
    truth = oceanda.open_states(data / f"truth_{name}.nc").load()
    obs = _obs(data, truth, lib_ds, name, family, tmp)
    model, enc = load_model(mdir)
    lib, obs = to_model_units(enc, Library(lib_ds), obs)
    settings = resolve_settings(model, str(mdir / "config.json"))
    s = sampler_for("hybrid", enc, settings)
    inputs = s.read_obs(obs, lib, list(range(days)))
    s.prepare(lib, cache_dir=tmp / "cache", quiet=True, seed=0)
    locs = []
    for i, o in enumerate(inputs):
        la = s._local(o.values, np.random.default_rng([0, i]), o.errors)
        locs.append((la.mean, la.members))
    return dict(s=s, inputs=inputs, locs=locs, truth=truth, clim=lib_ds["ssh"].mean("time").values,
                ssh=lib.layout.channels_of(["ssh"])[0], h=settings.hybrid)


def _rmse(c: dict, a: float, radius: float, cov) -> float:
    """SSH RMSE / climatology of the Kalman step with static anomalies ``cov(i, S0)`` (None: EnOI)."""
    s, loc = c["s"], c["s"].localizer
    S0 = s.static - s.static.mean(0)
    se, ce = [], []
    for i, o in enumerate(c["inputs"]):
        mean, mem = c["locs"][i]
        xb = s.static.mean(0).astype(np.float64) if cov is None else np.nan_to_num(mean.ravel().astype(np.float64))
        st = S0 if cov is None else cov(mem, S0)
        xa, _ = schur_enoi(xb, st, o.kalman, alpha=a, radius=radius, points=loc.coords, period=loc.period,
                           metric=loc.metric, var_channels=[c["ssh"]])
        t = c["truth"].sel(time=o.time)["ssh"].values
        se.append(np.nanmean((xa.reshape(mean.shape)[c["ssh"]] - t) ** 2))
        ce.append(np.nanmean((c["clim"] - t) ** 2))
    return float(np.sqrt(np.sum(se) / np.sum(ce)))


def _local_variance(w: float, alpha: float):
    """Static anomalies rescaled point by point to the blended variance (1 - w) var_local + w alpha var_static."""
    def cov(mem, S0):
        A = _anomalies(mem)
        sd_s = S0.std(0, ddof=1)
        v = (1 - w) * np.sum(A * A, 0) / (len(A) - 1) + w * alpha * sd_s ** 2
        return S0 * np.where(sd_s > 0, np.sqrt(v) / np.where(sd_s > 0, sd_s, 1), 0)[None]
    return cov


def _union(beta: float, a: float):
    """Static anomalies plus the local members' anomalies x beta (on equal footing in the sample covariance)."""
    def cov(mem, S0):
        A = _anomalies(mem)
        return np.concatenate([S0, A * np.sqrt(beta * (len(S0) - 1) / (len(A) - 1) / a)])
    return cov


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--truth", choices=TRUTHS, default="tune")
    p.add_argument("--family", choices=FAMILIES, default="clouds")
    p.add_argument("--days", type=int, default=31)
    args = p.parse_args()
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        c = _setup(args.truth, args.family, args.days, Path(tmp))
        h = c["h"]
        enoi = _rmse(c, 1.0, h.radius, None)
        rows = [("EnOI alpha 1", enoi)]
        rows += [(f"static alpha {a:.3g}", _rmse(c, a, h.radius, lambda m, S0: S0)) for a in (0.3, h.alpha, 1.2)]
        rows += [(f"local variance w {w}", _rmse(c, 1.0, h.radius, _local_variance(w, h.alpha))) for w in (0, .3, .6)]
        rows += [(f"radius {r:g}", _rmse(c, h.alpha, r, lambda m, S0: S0)) for r in (50, 70, 140)]
        rows += [(f"both beta {b}", _rmse(c, h.alpha, h.radius, _union(b, h.alpha))) for b in (0.1, 0.3, 1.0)]
    print(f"{args.truth} {args.family}, {args.days} days; bundled alpha {h.alpha:.4g}, radius {h.radius:g}")
    print(f"{'variant':<24}{'RMSE/clim':>10}{'/EnOI':>8}")
    for label, v in rows:
        print(f"{label:<24}{v:>10.4f}{v / enoi:>8.3f}")


if __name__ == "__main__":
    main()
