"""From similarities to a weighted empirical posterior (paper-notes section 4).

The contrastive model's conditional law of the state given observations y is the prior tilted by
exp(s(x, y)); with a library {x_i} drawn from the prior it is the weighted empirical measure with
weights softmax_i(s(x_i, y) / tau). Everything here works on plain numpy arrays (scores of shape
``[N_library]`` or ``[N_library, N_obs]``) so global, local and particle modes share it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

#: Default mass kept by :func:`truncate`: the smallest set of library members holding 1 - 1e-6.
KEEP_MASS = 1.0 - 1e-6


class DegenerateWeightsWarning(UserWarning):
    """The effective sample size fell below the requested threshold."""


def log_softmax(scores: np.ndarray, tau: float = 1.0, axis: int = 0) -> np.ndarray:
    """``log softmax(scores / tau)`` along ``axis`` (the library axis), computed stably.

    Parameters
    ----------
    scores : similarity scores, library along ``axis``
    tau : temperature
    axis : the library axis

    Returns
    -------
    float64 log-weights, the shape of ``scores``
    """
    s = np.asarray(scores, dtype=np.float64) / float(tau)
    m = np.max(s, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    z = s - m
    return z - np.log(np.sum(np.exp(z), axis=axis, keepdims=True))


def softmax_weights(scores: np.ndarray, tau: float = 1.0, axis: int = 0) -> np.ndarray:
    """Posterior weights ``softmax(scores / tau)`` along the library axis; they sum to one.

    Parameters
    ----------
    scores : similarity scores, library along ``axis``
    tau : temperature
    axis : the library axis

    Returns
    -------
    float64 weights, the shape of ``scores``
    """
    return np.exp(log_softmax(scores, tau, axis))


def effective_sample_size(weights: np.ndarray, axis: int = 0) -> np.ndarray | float:
    """Kish's ESS ``1 / sum w^2`` of normalised weights (1 = degenerate, N = uniform).

    Parameters
    ----------
    weights : normalised weights, library along ``axis``
    axis : the library axis

    Returns
    -------
    float for 1-D weights, else an array of the remaining axes
    """
    w = np.asarray(weights, dtype=np.float64)
    out = 1.0 / np.sum(w * w, axis=axis)
    return float(out) if np.ndim(out) == 0 else out


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and scores of the ``k`` highest scores of a 1-D score vector, best first (retrieval).

    Parameters
    ----------
    scores : score vector (raveled)
    k : how many to return (clipped to ``[0, scores.size]``)

    Returns
    -------
    tuple: int64 indices ``[k]`` and their scores ``[k]``
    """
    s = np.asarray(scores).ravel()
    k = int(min(max(k, 0), s.size))
    if k == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=s.dtype)
    idx = np.argpartition(-s, k - 1)[:k] if k < s.size else np.arange(s.size)
    idx = idx[np.argsort(-s[idx], kind="stable")]
    return idx.astype(np.int64), s[idx]


@dataclass
class Truncation:
    """The library members kept after truncation, their renormalised weights and the mass dropped."""

    indices: np.ndarray  # into the library, by decreasing weight
    weights: np.ndarray  # renormalised, sum to one
    dropped_mass: float


def truncate(weights: np.ndarray, keep_mass: float = KEEP_MASS, max_keep: int | None = None) -> Truncation:
    """Keep the smallest set of members holding ``keep_mass`` of the weight (then at most ``max_keep``).

    Only these members' states need to be read, which is what lets a library stay on disk.

    Parameters
    ----------
    weights : ``[N]`` non-negative weights
    keep_mass : fraction of the total weight to keep
    max_keep : at most this many members (None: no cap)

    Returns
    -------
    Truncation
    """
    w = np.asarray(weights, dtype=np.float64).ravel()
    total = w.sum()
    if max_keep is not None and max_keep < w.size:  # only the largest max_keep can be kept: skip a full sort
        cand = np.argpartition(-w, int(max_keep) - 1)[:int(max_keep)]
        order = cand[np.argsort(-w[cand], kind="stable")]
    else:
        order = np.argsort(-w, kind="stable")
    cum = np.cumsum(w[order])
    n = int(np.searchsorted(cum, keep_mass * total, side="left")) + 1
    n = min(n, w.size)
    if max_keep is not None:
        n = min(n, int(max_keep))
    idx = order[:n]
    kept = w[idx]
    mass = kept.sum()
    return Truncation(indices=idx.astype(np.int64), weights=kept / mass, dropped_mass=float(max(0.0, 1.0 - mass / total)))


def weighted_mean_var(states: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean and variance over the first axis of ``states`` (``[N, ...]``) with weights ``[N]``.

    The variance is that of the weighted empirical measure (no small-sample correction), i.e. the
    posterior variance the model defines.

    Parameters
    ----------
    states : ``[N, ...]`` member states
    weights : ``[N]`` non-negative weights (normalised here)

    Returns
    -------
    tuple: mean and variance, each the shape of ``states[0]``
    """
    x = np.asarray(states, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    shape = (-1,) + (1,) * (x.ndim - 1)
    mean = np.sum(w.reshape(shape) * x, axis=0)
    var = np.sum(w.reshape(shape) * (x - mean) ** 2, axis=0)
    return mean, np.maximum(var, 0.0)


def weighted_covariance(states: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean ``[D]`` and covariance ``[D, D]`` of vectors ``states`` ``[N, D]``.

    Parameters
    ----------
    states : ``[N, D]`` member vectors
    weights : ``[N]`` non-negative weights (normalised here)

    Returns
    -------
    tuple: mean ``[D]`` and covariance ``[D, D]``
    """
    x = np.asarray(states, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    mean = w @ x
    d = x - mean
    return mean, (d * w[:, None]).T @ d


def quantile_indices(weights: np.ndarray, q: np.ndarray | float) -> np.ndarray:
    """The members at quantiles ``q`` of the weights: the first ``i`` with cumulative weight above ``q``.

    The one inverse-CDF pick behind systematic and multinomial resampling and local mode's coupled
    members.

    Parameters
    ----------
    weights : ``[N]`` non-negative weights (normalised here)
    q : quantiles in [0, 1)

    Returns
    -------
    int64 indices into ``weights``, the shape of ``q``
    """
    w = np.asarray(weights, dtype=np.float64).ravel()
    cum = np.cumsum(w)
    cum /= cum[-1]
    return np.minimum(np.searchsorted(cum, q, side="right"), w.size - 1).astype(np.int64)


def systematic_resample(weights: np.ndarray, m: int, rng: np.random.Generator | None = None,
                        u: float | None = None) -> np.ndarray:
    """Systematic resampling: ``m`` indices at positions ``(u + j) / m`` of the cumulative weights.

    Passing the same ``u`` to neighbouring windows (shared resampling noise) keeps local ensembles
    coherent: member j picks the same quantile of every window's posterior.

    Parameters
    ----------
    weights : ``[N]`` weights
    m : members to draw
    rng : draws ``u`` when not given
    u : the offset in [0, 1)

    Returns
    -------
    ``[m]`` int64 indices
    """
    if u is None:
        if rng is None:
            raise ValueError("systematic_resample needs rng or u")
        u = float(rng.random())
    return quantile_indices(weights, (float(u) + np.arange(m)) / m)


def multinomial_resample(weights: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    """Multinomial resampling: ``m`` independent draws with probabilities ``weights``.

    Parameters
    ----------
    weights : ``[N]`` weights
    m : members to draw
    rng : random generator

    Returns
    -------
    ``[m]`` int64 indices
    """
    return quantile_indices(weights, rng.random(m))


def resample(weights: np.ndarray, m: int, rng: np.random.Generator | None = None, method: str = "systematic",
             u: float | None = None) -> np.ndarray:
    """Draw ``m`` member indices by ``systematic`` (default, lower variance) or ``multinomial`` resampling.

    Parameters
    ----------
    weights : ``[N]`` weights
    m : members to draw
    rng : random generator (multinomial; systematic when ``u`` is not given)
    method : ``systematic`` or ``multinomial``
    u : systematic offset in [0, 1)

    Returns
    -------
    ``[m]`` int64 indices
    """
    if method == "systematic":
        return systematic_resample(weights, m, rng, u)
    if method == "multinomial":
        if rng is None:
            raise ValueError("multinomial resampling needs rng")
        return multinomial_resample(weights, m, rng)
    raise ValueError(f"unknown resampling method '{method}'; expected 'systematic' or 'multinomial'")


def temper(scores: np.ndarray, tau: float = 1.0, min_ess: float = 10.0, max_factor: float = 1e6,
           iters: int = 60) -> float:
    """The smallest temperature ``tau' >= tau`` giving ``ESS(softmax(scores / tau')) >= min_ess``.

    Tempering flattens a degenerate likelihood (a particle filter's standard remedy); ``tau``
    itself is returned when the weights are already healthy. Bisection on log(tau').

    Parameters
    ----------
    scores : ``[N]`` scores before the temperature
    tau : the starting (smallest) temperature
    min_ess : target ESS (capped at N)
    max_factor : largest ratio ``tau' / tau`` tried
    iters : bisection steps

    Returns
    -------
    float: the temperature ``tau'``
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    min_ess = min(float(min_ess), float(s.size))
    if effective_sample_size(softmax_weights(s, tau)) >= min_ess:
        return float(tau)
    lo, hi = np.log(tau), np.log(tau * max_factor)
    if effective_sample_size(softmax_weights(s, np.exp(hi))) < min_ess:
        return float(np.exp(hi))
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if effective_sample_size(softmax_weights(s, np.exp(mid))) >= min_ess:
            hi = mid
        else:
            lo = mid
    return float(np.exp(hi))


@dataclass
class WeightedPosterior:
    """Weights of one observation over a library (or an ensemble), truncated, with diagnostics."""

    indices: np.ndarray  # library indices with non-negligible weight, by decreasing weight
    weights: np.ndarray  # their renormalised weights (sum to one)
    dropped_mass: float  # weight removed by truncation
    ess: float  # effective sample size of the untruncated weights
    tau: float  # temperature actually used (>= the model's when tempered)
    top_indices: np.ndarray  # top-K retrieval
    top_scores: np.ndarray

    def resample(self, m: int, rng: np.random.Generator | None = None, method: str = "systematic",
                 u: float | None = None) -> np.ndarray:
        """Library indices of ``m`` posterior members.

        Parameters
        ----------
        m : members to draw
        rng, method, u : as for :func:`resample`

        Returns
        -------
        ``[m]`` int64 library indices
        """
        return self.indices[resample(self.weights, m, rng, method, u)]


def posterior_from_scores(scores: np.ndarray, tau: float = 1.0, *, top: int = 0, keep_mass: float = KEEP_MASS,
                          max_keep: int | None = None, min_ess: float | None = None, tempering: bool = False,
                          where: str = "") -> WeightedPosterior:
    """Turn one observation's library scores ``s(x_i, y)`` into a :class:`WeightedPosterior`.

    ``scores`` are similarities before the temperature (so ``softmax(scores / tau)``). If the ESS is
    below ``min_ess`` a :class:`DegenerateWeightsWarning` is issued, and with ``tempering`` tau is
    raised until the ESS reaches ``min_ess``.

    Parameters
    ----------
    scores : ``[N]`` scores of the library against one observation
    tau : temperature
    top : how many top-K retrieval results to keep
    keep_mass, max_keep : truncation, as for :func:`truncate`
    min_ess : ESS below which to warn or temper (None: no check)
    tempering : raise tau instead of warning
    where : prefix naming the caller in the warning

    Returns
    -------
    WeightedPosterior
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    used_tau = float(tau)
    w = softmax_weights(s, used_tau)
    ess = effective_sample_size(w)
    if min_ess is not None and ess < min_ess:
        if tempering:
            used_tau = temper(s, tau, min_ess)
            w = softmax_weights(s, used_tau)
            ess = effective_sample_size(w)
        else:
            warnings.warn(
                f"{where + ': ' if where else ''}effective sample size {ess:.1f} below {min_ess:g} "
                f"(of {s.size}); the weights are degenerate -- consider tempering (a larger tau)",
                DegenerateWeightsWarning,
                stacklevel=2,
            )
    tr = truncate(w, keep_mass, max_keep)
    ti, ts = top_k(s, top)
    return WeightedPosterior(tr.indices, tr.weights, tr.dropped_mass, float(ess), used_tau, ti, ts)
