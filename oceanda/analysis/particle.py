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

from oceanda.analysis.posterior import posterior_from_scores, resample, softmax_weights, weighted_mean_var
from oceanda.contrastive.similarity import numpy_scores


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
    """Weight a prior ensemble by one observation (a particle filter step with the learned likelihood).

    Parameters
    ----------
    ensemble : ``[M, ...]`` prior members
    z_ensemble : ``[M, ne]`` their embeddings; ``z_obs`` ``[ne]`` the observation's
    kind, tau : the similarity and the temperature
    min_ess : default M / 10; below it a :class:`DegenerateWeightsWarning` is issued, or with
        ``tempering`` tau is raised until the ESS reaches it
    resample_members : members to resample (None: none), by ``method`` with ``rng``

    Returns
    -------
    ParticleUpdate
    """
    x = np.asarray(ensemble)
    m = x.shape[0]
    logits = numpy_scores(z_ensemble, np.asarray(z_obs).reshape(1, -1), kind=kind, tau=tau)[:, 0]
    post = posterior_from_scores(logits, 1.0, min_ess=m / 10 if min_ess is None else min_ess, tempering=tempering,
                                 keep_mass=1.0, where="particle update")
    w = softmax_weights(logits, post.tau)
    mean, var = weighted_mean_var(x, w)
    members = idx = None
    if resample_members:
        idx = resample(w, int(resample_members), rng, method)
        members = x[idx]
    return ParticleUpdate(w, post.ess, tau * post.tau, mean, var, members, idx)
