"""The generative conditional sampler: library weighting, global/local/hybrid analyses."""

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
    "WeightedPosterior",
    "effective_sample_size",
    "multinomial_resample",
    "posterior_from_scores",
    "resample",
    "softmax_weights",
    "systematic_resample",
    "temper",
    "top_k",
    "truncate",
    "weighted_mean_var",
]
