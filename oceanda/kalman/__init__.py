"""Ensemble Kalman baselines: stochastic EnKF, ETKF, LETKF (batched, R-localised), EnOI.

Why a package that knows no testbed: these methods serve any model and any observations, so the
package imports nothing from testbeds, observation generators, the contrastive sampler or the
experiments; the twin experiments that join them live in :mod:`oceanda.experiments`.

Configured methods (:mod:`~oceanda.kalman.methods`): :class:`EnKF`, :class:`ETKF`, :class:`LETKF`,
:class:`EnOI` -- frozen, validated settings with one ``assimilate(E, observations, rng, localizer)``;
:data:`METHODS` names them, :func:`make_filter` builds one, :func:`tuned_filter` reads the tuned
ones from ``tuned.json`` (:func:`tuned_settings`: the raw entries). Array level (ensembles
``E [N, n]``, observations ``y, error, H`` or :class:`Observations`): :func:`enkf`, :func:`etkf`,
:func:`letkf`, :func:`enoi` and the Schur-localised EnOI :func:`schur_enoi` (mean, variance) and
:func:`schur_enoi_ensemble`. Dataset level: :func:`analyse_dataset` (the ``oceanda enkf`` verb).
Cycling with any model ``forecast(E, t0, t1) -> E``: :func:`cycle`; hybrid covariance (the forecast's
blended with extra members', :func:`hybrid_assimilate`): ``cycle(..., extra=, hybrid_beta=)``.
"""

from __future__ import annotations

from oceanda.kalman._core import etkf_weights, normalised_innovations, repair_members, static_ensemble
from oceanda.kalman.augmented import augmented_ensemble, hybrid_assimilate
from oceanda.kalman.cycling import CycleResult, cycle, latest_checkpoint, rmse, spread
from oceanda.kalman.dataset import analyse_dataset, localizer_for_dataset
from oceanda.kalman.filters import enkf, enoi, etkf
from oceanda.kalman.inflation import AdaptiveInflation, inflate, innovation_inflation_estimate, rtpp, rtps
from oceanda.kalman.letkf import letkf
from oceanda.kalman.localization import (
    DEFAULT_TAPER,
    TAPERS,
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
from oceanda.kalman.methods import ENOI_FORMS, LETKF, METHODS, ETKF, EnKF, EnOI, Filter, make_filter
from oceanda.kalman.obsspace import Observations, apply_operator, observations_from_dataset, selection_operator
from oceanda.kalman.schur import schur_enoi, schur_enoi_ensemble
from oceanda.kalman.tuned import tuned_filter, tuned_settings

__all__ = [
    "DEFAULT_TAPER", "ENOI_FORMS", "ETKF", "LETKF", "METHODS", "TAPERS", "AdaptiveInflation", "CycleResult", "EnKF", "EnOI",
    "Filter", "Localizer", "Observations", "analyse_dataset", "apply_operator", "augmented_ensemble", "cycle", "enkf", "enoi", "etkf",
    "etkf_weights", "gaspari_cohn", "great_circle_km", "grid_localizer", "hybrid_assimilate", "inflate",
    "innovation_inflation_estimate", "latest_checkpoint", "letkf", "localizer_for_dataset", "make_filter",
    "normalised_innovations", "observations_from_dataset", "pairwise_distances", "radius_from_dapper", "radius_to_dapper",
    "repair_members", "ring_localizer", "rmse", "rtpp", "rtps", "schur_enoi", "schur_enoi_ensemble", "selection_operator",
    "spread", "static_ensemble", "taper", "tuned_filter", "tuned_settings",
]
