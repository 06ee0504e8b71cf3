"""Calibration of a trained window model on a tuning run: sampler temperature, spread factors, hybrid settings.

Why apart from training: calibration runs the sampler (assimilate) on a tuning truth, so it sits above
both training and the sampler; it writes what it fits into the model's stored sampler settings
(``config["sampler"]``), which :func:`oceanda.analysis.settings.stored_settings` reads back.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np


def calibrate_model_spread(model_dir, library, obs, truth, *, times: Sequence[int] | None = None, members: int = 20,
                           seed: int = 0, cache_dir=None, hybrid_from_enoi: dict | None = None,
                           tau: float | None = None, tau_scan: dict | None = None) -> float:
    """Fit the local spread factor on a tuning run and store it in the model's sampler settings.

    The factor makes the mean ensemble variance of SSH equal the mean squared error of the analysis
    mean over ``times`` of the tuning truth (spread-skill ratio 1). With ``hybrid_from_enoi`` the
    hybrid's Kalman settings are stored too: EnOI's radius and alpha x (local RMSE / climatology RMSE on
    the tuning run)^2, and the hybrid's spread factor fitted on the same times. The settings are written
    as ``config["sampler"]`` (:class:`~oceanda.analysis.settings.SamplerSettings`, versioned); the fit's
    diagnostics as ``config["calibration"]``.

    Parameters
    ----------
    model_dir : the window model's checkpoint directory (rewritten)
    library : the library (a :class:`~oceanda.analysis.library.Library` or a Dataset)
    obs : observations of the tuning truth
    truth : the tuning truth (holding the model's first observed variable, e.g. ``ssh``)
    times : indices of the tuning times (default: all)
    members : ensemble members of the tuning analyses
    seed : their random streams
    cache_dir : library embedding cache
    hybrid_from_enoi : tuned EnOI settings (``radius_km``, ``alpha``), or None
    tau : a sampler temperature to store with the fit and calibrate at (e.g. :func:`calibrate_sampler_tau`'s);
        None keeps the stored (or trained) one
    tau_scan : ``{tau: RMSE}`` of that choice, recorded in ``config["calibration"]`` (diagnostics only)

    Returns
    -------
    the local spread factor
    """
    from oceanda.analysis.assimilate import assimilate, load_model
    from oceanda.analysis.local_mode import calibrate_spread
    from oceanda.analysis.settings import HybridSettings, stored_settings

    model, enc = load_model(model_dir)
    var = str(enc.state_channels[0][0])  # scored on the (first) analysed variable
    idx = np.arange(obs.sizes["time"]) if times is None else np.asarray(times)
    ds = assimilate((model, enc), library, obs, mode="local", members=members, seed=seed, spread_factor=1.0,
                    cache_dir=cache_dir, times=idx, tau=tau)
    tr = truth.sel(time=ds.time.values)[var].values
    factor = calibrate_spread((ds[f"{var}_mean"].values - tr) ** 2, ds[f"{var}_spread"].values ** 2)
    lib_ds = library.ds if hasattr(library, "ds") else library
    clim = lib_ds[var].mean("time").values
    ratio = float(np.sqrt(np.nanmean((ds[f"{var}_mean"].values - tr) ** 2) / np.nanmean((clim[None] - tr) ** 2)))
    settings = stored_settings(model.config, f"{model_dir}/config.json").replace(spread_factor=float(factor))
    if tau is not None:  # validated by SamplerSettings (TAU_RANGE); the hybrid below reads it back
        settings = settings.replace(tau=float(tau))
    model.config["calibration"] = {"times": len(idx), "members": members, "spread_skill_before": float(1.0 / factor),
                                   "variable": var, f"{var}_rmse_to_climatology": ratio}
    if tau_scan:
        model.config["calibration"][f"tau_scan_{var}_rmse"] = {repr(float(k)): float(v) for k, v in tau_scan.items()}
    if hybrid_from_enoi is not None:
        # the hybrid's background is the local analysis, whose error variance is ratio^2 that of
        # climatology: EnOI's tuned B scaled by ratio^2, at EnOI's tuned radius (no extra tuning)
        settings = settings.replace(hybrid=HybridSettings(alpha=float(hybrid_from_enoi.get("alpha", 1.0)) * ratio ** 2,
                                                          radius=float(hybrid_from_enoi["radius_km"])))
        _store(model, model_dir, settings)
        # then the hybrid's own spread factor, on the same tuning times (its members start from the
        # calibrated local ones; the Kalman variance reduction is only as right as its static B)
        dh = assimilate(model_dir, library, obs, mode="hybrid", members=members, seed=seed, cache_dir=cache_dir,
                        times=idx)
        hf = calibrate_spread((dh[f"{var}_mean"].values - tr) ** 2, dh[f"{var}_spread"].values ** 2)
        settings = settings.replace(hybrid=settings.hybrid.replace(spread_factor=float(hf)))
    _store(model, model_dir, settings)
    return factor


def calibrate_sampler_tau(model, library, obs, truth, taus: Sequence[float], *, times: Sequence[int] | None = None,
                          members: int = 20, seed: int = 0, cache_dir=None) -> tuple[float, dict[float, float]]:
    """The sampler temperature of ``taus`` whose local analysis mean has the lowest RMSE on a tuning run.

    Why: the trained temperature need not be the best one to sample with. The posterior of a cosine
    critic is flat; a fixed cap of 8192 windows per analysis window sharpened it implicitly, the mass
    criterion (``LOCAL_KEEP_MASS``) does not, and a lower tau is the explicit way back. Fit on a tuning
    truth only (never an evaluation run); the spread factor is refitted afterwards at the chosen tau
    (:func:`calibrate_model_spread` with ``tau=``), so only the mean is scored here.

    Parameters
    ----------
    model : the window model's directory or a ``(ContrastiveModel, EncoderPair)`` pair (not modified)
    library, obs, truth, times, members, seed, cache_dir : as :func:`calibrate_model_spread`
    taus : the candidate temperatures (ties: the first listed wins)

    Returns
    -------
    ``(best tau, {tau: RMSE of the local analysis mean})``; RMSE over every finite point of ``times``
    """
    from oceanda.analysis.assimilate import assimilate, load_model
    from oceanda.errors import ConfigurationError

    if len(taus) == 0:
        raise ConfigurationError("taus=[]; expected at least one sampler temperature")
    pair = load_model(model) if isinstance(model, (str, os.PathLike)) else model
    var = str(pair[1].state_channels[0][0])
    idx = np.arange(obs.sizes["time"]) if times is None else np.asarray(times)
    scores: dict[float, float] = {}
    for tau in taus:
        ds = assimilate(pair, library, obs, mode="local", members=members, seed=seed, spread_factor=1.0,
                        cache_dir=cache_dir, times=idx, tau=float(tau))
        err = ds[f"{var}_mean"].values - truth.sel(time=ds.time.values)[var].values
        scores[float(tau)] = float(np.sqrt(np.nanmean(err.astype(np.float64) ** 2)))
    best = min(scores, key=lambda t: scores[t])  # min keeps the first of equal scores
    return best, scores


def enoi_settings(library_ds, variable: str, periodic: bool) -> dict:
    """EnOI settings for the hybrid's Kalman step on a grid without tuned ones: a radius from the library.

    Why: the hybrid needs a localisation radius; the bundled QG sample has tuned ones
    (``oceanda.kalman.tuned_settings("qg_enoi")``), a user's grid does not. The radius is estimated
    from the library's spatial correlation (:func:`oceanda.kalman.localization.estimate_radius`) as
    ``oceanda enkf`` does without ``--loc-radius``; alpha is 1.

    Parameters
    ----------
    library_ds : the library states (Dataset)
    variable : the observed variable whose correlation length sets the radius
    periodic : the grid is doubly periodic

    Returns
    -------
    dict
        ``{"radius_km", "alpha", "e_folding_km"}``.
    """
    from oceanda import fields
    from oceanda.kalman.dataset import grid_metric
    from oceanda.kalman.localization import estimate_radius

    if "qg_nx" in library_ds.attrs:  # the bundled QG testbed: its tuned settings
        from oceanda.kalman import tuned_settings

        return dict(tuned_settings("qg_enoi"))
    layout = fields.layout_of(library_ds, [variable])
    arr, _ = fields.to_array(library_ds, layout)
    sub = arr[np.unique(np.linspace(0, len(arr) - 1, min(len(arr), 500)).astype(np.int64))]
    coords, metric, period = grid_metric(library_ds, periodic)
    a = sub[:, 0].reshape(len(sub), -1)  # the variable's first channel (level)
    ocean = np.isfinite(a).all(axis=0)  # land left out
    anomalies = [a[:, ocean] - a[:, ocean].mean(axis=0, keepdims=True)]
    radius, efold = estimate_radius(anomalies, coords[ocean], metric, period, rng=0, members=len(arr))

    return {"radius_km": float(radius), "alpha": 1.0, "e_folding_km": float(efold)}


def _store(model, model_dir, settings) -> None:

    """Write ``settings`` as the model's ``config["sampler"]`` (the legacy ``extra`` copies removed)."""
    from oceanda.analysis.settings import LEGACY_EXTRA_KEYS

    extra = model.config.get("extra") or {}
    for key in (*LEGACY_EXTRA_KEYS, "spread_calibration"):
        extra.pop(key, None)
    model.config["sampler"] = settings.to_dict()
    model.save(model_dir, overwrite=True)
