"""Cycled QG assimilation helped by the contrastive sampler: warm starts and hybrid covariance.

Why these two and not the learned likelihood alone: the bundled critic ranks the truth above 99 %
of library windows but is flat at forecast-error scale (``docs/critics.md``), so a particle filter
with it is no better than climatology once the forecast has spun up. What it does well is the first
analysis, from climatology: so (1) ``initial='contrastive'`` starts the cycle from the one-shot
contrastive hybrid analysis of the first observations (members resampled from it), and (2) with
``hybrid_beta`` every analysis blends the forecast covariance with that of the contrastive posterior
members for the same observations (:func:`oceanda.kalman.hybrid_assimilate`), which fills the
directions a 10-member forecast lacks. ``initial='enoi'`` and ``extra='library'`` are the controls
without the contrastive model (the same steps with an EnOI analysis / random library states).

The one-shot analyses do not depend on the forecast, so they are computed once for every time
(:func:`contrastive_analyses`) and indexed by the cycle. Forecasts, observations and the filter are
those of :func:`oceanda.experiments.qg_twin.cycled_letkf` (settings tuned for the ensemble size).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from oceanda import fields, metrics
from oceanda.errors import ConfigurationError, DataValidationError
from oceanda.experiments.qg_twin import QGForecast, _daily_observations, qg_letkf_settings
from oceanda.kalman import ETKF, cycle, localizer_for_dataset, make_filter, tuned_filter
from oceanda.settings import check_choice, check_number
from oceanda.testbeds.qg import QGModel

#: Initial ensembles of a cycle: library states forecast to the first time, or a warm start from a
#: one-shot analysis of the first observations (EnOI: the control; contrastive: the sampler's hybrid mode).
INITIALS = ("climatology", "enoi", "contrastive")
#: Where the hybrid covariance's extra members come from.
EXTRAS = ("contrastive", "library")
#: Cycling methods of this experiment.
METHODS = ("letkf", "etkf")
#: How a warm start draws its N members from the one-shot analysis' M: ``matched`` (the draw shifted and
#: scaled, element by element, to the analysis' mean and spread) or ``resampled`` (the draw as it is).
WARM_DRAWS = ("matched", "resampled")


@dataclass
class Setup:
    """What every variant shares: the library, the observations, the grid layout, the model."""

    library: xr.Dataset
    obs: xr.Dataset
    layout: fields.FieldLayout
    forecast: QGForecast
    observations: list  # one oceanda.kalman.Observations per time, time in days since the first

    @classmethod
    def of(cls, library: xr.Dataset, obs: xr.Dataset) -> "Setup":
        layout = fields.layout_of(library, [v for v in ("psi", "ssh") if v in library])
        if layout.variables[0] != "psi":
            raise DataValidationError("cycled QG assimilation needs 'psi' in the library; expected psi (and ssh)")
        forecast = QGForecast(QGModel.from_attrs(library.attrs), layout.n_channels)
        return cls(library, obs, layout, forecast, _daily_observations(obs, layout, library))

    @property
    def times(self) -> np.ndarray:
        return self.obs["time"].values

    def states(self, ds: xr.Dataset) -> np.ndarray:
        """Flat states ``[time, member, n]`` of an analysis Dataset's members (float64), ssh = f0 psi1 / g.

        Why ssh is re-derived: the filter state carries ssh beside psi, and its covariances tie SSH
        observations to psi; the hybrid mode rescales the observed channel's anomalies only, so its
        members' ssh and psi disagree (as extra members those broken cross-covariances made the cycle
        diverge at beta >= 0.2 on the tuning truth). The forecast re-derives ssh from psi the same way.
        """
        lay = dataclasses.replace(self.layout, sample_dim="member")
        X = np.stack([fields.to_array(ds.isel(time=k), lay, dtype=np.float64)[0] for k in range(ds.sizes["time"])])
        if "ssh" in self.layout.variables:
            m = self.forecast.model
            X[:, :, self.layout.channels_of(["ssh"])[0]] = (m.f0 / m.g) * X[:, :, 0]
        return X.reshape(X.shape[0], X.shape[1], -1)

    def library_states(self, pick: np.ndarray) -> np.ndarray:
        X, _ = fields.to_array(self.library.isel(time=pick), self.layout, dtype=np.float64)
        return X.reshape(pick.size, -1)


def contrastive_analyses(model: Any, library: xr.Dataset, obs: xr.Dataset, members: int, *, mode: str = "hybrid",
                         seed: int = 0, quiet: bool = True, cache_dir: Any = None) -> xr.Dataset:
    """The one-shot contrastive analyses (``members`` posterior members) of every time of ``obs``.

    Parameters
    ----------
    model : a window model directory (or a loaded model)
    library, obs : the library states and the daily observations
    members : posterior members drawn per time
    mode : ``hybrid`` or ``local``
    seed, quiet, cache_dir : as :func:`oceanda.analysis.assimilate.assimilate`

    Returns
    -------
    xarray.Dataset in the analysis layout (with members)
    """
    from oceanda.analysis.assimilate import assimilate

    check_choice("mode", mode, ("hybrid", "local"))
    return assimilate(model, library, obs, mode=mode, members=members, seed=seed, quiet=quiet, cache_dir=cache_dir)


@dataclass(frozen=True)
class CycleChoice:
    """One variant: method, ensemble size, initial ensemble, hybrid covariance weight and source."""

    method: str = "letkf"
    members: int | None = None
    initial: str = "climatology"
    hybrid_beta: float = 0.0
    extra: str = "contrastive"
    warm_draw: str = "matched"

    @property
    def contrastive_extras(self) -> bool:
        """Whether every analysis blends in the contrastive posterior members of its own time."""
        return self.hybrid_beta > 0 and self.extra == "contrastive"

    @property
    def needs_contrastive(self) -> bool:
        """Whether the run uses the contrastive analyses (a warm start from them, or their hybrid members)."""
        return self.initial == "contrastive" or self.contrastive_extras

    def check(self, has_model: bool) -> None:
        check_choice("method", self.method, METHODS)
        check_number("members", self.members, lo=2, integer=True, optional=True)
        check_choice("initial", self.initial, INITIALS)
        check_number("hybrid_beta", self.hybrid_beta, lo=0.0, hi=1.0, hi_open=True)
        check_choice("extra", self.extra, EXTRAS)
        check_choice("warm_draw", self.warm_draw, WARM_DRAWS)
        if self.needs_contrastive and not has_model:
            raise ConfigurationError(f"initial={self.initial!r}, hybrid_beta={self.hybrid_beta} with extra="
                                     f"{self.extra!r}: needs the contrastive analyses (a window model); expected a model")


#: The ``tuned.json`` entry of the contrastive cycle's beta and extra source per N (``benchmarks/bench_cycle.py``).
TUNED = "qg_contrastive_cycle"


def tuned_choice(members: int, initial: str = "contrastive") -> CycleChoice:
    """The contrastive-assisted cycle tuned for ``members`` (the nearest tuned N): warm start, beta, extra.

    ``initial='enoi'`` gives the control without the contrastive model: the same beta with library members.

    Parameters
    ----------
    members : ensemble size
    initial : ``contrastive`` or the ``enoi`` control

    Returns
    -------
    CycleChoice
    """
    from oceanda.kalman.tuned import tuned_members_entry, tuned_settings

    _, entry = tuned_members_entry(TUNED, members)
    extra = entry.get("extra", "library") if initial == "contrastive" else "library"
    return CycleChoice(members=members, initial=initial, hybrid_beta=float(entry["hybrid_beta"]), extra=extra,
                       warm_draw=tuned_settings(TUNED).get("warm_draw", "resampled"))


def _filter(choice: CycleChoice, overrides: dict[str, Any]) -> tuple[Any, int]:
    f, members = qg_letkf_settings(members=choice.members, **overrides)
    if choice.method == "etkf":
        f = make_filter(ETKF(), inflation=f.inflation, rtps=f.rtps)
    return f, members


def resample_members(E: np.ndarray, members: int, g: np.random.Generator) -> np.ndarray:
    """``members`` of the analysis members ``E``: a draw without replacement (with it when too few)."""
    return E[np.sort(g.choice(E.shape[0], size=members, replace=E.shape[0] < members))]


def matched_members(E: np.ndarray, members: int, g: np.random.Generator) -> np.ndarray:
    """:func:`resample_members`, then shifted and scaled element by element to ``E``'s mean and spread.

    Why: N of M analysis members carry a sampling error of their own -- in the mean (sd / sqrt(N)) and in
    every element's spread (a chi-square with N - 1 degrees of freedom: 0.3-1.9 x the variance at N = 10).
    The cycle's first forecast inherits both. Matching the first two moments keeps what the analysis knows
    (its mean, its spread) and the draw's correlations. On the tuning truth at N = 10 it took the warm
    start's RMSE from 0.264 to 0.242 x climatology (``benchmarks/bench_cycle.py``).
    """
    X = resample_members(E, members, g)
    A = X - X.mean(axis=0)
    if members > 1 and E.shape[0] > 1:
        sd_draw, sd = A.std(axis=0, ddof=1), E.std(axis=0, ddof=1)
        A *= np.where(sd_draw > 0, sd / np.where(sd_draw > 0, sd_draw, 1.0), 1.0)
    return E.mean(axis=0) + A


def warm_members(E: np.ndarray, members: int, g: np.random.Generator, draw: str = "matched") -> np.ndarray:
    """The warm start's ``members`` from the analysis members ``E`` by ``draw`` (one of :data:`WARM_DRAWS`)."""
    check_choice("warm_draw", draw, WARM_DRAWS)
    return (matched_members if draw == "matched" else resample_members)(E, members, g)


def initial_ensemble(setup: Setup, kind: str, members: int, g: np.random.Generator,
                     oneshot: np.ndarray | None = None, draw: str = "matched") -> tuple[np.ndarray, bool]:
    """The initial ensemble ``[N, n]`` and whether it is already the analysis of the first time.

    ``climatology``: ``members`` library states (a day before the first observations; the cycle
    forecasts them). ``enoi``: members of the Schur-localised EnOI analysis of the first observations
    (``tuned.json`` ``qg_enoi``). ``contrastive``: members drawn from ``oneshot`` (the one-shot
    contrastive analysis of the first time, ``[M, n]``). Both warm starts draw by ``draw``
    (:func:`warm_members`).

    Parameters
    ----------
    setup : the shared inputs
    kind : one of :data:`INITIALS`
    members : ensemble size
    g : the generator of every draw
    oneshot : the contrastive analysis members of the first time (``kind='contrastive'``)
    draw : how a warm start draws its members (:data:`WARM_DRAWS`)

    Returns
    -------
    ``(E0, warm)``
    """
    from oceanda.kalman import analyse_dataset

    if kind == "climatology":
        return setup.library_states(np.sort(g.choice(setup.library.sizes["time"], size=members, replace=False))), False
    if kind == "enoi":
        ds = analyse_dataset(setup.library, setup.obs.isel(time=[0]), tuned_filter("qg_enoi"), periodic=True,
                             rng=int(g.integers(2**31)), keep_members=True)
        return warm_members(setup.states(ds)[0], members, g, draw), True
    if oneshot is None:
        raise ConfigurationError("initial='contrastive': no contrastive analysis given; expected its members")
    return warm_members(oneshot, members, g, draw), True


def _extra(setup: Setup, choice: CycleChoice, oneshot: np.ndarray | None, g: np.random.Generator,
           first: int) -> Any:
    """The hybrid covariance's callback ``extra(k, E_f)`` (None without one)."""
    if choice.hybrid_beta == 0.0:
        return None
    if choice.extra == "contrastive":
        return lambda k, Ef: oneshot[k + first]
    count = oneshot.shape[1] if oneshot is not None else 20
    static = setup.library_states(np.sort(g.choice(setup.library.sizes["time"], size=count, replace=False)))
    return lambda k, Ef: static


def run_cycle(setup: Setup, choice: CycleChoice, *, oneshot: np.ndarray | None = None, seed: int = 0,
              quiet: bool = True, **overrides: Any) -> tuple[np.ndarray, dict[str, Any]]:
    """One cycled run through every time of ``setup.obs``: the analysis members ``[time, N, n]`` and facts.

    The initial draw uses a generator seeded with ``seed`` and the filter one seeded with ``seed + 1``,
    so variants that differ only in their initial ensemble or hybrid covariance see the same draws.
    With a warm start the first time's analysis is the initial ensemble itself (no second update with
    the same observations); the cycle then forecasts it to the second time.

    Parameters
    ----------
    setup : the shared inputs (:meth:`Setup.of`)
    choice : the variant
    oneshot : the contrastive analyses' members ``[time, M, n]`` (:func:`contrastive_analyses`; :meth:`Setup.states`):
        of every time with contrastive extra members, else of every time or of the first only (the warm start)
    seed : seed of the draws
    quiet : no progress bar
    **overrides : filter settings replacing the tuned ones (``radius_km``, ``inflation``, ``rtps``, ``block``)

    Returns
    -------
    ``(analyses, facts)``: facts hold the filter settings, members and seconds per analysis
    """
    choice.check(oneshot is not None)
    T = len(setup.observations)
    allowed = (T,) if choice.contrastive_extras else (1, T)  # a warm start reads the first time only
    if oneshot is not None and oneshot.shape[0] not in allowed:
        raise DataValidationError(f"contrastive analyses of {oneshot.shape[0]} times; expected one per observation "
                                  f"time ({T}){'' if choice.contrastive_extras else ' or the first only (1)'}")
    f, N = _filter(choice, overrides)
    g = np.random.default_rng(seed)
    E0, warm = initial_ensemble(setup, choice.initial, N, g, oneshot[0] if oneshot is not None else None,
                                choice.warm_draw)
    first = int(warm)
    obs = setup.observations
    loc = (localizer_for_dataset(setup.library, f.radius, taper=f.taper, block=f.block, periodic=True)
           if choice.method == "letkf" else None)
    r = cycle(setup.forecast, E0, obs[first:], f, localizer=loc, rng=seed + 1, t0=obs[0].time - 1.0 + first,
              progress=False if quiet else None, keep_ensembles=True, extra=_extra(setup, choice, oneshot, g, first),
              hybrid_beta=choice.hybrid_beta)
    analyses = np.concatenate([E0[None], r.analyses]) if warm else r.analyses
    return analyses, cycle_facts(choice, N, f, r, radius_key="loc_radius_km")


def cycle_facts(choice: CycleChoice, members: int, f: Any, result: Any, radius_key: str) -> dict[str, Any]:
    """What a cycled run's output records: the variant, the filter's settings, seconds per analysis.

    Parameters
    ----------
    choice : the variant
    members : the ensemble size
    f : the filter
    result : the CycleResult
    radius_key : the attribute naming the LETKF radius (with its unit)

    Returns
    -------
    dict of global attributes
    """
    facts = {"method": choice.method, "members": members, "initial": choice.initial, "hybrid_beta": choice.hybrid_beta,
             "extra": choice.extra if choice.hybrid_beta > 0 else "none", "inflation": float(f.inflation),
             "rtps": float(f.rtps), "seconds_per_analysis": float(np.mean(result.stats["seconds_analysis"]))}
    if choice.initial != "climatology":
        facts["warm_draw"] = choice.warm_draw
    if choice.method == "letkf":
        facts[radius_key] = float(f.radius)
    return facts


def cycle_dataset(setup: Setup, analyses: np.ndarray, facts: dict[str, Any], truth: xr.Dataset | None = None) -> xr.Dataset:
    """The cycled analyses in the layout of ``oceanda assimilate``; with ``truth`` per-time RMSE and spread.

    Parameters
    ----------
    setup : the shared inputs
    analyses : ``[time, N, n]`` from :func:`run_cycle`
    facts : its facts (global attributes)
    truth : the true states at the observation times (adds ``<var>_rmse`` and ``<var>_spread_rms`` per time)

    Returns
    -------
    xarray.Dataset
    """
    T, N = analyses.shape[:2]
    ny, nx = (setup.library.sizes[d] for d in setup.layout.spatial)
    members = analyses.reshape(T, N, setup.layout.n_channels, ny, nx).astype(np.float32)
    ds = fields.analysis_dataset(members, setup.layout, setup.library, setup.times,
                                 attrs={"mode": "kalman (cycled)", **{k: v for k, v in facts.items() if v is not None}})
    if truth is not None:
        for v in setup.layout.variables:
            mean = ds[f"{v}_mean"]
            true = mean.copy(data=truth[v].transpose(*mean.dims).values)  # the truth on the analysis' coordinates
            ds[f"{v}_rmse"] = ("time", metrics.rmse(mean, true, per_time=True).values,
                               {"long_name": f"RMSE of the analysis mean of {v} against the truth",
                                "units": ds[f"{v}_mean"].attrs.get("units", "1")})
            ds[f"{v}_spread_rms"] = ("time", np.sqrt(metrics.spatial_mean(ds[f"{v}_spread"] ** 2)).values,
                {"long_name": f"root of the domain-mean ensemble variance of {v}",
                 "units": ds[f"{v}_mean"].attrs.get("units", "1")})
    return ds
