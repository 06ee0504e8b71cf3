"""Global mode: whole states weighted against a library (the paper's algorithm).

Right when the state is low-dimensional (the paper's torus flow, Gaussian tests); on turbulent
ocean grids no finite library holds a close match to a whole field, and local mode is needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from oceanda.analysis.library import Library
from oceanda.analysis.posterior import KEEP_MASS, WeightedPosterior, posterior_from_scores
from oceanda.contrastive.similarity import numpy_scores


@dataclass
class GlobalAnalysis:
    """One time's global analysis in the library's channel layout."""

    mean: np.ndarray  # [C, Y, X]
    variance: np.ndarray  # [C, Y, X], of the weighted empirical posterior
    members: np.ndarray  # [M, C, Y, X], resampled library states
    member_indices: np.ndarray  # [M] library indices of the members
    posterior: WeightedPosterior


def weighted_moments(library: Library, indices: np.ndarray, weights: np.ndarray,
                     chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean and variance of library states, reading only ``indices``, ``chunk`` at a time.

    Parameters
    ----------
    library : the library of states
    indices, weights : library indices with non-negligible weight and their weights (summing to one)
    chunk : states read at a time

    Returns
    -------
    ``(mean, variance)`` arrays of one state's shape
    """
    s1 = s2 = None
    for a in range(0, len(indices), chunk):
        x = library.read(indices[a:a + chunk]).astype(np.float64)
        w = weights[a:a + chunk].reshape(-1, *([1] * (x.ndim - 1)))
        p1, p2 = np.sum(w * x, axis=0), np.sum(w * x * x, axis=0)
        s1, s2 = (p1, p2) if s1 is None else (s1 + p1, s2 + p2)
    total = float(np.sum(weights))
    mean = s1 / total
    return mean, np.maximum(s2 / total - mean * mean, 0.0)


def analyse_global(z_obs: np.ndarray, library: Library, z_lib: np.ndarray, *, kind: str = "neg_sq_distance",
                   tau: float = 1.0, members: int = 20, rng: np.random.Generator | None = None,
                   method: str = "systematic", top: int = 10, keep_mass: float = KEEP_MASS,
                   max_keep: int | None = None, min_ess: float | None = None, tempering: bool = False,
                   spread_factor: float = 1.0, where: str = "") -> GlobalAnalysis:
    """Weights of one observation embedding over the whole library, their moments and members.

    Only library states holding non-negligible weight (truncation to ``keep_mass``) are read.
    Members are library states drawn by ``method`` resampling, then (if ``spread_factor != 1``)
    their deviations from the weighted mean are scaled.

    Parameters
    ----------
    z_obs : ``[ne]`` the observation's embedding
    library : the library; ``z_lib`` its embeddings ``[N, ne]``
    kind, tau : the similarity (:func:`oceanda.contrastive.similarity.numpy_scores`) and the temperature
    members : members to draw, by ``method`` (``systematic`` or ``multinomial``) with ``rng``
    top : retrieved states recorded
    keep_mass, max_keep, min_ess, tempering : the posterior (:func:`~oceanda.analysis.posterior.posterior_from_scores`)
    spread_factor : deviations of the members from the weighted mean x this
    where : how warnings name this analysis

    Returns
    -------
    GlobalAnalysis
    """
    rng = rng if rng is not None else np.random.default_rng()
    logits = numpy_scores(z_lib, np.asarray(z_obs)[None, :], kind=kind, tau=tau)[:, 0]
    post = posterior_from_scores(logits, 1.0, top=top, keep_mass=keep_mass, max_keep=max_keep, min_ess=min_ess,
                                 tempering=tempering, where=where)
    mean, var = weighted_moments(library, post.indices, post.weights)
    idx = post.resample(members, rng, method)
    mem = library.read(idx).astype(np.float64)
    if spread_factor != 1.0:
        mem = mean[None] + spread_factor * (mem - mean[None])
    return GlobalAnalysis(mean.astype(np.float32), var.astype(np.float32), mem.astype(np.float32), idx, post)
