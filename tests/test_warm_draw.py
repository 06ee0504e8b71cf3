"""The warm start's draw of N members from an M-member analysis (issue 15): ``matched`` and ``resampled``."""

from __future__ import annotations

import numpy as np
import pytest

from oceanda.errors import ConfigurationError
from oceanda.experiments.qg_cycle import CycleChoice, matched_members, resample_members, warm_members


@pytest.fixture
def analysis():
    """40 correlated members of 300 elements, one of them constant (no spread)."""
    g = np.random.default_rng(7)
    E = g.normal(size=(40, 300)) @ np.triu(np.ones((300, 300))) / 10.0 + np.linspace(-1, 1, 300)
    E[:, 5] = 2.5
    return E


def test_matched_draw_has_the_analysis_mean_and_spread(analysis):
    X = matched_members(analysis, 10, np.random.default_rng(0))
    assert X.shape == (10, 300)
    np.testing.assert_allclose(X.mean(0), analysis.mean(0), atol=1e-12)
    np.testing.assert_allclose(X.std(0, ddof=1), analysis.std(0, ddof=1), rtol=1e-10, atol=1e-12)
    assert np.all(X[:, 5] == 2.5)  # no spread in the analysis: none in the draw


def test_matched_draw_keeps_the_draws_correlations(analysis):
    """Each element's anomalies are the resampled draw's times one positive factor: correlations unchanged."""
    R = resample_members(analysis, 10, np.random.default_rng(3))
    X = matched_members(analysis, 10, np.random.default_rng(3))
    a, b = R - R.mean(0), X - X.mean(0)
    keep = np.abs(a).sum(0) > 0
    factor = b[:, keep] / np.where(a[:, keep] != 0, a[:, keep], np.nan)
    np.testing.assert_allclose(np.nanmax(factor, 0), np.nanmin(factor, 0), rtol=1e-9)
    assert np.nanmin(factor) > 0
    np.testing.assert_allclose(np.corrcoef(R[:, keep].T), np.corrcoef(X[:, keep].T), atol=1e-9)


def test_resampled_draw_is_analysis_members(analysis):
    X = warm_members(analysis, 10, np.random.default_rng(1), "resampled")
    rows = {r.tobytes() for r in analysis}
    assert all(x.tobytes() in rows for x in X) and len({x.tobytes() for x in X}) == 10


def test_draws_are_deterministic_and_fewer_source_members_are_drawn_with_replacement(analysis):
    a = warm_members(analysis, 10, np.random.default_rng(5))
    assert np.array_equal(a, warm_members(analysis, 10, np.random.default_rng(5)))
    X = matched_members(analysis[:4], 10, np.random.default_rng(2))  # 4 members for 10: with replacement
    np.testing.assert_allclose(X.mean(0), analysis[:4].mean(0), atol=1e-12)
    one = matched_members(analysis[:1], 3, np.random.default_rng(2))  # no spread to match: the member itself
    np.testing.assert_allclose(one, np.repeat(analysis[:1], 3, axis=0), atol=1e-12)


def test_an_unknown_draw_is_refused_naming_it():
    with pytest.raises(ConfigurationError, match="warm_draw"):
        CycleChoice(members=10, warm_draw="shuffled").check(has_model=False)
    with pytest.raises(ConfigurationError, match="warm_draw"):
        warm_members(np.zeros((3, 2)), 2, np.random.default_rng(0), "shuffled")
