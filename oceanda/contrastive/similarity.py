"""Similarities (the paper's "tiltings") between state and observation embeddings.

``Similarity(z_state [Ns, ne], z_obs [No, ne]) -> S / tau [Ns, No]`` (rows: states, columns:
observations). Every loss and the sampler work on that one logits matrix.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from oceanda.errors import OceandaError

KINDS = ("cosine", "inner_product", "neg_sq_distance")


class Similarity(nn.Module):
    """s(g_state, g_obs) / tau for kind in ``KINDS``.

    ``neg_sq_distance`` is ``-|a - b|^2 / (2 tau)``. With ``learn_tau`` the temperature is learned as
    ``log tau`` and clamped to ``[tau_min, tau_max]`` so the logits cannot blow up (as in CLIP).
    """

    def __init__(self, kind: str = "cosine", tau: float = 1.0, learn_tau: bool = False,
                 tau_min: float = 1e-3, tau_max: float = 100.0):
        super().__init__()
        if kind not in KINDS:
            raise OceandaError(f"similarity '{kind}' unknown; expected one of {list(KINDS)}")
        if not (tau > 0 and math.isfinite(tau)):
            raise OceandaError(f"temperature tau={tau}; expected a positive finite number")
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
        return self.log_tau.clamp(math.log(self.tau_min), math.log(self.tau_max)).exp()

    def raw(self, z_state: torch.Tensor, z_obs: torch.Tensor) -> torch.Tensor:
        """The similarity matrix s before division by tau, ``[Ns, No]``."""
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
        return self.raw(z_state, z_obs) / self.tau.to(z_state.dtype)

    def paired(self, z_state: torch.Tensor, z_obs: torch.Tensor) -> torch.Tensor:
        """Logits of matched rows only, ``[N]`` (s(z_state[i], z_obs[i]) / tau)."""
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
        return {"kind": self.kind, "tau": float(self.tau.detach()), "learn_tau": self.learn_tau,
                "tau_min": self.tau_min, "tau_max": self.tau_max}

    def extra_repr(self) -> str:
        return f"kind={self.kind}, tau={float(self.tau.detach()):.4g}, learn_tau={self.learn_tau}"


def _check(z_state: torch.Tensor, z_obs: torch.Tensor) -> None:
    if z_state.ndim != 2 or z_obs.ndim != 2 or z_state.shape[1] != z_obs.shape[1]:
        raise OceandaError(
            f"embeddings of shapes {tuple(z_state.shape)} (state) and {tuple(z_obs.shape)} (obs); "
            "expected [Ns, ne] and [No, ne] with the same ne"
        )
