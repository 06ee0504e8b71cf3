"""oceanda.report.evaluate and `oceanda evaluate` on small synthetic truths and analyses."""

import csv
import json

import numpy as np
import pytest
import xarray as xr
from conftest import make_state_dataset

from oceanda import cli, fields, io, metrics
from oceanda.errors import DataValidationError, GridMismatchError
from oceanda.report import HEADLINE_KEYS, evaluate, observation_points

M_MEMBERS = 8
SIGMA = 0.4


def _truth():
    return make_state_dataset(nt=6, ny=12, nx=16, seed=1)


def _calibrated_analysis(truth, seed=0, seconds=0.25):
    """Truth and members drawn around the same random centre: calibrated by construction."""
    rng = np.random.default_rng(seed)
    arr, layout = fields.to_array(truth, dtype=np.float64)
    centre = arr - SIGMA * rng.normal(size=arr.shape)
    members = centre[:, None] + SIGMA * rng.normal(size=(arr.shape[0], M_MEMBERS, *arr.shape[1:]))
    return fields.analysis_dataset(members, layout, truth, truth["time"].values,
                                   attrs={"seconds_per_analysis": seconds, "method": "synthetic"})


def _gridded_obs(truth, seed=2):
    rng = np.random.default_rng(seed)
    obs = truth[["ssh"]].where(rng.random(truth["ssh"].shape) < 0.15)
    obs["ssh_error"] = xr.DataArray(0.1, attrs={"units": "m"})
    return obs


@pytest.fixture(scope="module")
def report_run(tmp_path_factory):
    truth = _truth()
    ens = _calibrated_analysis(truth)
    det = ens[["ssh_mean", "psi_mean"]]
    det.attrs = {}
    out = tmp_path_factory.mktemp("report")
    obs = _gridded_obs(truth)
    result = evaluate(truth, {"ens": ens, "det": det}, out, obs=obs, time_index=2, overwrite=True, quiet=True)
    return truth, ens, det, obs, out, result


def test_metrics_json_contract_and_values(report_run):
    truth, ens, det, _, out, result = report_run
    on_disk = json.loads((out / "metrics.json").read_text())
    assert set(on_disk["methods"]) == {"ens", "det"}
    for name in ("ens", "det"):
        assert set(HEADLINE_KEYS) <= set(on_disk["methods"][name])
    e, d = on_disk["methods"]["ens"], on_disk["methods"]["det"]
    assert e["variable"] == "ssh" and set(e["variables"]) == {"ssh", "psi"}
    assert e["rmse"] == pytest.approx(float(metrics.rmse(ens["ssh_mean"], truth["ssh"])))
    assert e["crps"] == pytest.approx(float(metrics.crps_ensemble(ens["ssh"], truth["ssh"]).mean()))
    assert e["seconds_per_analysis"] == 0.25 and d["seconds_per_analysis"] is None
    assert e["n_members"] == M_MEMBERS and e["crps_kind"] == "ensemble_fair"
    assert 0.8 < e["spread_skill"] < 1.25  # calibrated by construction (small sample)
    assert 0.8 < e["variables"]["psi"]["spread_skill"] < 1.25
    assert np.isfinite(e["energy_score"]) and np.isfinite(e["effective_resolution_km"])
    # the deterministic analysis: one-member ensemble -> no spread, CRPS = mean absolute error
    assert d["spread"] == 0 and d["spread_skill"] == 0 and d["crps_kind"] == "deterministic"
    assert d["crps"] == pytest.approx(float(abs(det["ssh_mean"] - truth["ssh"]).mean()))
    assert d["rmse"] == pytest.approx(e["rmse"]) and d["crps"] > e["crps"]  # same mean, ensemble scores better
    assert d["nrmse_score"] == pytest.approx(1 - e["rmse"] / float(metrics.rms(truth["ssh"])))
    assert result["methods"]["ens"]["rmse"] == e["rmse"]


def test_csv_and_figures(report_run):
    *_, out, result = report_run
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [(r["method"], r["variable"]) for r in rows] == [("ens", "ssh"), ("ens", "psi"), ("det", "ssh"), ("det", "psi")]
    assert float(rows[0]["rmse"]) == pytest.approx(result["methods"]["ens"]["rmse"], rel=1e-5)
    assert rows[2]["energy_score"] != "" and rows[2]["seconds_per_analysis"] == ""
    figs = result["meta"]["figures"]
    assert {"map_ens_ssh.png", "map_det_ssh.png", "timeseries_ssh.png", "rank_histogram_ssh.png", "spectra_ssh.png"} <= set(figs)
    for f in figs:
        assert (out / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result["meta"]["map_time"].startswith("2021-01-03")


def test_observation_points_gridded_and_point(report_run):
    truth, _, _, obs, _, _ = report_run
    when = truth["time"].values[2]
    lat, _ = observation_points(obs, "ssh", when, truth)
    assert lat.size == int(np.isfinite(obs["ssh"].sel(time=when)).sum()) > 0
    # psi is not observed: the locations of the observed variable are drawn
    assert observation_points(obs, "psi", when, truth)[0].size == lat.size
    times = truth["time"].values
    pts = xr.Dataset({"ssh": ("obs", np.arange(4.0), {"units": "m"})},
                     coords={"lat": ("obs", [38.0, 38.1, 38.2, 38.3]), "lon": ("obs", [-60.0] * 4),
                             "time": ("obs", [times[2], times[2], times[3], times[0]])})
    plat, _ = observation_points(pts, "ssh", when, truth)
    np.testing.assert_allclose(plat, [38.0, 38.1])


def test_times_intersection_and_no_overlap(tmp_path):
    truth = _truth()
    ens = _calibrated_analysis(truth)
    shifted = ens.assign_coords(time=ens["time"].values + np.timedelta64(2, "D"))
    res = evaluate(truth, {"late": shifted}, tmp_path / "a", figures=False, quiet=True)
    assert res["methods"]["late"]["n_times"] == 4
    expected = float(metrics.rmse(shifted["ssh_mean"].isel(time=slice(0, 4)), truth["ssh"].isel(time=slice(2, 6))
                                  .assign_coords(time=shifted["time"].values[:4])))
    assert res["methods"]["late"]["rmse"] == pytest.approx(expected)
    far = ens.assign_coords(time=ens["time"].values + np.timedelta64(100, "D"))
    with pytest.raises(DataValidationError, match="analysis 'far'.*no time in common"):
        evaluate(truth, {"far": far}, tmp_path / "b", figures=False, quiet=True)


def test_variable_choice_and_errors(tmp_path):
    truth = _truth()
    ens = _calibrated_analysis(truth)
    only_psi = ens[["psi_mean", "psi_spread", "psi"]]
    res = evaluate(truth, {"a": ens, "b": only_psi}, tmp_path / "a", figures=False, quiet=True)
    assert res["meta"]["headline_variable"] == "psi"  # the first truth variable in every analysis
    assert set(res["methods"]["a"]["variables"]) == {"ssh", "psi"}
    with pytest.raises(DataValidationError, match="analysis 'b'.*'ssh' not found"):
        evaluate(truth, {"a": ens, "b": only_psi}, tmp_path / "b", variables=["ssh"], figures=False)
    res = evaluate(truth, {"a": ens}, tmp_path / "c", variables=["psi"], figures=False)
    assert res["methods"]["a"]["variable"] == "psi" and set(res["methods"]["a"]["variables"]) == {"psi"}
    small = _calibrated_analysis(make_state_dataset(nt=6, ny=10, nx=16, seed=1))
    with pytest.raises(GridMismatchError, match="y=10; expected 12"):
        evaluate(truth, {"small": small}, tmp_path / "d", figures=False)


def test_gaussian_analysis_without_members(tmp_path):
    truth = _truth()
    ens = _calibrated_analysis(truth)
    gauss = ens[["ssh_mean", "ssh_spread"]]
    gauss.attrs["n_members"] = M_MEMBERS
    res = evaluate(truth[["ssh"]], {"g": gauss, "e": ens}, tmp_path / "g", figures=False)["methods"]
    g, e = res["g"], res["e"]
    assert g["crps_kind"] == "gaussian" and g["energy_score"] is None and g["n_members"] == M_MEMBERS
    assert g["spread"] == pytest.approx(e["spread"]) and g["spread_skill"] == pytest.approx(e["spread_skill"])
    assert g["crps"] == pytest.approx(float(metrics.crps_gaussian(gauss["ssh_mean"], gauss["ssh_spread"], truth["ssh"]).mean()))


def test_cli_evaluate(tmp_path, capsys):
    truth = _truth()
    ens = _calibrated_analysis(truth)
    io.write_netcdf(truth, tmp_path / "truth.nc")
    io.write_netcdf(ens, tmp_path / "ens.nc")
    io.write_netcdf(_gridded_obs(truth), tmp_path / "obs.nc")
    out = tmp_path / "report"
    args = ["evaluate", "--truth", str(tmp_path / "truth.nc"), "--analysis", f"ens={tmp_path / 'ens.nc'}",
            "--out", str(out), "--obs", str(tmp_path / "obs.nc"), "--time", "-1", "--variable", "ssh", "--quiet"]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "ens" in printed and "metrics.json" in printed
    data = json.loads((out / "metrics.json").read_text())
    assert data["methods"]["ens"]["seconds_per_analysis"] == 0.25
    assert data["meta"]["map_time"].startswith("2021-01-06")
    assert cli.main(args) == 2  # refuses a non-empty report directory
    assert "--overwrite" in capsys.readouterr().err
    assert cli.main(args[:4] + ["ens"] + args[5:]) == 2
    assert "NAME=FILE" in capsys.readouterr().err


def test_grid_without_km_coordinates_scores_without_spectra(tmp_path):
    truth = _truth()
    ens = _calibrated_analysis(truth)
    drop = [c for c in ("x", "y", "lat", "lon") if c in truth.coords]
    bare_t, bare_e = truth.drop_vars(drop), ens.drop_vars([c for c in drop if c in ens.coords])
    with pytest.warns(UserWarning, match="no spectra"):
        res = evaluate(bare_t, {"e": bare_e}, tmp_path / "r", variables=["ssh"], figures=False)
    e = res["methods"]["e"]
    assert e["effective_resolution_km"] is None
    assert e["rmse"] == pytest.approx(float(metrics.rmse(ens["ssh_mean"], truth["ssh"])))


def _png_pixels(folder):
    from PIL import Image

    return {p.name: np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))}


def test_a_map_worker_draws_every_second_map_and_the_figures_are_the_same(tmp_path, monkeypatch):
    """evaluate(map_worker=True): a second process draws half the maps, pixel for pixel as this one would."""
    import oceanda.report as report

    truth = _truth()
    analyses = {f"m{k}": _calibrated_analysis(truth, seed=k) for k in range(report.MAP_WORKER_FROM + 1)}
    obs = _gridded_obs(truth)
    here = []  # the maps this process draws (the worker's module is not patched)
    orig = report.plotting.plot_analysis_maps
    monkeypatch.setattr(report.plotting, "plot_analysis_maps",
                        lambda *a, **k: (here.append(k["title"].split(":")[0]), orig(*a, **k))[1])
    a = evaluate(truth, analyses, tmp_path / "serial", obs=obs, quiet=True)
    assert len(here) == len(analyses)
    here.clear()
    b = evaluate(truth, analyses, tmp_path / "worker", obs=obs, quiet=True, map_worker=True)
    assert here == [f"m{k}" for k in range(0, len(analyses), 2)]  # the others: the worker's
    assert a["meta"]["figures"] == b["meta"]["figures"]
    pa, pb = _png_pixels(tmp_path / "serial"), _png_pixels(tmp_path / "worker")
    assert sorted(pa) == sorted(pb) and all(np.array_equal(pa[k], pb[k]) for k in pa)
    assert sorted(p.name for p in (tmp_path / "worker").iterdir()) == sorted(p.name for p in (tmp_path / "serial").iterdir())


def test_maps_of_a_dead_worker_are_drawn_here(tmp_path, monkeypatch):
    from concurrent.futures import Future
    from concurrent.futures.process import BrokenProcessPool

    import oceanda.report as report

    class DeadPool:
        def submit(self, fn, *args):
            f = Future()
            f.set_exception(BrokenProcessPool("killed"))
            return f

        def shutdown(self, **kw):
            pass

    class BrokenPool(DeadPool):
        def submit(self, fn, *args):
            raise BrokenProcessPool("died during start-up")

    drawn = []
    monkeypatch.setattr(report, "_draw_map", lambda job: drawn.append(job[0].name) or job[0].name)
    mw = report.MapWorker(False)
    assert mw.pool is None
    mw.pool = DeadPool()
    jobs = [(tmp_path / f"map_{k}.png", {}) for k in range(5)]
    assert mw.draw(jobs) == [f"map_{k}.png" for k in range(5)]
    assert drawn == ["map_0.png", "map_2.png", "map_4.png", "map_1.png", "map_3.png"]
    drawn.clear()
    mw.pool = BrokenPool()  # submit itself refuses: every map drawn here, in order
    assert mw.draw(jobs) == [f"map_{k}.png" for k in range(5)] and drawn == [f"map_{k}.png" for k in range(5)]
