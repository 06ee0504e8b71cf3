"""Global mode: whole states weighted against a library (the paper's algorithm).

Right when the state is low-dimensional (the paper's torus flow, Gaussian tests); on turbulent
ocean grids no finite library holds a close match to a whole field, and local mode is needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from oceanda.analysis.library import Library
from oceanda.analysis.posterior import KEEP_MASS, WeightedPosterior, posterior_from_scores

#: Similarity names understood here (the contrastive core's kinds), with common aliases.
_KINDS = {
    "cosine": "cosine",
    "inner_product": "inner_product",
    "inner": "inner_product",
    "dot": "inner_product",
    "neg_sq_distance": "neg_sq_distance",
    "negsqdist": "neg_sq_distance",
    "neg_sq_dist": "neg_sq_distance",
    "negative_squared_distance": "neg_sq_distance",
}


def canonical_kind(kind: str) -> str:
    try:
        return _KINDS[kind.lower().replace("-", "_")]
    except KeyError:
        raise ValueError(f"unknown similarity '{kind}'; expected one of {sorted(set(_KINDS.values()))}") from None


def library_scores(z_state: np.ndarray, z_obs: np.ndarray, kind: str = "neg_sq_distance", tau: float = 1.0,
                   chunk: int = 65536) -> np.ndarray:
    """Logits ``s(x_i, y_j) / tau`` of shape ``[N_state, N_obs]`` from embeddings, in row chunks.

    Same definitions as the contrastive core (paper-notes section 1): cosine and inner product
    divided by tau, negative squared distance ``-|a - b|^2 / (2 tau)``.
    """
    kind = canonical_kind(kind)
    zs = np.asarray(z_state, dtype=np.float64)
    zo = np.asarray(z_obs, dtype=np.float64)
    if zo.ndim == 1:
        zo = zo[None, :]
    if kind == "cosine":
        zo = zo / np.maximum(np.linalg.norm(zo, axis=1, keepdims=True), 1e-12)
    out = np.empty((zs.shape[0], zo.shape[0]), dtype=np.float64)
    zo_sq = np.sum(zo * zo, axis=1)
    for a in range(0, zs.shape[0], chunk):
        block = zs[a:a + chunk]
        if kind == "cosine":
            block = block / np.maximum(np.linalg.norm(block, axis=1, keepdims=True), 1e-12)
        dot = block @ zo.T
        if kind == "neg_sq_distance":
            out[a:a + chunk] = -(np.sum(block * block, axis=1)[:, None] - 2 * dot + zo_sq[None, :]) / (2 * tau)
        else:
            out[a:a + chunk] = dot / tau
    return out


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
    """Weighted mean and variance of library states, reading only ``indices``, ``chunk`` at a time."""
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
    """Weights of one observation embedding ``z_obs`` ``[ne]`` over the whole library.

    Only library states holding non-negligible weight (truncation to ``keep_mass``) are read.
    Members are library states drawn by ``method`` resampling, then (if ``spread_factor != 1``)
    their deviations from the weighted mean are scaled.
    """
    rng = rng if rng is not None else np.random.default_rng()
    logits = library_scores(z_lib, np.asarray(z_obs)[None, :], kind=kind, tau=tau)[:, 0]
    post = posterior_from_scores(logits, 1.0, top=top, keep_mass=keep_mass, max_keep=max_keep, min_ess=min_ess,
                                 tempering=tempering, where=where)
    mean, var = weighted_moments(library, post.indices, post.weights)
    idx = post.resample(members, rng, method)
    mem = library.read(idx).astype(np.float64)
    if spread_factor != 1.0:
        mem = mean[None] + spread_factor * (mem - mean[None])
    return GlobalAnalysis(mean.astype(np.float32), var.astype(np.float32), mem.astype(np.float32), idx, post)
