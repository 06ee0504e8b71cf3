"""Window pairs for training the local encoder pair, and a tiny end-to-end training run."""

import numpy as np
import pytest
import xarray as xr

from oceanda.analysis import windows as W
from oceanda.analysis.window_training import WindowPairSampler, WindowTrainingConfig, train_window_model


def test_pairs_take_each_days_observations_from_that_days_state():
    T, ny, nx = 12, 8, 8
    # state at time t is the constant t: an observed value tells which day it came from
    states = np.broadcast_to(np.arange(T, dtype=np.float32)[:, None, None, None], (T, 1, ny, nx)).copy()
    seg = np.repeat([0, 1], 6)
    calls = []

    def masks(n, rng):
        calls.append(n)
        m = np.zeros((n, ny, nx), bool)
        m[:, :, len(calls) - 1] = True  # day k of the window observes column k (oldest first)
        return m

    spec = W.WindowSpec(size=4, stride=2, halo=2, periodic=True)
    s = WindowPairSampler(states, seg, [0], [0], masks, [0.0], spec, max_days=3)
    assert set(s.valid) == {2, 3, 4, 5, 8, 9, 10, 11}  # two previous days in the same run
    sw, ob = s(5, np.random.default_rng(0), days=3)
    assert sw.shape == (5, 1, 4, 4) and ob.shape == (5, 2, 8, 8)
    vals, mask = ob[:, 0], ob[:, 1]
    t = sw[:, 0, 0, 0]
    for i in range(5):
        seen = vals[i][mask[i] > 0]  # the 8-wide window sees all 8 (periodic) columns
        assert set(np.unique(seen)) == {t[i], t[i] - 1, t[i] - 2}
        assert mask[i].sum() == 3 * 8


def test_tiny_training_run_gives_a_model_local_mode_can_use(tmp_path):
    from oceanda.analysis.assimilate import assimilate, load_model
    from oceanda.analysis.library import Library

    rng = np.random.default_rng(0)
    n, ny, nx = 80, 16, 16
    k = np.fft.fftfreq(ny)[:, None] ** 2 + np.fft.fftfreq(nx)[None, :] ** 2
    ssh = np.real(np.fft.ifft2(np.fft.fft2(rng.normal(size=(n, ny, nx))) * np.exp(-k / 0.02))).astype(np.float32)
    ds = xr.Dataset({"ssh": (("time", "y", "x"), ssh, {"units": "m"})},
                    coords={"time": np.datetime64("2001-01-01", "ns") + np.arange(n) * np.timedelta64(1, "D"),
                            "y": np.arange(ny) * 10.0, "x": np.arange(nx) * 10.0})
    lib = Library(ds)
    masks = lambda m, r: r.random((m, ny, nx)) < 0.2
    cfg = WindowTrainingConfig(size=8, stride=4, halo=4, embedding_dim=8, epochs=2, pairs_per_epoch=512, val_pairs=128,
                               batch_size=64, seconds=30, max_days=2, library_stride=4,
                               obs_encoder={"type": "mlp", "hidden": [32]}, state_encoder={"type": "mlp", "hidden": [32]})
    model, info = train_window_model(lib, masks, [0.05], tmp_path / "m", config=cfg)
    assert len(info["history"]) == 2 and np.isfinite(info["history"][-1]["val_loss"])
    assert model.config["extra"]["window"]["size"] == 8
    assert model.config["train"] == cfg.train_config().to_dict() and model.config["train"]["schedule"] == "constant"
    from oceanda.analysis import stored_settings

    assert stored_settings(model.config).library_stride == 4 and "library_stride" not in model.config["extra"]
    assert WindowTrainingConfig.from_dict(model.config["window_training"]) == cfg
    obs = ds[["ssh"]].isel(time=[3]).where(rng.random((1, ny, nx)) < 0.3)
    obs["ssh_error"] = xr.DataArray(0.05, attrs={"units": "m"})
    out = assimilate(tmp_path / "m", ds, obs, members=4)
    assert out.attrs["mode"] == "local" and np.isfinite(out.ssh_mean.values).all()
    load_model(tmp_path / "m")


def test_window_training_config_is_validated_and_round_trips():
    cfg = WindowTrainingConfig(size=8, max_days=2, seconds=10.0)
    assert WindowTrainingConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.train_config().max_seconds == 10.0 and cfg.train_config().warmup_steps == 20
    for bad, name in ((dict(size=0), "size"), (dict(similarity="euclid"), "similarity"), (dict(lr=0.0), "lr"),
                      (dict(pairs_per_epoch=100), "pairs_per_epoch"), (dict(obs_encoder={"type": "rnn"}), "obs_encoder"),
                      (dict(tau=-1.0), "tau"), (dict(epochs=0), "epochs")):
        with pytest.raises(ValueError, match=name):
            WindowTrainingConfig(**bad)


def test_few_validation_times_are_said_not_hidden():
    import warnings

    from oceanda.analysis.window_training import _validation_times, _warn_few_validation_times

    assert _validation_times(np.zeros(5, np.int64)).sum() == 1  # 5 times: one held out
    with pytest.warns(UserWarning, match=r"only 5 state times \(1 held out"):
        _warn_few_validation_times(1, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _warn_few_validation_times(4, 40)  # 40 times, 4 held out: quiet
