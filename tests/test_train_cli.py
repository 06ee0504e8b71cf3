"""`oceanda train --kind window|field` on users' grids, multi-day pairs in days, and training health (exit code 3)."""

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from oceanda.cli import main
from oceanda.contrastive.training import training_health
from oceanda.pairs import (FieldPairSampler, fit_batch, fit_cnn, lag_weights, segments_from_times, stack_obs_window,
                           time_axis, valid_lag_times)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _smooth(rng, n, ny, nx, scale=4.0):
    """``n`` smooth random fields, correlated in time (AR(1), 0.9)."""
    ky, kx = np.fft.fftfreq(ny)[:, None] * ny, np.fft.fftfreq(nx)[None, :] * nx
    filt = np.exp(-(ky ** 2 + kx ** 2) / (2 * scale ** 2))
    out, prev = np.empty((n, ny, nx), np.float32), None
    for i in range(n):
        f = np.real(np.fft.ifft2(np.fft.fft2(rng.standard_normal((ny, nx))) * filt))
        prev = f if prev is None else 0.9 * prev + np.sqrt(1 - 0.81) * f
        out[i] = prev
    return out / out.std()


def _latlon_files(tmp_path, n=40, ny=18, nx=30, seed=0, land=True, every_days=1, shuffle_obs=False, frac=0.3):
    """A producer-style (lat, lon) file (0..360 longitudes, land NaN) and gridded observations of it."""
    rng = np.random.default_rng(seed)
    ssh = 0.1 * _smooth(rng, n, ny, nx)
    if land:
        ssh[:, :5, :6] = np.nan
    time = pd.date_range("2001-01-01", periods=n, freq=f"{every_days}D")
    coords = {"time": ("time", time), "lat": ("lat", np.linspace(-10, 7, ny), {"units": "degrees_north", "standard_name": "latitude"}),
              "lon": ("lon", np.linspace(160, 189, nx), {"units": "degrees_east", "standard_name": "longitude"})}
    states = xr.Dataset({"ssh": (("time", "lat", "lon"), ssh, {"units": "m", "standard_name": "sea_surface_height_above_geoid"})},
                        coords=coords)
    mask = rng.random(ssh.shape) < frac
    vals = ssh[rng.permutation(n)] if shuffle_obs else ssh
    obs = xr.Dataset({"ssh": (("time", "lat", "lon"), np.where(mask, vals + 0.005 * rng.standard_normal(ssh.shape), np.nan).astype(np.float32),
                              {"units": "m"}),
                      "ssh_error": ((), np.float32(0.005), {"units": "m"})}, coords=coords)
    states.to_netcdf(tmp_path / "states.nc")
    obs.to_netcdf(tmp_path / "obs.nc")
    return tmp_path / "states.nc", tmp_path / "obs.nc"


# --- multi-day pairs look back in days, not in snapshots --------------------------------------------

def test_lags_are_days_and_runs_split_at_run_labels():
    days = np.arange(0, 20, 2.0)  # a library saved every 2 days
    runs = np.repeat([0, 1], 5)  # two runs back to back: no gap in time
    seg = segments_from_times(days, runs)
    assert seg.tolist() == [0] * 5 + [1] * 5 and segments_from_times(days).tolist() == [0] * 10
    i0, i1, w, ok = lag_weights(days, seg, np.array([3, 3, 5, 6]), 1)
    assert ok.tolist() == [True, True, False, True]  # time 5 starts run 1: no day before it
    assert (i0[0], i1[0], float(w[0])) == (2, 3, 0.5)  # day 5 = half-way between days 4 and 6
    states = np.broadcast_to(days[:, None, None, None], (10, 1, 2, 2)).astype(np.float32)  # value = day
    s = FieldPairSampler(states, [0], [0], lambda n, rng: np.ones((n, 2, 2), bool), [0.0], window=3, segments=seg,
                         days=days)
    assert s.valid.tolist() == [1, 2, 3, 4, 6, 7, 8, 9]  # 2 days back within the run
    ob = s.observe(np.array([4]), np.random.default_rng(0))
    assert ob[0, :, 0, 0].tolist() == [8.0, 7.0, 6.0]  # days 8, 7 (interpolated), 6 -- not 8, 6, 4
    # fixed pairs: observations exist on the snapshot days only; the day between stays unobserved
    st = stack_obs_window(states, np.array([4]), 3, seg, days)
    assert st[0, 0, 0, 0] == 8.0 and np.isnan(st[0, 1, 0, 0]) and st[0, 2, 0, 0] == 6.0
    assert valid_lag_times(days, seg, 3).tolist() == s.valid.tolist()


def test_time_axis_reads_days_and_the_run_coordinate():
    ds = xr.Dataset(coords={"time": pd.date_range("2000-01-01", periods=6, freq="2D"), "run": ("time", [0, 0, 0, 1, 1, 1])})
    days, seg = time_axis(ds)
    assert np.allclose(np.diff(days), 2.0) and seg.tolist() == [0, 0, 0, 1, 1, 1]


# --- training health --------------------------------------------------------------------------------

def test_training_health_compares_with_chance():
    h = training_health({"val_r1_state_from_obs": 1 / 82, "val_r5_state_from_obs": 5 / 82, "epoch": 3}, 82)
    assert h["weak"] and h["chance_r5"] == pytest.approx(5 / 82) and h["candidates"] == 82
    ok = training_health({"val_r1_state_from_obs": 0.1, "val_r5_state_from_obs": 0.2}, 82)
    assert not ok["weak"]  # 0.2 >= 2 x 5/82 = 0.122
    small = training_health({"val_r1_state_from_obs": 0.1, "val_r5_state_from_obs": 1.0}, 8)  # R@5 always high
    assert small["weak"] and "R@1" in small["criterion"]
    assert training_health({}, 82) is None


def test_batch_epochs_and_cnn_fit_small_data_and_grids():
    said = []
    b, e = fit_batch(38, 128, None, said.append)  # 38 pairs at batch 128 used to be refused
    assert b == 16 and e >= 20 and "only 38 training pairs" in said[0]
    b, e = fit_batch(321, None, None, said.append)
    assert b == 32 and e * (321 // 32) >= 200
    assert fit_batch(5000, None, 7) == (128, 7)
    said.clear()
    opts = fit_cnn((18, 30), {"depth": 3}, said.append)
    assert opts["depth"] == 3 and "padded to 24 x 32" in said[0]
    assert fit_cnn((8, 8), {"depth": 3, "input_pool": 2})["depth"] == 1


# --- the CLI on a user's grid -----------------------------------------------------------------------

def test_field_cli_on_a_tiny_latlon_grid_with_land(tmp_path, capsys):
    states, obs = _latlon_files(tmp_path)
    out = tmp_path / "field"
    rc = main(["train", "--states", str(states), "--obs", str(obs), "--out", str(out), "--kind", "field", "--epochs", "2",
               "--width", "4", "--embedding-dim", "8", "--quiet", "--allow-weak", "--window", "2"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "--window is deprecated" in err and "batch size" in err and "padded to 24 x 32" in err
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["extra"]["obs_window_days"] == 2 and cfg["extra"]["periodic"] is False  # a regional lat/lon grid
    assert set(cfg["health"]) >= {"r1", "r5", "chance_r1", "chance_r5", "candidates", "weak"}


def test_window_cli_on_a_small_latlon_grid_with_land(tmp_path, capsys):
    states, obs = _latlon_files(tmp_path, ny=12, nx=20)
    out = tmp_path / "win"
    rc = main(["train", "--states", str(states), "--obs", str(obs), "--out", str(out), "--kind", "window",
               "--seconds", "2", "--obs-days", "2", "--quiet", "--allow-weak"])
    assert rc == 0
    captured = capsys.readouterr()
    assert "window size 16 exceeds the 12 x 20 grid; using 12" in captured.err
    assert "chance" in captured.out
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["extra"]["window"]["size"] == 12 and cfg["extra"]["window"]["periodic"] is False
    # validation pairs are distinct (time, window) draws: 4 held-out times x 9 window starts
    assert cfg["extra"]["max_days"] == 2 and cfg["health"]["candidates"] == 36
    assert (out / "history.json").exists()
    assert main(["train", "--states", str(states), "--obs", str(obs), "--out", str(out), "--kind", "window",
                 "--depth", "2"]) == 2  # a field-only option: a one-line error


def _pairs_cli(tmp_path, shuffle):
    states, obs = _latlon_files(tmp_path, n=200, ny=8, nx=8, land=False, shuffle_obs=shuffle, frac=1.0)
    return ["train", "--states", str(states), "--obs", str(obs), "--out", str(tmp_path / "m"), "--kind", "field",
            "--encoder", "linear", "--fixed-pairs", "--epochs", "40", "--batch-size", "32", "--embedding-dim", "16",
            "--quiet"]


def test_a_broken_pairing_is_flagged_weak(tmp_path, capsys):
    good = tmp_path / "good"
    good.mkdir()
    assert main(_pairs_cli(good, shuffle=False)) == 0
    h = json.loads((good / "m" / "config.json").read_text())["health"]
    assert not h["weak"] and h["r5"] > 3 * h["chance_r5"]
    bad = tmp_path / "bad"
    bad.mkdir()
    argv = _pairs_cli(bad, shuffle=True)  # observations of other times: nothing to learn
    assert main(argv) == 3
    captured = capsys.readouterr()
    assert "WEAK" in captured.out and "within 2x of chance" in captured.err
    h = json.loads((bad / "m" / "config.json").read_text())["health"]
    assert h["weak"] and h["candidates"] == 40
    assert main(argv + ["--overwrite", "--allow-weak"]) == 0
    from oceanda.analysis.encoding import load_model

    with pytest.warns(UserWarning, match="weak model"):
        load_model(bad / "m")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_model(good / "m")  # no warning for a healthy model


def test_window_model_calibrates_on_held_out_states(tmp_path, capsys):
    states, obs = _latlon_files(tmp_path, n=40, ny=18, nx=30)
    out = tmp_path / "cal"
    rc = main(["train", "--states", str(states), "--obs", str(obs), "--out", str(out), "--seconds", "2", "--quiet",
               "--allow-weak", "--calibrate"])  # 18 x 30 > a 16-cell window: kind window by default
    assert rc == 0
    assert "calibrated on 4 held-out states" in capsys.readouterr().err
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["sampler"]["spread_factor"] > 0 and cfg["sampler"]["spread_factor"] != 1.0
    assert cfg["calibration"]["variable"] == "ssh" and cfg["sampler"]["hybrid"]["radius"] > 0
    assert "health" in cfg and not (out / "library_cache").exists()


def test_window_model_on_a_curvilinear_grid_from_python(tmp_path):
    import oceanda

    rng = np.random.default_rng(1)
    ny, nx, n = 20, 24, 40
    jj, ii = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    lat, lon = 30 + 0.25 * jj + 0.05 * ii, 200 + 0.25 * ii + 0.03 * jj  # a rotated, curved grid past 180
    ssh = 0.1 * _smooth(rng, n, ny, nx)
    ssh[:, -4:, -5:] = np.nan  # land
    states = xr.Dataset({"ssh": (("time", "y", "x"), ssh, {"units": "m"})},
                        coords={"time": pd.date_range("2001-01-01", periods=n), "lat": (("y", "x"), lat, {"units": "degrees_north"}),
                                "lon": (("y", "x"), lon, {"units": "degrees_east"})})
    obs = states.copy()
    obs["ssh"] = states.ssh.where(rng.random(ssh.shape) < 0.3)
    obs["ssh_error"] = ((), np.float32(0.005), {"units": "m"})
    said = []
    model, res = oceanda.train(states, obs, tmp_path / "m", seconds=0.5, pairs_per_epoch=512, val_pairs=256,
                               batch_size=64, quiet=True, log=said.append)
    win = model.config["extra"]["window"]
    assert win["periodic"] is False and win["size"] == 16  # curvilinear: not periodic; 20 x 24 > 16 -> window model
    # 256 pairs asked, but only 4 held-out times x 45 window starts exist: each drawn once
    assert res.health["candidates"] == 180 and (tmp_path / "m" / "config.json").exists()
    z = model.embed_state(torch.zeros(2, 1, 16, 16))
    assert torch.isfinite(z).all()
