"""Round-2 hardening: what the file-mutation fuzz suite (tests/test_fuzz_files.py) does not reach.

evaluate: units converted (cm scores as m) or refused, Inf in members refused while an all-NaN spread is
accepted, nothing left at REPORT_DIR when a late step fails, an existing folder still written into;
conventions: non-numeric fields refused but per-pixel times and static string tables not, any dim order
giving the canonical one (same arrays, same grid fingerprint); fields/kalman errors naming the file.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from conftest import make_state_dataset

from oceanda import conventions, fields, io, report
from oceanda.errors import DataValidationError
from oceanda.kalman.dataset import analyse_dataset


def _truth_and_analysis(tmp_path, members=6, scale=1.0, units="m", spread=False):
    """truth.nc (ssh in m) and analysis.nc (members, mean[, spread]) in ``units`` (values x ``scale``)."""
    truth = make_state_dataset(nt=3, ny=16, nx=16, layers=False, seed=1)
    rng = np.random.default_rng(2)
    ens = truth["ssh"].values[:, None] + rng.normal(0, 0.3, (3, members, 16, 16))
    ana = xr.Dataset(coords={k: truth[k] for k in ("time", "y", "x", "lat", "lon")})
    ana["ssh"] = (("time", "member", "y", "x"), ens * scale, {"units": units})
    ana["ssh_mean"] = (("time", "y", "x"), ens.mean(1) * scale, {"units": units})
    if spread:
        ana["ssh_spread"] = (("time", "y", "x"), ens.std(1, ddof=1) * scale, {"units": units})
    truth.to_netcdf(tmp_path / "truth.nc")
    ana.to_netcdf(tmp_path / f"analysis_{units}.nc")
    return tmp_path / "truth.nc", tmp_path / f"analysis_{units}.nc"


def _evaluate(truth_path, analysis_path, out, **kw):
    truth = io.open_states(truth_path)
    analysis = io.open_states(analysis_path, check_values=False)
    return report.evaluate(truth, {"a": analysis}, out, figures=False, quiet=True, **kw)


# ---------------------------------------------------------------------------------------------- evaluate


def test_evaluate_analysis_in_cm_scores_as_in_m(tmp_path):
    t, a_m = _truth_and_analysis(tmp_path)
    _, a_cm = _truth_and_analysis(tmp_path, scale=100.0, units="cm")
    in_m = _evaluate(t, a_m, tmp_path / "m")["methods"]["a"]
    with pytest.warns(UserWarning, match="ssh_mean from 'cm'.*converted to the truth's 'm'"):
        in_cm = _evaluate(t, a_cm, tmp_path / "cm")["methods"]["a"]
    assert in_cm["units"] == "m"
    for key in ("rmse", "bias", "spread", "crps", "energy_score"):
        assert in_cm[key] == pytest.approx(in_m[key], rel=1e-9), key


def test_evaluate_incompatible_analysis_units_refused_naming_both_files(tmp_path):
    t, a = _truth_and_analysis(tmp_path, units="K")
    with pytest.raises(DataValidationError) as exc:
        _evaluate(t, a, tmp_path / "report")
    msg = str(exc.value)
    assert str(a) in msg and str(t) in msg and "'ssh_mean'" in msg and "'K'" in msg
    assert not (tmp_path / "report").exists()


def test_evaluate_inf_in_a_member_refused_all_nan_spread_accepted(tmp_path):
    t, a = _truth_and_analysis(tmp_path, spread=True)
    with xr.open_dataset(a) as ds:
        ds = ds.load()
    ok = ds.drop_vars("ssh").assign(ssh_spread=ds["ssh_spread"] * np.nan)  # a Gaussian analysis, spread unknown
    ok.to_netcdf(tmp_path / "nan_spread.nc")
    res = _evaluate(t, tmp_path / "nan_spread.nc", tmp_path / "r1")
    assert np.isfinite(res["methods"]["a"]["rmse"])
    bad = ds.drop_vars("ssh_mean")
    members = bad["ssh"].values.copy()
    members[1, 2, 3, 4] = np.inf
    bad["ssh"] = bad["ssh"].copy(data=members)
    bad.to_netcdf(tmp_path / "inf_member.nc")
    with pytest.raises(DataValidationError, match=r"inf_member\.nc.*variable 'ssh' contains Inf"):
        _evaluate(t, tmp_path / "inf_member.nc", tmp_path / "r2")
    assert not (tmp_path / "r2").exists()


def test_evaluate_late_failure_leaves_no_report_dir(tmp_path, monkeypatch):
    t, a = _truth_and_analysis(tmp_path)

    def broken(*args, **kwargs):
        raise RuntimeError("figure backend failed")

    monkeypatch.setattr(report, "_figures", broken)
    truth, analysis = io.open_states(t), io.open_states(a, check_values=False)
    with pytest.raises(RuntimeError):
        report.evaluate(truth, {"a": analysis}, tmp_path / "report", quiet=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["analysis_m.nc", "truth.nc"]  # no folder, no temp


def test_evaluate_writes_into_an_existing_folder_with_overwrite(tmp_path):
    t, a = _truth_and_analysis(tmp_path)
    out = tmp_path / "report"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    _evaluate(t, a, out, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine" and (out / "metrics.json").is_file()


# ---------------------------------------------------------------------------------------------- conventions


def test_non_numeric_field_refused_but_times_and_static_strings_kept_out(tmp_path):
    ds = make_state_dataset(nt=3, ny=5, nx=6, layers=False)
    flag = ds.assign(flag=(("time", "y", "x"), np.zeros(ds["ssh"].shape, bool)))
    with pytest.raises(DataValidationError, match=r"f\.nc: variable 'flag' has non-numeric dtype bool"):
        conventions.normalise(flag, "f.nc")
    times = ds["time"].values[:, None, None] + np.zeros(ds["ssh"].shape, "timedelta64[ns]")
    fine = ds.assign(pixel_time=(("time", "y", "x"), times),
                     region=(("y", "x"), np.full((5, 6), "gulf stream")))
    out = conventions.normalise(fine, "fine.nc")
    assert "ssh" in out and "region" not in out  # the static string table is dropped as before


@pytest.mark.parametrize("order", [("x", "y", "time"), ("time", "x", "y"), ("y", "time", "x")])
def test_any_dim_order_gives_the_canonical_layout(order):
    ds = make_state_dataset(nt=3, ny=5, nx=6, layers=True)
    ref = conventions.normalise(ds, "ref.nc")
    got = conventions.normalise(ds.transpose(*order, ...), "t.nc")
    for v in ("ssh", "psi", "lat", "lon"):
        assert got[v].dims == ref[v].dims, v
        np.testing.assert_array_equal(got[v].values, ref[v].values)
    assert fields.grid_fingerprint(got) == fields.grid_fingerprint(ref)


def test_canonical_layout_is_left_as_it_is():
    ds = conventions.normalise(make_state_dataset(nt=2, ny=4, nx=5), "a.nc")
    assert conventions.canonical_order(ds) is ds


# ---------------------------------------------------------------------------------------------- fields, kalman


def test_to_array_of_a_time_series_names_the_file():
    ds = make_state_dataset(nt=3, ny=4, nx=5, layers=False)
    layout = fields.layout_of(ds, ["ssh"])
    series = ds.assign(ssh=ds["ssh"].isel(y=0, x=0, drop=True))
    series.encoding["oceanda_sources"] = ["/data/obs.nc"]
    with pytest.raises(DataValidationError, match=r"/data/obs\.nc: variable 'ssh' has dims \('time',\)"):
        fields.to_array(series, layout)
    with pytest.raises(DataValidationError, match=r"lib\.nc: variable 'ssh'"):
        fields.layout_of(series, ["ssh"], source="lib.nc")
    with pytest.raises(DataValidationError, match=r"^s\.nc: no spatial dimensions"):
        fields.spatial_dims(series["ssh"], "s.nc")


def test_one_member_ensemble_refused_naming_the_file():
    ds = make_state_dataset(nt=1, ny=4, nx=5, layers=False)
    ens = ds.expand_dims(member=[0])
    obs = ds[["ssh"]].assign(ssh_error=xr.DataArray(0.1, attrs={"units": "m"}))
    with pytest.raises(DataValidationError, match=r"ens\.nc: 1 member along 'member'; expected at least 2"):
        analyse_dataset(ens, obs, "etkf", source="ens.nc")
