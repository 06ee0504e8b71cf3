"""`assimilate` and `oceanda assimilate` end to end on tiny synthetic data with prescribed encoders.

The encoders are fixed linear maps (the state itself, the observed values), so the closed-form
answer is known: observing a library state exactly retrieves that state as top-1.
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from oceanda import fields
from oceanda.analysis.assimilate import assimilate
from oceanda.contrastive.encoders import FixedEncoder
from oceanda.contrastive.model import ContrastiveModel
from oceanda.contrastive.similarity import Similarity
from oceanda.errors import GridMismatchError, OceandaError
from tinygrid import smooth_library


_library = smooth_library


def _save_model(path, ds, window=None, tau=0.05):
    """Fixed encoders: state -> its standardised values; obs -> the observed values (centre window)."""
    ny, nx = ds.sizes["y"], ds.sizes["x"]
    if window is None:
        s_shape, o_shape = (1, ny, nx), (2, ny, nx)
        d = ny * nx
        M_obs = np.concatenate([np.eye(d), np.zeros((d, d))], axis=1)
    else:
        w, h = window["size"], window["halo"]
        s_shape, o_shape = (1, w, w), (2, w + 2 * h, w + 2 * h)
        d = w * w
        o = w + 2 * h
        M_obs = np.zeros((d, 2 * o * o))
        for i in range(w):
            for j in range(w):
                M_obs[i * w + j, (h + i) * o + (h + j)] = 1.0
    se = FixedEncoder(s_shape)
    oe = FixedEncoder(o_shape, matrix=M_obs)
    st = fields.Standardizer.fit(fields.to_array(ds, fields.layout_of(ds, ["ssh"]))[0])
    cfg = {"grid_fingerprint": fields.grid_fingerprint(ds, ["ssh"]),
           "normalization": {"state": st.to_dict()},
           "extra": {"state_channels": [["ssh", None]], "obs_channels": [["ssh", None]]}}
    if window is not None:
        cfg["extra"]["window"] = window
    ContrastiveModel(se, oe, Similarity("neg_sq_distance", tau=tau), cfg).save(path)
    return path


def _obs(ds, idx, frac=1.0, seed=1):
    rng = np.random.default_rng(seed)
    o = ds[["ssh"]].isel(time=idx).copy(deep=True)
    o["ssh"] = o.ssh.where(rng.random(o.ssh.shape) < frac)
    o["ssh_error"] = xr.DataArray(0.05, attrs={"units": "m"})
    return o


def test_global_mode_retrieves_the_observed_state_and_weights_sum_to_one(tmp_path):
    ds = _library()
    mdir = _save_model(tmp_path / "m", ds)
    out = assimilate(mdir, ds, _obs(ds, [17, 40]), mode="global", members=8, top_k=5, seed=3)
    np.testing.assert_array_equal(out.retrieved_index.values[:, 0], [17, 40])
    np.testing.assert_allclose(out.weight.sum("particle"), 1.0, rtol=1e-9)
    np.testing.assert_allclose(out.ssh_mean.values, ds.ssh.values[[17, 40]], atol=1e-3)
    np.testing.assert_allclose(out.psi_mean.values, ds.psi.values[[17, 40]], atol=1e-2)  # unobserved variable too
    assert out.ssh.dims == ("time", "member", "y", "x") and out.sizes["member"] == 8
    assert (out.ess.values >= 1).all() and out.attrs["mode"] == "global"
    assert out.attrs["library_fingerprint"] and out.attrs["model_fingerprint"]
    assert not (tmp_path / "m" / "library_cache").exists()  # the model folder is an input: never written
    assert (Path(os.environ["OCEANDA_CACHE_DIR"]) / "library_cache").is_dir()  # the user cache instead


def test_local_mode_reconstructs_an_observed_library_state(tmp_path):
    ds = _library()
    mdir = _save_model(tmp_path / "w", ds, window={"size": 4, "stride": 2, "halo": 2, "periodic": True})
    out = assimilate(mdir, ds, _obs(ds, [5]), members=6, seed=0)
    assert out.attrs["mode"] == "local"
    np.testing.assert_allclose(out.ssh_mean.values[0], ds.ssh.values[5], atol=5e-3)
    np.testing.assert_allclose(out.ssh.mean("member").values, out.ssh_mean.values, atol=1e-4)
    with pytest.raises(OceandaError, match="whole-field"):
        assimilate(mdir, ds, _obs(ds, [5]), mode="global")


def test_hybrid_mode_draws_the_mean_towards_the_observations(tmp_path):
    ds = _library()
    mdir = _save_model(tmp_path / "w", ds, window={"size": 4, "stride": 2, "halo": 2, "periodic": True}, tau=1.0)
    obs = _obs(ds, [3], frac=0.3)
    obs["ssh"] = obs.ssh + 0.0  # noise-free values of library state 3 at 30 % of the points
    from oceanda.analysis.hybrid import HybridConfig

    loc = assimilate(mdir, ds, obs, mode="local", members=6)
    hyb = assimilate(mdir, ds, obs, mode="hybrid", members=6, hybrid=HybridConfig(alpha=1.0, radius=60.0, static_members=40))
    m = np.isfinite(obs.ssh.values)
    e_loc = np.abs(loc.ssh_mean.values - obs.ssh.values)[m].mean()
    e_hyb = np.abs(hyb.ssh_mean.values - obs.ssh.values)[m].mean()
    assert e_hyb < 0.7 * e_loc
    assert hyb.attrs["mode"] == "hybrid" and hyb.sizes["member"] == 6


def test_with_local_returns_the_hybrids_backgrounds_as_local_mode_returns_them(tmp_path):
    from oceanda.analysis.hybrid import HybridConfig
    from oceanda.errors import ConfigurationError

    ds = _library()
    mdir = _save_model(tmp_path / "w", ds, window={"size": 4, "stride": 2, "halo": 2, "periodic": True}, tau=1.0)
    obs = [_obs(ds, [3, 8], frac=0.3), _obs(ds, [11], frac=0.5, seed=2)]  # a list: one Dataset each
    kw = dict(members=6, seed=4, hybrid=HybridConfig(alpha=1.0, radius=60.0, static_members=40))
    loc, hyb = assimilate(mdir, ds, obs, mode="local", **kw), assimilate(mdir, ds, obs, mode="hybrid", **kw)
    hyb2, loc2 = assimilate(mdir, ds, obs, mode="hybrid", with_local=True, **kw)
    for one, two in ((loc, loc2), (hyb, hyb2)):
        for a, b in zip(one, two):
            xr.testing.assert_identical(a.drop_attrs(), b.drop_attrs())
            timing = ("seconds_per_analysis", "setup_seconds", "command")
            assert {k: v for k, v in a.attrs.items() if k not in timing} == {
                k: v for k, v in b.attrs.items() if k not in timing}
    assert loc2[0].attrs["mode"] == "local" and "hybrid_alpha" not in loc2[0].attrs
    from oceanda import api

    pair = api.assimilate(mdir, ds, obs[1], mode="hybrid", with_local=True, **kw)  # the front door passes it on
    xr.testing.assert_identical(pair[1].drop_attrs(), loc[1].drop_attrs())
    far = assimilate(mdir, ds, obs[1], mode="hybrid", with_local=True, scheduler="local:1", **kw)  # dask workers
    xr.testing.assert_identical(far[1].drop_attrs(), loc[1].drop_attrs())
    xr.testing.assert_identical(far[0].drop_attrs(), hyb[1].drop_attrs())
    assert 0 < loc2[0].attrs["seconds_per_analysis"] < hyb2[0].attrs["seconds_per_analysis"]
    with pytest.raises(ConfigurationError, match="with_local"):
        assimilate(mdir, ds, obs[0], mode="local", with_local=True)


def test_model_on_another_grid_is_refused(tmp_path):
    ds = _library()
    mdir = _save_model(tmp_path / "m", ds)
    other = ds.assign_coords(x=ds.x + 5.0)
    with pytest.raises(GridMismatchError, match="fingerprint"):
        assimilate(mdir, other, _obs(other, [1]), mode="global")


def test_cli_writes_a_readable_file_and_refuses_overwrite(tmp_path):
    from oceanda import io
    from oceanda.cli import main

    ds = _library()
    mdir = _save_model(tmp_path / "m", ds)
    io.write_netcdf(ds, tmp_path / "lib.nc")
    io.write_netcdf(_obs(ds, [2, 9, 30], frac=0.5), tmp_path / "obs.nc")
    args = ["assimilate", "--model", str(mdir), "--library", str(tmp_path / "lib.nc"), "--obs", str(tmp_path / "obs.nc"),
            "--out", str(tmp_path / "a.nc"), "--mode", "global", "--members", "5", "--top-k", "3", "--quiet"]
    assert main(args) == 0
    with xr.open_dataset(tmp_path / "a.nc") as a:
        for v in ("ssh_mean", "ssh_spread", "ssh", "psi_mean", "psi_spread", "psi", "ess", "retrieved_index",
                  "retrieved_score", "weight"):
            assert v in a, v
        assert a.sizes["time"] == 3 and a.sizes["member"] == 5 and a.sizes["rank"] == 3
        np.testing.assert_allclose(a.weight.sum("particle"), 1.0, rtol=1e-5)
        assert a.attrs["seconds_per_analysis"] > 0 and a.attrs["mode"] == "global"
        assert "assimilate" in a.attrs["command"]
    io.open_states(tmp_path / "a.nc", check_values=False)  # readable by oceanda evaluate
    assert main(args) == 2  # exists: refused
    assert main(args + ["--overwrite"]) == 0


def test_hybrid_spread_is_the_contrastive_spread_times_the_kalman_variance_reduction():
    """spread='reduction': member variance = local variance x var_a / (alpha diag B); 'kalman': = var_a."""
    from oceanda.analysis.hybrid import HybridConfig, hybrid_update
    from oceanda.kalman.obsspace import Observations
    from oceanda.kalman.schur import schur_enoi

    rng = np.random.default_rng(3)
    C, NY, NX = 2, 5, 6
    n = C * NY * NX
    static = rng.standard_normal((60, n)) * rng.uniform(0.5, 2.0, n)
    mean = rng.standard_normal((C, NY, NX))
    local = mean[None] + 0.3 * rng.standard_normal((8, C, NY, NX))
    idx = np.array([NY * NX + 3, NY * NX + 17, NY * NX + 22])  # channel 1 only
    obs = Observations(rng.standard_normal(3), np.full(3, 0.4), idx)
    yy, xx = np.meshgrid(np.arange(NY) * 10.0, np.arange(NX) * 10.0, indexing="ij")
    points = np.c_[yy.ravel(), xx.ravel()]
    alpha, radius = 0.5, 25.0
    xa, var = schur_enoi(mean.ravel(), static, obs, alpha=alpha, radius=radius, points=points, var_channels=[1])
    v_local = local.reshape(8, -1).var(0, ddof=1)
    for spread in ("reduction", "kalman"):
        cfg = HybridConfig(alpha=alpha, radius=radius, spread=spread)
        Ea = hybrid_update(mean, local, obs, localizer=(points, None), static=static, config=cfg,
                           rng=np.random.default_rng(0)).reshape(8, -1)
        np.testing.assert_allclose(Ea.mean(0), xa, atol=1e-10)
        v = Ea.var(0, ddof=1)
        np.testing.assert_allclose(v[: NY * NX], v_local[: NY * NX], rtol=1e-10)  # unobserved channel untouched
        vb = alpha * static.var(0, ddof=1)
        expected = v_local * var / vb if spread == "reduction" else var
        np.testing.assert_allclose(v[NY * NX:], expected[NY * NX:], rtol=1e-8)
    assert np.all(var[NY * NX:] <= alpha * static.var(0, ddof=1)[NY * NX:] + 1e-12)  # the update only shrinks
    cfg = HybridConfig(alpha=alpha, radius=radius, spread_factor=1.7)  # the tuning-run factor scales every anomaly
    Ea = hybrid_update(mean, local, obs, localizer=(points, None), static=static, config=cfg,
                       rng=np.random.default_rng(0)).reshape(8, -1)
    np.testing.assert_allclose(Ea.mean(0), xa, atol=1e-10)
    np.testing.assert_allclose(Ea.var(0, ddof=1), 1.7 ** 2 * v_local * np.where(np.isfinite(var), var, 1.0)
                               / np.where(np.isfinite(var), alpha * static.var(0, ddof=1), 1.0), rtol=1e-8)
    with pytest.raises(OceandaError, match="spread"):
        hybrid_update(mean, local, obs, localizer=(points, None), static=static,
                      config=HybridConfig(alpha=alpha, radius=radius, spread="bogus"), rng=np.random.default_rng(0))


def test_sampler_objects_compose_to_assimilate(tmp_path):
    """prepare once, analyse per time with the [seed, t] streams, one Dataset writer: assimilate's output."""
    from oceanda.analysis import Library, LocalSampler, SamplerSettings, analyses_to_dataset
    from oceanda.analysis.encoding import load_model

    ds = _library()
    mdir = _save_model(tmp_path / "w", ds, window={"size": 4, "stride": 2, "halo": 2, "periodic": True})
    obs = _obs(ds, [5, 11], frac=0.6)
    ref = assimilate(mdir, ds, obs, members=6, seed=4)
    model, enc = load_model(mdir)
    lib = Library(ds)
    sampler = LocalSampler(enc, SamplerSettings(members=6)).prepare(lib, cache_dir=mdir / "library_cache")
    inputs = sampler.read_obs(obs, lib)
    analyses = [sampler.analyse(o, np.random.default_rng([4, o.index])) for o in inputs]
    out = analyses_to_dataset(analyses, lib, obs.time.values, ref.attrs)
    for v in ref.data_vars:
        np.testing.assert_array_equal(out[v].values, ref[v].values, err_msg=v)
    assert analyses[0].members.shape == (6, 3, 8, 8) and analyses[0].over_windows and analyses[0].posterior is None


def test_stored_calibration_new_and_legacy_forms_load_the_same(tmp_path):
    from oceanda import io
    from oceanda.analysis import HybridSettings, SamplerSettings, stored_settings

    legacy = {"extra": {"tau": 0.3, "spread_factor": 1.4, "library_stride": 2,
                        "hybrid": {"alpha": 0.6, "radius": 80.0, "spread_factor": 1.2}}}
    s = stored_settings(legacy)
    assert s == SamplerSettings(tau=0.3, spread_factor=1.4, library_stride=2,
                                hybrid=HybridSettings(alpha=0.6, radius=80.0, spread_factor=1.2))
    assert stored_settings({"sampler": s.to_dict()}) == s  # versioned round trip
    assert stored_settings({"temperature": 0.1}).temperature(0.1) == 0.1  # nothing stored: the trained tau
    assert s.temperature(0.1) == 0.3  # a tuned tau wins
    # an analysis with the legacy extra and one with config["sampler"] are the same
    ds = _library()
    obs = _obs(ds, [7], frac=0.5)
    window = {"size": 4, "stride": 2, "halo": 2, "periodic": True}
    outs = []
    for name, stored in (("old", legacy["extra"]), ("new", None)):
        mdir = _save_model(tmp_path / name, ds, window=window)
        cfg = io.read_json(mdir / "config.json")
        if stored is None:
            cfg["sampler"] = s.to_dict()
        else:
            cfg["extra"].update(stored)
        io.write_json(cfg, mdir / "config.json", overwrite=True)
        outs.append(assimilate(mdir, ds, obs, mode="hybrid", members=4, seed=2))
    for v in outs[0].data_vars:
        np.testing.assert_array_equal(outs[0][v].values, outs[1][v].values, err_msg=v)
    assert outs[0].attrs["tau"] == pytest.approx(0.3) and outs[0].attrs["hybrid_alpha"] == 0.6
    assert outs[0].attrs["spread_factor"] == 1.4


@pytest.mark.parametrize("key, value, match", [("tau", float("nan"), "tau=nan"), ("tau", "0.1", "tau='0.1'"),
                                               ("spread_factor", -1.0, "spread_factor=-1.0"),
                                               ("hybrid", {"radius": 0.0}, "radius=0.0")])
def test_bad_stored_settings_name_the_file_and_the_key(tmp_path, key, value, match):
    from oceanda import io
    from oceanda.errors import ConfigurationError

    ds = _library()
    mdir = _save_model(tmp_path / "m", ds)
    cfg = io.read_json(mdir / "config.json")
    cfg["extra"][key] = value
    (mdir / "config.json").write_text(json.dumps(cfg))  # as hand-edited (json writes NaN; io.write_json null)
    with pytest.raises(ConfigurationError, match=match) as err:
        assimilate(mdir, ds, _obs(ds, [1]), mode="global")
    assert "config.json: extra" in str(err.value)


def test_bad_settings_are_refused_naming_the_setting(tmp_path):
    from oceanda.analysis import SamplerSettings
    from oceanda.errors import ConfigurationError

    ds = _library()
    mdir = _save_model(tmp_path / "m", ds)
    with pytest.raises(ConfigurationError, match="members=0"):
        assimilate(mdir, ds, _obs(ds, [1]), mode="global", members=0)
    with pytest.raises(ConfigurationError, match="mode='bogus'"):
        assimilate(mdir, ds, _obs(ds, [1]), mode="bogus")
    with pytest.raises(ConfigurationError, match="top_k"):
        SamplerSettings(top_k=0)
    with pytest.raises(ConfigurationError, match="hybrid: kalman='enkf'"):
        SamplerSettings.from_dict({"hybrid": {"kalman": "enkf"}})
