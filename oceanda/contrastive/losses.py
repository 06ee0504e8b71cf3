"""Every contrastive loss of Baptista, Stuart & Tran (2025), each a function of one logits matrix.

``S[i, j] = s(state_i, obs_j) / tau`` for a batch of N matched pairs (state_i, obs_i): the diagonal
holds samples of the joint law, the off-diagonal of the product of marginals. Conditional losses
are written with log-mean-exp, so that the population limit is the KL divergence plus a constant
(the usual CLIP cross-entropy is this plus log N). Names say what is fitted: ``state|obs`` fits
nu(state | obs) (normalises over states, i.e. over the rows of each column).

MMD losses need kernels on the data, not on the embeddings: they take kernel matrices
``K_state[i, k] = k(state_i, state_k)`` and ``K_obs``. :func:`get_loss` returns a callable
``loss(S, state=None, obs=None)`` that builds Gaussian kernels from the raw batch when needed.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from oceanda.errors import OceandaError

LOSSES = ("clip", "weighted", "state|obs", "obs|state", "joint", "mmd_conditional", "mmd_joint")


def _square(S: torch.Tensor) -> int:
    if S.ndim != 2 or S.shape[0] != S.shape[1] or S.shape[0] < 2:
        raise OceandaError(f"logits matrix of shape {tuple(S.shape)}; expected square [N, N] with N >= 2 (matched pairs on the diagonal)")
    return S.shape[0]


def _logmeanexp(S: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.logsumexp(S, dim=dim) - math.log(S.shape[dim])


def state_given_obs(S: torch.Tensor) -> torch.Tensor:
    """One-sided loss fitting nu(state | obs): -mean_j S_jj + mean_j logmeanexp_i S_ij.

    Parameters
    ----------
    S : ``[N, N]`` logits ``s(state_i, obs_j) / tau`` of N matched pairs (diagonal)

    Returns
    -------
    torch.Tensor
        The loss, a 0-d tensor.
    """
    _square(S)
    return -S.diagonal().mean() + _logmeanexp(S, 0).mean()


def obs_given_state(S: torch.Tensor) -> torch.Tensor:
    """One-sided loss fitting nu(obs | state): -mean_i S_ii + mean_i logmeanexp_j S_ij.

    Parameters
    ----------
    S : ``[N, N]`` logits ``s(state_i, obs_j) / tau`` of N matched pairs (diagonal)

    Returns
    -------
    torch.Tensor
        The loss, a 0-d tensor.
    """
    _square(S)
    return -S.diagonal().mean() + _logmeanexp(S, 1).mean()


def weighted_conditional(S: torch.Tensor, lambda_state: float = 1.0, lambda_obs: float = 1.0) -> torch.Tensor:
    """lambda_state/2 * (state|obs loss) + lambda_obs/2 * (obs|state loss).

    Parameters
    ----------
    S : ``[N, N]`` logits of N matched pairs (diagonal)
    lambda_state, lambda_obs : weights of the two sides

    Returns
    -------
    torch.Tensor
        The loss, a 0-d tensor.
    """
    return 0.5 * lambda_state * state_given_obs(S) + 0.5 * lambda_obs * obs_given_state(S)


def clip(S: torch.Tensor) -> torch.Tensor:
    """Two-sided conditional loss (CLIP/InfoNCE minus log N); population limit: mean of both conditional KLs.

    Parameters
    ----------
    S : ``[N, N]`` logits ``s(state_i, obs_j) / tau`` of N matched pairs (diagonal)

    Returns
    -------
    torch.Tensor
        The loss, a 0-d tensor.
    """
    return weighted_conditional(S, 1.0, 1.0)


def clip_cross_entropy(S: torch.Tensor) -> torch.Tensor:
    """The usual CLIP implementation (mean of row and column cross-entropies); equals clip(S) + log N.

    Parameters
    ----------
    S : ``[N, N]`` logits ``s(state_i, obs_j) / tau`` of N matched pairs (diagonal)

    Returns
    -------
    torch.Tensor
        The loss, a 0-d tensor.
    """
    n = _square(S)
    target = torch.arange(n, device=S.device)
    ce = torch.nn.functional.cross_entropy
    return 0.5 * (ce(S, target) + ce(S.T, target))


def joint(S: torch.Tensor) -> torch.Tensor:
    """Joint loss: -mean_i S_ii + log mean_{i != j} exp(S_ij); fits the joint law (KL(mu || nu)).

    Parameters
    ----------
    S : ``[N, N]`` logits ``s(state_i, obs_j) / tau`` of N matched pairs (diagonal)

    Returns
    -------
    torch.Tensor
        The loss, a 0-d tensor.
    """
    n = _square(S)
    off = S.masked_fill(torch.eye(n, dtype=torch.bool, device=S.device), float("-inf"))
    return -S.diagonal().mean() + torch.logsumexp(off.reshape(-1), 0) - math.log(n * (n - 1))


def _mmd_one_side(W: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    # W[i, :] = model conditional weights given item i; target = delta at the matched item i.
    return (0.5 * ((W @ K) * W).sum(1) - (K * W).sum(1)).mean()


def mmd_conditional(S: torch.Tensor, K_state: torch.Tensor | None = None, K_obs: torch.Tensor | None = None,
                    lambda_state: float = 1.0, lambda_obs: float = 1.0) -> torch.Tensor:
    """Conditional MMD loss (half squared MMD between model and data conditionals, up to a constant).

    state|obs side (needs ``K_state``): for each obs j, weights w_j = softmax_i S_ij over states,
    term 1/2 w_j^T K_state w_j - sum_i K_state[j, i] w_j[i]. obs|state side symmetric with ``K_obs``
    and softmax over each row. A side whose kernel is None is left out.

    Parameters
    ----------
    S : ``[N, N]`` logits of N matched pairs (diagonal)
    K_state, K_obs : ``[N, N]`` kernel matrices of the batch's states and observations
    lambda_state, lambda_obs : weights of the two sides

    Returns
    -------
    torch.Tensor
        The loss, a 0-d tensor.
    """
    n = _square(S)
    if K_state is None and K_obs is None:
        raise OceandaError("mmd_conditional needs K_state and/or K_obs (kernel matrices of the batch data)")
    total = S.new_zeros(())
    for K, W, lam, name in ((K_state, torch.softmax(S, 0).T, lambda_state, "K_state"),
                            (K_obs, torch.softmax(S, 1), lambda_obs, "K_obs")):
        if K is None:
            continue
        if K.shape != (n, n):
            raise OceandaError(f"{name} of shape {tuple(K.shape)}; expected [{n}, {n}] like the logits")
        total = total + 0.5 * lam * _mmd_one_side(W, K)
    return total


def mmd_joint(S: torch.Tensor, K_state: torch.Tensor, K_obs: torch.Tensor) -> torch.Tensor:
    """Joint MMD loss with product kernel k_state * k_obs (half squared MMD up to a constant).

    Model joint on the batch: P_ij ∝ exp(S_ij) over off-diagonal pairs (samples of the product of
    marginals); data: the N matched pairs. Loss = 1/2 sum_{ij,kl} P_ij P_kl Ks_ik Ko_jl
    - 1/N sum_{ij,m} P_ij Ks_im Ko_jm.

    Parameters
    ----------
    S : ``[N, N]`` logits of N matched pairs (diagonal)
    K_state, K_obs : ``[N, N]`` kernel matrices of the batch's states and observations

    Returns
    -------
    torch.Tensor
        The loss, a 0-d tensor.
    """
    n = _square(S)
    for K, name in ((K_state, "K_state"), (K_obs, "K_obs")):
        if K is None or K.shape != (n, n):
            raise OceandaError(f"{name} of shape {None if K is None else tuple(K.shape)}; expected [{n}, {n}]")
    off = S.masked_fill(torch.eye(n, dtype=torch.bool, device=S.device), float("-inf"))
    P = torch.softmax(off.reshape(-1), 0).reshape(n, n)
    first = (K_state * (P @ K_obs @ P.T)).sum()
    second = (P * (K_state @ K_obs.T)).sum() / n
    return 0.5 * first - second


def gaussian_kernel(x: torch.Tensor, bandwidth: float | None = None) -> torch.Tensor:
    """exp(-|x_i - x_k|^2 / (2 h^2)) on flattened rows; h = median pairwise distance when None.

    Parameters
    ----------
    x : ``[N, ...]`` a batch (NaN read as 0)
    bandwidth : h (default: the median pairwise distance)

    Returns
    -------
    torch.Tensor
        ``[N, N]`` kernel matrix.
    """
    x = x.reshape(x.shape[0], -1)
    x = torch.nan_to_num(x)
    d2 = torch.cdist(x, x).pow(2)
    if bandwidth is None:
        n = x.shape[0]
        off = d2[~torch.eye(n, dtype=torch.bool, device=x.device)]
        h2 = off.median().clamp_min(1e-12)
    else:
        h2 = torch.as_tensor(float(bandwidth) ** 2, dtype=x.dtype, device=x.device)
    return torch.exp(-d2 / (2 * h2)).detach()


class Loss:
    """A named loss: ``loss(S, state=None, obs=None)``; ``needs_data`` for the MMD losses."""

    def __init__(self, name: str, fn: Callable[..., torch.Tensor], kwargs: dict, needs_data: bool = False,
                 kernel_state: Callable | None = None, kernel_obs: Callable | None = None):
        self.name, self.fn, self.kwargs, self.needs_data = name, fn, kwargs, needs_data
        self.kernel_state = kernel_state or gaussian_kernel
        self.kernel_obs = kernel_obs or gaussian_kernel

    def __call__(self, S: torch.Tensor, state: torch.Tensor | None = None, obs: torch.Tensor | None = None) -> torch.Tensor:
        if not self.needs_data:
            return self.fn(S, **self.kwargs)
        if state is None or obs is None:
            raise OceandaError(f"loss '{self.name}' needs the raw state and obs batch to build its kernels")
        Ks = self.kernel_state(state).to(S.dtype)
        Ko = self.kernel_obs(obs).to(S.dtype)
        return self.fn(S, Ks, Ko, **self.kwargs)

    def config(self) -> dict:
        """JSON-able name and scalar options (stored in checkpoints as ``config["loss"]``)."""
        return {"name": self.name, **{k: v for k, v in self.kwargs.items() if isinstance(v, (int, float, str, bool))}}

    def __repr__(self) -> str:
        return f"Loss({self.name!r}, {self.kwargs})"


def get_loss(name: str, **kw) -> Loss:
    """Loss by name: 'clip', 'weighted' (lambda_state, lambda_obs), 'state|obs', 'obs|state', 'joint',
    'mmd_conditional' (lambda_state, lambda_obs, kernel_state, kernel_obs), 'mmd_joint' (kernels).

    Parameters
    ----------
    name : one of :data:`LOSSES` (a :class:`Loss` is returned as is)
    **kw : the loss's options

    Returns
    -------
    Loss
        A callable ``loss(S, state=None, obs=None)``.
    """
    if isinstance(name, Loss):
        return name
    ks, ko = kw.pop("kernel_state", None), kw.pop("kernel_obs", None)
    table = {
        "clip": (clip, ()),
        "weighted": (weighted_conditional, ("lambda_state", "lambda_obs")),
        "state|obs": (state_given_obs, ()),
        "obs|state": (obs_given_state, ()),
        "joint": (joint, ()),
        "mmd_conditional": (mmd_conditional, ("lambda_state", "lambda_obs")),
        "mmd_joint": (mmd_joint, ()),
    }
    if name not in table:
        raise OceandaError(f"loss '{name}' unknown; expected one of {list(LOSSES)}")
    fn, allowed = table[name]
    bad = [k for k in kw if k not in allowed]
    if bad:
        raise OceandaError(f"loss '{name}' takes no option(s) {bad}; expected only {list(allowed)}")
    return Loss(name, fn, dict(kw), needs_data=name.startswith("mmd"), kernel_state=ks, kernel_obs=ko)
