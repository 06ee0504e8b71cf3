"""Cycled twin experiments on the bundled testbeds, by name: what ``oceanda enkf --cycle`` runs.

Why here: the twins join a testbed model, an observation generator and a filter, so they sit above
``oceanda.kalman`` (which knows only the ``forecast(E, t0, t1)`` protocol). Settings a user leaves out
(None) are the tuned values of ``oceanda/kalman/tuned.json``, read in one place.
"""

from __future__ import annotations

from typing import Any

from oceanda.errors import ConfigurationError
from oceanda.kalman import METHODS

#: Cycles excluded from the printed means when the user gives no burn-in.
DEFAULT_BURN_IN = 100
#: Methods that cycle (EnOI is a static-ensemble method: nothing to cycle).
CYCLING_METHODS = tuple(name for name, cls in METHODS.items() if cls.cycles)
TWINS = ("lorenz96", "qg")


def run_twin(testbed: str, method: str = "letkf", *, members: int | None = None, cycles: int | None = None,
             seed: int | None = None, inflation: float | None = None, rtps: float | None = None,
             radius: float | None = None, taper: str | None = None, **cycling: Any) -> tuple[Any, dict[str, Any]]:
    """Run the cycled twin ``testbed`` with ``method``; None = the tuned (or documented) default.

    Parameters
    ----------
    testbed : ``lorenz96`` (40 variables, radius in grid units) or ``qg`` (daily altimetry, radius in km)
    method : ``enkf``, ``etkf`` or ``letkf`` (``qg``: letkf only)
    members, cycles, seed, inflation, rtps, radius, taper : filter and run settings
    **cycling : ``checkpoint_dir``, ``checkpoint_every``, ``resume``, ``progress``

    Returns
    -------
    ``(CycleResult, extra scores)``; the QG twin's extra holds its SSH scores
    """
    if testbed not in TWINS:
        raise ConfigurationError(f"--cycle {testbed!r}; expected one of {list(TWINS)}")
    if method not in CYCLING_METHODS:
        raise ConfigurationError(f"--cycle: method {method!r} has no cycling; expected one of {list(CYCLING_METHODS)}")
    if seed is not None:  # else each twin's own default
        cycling["seed"] = seed
    if testbed == "lorenz96":
        from oceanda.experiments.l96_twin import run_lorenz96

        return run_lorenz96(method, members=members, cycles=cycles, inflation=inflation, rtps=rtps, radius=radius,
                            taper=taper, **cycling), {}
    if method != "letkf":
        raise ConfigurationError(f"--cycle qg: method {method!r}; expected letkf (a 8192-value state needs localisation)")
    from oceanda.experiments.qg_twin import run_qg_altimetry

    return run_qg_altimetry(days=cycles, members=members, radius_km=radius, inflation=inflation, rtps=rtps,
                            taper=taper, **cycling)


def summary(result: Any, burn_in: int | None = None) -> dict[str, float]:
    """Means over the cycles after the burn-in (at most a third of the run is skipped).

    Parameters
    ----------
    result : a CycleResult
    burn_in : cycles to skip (default :data:`DEFAULT_BURN_IN`)

    Returns
    -------
    dict of mean RMSE, spread, timings
    """
    skip = DEFAULT_BURN_IN if burn_in is None else burn_in
    return result.summary(skip=min(skip, max(len(result.times) // 3, 0)))
