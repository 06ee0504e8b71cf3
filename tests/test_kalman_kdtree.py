"""LETKF local weights from the KD-tree: the same lists and weights as every distance (brute force), and cached."""

from __future__ import annotations

import numpy as np
import pytest

from oceanda.kalman import Localizer, grid_localizer, letkf
from oceanda.kalman import localization as loc_module

Y = (np.arange(24) + 0.5) * 1000.0 / 24  # a 1000 km box of 24 x 24 points


def _same(a, b):
    np.testing.assert_array_equal(a.count, b.count)
    np.testing.assert_array_equal(a.index, b.index)
    np.testing.assert_array_equal(a.weight, b.weight)  # the same arithmetic on the same pairs: bit for bit


def _planar_obs(rng, p=150):
    # off-grid points, some outside the box (wrapped by the periodic metric), and some exactly on grid points
    pts = rng.uniform(-80.0, 1080.0, (p, 2))
    pts[:20] = np.c_[np.repeat(Y[:5], 4), np.tile(Y[:4], 5)]
    return pts


@pytest.mark.parametrize("block", [1, 3])
@pytest.mark.parametrize("period", [(1000.0, 1000.0), None, (None, 1000.0)])
@pytest.mark.parametrize("taper", ["gaspari_cohn", "boxcar", "gaussian"])
def test_tree_weights_equal_the_brute_force_on_planar_grids(block, period, taper):
    rng = np.random.default_rng(7)
    loc = grid_localizer(Y, Y, 60.0, taper=taper, period=period, block=block)
    obs = _planar_obs(rng)
    tree, brute = loc.local_weights(obs, method="tree"), loc.local_weights(obs, method="brute")
    assert tree.count.sum() > 50 and tree.count.max() > 5
    _same(tree, brute)
    if period == (1000.0, 1000.0) and block == 1:  # an observation across the periodic boundary is seen
        wrap = loc.local_weights(np.array([[5.0, 995.0]]), method="tree")
        assert wrap.count[0] == 1


@pytest.mark.parametrize("block", [1, 2])
@pytest.mark.parametrize("radius", [300.0, 1500.0, 30000.0])  # up to a reach covering the whole sphere
def test_tree_weights_equal_the_brute_force_on_lat_lon(block, radius):
    rng = np.random.default_rng(3)
    lat, lon = np.linspace(-75.0, 85.0, 18), np.linspace(0.0, 350.0, 36)
    LA, LO = np.meshgrid(lat, lon, indexing="ij")
    loc = grid_localizer(lat, lon, radius, lat=LA, lon=LO, block=block)
    obs = np.c_[rng.uniform(-90.0, 90.0, 200), rng.uniform(-180.0, 360.0, 200)]  # longitudes of both conventions
    obs[:3] = [[90.0, 0.0], [-90.0, 10.0], [0.0, 359.99]]
    tree, brute = loc.local_weights(obs, method="tree"), loc.local_weights(obs, method="brute")
    assert tree.count.sum() > 0
    _same(tree, brute)


def test_tree_weights_on_a_ring_and_with_no_observations():
    ring = loc_module.ring_localizer(40, 5.0)
    obs = np.array([0.0, 0.5, 39.5, 17.25, 40.0])
    _same(ring.local_weights(obs, method="tree"), ring.local_weights(obs, method="brute"))
    assert ring.local_weights(obs).count[39] == 4  # 39.5, 0.0 (= 40.0) and 0.5 wrap around; 17.25 is out of reach
    none = grid_localizer(Y, Y, 60.0).local_weights(np.zeros((0, 2)))
    assert none.count.sum() == 0


def test_letkf_with_the_tree_is_the_letkf_of_the_brute_force():
    rng = np.random.default_rng(0)
    E = rng.standard_normal((12, 2 * Y.size ** 2))
    H = rng.choice(Y.size ** 2, 90, replace=False)
    y = rng.standard_normal(90)
    loc = grid_localizer(Y, Y, 60.0, period=(1000.0, 1000.0), block=2)
    brute = grid_localizer(Y, Y, 60.0, period=(1000.0, 1000.0), block=2)
    brute.local_weights = lambda c: Localizer.local_weights(brute, c, method="brute")
    np.testing.assert_array_equal(letkf(E, y, 0.5, H, localizer=loc), letkf(E, y, 0.5, H, localizer=brute))


def test_weights_are_reused_while_the_pattern_is_unchanged_and_recomputed_when_it_changes(monkeypatch):
    loc = grid_localizer(Y, Y, 60.0, period=(1000.0, 1000.0))
    rng = np.random.default_rng(1)
    a, b = _planar_obs(rng), _planar_obs(rng)
    calls = []
    real = Localizer._tree_weights
    monkeypatch.setattr(Localizer, "_tree_weights", lambda self, c: calls.append(1) or real(self, c))
    first = loc.local_weights(a)
    assert loc.local_weights(a.copy()) is first and len(calls) == 1  # the same pattern, another array: reused
    other = loc.local_weights(b)
    assert len(calls) == 2 and not np.array_equal(other.count, first.count)
    _same(other, loc.local_weights(b, method="brute"))
    assert loc.local_weights(a) is first and len(calls) == 2  # a repeating pattern (e.g. an orbit) is still known
    moved = a.copy()
    moved[5, 0] += 30.0  # one observation moved: a new pattern
    assert loc.local_weights(moved) is not first and len(calls) == 3
    _same(loc.local_weights(moved), loc.local_weights(moved, method="brute"))
    a[:] = 0.0  # the caller reusing its array does not corrupt what was cached
    assert loc.local_weights(b) is other
    loc.clear_cache()
    assert loc.local_weights(b) is not other and len(calls) == 4


def test_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(loc_module, "CACHE_ENTRIES", 3)
    loc = grid_localizer(Y, Y, 60.0)
    pats = [np.array([[100.0 + k, 200.0]]) for k in range(5)]
    for p in pats:
        loc.local_weights(p)
    assert len(loc._cache) == 3
    monkeypatch.setattr(loc_module, "CACHE_BYTES", 1)
    loc.local_weights(pats[0])
    assert len(loc._cache) == 1  # the latest is always kept


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="method"):
        grid_localizer(Y, Y, 60.0).local_weights(np.zeros((1, 2)), method="fast")
