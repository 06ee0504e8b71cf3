"""The window search against brute force: exact candidates, float32 scores, IVF kept mass."""

import numpy as np
import pytest

from oceanda.analysis.posterior import softmax_weights, truncate
from oceanda.analysis.search import WindowIndex, mass_threshold
from oceanda.contrastive.similarity import numpy_scores


@pytest.mark.parametrize("kind", ["neg_sq_distance", "cosine", "inner"])
def test_exact_search_keeps_the_smallest_set_truncate_keeps(kind):
    rng = np.random.default_rng(0)
    z, zo = rng.normal(size=(3000, 8)), rng.normal(size=(5, 8))
    res = WindowIndex(z, kind, 0.5, "exact").search(zo, keep_mass=0.99)
    L = numpy_scores(z, zo, kind, 0.5)
    for q in range(5):
        tr = truncate(softmax_weights(L[:, q]), 0.99)
        k, w = res.candidates(q)
        assert set(k) == set(tr.indices) and len(k) < 3000
        np.testing.assert_allclose(w[np.argsort(k)], tr.weights[np.argsort(tr.indices)], rtol=1e-12)
        assert res.kept_mass[q] == pytest.approx(1 - tr.dropped_mass, abs=1e-12) and res.kept_mass[q] >= 0.99


@pytest.mark.parametrize("kind", ["neg_sq_distance", "cosine", "inner"])
def test_flat_float32_search_gives_the_brute_force_top_candidates(kind):
    rng = np.random.default_rng(1)
    z, zo = rng.normal(size=(4000, 16)).astype(np.float32), rng.normal(size=(6, 16)).astype(np.float32)
    flat = WindowIndex(z, kind, 1.0, "flat").search(zo, keep_mass=0.9)
    L = numpy_scores(z, zo, kind, 1.0)
    np.testing.assert_allclose(flat.logits, L, rtol=1e-5, atol=1e-4)
    for q in range(6):
        k, _ = flat.candidates(q)
        assert set(np.argsort(-L[:, q])[:max(len(k) - 2, 1)]) <= set(k)  # all but the boundary: float32 rounding
        assert softmax_weights(L[:, q])[k].sum() >= 0.9 - 1e-5


def test_mass_threshold_caps_and_keeps_all_at_mass_one():
    L = np.random.default_rng(2).normal(size=(500, 3))
    thr, kept, _ = mass_threshold(L, 0.999, max_keep=40)
    assert ((L >= thr).sum(axis=0) == 40).all() and (kept < 0.999).all()
    thr, kept, _ = mass_threshold(L, 1.0)
    assert ((L >= thr).sum(axis=0) == 500).all()
    np.testing.assert_allclose(kept, 1.0)


def test_ivf_keeps_99_percent_of_the_mass_on_clustered_embeddings():
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(40, 16)) * 4
    lab = rng.integers(0, 40, size=20000)
    z = (centres[lab] + rng.normal(size=(20000, 16))).astype(np.float32)
    zo = (centres[rng.integers(0, 40, size=16)] + rng.normal(size=(16, 16))).astype(np.float32)
    ivf = WindowIndex(z, "neg_sq_distance", 2.0, "ivf", nlist=64)
    res = ivf.search(zo, keep_mass=0.999, search_mass=0.995)
    W = softmax_weights(numpy_scores(z, zo, "neg_sq_distance", 2.0))
    true_kept = np.array([W[res.candidates(q)[0], q].sum() for q in range(16)])
    assert true_kept.min() >= 0.99
    assert res.nprobe.max() < ivf.nlist  # it did prune
    np.testing.assert_allclose(res.kept_mass, true_kept, atol=0.01)  # the estimate is close
    assert (res.recall <= 1).all() and (res.recall > 0.98).all()


def _exact_and_fused(z, zo, kind, tau, keep=0.999):
    return (WindowIndex(z, kind, tau, "exact").search(zo, keep), WindowIndex(z, kind, tau, "fused").search(zo, keep),
            numpy_scores(z, zo, kind, tau))


@pytest.mark.parametrize("kind,tau", [("cosine", 0.1), ("neg_sq_distance", 2.0), ("inner", 0.5), ("cosine", 1e-3)])
def test_fused_keeps_the_exact_set_plus_a_boundary_band_and_its_exact_mass(kind, tau):
    rng = np.random.default_rng(4)  # 20000 rows > the pilot: its thresholds are sampled; tau 1e-3: unbounded logits
    z, zo = rng.normal(size=(20000, 16)).astype(np.float32), rng.normal(size=(6, 16)).astype(np.float32)
    ex, fu, L = _exact_and_fused(z, zo, kind, tau)
    W = softmax_weights(L)
    np.testing.assert_allclose(fu.logits, L, rtol=1e-5, atol=2e-5 / min(tau, 1.0))
    np.testing.assert_allclose(fu.log_total, ex.log_total, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(fu.ess, ex.ess, rtol=1e-4)
    for q in range(6):
        ke, _ = ex.candidates(q)
        kf, wf = fu.candidates(q)
        assert set(ke) <= set(kf)  # the smallest set, then the band between the thresholds
        band = np.setdiff1d(kf, ke)
        assert (L[band, q] <= L[ke, q].min() + 1e-4).all()
        assert W[band, q].sum() <= 1e-3  # the band is worth less than what may be dropped
        assert fu.kept_mass[q] == pytest.approx(W[kf, q].sum(), abs=2e-6) and W[kf, q].sum() >= 0.999 - 1e-6
        np.testing.assert_allclose(wf, W[kf, q] / W[kf, q].sum(), rtol=2e-4)  # float32 logits, float64 weights


def _hidden_from_the_pilot(n: int, pilot_size: int):
    """Embeddings whose evenly spaced pilot rows see logits 0 .. 10 and miss the rest, all at logit 2 (> 0.5 %)."""
    step = n // pilot_size  # the pilot reads rows step // 2, step // 2 + step, ...
    pilot = np.zeros(n, bool)
    pilot[step // 2::step] = True
    z = np.zeros((n, 2), np.float32)
    z[pilot, 0] = np.linspace(0.0, 10.0, pilot.sum())
    z[~pilot, 0] = 2.0  # the hidden rows: about 1 % of the weight, below the pilot's threshold
    return z, np.array([[1.0, 0.0]], np.float32), pilot


def test_fused_redoes_exactly_a_query_whose_pilot_missed_the_mass():
    z, zo, pilot = _hidden_from_the_pilot(40000, 8192)
    ex, fu, L = _exact_and_fused(z, zo, "inner", 1.0)
    W = softmax_weights(L)[:, 0]
    kf, _ = fu.candidates(0)
    assert W[~pilot].sum() > 0.005 and W[kf].sum() >= 0.999 - 1e-9
    assert fu.kept_mass[0] == pytest.approx(W[kf].sum(), abs=1e-6)
    assert set(kf) == set(ex.candidates(0)[0])  # redone by the exact rule


def test_fused_caps_and_keeps_everything_at_mass_one():
    rng = np.random.default_rng(6)
    z, zo = rng.normal(size=(12000, 8)).astype(np.float32), rng.normal(size=(3, 8)).astype(np.float32)
    index = WindowIndex(z, "cosine", 0.2, "fused")
    res = index.search(zo, 0.999, max_keep=50)
    assert ((res.logits >= res.threshold[None]).sum(axis=0) == 50).all() and (res.kept_mass < 0.999).all()
    res = index.search(zo, 1.0)
    assert ((res.logits >= res.threshold[None]).sum(axis=0) == 12000).all()
    np.testing.assert_allclose(res.kept_mass, 1.0)


def test_fused_reuses_its_logits_only_when_no_result_holds_them():
    rng = np.random.default_rng(7)
    z, zo = rng.normal(size=(9000, 8)).astype(np.float32), rng.normal(size=(2, 4, 8)).astype(np.float32)
    index = WindowIndex(z, "cosine", 0.1, "fused")
    first = index.search(zo[0], 0.999)
    kept = first.logits.copy()
    second = index.search(zo[1], 0.999)
    np.testing.assert_array_equal(first.logits, kept)  # still held: not overwritten
    assert not np.shares_memory(first.logits, second.logits)
    again = second.logits[:, 0]  # a view holds the array too
    del first, second
    third = index.search(zo[0], 0.999)
    assert not np.shares_memory(third.logits, again)
    np.testing.assert_array_equal(third.logits, kept)  # same numbers from a reused or a fresh array


def test_auto_is_exact_below_the_threshold_and_fused_above(monkeypatch):
    import oceanda.analysis.search as search

    z = np.random.default_rng(8).normal(size=(3000, 4))
    assert WindowIndex(z, "cosine", 0.1).method == "exact"  # the bundled sample (26k windows): the float64 path
    monkeypatch.setattr(search, "EXACT_BELOW", 1000)
    assert WindowIndex(z, "cosine", 0.1).method == "fused"


@pytest.mark.parametrize("kind", ["cosine", "neg_sq_distance", "inner"])
def test_exact_search_scores_numpy_scores_bit_for_bit_and_dense_weights_are_the_candidates(kind):
    rng = np.random.default_rng(11)
    z, zo = rng.normal(size=(3000, 8)).astype(np.float32), rng.normal(size=(9, 8)).astype(np.float32)
    ix = WindowIndex(z, kind, 0.5, "exact")
    for _ in range(2):  # the prepared rows are reused
        res = ix.search(zo, 0.999)
        np.testing.assert_array_equal(res.logits, numpy_scores(z, zo, kind=kind, tau=0.5))
    W, mask = res.dense_weights(len(z))
    for q in range(len(zo)):
        k, w = res.candidates(q)
        np.testing.assert_array_equal(np.flatnonzero(mask[q]), k)
        np.testing.assert_allclose(W[q, k], w, rtol=1e-13, atol=0)
        assert W[q, ~mask[q]].max(initial=0.0) == 0.0


def _rows(index, zo, keep, max_keep=None):
    res = index.search_rows32(zo, keep, max_keep)
    return res, res.weights.numpy().astype(np.float64) / res.total[:, None]


@pytest.mark.parametrize("kind,tau", [("cosine", 0.1), ("neg_sq_distance", 2.0), ("inner", 0.5)])
def test_rows_search_keeps_the_exact_set_plus_a_boundary_band_and_its_exact_mass(kind, tau):
    rng = np.random.default_rng(8)  # 20000 entries > the pilot's 2048: its thresholds are sampled
    z, zo = rng.normal(size=(20000, 16)).astype(np.float32), rng.normal(size=(6, 16)).astype(np.float32)
    ex = WindowIndex(z, kind, tau, "exact").search(zo, 0.999)
    res, Wr = _rows(WindowIndex(z, kind, tau, "exact"), zo, 0.999)
    W = softmax_weights(numpy_scores(z, zo, kind, tau)).T
    np.testing.assert_allclose(res.log_total, ex.log_total, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(res.ess, ex.ess, rtol=1e-4)
    for q in range(6):
        ke, kf = ex.candidates(q)[0], np.flatnonzero(Wr[q] > 0)
        assert set(ke) <= set(kf) and W[q, np.setdiff1d(kf, ke)].sum() <= 1e-3  # the band: under the allowed drop
        assert res.kept_mass[q] == pytest.approx(W[q, kf].sum(), abs=2e-6) and W[q, kf].sum() >= 0.999 - 1e-6
        np.testing.assert_allclose(Wr[q, kf], W[q, kf] / W[q, kf].sum(), rtol=2e-4)
        assert res.threshold[q] <= numpy_scores(z, zo, kind, tau)[kf, q].min() + 1e-4


def test_rows_search_weighs_every_entry_and_cuts_within_one_bin_of_the_exact_threshold():
    """Rows a sample of evenly spaced entries would miss (1 % of the weight at one logit) are weighed: the
    cut is the exact rule's to within one bin (a factor 1 + 1/32 at most), never above it."""
    from oceanda.analysis.kernels import CUT_BINS_PER_OCTAVE

    z, zo, pilot = _hidden_from_the_pilot(40000, 2048)
    index = WindowIndex(z, "inner", 1.0, "exact")
    res, Wr = _rows(index, zo, 0.999)
    W = softmax_weights(numpy_scores(z, zo, "inner", 1.0))[:, 0]
    kf = np.flatnonzero(Wr[0] > 0)
    ex = index.search(zo, 0.999)
    assert W[~pilot].sum() > 0.005 and W[kf].sum() >= 0.999 - 1e-6
    assert res.kept_mass[0] == pytest.approx(W[kf].sum(), abs=1e-6)
    assert set(ex.candidates(0)[0]) <= set(kf)
    assert ex.threshold[0] - np.log1p(1 / CUT_BINS_PER_OCTAVE) - 1e-5 <= res.threshold[0] <= ex.threshold[0] + 1e-5


def test_rows_search_caps_and_keeps_everything_at_mass_one():
    rng = np.random.default_rng(6)
    z, zo = rng.normal(size=(12000, 8)).astype(np.float32), rng.normal(size=(3, 8)).astype(np.float32)
    index = WindowIndex(z, "cosine", 0.2, "exact")
    res, Wr = _rows(index, zo, 0.999, max_keep=50)
    L = numpy_scores(z, zo, "cosine", 0.2)
    assert ((Wr > 0).sum(axis=1) == 50).all() and (res.kept_mass < 0.999).all()
    for q in range(3):
        assert set(np.flatnonzero(Wr[q] > 0)) == set(np.argsort(-L[:, q])[:50])
    res, Wr = _rows(index, zo, 1.0)
    assert (Wr > 0).all()
    np.testing.assert_allclose(res.kept_mass, 1.0)


@pytest.mark.parametrize("kind,tau", [("cosine", 0.1), ("neg_sq_distance", 2.0), ("inner", 0.5)])
def test_fused_weights_relative_to_the_thresholds_give_the_shifted_passs_numbers(kind, tau, monkeypatch):
    """The threshold-relative pass (one scalar threshold per block) against the base-2 shifted one."""
    import oceanda.analysis.search as S

    rng = np.random.default_rng(9)
    z, zo = rng.normal(size=(20000, 16)).astype(np.float32), rng.normal(size=(6, 16)).astype(np.float32)
    index = WindowIndex(z, kind, tau, "fused")
    calls = []
    monkeypatch.setattr(WindowIndex, "_fused_pass_relative", lambda self, *a, _f=WindowIndex._fused_pass_relative:
                        calls.append(1) or _f(self, *a))
    rel = index.search(zo, 0.999)
    assert calls  # the relative pass ran
    monkeypatch.setattr(S, "_REL_HEADROOM", -np.inf)  # every gap too large: the shifted pass
    old = index.search(zo, 0.999)
    assert len(calls) == 1
    for f in ("threshold", "log_total", "kept_mass", "ess"):
        np.testing.assert_allclose(getattr(rel, f), getattr(old, f), rtol=1e-6, atol=1e-9)
    for q in range(6):
        np.testing.assert_array_equal(rel.candidates(q)[0], old.candidates(q)[0])


def _low_rank_library(n: int, d: int, r: int, noise: float, seed: int = 5):
    """Embeddings that use ``r`` of their ``d`` dimensions (plus small isotropic noise), as trained ones do."""
    rng = np.random.default_rng(seed)
    B = np.linalg.qr(rng.normal(size=(d, r)))[0]
    z = rng.normal(size=(n, r)) @ B.T + noise * rng.normal(size=(n, d))
    zo = rng.normal(size=(12, r)) @ B.T + noise * rng.normal(size=(12, d))
    return z.astype(np.float32), zo.astype(np.float32)


@pytest.mark.parametrize("kind,tau", [("cosine", 0.1), ("neg_sq_distance", 2.0), ("inner", 0.5)])
def test_low_rank_search_stays_within_its_logit_bound_and_keeps_the_mass_it_reports(kind, tau, monkeypatch):
    from oceanda.analysis import search as S

    monkeypatch.setattr(S, "LOW_RANK_MIN", 1000)
    z, zo = _low_rank_library(20000, 48, 16, 2e-3)
    index = WindowIndex(z, kind, tau, "fused", logit_tol=0.05)
    assert index.low is not None and index.low.basis.shape[1] == 16  # the smallest rank that holds the rows
    res = index.search(zo, keep_mass=0.999)
    assert res.logit_error is not None and 0 < res.logit_error.max() <= 0.05
    L = numpy_scores(z, zo, kind, tau)
    err = np.abs(res.logits - L).max(axis=0)
    slack = 2e-5 * np.abs(L).max()  # float32 rounding, as the full rows' product has
    assert (err <= res.logit_error + slack).all() and err.max() > 0  # the low-rank rows were scored
    W = softmax_weights(L)
    true_kept = np.array([W[res.candidates(q)[0], q].sum() for q in range(len(zo))])
    assert (res.kept_mass >= 0.999).all() and (true_kept >= res.kept_mass - 1e-6).all()  # a guaranteed lower bound


def test_low_rank_search_scores_the_full_rows_for_queries_off_the_library_subspace(monkeypatch):
    from oceanda.analysis import search as S

    monkeypatch.setattr(S, "LOW_RANK_MIN", 1000)
    z, _ = _low_rank_library(20000, 48, 16, 1e-3)
    off = np.random.default_rng(6).normal(size=(4, 48)).astype(np.float32)
    index = WindowIndex(z, "cosine", 0.1, "fused")
    assert index.low is not None
    res = index.search(off, keep_mass=0.999)
    assert res.logit_error is None
    np.testing.assert_allclose(res.logits, numpy_scores(z, off, "cosine", 0.1), rtol=1e-5, atol=1e-4)


def test_no_low_rank_copy_for_a_library_that_uses_every_dimension(monkeypatch):
    from oceanda.analysis import search as S

    monkeypatch.setattr(S, "LOW_RANK_MIN", 1000)
    z = np.random.default_rng(7).normal(size=(5000, 48)).astype(np.float32)
    assert WindowIndex(z, "cosine", 0.1, "fused").low is None
    assert WindowIndex(z, "cosine", 0.1, "fused", logit_tol=0).low is None


@pytest.mark.parametrize("kind,tau", [("cosine", 0.1), ("neg_sq_distance", 2.0)])
def test_fused_search_on_several_threads_gives_the_one_thread_numbers_bit_for_bit(kind, tau, monkeypatch):
    """Blocks summed on 3 threads (runs of 2 blocks, taken in any order) against one thread, and the exact mass."""
    import oceanda.analysis.search as S

    monkeypatch.setattr(S, "_BLOCKS_PER_TASK", 2)
    rng = np.random.default_rng(12)
    z, zo = rng.normal(size=(45000, 16)).astype(np.float32), rng.normal(size=(5, 16)).astype(np.float32)
    one, three = WindowIndex(z, kind, tau, "fused", workers=1), WindowIndex(z, kind, tau, "fused", workers=3)
    calls = []
    monkeypatch.setattr(S, "_run_blocks", lambda fn, n, w, _f=S._run_blocks: calls.append(w) or _f(fn, n, w))
    a, b = one.search(zo, 0.999), three.search(zo, 0.999)
    assert calls == [1, 3]  # both took the threshold-relative pass
    np.testing.assert_array_equal(a.logits, b.logits)
    for f in ("threshold", "log_total", "kept_mass", "ess"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    W = softmax_weights(numpy_scores(z, zo, kind, tau))
    got = np.array([W[b.candidates(q)[0], q].sum() for q in range(len(zo))])
    np.testing.assert_allclose(b.kept_mass, got, rtol=1e-5)
    assert (got >= 0.999 - 1e-5).all()
