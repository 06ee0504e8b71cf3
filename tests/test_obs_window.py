"""The observation time window of the Kalman steps (oceanda.kalman.obswindow): ages, grown errors, closed forms."""

import cftime
import numpy as np
import pytest
import scipy.sparse as sp
import xarray as xr

from oceanda.cli import main
from oceanda.errors import ConfigurationError, DataValidationError
from oceanda.kalman import analyse_dataset
from oceanda.kalman.obsspace import Observations
from oceanda.kalman.obswindow import age_days, age_growth, windowed
from tinygrid import smooth_library

DAY = np.timedelta64(1, "D")
T0 = np.datetime64("2001-01-01", "ns")


def test_ages_in_days_for_datetime64_cftime_and_numbers():
    assert age_days(T0 + 36 * np.timedelta64(1, "h"), T0) == 1.5
    noleap = cftime.DatetimeNoLeap
    assert age_days(noleap(2001, 3, 1), noleap(2001, 2, 28)) == 1.0  # no 29 February in a noleap calendar
    assert age_days(7, 4.5) == 2.5


def _obs(t, idx, y, err):
    return Observations(np.asarray(y, float), np.asarray(err, float), np.asarray(idx), time=t)


def test_window_adds_the_previous_days_with_errors_grown_by_age():
    sd = np.array([1.0, 2.0, 4.0])
    days = [_obs(T0, [0], [1.0], [0.1]), _obs(T0 + DAY, [1], [2.0], [0.2]), _obs(T0 + 3 * DAY, [2], [3.0], [0.3])]
    out = windowed(days, 3, 0.5, sd)
    assert [o.size for o in out] == [1, 2, 2]  # the third: day 1 (age 2) kept, day 0 (age 3) outside a 3-day window
    np.testing.assert_array_equal(out[1].H, [1, 0])
    np.testing.assert_allclose(out[1].error, [0.2, np.hypot(0.1, 0.5 * 1 * 1.0)])
    np.testing.assert_allclose(out[2].error, [0.3, np.hypot(0.2, 0.5 * 2 * 2.0)])
    np.testing.assert_array_equal(out[2].y, [3.0, 2.0])
    assert out[2].time == days[2].time  # each analysis keeps its own time
    assert windowed(days, 1, 0.5, sd) == days  # a one-day window: the observations as they were


def test_window_stacks_sparse_and_index_operators_and_locations():
    sd = np.array([1.0, 3.0])
    H = sp.csr_matrix(np.array([[0.5, 0.5]]))  # a point between the two cells
    a = Observations(np.array([1.0]), np.array([0.1]), H, coords=np.array([[5.0, 5.0]]), time=T0)
    b = Observations(np.array([2.0]), np.array([0.2]), np.array([1]), coords=np.array([[15.0, 5.0]]), time=T0 + DAY)
    (_, both) = windowed([a, b], 2, 1.0, sd)
    assert sp.issparse(both.H)
    np.testing.assert_allclose(both.H.toarray(), [[0.0, 1.0], [0.5, 0.5]])
    np.testing.assert_allclose(both.error, [0.2, np.hypot(0.1, 1.0 * 1 * 2.0)])  # sd at the point: H @ sd = 2
    np.testing.assert_array_equal(both.coords, [[15.0, 5.0], [5.0, 5.0]])


def test_window_refuses_what_it_cannot_stack():
    with pytest.raises(DataValidationError, match="obs_window=2: the observations have no times"):
        windowed([_obs(None, [0], [1.0], [0.1]), _obs(None, [0], [1.0], [0.1])], 2, 0.1, np.ones(1))
    f = Observations(np.array([1.0]), np.array([0.1]), lambda E: E[:, :1], time=T0)
    with pytest.raises(ConfigurationError, match="nonlinear observation operators"):
        windowed([f, _obs(T0 + DAY, [0], [1.0], [0.1])], 2, 0.1, np.ones(1))


def test_growth_of_a_linear_ramp_is_one_over_its_spread():
    """x_t = c t at every point: change c a day, spread c std(t), growth 1 / std(t) whatever c and the gap."""
    t = np.arange(10.0)
    states = np.outer(2.0 * t, [1.0, 3.0, -1.0])
    times = T0 + (2 * t).astype(int) * DAY  # a state every 2 days: the change per day is half the step
    assert age_growth(states, times) == pytest.approx(0.5 / t.std())
    with pytest.raises(DataValidationError, match="not strictly increasing"):
        age_growth(states, times[::-1])


def _enoi_library(n=40):
    ds = smooth_library(n=n)
    return ds[["ssh"]].assign_coords(y=ds.y * 1000.0, x=ds.x * 1000.0)  # km grid, far apart: no cross-talk


def _one_point_obs(ds, values, errors):
    ssh = np.full((len(values), ds.sizes["y"], ds.sizes["x"]), np.nan)
    ssh[:, 2, 3] = values
    times = T0 + np.arange(len(values)) * DAY
    return xr.Dataset({"ssh": (("time", "y", "x"), ssh, {"units": "m"}),
                       "ssh_error": (("time", "y", "x"), np.broadcast_to(np.asarray(errors)[:, None, None], ssh.shape).copy(),
                                     {"units": "m"})},
                      coords={"time": times, "y": ds.y, "x": ds.x})


def test_enoi_with_a_two_day_window_is_the_precision_weighted_closed_form():
    """One point observed on two days: x_a = (xb/B + y1/r1 + y0/(r0 + (g sd)^2)) / (1/B + 1/r1 + 1/(r0 + (g sd)^2))."""
    lib = _enoi_library()
    obs = _one_point_obs(lib, [1.0, 2.0], [0.3, 0.2])
    x = lib.ssh.values[:, 2, 3].astype(np.float64)
    B, xb, g = x.var(ddof=1), x.mean(), 0.4
    ds = analyse_dataset(lib, obs, "enoi", loc_radius_km=50.0, alpha=1.0, members=len(x), keep_members=False,
                         obs_window=2, obs_age_growth=g)
    r0 = 0.3 ** 2 + (g * x.std(ddof=1)) ** 2
    expect = (xb / B + 2.0 / 0.2 ** 2 + 1.0 / r0) / (1 / B + 1 / 0.2 ** 2 + 1 / r0)
    assert float(ds.ssh_mean.values[1, 2, 3]) == pytest.approx(expect, rel=1e-5)
    first = (xb / B + 1.0 / 0.3 ** 2) / (1 / B + 1 / 0.3 ** 2)  # day one has no day before it
    assert float(ds.ssh_mean.values[0, 2, 3]) == pytest.approx(first, rel=1e-5)
    assert ds.attrs["obs_window_days"] == 2 and ds.attrs["obs_age_growth"] == g


def test_enoi_window_growth_is_estimated_from_the_library_and_refused_for_members():
    lib = _enoi_library()
    obs = _one_point_obs(lib, [1.0, 2.0], [0.3, 0.2])
    ds = analyse_dataset(lib, obs, "enoi", loc_radius_km=50.0, keep_members=False, obs_window=2)
    x = lib.ssh.values.reshape(len(lib.time), -1).astype(np.float64)
    assert ds.attrs["obs_age_growth"] == pytest.approx(age_growth(x, lib.time.values))
    ens = lib.rename(time="member").assign_coords(member=np.arange(lib.sizes["time"]))
    with pytest.raises(ConfigurationError, match="member ensemble; give obs_age_growth"):
        analyse_dataset(ens, obs, "letkf", loc_radius_km=50.0, obs_window=2)
    with pytest.raises(ConfigurationError, match="obs_window"):
        analyse_dataset(lib, obs, "enoi", loc_radius_km=50.0, obs_window=0)


def test_enkf_cli_obs_window_and_its_errors(tmp_path, capsys):
    lib = _enoi_library()
    lib.to_netcdf(tmp_path / "lib.nc")
    _one_point_obs(lib, [1.0, 2.0], [0.3, 0.2]).to_netcdf(tmp_path / "obs.nc")
    base = ["enkf", "--method", "enoi", "--ensemble", str(tmp_path / "lib.nc"), "--obs", str(tmp_path / "obs.nc"),
            "--loc-radius", "50", "--quiet"]
    assert main([*base, "--out", str(tmp_path / "a.nc"), "--obs-window", "2", "--obs-age-growth", "0.4"]) == 0
    assert main([*base, "--out", str(tmp_path / "b.nc")]) == 0
    with xr.open_dataset(tmp_path / "a.nc") as a, xr.open_dataset(tmp_path / "b.nc") as b:
        assert a.attrs["obs_window_days"] == 2 and "obs_window_days" not in b.attrs
        np.testing.assert_allclose(a.ssh_mean[0], b.ssh_mean[0])  # the first day has nothing before it
        assert abs(float(a.ssh_mean[1, 2, 3] - b.ssh_mean[1, 2, 3])) > 1e-3
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main([*base, "--out", str(tmp_path / "c.nc"), "--obs-window", "0"])
    assert exc.value.code == 2 and "--obs-window=0; expected an integer >= 1" in capsys.readouterr().err
    assert not (tmp_path / "c.nc").exists()


def test_hybrid_window_uses_the_days_before_each_time_and_records_its_growth(tmp_path):
    from oceanda.analysis.assimilate import assimilate
    from oceanda.analysis.hybrid import HybridConfig
    from oceanda.analysis.library import Library
    from test_assimilate import _obs, _save_model

    ds = smooth_library()
    mdir = _save_model(tmp_path / "w", ds, window={"size": 4, "stride": 2, "halo": 2, "periodic": True}, tau=1.0)
    obs = _obs(ds, [3, 4, 5], frac=0.3)  # three consecutive days, a different 30 % of the points each
    kw = dict(members=6, seed=4, hybrid=HybridConfig(alpha=1.0, radius=60.0, static_members=40))
    one = assimilate(mdir, ds, obs, mode="hybrid", **kw)
    two = assimilate(mdir, ds, obs, mode="hybrid", obs_window=2, **kw)
    np.testing.assert_array_equal(one.ssh_mean.values[0], two.ssh_mean.values[0])  # nothing before the first day
    assert np.abs(one.ssh_mean.values[1:] - two.ssh_mean.values[1:]).max() > 1e-3
    lib = Library(ds)
    expect = age_growth(lib.read(np.arange(lib.n)).reshape(lib.n, -1), ds.time.values)
    assert two.attrs["hybrid_obs_window"] == 2 and two.attrs["hybrid_obs_age_growth"] == pytest.approx(expect)
    assert "hybrid_obs_age_growth" not in one.attrs
    last = assimilate(mdir, ds, obs, mode="hybrid", obs_window=2, times=[2], **kw)  # its day before is not analysed
    np.testing.assert_allclose(last.ssh_mean.values[0], two.ssh_mean.values[2], atol=1e-6)
    with pytest.raises(ConfigurationError, match="obs_window=2: a setting of mode 'hybrid'"):
        assimilate(mdir, ds, obs, mode="local", obs_window=2)


def test_window_never_takes_later_observations_whatever_the_order():
    sd = np.ones(2)
    later, earlier = _obs(T0 + DAY, [1], [2.0], [0.2]), _obs(T0, [0], [1.0], [0.1])
    first, second = windowed([later, earlier], 2, 0.5, sd)  # given latest first
    np.testing.assert_array_equal(first.H, [1, 0])  # the later time: itself, then the day before
    assert second is earlier  # the earlier time: nothing after it is used


def test_assimilate_cli_refuses_obs_window_outside_the_hybrid(tmp_path, capsys):
    from test_assimilate import _obs, _save_model

    ds = smooth_library()
    mdir = _save_model(tmp_path / "w", ds, window={"size": 4, "stride": 2, "halo": 2, "periodic": True}, tau=1.0)
    ds.to_netcdf(tmp_path / "lib.nc")
    _obs(ds, [3, 4], frac=0.3).to_netcdf(tmp_path / "obs.nc")
    argv = ["assimilate", "--model", str(mdir), "--library", str(tmp_path / "lib.nc"), "--obs", str(tmp_path / "obs.nc"),
            "--members", "6", "--obs-window", "2", "--quiet"]
    assert main([*argv, "--mode", "local", "--out", str(tmp_path / "a.nc")]) == 2
    assert "--obs-window=2: a setting of mode 'hybrid'" in capsys.readouterr().err
    assert not (tmp_path / "a.nc").exists()
    assert main([*argv, "--mode", "hybrid", "--out", str(tmp_path / "b.nc")]) == 0
    with xr.open_dataset(tmp_path / "b.nc") as b:
        assert b.attrs["hybrid_obs_window"] == 2 and b.attrs["hybrid_obs_age_growth"] > 0
