"""Memory: `enkf` streams its analyses to the file time by time; `evaluate` scores one time at a time.

Not timings (benchmarks/bench_memory.py prints the peak RSS of both verbs on the bundled sample): the
tests check that the streamed file is the in-memory analysis, value for value; that the peak of the
arrays Python allocates (tracemalloc counts numpy's) stays a fraction of the analysis record where the
in-memory path holds all of it; that a failure leaves neither the output nor its scratch files; and that
the scores of an ensemble chunked one time per chunk are those of one loaded whole.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import xarray as xr

from oceanda import io
from oceanda.kalman import dataset as kd
from oceanda.kalman.dataset import analyse_dataset

VOLATILE = ("history", "seconds_per_analysis")  # the clock's attributes: differ between any two runs


def _ensemble(nt: int = 3, n: int = 12, ny: int = 10, nx: int = 12, seed: int = 0, nan_member: bool = True):
    """``(ensemble [time, member, (layer,) y, x], gridded obs)`` on a small km grid; one land cell, and (with
    ``nan_member``) a member NaN at time 1 only: that time has fewer members (the file keeps the fewest)."""
    rng = np.random.default_rng(seed)
    y, x = np.arange(ny) * 10.0 + 5, np.arange(nx) * 10.0 + 5
    t = np.datetime64("2021-01-01", "ns") + np.arange(nt) * np.timedelta64(1, "D")
    ssh = rng.normal(size=(nt, n, ny, nx))
    psi = rng.normal(size=(nt, n, 2, ny, nx))
    ssh[:, :, 0, 0], psi[:, :, :, 0, 0] = np.nan, np.nan  # land
    if nan_member and nt > 1:
        ssh[1, 3, 4, 5] = np.nan
    lat = 38 + y[:, None] / 111.0 + 0 * x[None, :]
    lon = -60 + x[None, :] / 90.0 + 0 * y[:, None]
    coords = {"time": t, "member": np.arange(n), "layer": [1, 2], "y": ("y", y, {"units": "km"}),
              "x": ("x", x, {"units": "km"}), "lat": (("y", "x"), lat), "lon": (("y", "x"), lon)}
    ens = xr.Dataset({"ssh": (("time", "member", "y", "x"), ssh, {"units": "m"}),
                      "psi": (("time", "member", "layer", "y", "x"), psi, {"units": "m2 s-1"})}, coords=coords)
    obs = np.full((nt, ny, nx), np.nan)
    obs[:, ::3, ::2] = rng.normal(size=obs[:, ::3, ::2].shape)
    obs[:, 0, 0] = np.nan
    obs_ds = xr.Dataset({"ssh": (("time", "y", "x"), obs, {"units": "m"}), "ssh_error": ((), 0.3, {"units": "m"})},
                        coords={k: v for k, v in coords.items() if k not in ("member", "layer")})
    return ens, obs_ds


def _attrs(ds: xr.Dataset) -> dict:
    return {k: v for k, v in ds.attrs.items() if k not in VOLATILE}


@pytest.mark.parametrize("method, settings", [("enkf", {}), ("letkf", {"loc_radius_km": 30.0}),
                                               ("enoi", {"loc_radius_km": 30.0, "members": 8})])
def test_streamed_file_is_the_in_memory_analysis(tmp_path, method, settings):
    """Every value, coordinate and attribute of the streamed file equals the in-memory path's written file
    (the random stream of enkf / enoi's member draws included, the fewer members of time 1 included)."""
    ens, obs = _ensemble()
    ref = analyse_dataset(ens, obs, method, rng=3, **settings)
    io.write_netcdf(ref, tmp_path / "ref.nc", command="test")
    with pytest.warns(UserWarning, match="members"):
        got = analyse_dataset(ens, obs, method, rng=3, out=tmp_path / "a.nc", command="test", **settings)
    with got, xr.open_dataset(tmp_path / "ref.nc") as want:
        assert got.sizes["member"] == want.sizes["member"] == settings.get("members", 11)  # the fewest of any time
        xr.testing.assert_identical(got.drop_attrs(deep=False), want.drop_attrs(deep=False))
        assert _attrs(got) == _attrs(want)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nc", "ref.nc"]  # no scratch left


def test_streamed_file_without_members(tmp_path):
    ens, obs = _ensemble(nan_member=False)
    ref = analyse_dataset(ens, obs, "etkf", keep_members=False)
    got = analyse_dataset(ens, obs, "etkf", keep_members=False, out=tmp_path / "a.nc")
    with got:
        assert "ssh" not in got and "member" not in got.dims
        xr.testing.assert_equal(got, ref.astype(np.float32))


def _peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_streamed_analysis_holds_one_time_not_the_record(tmp_path):
    """The member record (24 times x 96 members x 3 fields of 12 x 12, float64: 8 MB) is never in memory at
    once when written time by time (what grows with the times is the mean and spread, 1/48 of it); the
    in-memory path holds at least all of it."""
    nt, n = 24, 96
    small, small_obs = _ensemble(nt=2, nan_member=False)
    analyse_dataset(small, small_obs, "etkf", out=tmp_path / "warm.nc").close()  # imports: not the analyses'
    ens, obs = _ensemble(nt=nt, n=n, ny=12, nx=12, nan_member=False)
    ens.load()
    record = nt * n * 3 * 12 * 12 * 8
    streamed = _peak_bytes(lambda: analyse_dataset(ens, obs, "etkf", out=tmp_path / "a.nc").close())
    in_memory = _peak_bytes(lambda: analyse_dataset(ens, obs, "etkf"))
    assert in_memory > record
    assert streamed < 0.4 * record, (streamed / 2**20, record / 2**20)


def test_a_failing_analysis_leaves_no_output_and_no_scratch(tmp_path, monkeypatch):
    ens, obs = _ensemble(nan_member=False)
    real = kd._members_flat
    calls = []

    def third_fails(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the record
        return real(*args, **kwargs)

    monkeypatch.setattr(kd, "_members_flat", third_fails)
    with pytest.raises(KeyboardInterrupt):
        analyse_dataset(ens, obs, "etkf", out=tmp_path / "a.nc")
    assert list(tmp_path.iterdir()) == []


def test_streamed_output_refuses_an_existing_file_before_any_analysis(tmp_path, monkeypatch):
    from oceanda.errors import OutputExistsError

    ens, obs = _ensemble(nan_member=False)
    (tmp_path / "a.nc").write_bytes(b"keep")
    monkeypatch.setattr(kd, "_analyses", lambda *a, **k: pytest.fail("analysed before refusing"))
    with pytest.raises(OutputExistsError):
        analyse_dataset(ens, obs, "etkf", out=tmp_path / "a.nc")
    assert (tmp_path / "a.nc").read_bytes() == b"keep"
