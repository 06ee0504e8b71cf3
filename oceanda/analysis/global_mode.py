"""Global mode: whole states weighted against a library (the paper's algorithm).

Right when the state is low-dimensional (the paper's torus flow, Gaussian tests); on turbulent
ocean grids no finite library holds a close match to a whole field, and local mode is needed.
"""

from __future__ import annotations

import numpy as np

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
