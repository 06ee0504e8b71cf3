"""`oceanda cycle` and `oceanda.cycle_testbed`: the front door of cycled assimilation (issue 15).

Inputs are the bundled QG sample cut to a few days (copies in tmp_path: the sample is never touched)
and a tiny generated Lorenz-96 sample. Runs are in-process (``cli.main``) at N = 10.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from oceanda import cli

ROOT = Path(__file__).resolve().parents[1]
QG = ROOT / "sample_data" / "qg"
MODEL = ROOT / "sample_data" / "models" / "qg_window"


@pytest.fixture(scope="module")
def qg(tmp_path_factory):
    """The QG library, the first days of eval_1's observations and truth, an embedding cache: paths."""
    d = tmp_path_factory.mktemp("qg_cycle")
    for name, days in (("obs_altimetry_eval_1", 6), ("truth_eval_1", 6), ("obs_altimetry_eval_1", 4)):
        with xr.open_dataset(QG / f"{name}.nc") as ds:
            ds.isel(time=slice(0, days)).load().to_netcdf(d / f"{name}_{days}.nc")
    return {"library": str(QG / "library.nc"), "obs6": str(d / "obs_altimetry_eval_1_6.nc"),
            "obs4": str(d / "obs_altimetry_eval_1_4.nc"), "truth6": str(d / "truth_eval_1_6.nc"),
            "cache": str(d / "cache"), "dir": d}


def _cycle(qg, out, *extra, obs="obs4", truth=None):
    argv = ["cycle", "--testbed", "qg", "--library", qg["library"], "--obs", qg[obs], "--members", "10",
            "--out", str(out), "--quiet", *extra]
    if truth:
        argv += ["--truth", qg[truth]]
    return cli.main(argv)


def _contrastive(qg, out, obs="obs6", truth="truth6"):
    return _cycle(qg, out, "--initial", "contrastive", "--model", str(MODEL), "--cache-dir", qg["cache"],
                  obs=obs, truth=truth)


@pytest.fixture(scope="module")
def warm_and_cold(qg):
    """The contrastive warm start and the climatological start on the first 6 days of eval_1 (N = 10)."""
    warm, cold = qg["dir"] / "warm.nc", qg["dir"] / "cold.nc"
    assert _contrastive(qg, warm) == 0
    assert _cycle(qg, cold, obs="obs6", truth="truth6") == 0
    return warm, cold


def test_writes_the_analysis_layout_with_per_cycle_rmse(qg, tmp_path, capsys):
    digest = hashlib.sha256(Path(qg["obs4"]).read_bytes()).hexdigest()
    out = tmp_path / "cycle.nc"
    argv = ["cycle", "--testbed", "qg", "--library", qg["library"], "--obs", qg["obs4"], "--truth", qg["truth6"],
            "--members", "10", "--out", str(out)]
    assert cli.main(argv) == 0
    line = capsys.readouterr().out.strip()
    assert line.count("\n") == 0 and "ssh rmse" in line and "x climatology" in line and "N=10" in line
    with xr.open_dataset(out) as ds:
        assert ds.attrs["Conventions"].startswith("CF-") and ds.attrs["testbed"] == "qg"
        assert {"ssh_mean", "ssh_spread", "ssh", "psi_mean", "ssh_rmse", "ssh_spread_rms", "ssh_rmse_climatology"} <= set(ds)
        assert ds["ssh"].dims == ("time", "member", "y", "x") and ds.sizes["member"] == 10 and ds.sizes["time"] == 4
        assert ds["ssh_mean"].attrs["units"] == "m" and np.all(np.isfinite(ds["ssh_rmse"].values))
        assert float(ds["ssh_rmse"][-1]) < float(ds["ssh_rmse_climatology"][-1])  # it learns from the observations
        assert ds.attrs["loc_radius_km"] > 0 and ds.attrs["members"] == 10
    assert hashlib.sha256(Path(qg["obs4"]).read_bytes()).hexdigest() == digest  # inputs never modified
    assert cli.main(argv) == 2  # an existing output without --overwrite
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(out) in err and "overwrite" in err
    assert cli.main([*argv, "--overwrite", "--quiet"]) == 0


def test_hybrid_beta_0_is_the_plain_letkf_bit_for_bit(qg, tmp_path):
    from oceanda import api
    from oceanda.experiments import qg_cycle as qc
    from oceanda.experiments.qg_twin import qg_letkf_settings
    from oceanda.kalman import localizer_for_dataset

    assert _cycle(qg, tmp_path / "b0.nc", "--hybrid-beta", "0", "--seed", "3") == 0
    assert _cycle(qg, tmp_path / "b3.nc", "--hybrid-beta", "0.3", "--extra", "library", "--seed", "3") == 0
    # the plain LETKF through the front door's cycle, no extra= / hybrid_beta= given: the same draws
    lib = xr.open_dataset(qg["library"]).load()
    setup = qc.Setup.of(lib, xr.open_dataset(qg["obs4"]).load())
    f, N = qg_letkf_settings(members=10)
    E0 = setup.library_states(np.sort(np.random.default_rng(3).choice(lib.sizes["time"], size=N, replace=False)))
    loc = localizer_for_dataset(lib, f.radius, taper=f.taper, block=f.block, periodic=True)
    obs = setup.observations
    r = api.cycle(setup.forecast, E0, obs, f, localizer=loc, rng=4, t0=obs[0].time - 1.0, progress=False,
                  keep_ensembles=True)
    plain = qc.cycle_dataset(setup, r.analyses, {})
    with xr.open_dataset(tmp_path / "b0.nc") as b0, xr.open_dataset(tmp_path / "b3.nc") as b3:
        for v in ("ssh", "psi", "ssh_mean", "psi_spread"):
            assert np.array_equal(b0[v].values, plain[v].values), v
        assert not np.array_equal(b3["ssh"].values, b0["ssh"].values)  # beta > 0 does change the analyses


def test_api_cycle_passes_the_hybrid_covariance_through():
    from oceanda import api
    from oceanda.kalman import Observations, make_filter

    g = np.random.default_rng(0)
    E0, static = g.normal(size=(8, 12)), g.normal(size=(16, 12))
    obs = [Observations(g.normal(size=6), np.ones(6), np.arange(0, 12, 2), time=float(k + 1)) for k in range(3)]

    def run(**kw):
        return api.cycle(lambda E, t0, t1: E, E0, obs, make_filter("etkf"), rng=1, progress=False, keep_ensembles=True,
                         **kw).analyses

    plain = run()
    assert np.array_equal(run(extra=lambda k, Ef: static, hybrid_beta=0.0), plain)
    assert not np.allclose(run(extra=lambda k, Ef: static, hybrid_beta=0.5), plain)


def test_contrastive_warm_start_beats_the_climatological_start_and_is_deterministic(qg, warm_and_cold, tmp_path):
    warm, cold = warm_and_cold
    with xr.open_dataset(warm) as w, xr.open_dataset(cold) as c:
        assert w.attrs["initial"] == "contrastive" and c.attrs["initial"] == "climatology"
        rw, rc = float(w["ssh_rmse"].mean()), float(c["ssh_rmse"].mean())
        assert rw < 0.95 * rc, (rw, rc)  # measured: 0.491 vs 0.561 x climatology over these 6 days
        assert w.attrs["rmse_ratio_to_climatology"] < c.attrs["rmse_ratio_to_climatology"]
        again = tmp_path / "again.nc"
        assert _contrastive(qg, again) == 0  # same seed: the same file values
        with xr.open_dataset(again) as a:
            for v in ("ssh", "psi", "ssh_rmse"):
                assert np.array_equal(a[v].values, w[v].values), v


def _one_line_error(capsys, argv, *words):
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse: the option's value
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, (w, err)


@pytest.mark.parametrize("extra, words", [
    (["--initial", "contrastive"], ["--model", "--initial contrastive"]),
    (["--hybrid-beta", "1.5"], ["--hybrid-beta=1.5", "[0, 1)"]),
    (["--hybrid-beta", "0.2", "--extra", "contrastive"], ["--model", "--extra contrastive"]),
    (["--extra", "library"], ["--extra", "--hybrid-beta"]),
    (["--model", str(MODEL)], ["--model", "unused"]),
    (["--members", "1"], ["--members=1"]),
    (["--members", "5000"], ["--members=5000", "408"]),
    (["--warm-draw", "resampled"], ["--warm-draw resampled", "--initial enoi"]),
    (["--initial", "enoi", "--warm-draw", "shuffled"], ["--warm-draw", "shuffled"]),
])
def test_bad_options_are_one_line_errors(qg, tmp_path, capsys, extra, words):
    _one_line_error(capsys, ["cycle", "--testbed", "qg", "--library", qg["library"], "--obs", qg["obs4"],
                             "--out", str(tmp_path / "x.nc"), "--quiet", *extra], *words)
    assert not (tmp_path / "x.nc").exists()


def test_bad_files_are_one_line_errors(qg, tmp_path, capsys):
    base = ["cycle", "--testbed", "qg", "--out", str(tmp_path / "x.nc"), "--quiet"]
    with xr.open_dataset(qg["library"]) as lib:
        lib[["ssh"]].isel(time=slice(0, 20)).load().to_netcdf(tmp_path / "no_psi.nc")
    _one_line_error(capsys, [*base, "--library", str(tmp_path / "no_psi.nc"), "--obs", qg["obs4"]],
                    str(tmp_path / "no_psi.nc"), "psi")
    with xr.open_dataset(qg["obs4"]) as obs:
        obs.isel(x=slice(0, 32)).load().to_netcdf(tmp_path / "half_grid.nc")
    _one_line_error(capsys, [*base, "--library", qg["library"], "--obs", str(tmp_path / "half_grid.nc")],
                    str(tmp_path / "half_grid.nc"), "'x'")
    _one_line_error(capsys, [*base, "--library", qg["library"], "--obs", qg["obs4"], "--truth",
                             str(QG / "truth_eval_2.nc")], "truth_eval_2.nc", "observation time")
    _one_line_error(capsys, [*base, "--library", qg["library"], "--obs", qg["obs4"], "--out", qg["obs4"],
                             "--overwrite"], qg["obs4"], "input")
    assert not (tmp_path / "x.nc").exists()


@pytest.fixture(scope="module")
def l96(tmp_path_factory):
    """A tiny Lorenz-96 sample (``oceanda sample-data --testbed lorenz96 --size tiny``: 42 library states, 41 times)."""
    from oceanda import api

    out = tmp_path_factory.mktemp("l96") / "sample"
    api.sample_data("lorenz96", out, size="tiny", quiet=True)
    return out


def test_lorenz96_cycle_writes_rmse_per_time(l96, tmp_path, capsys):
    out = tmp_path / "l96.nc"
    argv = ["cycle", "--testbed", "lorenz96", "--library", str(l96 / "library.nc"), "--obs",
            str(l96 / "obs_half_eval_1.nc"), "--truth", str(l96 / "truth_eval_1.nc"), "--out", str(out)]
    assert cli.main([*argv, "--initial", "enoi"]) == 0
    assert "X rmse" in capsys.readouterr().out
    with xr.open_dataset(out) as ds:
        assert {"X_mean", "X_spread", "X", "X_rmse", "X_spread_rms", "X_rmse_climatology"} <= set(ds)
        assert ds.sizes["time"] == 41 and ds.sizes["member"] == 20 and "model_time" in ds.coords
        assert ds.attrs["loc_radius"] == 12.0 and ds.attrs["initial"] == "enoi"
        late = float(ds["X_rmse"][-10:].mean())
        assert late < 0.2 * float(ds["X_rmse_climatology"].mean())  # half the variables observed: the filter tracks
    assert cli.main([*argv, "--method", "etkf", "--hybrid-beta", "0.1", "--overwrite", "--quiet"]) == 0
    for draw in ("matched", "resampled"):  # the warm start's draw: recorded, and it changes the first analysis
        assert cli.main([*argv, "--initial", "enoi", "--warm-draw", draw, "--out", str(tmp_path / f"{draw}.nc"),
                         "--quiet"]) == 0
    with xr.open_dataset(tmp_path / "matched.nc") as m, xr.open_dataset(tmp_path / "resampled.nc") as r:
        assert m.attrs["warm_draw"] == "matched" and r.attrs["warm_draw"] == "resampled"
        assert not np.allclose(m["X"].isel(time=0), r["X"].isel(time=0))
    with xr.open_dataset(out) as ds:
        assert ds.attrs["method"] == "etkf" and ds.attrs["extra"] == "library" and np.isfinite(ds["X_rmse"]).all()


@pytest.mark.parametrize("extra, words", [
    (["--initial", "contrastive"], ["--initial contrastive", "Lorenz-96"]),
    (["--model", str(MODEL)], ["--model", "Lorenz-96"]),
    (["--hybrid-beta", "0.1", "--extra", "contrastive"], ["--extra contrastive"]),
])
def test_lorenz96_refuses_the_contrastive_options(l96, tmp_path, capsys, extra, words):
    _one_line_error(capsys, ["cycle", "--testbed", "lorenz96", "--library", str(l96 / "library.nc"), "--obs",
                             str(l96 / "obs_half_eval_1.nc"), "--out", str(tmp_path / "x.nc"), *extra], *words)


def test_lorenz96_obs_are_not_qg_obs(l96, qg, tmp_path, capsys):
    _one_line_error(capsys, ["cycle", "--testbed", "lorenz96", "--library", str(l96 / "library.nc"), "--obs",
                             qg["obs4"], "--out", str(tmp_path / "x.nc")], qg["obs4"], "state variables")


def test_help_explains_the_options_without_heavy_imports():
    parser, _ = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "verb").choices["cycle"]
    text = sub.format_help()
    for word in ("tuned.json", "--initial", "climatology", "enoi", "contrastive", "--hybrid-beta", "(1 - B)",
                 "Example", "oceanda cycle --testbed qg", "--truth", "--members", "--overwrite"):
        assert word in text, word


def test_the_api_front_door(qg):
    import oceanda

    assert "cycle_testbed" in oceanda.__all__
    ds = oceanda.cycle_testbed("qg", qg["library"], qg["obs4"], truth=qg["truth6"], members=10, method="etkf")
    assert ds.attrs["method"] == "etkf" and "loc_radius_km" not in ds.attrs and ds.sizes["time"] == 4
    with pytest.raises(oceanda.ConfigurationError, match="model=None"):
        oceanda.cycle_testbed("qg", qg["library"], qg["obs4"], initial="contrastive")
    with pytest.raises(oceanda.ConfigurationError, match="hybrid_beta"):
        oceanda.cycle_testbed("qg", qg["library"], qg["obs4"], hybrid_beta=1.0)
