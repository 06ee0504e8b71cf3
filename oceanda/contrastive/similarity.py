"""Similarities (the paper's "tiltings") between state and observation embeddings.

``Similarity(z_state [Ns, ne], z_obs [No, ne]) -> S / tau [Ns, No]`` (rows: states, columns:
observations). Every loss and the sampler work on that one logits matrix.

Why one module for torch and numpy: training scores embeddings in torch, the sampler scores a
library's cached embeddings in numpy (float64, in chunks). Both read the kinds and their aliases
from the one table :data:`ALIASES` (:func:`canonical_kind`), and :func:`numpy_scores` follows the
same definitions as :class:`Similarity`: cosine and inner product divided by tau, negative squared
distance ``-|a - b|^2 / (2 tau)``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from oceanda.errors import ConfigurationError, OceandaError
from oceanda.settings import check_number

#: Every name a similarity may be given by -> its canonical kind (the one table of aliases).
ALIASES = {
    "cosine": "cosine",
    "inner_product": "inner_product",
    "inner": "inner_product",
    "dot": "inner_product",
    "neg_sq_distance": "neg_sq_distance",
    "negsqdist": "neg_sq_distance",
    "neg_sq_dist": "neg_sq_distance",
    "negative_squared_distance": "neg_sq_distance",
}
#: The canonical kinds, in the order the CLI lists them.
KINDS = tuple(dict.fromkeys(ALIASES.values()))


def canonical_kind(kind: str) -> str:
    """The canonical name of a similarity kind or alias (case and ``-``/``_`` insensitive).

    Parameters
    ----------
    kind : a kind of :data:`KINDS` or an alias in :data:`ALIASES` (``"dot"``, ``"negsqdist"``, ...)

    Returns
    -------
    str
        One of :data:`KINDS`; an unknown name raises :class:`~oceanda.errors.ConfigurationError`
        (a ``ValueError`` and an ``OceandaError``).
    """
    try:
        return ALIASES[str(kind).lower().replace("-", "_")]
    except KeyError:
        raise ConfigurationError(f"unknown similarity '{kind}'; expected one of {sorted(KINDS)}") from None


def numpy_scores(z_state: np.ndarray, z_obs: np.ndarray, kind: str = "neg_sq_distance", tau: float = 1.0,
                 chunk: int = 65536) -> np.ndarray:
    """Logits ``s(z_state_i, z_obs_j) / tau`` in numpy float64, computed in row chunks of ``chunk``.

    Parameters
    ----------
    z_state : ``[N, D]`` state (library) embeddings
    z_obs : ``[D]`` one observation embedding, or ``[M, D]`` several
    kind : a similarity kind or alias (:func:`canonical_kind`)
    tau : the temperature
    chunk : rows of ``z_state`` scored at once (bounds the memory of the ``[chunk, M]`` block)

    Returns
    -------
    numpy.ndarray
        ``[N]`` float64 for a single ``z_obs`` of shape ``[D]``, else ``[N, M]``.
    """
    kind = canonical_kind(kind)
    zs = np.asarray(z_state, dtype=np.float64)
    zo = np.asarray(z_obs, dtype=np.float64)
    single = zo.ndim == 1
    if single:
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
    return out[:, 0] if single else out


class Similarity(nn.Module):
    """s(g_state, g_obs) / tau for kind in ``KINDS`` (or an alias of :data:`ALIASES`).

    ``neg_sq_distance`` is ``-|a - b|^2 / (2 tau)``. With ``learn_tau`` the temperature is learned as
    ``log tau`` and clamped to ``[tau_min, tau_max]`` so the logits cannot blow up (as in CLIP).
    """

    def __init__(self, kind: str = "cosine", tau: float = 1.0, learn_tau: bool = False,
                 tau_min: float = 1e-3, tau_max: float = 100.0):
        super().__init__()
        kind = canonical_kind(kind)
        check_number("tau", tau, lo=0, lo_open=True)
        self.kind = kind
        self.learn_tau = bool(learn_tau)
        self.tau_min, self.tau_max = float(tau_min), float(tau_max)
        log_tau = torch.tensor(math.log(tau), dtype=torch.float32)
        if self.learn_tau:
            self.log_tau = nn.Parameter(log_tau)
        else:
            self.register_buffer("log_tau", log_tau)

    @property
    def tau(self) -> torch.Tensor:
        """The temperature (clamped to ``[tau_min, tau_max]``), a 0-d tensor."""
        return self.log_tau.clamp(math.log(self.tau_min), math.log(self.tau_max)).exp()

    def raw(self, z_state: torch.Tensor, z_obs: torch.Tensor) -> torch.Tensor:
        """The similarity matrix s before division by tau.

        Parameters
        ----------
        z_state : ``[Ns, ne]`` state embeddings
        z_obs : ``[No, ne]`` observation embeddings

        Returns
        -------
        torch.Tensor
            ``[Ns, No]``.
        """
        _check(z_state, z_obs)
        if self.kind == "cosine":
            a = nn.functional.normalize(z_state, dim=-1)
            b = nn.functional.normalize(z_obs, dim=-1)
            return a @ b.T
        if self.kind == "inner_product":
            return z_state @ z_obs.T
        # -|a-b|^2/2 = a.b - |a|^2/2 - |b|^2/2 (a matmul; no [Ns, No, ne] tensor)
        sq_a = (z_state * z_state).sum(-1, keepdim=True)
        sq_b = (z_obs * z_obs).sum(-1, keepdim=True)
        return z_state @ z_obs.T - 0.5 * sq_a - 0.5 * sq_b.T

    def forward(self, z_state: torch.Tensor, z_obs: torch.Tensor) -> torch.Tensor:
        """The logits matrix ``s / tau``.

        Parameters
        ----------
        z_state : ``[Ns, ne]`` state embeddings
        z_obs : ``[No, ne]`` observation embeddings

        Returns
        -------
        torch.Tensor
            ``[Ns, No]``.
        """
        return self.raw(z_state, z_obs) / self.tau.to(z_state.dtype)

    def paired(self, z_state: torch.Tensor, z_obs: torch.Tensor) -> torch.Tensor:
        """Logits of matched rows only, s(z_state[i], z_obs[i]) / tau.

        Parameters
        ----------
        z_state, z_obs : ``[N, ne]`` embeddings of N matched pairs

        Returns
        -------
        torch.Tensor
            ``[N]``.
        """
        if z_state.shape != z_obs.shape:
            raise OceandaError(f"paired similarity of shapes {tuple(z_state.shape)} and {tuple(z_obs.shape)}; expected equal shapes")
        if self.kind == "cosine":
            s = (nn.functional.normalize(z_state, dim=-1) * nn.functional.normalize(z_obs, dim=-1)).sum(-1)
        elif self.kind == "inner_product":
            s = (z_state * z_obs).sum(-1)
        else:
            s = -0.5 * ((z_state - z_obs) ** 2).sum(-1)
        return s / self.tau.to(z_state.dtype)

    def config(self) -> dict:
        """JSON-able settings that rebuild this similarity (``ContrastiveModel.from_config``)."""
        return {"kind": self.kind, "tau": float(self.tau.detach()), "learn_tau": self.learn_tau,
                "tau_min": self.tau_min, "tau_max": self.tau_max}

    def extra_repr(self) -> str:
        """The kind and temperature, for ``repr``."""
        return f"kind={self.kind}, tau={float(self.tau.detach()):.4g}, learn_tau={self.learn_tau}"


def _check(z_state: torch.Tensor, z_obs: torch.Tensor) -> None:
    if z_state.ndim != 2 or z_obs.ndim != 2 or z_state.shape[1] != z_obs.shape[1]:
        raise OceandaError(
            f"embeddings of shapes {tuple(z_state.shape)} (state) and {tuple(z_obs.shape)} (obs); "
            "expected [Ns, ne] and [No, ne] with the same ne"
        )
