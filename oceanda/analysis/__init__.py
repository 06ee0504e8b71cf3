"""The generative conditional sampler: library weighting, global/local/hybrid analyses.

``posterior`` turns similarities into weights softmax(s / tau), truncation, ESS, retrieval and
resampled ensembles; ``library`` holds prior states and their cached embeddings; ``global_mode``
(whole states, the paper's algorithm), ``local_mode`` (windows blended with a taper; the default on
grids) and ``hybrid`` (an EnOI update whose background is the local analysis) share that code;
``particle`` weights any prior ensemble (a particle filter with a learned likelihood);
``assimilate.assimilate`` is the Dataset-level entry point behind ``oceanda assimilate``;
``window_training`` trains the window encoder pair.
"""

from oceanda.analysis.library import Library
from oceanda.analysis.particle import particle_update
from oceanda.analysis.posterior import (
    DegenerateWeightsWarning,
    WeightedPosterior,
    effective_sample_size,
    multinomial_resample,
    posterior_from_scores,
    resample,
    softmax_weights,
    systematic_resample,
    temper,
    top_k,
    truncate,
    weighted_mean_var,
)

__all__ = [
    "DegenerateWeightsWarning",
    "Library",
    "WeightedPosterior",
    "effective_sample_size",
    "multinomial_resample",
    "particle_update",
    "posterior_from_scores",
    "resample",
    "softmax_weights",
    "systematic_resample",
    "temper",
    "top_k",
    "truncate",
    "weighted_mean_var",
]
