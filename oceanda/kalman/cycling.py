"""Cycled data assimilation: forecast with a batched model, analyse at observation times, repeat.

The driver knows nothing about the model beyond ``forecast(E, t0, t1) -> E`` on flat ensembles
``[N, n]``. Every cycle records forecast and analysis RMSE (against a truth, when given) and
spread; the ensemble is checkpointed in NetCDF (double precision, with the random-generator and
adaptive-inflation state) so an interrupted run resumes from its last checkpoint and continues
exactly as if never stopped. :func:`lorenz96_twin` sets up the standard Lorenz-96 benchmark.
"""

from __future__ import annotations

import json
import time as _time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from oceanda import io
from oceanda.errors import CheckpointError, DataValidationError, OceandaError
from oceanda.kalman.filters import enkf, etkf, normalised_innovations, repair_members
from oceanda.kalman.inflation import AdaptiveInflation
from oceanda.kalman.letkf import letkf
from oceanda.kalman.localization import Localizer, ring_localizer
from oceanda.kalman.obsspace import Observations

METHODS = ("enkf", "etkf", "letkf")
STAT_NAMES = ("rmse_f", "rmse_a", "spread_f", "spread_a", "inflation", "seconds_forecast", "seconds_analysis")


def rmse(E: np.ndarray, truth: np.ndarray) -> float:
    """Root-mean-square over the state of the ensemble-mean error."""
    return float(np.sqrt(np.mean((E.mean(0) - truth) ** 2)))


def spread(E: np.ndarray) -> float:
    """Root of the state-averaged ensemble variance (ddof=1): comparable to the RMSE."""
    return float(np.sqrt(np.mean(E.var(0, ddof=1))))


@dataclass
class FilterSettings:
    """What analysis to do each cycle: method, inflation, localisation."""

    method: str = "letkf"
    inflation: float = 1.0
    rtps: float = 0.0
    rtpp: float = 0.0
    localizer: Localizer | None = None
    adaptive: AdaptiveInflation | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise OceandaError(f"unknown filter method '{self.method}'; expected one of {METHODS}")
        if self.method == "letkf" and self.localizer is None:
            raise OceandaError("method 'letkf' needs a localizer (localisation radius and grid)")


def analyse(E: np.ndarray, obs: Observations, settings: FilterSettings, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """One analysis with ``settings``; returns the analysis ensemble and the inflation used."""
    factor = settings.inflation
    if settings.adaptive is not None:
        o = obs.finite()
        E = repair_members(E, rng)
        _, _, Ys, d = normalised_innovations(E, o.apply(E), o)
        factor *= settings.adaptive.update(d, Ys)
    kw = {"inflation": factor, "rtps": settings.rtps, "rtpp": settings.rtpp, "rng": rng}
    if settings.method == "etkf":
        return etkf(E, obs, **kw), factor
    if settings.method == "enkf":
        return enkf(E, obs, **kw), factor
    return letkf(E, obs, localizer=settings.localizer, **kw), factor


@dataclass
class CycleResult:
    """Per-cycle statistics (arrays over cycles), analysis times and the final ensemble."""

    times: np.ndarray
    stats: dict[str, np.ndarray]
    ensemble: np.ndarray
    resumed_from: int | None = None
    mean_analyses: np.ndarray | None = field(default=None, repr=False)

    def summary(self, skip: int = 0) -> dict[str, float]:
        """Time means over cycles ``skip:`` (burn-in excluded), plus cycles per second."""
        out = {k: float(np.nanmean(v[skip:])) for k, v in self.stats.items() if k.startswith(("rmse", "spread", "inflation"))}
        sec = self.stats["seconds_forecast"][skip:] + self.stats["seconds_analysis"][skip:]
        out["seconds_per_analysis"] = float(np.nanmean(self.stats["seconds_analysis"][skip:]))
        out["cycles_per_second"] = float(1.0 / np.nanmean(sec)) if np.nanmean(sec) > 0 else float("inf")
        if "rmse_a" in out and out.get("rmse_a", 0) > 0:
            out["spread_skill_a"] = out["spread_a"] / out["rmse_a"]
        return out

    def to_dataset(self) -> xr.Dataset:
        ds = xr.Dataset({k: ("cycle", np.asarray(v, dtype=np.float64), {"units": "s" if k.startswith("seconds") else "1"})
                         for k, v in self.stats.items()},
                        coords={"cycle": np.arange(len(self.times)), "time": ("cycle", np.asarray(self.times, dtype=np.float64))})
        for k, desc in (("rmse_f", "forecast ensemble-mean RMSE vs truth"), ("rmse_a", "analysis ensemble-mean RMSE vs truth"),
                        ("spread_f", "forecast spread"), ("spread_a", "analysis spread"),
                        ("inflation", "multiplicative inflation factor applied")):
            ds[k].attrs["long_name"] = desc
        return ds


def _checkpoint_path(directory: Path, k: int) -> Path:
    return directory / f"cycle_{k:06d}.nc"


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The checkpoint of the last completed cycle in ``directory`` (None if there is none)."""
    directory = Path(directory)
    try:
        files = io.iter_files([str(directory / "cycle_*.nc")])
    except DataValidationError:
        return None
    return max(files, key=lambda p: p.name)


def _write_checkpoint(directory: Path, k: int, E: np.ndarray, times: Sequence[float], stats: dict[str, list[float]],
                      rng: np.random.Generator, settings: FilterSettings, meta: dict[str, Any]) -> Path:
    ds = xr.Dataset(
        {"ensemble": (("member", "state"), E, {"units": "1", "long_name": "analysis ensemble (flat state)"}),
         **{k2: ("cycle", np.asarray(v, dtype=np.float64), {"units": "1"}) for k2, v in stats.items()},
         "cycle_time": ("cycle", np.asarray(times, dtype=np.float64), {"units": "1"})},
    )
    ds.attrs.update({
        "cycle": int(k),
        "rng_state": json.dumps(rng.bit_generator.state),
        "adaptive_inflation": json.dumps(settings.adaptive.state() if settings.adaptive else None),
        "settings": json.dumps({"method": settings.method, "inflation": settings.inflation, "rtps": settings.rtps,
                                "rtpp": settings.rtpp, **meta}),
    })
    return io.write_netcdf(ds, _checkpoint_path(directory, k), overwrite=True, command="oceanda.kalman.cycle",
                           keep_float64=["ensemble", *stats.keys(), "cycle_time"])


def cycle(forecast: Callable[[np.ndarray, float, float], np.ndarray], E0: np.ndarray, observations: Sequence[Observations],
          settings: FilterSettings, *, rng: Any = 0, t0: float = 0.0, truth: np.ndarray | None = None,
          checkpoint_dir: str | Path | None = None, checkpoint_every: int = 1, resume: bool = False,
          progress: bool | None = None, keep_means: bool = False) -> CycleResult:
    """Run the filter through ``observations`` (each with a ``time``), starting from ``E0 [N, n]`` at ``t0``.

    ``truth [K, n]`` (state at each observation time) enables RMSE. With ``checkpoint_dir`` the
    analysis ensemble is written every ``checkpoint_every`` cycles; ``resume=True`` continues from
    the latest checkpoint there (its settings must match). ``progress`` shows a tqdm bar (default:
    only on a terminal).
    """
    g = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    K = len(observations)
    times = [float(o.time) for o in observations]
    if any(b <= a for a, b in zip([t0, *times[:-1]], times)):
        raise DataValidationError("observation times must be increasing and after t0")
    if truth is not None and len(truth) != K:
        raise DataValidationError(f"truth has {len(truth)} states; expected one per observation time ({K})")
    E = np.asarray(E0, dtype=np.float64).copy()
    stats: dict[str, list[float]] = {k: [] for k in STAT_NAMES}
    means: list[np.ndarray] = []
    start, resumed = 0, None
    meta = {"members": int(E.shape[0]), "state_size": int(E.shape[1]), "cycles": K}
    ckdir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if resume and ckdir is not None:
        path = latest_checkpoint(ckdir)
        if path is not None:
            ck = io.read_netcdf(path)
            saved = json.loads(ck.attrs["settings"])
            for key in ("method", "members", "state_size"):
                if saved.get(key) != {"method": settings.method, **meta}[key]:
                    raise CheckpointError(f"{path}: checkpoint has {key} = {saved.get(key)}; this run has "
                                          f"{ {'method': settings.method, **meta}[key]} ")
            E = np.asarray(ck["ensemble"].values, dtype=np.float64)
            resumed = int(ck.attrs["cycle"])
            start = resumed + 1
            for k2 in STAT_NAMES:
                stats[k2] = [float(v) for v in ck[k2].values]
            g.bit_generator.state = json.loads(ck.attrs["rng_state"])
            ad = json.loads(ck.attrs["adaptive_inflation"])
            if ad is not None and settings.adaptive is not None:
                settings.adaptive = AdaptiveInflation.from_state(ad)
    if progress is None:
        import sys

        progress = sys.stderr.isatty()
    t_prev = t0 if start == 0 else times[start - 1]
    for k in tqdm(range(start, K), disable=not progress, desc=f"{settings.method} cycles", initial=start, total=K):
        obs = observations[k]
        tic = _time.perf_counter()
        E = forecast(E, t_prev, times[k])
        tf = _time.perf_counter() - tic
        E = repair_members(E, g, what=f"forecast ensemble at cycle {k}")
        Ef = E
        tic = _time.perf_counter()
        E, factor = analyse(E, obs, settings, g)
        ta = _time.perf_counter() - tic
        t_prev = times[k]
        xt = truth[k] if truth is not None else None
        stats["rmse_f"].append(rmse(Ef, xt) if xt is not None else np.nan)
        stats["rmse_a"].append(rmse(E, xt) if xt is not None else np.nan)
        stats["spread_f"].append(spread(Ef))
        stats["spread_a"].append(spread(E))
        stats["inflation"].append(factor)
        stats["seconds_forecast"].append(tf)
        stats["seconds_analysis"].append(ta)
        if keep_means:
            means.append(E.mean(0))
        if ckdir is not None and ((k + 1) % checkpoint_every == 0 or k == K - 1):
            _write_checkpoint(ckdir, k, E, times[: k + 1], stats, g, settings, meta)
    return CycleResult(times=np.asarray(times), stats={k: np.asarray(v) for k, v in stats.items()}, ensemble=E,
                       resumed_from=resumed, mean_analyses=np.asarray(means) if keep_means else None)


# ------------------------------------------------------------------------------------------------
# Lorenz-96 twin experiment (Sakov & Oke 2008 settings: n=40, F=8, dt_obs=0.05, H=I, R=I)
# ------------------------------------------------------------------------------------------------


@dataclass
class Lorenz96Twin:
    """A truth run, its observations and an initial ensemble for the Lorenz-96 benchmark."""

    model: Any
    truth: np.ndarray  # [K, n] at observation times
    observations: list[Observations]
    E0: np.ndarray
    t0: float

    def forecast(self, E: np.ndarray, t0: float, t1: float) -> np.ndarray:
        return self.model.forecast(E, t1 - t0)


def lorenz96_twin(cycles: int, members: int, seed: int = 0, *, n: int = 40, forcing: float = 8.0, dt_obs: float = 0.05,
                  obs_error: float = 1.0, spinup: float = 20.0) -> Lorenz96Twin:
    """Truth spun up onto the attractor, every variable observed every ``dt_obs`` with N(0, obs_error^2) noise.

    The initial ensemble is the truth at t0 plus N(0, 1) perturbations (a climatological-scale
    error would need a longer burn-in; exclude the first cycles from statistics either way).
    """
    from oceanda.testbeds.lorenz96 import Lorenz96

    rng = np.random.default_rng(seed)
    model = Lorenz96(n=n, forcing=forcing, dt=min(0.05, dt_obs))
    x = model.forecast(model.initial_state(rng), spinup)
    E0 = x + rng.standard_normal((members, n))
    truth = np.empty((cycles, n))
    obs = []
    H = np.arange(n)
    for k in range(cycles):
        x = model.forecast(x, dt_obs)
        truth[k] = x
        obs.append(Observations(x + obs_error * rng.standard_normal(n), np.full(n, obs_error), H, time=(k + 1) * dt_obs))
    return Lorenz96Twin(model=model, truth=truth, observations=obs, E0=E0, t0=0.0)


def run_lorenz96(method: str, members: int, cycles: int, seed: int = 0, *, inflation: float = 1.0, rtps: float = 0.0,
                 radius: float | None = None, taper: str = "gaspari_cohn", burn_in: int = 0, **kw: Any) -> CycleResult:
    """The Lorenz-96 benchmark with one filter; ``radius`` is the GC half-width in grid units (LETKF)."""
    twin = lorenz96_twin(cycles + burn_in, members, seed)
    loc = ring_localizer(twin.model.n, radius, taper) if method == "letkf" else None
    settings = FilterSettings(method=method, inflation=inflation, rtps=rtps, localizer=loc)
    return cycle(twin.forecast, twin.E0, twin.observations, settings, rng=seed + 1000, t0=twin.t0, truth=twin.truth, **kw)
