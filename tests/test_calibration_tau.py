"""The sampler temperature fitted on a tuning run (calibration.calibrate_sampler_tau) and stored with the spread.

Tiny synthetic case with prescribed encoders (the state itself, the observed values; a negative squared
distance critic): observing a library state exactly, a sharper posterior retrieves it better, so the
smallest candidate temperature must win, and a temperature that were ignored would tie every score
(then the first, largest, candidate would be chosen and the test fail).
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from oceanda import fields, io
from oceanda.analysis.assimilate import assimilate
from oceanda.analysis.calibration import calibrate_model_spread, calibrate_sampler_tau
from oceanda.contrastive.encoders import FixedEncoder
from oceanda.contrastive.model import ContrastiveModel
from oceanda.contrastive.similarity import Similarity
from oceanda.errors import ConfigurationError
from tinygrid import smooth_library

WINDOW = {"size": 4, "stride": 2, "halo": 2, "periodic": True}


_library = smooth_library


def _window_model(path, ds, tau=1.0):
    """Fixed encoders on 4 x 4 windows (halo 2): state -> its standardised values; obs -> the centre values."""
    w, h = WINDOW["size"], WINDOW["halo"]
    o = w + 2 * h
    m_obs = np.zeros((w * w, 2 * o * o))
    for i in range(w):
        for j in range(w):
            m_obs[i * w + j, (h + i) * o + (h + j)] = 1.0
    st = fields.Standardizer.fit(fields.to_array(ds, fields.layout_of(ds, ["ssh"]))[0])
    cfg = {"grid_fingerprint": fields.grid_fingerprint(ds, ["ssh"]), "normalization": {"state": st.to_dict()},
           "extra": {"state_channels": [["ssh", None]], "obs_channels": [["ssh", None]], "window": dict(WINDOW)}}
    ContrastiveModel(FixedEncoder((1, w, w)), FixedEncoder((2, o, o), matrix=m_obs),
                     Similarity("neg_sq_distance", tau=tau), cfg).save(path)
    return path


def _obs(ds, idx):
    o = ds[["ssh"]].isel(time=idx).copy(deep=True)  # noise-free, every point: library states observed exactly
    o["ssh_error"] = xr.DataArray(0.05, attrs={"units": "m"})
    return o


def _rmse(ds, truth):
    return float(np.sqrt(np.mean((ds.ssh_mean.values.astype(np.float64) - truth.ssh.values) ** 2)))


def test_sharpest_temperature_wins_when_a_library_state_is_observed(tmp_path):
    ds = _library()
    mdir = _window_model(tmp_path / "m", ds)
    idx = [5, 30]
    truth = ds.isel(time=idx)
    taus = [5.0, 1.0, 0.02]
    best, scores = calibrate_sampler_tau(mdir, ds, _obs(ds, idx), truth, taus, members=4, cache_dir=tmp_path / "c")
    assert list(scores) == taus and best == 0.02
    assert scores[0.02] < 0.05 * scores[5.0] and scores[0.02] < scores[1.0] < scores[5.0]  # sharper is closer
    # each score is the RMSE of the local analysis at that temperature (not of the trained one)
    one = assimilate(mdir, ds, _obs(ds, idx), mode="local", members=4, tau=1.0, cache_dir=tmp_path / "c")
    assert one.attrs["tau"] == pytest.approx(1.0) and scores[1.0] == pytest.approx(_rmse(one, truth), rel=1e-6)
    with pytest.raises(ConfigurationError, match="taus"):
        calibrate_sampler_tau(mdir, ds, _obs(ds, idx), truth, [], cache_dir=tmp_path / "c")


def test_calibration_stores_the_chosen_temperature_and_fits_the_spread_at_it(tmp_path):
    ds = _library()
    mdir = _window_model(tmp_path / "m", ds)
    weights = (mdir / "model.safetensors").read_bytes()
    idx = [5, 30, 44]
    obs, truth = _obs(ds, idx), ds.isel(time=idx)
    factor = calibrate_model_spread(mdir, ds, obs, truth, members=4, cache_dir=tmp_path / "c", tau=0.3,
                                    tau_scan={1.0: 0.5, 0.3: 0.2}, hybrid_from_enoi={"radius_km": 60.0, "alpha": 1.0})
    cfg = io.read_json(mdir / "config.json")
    assert cfg["sampler"]["tau"] == 0.3 and cfg["sampler"]["spread_factor"] == pytest.approx(factor)
    assert cfg["calibration"]["tau_scan_ssh_rmse"] == {"1.0": 0.5, "0.3": 0.2}
    assert cfg["similarity"]["tau"] == pytest.approx(1.0)  # the trained temperature is kept
    assert (mdir / "model.safetensors").read_bytes() == weights  # weights untouched
    # the stored tau is what an analysis now uses; the factor is the one fitted at it (spread-skill 1)
    loc = assimilate(mdir, ds, obs, mode="local", members=4, cache_dir=tmp_path / "c", spread_factor=1.0)
    assert loc.attrs["tau"] == pytest.approx(0.3)
    err2 = np.mean((loc.ssh_mean.values.astype(np.float64) - truth.ssh.values) ** 2)
    assert factor == pytest.approx(np.sqrt(err2 / np.mean(loc.ssh_spread.values.astype(np.float64) ** 2)), rel=1e-4)
    hyb = assimilate(mdir, ds, obs, mode="hybrid", members=4, cache_dir=tmp_path / "c")
    assert hyb.attrs["tau"] == pytest.approx(0.3) and cfg["sampler"]["hybrid"]["radius"] == 60.0
    with pytest.raises(ConfigurationError, match="tau"):
        calibrate_model_spread(mdir, ds, obs, truth, members=4, cache_dir=tmp_path / "c", tau=0.0)
