"""Closed forms of paper-notes section 5 against the worked example and exact minimisation."""

import numpy as np
import pytest
from scipy.optimize import minimize

from oceanda.contrastive import gaussian as G


def random_cov(nu=4, nv=3, seed=0):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((nu + nv, nu + nv))
    C = W @ W.T / (nu + nv) + 0.3 * np.eye(nu + nv)
    return C[:nu, :nu], C[:nu, nu:], C[nu:, nu:]


def test_worked_2d_example():
    Cuu, Cuv, Cvv = np.array([[1.5]]), np.array([[1.0]]), np.array([[1.5]])
    A = G.inner_product_conditional_optimum(Cuu, Cuv, Cvv)
    assert A[0, 0] == pytest.approx(0.4444, abs=1e-4)
    M, cov = G.inner_product_model_state_given_obs(A, Cuu)
    assert M[0, 0] == pytest.approx(2 / 3) and cov[0, 0] == pytest.approx(1.5)
    Aq, Bq = G.quadratic_one_sided_optimum(Cuu, Cuv, Cvv)
    assert Aq[0, 0] == pytest.approx(0.8) and Bq[0, 0] == pytest.approx(0.5333, abs=1e-4)
    M, cov = G.quadratic_model_state_given_obs(Aq, Bq, Cuu)
    assert M[0, 0] == pytest.approx(2 / 3) and cov[0, 0] == pytest.approx(0.8333, abs=1e-4)
    _, _, s = None, None, G.canonical_correlations(Cuu, Cuv, Cvv)[1]
    assert s[0] == pytest.approx(2 / 3)
    Aj = G.inner_product_joint_optimum(Cuu, Cuv, Cvv)
    assert Aj[0, 0] == pytest.approx(1 / 3)
    M, cov = G.inner_product_model_state_given_obs(Aj, Cuu)
    assert M[0, 0] == pytest.approx(0.5) and cov[0, 0] == pytest.approx(1.5)
    assert G.inner_product_model_state_marginal(Aj, Cuu, Cvv)[0, 0] == pytest.approx(2.0)
    assert G.inner_product_model_state_marginal(A, Cuu, Cvv)[0, 0] == pytest.approx(2.7, abs=1e-9)
    J = G.inner_product_model_joint_covariance(Aj, Cuu, Cvv)
    assert J[0, 0] == pytest.approx(2.0)


def _lowrank_min(fun_grad, nu, nv, r, seed):
    """Minimise over A = Gm^T Hm (rank r) with analytic gradients."""
    rng = np.random.default_rng(seed)
    x0 = 0.1 * rng.standard_normal(r * (nu + nv))

    def f(x):
        Gm, Hm = x[: r * nu].reshape(r, nu), x[r * nu:].reshape(r, nv)
        L, gA = fun_grad(Gm.T @ Hm)
        if not np.isfinite(L):
            return 1e10, np.zeros_like(x)
        return L, np.concatenate([(Hm @ gA.T).ravel(), (Gm @ gA).ravel()])

    res = minimize(f, x0, jac=True, method="BFGS", options={"gtol": 1e-11, "maxiter": 20000})
    Gm, Hm = res.x[: r * nu].reshape(r, nu), res.x[r * nu:].reshape(r, nv)
    return Gm.T @ Hm


@pytest.mark.parametrize("seed", [0, 1])
def test_inner_product_conditional_optimum_minimises(seed):
    Cuu, Cuv, Cvv = random_cov(seed=seed)
    fg = lambda A: G.inner_product_conditional_loss(A, Cuu, Cuv, Cvv, grad=True)  # noqa: E731
    res = minimize(lambda a: fg(a.reshape(4, 3))[0], np.zeros(12), jac=lambda a: fg(a.reshape(4, 3))[1].ravel(),
                   method="BFGS", options={"gtol": 1e-12})
    A = G.inner_product_conditional_optimum(Cuu, Cuv, Cvv)
    assert np.abs(res.x.reshape(4, 3) - A).max() < 1e-6
    for r in (1, 2):
        Ar = _lowrank_min(fg, 4, 3, r, seed)
        assert np.abs(Ar - G.inner_product_conditional_optimum(Cuu, Cuv, Cvv, rank=r)).max() < 1e-6
    assert np.allclose(G.inner_product_conditional_optimum(Cuu, Cuv, Cvv, rank=3), A)


@pytest.mark.parametrize("seed", [0, 1])
def test_inner_product_joint_optimum_minimises(seed):
    Cuu, Cuv, Cvv = random_cov(seed=seed)
    fg = lambda A: G.inner_product_joint_loss(A, Cuu, Cuv, Cvv, grad=True)  # noqa: E731
    for r in (None, 1, 2):
        Ar = _lowrank_min(fg, 4, 3, 3 if r is None else r, seed + 10)
        assert np.abs(Ar - G.inner_product_joint_optimum(Cuu, Cuv, Cvv, rank=r)).max() < 1e-6


@pytest.mark.parametrize("seed", [0, 1])
def test_quadratic_optimum_minimises_and_is_calibrated(seed):
    Cuu, Cuv, Cvv = random_cov(seed=seed)
    nu, nv = 4, 3

    def f(x):
        A, Gm = x[: nu * nv].reshape(nu, nv), x[nu * nv:].reshape(nu, nu)
        L, gA, gB = G.quadratic_state_given_obs_loss(A, Gm.T @ Gm, Cuu, Cuv, Cvv, grad=True)
        return L, np.concatenate([gA.ravel(), (Gm @ (gB + gB.T)).ravel()])

    x0 = np.concatenate([np.zeros(nu * nv), 0.1 * np.eye(nu).ravel()])
    res = minimize(f, x0, jac=True, method="BFGS", options={"gtol": 1e-11, "maxiter": 20000})
    A, Gm = res.x[: nu * nv].reshape(nu, nv), res.x[nu * nv:].reshape(nu, nu)
    As, Bs = G.quadratic_one_sided_optimum(Cuu, Cuv, Cvv)
    assert np.abs(A - As).max() < 1e-6 and np.abs(Gm.T @ Gm - Bs).max() < 1e-6
    M, cov = G.quadratic_model_state_given_obs(As, Bs, Cuu)
    Mt, Ct = G.conditional_state_given_obs(Cuu, Cuv, Cvv)
    assert np.allclose(M, Mt) and np.allclose(cov, Ct)


def test_conditional_loss_below_joint_loss():
    rng = np.random.default_rng(5)
    for seed in range(5):
        Cuu, Cuv, Cvv = random_cov(seed=seed)
        cands = [G.inner_product_conditional_optimum(Cuu, Cuv, Cvv), G.inner_product_joint_optimum(Cuu, Cuv, Cvv)]
        cands += [0.3 * rng.standard_normal((4, 3)) for _ in range(5)]
        for A in cands:
            lj = G.inner_product_joint_loss(A, Cuu, Cuv, Cvv)
            lc = G.inner_product_conditional_loss(A, Cuu, Cuv, Cvv)
            assert lc <= lj + 1e-12
        # and strictly better marginals under the joint optimum than under the conditional one
        Mt = np.block([[Cuu]])
        Ac, Aj = cands[0], cands[1]
        err_c = np.linalg.norm(G.inner_product_model_state_marginal(Ac, Cuu, Cvv) - Mt) if np.linalg.eigvalsh(np.linalg.inv(Cuu) - Ac @ Cvv @ Ac.T).min() > 0 else np.inf
        err_j = np.linalg.norm(G.inner_product_model_state_marginal(Aj, Cuu, Cvv) - Mt)
        assert err_j < err_c
