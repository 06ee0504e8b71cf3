"""Ensemble Kalman baselines: stochastic EnKF, ETKF, LETKF (batched, R-localised), EnOI.

Array level (ensembles ``E [N, n]``, observations ``y, error, H`` or :class:`Observations`):
:func:`enkf`, :func:`etkf`, :func:`letkf`, :func:`enoi` (ETKF/LETKF transform of the static
ensemble) and the Schur-localised EnOI in observation space, :func:`schur_enoi` (mean, variance) and
:func:`schur_enoi_ensemble` (module ``schur``; what ``analyse_dataset`` uses for a localised EnOI of
direct observations). Dataset level: :func:`analyse_dataset`
(the ``oceanda enkf`` verb). Cycling with a testbed model: :func:`cycle`, :func:`run_lorenz96`.
Tuned settings (inflation, localisation radius) are in ``tuned.json`` (:func:`tuned_settings`).
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from oceanda.kalman.cycling import (
    CycleResult,
    FilterSettings,
    cycle,
    latest_checkpoint,
    lorenz96_twin,
    rmse,
    run_lorenz96,
    spread,
)
from oceanda.kalman.filters import (
    enkf,
    enoi,
    etkf,
    etkf_weights,
    normalised_innovations,
    repair_members,
    static_ensemble,
)
from oceanda.kalman.inflation import AdaptiveInflation, inflate, innovation_inflation_estimate, rtpp, rtps
from oceanda.kalman.letkf import letkf
from oceanda.kalman.localization import (
    Localizer,
    gaspari_cohn,
    great_circle_km,
    grid_localizer,
    pairwise_distances,
    radius_from_dapper,
    radius_to_dapper,
    ring_localizer,
    taper,
)
from oceanda.kalman.obsspace import Observations, apply_operator, observations_from_dataset
from oceanda.kalman.schur import grid_points, schur_enoi, schur_enoi_ensemble


def tuned_settings(name: str | None = None) -> Any:
    """Tuned filter settings shipped with the package (``tuned.json``); one entry by ``name``, or all."""
    text = resources.files("oceanda.kalman").joinpath("tuned.json").read_text()
    table = json.loads(text)
    return table if name is None else table[name]


def __getattr__(name: str) -> Any:  # lazy: the Dataset layer imports xarray-heavy helpers
    if name in ("analyse_dataset", "localizer_for_dataset"):
        from oceanda.kalman import dataset

        return getattr(dataset, name)
    raise AttributeError(name)


__all__ = [
    "AdaptiveInflation", "CycleResult", "FilterSettings", "Localizer", "Observations", "analyse_dataset", "apply_operator",
    "cycle", "enkf", "enoi", "etkf", "etkf_weights", "gaspari_cohn", "great_circle_km", "grid_localizer", "grid_points", "inflate",
    "innovation_inflation_estimate", "latest_checkpoint", "letkf", "localizer_for_dataset", "lorenz96_twin",
    "normalised_innovations", "observations_from_dataset", "pairwise_distances", "radius_from_dapper", "radius_to_dapper",
    "repair_members", "ring_localizer", "rmse", "rtpp", "rtps", "run_lorenz96", "schur_enoi", "schur_enoi_ensemble", "spread",
    "static_ensemble", "taper",
    "tuned_settings",
]
