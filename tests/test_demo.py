"""The main job on the bundled sample: `oceanda demo` (shortened) and `oceanda assimilate` on the sample."""

import json

import numpy as np
import pytest
import xarray as xr

from oceanda.cli import main
from oceanda.demo import format_table, run_demo
from oceanda.errors import OutputExistsError
from oceanda.sampledata import bundled_sample_dir


def test_demo_short_run_writes_analyses_and_report(tmp_path):
    res = run_demo(tmp_path / "demo", days=2, quiet=True, members=8)
    methods = res.metrics["methods"]
    for name in ("contrastive_local", "contrastive_hybrid", "contrastive_global", "enoi", "letkf_cycled",
                 "contrastive_cycled", "enoi_cycled", "climatology"):
        assert name in methods, name
        m = methods[name]
        for key in ("rmse", "bias", "spread", "spread_skill", "crps", "energy_score", "nrmse_score",
                    "effective_resolution_km", "seconds_per_analysis"):
            assert key in m, (name, key)
        assert np.isfinite(m["rmse"]) and m["rmse"] > 0
        with xr.open_dataset(res.files[name]) as ds:
            assert {"ssh_mean", "ssh_spread", "ssh", "psi_mean"} <= set(ds.data_vars)
            assert ds.sizes["time"] == 2 and ds.sizes["member"] == 8
            assert ds.attrs["Conventions"] == "CF-1.8"
    on_disk = json.loads((tmp_path / "demo" / "report" / "metrics.json").read_text())
    assert set(on_disk["methods"]) == set(methods)
    # every method sees the same observations, and every one but climatology uses them
    assert methods["letkf_cycled"]["rmse"] < methods["climatology"]["rmse"]
    assert methods["enoi"]["rmse"] < methods["climatology"]["rmse"]
    assert methods["contrastive_hybrid"]["rmse"] < methods["climatology"]["rmse"]
    assert methods["contrastive_cycled"]["rmse"] < methods["climatology"]["rmse"]
    maps = sorted(p.name for p in (tmp_path / "demo" / "report").glob("map_*.png"))
    assert len(maps) == 8
    table = format_table(res.metrics)
    assert "contrastive_local" in table and "RMSE/clim" in table
    with pytest.raises(OutputExistsError):
        run_demo(tmp_path / "demo", days=1, quiet=True)


def test_assimilate_cli_on_bundled_sample_global_mode(tmp_path):
    data = bundled_sample_dir("qg")
    model = data.parent / "models" / "qg_field"
    out = tmp_path / "analysis.nc"
    args = ["assimilate", "--model", str(model), "--library", str(data / "library.nc"), "--obs",
            str(data / "obs_altimetry_eval_2.nc"), "--out", str(out), "--mode", "global", "--members", "6",
            "--top-k", "4", "--quiet"]
    args += ["--cache-dir", str(tmp_path / "cache")]  # keep the bundled model directory clean
    assert main(args) == 0
    assert not (model / "library_cache").exists() or any((tmp_path / "cache").iterdir())
    with xr.open_dataset(out) as a:
        for v in ("ssh_mean", "ssh_spread", "ssh", "psi_mean", "psi_spread", "psi", "ess", "retrieved_index",
                  "retrieved_score", "weight"):
            assert v in a, v
        assert a.sizes["time"] == 31 and a.sizes["member"] == 6 and a.sizes["rank"] == 4
        np.testing.assert_allclose(a.weight.sum("particle"), 1.0, rtol=1e-5)
        assert a.attrs["mode"] == "global" and a.attrs["seconds_per_analysis"] > 0
        assert "assimilate" in a.attrs["command"]


def test_table_explains_a_resolution_never_reached():
    methods = {"enoi": {"rmse": 0.01, "effective_resolution_km": None, "effective_resolution_status": "not_resolved"},
               "climatology": {"rmse": 0.02, "effective_resolution_km": None, "effective_resolution_status": "resolved"}}
    table = format_table({"methods": methods})
    assert table.splitlines()[-1] == "eff.res km '-': not resolved at any scale up to the domain size"
    assert "0.500" in table  # RMSE/clim of enoi
    methods["enoi"]["effective_resolution_status"] = "resolved"
    assert "not resolved" not in format_table({"methods": methods})


class _Boom(RuntimeError):
    pass


def _fake_inputs(monkeypatch, demo):
    """The demo's stages without their heavy work: inputs, the report and the contrastive cycle are stubbed."""
    monkeypatch.setattr(demo, "_read_inputs", lambda *a: demo._Inputs(None, None, None, None))
    monkeypatch.setattr(demo, "_contrastive_cycled", lambda *a: None)
    monkeypatch.setattr("oceanda.report.evaluate", lambda *a, **k: {"methods": {}})


def test_a_failing_contrastive_stage_stops_the_baselines_thread(tmp_path, monkeypatch):
    import threading
    import time

    import oceanda.demo as demo

    _fake_inputs(monkeypatch, demo)
    seen = {}
    started = threading.Event()

    def baselines(inp, save, *a):
        started.set()
        try:
            for _ in range(500):  # a long stage: polls between its steps as _baselines does between stages
                save.check()
                time.sleep(0.01)
        except demo._Cancelled:
            seen["cancelled"] = True
            raise

    def contrastive(*a):
        started.wait(5)
        raise _Boom("the local analysis failed")

    monkeypatch.setattr(demo, "_baselines", baselines)
    monkeypatch.setattr(demo, "_contrastive", contrastive)
    tic = time.perf_counter()
    with pytest.raises(_Boom):
        run_demo(tmp_path / "demo", quiet=True)
    assert seen == {"cancelled": True} and time.perf_counter() - tic < 4  # stopped, not run to its end
    assert not (tmp_path / "demo").exists() and list(tmp_path.iterdir()) == []


def test_a_failing_baseline_fails_the_demo_after_the_contrastive_stage(tmp_path, monkeypatch):
    import oceanda.demo as demo

    _fake_inputs(monkeypatch, demo)
    ran = []

    def baselines(*a):
        raise _Boom("EnOI failed")

    monkeypatch.setattr(demo, "_baselines", baselines)
    monkeypatch.setattr(demo, "_contrastive", lambda *a: ran.append("contrastive"))
    with pytest.raises(_Boom, match="EnOI"):
        run_demo(tmp_path / "demo", quiet=True)
    assert ran == ["contrastive"] and list(tmp_path.iterdir()) == []


def test_a_failing_baseline_stops_the_contrastive_stages_and_its_error_is_raised(tmp_path, monkeypatch):
    import threading
    import time

    import oceanda.demo as demo

    _fake_inputs(monkeypatch, demo)
    started, seen = threading.Event(), {}

    def baselines(*a):
        started.wait(5)
        raise _Boom("EnOI failed")

    def contrastive(inp, save, *a):
        started.set()
        try:
            for _ in range(500):  # stages that save now and then
                save.check()
                time.sleep(0.01)
        except demo._Cancelled:
            seen["cancelled"] = True
            raise

    monkeypatch.setattr(demo, "_baselines", baselines)
    monkeypatch.setattr(demo, "_contrastive", contrastive)
    with pytest.raises(_Boom, match="EnOI"):
        run_demo(tmp_path / "demo", quiet=True)
    assert seen == {"cancelled": True} and list(tmp_path.iterdir()) == []


def test_the_report_sees_the_analyses_in_the_table_order_whichever_thread_saved_first(tmp_path, monkeypatch):
    import oceanda.demo as demo

    _fake_inputs(monkeypatch, demo)
    got = {}
    ds = xr.Dataset({"ssh": (("time",), np.zeros(1))})

    def baselines(inp, save, *a):
        for n in ("climatology", "enoi_cycled", "enoi", "letkf_cycled"):
            save.analyses[n] = ds

    def contrastive(inp, save, models, modes, *a):
        for m in reversed(modes):
            save.analyses[f"contrastive_{m}"] = ds

    monkeypatch.setattr(demo, "_baselines", baselines)
    monkeypatch.setattr(demo, "_contrastive", contrastive)
    monkeypatch.setattr("oceanda.report.evaluate", lambda truth, analyses, *a, **k: got.update(analyses) or {})
    run_demo(tmp_path / "demo", quiet=True)
    assert list(got) == ["contrastive_local", "contrastive_hybrid", "contrastive_global", "enoi", "letkf_cycled",
                         "enoi_cycled", "climatology"]
