"""An observation time window: each analysis also uses the previous days' observations, their errors grown with age.

Why: ocean states change slowly (the QG sample's SSH changes by about 5 % of its variability a day), so
yesterday's observations still say much about today's state -- with gappy patterns (clouds, profiles, tracks)
several days together cover far more of the field than one. An observation of age ``a`` days is used as one of
today's state with the error of that change added: ``sqrt(error^2 + (growth * a * sd)^2)``, ``sd`` the
climatological standard deviation at its location and ``growth`` the change per day as a fraction of it
(:func:`age_growth` estimates it from consecutive library states). The window looks back only (a filter, not
a smoother), as the contrastive encoders' multi-day stacks do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from oceanda.errors import ConfigurationError, DataValidationError
from oceanda.kalman.obsspace import Observations, apply_operator, selection_operator
from oceanda.settings import check_number

__all__ = ["MAX_AGE_GROWTH", "MAX_OBS_DAYS", "WINDOW_STATES", "age_days", "age_growth", "from_states", "windowed"]

#: the longest observation window, in days
MAX_OBS_DAYS = 60
#: the largest error growth per day (a fraction of the std): far beyond any state's change
MAX_AGE_GROWTH = 100.0
#: states read to estimate the climatological std and (consecutive ones) the error growth with age
WINDOW_STATES = 366


def age_days(later: Any, earlier: Any) -> float:
    """``later - earlier`` in days, for numpy datetime64 and cftime times alike (plain numbers: days)."""
    d = later - earlier
    if isinstance(d, np.timedelta64):  # before the numbers: numpy's timedelta64 is an integer type
        return float(d / np.timedelta64(1, "s")) / 86400.0
    if isinstance(d, (int, float, np.integer, np.floating)):
        return float(d)
    return float(d.total_seconds()) / 86400.0


def windowed(obs_list: Sequence[Observations], days: int, growth: float, sd: np.ndarray,
             option: str = "obs_window") -> list[Observations]:
    """Each time's observations with those of the ``days - 1`` days before it, errors grown with their age.

    Parameters
    ----------
    obs_list : one :class:`Observations` per analysis time, each with its ``time`` (any order)
    days : window length in days (1: the list unchanged); observations ``0 <= age < days`` days old are used
    growth : error growth per day, a fraction of ``sd``
    sd : ``[n]`` climatological standard deviation of the flat state (taken at each observation through its ``H``)
    option : the setting's name, for errors

    Returns
    -------
    list of Observations, one per time of ``obs_list``
    """
    if days == 1 or len(obs_list) < 2:
        return list(obs_list)
    if any(o.time is None for o in obs_list):
        raise DataValidationError(f"{option}={days}: the observations have no times; expected a time coordinate")
    if any(callable(o.H) and not sp.issparse(o.H) for o in obs_list):
        raise ConfigurationError(f"{option}={days}: nonlinear observation operators cannot be stacked; use {option}=1")
    sd = np.asarray(sd, dtype=np.float64)
    t = np.array([age_days(o.time, obs_list[0].time) for o in obs_list])  # days since the first
    out = []
    for i, o in enumerate(obs_list):
        age = t[i] - t
        near = np.flatnonzero((age > -1e-6) & (age < days - 1e-6))  # earlier within the window (never later)
        near = near[np.argsort(age[near], kind="stable")]
        parts = [(obs_list[j], max(float(age[j]), 0.0)) for j in [i, *near[near != i]]]
        out.append(o if len(parts) == 1 else _stack(parts, growth, sd))
    return out


def _stack(parts: list[tuple[Observations, float]], growth: float, sd: np.ndarray) -> Observations:
    """One Observations of ``(observations, age)`` pairs; the first pair's time."""
    errors = [np.sqrt(o.error ** 2 + (growth * age * apply_operator(o.H, sd[None])[0]) ** 2) if age > 0 else o.error
              for o, age in parts]
    obs = [o for o, _ in parts]
    if any(sp.issparse(o.H) for o in obs):
        H = sp.vstack([o.H if sp.issparse(o.H) else selection_operator(o.H, sd.size) for o in obs]).tocsr()
    else:
        H = np.concatenate([np.asarray(o.H, dtype=np.int64) for o in obs])
    located = all(o.coords is not None for o in obs)
    coords = np.concatenate([o.coords for o in obs]) if located else None
    return Observations(np.concatenate([o.y for o in obs]), np.concatenate(errors), H, coords=coords, time=obs[0].time)


def from_states(obs_list: Sequence[Observations], days: int, growth: float | None, spread: Any,
                series: Any, option: str = "obs_window") -> tuple[list[Observations], float | None]:
    """:func:`windowed` with ``sd`` the std of ``spread()`` states and, without ``growth``, :func:`age_growth` of ``series()``.

    Why callables: the states are read only when the window is on (and the growth not given), after the checks.

    Parameters
    ----------
    obs_list : one :class:`Observations` per analysis time
    days, growth : the window in days and the error growth per day (None: estimated from ``series``)
    spread : a callable returning ``[m, n]`` flat states whose std scales the growth (NaN where land)
    series : a callable returning ``(states [T, n], times, source)``, consecutive states to estimate the growth from
    option : the setting's name, for errors

    Returns
    -------
    the windowed list; the growth used (None with ``days`` 1)
    """
    check_number(option, days, lo=1, hi=MAX_OBS_DAYS, integer=True)
    check_number("obs_age_growth", growth, lo=0, hi=MAX_AGE_GROWTH, optional=True)
    if days == 1:
        return list(obs_list), None
    sd = np.nan_to_num(np.nanstd(np.asarray(spread(), dtype=np.float64), axis=0, ddof=1))  # land: never observed
    if growth is None:
        states, times, source = series()
        growth = age_growth(states, times, source=source)
    return windowed(obs_list, days, growth, sd, option=option), float(growth)


def age_growth(states: np.ndarray, times: Sequence[Any], source: str = "library") -> float:
    """The change of the state per day, a fraction of its climatological spread, from consecutive states.

    ``median over consecutive pairs of rms((x[t+1] - x[t]) / sd) / gap``, ``sd`` each point's std over the states: the ``growth`` of
    :func:`windowed` (a linear growth of the change with age, as smooth ocean fields show over a few days).

    Parameters
    ----------
    states : ``[T, n]`` states in time order (NaN allowed: land)
    times : their ``T`` times (datetime64 or cftime)
    source : what to call the states in errors

    Returns
    -------
    float
    """
    x = np.asarray(states, dtype=np.float64)
    if len(x) < 3 or len(times) != len(x):
        raise DataValidationError(f"{source}: {len(x)} states; expected at least 3 in time order to estimate the "
                                  "observation error growth with age (or give obs_age_growth)")
    gaps = np.array([age_days(times[t + 1], times[t]) for t in range(len(x) - 1)])
    if not np.all(gaps > 0):
        raise DataValidationError(f"{source}: times not strictly increasing; expected consecutive states to estimate "
                                  "the observation error growth with age (or give obs_age_growth)")
    sd = np.nanstd(x, axis=0)
    z = np.where(sd > 0, x / np.where(sd > 0, sd, 1.0), np.nan)  # in units of each point's spread: no variable dominates
    change = np.sqrt(np.nanmean((z[1:] - z[:-1]) ** 2, axis=1)) / gaps
    return float(np.nanmedian(change)) if np.isfinite(change).any() else 0.0
