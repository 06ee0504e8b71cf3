"""Retrieval recall R@K: the one implementation, for training metrics, benchmarks and experiments.

Why here: R@K measures a contrastive model (does an observation find its own state among many?), so
it belongs with the contrastive core; it used to be written twice, and the copy behind the training
metrics counted ties in the query's favour. Here a candidate scoring *equal* to the true one ranks
ahead of it (pessimistic), so a collapsed model that scores everything alike gets R@K = 0, not 1.
Scores may be numpy arrays or torch tensors; comparisons are made in float64, which is exact for
float32 logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from oceanda.errors import ConfigurationError


def _numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, on any device
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def ranks(scores: Any, targets: Any = None) -> np.ndarray:
    """The 0-based rank of each query's correct candidate, ties counted against the query.

    Parameters
    ----------
    scores : ``[query, candidate]`` scores, higher is more similar (numpy or torch)
    targets : ``[query]`` index of each query's correct candidate (default: the diagonal)

    Returns
    -------
    numpy.ndarray
        int64 ``[query]``: the number of candidates scoring at least as high as the correct one,
        itself excluded (0 = retrieved first). A NaN correct score ranks last.
    """
    s = np.asarray(_numpy(scores), dtype=np.float64)
    if s.ndim != 2:
        raise ConfigurationError(f"recall_at_k: score matrix of shape {s.shape}; expected [query, candidate]")
    nq, nc = s.shape
    if targets is None:
        if nc < nq:
            raise ConfigurationError(f"recall_at_k: {nq} queries but {nc} candidates; expected targets (each query's correct candidate)")
        targets = np.arange(nq)
    targets = np.asarray(_numpy(targets), dtype=np.int64)
    true_score = s[np.arange(nq), targets]
    rank = (s >= true_score[:, None]).sum(axis=1) - 1
    return np.where(np.isnan(true_score), nc, rank).astype(np.int64)


def recall_at_k(scores: Any, k: int | Sequence[int] = (1, 5), targets: Any = None) -> float | dict[int, float]:
    """Fraction of queries whose correct candidate is among their ``k`` best (ties count against).

    Parameters
    ----------
    scores : ``[query, candidate]`` scores, higher is more similar (numpy or torch); the other
        direction of a square logits matrix is ``recall_at_k(scores.T)``
    k : one K or several
    targets : ``[query]`` index of each query's correct candidate (default: the diagonal)

    Returns
    -------
    float or dict
        R@K for a single ``k``; ``{K: R@K}`` for a sequence (NaN without queries).
    """
    rank = ranks(scores, targets)
    ks = [k] if np.isscalar(k) else list(k)
    res = {int(kk): float((rank < kk).mean()) if rank.size else float("nan") for kk in ks}
    return res[int(k)] if np.isscalar(k) else res


def retrieval_recalls(S: Any, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Both retrieval directions of a square logits matrix ``S[state, obs]`` (matched pairs on the diagonal).

    Parameters
    ----------
    S : ``[N, N]`` logits, rows states, columns observations (numpy or torch)
    ks : the K values

    Returns
    -------
    dict
        ``r{K}_state_from_obs`` (each observation, a column, retrieves its state among the rows) and
        ``r{K}_obs_from_state`` (each state, a row, retrieves its observation) for every K.
    """
    s = _numpy(S)
    state_from_obs = recall_at_k(s.T, list(ks))
    obs_from_state = recall_at_k(s, list(ks))
    out = {}
    for k in ks:
        out[f"r{k}_state_from_obs"] = state_from_obs[int(k)]
        out[f"r{k}_obs_from_state"] = obs_from_state[int(k)]
    return out
