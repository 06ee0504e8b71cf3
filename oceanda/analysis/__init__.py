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

from __future__ import annotations

import importlib
from typing import Any

#: Public name -> the submodule defining it. Loaded on first use, so ``import oceanda.analysis.posterior``
#: (numpy only) does not import torch through the encoder-facing modules. ``assimilate`` (the function) is
#: not re-exported here: it would shadow the module ``oceanda.analysis.assimilate``; use ``oceanda.assimilate``.
_EXPORTS = {
    "Library": "library",
    "particle_update": "particle",
    **{name: "posterior" for name in (
        "DegenerateWeightsWarning", "WeightedPosterior", "effective_sample_size", "multinomial_resample",
        "posterior_from_scores", "quantile_indices", "resample", "softmax_weights", "systematic_resample", "temper",
        "top_k", "truncate", "weighted_mean_var")},
    "Analysis": "result",
    "analyses_to_dataset": "result",
    **{name: "samplers" for name in ("GlobalSampler", "HybridSampler", "LocalSampler", "Sampler", "TimeObs",
                                     "sampler_for")},
    **{name: "settings" for name in ("HybridSettings", "SamplerSettings", "stored_settings")},
    "HybridConfig": "hybrid",  # the former name of HybridSettings
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"oceanda.analysis.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'oceanda.analysis' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
