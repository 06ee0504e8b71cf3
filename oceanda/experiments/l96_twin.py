"""The Lorenz-96 twin experiment (Sakov & Oke 2008: n = 40, F = 8, dt_obs = 0.05, H = I, R = I).

Why here and not in ``oceanda.kalman``: the twin joins a testbed model (``testbeds.lorenz96``), its
synthetic observations and a filter, so it sits above the Kalman package, which knows only the
``forecast(E, t0, t1)`` protocol. This is the benchmark of ``benchmarks/bench_l96.py`` and of
``oceanda enkf --cycle lorenz96``; the tuned settings are ``tuned.json``'s ``lorenz96`` entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from oceanda.errors import ConfigurationError
from oceanda.kalman import LETKF, CycleResult, Observations, cycle, make_filter, ring_localizer, tuned_settings
from oceanda.testbeds.lorenz96 import Lorenz96

#: Ensemble size and cycles of a run when none are given (the CLI's documented defaults).
DEFAULT_MEMBERS = 20
DEFAULT_CYCLES = 1000
#: Seed offset of the filter's random generator (the twin's truth and observations use ``seed``).
FILTER_SEED_OFFSET = 1000


@dataclass
class Lorenz96Twin:
    """A truth run, its observations and an initial ensemble for the Lorenz-96 benchmark."""

    model: Lorenz96
    truth: np.ndarray  # [K, n] at observation times
    observations: list[Observations]
    E0: np.ndarray
    t0: float

    def forecast(self, E: np.ndarray, t0: float, t1: float) -> np.ndarray:
        """Advance the ensemble ``E [N, n]`` from ``t0`` to ``t1`` (the :func:`oceanda.kalman.cycle` protocol).

        Parameters
        ----------
        E : ensemble ``[N, n]``
        t0, t1 : start and end times

        Returns
        -------
        numpy.ndarray ``[N, n]``
        """
        return self.model.forecast(E, t1 - t0)


def lorenz96_twin(cycles: int, members: int, seed: int = 0, *, n: int = 40, forcing: float = 8.0, dt_obs: float = 0.05,
                  obs_error: float = 1.0, spinup: float = 20.0) -> Lorenz96Twin:
    """Truth spun up onto the attractor, every variable observed every ``dt_obs`` with N(0, obs_error^2) noise.

    The initial ensemble is the truth at t0 plus N(0, 1) perturbations (a climatological-scale
    error would need a longer burn-in; exclude the first cycles from statistics either way).

    Parameters
    ----------
    cycles : observation times
    members : ensemble size
    seed : seed of the truth, the observations and the initial ensemble
    n, forcing : the model's size and forcing
    dt_obs : time between observations
    obs_error : observation error standard deviation
    spinup : model time run before t0

    Returns
    -------
    Lorenz96Twin
    """
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


def run_lorenz96(method: str, members: int | None = None, cycles: int | None = None, seed: int = 0, *,
                 inflation: float | None = None, rtps: float | None = None, radius: float | None = None,
                 taper: str | None = None, burn_in: int = 0, **kw: Any) -> CycleResult:
    """The Lorenz-96 benchmark with one filter.

    Parameters
    ----------
    method : ``enkf``, ``etkf`` or ``letkf``
    members : ensemble size (default :data:`DEFAULT_MEMBERS`)
    cycles : analysis cycles after the burn-in (default :data:`DEFAULT_CYCLES`)
    seed : the twin's seed (the filter's generator uses ``seed + 1000``)
    inflation, rtps, taper : filter settings; None = the method's default (no inflation, no relaxation)
    radius : LETKF localisation half-width in grid units (required for ``letkf``)
    burn_in : extra cycles run first (exclude them with ``summary(skip=burn_in)``)
    **kw : passed to :func:`oceanda.kalman.cycle` (checkpoints, progress, ...)

    Returns
    -------
    CycleResult
    """
    if method == "letkf" and radius is None:
        tuned = tuned_settings("lorenz96")["letkf"]["radius"]
        raise ConfigurationError(f"radius=None; the Lorenz-96 LETKF needs a localisation half-width in grid units > 0 "
                                 f"(--loc-radius; tuned: {tuned})")
    f = make_filter(method, strict=False, inflation=inflation, rtps=rtps, radius=radius, taper=taper)
    members = DEFAULT_MEMBERS if members is None else members
    cycles = DEFAULT_CYCLES if cycles is None else cycles
    twin = lorenz96_twin(cycles + burn_in, members, seed)
    loc = ring_localizer(twin.model.n, f.radius, f.taper) if isinstance(f, LETKF) else None
    return cycle(twin.forecast, twin.E0, twin.observations, f, localizer=loc, rng=seed + FILTER_SEED_OFFSET, t0=twin.t0,
                 truth=twin.truth, **kw)
