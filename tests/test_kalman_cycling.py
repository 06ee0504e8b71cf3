"""Cycled filters on Lorenz-96 (shortened benchmark), checkpoint/resume, the Dataset layer and the CLI."""

import numpy as np
import pytest
import xarray as xr

from oceanda import io
from oceanda.cli import main
from oceanda.errors import ConfigurationError
from oceanda.experiments.l96_twin import lorenz96_twin, run_lorenz96
from oceanda.kalman import (
    ETKF,
    LETKF,
    METHODS,
    EnKF,
    EnOI,
    analyse_dataset,
    cycle,
    etkf,
    latest_checkpoint,
    letkf,
    localizer_for_dataset,
    make_filter,
    tuned_filter,
    tuned_settings,
)
from oceanda.kalman.inflation import AdaptiveInflation


@pytest.mark.parametrize("method,members,limit", [("etkf", 20, 0.21), ("letkf", 20, 0.22), ("enkf", 40, 0.25)])
def test_lorenz96_shortened_benchmark(method, members, limit):
    # Sakov & Oke (2008) setting; the full 1000-cycle, 3-seed version is benchmarks/bench_l96.py.
    tuned = tuned_settings("lorenz96")[method]
    res = run_lorenz96(method, members, 350, seed=0, inflation=tuned["inflation"], radius=tuned.get("radius"), progress=False)
    s = res.summary(skip=100)
    assert s["rmse_a"] < limit
    assert 0.6 < s["spread_skill_a"] < 1.6  # a calibrated ensemble
    free = np.sqrt(np.mean((res.ensemble.mean(0) - res.ensemble.mean()) ** 2))
    assert s["rmse_a"] < 0.2 * free  # far below climatological error (~3.6)


def test_checkpoint_resume_continues_exactly(tmp_path):
    twin = lorenz96_twin(24, 10, seed=3)
    # stochastic EnKF with adaptive inflation: the saved RNG and inflation states are exercised
    f = EnKF(inflation=1.02)
    adaptive = lambda: AdaptiveInflation(smoothing=0.2)  # noqa: E731
    full_adaptive = adaptive()
    full = cycle(twin.forecast, twin.E0, twin.observations, f, adaptive=full_adaptive, rng=7, truth=twin.truth,
                 progress=False)
    ck = tmp_path / "ck"
    cycle(twin.forecast, twin.E0, twin.observations[:10], f, adaptive=adaptive(), rng=7, truth=twin.truth[:10],
          checkpoint_dir=ck, progress=False)
    assert latest_checkpoint(ck).name == "cycle_000009.nc"
    resumed_adaptive = adaptive()
    resumed = cycle(twin.forecast, twin.E0, twin.observations, f, adaptive=resumed_adaptive, rng=7, truth=twin.truth,
                    checkpoint_dir=ck, resume=True, progress=False)
    assert resumed.resumed_from == 9
    assert resumed_adaptive.state() == full_adaptive.state()  # the caller's object carries on from the checkpoint
    np.testing.assert_array_equal(resumed.ensemble, full.ensemble)
    np.testing.assert_array_equal(resumed.stats["rmse_a"], full.stats["rmse_a"])
    np.testing.assert_array_equal(resumed.stats["inflation"], full.stats["inflation"])
    assert full.stats["inflation"][-1] > 1.02
    assert latest_checkpoint(ck).name == "cycle_000023.nc"
    with pytest.raises(Exception, match="method"):
        cycle(twin.forecast, twin.E0, twin.observations, ETKF(), checkpoint_dir=ck, resume=True, progress=False)
    with pytest.raises(ConfigurationError, match="localizer"):
        cycle(twin.forecast, twin.E0, twin.observations, LETKF(radius=5.0), progress=False)
    with pytest.raises(ConfigurationError, match="cycling"):
        cycle(twin.forecast, twin.E0, twin.observations, EnOI(), progress=False)


def _grid_ensemble(N=12, Y=8, X=10, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(Y) * 20.0
    x = np.arange(X) * 20.0
    lat, lon = np.meshgrid(40 + y / 111.0, -50 + x / 85.0, indexing="ij")
    base = np.sin(y[:, None] / 40.0) + np.cos(x[None, :] / 50.0)
    ssh = base + 0.5 * rng.standard_normal((1, N, Y, X))
    temp = 10 + 2 * ssh[:, :, None] + 0.3 * rng.standard_normal((1, N, 2, Y, X))
    ssh[0, :, 0, 0] = np.nan  # land
    temp[0, :, :, 0, 0] = np.nan
    coords = {"time": [0.0], "member": np.arange(N), "layer": [1, 2], "y": ("y", y, {"units": "km"}),
              "x": ("x", x, {"units": "km"}), "lat": (("y", "x"), lat), "lon": (("y", "x"), lon)}
    ens = xr.Dataset({"ssh": (("time", "member", "y", "x"), ssh, {"units": "m"}),
                      "temp": (("time", "member", "layer", "y", "x"), temp, {"units": "degC"})}, coords=coords)
    truth = base + 0.3
    obs = np.full((1, Y, X), np.nan)
    obs[0, ::3, ::2] = truth[::3, ::2]
    obs[0, 0, 0] = np.nan
    obs_ds = xr.Dataset({"ssh": (("time", "y", "x"), obs, {"units": "m"}), "ssh_error": ((), 0.1, {"units": "m"})},
                        coords={k: v for k, v in coords.items() if k not in ("member", "layer")})
    return ens, obs_ds


def test_dataset_analysis_matches_array_api_and_point_obs():
    ens, obs = _grid_ensemble()
    out = analyse_dataset(ens, obs, "letkf", loc_radius_km=30.0)
    assert {"ssh_mean", "ssh_spread", "ssh", "temp_mean", "temp_spread", "temp"} <= set(out.data_vars)
    assert out["temp"].dims == ("time", "member", "layer", "y", "x")
    assert out.attrs["seconds_per_analysis"] > 0 and out.attrs["method"] == "letkf"
    assert np.isnan(out["ssh_mean"].values[0, 0, 0]) and np.isnan(out["temp_mean"].values[0, :, 0, 0]).all()
    # same numbers through the array API: state = [ssh, temp layer 1, temp layer 2] x (y, x)
    E = np.concatenate([ens["ssh"].values[0][:, None], ens["temp"].values[0]], axis=1).reshape(12, -1)
    land = np.isnan(E).all(0)
    E[:, land] = 0.0
    o = obs["ssh"].values[0].ravel()
    idx = np.flatnonzero(np.isfinite(o))
    Ea = letkf(E, o[idx], 0.1, idx, localizer=localizer_for_dataset(ens, 30.0))
    np.testing.assert_allclose(out["temp"].values[0].reshape(12, 2, -1)[..., 1:], Ea.reshape(12, 3, -1)[:, 1:, 1:], atol=1e-4)
    # point observations (y_index / x_index) give the same analysis as the gridded ones
    iy, ix = np.unravel_index(idx, obs["ssh"].shape[1:])
    pts = xr.Dataset({"ssh": ("obs", o[idx], {"units": "m"}), "ssh_error": ((), 0.1, {"units": "m"}),
                      "y_index": ("obs", iy), "x_index": ("obs", ix)}, coords={"time": ("obs", np.zeros(idx.size))})
    out2 = analyse_dataset(ens, pts, "letkf", loc_radius_km=30.0)
    np.testing.assert_allclose(out2["ssh_mean"].values, out["ssh_mean"].values, atol=1e-10, equal_nan=True)
    # analyses move towards the observations where observed
    m = np.isfinite(obs["ssh"].values[0])
    before = np.abs(ens["ssh"].values[0].mean(0)[m] - obs["ssh"].values[0][m]).mean()
    for method in ("etkf", "enkf", "enoi", "letkf"):
        a = analyse_dataset(ens, obs, method, loc_radius_km=30.0 if method == "letkf" else None, rng=1)
        assert np.abs(a["ssh_mean"].values[0][m] - obs["ssh"].values[0][m]).mean() < 0.5 * before


def test_cli_enkf_one_shot_and_cycle(tmp_path, capsys):
    ens, obs = _grid_ensemble()
    ens_path, obs_path, out = tmp_path / "ens.nc", tmp_path / "obs.nc", tmp_path / "an.nc"
    io.write_netcdf(ens, ens_path)
    io.write_netcdf(obs, obs_path)
    args = ["enkf", "--ensemble", str(ens_path), "--obs", str(obs_path), "--out", str(out), "--method", "letkf",
            "--loc-radius", "30", "--inflation", "1.05", "--rtps", "0.5", "--quiet"]
    assert main(args) == 0
    ds = io.open_states(out, check_values=False)
    assert "ssh_mean" in ds and "ssh" in ds and ds.attrs["rtps"] == 0.5
    assert main(args) == 2  # refuses to overwrite
    assert "exists" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0
    est = ["enkf", "--ensemble", str(ens_path), "--obs", str(obs_path), "--out", str(tmp_path / "b.nc"), "--method", "letkf"]
    assert main(est) == 0  # no radius: estimated from the ensemble, printed and recorded
    assert "localisation radius" in capsys.readouterr().out
    assert io.open_states(tmp_path / "b.nc", check_values=False).attrs["localization_radius_source"].startswith("estimated")
    assert main(est[:-2] + ["--method", "letkf", "--loc-radius", "inf", "--overwrite"]) == 2
    assert "etkf" in capsys.readouterr().err
    stats = tmp_path / "l96.nc"
    assert main(["enkf", "--cycle", "lorenz96", "--method", "etkf", "--cycles", "40", "--members", "15", "--inflation", "1.03",
                 "--out", str(stats), "--checkpoint-dir", str(tmp_path / "ck"), "--checkpoint-every", "20", "--quiet"]) == 0
    st = io.read_netcdf(stats)
    assert st.sizes["cycle"] == 40 and float(st["rmse_a"][-10:].mean()) < 0.5
    assert latest_checkpoint(tmp_path / "ck").name == "cycle_000039.nc"


def test_etkf_is_used_by_enoi_consistently_with_array_api():
    ens, obs = _grid_ensemble()
    lib = ens.isel(time=0, drop=True).rename(member="time").assign_coords(time=np.arange(12.0))
    a = analyse_dataset(lib, obs, "enoi", alpha=0.5, loc_radius_km=np.inf)
    assert a.attrs["enoi_alpha"] == 0.5 and a.sizes["member"] == 12
    E = lib["ssh"].values.reshape(12, -1)[:, 1:]
    o = obs["ssh"].values[0].ravel()[1:]
    idx = np.flatnonzero(np.isfinite(o))
    Ea = etkf(E.mean(0) + np.sqrt(0.5) * (E - E.mean(0)), o[idx], 0.1, idx)
    np.testing.assert_allclose(a["ssh_mean"].values[0].ravel()[1:], Ea.mean(0), atol=1e-4)


def test_qg_altimetry_cycled_letkf_beats_climatology():
    from oceanda.experiments.qg_twin import run_qg_altimetry

    res, scores = run_qg_altimetry(days=3, members=8, radius_km=40.0, inflation=1.03, progress=False)
    assert res.stats["rmse_a"].shape == (3,)
    assert np.all(res.stats["rmse_a"] < res.stats["rmse_f"])  # every analysis improves on its forecast
    assert scores["ssh_rmse_ratio"] < 0.8  # already well below climatology after a few daily cycles


def test_filter_settings_are_validated_and_dispatched_once():
    assert set(METHODS) == {"enkf", "etkf", "letkf", "enoi"}
    for bad in ({"inflation": 0.0}, {"inflation": float("inf")}, {"rtps": 1.5}, {"rtpp": -0.1}):
        with pytest.raises(ConfigurationError, match=next(iter(bad))):
            ETKF(**bad)
    with pytest.raises(ConfigurationError, match="radius"):
        LETKF()
    with pytest.raises(ConfigurationError, match="block"):
        LETKF(radius=3.0, block=0)
    with pytest.raises(ConfigurationError, match="alpha"):
        EnOI(alpha=-1.0)
    with pytest.raises(ConfigurationError, match="members"):
        EnOI(members=0)
    with pytest.raises(ConfigurationError, match="form"):
        EnOI(form="kalman")
    with pytest.raises(ConfigurationError, match="method"):
        make_filter("3dvar")
    with pytest.raises(ConfigurationError, match="alpha"):
        make_filter("etkf", alpha=0.5)
    assert make_filter("etkf", strict=False, alpha=0.5, inflation=None) == ETKF()
    assert make_filter(LETKF(radius=3.0), inflation=1.1) == LETKF(radius=3.0, inflation=1.1)
    f = LETKF(radius=3.0, inflation=1.02, block=2)
    assert LETKF.from_dict(f.to_dict()) == f
    # the tuned values are the defaults: one loader
    assert tuned_filter("qg_altimetry") == LETKF(radius=tuned_settings("qg_altimetry")["radius_km"],
                                                 inflation=tuned_settings("qg_altimetry")["inflation"], block=2)
    assert tuned_filter("lorenz96", "etkf").inflation == tuned_settings("lorenz96")["etkf"]["inflation"]
    assert tuned_filter("qg_enoi", radius=50.0).radius == 50.0


def test_filter_objects_equal_the_array_functions():
    rng = np.random.default_rng(11)
    E = rng.standard_normal((10, 12))
    from oceanda.kalman import Observations, enkf, enoi, ring_localizer, schur_enoi_ensemble

    o = Observations(rng.standard_normal(5), 0.5, np.array([0, 2, 5, 7, 11]))
    loc = ring_localizer(12, 3.0)
    kw = {"inflation": 1.05, "rtps": 0.3}
    np.testing.assert_array_equal(ETKF(**kw).assimilate(E, o, 1), etkf(E, o, rng=1, **kw))
    np.testing.assert_array_equal(EnKF(**kw).assimilate(E, o, 1), enkf(E, o, rng=1, **kw))
    np.testing.assert_array_equal(LETKF(radius=3.0, **kw).assimilate(E, o, 1, loc), letkf(E, o, localizer=loc, rng=1, **kw))
    np.testing.assert_array_equal(EnOI(alpha=0.5).assimilate(E, o, 1), enoi(E.mean(0), E, o, alpha=0.5, rng=1))
    np.testing.assert_array_equal(EnOI(alpha=0.5, radius=3.0).assimilate(E, o, 1, loc),  # auto: Schur for index operators
                                  schur_enoi_ensemble(E.mean(0), E, o, alpha=0.5, localizer=loc, rng=1))
    np.testing.assert_array_equal(EnOI(alpha=0.5, radius=3.0, form="transform").assimilate(E, o, 1, loc),
                                  enoi(E.mean(0), E, o, alpha=0.5, localizer=loc, rng=1))
    with pytest.raises(ConfigurationError, match="localizer"):
        LETKF(radius=3.0).assimilate(E, o, 1)
    with pytest.raises(ConfigurationError, match="radius"):
        LETKF(radius=4.0).assimilate(E, o, 1, loc)


def test_cycle_keeps_every_analysis_ensemble_when_asked():
    twin = lorenz96_twin(6, 8, seed=1)
    r = cycle(twin.forecast, twin.E0, twin.observations, ETKF(inflation=1.02), rng=0, truth=twin.truth,
              keep_means=True, keep_ensembles=True, progress=False)
    assert r.analyses.shape == (6, 8, 40)
    np.testing.assert_array_equal(r.analyses[-1], r.ensemble)
    np.testing.assert_allclose(r.analyses.mean(axis=1), r.mean_analyses)
    assert cycle(twin.forecast, twin.E0, twin.observations, ETKF(), rng=0, progress=False).analyses is None
