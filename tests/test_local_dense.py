"""The dense local engine (window table, matrix products) against the loop engine it replaced."""

import numpy as np
import pytest
import xarray as xr

from oceanda.analysis import windows as W
from oceanda.analysis.library import Library
import oceanda.analysis.local_mode as LM
from oceanda.analysis.local_mode import WindowLibrary, analyse_local, ranked_quantiles, ranked_quantiles_rows
from oceanda.analysis.posterior import quantile_indices
from oceanda.analysis.result import Analysis, analyses_to_dataset
from oceanda.analysis.settings import SamplerSettings
from oceanda.errors import ConfigurationError


def _library(n=60, ny=16, nx=16, land=False, seed=0):
    rng = np.random.default_rng(seed)
    k = np.fft.fftfreq(ny)[:, None] ** 2 + np.fft.fftfreq(nx)[None] ** 2
    f = np.real(np.fft.ifft2(np.fft.fft2(rng.normal(size=(n, 2, ny, nx))) * np.exp(-k / 0.02))).astype(np.float32)
    if land:
        f[:, :, 2:6, 3:9] = np.nan
    time = np.datetime64("2001-01-01", "ns") + np.arange(n) * np.timedelta64(1, "D")
    ds = xr.Dataset({"a": (("time", "y", "x"), f[:, 0], {"units": "m"}), "b": (("time", "y", "x"), f[:, 1], {"units": "m"})},
                    coords={"time": time, "y": np.arange(ny) * 1.0, "x": np.arange(nx) * 1.0})
    lib = Library(ds)
    lib.load()
    return lib, f


def _embed(proj):
    def embed(x):
        x = np.nan_to_num(np.asarray(x, dtype=np.float64))
        c = x.shape[-1] // 2 - 2  # the state window's centre, also inside an observation window's halo
        return x[:, :1, c:c + 4, c:c + 4].reshape(len(x), -1) @ proj
    return embed


@pytest.mark.parametrize("periodic,land,coupling", [(True, False, "copula"), (False, False, "copula"),
                                                   (True, True, "copula"), (False, True, "copula"),
                                                   (True, False, "systematic"), (False, True, "independent")])
def test_dense_engine_gives_the_loop_engines_mean_and_members(periodic, land, coupling):
    lib, f = _library(land=land)
    spec = W.WindowSpec(size=8, stride=4, halo=2, periodic=periodic)
    wlib = WindowLibrary(lib, spec, stride=2)
    assert wlib.has_nan == land and wlib.table() is not None
    embed = _embed(np.random.default_rng(1).normal(size=(16, 6)) * 0.3)
    z = wlib.embeddings(embed, "t")
    obs = f[7, :1] + 0.05 * np.random.default_rng(2).normal(size=(1, 16, 16))
    kw = dict(kind="neg_sq_distance", tau=2.0, members=12, coupling=coupling, keep_mass=0.999)
    loop = analyse_local(obs, wlib, z, embed, rng=np.random.default_rng(3), engine="loop", **kw)
    dense = analyse_local(obs, wlib, z, embed, rng=np.random.default_rng(3), engine="dense", **kw)
    assert loop.engine == "loop" and dense.engine == "dense"
    scale = np.nanmax(np.abs(loop.mean))
    np.testing.assert_array_equal(np.isnan(dense.mean), np.isnan(loop.mean))
    assert np.isnan(dense.mean).any() == land
    np.testing.assert_allclose(dense.mean, loop.mean, atol=1e-5 * scale)  # float32 sums in another order
    np.testing.assert_allclose(dense.members, loop.members, atol=1e-5 * scale)  # float32 sums in another order
    np.testing.assert_allclose(dense.dropped_mass, loop.dropped_mass, atol=1e-9)
    np.testing.assert_allclose(dense.ess, loop.ess, rtol=1e-9)
    assert (dense.dropped_mass <= 1e-3 + 1e-12).all()  # the mass criterion: at least keep_mass kept


def test_mass_criterion_default_keeps_the_weight_and_max_keep_still_caps():
    lib, f = _library(n=40)
    wlib = WindowLibrary(lib, W.WindowSpec(size=8, stride=4, halo=2), stride=1)
    embed = _embed(np.random.default_rng(4).normal(size=(16, 4)) * 0.1)  # flat posteriors: many windows needed
    z = wlib.embeddings(embed, "t")
    res = analyse_local(f[3, :1], wlib, z, embed, kind="neg_sq_distance", rng=np.random.default_rng(0))
    assert res.dropped_mass.max() <= 1e-3 + 1e-12
    capped = analyse_local(f[3, :1], wlib, z, embed, kind="neg_sq_distance", rng=np.random.default_rng(0), max_keep=50)
    assert capped.dropped_mass.min() > 1e-2  # 50 of 10240 windows cannot hold the weight of a flat posterior


def test_ranked_quantiles_equal_the_full_sort():
    rng = np.random.default_rng(5)
    for n in (100, 20000):
        score, w = rng.normal(size=n), rng.random(n)
        w /= w.sum()
        q = rng.random(30)
        order = np.argsort(score, kind="stable")
        np.testing.assert_array_equal(ranked_quantiles(score, w, q), order[quantile_indices(w[order], q)])


def test_keep_mass_and_search_settings_are_validated():
    assert SamplerSettings(keep_mass=1.0).keep_mass == 1.0
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ConfigurationError, match="keep_mass"):
            SamplerSettings(keep_mass=bad)
    with pytest.raises(ConfigurationError, match="search"):
        SamplerSettings(search="hnsw")


def test_output_attributes_carry_the_kept_mass_and_the_search():
    lib, _ = _library(n=5)
    z = np.zeros((3, 2, 16, 16), np.float32)
    an = [Analysis(z, z[0], z[0], 100.0, d, over_windows=True, search="ivf", recall=r)
          for d, r in ((0.001, 0.99), (0.003, 0.97))]
    ds = analyses_to_dataset(an, lib, np.arange(2), {"mode": "local"})
    assert ds.attrs["dropped_mass_mean"] == pytest.approx(0.002) and ds.attrs["kept_mass_mean"] == pytest.approx(0.998)
    assert ds.attrs["search"] == "ivf" and ds.attrs["search_recall"] == pytest.approx(0.98)


def test_ranked_quantiles_rows_equal_the_full_sort_of_every_row():
    rng = np.random.default_rng(6)
    P, n = 7, 9000
    score = rng.normal(size=(P, n))
    score[1] = np.round(score[1], 1)  # many ties: entry order breaks them
    score[2] = 0.5  # all equal
    mask = rng.random((P, n)) < 0.8
    mask[3] = rng.random(n) < 0.3  # few entries: the full-sort path
    w = np.where(mask, rng.random((P, n)) ** 4, 0.0)
    w /= w.sum(axis=1, keepdims=True)
    q = rng.random((P, 25))
    got = ranked_quantiles_rows(score, w, mask, q)
    for p in range(P):
        k = np.flatnonzero(mask[p])
        order = np.argsort(score[p, k], kind="stable")
        np.testing.assert_array_equal(got[p], k[order[quantile_indices(w[p, k][order], q[p])]])
        np.testing.assert_array_equal(got[p], k[ranked_quantiles(score[p, k], w[p, k], q[p])])


@pytest.mark.parametrize("coupling", ["copula", "systematic"])
def test_candidate_rows_give_the_per_window_picks(monkeypatch, coupling):
    lib, f = _library()
    wlib = WindowLibrary(lib, W.WindowSpec(size=8, stride=4, halo=2), stride=1)
    embed = _embed(np.random.default_rng(7).normal(size=(16, 6)) * 0.3)
    z = wlib.embeddings(embed, "t")
    obs = f[9, :1] + 0.05 * np.random.default_rng(8).normal(size=(1, 16, 16))
    kw = dict(kind="neg_sq_distance", tau=1.0, members=16, coupling=coupling, engine="dense", top=5)
    rows = analyse_local(obs, wlib, z, embed, rng=np.random.default_rng(3), **kw)
    monkeypatch.setattr(LM, "ROWS_MAX", 0)  # one window at a time
    per = analyse_local(obs, wlib, z, embed, rng=np.random.default_rng(3), **kw)
    scale = np.abs(per.mean).max()
    np.testing.assert_allclose(rows.mean, per.mean, rtol=0, atol=1e-6 * scale)
    np.testing.assert_allclose(rows.members, per.members, rtol=0, atol=1e-5 * scale)  # the same picks
    for a, b in zip(rows.retrieved, per.retrieved):
        np.testing.assert_array_equal(a, b)


def _fast_case():
    """The periodic 80-state case of the fast-precision tests: window library, encoder, embeddings, one obs."""
    lib, f = _library(n=80)
    wlib = WindowLibrary(lib, W.WindowSpec(size=8, stride=4, halo=2, periodic=True), stride=2)
    embed = _embed(np.random.default_rng(1).normal(size=(16, 6)) * 0.3)
    return wlib, embed, wlib.embeddings(embed, "t"), f[7, :1] + 0.05 * np.random.default_rng(2).normal(size=(1, 16, 16))


@pytest.mark.parametrize("coupling", ["copula", "systematic"])
def test_fast_precision_gives_the_exact_means_and_draws_members_like_the_exact_engine(monkeypatch, coupling):
    """Without truncation (keep_mass 1) both engines weigh the same candidates: the same means and picks."""
    monkeypatch.setenv(LM.BF16_ENV, "0")  # float32 window means (bfloat16's: the next test)
    wlib, embed, z, obs = _fast_case()
    kw = dict(kind="neg_sq_distance", tau=2.0, members=12, coupling=coupling, keep_mass=1.0, engine="dense")
    ex = analyse_local(obs, wlib, z, embed, rng=np.random.default_rng(3), **kw)
    fa = analyse_local(obs, wlib, z, embed, rng=np.random.default_rng(3), precision="fast", **kw)
    assert fa.engine == "dense-fast" and ex.engine == "dense"
    scale = np.abs(ex.mean - wlib.library.mean_state()).max()
    # measured: 6.0e-6 of the mean anomaly here (basis of rank 78 of 128 keeping all but 1e-5 of the standardised variance)
    np.testing.assert_allclose(fa.mean, ex.mean, atol=1e-4 * scale)
    np.testing.assert_allclose(fa.dropped_mass, 0.0, atol=1e-6)
    np.testing.assert_allclose(fa.ess, ex.ess, rtol=1e-4)
    got = {}
    for name, fn in (("exact", "ranked_quantiles_rows"), ("fast", "ranked_quantiles_rows32")):
        orig = getattr(LM, fn)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(LM, fn, lambda *a, _o=orig, _n=name, **k: got.setdefault(_n, _o(*a, **k)))
            analyse_local(obs, wlib, z, embed, rng=np.random.default_rng(3), precision=name, **kw)
    if coupling == "copula":
        assert np.mean(got["fast"] == got["exact"]) >= 0.99
    # measured: 6e-7 (the same picks; members recentred on the float32-rounded mean)
    np.testing.assert_allclose(fa.members.std(axis=0), ex.members.std(axis=0), atol=1e-4 * scale)


def test_bfloat16_window_means_stay_within_their_rounding_of_the_float32_ones(monkeypatch):
    """bfloat16 coefficients and weights (2^-9 relative each), float32 sums: means within 2^-8 of the anomaly."""
    wlib, embed, z, obs = _fast_case()
    kw = dict(kind="neg_sq_distance", tau=2.0, members=12, keep_mass=1.0, engine="dense", precision="fast")
    got = {}
    for flag in ("0", "1"):
        monkeypatch.setenv(LM.BF16_ENV, flag)
        got[flag] = analyse_local(obs, wlib, z, embed, rng=np.random.default_rng(3), **kw)
    f32, b16 = got["0"], got["1"]
    assert (f32.engine, b16.engine) == ("dense-fast", "dense-fast-bf16")
    scale = np.abs(f32.mean - wlib.library.mean_state()).max()
    err = np.abs(b16.mean - f32.mean).max() / scale
    assert 0 < err <= 2.0 ** -8  # measured 1.1e-3: rounded, and by no more than the rounding
    np.testing.assert_allclose(b16.ess, f32.ess, rtol=1e-6)  # the weights themselves stay float32
    np.testing.assert_allclose(b16.members.std(axis=0), f32.members.std(axis=0), atol=2.0 ** -8 * scale)
    monkeypatch.setenv(LM.BF16_ENV, "yes")
    with pytest.raises(ConfigurationError, match="OCEANDA_BF16"):
        analyse_local(obs, wlib, z, embed, rng=np.random.default_rng(3), **kw)


def test_fast_precision_keeps_at_least_keep_mass_and_every_exact_candidate():
    """The fast rule's pilot threshold: at least keep_mass kept, a superset of the exact (smallest) set."""
    wlib, embed, z, obs = _fast_case()
    spec = wlib.spec
    iy, ix = W.positions(16, 16, spec)
    zo = embed(W.extract(obs, iy, ix, spec.size, spec.halo, True))
    index = LM.WindowIndex(z, "neg_sq_distance", 2.0, "exact")
    for keep in (0.9, 0.99, 0.999):
        ex = index.search(zo, keep)
        _, cand = ex.dense_weights(len(wlib))
        fa = index.search_rows32(zo, keep)
        fast = fa.weights.numpy() > 0
        assert np.all(fa.kept_mass >= keep - 1e-6) and np.all(cand <= fast)
        w = np.exp(ex.logits - ex.logits.max(axis=0)).T
        np.testing.assert_allclose(fa.kept_mass, (w * fast).sum(axis=1) / w.sum(axis=1), rtol=1e-5)
        np.testing.assert_allclose(fa.log_total, ex.log_total, rtol=0, atol=1e-4)
        assert np.all(1 - fa.kept_mass <= 1 - ex.kept_mass + 1e-6)  # it drops no more than the exact rule


def test_lowrank_table_reconstructs_the_rows():
    lib, _ = _library(n=40)
    wlib = WindowLibrary(lib, W.WindowSpec(size=8, stride=4, halo=2, periodic=True), stride=2)
    t = wlib.table()
    mu, coeffs, basis = t.lowrank(1e-6)
    r = basis.shape[0]
    rec = mu + coeffs[:, :r].numpy() @ basis.numpy()
    err = np.sum((rec - t.x) ** 2) / np.sum((t.x - t.x.mean(axis=0)) ** 2)
    assert r < t.x.shape[1] and err <= 2e-6
    np.testing.assert_allclose(coeffs[:, r:r + 2].numpy(), t.proj - t.proj.mean(axis=0), rtol=1e-6)


def test_lowrank_basis_keeps_every_variable_whatever_its_units():
    """Two independent variables 1e6 apart in scale: the basis keeps the variance of each, not of their sum."""
    lib, f = _library(n=40)
    ds = lib.ds.copy()
    ds["a"], ds["b"] = ds.a * 1e3, ds.b * 1e-3  # e.g. a stream function in m2 s-1 beside a height in m
    big = Library(ds)
    big.load()
    t = WindowLibrary(big, W.WindowSpec(size=8, stride=4, halo=2, periodic=True), stride=2).table()
    mu, coeffs, basis = t.lowrank(1e-4)
    r = basis.shape[0]
    rec = (mu + coeffs[:, :r].numpy() @ basis.numpy()).reshape(len(t.x), 2, -1)
    x = t.x.reshape(len(t.x), 2, -1)
    for c in range(2):
        err = np.sum((rec[:, c] - x[:, c]) ** 2) / np.sum((x[:, c] - x[:, c].mean(axis=0)) ** 2)
        assert err <= 3e-4, (c, err)  # each variable within a few tol of its own variance


def test_precision_setting_is_checked_and_passed():
    assert SamplerSettings().precision == "fast"  # the default since issue 16
    assert SamplerSettings(precision="exact").precision == "exact"
    with pytest.raises(ConfigurationError, match="precision"):
        SamplerSettings(precision="half")
    lib, f = _library(n=20)
    wlib = WindowLibrary(lib, W.WindowSpec(size=8, stride=4, halo=2, periodic=True), stride=2)
    embed = _embed(np.eye(16)[:, :6])
    with pytest.raises(ValueError, match="precision"):
        analyse_local(f[0, :1], wlib, wlib.embeddings(embed, "t"), embed, precision="half")


@pytest.mark.slow
def test_fast_precision_keeps_the_bundled_samples_rmse(tmp_path):
    from pathlib import Path

    from oceanda import io
    from oceanda.analysis.assimilate import load_model, resolve_settings
    from oceanda.analysis.samplers import LocalSampler

    data = Path(__file__).resolve().parents[1] / "sample_data"
    lib = io.open_states(data / "qg" / "library.nc").load()
    obs = io.open_obs(data / "qg" / "obs_altimetry_eval_1.nc", like=lib).load().isel(time=slice(0, 2))
    truth = io.open_states(data / "qg" / "truth_eval_1.nc").load().ssh.values[:2]
    model, enc = load_model(data / "models" / "qg_window")
    ex = LocalSampler(enc, resolve_settings(model)).prepare(lib, cache_dir=tmp_path)
    fa = LocalSampler(enc, resolve_settings(model, precision="fast")).prepare(lib, cache_dir=tmp_path)
    ssh = ex.library.layout.channels.index(("ssh", None))
    rmse, spread = {}, {}
    for name, s in (("exact", ex), ("fast", fa)):
        a = [s.analyse(o, np.random.default_rng([0, d])) for d, o in enumerate(s.read_obs(obs, s.library))]
        rmse[name] = np.sqrt(np.mean((np.stack([x.mean[ssh] for x in a]) - truth) ** 2))
        spread[name] = np.sqrt(np.mean(np.stack([x.spread[ssh] for x in a]) ** 2))
    assert abs(rmse["fast"] / rmse["exact"] - 1) < 0.01  # measured on 3 days: equal to 4 digits
    assert abs(spread["fast"] / spread["exact"] - 1) < 0.02


def test_fast_precision_in_groups_of_windows_equals_all_windows_at_once(monkeypatch):
    """A grid whose [windows, library] rows exceed ROWS_MAX is analysed in groups of windows: same result."""
    wlib, embed, z, obs = _fast_case()
    kw = dict(kind="neg_sq_distance", tau=2.0, members=12, keep_mass=0.999, engine="dense", precision="fast", top=3)
    whole = analyse_local(obs, wlib, z, embed, rng=np.random.default_rng(3), **kw)
    monkeypatch.setattr(LM, "ROWS_MAX", 5 * len(wlib))  # 16 windows in groups of 5, 5, 5 and 1
    grouped = analyse_local(obs, wlib, z, embed, rng=np.random.default_rng(3), **kw)
    assert grouped.engine == whole.engine and whole.engine.startswith("dense-fast")
    # the same picks; the low-rank product of fewer rows rounds differently (float32: measured 7e-8)
    np.testing.assert_allclose(grouped.mean, whole.mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grouped.members, whole.members, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grouped.ess, whole.ess, rtol=1e-6)
    assert all(np.array_equal(a, b) for a, b in zip(grouped.retrieved, whole.retrieved))
    assert len(grouped.retrieved) == len(whole.retrieved) == len(whole.iy)


def test_low_rank_search_gives_the_exact_searchs_analysis_and_says_its_logit_error(monkeypatch):
    from oceanda.analysis import search as S

    monkeypatch.setattr(S, "LOW_RANK_MIN", 100)
    lib, f = _library()
    wlib = WindowLibrary(lib, W.WindowSpec(size=8, stride=4, halo=2), stride=2)
    embed = _embed(np.random.default_rng(7).normal(size=(16, 32)) * 0.3)  # rank 16 in 32 dimensions
    z = wlib.embeddings(embed, "t")
    obs = f[7, :1] + 0.05 * np.random.default_rng(8).normal(size=(1, 16, 16))
    kw = dict(kind="neg_sq_distance", tau=2.0, members=12, keep_mass=0.999, engine="dense")
    index = S.WindowIndex(z, "neg_sq_distance", 2.0, "fused")
    assert index.low is not None and index.low.basis.shape[1] < 32  # smooth windows: fewer than 16 directions
    low = analyse_local(obs, wlib, z, embed, rng=np.random.default_rng(3), index=index, **kw)
    full = analyse_local(obs, wlib, z, embed, rng=np.random.default_rng(3), **kw,
                         index=S.WindowIndex(z, "neg_sq_distance", 2.0, "fused", logit_tol=0))
    assert low.search == "fused" and 0 < low.logit_error.max() <= S.LOGIT_TOL and full.logit_error.max() == 0
    scale = np.nanmax(np.abs(full.mean))
    # the same search on the full rows: weights within e^(+-0.03) of each other (1.7e-4 measured)
    np.testing.assert_allclose(low.mean, full.mean, atol=1e-3 * scale)
    assert (low.dropped_mass <= 1e-3 + 1e-9).all()
    an = [Analysis(low.members, low.mean, low.spread, 10.0, 1e-3, over_windows=True, search="fused", recall=1.0,
                   logit_error=0.02), Analysis(low.members, low.mean, low.spread, 10.0, 1e-3, over_windows=True,
                                               search="fused", recall=1.0, logit_error=0.0)]
    ds = analyses_to_dataset(an, lib, np.arange(2), {"mode": "local"})
    assert ds.attrs["search_logit_error_max"] == pytest.approx(0.02)
    an[0].logit_error = 0.0
    assert "search_logit_error_max" not in analyses_to_dataset(an, lib, np.arange(2), {"mode": "local"}).attrs
