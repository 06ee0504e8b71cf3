"""Posterior weights, truncation, ESS, retrieval, resampling and tempering, plus the Gaussian
acceptance check of paper-notes section 5: with linear encoders at the closed-form optimum the
weighted library reproduces the true conditional law (negative squared distance, state|obs) or
its mean with the marginal covariance (inner product)."""

import warnings

import numpy as np
import pytest
from scipy.special import softmax

from oceanda.analysis import posterior as P


def test_softmax_weights_match_scipy_and_sum_to_one():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(50, 3)) * 40
    w = P.softmax_weights(s, tau=2.0)
    np.testing.assert_allclose(w, softmax(s / 2.0, axis=0), rtol=1e-12)
    np.testing.assert_allclose(w.sum(axis=0), 1.0)


def test_ess_closed_forms():
    assert P.effective_sample_size(np.full(40, 1 / 40)) == pytest.approx(40)
    assert P.effective_sample_size(np.eye(1, 40)[0]) == pytest.approx(1)
    assert P.effective_sample_size(np.array([0.5, 0.25, 0.25])) == pytest.approx(1 / 0.375)


def test_truncation_keeps_smallest_set_and_reports_dropped_mass():
    w = np.array([0.5, 1e-8, 0.3, 0.2 - 2e-8, 1e-8])
    tr = P.truncate(w, keep_mass=1 - 1e-6)
    assert list(tr.indices) == [0, 2, 3]
    assert tr.dropped_mass == pytest.approx(2e-8, rel=1e-6)
    np.testing.assert_allclose(tr.weights.sum(), 1.0)
    tr = P.truncate(np.array([0.6, 0.4]), keep_mass=0.5)
    assert list(tr.indices) == [0] and tr.dropped_mass == pytest.approx(0.4)


def test_top_k_is_sorted_best_first():
    s = np.array([0.1, 5.0, -3.0, 2.0, 4.0])
    idx, sc = P.top_k(s, 3)
    assert list(idx) == [1, 4, 3]
    np.testing.assert_allclose(sc, [5.0, 4.0, 2.0])


def test_weighted_mean_var_closed_form():
    x = np.array([[0.0], [1.0], [3.0]])
    w = np.array([0.5, 0.25, 0.25])
    m, v = P.weighted_mean_var(x, w)
    assert m[0] == pytest.approx(1.0)
    assert v[0] == pytest.approx(0.5 * 1 + 0.25 * 0 + 0.25 * 4)


@pytest.mark.parametrize("method", ["systematic", "multinomial"])
def test_resampling_frequencies(method):
    w = np.array([0.1, 0.6, 0.3])
    idx = P.resample(w, 30000, np.random.default_rng(1), method=method)
    freq = np.bincount(idx, minlength=3) / idx.size
    np.testing.assert_allclose(freq, w, atol=0.01)


def test_systematic_counts_are_floor_or_ceil_and_shared_noise_is_deterministic():
    w = np.array([0.13, 0.37, 0.5])
    for u in (0.0, 0.3, 0.999):
        counts = np.bincount(P.systematic_resample(w, 10, u=u), minlength=3)
        assert np.all(counts >= np.floor(10 * w)) and np.all(counts <= np.ceil(10 * w))
    np.testing.assert_array_equal(P.systematic_resample(w, 7, u=0.4), P.systematic_resample(w, 7, u=0.4))


def test_tempering_reaches_target_ess_and_warning_without_it():
    s = np.linspace(0, 200, 1000)
    with pytest.warns(P.DegenerateWeightsWarning):
        post = P.posterior_from_scores(s, min_ess=50)
    assert post.ess < 50
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        post = P.posterior_from_scores(s, min_ess=50, tempering=True)
    assert post.ess >= 50 and post.ess < 51 and post.tau > 1
    assert P.temper(np.zeros(10), 1.0, 5) == 1.0


# ----------------------------------------------------------------------------------------------
# Gaussian acceptance check (paper-notes section 5)
# ----------------------------------------------------------------------------------------------

def _gaussian_problem():
    """u in R^3 (state), v = H u + noise in R^2 (obs): a joint Gaussian with known conditionals."""
    rng = np.random.default_rng(42)
    L = rng.normal(size=(3, 3)) * 0.4 + np.eye(3)
    Cuu = L @ L.T
    Hm = np.array([[1.0, 0.5, 0.0], [0.0, 1.0, -0.5]])
    R = np.diag([0.6, 0.8])
    Cuv = Cuu @ Hm.T
    Cvv = Hm @ Cuu @ Hm.T + R
    return Cuu, Cuv, Cvv


def _optima(Cuu, Cuv, Cvv):
    from oceanda.contrastive.gaussian import inner_product_conditional_optimum, quadratic_one_sided_optimum

    return inner_product_conditional_optimum(Cuu, Cuv, Cvv), quadratic_one_sided_optimum(Cuu, Cuv, Cvv)


def _factor(B, tol=1e-10):
    """G [rank, d] with G^T G = B (B* has rank <= dim(obs), so the embedding has that dimension)."""
    e, V = np.linalg.eigh((B + B.T) / 2)
    keep = e > tol * e.max()
    return np.sqrt(e[keep])[:, None] * V[:, keep].T


def test_gaussian_acceptance_negsqdist_and_inner_product():
    from oceanda.contrastive.similarity import numpy_scores

    Cuu, Cuv, Cvv = _gaussian_problem()
    A_ip, (A_q, B_q) = _optima(Cuu, Cuv, Cvv)
    rng = np.random.default_rng(7)
    n = 200_000
    lib = rng.multivariate_normal(np.zeros(3), Cuu, size=n)
    Cvv_i = np.linalg.inv(Cvv)
    true_cov = Cuu - Cuv @ Cvv_i @ Cuv.T
    # linear encoders realising the optimum: G^T G = B*, G^T H = A*
    G = _factor(B_q)
    H = np.linalg.lstsq(G.T, A_q, rcond=None)[0]
    np.testing.assert_allclose(G.T @ H, A_q, atol=1e-9)
    np.testing.assert_allclose(G.T @ G, B_q, atol=1e-9)
    vs = [np.array([1.0, -0.5]), np.array([-1.5, 2.0]), np.array([0.3, 0.8])]
    for v in vs:
        true_mean = Cuv @ Cvv_i @ v
        # negative squared distance, state|obs optimum: the true conditional, mean and covariance
        s = numpy_scores(lib @ G.T, (H @ v)[None, :], kind="neg_sq_distance", tau=1.0)[:, 0]
        w = P.softmax_weights(s)
        m, C = P.weighted_covariance(lib, w)
        scale = np.sqrt(np.trace(true_cov))
        assert np.linalg.norm(m - true_mean) <= 0.03 * max(np.linalg.norm(true_mean), scale)
        assert np.linalg.norm(C - true_cov) <= 0.03 * np.linalg.norm(true_cov)
        # inner product optimum: right mean, covariance equal to the marginal (too wide)
        s = numpy_scores(lib, (A_ip @ v)[None, :], kind="inner_product", tau=1.0)[:, 0]
        w = P.softmax_weights(s)
        m, C = P.weighted_covariance(lib, w)
        assert np.linalg.norm(m - true_mean) <= 0.03 * max(np.linalg.norm(true_mean), scale)
        assert np.linalg.norm(C - Cuu) <= 0.03 * np.linalg.norm(Cuu)
        assert np.linalg.norm(C - true_cov) > 0.3 * np.linalg.norm(true_cov)  # a real difference


def test_one_quantile_pick_behind_every_resampling():
    w = np.array([0.1, 0.0, 0.5, 0.4])
    q = np.array([0.0, 0.0999, 0.1, 0.5999, 0.6, 0.99999])
    np.testing.assert_array_equal(P.quantile_indices(w, q), [0, 0, 2, 2, 3, 3])  # zero weight never picked
    np.testing.assert_array_equal(P.quantile_indices(w * 7.0, q), P.quantile_indices(w, q))  # unnormalised
    np.testing.assert_array_equal(P.systematic_resample(w, 4, u=0.25), P.quantile_indices(w, (0.25 + np.arange(4)) / 4))
    rng1, rng2 = np.random.default_rng(5), np.random.default_rng(5)
    np.testing.assert_array_equal(P.multinomial_resample(w, 9, rng1), P.quantile_indices(w, rng2.random(9)))
    assert P.quantile_indices(w, q).dtype == np.int64
