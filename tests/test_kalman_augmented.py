"""Hybrid covariance by augmentation: the formula, beta = 0 bit for bit, the Kalman mean in closed form."""

from __future__ import annotations

import numpy as np
import pytest

from oceanda.errors import ConfigurationError, DataValidationError
from oceanda.kalman import ETKF, LETKF, EnKF, Observations, cycle, grid_localizer, selection_operator
from oceanda.kalman.augmented import augmented_ensemble, hybrid_assimilate

NY = NX = 6
G = NY * NX


def _ensembles(seed: int = 0, N: int = 8, M: int = 12, n: int = 2 * G):
    g = np.random.default_rng(seed)
    E = g.standard_normal((N, n)) + 3.0
    X = 2.0 * g.standard_normal((M, n)) - 1.0
    return E, X, g


def _obs(g: np.random.Generator, n: int = 2 * G, p: int = 10) -> Observations:
    idx = np.sort(g.choice(G, size=p, replace=False))  # the first channel only
    return Observations(g.standard_normal(p), np.full(p, 0.5), selection_operator(idx, n), time=1.0)


def _localizer(radius: float) -> object:
    c = np.arange(NY, dtype=float) * 10.0
    return grid_localizer(c, c, radius, period=(NY * 10.0, NX * 10.0))


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9])
def test_augmented_covariance_is_the_blend(beta):
    E, X, _ = _ensembles()
    Z, cf = augmented_ensemble(E, X, beta)
    assert Z.shape == (20, E.shape[1])
    np.testing.assert_allclose(Z.mean(0), E.mean(0), atol=1e-12)
    want = (1 - beta) * np.cov(E.T) + beta * np.cov(X.T)
    np.testing.assert_allclose(np.cov(Z.T), want, atol=1e-10)
    assert cf == pytest.approx(np.sqrt((1 - beta) * 19 / 7))


@pytest.mark.parametrize("filt", [ETKF(inflation=1.05, rtps=0.3), LETKF(radius=25.0, inflation=1.02)])
def test_beta_zero_is_the_plain_filter_bit_for_bit(filt):
    E, X, g = _ensembles(1)
    obs = _obs(g)
    loc = _localizer(25.0) if isinstance(filt, LETKF) else None
    plain = filt.assimilate(E, obs, np.random.default_rng(3), loc)
    got = hybrid_assimilate(filt, E, obs, X, 0.0, np.random.default_rng(3), loc)
    assert np.array_equal(plain, got)


def test_cycle_with_beta_zero_equals_the_plain_cycle():
    E, X, g = _ensembles(2)
    obs = [_obs(g), _obs(g)]
    obs[1].time = 2.0
    f, loc = LETKF(radius=25.0, inflation=1.03), _localizer(25.0)
    fc = lambda E, t0, t1: 0.9 * E  # noqa: E731
    a = cycle(fc, E, obs, f, localizer=loc, rng=4)
    b = cycle(fc, E, obs, f, localizer=loc, rng=4, extra=lambda k, Ef: X, hybrid_beta=0.0)
    assert np.array_equal(a.ensemble, b.ensemble)
    c = cycle(fc, E, obs, f, localizer=loc, rng=4, extra=lambda k, Ef: X, hybrid_beta=0.3)
    assert not np.allclose(a.ensemble, c.ensemble)


@pytest.mark.parametrize("beta", [0.2, 0.6])
def test_etkf_mean_is_the_kalman_mean_of_the_blended_covariance(beta):
    E, X, g = _ensembles(5, N=6, M=30, n=G)
    obs = _obs(g, n=G, p=8)
    Ea = hybrid_assimilate(ETKF(inflation=1.1), E, obs, X, beta)
    xm = E.mean(0)
    Ef = xm + 1.1 * (E - xm)
    P = (1 - beta) * np.cov(Ef.T) + beta * np.cov(X.T)
    H = obs.H.toarray() if hasattr(obs.H, "toarray") else np.asarray(obs.H)
    K = P @ H.T @ np.linalg.inv(H @ P @ H.T + np.diag(obs.error ** 2))
    np.testing.assert_allclose(Ea.mean(0), xm + K @ (obs.y - H @ xm), atol=1e-9)
    assert Ea.shape == E.shape


def test_kept_members_are_centred_on_the_augmented_analysis():
    """LETKF with an infinite radius = ETKF: both on the augmented ensemble, both keep the same N members."""
    E, X, g = _ensembles(6)
    obs = _obs(g)
    a = hybrid_assimilate(ETKF(), E, obs, X, 0.3)
    b = hybrid_assimilate(LETKF(radius=1e9), E, obs, X, 0.3, localizer=_localizer(1e9))
    np.testing.assert_allclose(a, b, atol=1e-8)
    # the forecast block of the symmetric transform sums to zero: the kept anomalies are the filter's own
    Z, cf = augmented_ensemble(E, X, 0.3)
    Za = ETKF().assimilate(Z, obs)
    np.testing.assert_allclose(Za[:8].mean(0), Za.mean(0), atol=1e-10)
    np.testing.assert_allclose(a - a.mean(0), (Za[:8] - Za.mean(0)) / cf, atol=1e-10)


def test_enkf_members_are_recentred():
    E, X, g = _ensembles(7)
    Ea = hybrid_assimilate(EnKF(), E, _obs(g), X, 0.4, rng=1)
    assert Ea.shape == E.shape and np.isfinite(Ea).all()


@pytest.mark.parametrize("beta", [1.0, -0.1, float("nan")])
def test_beta_out_of_range_is_refused(beta):
    E, X, g = _ensembles()
    with pytest.raises(ConfigurationError, match="hybrid_beta"):
        hybrid_assimilate(ETKF(), E, _obs(g), X, beta)


@pytest.mark.parametrize("bad", [np.zeros((1, 2 * G)), np.zeros((4, 5)), np.full((4, 2 * G), np.nan)])
def test_bad_extra_members_are_refused(bad):
    E, _, g = _ensembles()
    with pytest.raises(DataValidationError, match="extra members"):
        hybrid_assimilate(ETKF(), E, _obs(g), bad, 0.2)
