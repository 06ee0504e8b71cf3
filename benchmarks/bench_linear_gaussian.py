"""Learning matches theory (issue 4 acceptance): linear encoders trained with Adam on 100k samples
of a random 4+3-dimensional Gaussian converge to the closed-form optima of paper-notes section 5.

  inner product + two-sided conditional (clip)    -> A* = Cuu^-1 Cuv Cvv^-1
  neg. squared distance + one-sided state|obs     -> (A*, B*), model u|v covariance = C_u|v

Prints relative Frobenius errors and the wall time. Usage:
  .venv/bin/python benchmarks/bench_linear_gaussian.py [--n 100000] [--batch 1024] [--epochs 4] [--lr 5e-2] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from oceanda.contrastive import gaussian as G
from oceanda.contrastive.encoders import LinearEncoder
from oceanda.contrastive.model import ContrastiveModel
from oceanda.contrastive.similarity import Similarity
from oceanda.contrastive.training import train


def random_cov(nu=4, nv=3, seed=0):
    """A random SPD joint covariance (canonical correlations well below 1)."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((nu + nv, nu + nv))
    C = W @ W.T / (nu + nv) + 0.3 * np.eye(nu + nv)
    return C


def sample(C, n, seed):
    rng = np.random.default_rng(seed)
    x = rng.multivariate_normal(np.zeros(len(C)), C, size=n)
    return x[:, :4].astype(np.float32), x[:, 4:].astype(np.float32)


def rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def learn(kind, C, n=100_000, batch=1024, epochs=4, lr=5e-2, seed=0, ne=4, quiet=True):
    """Train linear encoders; return learned parameters and the relative errors against theory."""
    Cuu, Cuv, Cvv = C[:4, :4], C[:4, 4:], C[4:, 4:]
    u, v = sample(C, n, seed)
    torch.manual_seed(seed)  # encoder initialisation only
    sim = Similarity("inner_product" if kind == "inner_product" else "neg_sq_distance", tau=1.0)
    model = ContrastiveModel(LinearEncoder(4, ne), LinearEncoder(3, ne), sim)
    loss = "clip" if kind == "inner_product" else "state|obs"
    t0 = time.perf_counter()
    hist = train(model, (u, v), loss=loss, epochs=epochs, batch_size=batch, lr=lr, seed=seed, grad_clip=None,
                 schedule="cosine", quiet=quiet)
    secs = time.perf_counter() - t0
    Gm = model.state_encoder.weight.detach().double().numpy()
    Hm = model.obs_encoder.weight.detach().double().numpy()
    A = Gm.T @ Hm
    out = {"seconds": secs, "final_loss": hist.history[-1]["train_loss"]}
    if kind == "inner_product":
        out["A_rel_err"] = rel(A, G.inner_product_conditional_optimum(Cuu, Cuv, Cvv))
    else:
        As, Bs = G.quadratic_one_sided_optimum(Cuu, Cuv, Cvv)
        B = Gm.T @ Gm
        out["A_rel_err"] = rel(A, As)
        out["B_rel_err"] = rel(B, Bs)
        _, cov = G.quadratic_model_state_given_obs(A, B, Cuu)
        out["cov_rel_err"] = rel(cov, G.conditional_state_given_obs(Cuu, Cuv, Cvv)[1])
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--lr", type=float, default=5e-2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    C = random_cov(seed=a.seed)
    s = G.canonical_correlations(C[:4, :4], C[:4, 4:], C[4:, 4:])[1]
    print(f"canonical correlations: {np.round(s, 3).tolist()}")
    for kind in ("inner_product", "quadratic"):
        r = learn(kind, C, a.n, a.batch, a.epochs, a.lr, a.seed)
        print(kind, {k: round(v, 4) for k, v in r.items()})


if __name__ == "__main__":
    main()
