"""The generative conditional sampler: library weighting, global/local/hybrid analyses.

Why a package: the contrastive conditional nu(x | y) ∝ exp(s(x, y) / tau) mu(dx) becomes an analysis
in layers, each usable alone. ``posterior`` turns similarities into weights softmax(s / tau),
truncation, ESS, retrieval and resampled members; ``library`` holds prior states and their cached
embeddings; ``global_mode`` (whole states, the paper's algorithm), ``local_mode`` (windows blended
with a taper; the default on grids) and ``hybrid`` (an EnOI update whose background is the local
analysis) do one time on arrays; ``samplers`` wraps them as objects (:class:`GlobalSampler`,
:class:`LocalSampler`, :class:`HybridSampler`: ``prepare(library)`` once, ``analyse(obs, rng)`` per
time, an :class:`Analysis` each); ``settings`` holds their typed settings and reads the calibration a
checkpoint stores; ``result`` writes a sequence of analyses as the output Dataset;
``assimilate.assimilate`` composes them over every time of an observation Dataset (behind
``oceanda assimilate``); ``particle`` weights any prior ensemble (a particle filter with a learned
likelihood); ``calibration`` fits spread factors on a tuning run; ``window_training`` trains the
window encoder pair.
"""

from oceanda.analysis.assimilate import assimilate  # the function (shadows its module's name here)
from oceanda.analysis.library import Library
from oceanda.analysis.particle import particle_update
from oceanda.analysis.posterior import (
    DegenerateWeightsWarning,
    WeightedPosterior,
    effective_sample_size,
    multinomial_resample,
    posterior_from_scores,
    quantile_indices,
    resample,
    softmax_weights,
    systematic_resample,
    temper,
    top_k,
    truncate,
    weighted_mean_var,
)
from oceanda.analysis.result import Analysis, analyses_to_dataset
from oceanda.analysis.samplers import GlobalSampler, HybridSampler, LocalSampler, Sampler, TimeObs, sampler_for
from oceanda.analysis.settings import HybridSettings, SamplerSettings, stored_settings

HybridConfig = HybridSettings  # the former name

__all__ = [
    "Analysis",
    "DegenerateWeightsWarning",
    "GlobalSampler",
    "HybridConfig",
    "HybridSampler",
    "HybridSettings",
    "Library",
    "LocalSampler",
    "Sampler",
    "SamplerSettings",
    "TimeObs",
    "WeightedPosterior",
    "analyses_to_dataset",
    "assimilate",
    "effective_sample_size",
    "multinomial_resample",
    "particle_update",
    "posterior_from_scores",
    "quantile_indices",
    "resample",
    "sampler_for",
    "softmax_weights",
    "stored_settings",
    "systematic_resample",
    "temper",
    "top_k",
    "truncate",
    "weighted_mean_var",
]
