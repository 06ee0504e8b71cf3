"""Cycled assimilation of Lorenz-96 files (``oceanda sample-data --testbed lorenz96``): ``oceanda cycle``'s adapter.

Why not :mod:`oceanda.experiments.l96_twin`: the twin makes its own truth and observations; here they
come from files -- a library of states, an observation file (NaN where unobserved, ``X_error``) and
optionally a truth -- as in the QG adapter (:mod:`oceanda.experiments.qg_cycle`), whose
:class:`~oceanda.experiments.qg_cycle.CycleChoice` and output layout this reuses. Times are model
time units (the files' ``model_time``; else their clock, 1 unit = 5 days). Settings are
``tuned.json``'s ``lorenz96`` entries (radius in grid units). No Lorenz-96 window model is bundled, so
there is no contrastive start and the hybrid covariance's extra members are static library states.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from oceanda import fields
from oceanda.errors import ConfigurationError, DataValidationError
from oceanda.kalman import (Observations, cycle, make_filter, observations_from_dataset, ring_localizer, tuned_filter,
                            tuned_settings)
from oceanda.experiments.qg_cycle import Setup, cycle_facts, warm_members
from oceanda.testbeds.lorenz96 import Lorenz96

#: The state variable of the Lorenz-96 files.
VARIABLE = "X"
#: Initial ensembles without a window model (``contrastive`` needs one; none is bundled for Lorenz-96).
INITIALS = ("climatology", "enoi")
#: Static library states blended in by the hybrid covariance (``extra='library'``).
EXTRA_MEMBERS = 20
#: Model time units per day of the files' clock (``sampledata.MODEL_CLOCKS``: 1 unit = 5 days).
UNITS_PER_DAY = 1.0 / 5.0


@dataclass
class L96Setup:
    """The library, observations, layout and model of a run (the fields :func:`qg_cycle.cycle_dataset` reads)."""

    library: xr.Dataset
    obs: xr.Dataset
    layout: fields.FieldLayout
    model: Lorenz96
    observations: list  # one Observations per time, time in model units

    @classmethod
    def of(cls, library: xr.Dataset, obs: xr.Dataset, *, source: str = "library", obs_source: str = "obs") -> "L96Setup":
        if VARIABLE not in library:
            raise DataValidationError(f"{source}: no variable '{VARIABLE}'; expected a Lorenz-96 library "
                                      f"(oceanda sample-data --testbed lorenz96)")
        layout = fields.layout_of(library, [VARIABLE], source=source)
        n = layout.n_channels * int(np.prod([library.sizes[d] for d in layout.spatial]))
        attrs = library.attrs
        try:
            model = Lorenz96(n=int(attrs.get("n", n)), forcing=float(attrs.get("forcing", 8.0)), dt=float(attrs.get("dt", 0.05)))
        except (TypeError, ValueError) as exc:
            raise DataValidationError(f"{source}: Lorenz-96 attributes n, forcing, dt: {exc}; expected numbers") from None
        if model.n != n:
            raise DataValidationError(f"{source}: attribute n = {model.n} but {n} state values; expected them equal")
        times = model_times(obs, model.dt, obs_source)
        found = observations_from_dataset(obs, layout, library, source=obs_source, variables=[VARIABLE])
        # coords None: the ring localizer places each observation at the state index H selects
        return cls(library, obs, layout, model, [Observations(o.y, o.error, o.H, None, time=t) for o, t in zip(found, times)])

    @property
    def times(self) -> np.ndarray:
        return self.obs["time"].values

    def forecast(self, E: np.ndarray, t0: float, t1: float) -> np.ndarray:
        """Advance ``E [N, n]`` from ``t0`` to ``t1`` (model units; the :func:`oceanda.kalman.cycle` protocol)."""
        return self.model.forecast(E, t1 - t0)

    library_states = Setup.library_states  # the QG setup's: flat library states [pick, n] of this layout


def model_times(obs: xr.Dataset, dt: float, source: str = "obs") -> np.ndarray:
    """Observation times in model units, each interval a whole number of model steps ``dt``.

    Parameters
    ----------
    obs : the observations (``model_time`` coordinate, else datetimes at 5 days per unit)
    dt : the model's step
    source : what to call ``obs`` in errors

    Returns
    -------
    numpy.ndarray of float
    """
    if "model_time" in obs.coords:
        t = np.asarray(obs["model_time"].values, dtype=np.float64)
    else:
        tv = obs["time"].values
        days = (tv - tv[0]) / np.timedelta64(1, "D") if np.issubdtype(tv.dtype, np.datetime64) else tv.astype(float)
        t = np.asarray(days, dtype=np.float64) * UNITS_PER_DAY
    steps = np.diff(t) / dt
    if t.size and (not np.all(np.isfinite(t)) or np.any(steps < 0.5) or np.any(np.abs(steps - np.round(steps)) > 1e-6)):
        raise DataValidationError(f"{source}: observation times are not increasing by whole model steps of {dt:g}; "
                                  "expected e.g. the times of oceanda sample-data --testbed lorenz96")
    return t


def check_choice(choice: Any) -> None:
    """What Lorenz-96 cannot do: a contrastive start or contrastive hybrid members (no window model)."""
    if choice.initial not in INITIALS:
        raise ConfigurationError(f"initial={choice.initial!r}: no Lorenz-96 window model is bundled; expected one of "
                                 f"{list(INITIALS)} for the lorenz96 testbed")
    if choice.hybrid_beta > 0 and choice.extra != "library":
        raise ConfigurationError(f"extra={choice.extra!r}: no Lorenz-96 window model is bundled; expected 'library' "
                                 "for the lorenz96 testbed")


def lorenz96_filter(method: str, members: int | None = None, **overrides: Any) -> tuple[Any, int]:
    """The tuned Lorenz-96 filter (``tuned.json`` ``lorenz96``) and the ensemble size (None = the tuned one)."""
    entry = tuned_settings("lorenz96")[method]
    members = int(entry["members"]) if members is None else int(members)
    return tuned_filter("lorenz96", method, **overrides), members


def _initial(setup: L96Setup, kind: str, members: int, radius: float, g: np.random.Generator,
             draw: str = "matched") -> tuple[np.ndarray, bool]:
    """Library states (forecast to the first time) or members of the EnOI analysis of the first observations."""
    size = setup.library.sizes["time"]
    if kind == "climatology":
        return setup.library_states(np.sort(g.choice(size, size=members, replace=False))), False
    E = make_filter("enoi", radius=radius).assimilate(setup.library_states(np.arange(size)), setup.observations[0],
                                                      rng=int(g.integers(2**31)),
                                                      localizer=ring_localizer(setup.model.n, radius))
    return warm_members(E, members, g, draw), True


def run_cycle(setup: L96Setup, choice: Any, *, seed: int = 0, quiet: bool = True) -> tuple[np.ndarray, dict[str, Any]]:
    """One cycled run through every observation time: the analysis members ``[time, N, n]`` and facts.

    As :func:`oceanda.experiments.qg_cycle.run_cycle`: the initial draw from a generator seeded with
    ``seed``, the filter's from ``seed + 1``; a warm start (``enoi``) is the first analysis itself.

    Parameters
    ----------
    setup : :meth:`L96Setup.of`
    choice : a :class:`~oceanda.experiments.qg_cycle.CycleChoice`
    seed : seed of the draws
    quiet : no progress bar

    Returns
    -------
    ``(analyses, facts)``
    """
    check_choice(choice)
    f, N = lorenz96_filter(choice.method, choice.members)
    radius = float(getattr(f, "radius", None) or tuned_settings("lorenz96")["letkf"]["radius"])
    g = np.random.default_rng(seed)
    E0, warm = _initial(setup, choice.initial, N, radius, g, choice.warm_draw)
    obs = setup.observations
    first = int(warm)
    step = obs[1].time - obs[0].time if len(obs) > 1 else setup.model.dt
    extra = None
    if choice.hybrid_beta > 0:
        static = setup.library_states(np.sort(g.choice(setup.library.sizes["time"], size=EXTRA_MEMBERS, replace=False)))
        extra = lambda k, Ef: static  # noqa: E731
    loc = ring_localizer(setup.model.n, f.radius, f.taper) if choice.method == "letkf" else None
    r = cycle(setup.forecast, E0, obs[first:], f, localizer=loc, rng=seed + 1, t0=obs[0].time - step * (1 - first),
              progress=False if quiet else None, keep_ensembles=True, extra=extra, hybrid_beta=choice.hybrid_beta)
    analyses = np.concatenate([E0[None], r.analyses]) if warm else r.analyses
    return analyses, cycle_facts(choice, N, f, r, radius_key="loc_radius")


def with_model_time(ds: xr.Dataset, setup: L96Setup) -> xr.Dataset:
    """The output with the observations' model times as a coordinate (the clock's days say less)."""
    t = np.asarray([o.time for o in setup.observations], dtype=np.float64)
    return ds.assign_coords(model_time=("time", t, {"long_name": "Lorenz-96 model time", "units": "1"}))


__all__ = ["EXTRA_MEMBERS", "INITIALS", "L96Setup", "VARIABLE", "check_choice", "lorenz96_filter", "model_times",
           "run_cycle", "with_model_time"]
