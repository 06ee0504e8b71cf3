"""Ensemble Kalman filters against closed forms: the Kalman filter, tapers, distances, inflation."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from oceanda.errors import DataValidationError
from oceanda.kalman import (
    AdaptiveInflation,
    Localizer,
    Observations,
    enkf,
    enoi,
    etkf,
    gaspari_cohn,
    great_circle_km,
    grid_localizer,
    inflate,
    innovation_inflation_estimate,
    letkf,
    radius_from_dapper,
    repair_members,
    ring_localizer,
    rtpp,
    rtps,
    taper,
)


def exact_ensemble(mean, cov, N, rng):
    """An ensemble whose sample mean and covariance (ddof=1) equal mean and cov exactly."""
    n = mean.size
    Z = rng.standard_normal((N, n))
    Z -= Z.mean(0)
    Q, _ = np.linalg.qr(Z)  # orthonormal columns, still centred (span of centred vectors)
    L = np.linalg.cholesky(cov)
    return mean + np.sqrt(N - 1) * Q @ L.T


def kf_update(m, P, y, R, Hm):
    S = Hm @ P @ Hm.T + R
    K = P @ Hm.T @ np.linalg.inv(S)
    return m + K @ (y - Hm @ m), (np.eye(len(m)) - K @ Hm) @ P


def linear_problem(rng, n=4, p=3):
    M = np.eye(n) + 0.3 * rng.standard_normal((n, n))
    M /= max(1.0, np.abs(np.linalg.eigvals(M)).max() / 1.05)
    idx = np.array([0, 2, 3])[:p]
    Hm = np.zeros((p, n))
    Hm[np.arange(p), idx] = 1
    err = np.array([0.5, 1.0, 0.8])[:p]
    m0 = rng.standard_normal(n)
    B = rng.standard_normal((n, n))
    P0 = B @ B.T + 0.5 * np.eye(n)
    return M, idx, Hm, err, m0, P0


def test_etkf_with_more_members_than_states_is_the_kalman_filter():
    rng = np.random.default_rng(0)
    M, idx, Hm, err, m, P = linear_problem(rng)
    E = exact_ensemble(m, P, N=9, rng=rng)
    truth = rng.standard_normal(4)
    for k in range(6):
        truth = M @ truth
        y = Hm @ truth + err * rng.standard_normal(3)
        E, m, P = E @ M.T, M @ m, M @ P @ M.T
        H = idx if k % 2 == 0 else sp.csr_matrix(Hm)  # index and sparse operators alike
        E = etkf(E, y, err, H)  # N=9 > p=3: observation-space (SVD) branch
        m, P = kf_update(m, P, y, np.diag(err**2), Hm)
        np.testing.assert_allclose(E.mean(0), m, rtol=0, atol=1e-10)
        np.testing.assert_allclose(np.cov(E.T), P, rtol=0, atol=1e-10)
    # the ensemble-space branch (N <= p) is exact too: n = 2 states, p = 3 observations, N = 3
    m2, P2 = m[:2], P[:2, :2]
    E = exact_ensemble(m2, P2, N=3, rng=rng)
    H2 = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    y = rng.standard_normal(3)
    Ea = etkf(E, y, err, sp.csr_matrix(H2))
    ma, Pa = kf_update(m2, P2, y, np.diag(err**2), H2)
    np.testing.assert_allclose(Ea.mean(0), ma, atol=1e-10)
    np.testing.assert_allclose(np.cov(Ea.T), Pa, atol=1e-10)


def test_stochastic_enkf_matches_kalman_filter_within_monte_carlo_error():
    rng = np.random.default_rng(1)
    _, idx, Hm, err, m, P = linear_problem(rng)
    y = rng.standard_normal(3)
    ma, Pa = kf_update(m, P, y, np.diag(err**2), Hm)
    N = 20000
    E = exact_ensemble(m, P, N, rng)
    Ea = enkf(E, y, err, idx, rng=np.random.default_rng(2))
    # centred perturbations: the mean update uses the exact prior covariance -> KF mean to rounding
    np.testing.assert_allclose(Ea.mean(0), ma, atol=1e-9)
    # covariance: sampling error of order sqrt(2/N) relative
    tol = 5 * np.sqrt(2.0 / N) * np.sqrt(np.outer(np.diag(Pa), np.diag(Pa)))
    assert np.all(np.abs(np.cov(Ea.T) - Pa) < tol)


def test_etkf_and_enkf_cycled_with_linear_model_within_monte_carlo_error():
    rng = np.random.default_rng(3)
    M, idx, Hm, err, m0, P0 = linear_problem(rng)
    N = 3000
    E0 = rng.multivariate_normal(m0, P0, size=N)
    ys = [rng.standard_normal(3) for _ in range(5)]
    for method in ("etkf", "enkf"):
        E, m, P = E0.copy(), m0.copy(), P0.copy()
        g = np.random.default_rng(4)
        for y in ys:
            E, m, P = E @ M.T, M @ m, M @ P @ M.T
            E = etkf(E, y, err, idx) if method == "etkf" else enkf(E, y, err, idx, rng=g)
            m, P = kf_update(m, P, y, np.diag(err**2), Hm)
        sd = np.sqrt(np.diag(P))
        assert np.all(np.abs(E.mean(0) - m) < 6 * sd / np.sqrt(N) + 1e-12), method
        rel = np.abs(np.cov(E.T) - P) / np.sqrt(np.outer(np.diag(P), np.diag(P)))
        assert rel.max() < 0.15, method


def test_gaspari_cohn_closed_form_and_radius_convention():
    c = 3.0
    r = np.array([0.0, c, 2 * c, 2.5 * c])
    np.testing.assert_allclose(gaspari_cohn(r, c), [1.0, 5 / 24, 0.0, 0.0], atol=1e-12)  # GC99 eq. 4.10 at z=1
    # continuous at c and smooth near 2c
    np.testing.assert_allclose(gaspari_cohn(np.array([c - 1e-9, c + 1e-9]), c), 5 / 24, atol=1e-7)
    assert 0 < gaspari_cohn(np.array([1.99 * c]), c)[0] < 1e-5
    # DAPPER: the taper equals exp(-1/2) at loc_rad, and c = 1.82 loc_rad
    loc_rad = 2.0
    c = radius_from_dapper(loc_rad)
    assert c == pytest.approx(3.64)
    assert taper(np.array([loc_rad]), c, "gaussian")[0] == pytest.approx(np.exp(-0.5))
    assert abs(gaspari_cohn(np.array([loc_rad]), c)[0] - np.exp(-0.5)) < 0.03  # GC ~ Gaussian: 0.634 vs 0.607
    np.testing.assert_array_equal(taper(np.array([0.5, 1.0, 1.01]), 1.0, "boxcar"), [1, 1, 0])
    with pytest.raises(ValueError):
        taper(r, c, "cosine")


def test_distances():
    # one degree of longitude on the equator; a quarter meridian
    assert great_circle_km(0.0, 0.0, 0.0, 1.0) == pytest.approx(2 * np.pi * 6371 / 360, rel=1e-9)
    assert great_circle_km(0.0, 10.0, 90.0, -50.0) == pytest.approx(np.pi * 6371 / 2, rel=1e-9)
    loc = ring_localizer(40, 5.0)
    lw = loc.local_weights(np.array([[0.0], [39.0], [20.0]]))
    # point 0 sees obs at 0 (d=0) and 39 (periodic d=1), not 20 (d=20 > 2c)
    w0 = dict(zip(lw.index[0, : lw.count[0]], lw.weight[0, : lw.count[0]]))
    assert set(w0) == {0, 1}
    assert w0[1] == pytest.approx(gaspari_cohn(np.array([1.0]), 5.0)[0])


def _letkf_reference(E, y, err, idx, coords, obs_coords, radius, metric, period):
    """Straightforward per-point loop: each point's ETKF with tapered R^-1 (Hunt et al. 2007)."""
    from oceanda.kalman.localization import pairwise_distances

    N, n = E.shape
    G = coords.shape[0]
    xm = E.mean(0)
    A = E - xm
    Eo = E[:, idx]
    Y = (Eo - Eo.mean(0)) / err
    d = (y - Eo.mean(0)) / err
    D = pairwise_distances(coords, obs_coords, metric, period)
    out = E.copy()
    for g in range(G):
        rho = gaspari_cohn(D[g], radius)
        Pt = np.linalg.inv((N - 1) * np.eye(N) + (Y * rho) @ Y.T)
        w = Pt @ (Y * rho) @ d
        lam, V = np.linalg.eigh((N - 1) * Pt)
        T = V @ np.diag(np.sqrt(lam)) @ V.T
        cols = np.arange(g, n, G)
        out[:, cols] = xm[cols] + (w + T) @ A[:, cols]
    return out


def test_letkf_batched_equals_per_point_reference_and_etkf_without_localisation():
    rng = np.random.default_rng(5)
    Y, X, C, N = 6, 7, 2, 12
    y1 = np.arange(Y) * 10.0
    x1 = np.arange(X) * 10.0
    G = Y * X
    E = rng.standard_normal((N, C * G))
    idx = rng.choice(C * G, 25, replace=False)
    yv = rng.standard_normal(25)
    err = 0.5 + rng.random(25)
    loc = grid_localizer(y1, x1, 15.0, period=(60.0, 70.0))
    got = letkf(E, yv, err, idx, localizer=loc)
    ref = _letkf_reference(E, yv, err, idx, loc.coords, loc.coords[idx % G], 15.0, "periodic", [60.0, 70.0])
    np.testing.assert_allclose(got, ref, atol=1e-10)
    wide = grid_localizer(y1, x1, 1e9, block=(2, 3))  # blocks, infinite radius: the global ETKF
    np.testing.assert_allclose(letkf(E, yv, err, idx, localizer=wide), etkf(E, yv, err, idx), atol=1e-10)
    # more members than local obs (observation-space branch) with blocks of points
    E30 = rng.standard_normal((30, C * G))
    np.testing.assert_allclose(letkf(E30, yv, err, idx, localizer=wide), etkf(E30, yv, err, idx), atol=1e-10)
    # great-circle metric from lat/lon grids
    lat, lon = np.meshgrid(40 + 0.1 * np.arange(Y), -30 + 0.1 * np.arange(X), indexing="ij")
    gc = grid_localizer(y1, x1, 20.0, lat=lat, lon=lon)
    assert gc.metric == "great_circle"
    ref = _letkf_reference(E, yv, err, idx, gc.coords, gc.coords[idx % G], 20.0, "great_circle", None)
    np.testing.assert_allclose(letkf(E, yv, err, idx, localizer=gc), ref, atol=1e-10)


def test_operators_nan_obs_and_callable():
    rng = np.random.default_rng(6)
    N, n = 10, 8
    E = rng.standard_normal((N, n))
    idx = np.array([1, 4, 6])
    y = np.array([0.3, np.nan, -0.2])
    err = np.array([0.5, 0.5, 0.5])
    ref = etkf(E, y[[0, 2]], err[[0, 2]], idx[[0, 2]])
    np.testing.assert_allclose(etkf(E, y, err, idx), ref, atol=1e-12)
    Hm = sp.csr_matrix((np.ones(3), (np.arange(3), idx)), shape=(3, n))
    np.testing.assert_allclose(etkf(E, y, err, Hm), ref, atol=1e-12)
    obs = Observations(y, err, lambda ens: ens[:, idx], coords=np.array([[1.0], [4.0], [6.0]]))
    np.testing.assert_allclose(etkf(E, obs), ref, atol=1e-12)
    loc = ring_localizer(n, 2.0)
    np.testing.assert_allclose(letkf(E, obs, localizer=loc), letkf(E, y, err, idx, localizer=loc), atol=1e-12)
    # a nonlinear operator: the analysis moves the observed quantity towards y
    obs2 = Observations(np.array([2.0]), np.array([0.1]), lambda ens: (ens[:, :1] ** 2))
    Ea = etkf(E, obs2)
    assert abs(np.mean(Ea[:, 0] ** 2) - 2.0) < abs(np.mean(E[:, 0] ** 2) - 2.0)


def test_nonfinite_members_are_reported_and_replaced():
    rng = np.random.default_rng(7)
    E = rng.standard_normal((8, 5))
    E[3, 2] = np.nan
    E[5] = np.inf
    with pytest.warns(RuntimeWarning, match=r"\[3, 5\]"):
        R1 = repair_members(E, np.random.default_rng(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        R2 = repair_members(E, np.random.default_rng(0))
    assert np.isfinite(R1).all()
    np.testing.assert_array_equal(R1, R2)  # randomness only from the passed generator
    np.testing.assert_array_equal(R1[[0, 1, 2, 4, 6, 7]], E[[0, 1, 2, 4, 6, 7]])
    with pytest.warns(RuntimeWarning):
        Ea = etkf(E, np.array([0.0]), np.array([1.0]), np.array([0]), rng=1)
    assert np.isfinite(Ea).all()
    bad = np.full((4, 3), np.nan)
    bad[0] = 1.0
    with pytest.raises(DataValidationError):
        repair_members(bad)


def test_inflation_rtps_rtpp_closed_forms():
    rng = np.random.default_rng(8)
    Ef = rng.standard_normal((30, 6)) * 2 + 1
    Ea = 0.3 * (Ef - Ef.mean(0)) + 0.5
    np.testing.assert_allclose(inflate(Ef, 1.3).mean(0), Ef.mean(0))
    np.testing.assert_allclose(inflate(Ef, 1.3).std(0), 1.3 * Ef.std(0))
    out = rtps(Ea, Ef, 0.6)
    np.testing.assert_allclose(out.std(0, ddof=1), 0.6 * Ef.std(0, ddof=1) + 0.4 * Ea.std(0, ddof=1))
    np.testing.assert_allclose(out.mean(0), Ea.mean(0))
    out = rtpp(Ea, Ef, 0.25)
    np.testing.assert_allclose(out - out.mean(0), 0.75 * (Ea - Ea.mean(0)) + 0.25 * (Ef - Ef.mean(0)))


def test_adaptive_inflation_recovers_true_factor():
    # Innovations whose covariance is lambda * HPH^T + R: the estimate must find lambda.
    rng = np.random.default_rng(9)
    N, p, lam = 30, 400, 1.5
    Ys = rng.standard_normal((N, p)) * 0.8
    Ys -= Ys.mean(0)
    hph = (Ys**2).sum(0) / (N - 1)
    ests = []
    ad = AdaptiveInflation(smoothing=0.2, max_factor=3.0)
    for _ in range(200):
        d = rng.standard_normal(p) * np.sqrt(lam * hph + 1.0)
        ests.append(innovation_inflation_estimate(d, Ys))
        ad.update(d, Ys)
    assert np.mean(ests) == pytest.approx(lam, rel=0.05)
    assert ad.factor == pytest.approx(np.sqrt(lam), rel=0.05)


def test_enoi_is_optimal_interpolation_with_the_scaled_library_covariance():
    rng = np.random.default_rng(10)
    n, M = 5, 40
    lib = rng.standard_normal((M, n)) @ rng.standard_normal((n, n))
    xb = rng.standard_normal(n)
    idx = np.array([0, 3])
    err = np.array([0.4, 0.7])
    y = rng.standard_normal(2)
    alpha = 0.6
    A = lib - lib.mean(0)
    B = alpha * A.T @ A / (M - 1)
    Hm = np.eye(n)[idx]
    xa = xb + B @ Hm.T @ np.linalg.solve(Hm @ B @ Hm.T + np.diag(err**2), y - Hm @ xb)
    np.testing.assert_allclose(enoi(xb, lib, y, err, idx, alpha=alpha, return_ensemble=False), xa, atol=1e-10)
    Ea = enoi(xb, lib, y, err, idx, alpha=alpha)
    assert Ea.shape == (M, n)
    # localised EnOI with an infinite radius is the same
    loc = Localizer(np.arange(n, dtype=float), 1e9)
    np.testing.assert_allclose(enoi(xb, lib, y, err, idx, alpha=alpha, localizer=loc).mean(0), xa, atol=1e-10)
