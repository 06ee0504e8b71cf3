"""The fast engine's compiled loops against their definitions (brute force, float64)."""

import numpy as np
import pytest

from oceanda.analysis.kernels import (CUT_BINS_PER_OCTAVE, _exp_row, exp_mass_cut, mass_cut, ranked_picks, ranked_picks_affine,
                                      relative_sums)
from oceanda.analysis.local_mode import ranked_quantiles_rows


def _smallest_kept_set(e: np.ndarray, keep: float) -> np.ndarray:
    """The exact rule: drop the smallest weights while what is dropped stays within 1 - keep of the total."""
    o = np.argsort(e, kind="stable")
    dropped = np.cumsum(e[o].astype(np.float64))
    n_drop = int(np.searchsorted(dropped, (1 - keep) * e.sum(dtype=np.float64), side="right"))
    keep_mask = np.ones(e.size, bool)
    keep_mask[o[:n_drop]] = False
    return keep_mask


@pytest.mark.parametrize("keep", [0.9, 0.999, 1.0])
def test_mass_cut_keeps_the_mass_a_superset_of_the_smallest_set_and_cuts_within_a_bin(keep):
    rng = np.random.default_rng(3)
    rows = [rng.normal(size=5000) * 3, rng.normal(size=30000), np.r_[np.zeros(10) + 12, rng.normal(size=4000)],
            np.full(777, 0.5), rng.gumbel(size=2000) * 8]
    Q, N = len(rows), max(len(r) for r in rows)
    L = np.full((Q, N), -np.inf)
    for q, r in enumerate(rows):
        L[q, :len(r)] = r
    E = np.exp(L - L.max(axis=1, keepdims=True)).astype(np.float32)
    E0 = E.copy()
    total, z2, zk, count, cut = mass_cut(E, keep)
    e64 = E0.astype(np.float64)
    np.testing.assert_allclose(total, e64.sum(axis=1), rtol=1e-12)
    np.testing.assert_allclose(z2, (e64 ** 2).sum(axis=1), rtol=1e-12)
    for q in range(Q):
        kept = E[q] > 0
        np.testing.assert_array_equal(E[q][kept], E0[q][kept])  # kept weights untouched, the rest zeroed
        assert count[q] == kept.sum() and zk[q] == pytest.approx(e64[q, kept].sum(), rel=1e-12)
        assert zk[q] >= keep * total[q] * (1 - 1e-12)
        exact = _smallest_kept_set(E0[q], keep) & (E0[q] > 0)
        assert np.all(kept[exact])  # a superset of the smallest set
        if keep < 1 and (~exact & (E0[q] > 0)).any():
            t_exact = E0[q][exact].min()
            assert cut[q] <= t_exact and cut[q] * (1 + 1 / CUT_BINS_PER_OCTAVE) >= t_exact * (1 - 1e-6)


def test_exp_mass_cut_is_the_cut_of_the_exact_weights():
    """The fused exp: weights within 1.5e-7 per nat of float64 exp(L - m), then the very cut of :func:`mass_cut` on them."""
    rng = np.random.default_rng(9)
    L = np.vstack([rng.normal(size=20000) * 4, rng.gumbel(size=20000) * 10, np.full(20000, 2.5),
                   np.r_[np.zeros(5) + 40, rng.normal(size=19995) * 30]]).astype(np.float32)
    m = L.max(axis=1)
    exact = np.exp(L.astype(np.float64) - m[:, None].astype(np.float64))
    E = L.copy()
    got = exp_mass_cut(E, m, 0.999)
    live = exact > 1e-37  # below e^-87 a weight is e^-87 by design (it adds nothing a float64 sum sees)
    W = L.copy()
    for q in range(len(W)):
        _exp_row(W[q], m[q], np.empty(W.shape[1], np.int32))
    nats = np.abs(L.astype(np.float64) - m[:, None])[live]  # float32 rounding of the argument: ~1e-7 per nat
    assert np.all(np.abs(W[live] - exact[live]) <= exact[live] * (2e-7 + 1.5e-7 * nats))
    ref = mass_cut(W, 0.999)
    np.testing.assert_array_equal(E, W)
    for a, b in zip(got, ref):
        np.testing.assert_array_equal(a, b)
    assert np.all(got[2] >= 0.999 * got[0] * (1 - 1e-12))


def test_ranked_picks_are_the_reference_picks():
    """Against :func:`ranked_quantiles_rows` (float64 numpy): continuous positions, sparse weights, and ties."""
    rng = np.random.default_rng(5)
    P, n, bins = 7, 20000, 1024
    x = rng.uniform(0, bins, size=(P, n)).astype(np.float32)
    x[3] = np.floor(x[3])  # many equal positions: ties are broken by entry order
    w = rng.gamma(0.3, size=(P, n)).astype(np.float32)
    w[rng.random((P, n)) < 0.4] = 0
    q = np.sort(rng.random((P, 16)), axis=1)
    got = ranked_picks(x, w, q, bins)
    ref = ranked_quantiles_rows(x.astype(np.float64), w.astype(np.float64), w > 0, q, bins)
    np.testing.assert_array_equal(got, ref)
    for p in range(P):  # the definition: weighted entries by position (stable), first cumulative share past q
        o = np.argsort(x[p], kind="stable")
        o = o[w[p, o] > 0]
        c = np.cumsum(w[p, o].astype(np.float64)) / w[p].sum(dtype=np.float64)
        np.testing.assert_array_equal(got[p], o[np.minimum(np.searchsorted(c, q[p], side="right"), len(o) - 1)])


def test_affine_picks_are_the_picks_of_the_positions_product():
    """Positions ``coef @ rows`` made per row in the kernel: the picks of the same float32 product made in numpy."""
    rng = np.random.default_rng(8)
    P, K, n, bins = 5, 4, 9000, 2048
    rows = np.vstack([rng.normal(size=(K - 1, n)), np.ones((1, n))]).astype(np.float32)
    coef = np.hstack([rng.uniform(50, 200, size=(P, K - 1)), rng.uniform(900, 1100, size=(P, 1))]).astype(np.float32)
    x = coef[:, :1] * rows[0]
    for k in range(1, K):
        x = x + coef[:, k:k + 1] * rows[k]  # float32, k = 0..K-1 in order
    w = rng.gamma(0.5, size=(P, n)).astype(np.float32)
    w[rng.random((P, n)) < 0.3] = 0
    q = np.sort(rng.random((P, 12)), axis=1)
    np.testing.assert_array_equal(ranked_picks_affine(coef, rows, w, q, bins), ranked_picks(x.astype(np.float32), w, q, bins))


def test_warm_compiles_the_specialisations_a_fast_analysis_uses():
    """kernels.warm compiles with the engine's argument types: a fast local analysis then compiles nothing new."""
    from test_local_dense import _fast_case

    from oceanda.analysis import kernels
    from oceanda.analysis.local_mode import analyse_local

    kernels.warm().join()
    names = ("mass_cut", "exp_mass_cut", "ranked_picks_affine", "blend_scatter")
    before = {n: set(getattr(kernels, n).signatures) for n in names}
    assert all(before.values())
    wlib, embed, z, obs = _fast_case()
    analyse_local(obs, wlib, z, embed, rng=np.random.default_rng(0), kind="neg_sq_distance", tau=2.0, members=4,
                  coupling="copula", engine="dense", precision="fast")
    assert {n: set(getattr(kernels, n).signatures) for n in names} == before


def test_relative_sums_are_the_float64_sums_of_the_weights():
    """Sum, squares and the weight below each query's threshold, over 1000 rows (four float32 partial sums)."""
    rng = np.random.default_rng(4)
    L = (rng.standard_normal((1000, 7)) * 4).astype(np.float32)
    L[::97, 3] = -500.0  # far below: weight ~0 (floored at e^-87)
    t = rng.standard_normal(7).astype(np.float32)
    t[5] = L[10, 5]  # a row exactly at the threshold counts as kept, not below
    sums = np.full((3, 7), 0.5)  # added to, not overwritten
    relative_sums(L, t, sums)
    e = np.exp(L.astype(np.float64) - t)
    want = np.stack([e.sum(0), (e * e).sum(0), np.where(L < t, e, 0.0).sum(0)]) + 0.5
    np.testing.assert_allclose(sums, want, rtol=4e-6)


def test_relative_sums_exp_is_accurate_over_the_whole_range():
    """exp(d) for d from -87 to 38 nats (the relative pass's headroom) within 4e-6, one weight per row."""
    d = np.linspace(-87.0, 38.0, 40001).astype(np.float32)
    got = np.empty_like(d, dtype=np.float64)
    for i, x in enumerate(d[:, None, None]):
        s = np.zeros((3, 1))
        relative_sums(x, np.zeros(1, np.float32), s)
        got[i] = s[0, 0]
    np.testing.assert_allclose(got, np.exp(d.astype(np.float64)), rtol=4e-6)
