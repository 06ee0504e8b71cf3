"""A temperature per analysis window (``sparse_cells``): the rule, every search path, every local engine."""

import numpy as np
import pytest
import xarray as xr

from oceanda.analysis import windows as W
import oceanda.analysis.local_mode as LM
from oceanda.analysis.local_mode import WindowLibrary, analyse_local, window_tau
from oceanda.analysis.search import WindowIndex
from oceanda.analysis.settings import SamplerSettings
from oceanda.errors import ConfigurationError
from test_local_dense import _embed, _library


def test_window_tau_is_the_rule_on_a_brute_force_count_of_each_observation_window():
    rng = np.random.default_rng(0)
    seen = rng.random((16, 20)) < 0.05
    seen[:8, :8] = True  # one densely observed corner
    for periodic in (True, False):
        spec = W.WindowSpec(size=8, stride=4, halo=2, periodic=periodic)
        got = window_tau(seen, spec, 0.1, 30, 0.5)
        iy, ix = W.positions(16, 20, spec)
        for p, (y, x) in enumerate(zip(iy, ix)):
            rows, cols = np.arange(y - 2, y + 10), np.arange(x - 2, x + 10)
            if periodic:
                n = seen[np.ix_(rows % 16, cols % 20)].sum()
            else:
                n = seen[np.ix_(rows[(rows >= 0) & (rows < 16)], cols[(cols >= 0) & (cols < 20)])].sum()
            assert got[p] == pytest.approx(0.1 * (30 / min(max(n, 1), 30)) ** 0.5, rel=1e-12)
        assert got.min() == pytest.approx(0.1) and got.max() > 0.15  # the corner is dense, elsewhere sparse


@pytest.mark.parametrize("method", ["exact", "flat", "fused", "ivf"])
@pytest.mark.parametrize("kind", ["neg_sq_distance", "cosine"])
def test_a_temperature_per_query_is_each_querys_search_at_its_own_temperature(method, kind):
    rng = np.random.default_rng(1)
    z, zo = rng.normal(size=(3000, 8)).astype(np.float32), rng.normal(size=(4, 8)).astype(np.float32)
    tau = np.array([0.3, 0.5, 1.0, 2.0])
    index = WindowIndex(z, kind, 0.7, method, seed=0)
    both = index.search(zo, keep_mass=0.99, tau=tau)
    for q in range(4):
        one = index.search(zo[q:q + 1], keep_mass=0.99, tau=tau[q])
        col = both.logits[:, q] if both.rows is None else None
        if col is not None:
            # float32 products of 4 and of 1 query round differently: measured 6e-6 of logits up to ~50
            np.testing.assert_allclose(col, one.logits[:, 0], rtol=1e-5, atol=1e-5)
        assert both.log_total[q] == pytest.approx(one.log_total[0], rel=1e-5)
        assert len(set(both.candidates(q)[0]) ^ set(one.candidates(0)[0])) <= 2  # at most the rounded boundary
    assert index.tau == 0.7  # the index's own temperature is untouched
    with pytest.raises(ValueError, match="tau"):
        index.search(zo, keep_mass=0.99, tau=tau[:3])


def test_the_rows_search_takes_a_temperature_per_query():
    rng = np.random.default_rng(2)
    z, zo = rng.normal(size=(2000, 8)).astype(np.float32), rng.normal(size=(3, 8)).astype(np.float32)
    index = WindowIndex(z, "cosine", 0.7, "exact")
    tau = np.array([0.2, 0.7, 3.0])
    both = index.search_rows32(zo, 0.999, tau=tau)
    for q in range(3):
        one = index.search_rows32(zo[q:q + 1], 0.999, tau=float(tau[q]))
        # float32 products of 3 and of 1 query round differently: logits up to 5 differ by ~1e-6 (CI saw 1.03e-6)
        np.testing.assert_allclose(both.weights[q].numpy(), one.weights[0].numpy(), rtol=1e-5, atol=1e-30)
    assert both.ess[0] < both.ess[1] < both.ess[2]  # a warmer window spreads its weight wider


def _case():
    lib, f = _library(n=80)
    wlib = WindowLibrary(lib, W.WindowSpec(size=8, stride=4, halo=2, periodic=True), stride=2)
    embed = _embed(np.random.default_rng(1).normal(size=(16, 6)) * 0.3)
    obs = f[7, :1] + 0.05 * np.random.default_rng(2).normal(size=(1, 16, 16))
    return wlib, embed, wlib.embeddings(embed, "t"), obs


@pytest.mark.parametrize("engine,precision", [("loop", "exact"), ("dense", "exact"), ("dense", "fast")])
def test_one_temperature_for_every_window_is_the_scalar_run_and_each_window_gets_its_own(engine, precision,
                                                                                          monkeypatch):
    monkeypatch.setenv(LM.BF16_ENV, "0")
    wlib, embed, z, obs = _case()
    kw = dict(kind="neg_sq_distance", members=8, keep_mass=0.999, engine=engine, precision=precision)
    P = len(W.positions(16, 16, wlib.spec)[0])
    plain = analyse_local(obs, wlib, z, embed, tau=2.0, rng=np.random.default_rng(3), **kw)
    same = analyse_local(obs, wlib, z, embed, tau=0.5, window_tau=np.full(P, 2.0), rng=np.random.default_rng(3), **kw)
    np.testing.assert_array_equal(same.mean, plain.mean)
    np.testing.assert_array_equal(same.members, plain.members)
    tau = np.where(np.arange(P) % 2 == 0, 0.5, 8.0)
    mixed = analyse_local(obs, wlib, z, embed, tau=2.0, window_tau=tau, rng=np.random.default_rng(3), **kw)
    cold = analyse_local(obs, wlib, z, embed, tau=0.5, rng=np.random.default_rng(3), **kw)
    warm = analyse_local(obs, wlib, z, embed, tau=8.0, rng=np.random.default_rng(3), **kw)
    np.testing.assert_allclose(mixed.ess[0::2], cold.ess[0::2], rtol=1e-5)
    np.testing.assert_allclose(mixed.ess[1::2], warm.ess[1::2], rtol=1e-5)
    assert (warm.ess > cold.ess).all()
    with pytest.raises(ValueError, match="window_tau"):
        analyse_local(obs, wlib, z, embed, tau=2.0, window_tau=tau[:-1], **kw)


@pytest.mark.parametrize("precision", ["exact", "fast"])
def test_tempering_a_degenerate_window_starts_from_its_own_temperature(precision):
    """Windows below min_ess are tempered from their own temperature: as the scalar run at that temperature."""
    wlib, embed, z, obs = _case()
    P = len(W.positions(16, 16, wlib.spec)[0])
    kw = dict(kind="neg_sq_distance", members=8, engine="dense", precision=precision, min_ess=30.0, tempering=True)
    scalar = analyse_local(obs, wlib, z, embed, tau=0.2, rng=np.random.default_rng(3), **kw)
    assert (scalar.ess >= 30.0 - 1e-6).all()  # tempered: without it some windows are far below
    per = analyse_local(obs, wlib, z, embed, tau=50.0, window_tau=np.full(P, 0.2), rng=np.random.default_rng(3), **kw)
    np.testing.assert_allclose(per.ess, scalar.ess, rtol=1e-6)
    np.testing.assert_allclose(per.mean, scalar.mean, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("field,value", [("sparse_cells", 0), ("sparse_cells", 2.5), ("sparse_power", -1.0),
                                         ("sparse_power", 5.0)])
def test_sparse_settings_are_checked_by_name(field, value):
    with pytest.raises(ConfigurationError, match=field):
        SamplerSettings(**{field: value})


# --- the bundled model: sparse_cells 60 stored in its sampler settings ----------------------------------------


def _bundled(tmp_path, obs_name, **settings):
    import oceanda
    from oceanda.sampledata import bundled_sample_dir

    data = bundled_sample_dir("qg")
    small = tmp_path / "library48.nc"
    if not small.exists():  # 48 library states: the embedding stays a second
        with xr.open_dataset(data / "library.nc") as ds:
            ds.isel(time=slice(0, 48)).load().to_netcdf(small)
    lib = oceanda.open_library(small)
    obs = oceanda.open_obs(data / obs_name, like=lib.ds)
    model = data.parent / "models" / "qg_window"
    return oceanda.assimilate(model, lib, obs, mode="local", times=[0, 1], members=5, quiet=True,
                              cache_dir=tmp_path / "cache", **settings)


def test_the_bundled_model_warms_windows_with_few_profiles_and_leaves_tracks_alone(tmp_path, monkeypatch):
    monkeypatch.setenv(LM.BF16_ENV, "0")
    pts = _bundled(tmp_path, "obs_insitu_eval_1.nc")
    off = _bundled(tmp_path, "obs_insitu_eval_1.nc", sparse_power=0.0)
    assert pts.attrs["tau_sparse_cells"] == 60 and pts.attrs["tau_sparse_power"] == pytest.approx(0.3)
    assert "tau_sparse_cells" not in off.attrs
    # a handful of profiles per window: warmer weights, a flatter posterior, so more effective samples
    assert float(pts["ess"].mean()) > 1.5 * float(off["ess"].mean())
    trk = _bundled(tmp_path, "obs_altimetry_eval_1.nc")
    trk_off = _bundled(tmp_path, "obs_altimetry_eval_1.nc", sparse_power=0.0)
    np.testing.assert_array_equal(trk["ssh_mean"].values, trk_off["ssh_mean"].values)  # every window sees > 60 cells


def test_cli_refuses_a_bad_sparse_option_naming_it(tmp_path, capsys):
    from oceanda import cli

    with pytest.raises(SystemExit) as e:
        cli.main(["assimilate", "--model", "m", "--library", "l.nc", "--obs", "o.nc", "--out", str(tmp_path / "a.nc"),
                  "--sparse-power", "-1"])
    assert e.value.code == 2 and "--sparse-power" in capsys.readouterr().err
