"""One time's contrastive analysis as a typed result, and the one function writing a sequence of them as a Dataset.

Why apart from the samplers: a sampler analyses one time on arrays (so the times can be batched and
distributed), while the output layout -- :func:`oceanda.fields.analysis_dataset` plus the per-time
diagnostics, the hybrid's background and global mode's retrieval -- is the same for every mode and is
written once, here, from what each :class:`Analysis` holds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from oceanda import fields
from oceanda.analysis.library import Library
from oceanda.analysis.posterior import WeightedPosterior
from oceanda.grid import time_days

#: Attribute marking per-time diagnostics that are not gridded fields (skipped by io validation).
DIAGNOSTIC_ATTR = "oceanda_diagnostic"


@dataclass
class Analysis:
    """One time's analysis in the library's channel layout (float32 fields).

    Attributes
    ----------
    members : ``[M, C, Y, X]`` the analysis ensemble
    mean, spread : ``[C, Y, X]`` the (weighted) analysis mean and standard deviation
    ess : effective sample size of the posterior weights (mean over windows when ``over_windows``)
    dropped_mass : posterior weight dropped by truncation (mean over windows when ``over_windows``)
    over_windows : the diagnostics are means over analysis windows (local and hybrid modes)
    background_mean, background_spread : the hybrid's Kalman background (the local analysis), else None
    posterior : global mode's weights over the library (retrieval and non-negligible weights), else None
    search : how local and hybrid modes found their candidate windows (``exact``, ``flat``, ``ivf``), else None
    recall : share of the weight in the windows the search scored (mean over windows; estimated for ``ivf``)
    local : the hybrid's local analysis as mode ``local`` returns it (when the sampler keeps it:
        ``HybridSampler.keep_local``), else None
    local_share : the share of this time's analysis seconds its local analysis took (with ``local``)
    logit_error : local and hybrid modes: bound on any logit's error (nats) of a low-rank window search
        (:class:`~oceanda.analysis.search.LowRank`; 0: full rows), None where not measured
    """

    members: np.ndarray
    mean: np.ndarray
    spread: np.ndarray
    ess: float
    dropped_mass: float
    over_windows: bool = False
    background_mean: np.ndarray | None = None
    background_spread: np.ndarray | None = None
    posterior: WeightedPosterior | None = None
    search: str | None = None
    recall: float | None = None
    local: Analysis | None = None
    local_share: float | None = None
    logit_error: float | None = None


def _diag(values, dims, long_name: str, units: str = "1") -> xr.DataArray:
    return xr.DataArray(values, dims=dims, attrs={"long_name": long_name, "units": units, DIAGNOSTIC_ATTR: 1})


def analyses_to_dataset(analyses: Sequence[Analysis], library: Library, times: Any,
                        attrs: Mapping[str, Any]) -> xr.Dataset:
    """The output Dataset of a sequence of analyses (one per time).

    Parameters
    ----------
    analyses : one :class:`Analysis` per time
    library : the library they were drawn from (layout, grid coordinates, sample times)
    times : the analysis times (the ``time`` coordinate)
    attrs : global attributes (mode, fingerprints, tau, timings, command, ...)

    Returns
    -------
    xarray.Dataset: ``<var>_mean``, ``<var>_spread`` and the ensemble ``<var>`` (``member``) for every library
    variable, ``ess`` and ``dropped_mass`` per time; with backgrounds ``<var>_background_mean``/``_spread``;
    with posteriors ``retrieved_index``/``retrieved_time``/``retrieved_score`` (``rank``) and
    ``weight_index``/``weight`` (``particle``)
    """
    mem = np.stack([a.members for a in analyses])  # [T, M, C, Y, X]
    like = library.ds.isel({library.sample_dim: 0}, drop=True) if library.sample_dim != "time" else library.ds
    ds = fields.analysis_dataset(mem, library.layout, like, times,
                                 attrs={"title": f"oceanda contrastive analysis ({attrs.get('mode', 'global')} mode)",
                                        **dict(attrs)})
    # the weighted moments are better estimates than those of the M resampled members
    for key in ("mean", "spread"):
        rebuilt = _fields(np.stack([getattr(a, key) for a in analyses]), library, like, times)
        for v in library.layout.variables:
            ds[f"{v}_{key}"].values[...] = rebuilt[v].transpose(*ds[f"{v}_{key}"].dims).values
    if all(a.background_mean is not None for a in analyses):
        _add_background(ds, analyses, library, like, times)
    windows = " (mean over windows)" if any(a.over_windows for a in analyses) else ""
    ds["ess"] = _diag(np.array([a.ess for a in analyses]), ("time",),
                      "effective sample size of the posterior weights" + windows)
    ds["dropped_mass"] = _diag(np.array([a.dropped_mass for a in analyses]), ("time",),
                               "posterior weight dropped by truncation" + windows)
    if all(a.posterior is not None for a in analyses):
        ds = _add_retrieval(ds, [a.posterior for a in analyses], library)
    _add_mass_attrs(ds, analyses)
    return ds


def _add_mass_attrs(ds: xr.Dataset, analyses: Sequence[Analysis]) -> None:
    """Mean kept / dropped posterior weight over the times; for local modes the search and its recall."""
    if not analyses:
        return
    dropped = float(np.mean([a.dropped_mass for a in analyses]))
    ds.attrs.update(dropped_mass_mean=dropped, kept_mass_mean=1.0 - dropped)
    if all(a.search is not None for a in analyses):
        ds.attrs["search"] = ",".join(sorted({str(a.search) for a in analyses}))
        ds.attrs["search_recall"] = float(np.mean([a.recall for a in analyses]))
    err = max((a.logit_error for a in analyses if a.logit_error is not None), default=0.0)
    if err > 0:  # a low-rank search scored the windows: its logits are within err nats of the exact ones
        ds.attrs["search_logit_error_max"] = err


def _fields(arr: np.ndarray, library: Library, like: xr.Dataset, times: Any) -> xr.Dataset:
    return fields.from_array(arr, library.layout, like, sample_coord=np.asarray(times), sample_dim="time")


def _add_background(ds: xr.Dataset, analyses: Sequence[Analysis], library: Library, like: xr.Dataset,
                    times: Any) -> None:
    """The contrastive (local) background of the hybrid's Kalman step, for diagnostics."""
    for key in ("mean", "spread"):
        rebuilt = _fields(np.stack([getattr(a, f"background_{key}") for a in analyses]), library, like, times)
        for v in library.layout.variables:
            da = rebuilt[v]
            da.attrs = {"units": library.layout.attrs.get(v, {}).get("units", "1"), DIAGNOSTIC_ATTR: 1,
                        "long_name": f"local contrastive analysis {key} of {v} (background of the Kalman step)"}
            ds[f"{v}_background_{key}"] = da


def _add_retrieval(ds: xr.Dataset, posts: Sequence[WeightedPosterior], library: Library) -> xr.Dataset:
    """Global mode: the top-K retrieved library states and the non-negligible weights of every time."""
    K = max(len(p.top_indices) for p in posts)
    P = max(len(p.indices) for p in posts)
    ri = np.full((len(posts), K), -1, np.int64)
    rs = np.full((len(posts), K), np.nan)
    wi = np.full((len(posts), P), -1, np.int64)
    ww = np.zeros((len(posts), P))
    for t, p in enumerate(posts):
        ri[t, :len(p.top_indices)] = p.top_indices
        rs[t, :len(p.top_scores)] = p.top_scores
        wi[t, :len(p.indices)] = p.indices
        ww[t, :len(p.weights)] = p.weights
    ds["retrieved_index"] = _diag(ri, ("time", "rank"), "library index of the top-K retrieved states (best first; -1 = none)")
    ds["retrieved_score"] = _diag(rs, ("time", "rank"), "similarity / tau of the retrieved states")
    lib_t = library.ds[library.sample_dim].values if library.sample_dim in library.ds.coords else np.arange(library.n)
    tattrs = {"long_name": "library time of the retrieved states", DIAGNOSTIC_ATTR: 1}
    if lib_t.dtype == object:  # cftime calendar: float days since 1970-01-01 in it, NaN where none (no NaT for cftime)
        tattrs.update(units="days since 1970-01-01 00:00:00", calendar=lib_t[0].calendar)
        lib_t, missing = time_days(lib_t), np.nan
    else:
        missing = np.array(np.nan).astype(lib_t.dtype) if np.issubdtype(lib_t.dtype, np.datetime64) else -1
    ds["retrieved_time"] = xr.DataArray(np.where(ri >= 0, lib_t[np.maximum(ri, 0)], missing), dims=("time", "rank"),
                                        attrs=tattrs)
    ds["weight_index"] = _diag(wi, ("time", "particle"), "library index of each state with non-negligible weight (-1 = padding)")
    ds["weight"] = _diag(ww, ("time", "particle"), "posterior weight softmax(s / tau) after truncation; sums to 1 per time")
    return ds.assign_coords(rank=np.arange(K), particle=np.arange(P))
