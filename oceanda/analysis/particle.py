"""Weighting any prior ensemble: a particle filter whose likelihood ratio is learned.

The contrastive conditional nu(x | y) ∝ exp(s(x, y) / tau) mu(dx) applied to members drawn from a
forecast (instead of a climatological library) is a Bayes update of that forecast with the learned
likelihood ratio exp(s / tau) -- a bootstrap particle filter. Like any particle filter it degenerates
in high dimension: the effective sample size is reported, a warning is issued below ``min_ess``,
and tempering (raising tau until the ESS reaches ``min_ess``) is available.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from oceanda.analysis.global_mode import library_scores
from oceanda.analysis.posterior import posterior_from_scores, resample, softmax_weights, weighted_mean_var


@dataclass
class ParticleUpdate:
    """Weights of the prior members, diagnostics, moments and (optionally) a resampled ensemble."""

    weights: np.ndarray  # [M] over the prior members (untruncated), sum to one
    ess: float
    tau: float  # temperature used (> the model's when tempered)
    mean: np.ndarray
    variance: np.ndarray
    members: np.ndarray | None  # resampled ensemble (None when not requested)
    indices: np.ndarray | None  # which prior members they are


def particle_update(ensemble: np.ndarray, z_ensemble: np.ndarray, z_obs: np.ndarray, *,
                    kind: str = "neg_sq_distance", tau: float = 1.0, min_ess: float | None = None,
                    tempering: bool = False, resample_members: int | None = None,
                    rng: np.random.Generator | None = None, method: str = "systematic") -> ParticleUpdate:
    """Weight ``ensemble`` ``[M, ...]`` (embedded as ``z_ensemble`` ``[M, ne]``) by observation ``z_obs``.

    ``min_ess`` defaults to M / 10; below it a :class:`DegenerateWeightsWarning` is issued, or with
    ``tempering`` tau is raised until the ESS reaches it.
    """
    x = np.asarray(ensemble)
    m = x.shape[0]
    logits = library_scores(z_ensemble, np.asarray(z_obs).reshape(1, -1), kind=kind, tau=tau)[:, 0]
    post = posterior_from_scores(logits, 1.0, min_ess=m / 10 if min_ess is None else min_ess, tempering=tempering,
                                 keep_mass=1.0, where="particle update")
    w = softmax_weights(logits, post.tau)
    mean, var = weighted_mean_var(x, w)
    members = idx = None
    if resample_members:
        idx = resample(w, int(resample_members), rng, method)
        members = x[idx]
    return ParticleUpdate(w, post.ess, tau * post.tau, mean, var, members, idx)


def weight_ensemble(ensemble: np.ndarray, obs: np.ndarray, encoders, layout=None, **kwargs) -> ParticleUpdate:
    """:func:`particle_update` with a whole-field encoder pair (:class:`~oceanda.analysis.encoding.EncoderPair`).

    ``ensemble`` ``[M, C, Y, X]`` in physical units (``layout`` says which channels are which),
    ``obs`` ``[C_obs, Y, X]`` with NaN where unobserved.
    """
    z_e = encoders.embed_state(ensemble, layout)
    z_o = encoders.embed_obs(np.asarray(obs)[None])[0]
    kwargs.setdefault("kind", encoders.kind)
    kwargs.setdefault("tau", encoders.tau)
    return particle_update(ensemble, z_e, z_o, **kwargs)
