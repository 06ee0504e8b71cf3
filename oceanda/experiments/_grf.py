"""Baptista, Stuart & Tran (2025), section 6.1: a Gaussian random field and its KL coefficients.

w ~ N(0, (-d^2/dx^2 + 9)^-2) on (0, 1) with Neumann conditions, expanded in ``n_modes`` cosine
eigenfunctions phi_0 = 1, phi_j = sqrt(2) cos(j pi x) (eigenvalues ((j pi)^2 + 9)^-2).
u = w at ``n_points`` interior equispaced points + N(0, noise^2); v = the first ``n_kl`` whitened
KL coefficients xi_j. (u, v) is jointly Gaussian, so E[u|v] and E[v|u] are known exactly and the
trained linear encoders (inner product, CLIP loss) can be scored against them without Monte Carlo
error: the model's conditional means are Cuu A v and Cvv A^T u with A = G^T H (paper-notes 5a).
u is standardised by its known marginal standard deviation (a fixed rescaling of G; it keeps
Adam's step sizes sensible and changes no conclusion).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from oceanda.contrastive import gaussian
from oceanda.contrastive.encoders import LinearEncoder
from oceanda.contrastive.model import ContrastiveModel
from oceanda.contrastive.similarity import Similarity
from oceanda.contrastive.training import train


@dataclass
class GRFProblem:
    Cuu: np.ndarray
    Cuv: np.ndarray
    Cvv: np.ndarray
    points: np.ndarray


def grf_problem(n_modes: int = 1000, n_points: int = 12, n_kl: int = 5, noise: float = 0.05,
                kappa2: float = 9.0) -> GRFProblem:
    """Joint covariance of (u standardised, v).

    Parameters
    ----------
    n_modes : cosine eigenfunctions in the expansion
    n_points : interior observation points of u
    n_kl : KL coefficients in v
    noise : observation noise standard deviation
    kappa2 : the 9 in ``(-d^2/dx^2 + 9)^-2``

    Returns
    -------
    GRFProblem
    """
    j = np.arange(n_modes)
    lam = ((j * np.pi) ** 2 + kappa2) ** -2.0
    x = (np.arange(n_points) + 1.0) / (n_points + 1.0)
    phi = np.where(j[None, :] == 0, 1.0, np.sqrt(2.0) * np.cos(np.pi * j[None, :] * x[:, None]))  # [P, J]
    Cuu = (phi * lam) @ phi.T + noise**2 * np.eye(n_points)
    Cuv = phi[:, :n_kl] * np.sqrt(lam[:n_kl])
    Cvv = np.eye(n_kl)
    d = 1.0 / np.sqrt(np.diag(Cuu))
    return GRFProblem(Cuu * d[:, None] * d[None, :], Cuv * d[:, None], Cvv, x)


def sample_pairs(p: GRFProblem, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Exact draws: v ~ N(0, Cvv), u | v ~ N(M v, Cu|v).

    Parameters
    ----------
    p : the problem
    n : pairs to draw
    rng : random generator

    Returns
    -------
    tuple: float32 ``u`` ``[n, n_points]`` and ``v`` ``[n, n_kl]``
    """
    M, C = gaussian.conditional_state_given_obs(p.Cuu, p.Cuv, p.Cvv)
    v = rng.standard_normal((n, p.Cvv.shape[0])) @ np.linalg.cholesky(p.Cvv).T
    u = v @ M.T + rng.standard_normal((n, p.Cuu.shape[0])) @ np.linalg.cholesky(C).T
    return u.astype(np.float32), v.astype(np.float32)


def mean_errors(A: np.ndarray, p: GRFProblem) -> dict[str, float]:
    """Relative errors of the model's E[u|v] and E[v|u], exact expectations over v (resp. u):
    sqrt(tr(dM C dM^T) / tr(M C M^T)).

    Parameters
    ----------
    A : ``[n_points, n_kl]`` the trained ``G^T H``
    p : the problem

    Returns
    -------
    dict: ``err_u_given_v`` and ``err_v_given_u``
    """
    Mu, _ = gaussian.conditional_state_given_obs(p.Cuu, p.Cuv, p.Cvv)
    Mv, _ = gaussian.conditional_obs_given_state(p.Cuu, p.Cuv, p.Cvv)
    Au, _ = gaussian.inner_product_model_state_given_obs(A, p.Cuu)
    Av, _ = gaussian.inner_product_model_obs_given_state(A, p.Cvv)

    def rel(dM, M, C):
        return float(np.sqrt(np.trace(dM @ C @ dM.T) / np.trace(M @ C @ M.T)))

    return {"err_u_given_v": rel(Au - Mu, Mu, p.Cvv), "err_v_given_u": rel(Av - Mv, Mv, p.Cuu)}


def train_linear(p: GRFProblem, n: int, dim: int, batch: int, epochs: int, lr: float, seed: int) -> np.ndarray:
    """Linear encoders, inner product (tau = 1), CLIP loss; returns A = G^T H.

    Parameters
    ----------
    p : the problem
    n : training pairs
    dim : embedding dimension
    batch, epochs, lr : training settings
    seed : random seed (data and initialisation)

    Returns
    -------
    ``[n_points, n_kl]`` matrix A
    """
    rng = np.random.default_rng([seed, n, dim, batch])
    data = sample_pairs(p, n, rng)
    torch.manual_seed(int(rng.integers(2**31)))
    model = ContrastiveModel(LinearEncoder(p.Cuu.shape[0], dim), LinearEncoder(p.Cvv.shape[0], dim),
                             Similarity("inner_product", tau=1.0))
    with torch.no_grad():  # small start: the optimum is near A = 0 in scale, not at a random rank-dim matrix
        model.state_encoder.linear.weight.mul_(0.3)
        model.obs_encoder.linear.weight.mul_(0.3)
    train(model, data, loss="clip", epochs=epochs, batch_size=min(batch, n), lr=lr, seed=seed, quiet=True,
          grad_clip=None, retrieval_max=0)
    G = model.state_encoder.weight.detach().double().numpy()
    H = model.obs_encoder.weight.detach().double().numpy()
    return G.T @ H


def run_grf(cfg: dict, seed: int, progress=None) -> dict:
    """Sweeps over embedding dimension, batch size and N (others at their base values).

    Parameters
    ----------
    cfg : settings (``problem``, ``base``, ``steps``, ``lr``, ``dims``, ``batches``, ``ns``)
    seed : random seed
    progress : callable taking a message string (None: silent)

    Returns
    -------
    dict: the setting, canonical correlations and the three sweeps' errors
    """
    p = grf_problem(**cfg.get("problem", {}))
    t0 = time.perf_counter()
    base = cfg["base"]
    steps = cfg["steps"]  # the same number of optimiser steps for every run, so each converges alike

    def epochs_for(n, batch):
        return max(1, int(round(steps * batch / n)))

    cache: dict = {}

    def one(n, dim, batch):
        if (n, dim, batch) in cache:  # the base setting appears in every sweep: train it once
            return cache[(n, dim, batch)]
        A = train_linear(p, n, dim, batch, epochs_for(n, batch), cfg["lr"], seed)
        e = mean_errors(A, p)
        if progress:
            progress(f"grf n={n} dim={dim} batch={batch}: {e}")
        cache[(n, dim, batch)] = e
        return e

    out: dict = {"setting": {"n_modes": cfg.get("problem", {}).get("n_modes", 1000),
                             "points": p.points.tolist(), "noise": cfg.get("problem", {}).get("noise", 0.05),
                             "similarity": "inner_product", "loss": "clip", "lr": cfg["lr"], "base": base,
                             "optimizer_steps": steps,
                             "optimizer": "AdamW (no weight decay), cosine schedule"}}
    U, s, Vt = gaussian.canonical_correlations(p.Cuu, p.Cuv, p.Cvv)
    out["canonical_correlations"] = s.tolist()
    sweeps = {}
    dims = cfg["dims"]
    sweeps["embedding_dim"] = {
        "values": dims,
        "runs": [one(base["n"], d, base["batch"]) for d in dims],
        "population_optimum": [mean_errors(gaussian.inner_product_conditional_optimum(p.Cuu, p.Cuv, p.Cvv, rank=min(d, 5)), p)
                               for d in dims],
    }
    sweeps["batch_size"] = {"values": cfg["batches"], "runs": [one(base["n"], base["dim"], b) for b in cfg["batches"]]}
    sweeps["n_samples"] = {"values": cfg["ns"], "runs": [one(n, base["dim"], base["batch"]) for n in cfg["ns"]]}
    for sw in sweeps.values():
        for key in ("err_u_given_v", "err_v_given_u"):
            sw[key] = [r[key] for r in sw["runs"]]
    out["sweeps"] = sweeps
    out["seconds"] = time.perf_counter() - t0
    return out


def plot_grf(res: dict):
    """Figure of the three sweeps: relative errors of both conditional means.

    Parameters
    ----------
    res : the dict of :func:`run_grf`

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    sw = res["sweeps"]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for ax, key, label, logx in zip(axes, ("embedding_dim", "batch_size", "n_samples"),
                                    ("embedding dimension", "batch size", "training pairs N"), (False, True, True)):
        v = sw[key]["values"]
        ax.plot(v, sw[key]["err_u_given_v"], "o-", label="E[u|v]")
        ax.plot(v, sw[key]["err_v_given_u"], "s-", label="E[v|u]")
        if key == "embedding_dim":
            ax.plot(v, [r["err_u_given_v"] for r in sw[key]["population_optimum"]], "k:", label="rank-r optimum, E[u|v]")
            ax.plot(v, [r["err_v_given_u"] for r in sw[key]["population_optimum"]], "k--", lw=0.8, label="rank-r optimum, E[v|u]")
        if logx:
            ax.set_xscale("log")
            ax.set_xticks(v)
            ax.set_xticklabels([str(x) for x in v], fontsize=7)
            ax.minorticks_off()
        ax.set_ylim(0, None)
        ax.set_xlabel(label)
        ax.set_ylabel("relative error of conditional mean")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("Gaussian random field (paper 6.1): trained linear encoders vs closed form")
    fig.tight_layout()
    return fig
