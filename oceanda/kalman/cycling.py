"""Cycled data assimilation: forecast with a batched model, analyse at observation times, repeat.

Why this knows no model: the driver needs only ``forecast(E, t0, t1) -> E`` on flat ensembles
``[N, n]`` and a configured filter (:mod:`oceanda.kalman.methods`), so any testbed or user model
cycles the same way; the twin experiments that join a testbed, its observations and a filter live
in :mod:`oceanda.experiments` (``l96_twin``, ``qg_twin``). Every cycle records forecast and analysis
RMSE (against a truth, when given) and spread; the ensemble is checkpointed in NetCDF (double
precision, with the random-generator and adaptive-inflation state) so an interrupted run resumes
from its last checkpoint and continues exactly as if never stopped.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time as _time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from oceanda import io
from oceanda.errors import CheckpointError, ConfigurationError, DataValidationError
from oceanda.kalman._core import as_rng, normalised_innovations, repair_members
from oceanda.kalman.augmented import check_beta, hybrid_assimilate
from oceanda.kalman.inflation import AdaptiveInflation
from oceanda.kalman.methods import LETKF, Filter
from oceanda.kalman.obsspace import Observations

STAT_NAMES = ("rmse_f", "rmse_a", "spread_f", "spread_a", "inflation", "seconds_forecast", "seconds_analysis")
#: Settings a checkpoint must share with the run that resumes from it.
RESUME_KEYS = ("method", "members", "state_size")

Forecast = Callable[[np.ndarray, float, float], np.ndarray]
#: ``extra(k, E_f) -> [M, n]``: the members blended into cycle ``k``'s forecast covariance (hybrid covariance).
Extra = Callable[[int, np.ndarray], np.ndarray]


def rmse(E: np.ndarray, truth: np.ndarray) -> float:
    """Root-mean-square over the state of the ensemble-mean error.

    Parameters
    ----------
    E : ensemble ``[N, n]``
    truth : the true state ``[n]``

    Returns
    -------
    float
    """
    return float(np.sqrt(np.mean((E.mean(0) - truth) ** 2)))


def spread(E: np.ndarray) -> float:
    """Root of the state-averaged ensemble variance (ddof=1): comparable to the RMSE.

    Parameters
    ----------
    E : ensemble ``[N, n]``

    Returns
    -------
    float
    """
    return float(np.sqrt(np.mean(E.var(0, ddof=1))))


@dataclass
class CycleResult:
    """Per-cycle statistics (arrays over cycles), analysis times and the final ensemble."""

    times: np.ndarray
    stats: dict[str, np.ndarray]
    ensemble: np.ndarray
    resumed_from: int | None = None
    mean_analyses: np.ndarray | None = field(default=None, repr=False)
    analyses: np.ndarray | None = field(default=None, repr=False)  # [cycles, N, n] with keep_ensembles

    def summary(self, skip: int = 0) -> dict[str, float]:
        """Time means over cycles ``skip:`` (burn-in excluded), plus cycles per second.

        Parameters
        ----------
        skip : cycles excluded at the start

        Returns
        -------
        dict: mean ``rmse_*``, ``spread_*``, ``inflation``, ``seconds_per_analysis``, ``cycles_per_second``, ``spread_skill_a``
        """
        out = {k: float(np.nanmean(v[skip:])) for k, v in self.stats.items() if k.startswith(("rmse", "spread", "inflation"))}
        sec = self.stats["seconds_forecast"][skip:] + self.stats["seconds_analysis"][skip:]
        out["seconds_per_analysis"] = float(np.nanmean(self.stats["seconds_analysis"][skip:]))
        out["cycles_per_second"] = float(1.0 / np.nanmean(sec)) if np.nanmean(sec) > 0 else float("inf")
        if "rmse_a" in out and out.get("rmse_a", 0) > 0:
            out["spread_skill_a"] = out["spread_a"] / out["rmse_a"]
        return out

    def to_dataset(self) -> xr.Dataset:
        """The per-cycle statistics as a Dataset along ``cycle`` (with the analysis ``time``).

        Returns
        -------
        xarray.Dataset
        """
        ds = xr.Dataset({k: ("cycle", np.asarray(v, dtype=np.float64), {"units": "s" if k.startswith("seconds") else "1"})
                         for k, v in self.stats.items()},
                        coords={"cycle": np.arange(len(self.times), dtype=np.int32),
                                # not 'time': CF reserves that name for "<unit> since <date>" clocks
                                "model_time": ("cycle", np.asarray(self.times, dtype=np.float64),
                                               {"long_name": "model time of the analysis, in the testbed's time unit"})})
        for k, desc in (("rmse_f", "forecast ensemble-mean RMSE vs truth"), ("rmse_a", "analysis ensemble-mean RMSE vs truth"),
                        ("spread_f", "forecast spread"), ("spread_a", "analysis spread"),
                        ("inflation", "multiplicative inflation factor applied")):
            ds[k].attrs["long_name"] = desc
        return ds


def _checkpoint_path(directory: Path, k: int) -> Path:
    return directory / f"cycle_{k:06d}.nc"


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The checkpoint of the last completed cycle in ``directory``.

    Parameters
    ----------
    directory : the checkpoint folder

    Returns
    -------
    Path, or None if there is none
    """
    directory = Path(directory)
    try:
        files = io.iter_files([str(directory / "cycle_*.nc")])
    except DataValidationError:
        return None
    return max(files, key=lambda p: p.name)


def _checkpoint_settings(filter: Filter, meta: dict[str, Any]) -> dict[str, Any]:
    return {"method": filter.name, "inflation": filter.inflation, "rtps": filter.rtps, "rtpp": filter.rtpp, **meta,
            "filter": filter.to_dict()}


def _write_checkpoint(directory: Path, k: int, E: np.ndarray, times: Sequence[float], stats: dict[str, list[float]],
                      rng: np.random.Generator, filter: Filter, adaptive: AdaptiveInflation | None,
                      meta: dict[str, Any]) -> Path:
    ds = xr.Dataset(
        {"ensemble": (("member", "state"), E, {"units": "1", "long_name": "analysis ensemble (flat state)"}),
         **{k2: ("cycle", np.asarray(v, dtype=np.float64), {"units": "1"}) for k2, v in stats.items()},
         "cycle_time": ("cycle", np.asarray(times, dtype=np.float64), {"units": "1"})},
    )
    ds.attrs.update({
        "cycle": int(k),
        "rng_state": json.dumps(rng.bit_generator.state),
        "adaptive_inflation": json.dumps(adaptive.state() if adaptive else None),
        "settings": json.dumps(_checkpoint_settings(filter, meta)),
    })
    return io.write_netcdf(ds, _checkpoint_path(directory, k), overwrite=True, command="oceanda.kalman.cycle",
                           keep_float64=["ensemble", *stats.keys(), "cycle_time"])


@dataclass
class _State:
    """Where a run stands: the ensemble, the statistics so far, the first cycle still to do."""

    E: np.ndarray
    stats: dict[str, list[float]]
    start: int = 0
    resumed: int | None = None
    adaptive: AdaptiveInflation | None = None


def _resume(path: Path, state: _State, filter: Filter, meta: dict[str, Any], rng: np.random.Generator) -> None:
    """Continue from checkpoint ``path``: ensemble, statistics, generator and adaptive-inflation state."""
    ck = io.read_netcdf(path)
    saved = json.loads(ck.attrs["settings"])
    now = {"method": filter.name, **meta}
    for key in RESUME_KEYS:
        if saved.get(key) != now[key]:
            raise CheckpointError(f"{path}: checkpoint has {key} = {saved.get(key)}; this run has {now[key]} ")
    state.E = np.asarray(ck["ensemble"].values, dtype=np.float64)
    state.resumed = int(ck.attrs["cycle"])
    state.start = state.resumed + 1
    state.stats = {k: [float(v) for v in ck[k].values] for k in STAT_NAMES}
    rng.bit_generator.state = json.loads(ck.attrs["rng_state"])
    ad = json.loads(ck.attrs["adaptive_inflation"])
    if ad is not None and state.adaptive is not None:
        state.adaptive.load_state(ad)  # the caller's object, as the docstring of cycle() promises


@dataclass
class _Hybrid:
    """The hybrid covariance of a run: the extra members' callback and their weight (beta 0: none)."""

    extra: Extra | None = None
    beta: float = 0.0

    def members(self, k: int, E: np.ndarray) -> np.ndarray | None:
        return self.extra(k, E) if self.extra is not None and self.beta > 0 else None


def _analyse(E: np.ndarray, obs: Observations, filter: Filter, localizer: Any, adaptive: AdaptiveInflation | None,
             rng: np.random.Generator, extra: np.ndarray | None = None, beta: float = 0.0) -> tuple[np.ndarray, float]:
    """One analysis; with adaptive inflation the factor is updated from this cycle's innovations first."""
    if adaptive is None:
        return hybrid_assimilate(filter, E, obs, extra, beta, rng, localizer), filter.inflation
    o = obs.finite()
    E = repair_members(E, rng)
    _, _, Ys, d = normalised_innovations(E, o.apply(E), o)
    factor = filter.inflation * adaptive.update(d, Ys)
    return hybrid_assimilate(dataclasses.replace(filter, inflation=factor), E, obs, extra, beta, rng, localizer), factor


def _record(stats: dict[str, list[float]], Ef: np.ndarray, Ea: np.ndarray, truth: np.ndarray | None, factor: float,
            seconds: tuple[float, float]) -> None:
    stats["rmse_f"].append(rmse(Ef, truth) if truth is not None else np.nan)
    stats["rmse_a"].append(rmse(Ea, truth) if truth is not None else np.nan)
    stats["spread_f"].append(spread(Ef))
    stats["spread_a"].append(spread(Ea))
    stats["inflation"].append(factor)
    stats["seconds_forecast"].append(seconds[0])
    stats["seconds_analysis"].append(seconds[1])


def _check(observations: Sequence[Observations], filter: Filter, localizer: Any, t0: float,
           truth: np.ndarray | None) -> list[float]:
    if not isinstance(filter, Filter) or not filter.cycles:
        raise ConfigurationError(f"cycle: filter {filter!r}; expected a cycling method (EnKF, ETKF or LETKF settings)")
    filter.check_localizer(localizer, required=isinstance(filter, LETKF))  # before the first forecast
    times = [float(o.time) for o in observations]
    if any(b <= a for a, b in zip([t0, *times[:-1]], times)):
        raise DataValidationError("observation times must be increasing and after t0")
    if truth is not None and len(truth) != len(times):
        raise DataValidationError(f"truth has {len(truth)} states; expected one per observation time ({len(times)})")
    return times


def cycle(forecast: Forecast, initial: np.ndarray, observations: Sequence[Observations], filter: Filter, *,
          localizer: Any = None, adaptive: AdaptiveInflation | None = None, rng: Any = 0, t0: float = 0.0,
          truth: np.ndarray | None = None, checkpoint_dir: str | Path | None = None, checkpoint_every: int = 1,
          resume: bool = False, progress: bool | None = None, keep_means: bool = False,
          keep_ensembles: bool = False, extra: Extra | None = None, hybrid_beta: float = 0.0) -> CycleResult:
    """Run ``filter`` through ``observations`` (each with a ``time``), starting from ``initial`` at ``t0``.

    Parameters
    ----------
    forecast : ``forecast(E, t0, t1) -> E``: advances an ensemble ``[N, n]`` from ``t0`` to ``t1``
    initial : the initial ensemble ``[N, n]``
    observations : one :class:`Observations` per cycle, times increasing
    filter : a cycling method (:class:`EnKF`, :class:`ETKF`, :class:`LETKF`; see :func:`make_filter`)
    localizer : the LETKF's :class:`Localizer` on the state grid
    adaptive : adaptive multiplicative inflation (its factor multiplies ``filter.inflation``; updated in place)
    rng : random generator or seed
    t0 : time of ``initial``
    truth : the true state at each observation time ``[K, n]``: enables the RMSE
    checkpoint_dir, checkpoint_every : write the analysis ensemble every ``checkpoint_every`` cycles
    resume : continue from the latest checkpoint in ``checkpoint_dir`` (its method and sizes must match)
    progress : tqdm bar (default: only on a terminal)
    keep_means : keep every analysis mean (``CycleResult.mean_analyses``)
    keep_ensembles : keep every analysis ensemble (``CycleResult.analyses``; cycles x members x state values)
    extra : ``extra(k, E_f) -> [M, n]``: members whose covariance is blended into cycle ``k``'s forecast
        covariance (:func:`~oceanda.kalman.augmented.hybrid_assimilate`)
    hybrid_beta : their weight: the analysis uses ``(1 - beta) P_f + beta P_extra``; 0 = the plain filter

    Returns
    -------
    CycleResult
    """
    times = _check(observations, filter, localizer, t0, truth)
    hybrid = _Hybrid(extra, check_beta(hybrid_beta))
    g = as_rng(rng)
    state = _State(E=np.asarray(initial, dtype=np.float64).copy(), stats={k: [] for k in STAT_NAMES}, adaptive=adaptive)
    meta = {"members": int(state.E.shape[0]), "state_size": int(state.E.shape[1]), "cycles": len(times),
            "hybrid_beta": hybrid.beta}
    ckdir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    path = latest_checkpoint(ckdir) if resume and ckdir is not None else None
    if path is not None:
        _resume(path, state, filter, meta, g)
    progress = sys.stderr.isatty() if progress is None else progress
    means: list[np.ndarray] = []
    ensembles: list[np.ndarray] = []
    E, t_prev = state.E, t0 if state.start == 0 else times[state.start - 1]
    for k in tqdm(range(state.start, len(times)), disable=not progress, desc=f"{filter.name} cycles", initial=state.start,
                  total=len(times)):
        tic = _time.perf_counter()
        E = forecast(E, t_prev, times[k])
        tf = _time.perf_counter() - tic
        Ef = E = repair_members(E, g, what=f"forecast ensemble at cycle {k}")
        tic = _time.perf_counter()
        E, factor = _analyse(E, observations[k], filter, localizer, state.adaptive, g, hybrid.members(k, E), hybrid.beta)
        _record(state.stats, Ef, E, truth[k] if truth is not None else None, factor, (tf, _time.perf_counter() - tic))
        t_prev = times[k]
        if keep_means:
            means.append(E.mean(0))
        if keep_ensembles:
            ensembles.append(E.copy())
        if ckdir is not None and ((k + 1) % checkpoint_every == 0 or k == len(times) - 1):
            _write_checkpoint(ckdir, k, E, times[: k + 1], state.stats, g, filter, state.adaptive, meta)
    return CycleResult(times=np.asarray(times), stats={k: np.asarray(v) for k, v in state.stats.items()}, ensemble=E,
                       resumed_from=state.resumed, mean_analyses=np.asarray(means) if keep_means else None,
                       analyses=np.asarray(ensembles) if keep_ensembles else None)
