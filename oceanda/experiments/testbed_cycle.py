"""Cycled assimilation of a bundled testbed's files: what ``oceanda cycle`` and :func:`oceanda.api.cycle_testbed` run.

Why one composition below the API: reading and checking the files (a library, observations on its
grid, a truth at the observation times), choosing the testbed's adapter (QG:
:mod:`~oceanda.experiments.qg_cycle`, with the contrastive sampler's warm start and hybrid members;
Lorenz-96: :mod:`~oceanda.experiments.l96_cycle`) and scoring against the truth and against
climatology (the library mean) are the same for the verb and a notebook. The output is the analysis
layout of ``oceanda assimilate`` (``<var>_mean``, ``<var>_spread``, members ``<var>``) plus, with a
truth, ``<var>_rmse``, ``<var>_spread_rms`` and ``<var>_rmse_climatology`` per time.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import xarray as xr

from oceanda import io, metrics
from oceanda.errors import ConfigurationError, DataValidationError, GridMismatchError
from oceanda.experiments import l96_cycle
from oceanda.experiments import qg_cycle as qc
from oceanda.settings import SEED_MAX, check_choice, check_number
from oceanda.superob import to_grid

#: Testbeds with a cycled adapter.
TESTBEDS = ("qg", "lorenz96")
#: The variable each testbed's summary scores (SSH for QG, as the demo; the state for Lorenz-96).
HEADLINE = {"qg": "ssh", "lorenz96": l96_cycle.VARIABLE}
#: Contrastive posterior members per one-shot analysis (warm-start draws and hybrid extras come from them).
ONESHOT_MEMBERS = 40


def resolve_extra(extra: str | None, model: Any) -> str:
    """The hybrid covariance's extra members when not given: contrastive with a model, library states without."""
    return extra if extra is not None else ("contrastive" if model is not None else "library")


def check_request(testbed: str, choice: qc.CycleChoice, model: Any, seed: Any) -> None:
    """Every setting and combination, before any file is read (API spelling; the verb checks its options first)."""
    check_choice("testbed", testbed, TESTBEDS)
    check_number("seed", seed, lo=0, hi=SEED_MAX - 1, integer=True)
    choice.check(True)  # choices and ranges; whether a model is needed is said below, naming it
    if testbed == "lorenz96":
        l96_cycle.check_choice(choice)
        if model is not None:
            raise ConfigurationError("model: given for the lorenz96 testbed, which has no window model; expected none")
        return
    if choice.needs_contrastive and model is None:
        raise ConfigurationError(f"model=None: initial={choice.initial!r} / extra={choice.extra!r} with hybrid_beta="
                                 f"{choice.hybrid_beta} use the contrastive analyses; expected a window model folder "
                                 "(e.g. sample_data/models/qg_window)")
    if model is not None and not choice.needs_contrastive:
        raise ConfigurationError(f"model: unused by initial={choice.initial!r} with hybrid_beta={choice.hybrid_beta} "
                                 f"and extra={choice.extra!r}; expected initial='contrastive' (or hybrid members "
                                 "extra='contrastive'), or no model")


def _opened(data: Any, what: str, opener: Any) -> tuple[xr.Dataset, str]:
    """A Dataset (loaded) and the name errors call it: the path as given, or ``what`` for a Dataset."""
    if isinstance(data, xr.Dataset):
        return data.load(), what
    name = " + ".join(map(os.fspath, data)) if isinstance(data, (list, tuple)) else os.fspath(data)
    return opener(data).load(), name


def check_truth(truth: xr.Dataset, name: str, library: xr.Dataset, obs: xr.Dataset, variables: list[str]) -> xr.Dataset:
    """The truth at the observation times, on the library's grid, holding every analysed variable.

    Parameters
    ----------
    truth : the true states (dim ``time``)
    name : what to call it in errors (its path)
    library, obs : the library (grid) and observations (times)
    variables : the analysed variables

    Returns
    -------
    xarray.Dataset: ``truth`` at ``obs``'s times
    """
    missing = [v for v in variables if v not in truth]
    if missing:
        raise DataValidationError(f"{name}: no variable(s) {missing}; expected the analysed variables {variables}")
    for d in (d for d in library[variables[0]].dims if d != "time"):
        if d not in truth.dims or truth.sizes[d] != library.sizes[d]:
            raise GridMismatchError(f"{name}: dimension '{d}' of size {truth.sizes.get(d)}; expected {library.sizes[d]} "
                                    "as in the library")
        if d in truth.coords and d in library.coords and not np.allclose(
                np.asarray(truth[d].values, float), np.asarray(library[d].values, float), rtol=1e-6, atol=1e-9):
            raise GridMismatchError(f"{name}: coordinate '{d}' differs from the library's; expected the same grid")
    absent = ~np.isin(obs["time"].values, truth["time"].values)
    if absent.any():
        raise DataValidationError(f"{name}: no state at {int(absent.sum())} observation time(s) (first "
                                  f"{str(obs['time'].values[absent][0])[:19]}); expected the truth at every observation time")
    return truth.sel(time=obs["time"].values)


def _check_obs(obs: xr.Dataset, name: str) -> None:
    times = obs["time"].values if "time" in obs.dims else np.array([])
    if times.size < 2:
        raise DataValidationError(f"{name}: {times.size} observation time(s); expected at least 2 for a cycle")
    if not np.all(times[1:] > times[:-1]):
        raise DataValidationError(f"{name}: observation times are not strictly increasing; expected one per cycle, in order")


def _check_sizes(library: xr.Dataset, lib_name: str, obs: xr.Dataset, members: int, beta: float, oneshot: bool) -> None:
    """Library states enough for the draws without replacement, and memory for the stored ensembles."""
    size = int(library.sizes["time"])
    static = (ONESHOT_MEMBERS if oneshot else l96_cycle.EXTRA_MEMBERS) if beta > 0 else 0  # hybrid library members
    if size < max(members, static):
        raise ConfigurationError(f"members={members}: {lib_name} holds {size} states; expected at most {size}"
                                 f"{f' (and at least {static} for the hybrid library members)' if static else ''}")
    n = int(sum(np.prod([library.sizes[d] for d in library[v].dims if d != "time"]) for v in library.data_vars
                if "time" in library[v].dims))
    T = obs.sizes["time"]
    nbytes = 8.0 * T * n * (3 * members + (ONESHOT_MEMBERS if oneshot else 0))
    io.check_allocation(nbytes, f"members={members}")


def setup_of(testbed: str, library: xr.Dataset, lib_name: str, obs: xr.Dataset, obs_name: str) -> Any:
    """The testbed's shared inputs: :class:`qg_cycle.Setup` or :class:`l96_cycle.L96Setup`."""
    if testbed == "lorenz96":
        return l96_cycle.L96Setup.of(library, obs, source=lib_name, obs_source=obs_name)
    if "psi" not in library:
        raise DataValidationError(f"{lib_name}: no variable 'psi'; expected a QG library with psi (and ssh), "
                                  "e.g. oceanda sample-data --testbed qg")
    return qc.Setup.of(library, obs)


def _oneshot(setup: qc.Setup, model: Any, choice: qc.CycleChoice, seed: int, quiet: bool,
             cache_dir: Any) -> np.ndarray:
    """The contrastive posterior members ``[time, M, n]``: of every time for hybrid members, else of the first only."""
    obs = setup.obs if choice.contrastive_extras else setup.obs.isel(time=[0])
    one = qc.contrastive_analyses(model, setup.library, obs, ONESHOT_MEMBERS, seed=seed, quiet=quiet, cache_dir=cache_dir)
    return setup.states(one)


def _run(testbed: str, setup: Any, model: Any, choice: qc.CycleChoice, seed: int, quiet: bool,
         cache_dir: Any) -> tuple[np.ndarray, dict[str, Any]]:
    if testbed == "lorenz96":
        return l96_cycle.run_cycle(setup, choice, seed=seed, quiet=quiet)
    oneshot = _oneshot(setup, model, choice, seed, quiet, cache_dir) if choice.needs_contrastive else None
    return qc.run_cycle(setup, choice, oneshot=oneshot, seed=seed, quiet=quiet)


def _scores(ds: xr.Dataset, library: xr.Dataset, truth: xr.Dataset, variables: list[str], headline: str) -> None:
    """Per-time climatology RMSE beside the analysis RMSE; the headline variable's means as attributes."""
    for v in variables:
        ds[f"{v}_rmse_climatology"] = ("time", metrics.rmse(library[v].mean("time"), truth[v], per_time=True).values,
                                       {"long_name": f"RMSE of the library mean (climatology) of {v} against the truth",
                                        "units": ds[f"{v}_mean"].attrs.get("units", "1")})
    rmse, clim = float(ds[f"{headline}_rmse"].mean()), float(ds[f"{headline}_rmse_climatology"].mean())
    ds.attrs.update({"score_variable": headline, "rmse_mean": rmse, "rmse_climatology_mean": clim,
                     "rmse_ratio_to_climatology": rmse / clim if clim > 0 else float("nan"),
                     "spread_rms_mean": float(ds[f"{headline}_spread_rms"].mean())})


def cycle_testbed(testbed: str, library: Any, obs: Any, *, truth: Any = None, model: Any = None, method: str = "letkf",
                  initial: str = "climatology", hybrid_beta: float = 0.0, extra: str | None = None,
                  members: int | None = None, seed: int = 0, quiet: bool = True, cache_dir: Any = None,
                  warm_draw: str = "matched") -> xr.Dataset:
    """See :func:`oceanda.api.cycle_testbed` (the documented front door): every check before the run."""
    choice = qc.CycleChoice(method, members, initial, hybrid_beta, resolve_extra(extra, model), warm_draw)
    check_request(testbed, choice, model, seed)
    lib, lib_name = _opened(library, "library", io.open_states)
    ob, obs_name = _opened(obs, "obs", lambda p: to_grid(io.open_obs(p, like=lib), lib))  # points: superobbed
    _check_obs(ob, obs_name)
    if testbed == "qg":
        from oceanda.experiments.qg_twin import tuned_members

        N = tuned_members(members)
    else:
        N = l96_cycle.lorenz96_filter(method, members)[1]
    _check_sizes(lib, lib_name, ob, N, choice.hybrid_beta, choice.needs_contrastive)
    setup = setup_of(testbed, lib, lib_name, ob, obs_name)
    variables = list(setup.layout.variables)
    tr = None if truth is None else check_truth(*_opened(truth, "truth", io.open_states), lib, ob, variables)
    analyses, facts = _run(testbed, setup, model, choice, int(seed), quiet, cache_dir)
    ds = qc.cycle_dataset(setup, analyses, {**facts, "testbed": testbed, "seed": int(seed)}, tr)
    if testbed == "lorenz96":
        ds = l96_cycle.with_model_time(ds, setup)
    if tr is not None:
        _scores(ds, lib, tr, variables, HEADLINE[testbed])
    return ds


__all__ = ["HEADLINE", "ONESHOT_MEMBERS", "TESTBEDS", "check_request", "check_truth", "cycle_testbed",
           "resolve_extra", "setup_of"]
