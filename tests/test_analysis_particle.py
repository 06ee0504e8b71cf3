"""Particle-filter update with a learned likelihood: closed form for an exact Gaussian likelihood,
degeneracy warning and tempering."""

import warnings

import numpy as np
import pytest

from oceanda.analysis.particle import particle_update
from oceanda.analysis.posterior import DegenerateWeightsWarning


def test_particle_update_is_the_bayes_update_of_the_prior_ensemble():
    """Prior members x ~ N(0, 1) (2-D), likelihood N(y; x, s^2): embeddings x / s and y / s with the
    negative squared distance at tau = 1 give the exact likelihood ratio, so the weighted mean and
    variance are y / (1 + s^2) and s^2 / (1 + s^2)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40000, 2))
    s = 0.8
    y = np.array([0.7, -1.2])
    up = particle_update(x, x / s, y / s, kind="neg_sq_distance", tau=1.0, resample_members=500, rng=rng)
    np.testing.assert_allclose(up.mean, y / (1 + s * s), atol=0.02)
    np.testing.assert_allclose(up.variance, s * s / (1 + s * s), rtol=0.04)
    np.testing.assert_allclose(up.weights.sum(), 1.0)
    assert up.members.shape == (500, 2) and up.ess > 5000
    np.testing.assert_allclose(up.members.mean(axis=0), up.mean, atol=0.08)


def test_degenerate_weights_warn_and_tempering_restores_the_ess():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 10))
    y = rng.normal(size=10)
    with pytest.warns(DegenerateWeightsWarning):
        up = particle_update(x, x / 0.05, y / 0.05, kind="neg_sq_distance")
    assert up.ess < 20
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        up = particle_update(x, x / 0.05, y / 0.05, kind="neg_sq_distance", tempering=True, min_ess=40)
    assert up.ess >= 40 and up.tau > 1.0
