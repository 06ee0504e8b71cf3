"""Ocean Datasets -> contrastive training pairs, and `oceanda train`."""

import json

import numpy as np
import pytest
import torch

from conftest import make_state_dataset
from oceanda import fields, io
from oceanda.errors import DataValidationError, OutputExistsError
from oceanda.observe import AlongTrackAltimetry
from oceanda.pairs import (FIELD_TRAINING, FieldPairSampler, mask_sampler, obs_sigma, periodic_shift,
                           segments_from_times, stack_days, stack_obs_window, train_field_model, valid_window_times)


def test_periodic_shift_is_roll_per_sample():
    a = np.random.default_rng(0).standard_normal((3, 2, 5, 6))
    sy, sx = np.array([0, 1, 4]), np.array([2, 5, 0])
    out = periodic_shift(a, sy, sx)
    for i in range(3):
        assert np.array_equal(out[i], np.roll(a[i], (sy[i], sx[i]), axis=(-2, -1)))
    m = np.random.default_rng(1).random((3, 5, 6)) > 0.5
    assert np.array_equal(periodic_shift(m, sy, sx)[2], np.roll(m[2], (4, 0), axis=(0, 1)))


def test_segments_and_windows():
    t = np.array([0, 1, 2, 3, 10, 11, 12, 30.0])
    seg = segments_from_times(t)
    assert seg.tolist() == [0, 0, 0, 0, 1, 1, 1, 2]
    assert valid_window_times(seg, 3).tolist() == [2, 3, 6]
    obs = np.arange(8 * 2 * 1 * 1, dtype=np.float32).reshape(8, 2, 1, 1)
    w = stack_obs_window(obs, np.array([3, 5]), 3, seg)
    assert w.shape == (2, 6, 1, 1)
    assert w[0, :, 0, 0].tolist() == [6, 7, 4, 5, 2, 3]  # day t, t-1, t-2; channels within a day kept
    assert w[1, :4, 0, 0].tolist() == [10, 11, 8, 9] and np.isnan(w[1, 4:]).all()  # day 3 is in another run
    assert np.array_equal(stack_days([obs[[3, 5]], obs[[2, 4]]]), w[:, :4])  # the one layout: day t-k in k*C..


def _sampler(window=2, shift=True, sigma=0.0, full=False):
    rng = np.random.default_rng(0)
    states = rng.standard_normal((12, 2, 8, 8)).astype(np.float32)

    def mask_fn(n, r):
        return np.ones((n, 8, 8), bool) if full else r.random((n, 8, 8)) < 0.3

    return states, FieldPairSampler(states, [0, 1], [1], mask_fn, [sigma], window=window, shift=shift)


def test_field_pair_sampler_shapes_freshness_and_consistent_shift():
    states, s = _sampler(window=2, shift=True, sigma=0.0, full=True)
    assert len(s) == 11  # the first time has no previous day
    xs, xo = s(np.random.default_rng(1))
    assert xs.shape == (11, 2, 8, 8) and xo.shape == (11, 4, 8, 8)
    assert np.all(xo[:, 2:] == 1.0)  # masks
    # noise-free full observations of channel 1 equal the (shifted) state channel 1, today and yesterday
    assert np.allclose(xo[:, 0], xs[:, 1])
    ts = s.valid
    for i in range(len(ts)):
        # find the shift that maps the unshifted state to xs[i]
        hits = [(a, b) for a in range(8) for b in range(8) if np.allclose(np.roll(states[ts[i]], (a, b), (-2, -1)), xs[i])]
        assert len(hits) == 1
        assert np.allclose(np.roll(states[ts[i] - 1, 1], hits[0], (-2, -1)), xo[i, 1])
    # fresh patterns and noise each call; reproducible for a seed
    _, s2 = _sampler(window=1, shift=False, sigma=0.1)
    a, b = s2(np.random.default_rng(5)), s2(np.random.default_rng(6))
    assert not np.array_equal(a[1], b[1])
    c = s2(np.random.default_rng(5))
    assert np.array_equal(a[1], c[1])
    observed = a[1][:, 1] > 0
    assert 0.2 < observed.mean() < 0.4
    assert np.allclose(a[1][:, 0][~observed], 0.0)


def _files(tmp_path, nt=48, n=16):
    ds = make_state_dataset(nt=nt, ny=n, nx=n, layers=True, seed=3)
    obs = AlongTrackAltimetry().observe(ds, np.random.default_rng(0))
    io.write_netcdf(ds, tmp_path / "states.nc")
    io.write_netcdf(obs, tmp_path / "obs.nc")
    return ds, obs


def test_mask_sampler_from_observation_files(tmp_path):
    ds, obs = _files(tmp_path)
    fn = mask_sampler(obs, "ssh", 16, 16)
    m = fn(5, np.random.default_rng(0))
    assert m.shape == (5, 16, 16) and m.dtype == bool and 0 < m.mean() < 0.5
    boot = mask_sampler(obs, "ssh", 16, 16, prefer_operator=False)
    mb = boot(4, np.random.default_rng(0))
    pats = np.isfinite(obs["ssh"].values)
    assert all(any(np.array_equal(p, q) for q in pats) for p in mb)
    assert obs_sigma(obs, "ssh") == pytest.approx(float(obs["ssh_error"]))
    with pytest.raises(DataValidationError, match="ssh_error"):
        obs_sigma(obs.drop_vars("ssh_error"), "ssh")


def test_train_field_model_and_cli(tmp_path):
    torch.set_num_threads(1)
    ds, obs = _files(tmp_path)
    model, res = train_field_model(ds, obs, tmp_path / "m", state_vars=["ssh", "psi"], obs_vars=["ssh"], window=2,
                                   epochs=2, batch_size=8, embedding_dim=8, cnn={"width": 4, "depth": 1}, quiet=True)
    assert len(res.history) == 2 and np.isfinite(res.history[-1]["val_loss"])
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["extra"]["state_channels"] == [["ssh", None], ["psi", 0], ["psi", 1]]
    assert cfg["extra"]["obs_channels"] == [["ssh", None]] and cfg["extra"]["obs_window_days"] == 2
    assert len(cfg["normalization"]["obs"]["mean"]) == 2 and len(cfg["normalization"]["state"]["mean"]) == 3
    assert cfg["grid_fingerprint"] == fields.grid_fingerprint(ds[["ssh", "psi"]], ["ssh", "psi"])
    assert cfg["train"] == FIELD_TRAINING.replace(epochs=2, batch_size=8).to_dict()  # block_start: min(3, 2 // 4)
    with pytest.raises(ValueError, match="lr"):
        train_field_model(ds, obs, tmp_path / "bad", lr=-1.0, quiet=True)
    from oceanda.analysis.encoding import EncoderPair
    from oceanda.contrastive.model import ContrastiveModel

    pair = EncoderPair.from_model(ContrastiveModel.load(tmp_path / "m"))
    arr, lay = fields.to_array(ds)
    assert pair.embed_state(arr[:3], lay).shape == (3, 8)

    from oceanda.cli import main

    argv = ["train", "--states", str(tmp_path / "states.nc"), "--obs", str(tmp_path / "obs.nc"), "--out", str(tmp_path / "c"),
            "--state-vars", "ssh", "--epochs", "2", "--batch-size", "8", "--embedding-dim", "8", "--encoder", "mlp", "--quiet",
            "--allow-weak"]  # 2 epochs: a smoke test of the options, not of skill (exit code 3 otherwise)
    assert main(argv) == 0
    assert (tmp_path / "c" / "model.safetensors").exists() and (tmp_path / "c" / "history.json").exists()
    assert main(argv) == 2  # refuses to overwrite
    assert main(argv + ["--resume"]) == 0  # a finished run resumes to itself
    assert main(argv + ["--overwrite", "--fixed-pairs", "--loss", "state|obs", "--similarity", "neg_sq_distance"]) == 0
    with pytest.raises(OutputExistsError):
        train_field_model(ds, obs, tmp_path / "c", epochs=1, batch_size=8, quiet=True)
    # the spatial cnn head from the CLI: 16x16 grid, depth 2 -> a 4x4 map, 3 features
    spatial = ["train", "--states", str(tmp_path / "states.nc"), "--obs", str(tmp_path / "obs.nc"), "--out",
               str(tmp_path / "s"), "--state-vars", "ssh", "--epochs", "1", "--batch-size", "8", "--quiet", "--allow-weak",

               "--head", "spatial", "--depth", "2", "--width", "4", "--embedding-dim", "48"]
    assert main(spatial) == 0
    enc = json.loads((tmp_path / "s" / "config.json").read_text())["state_encoder"]
    assert enc["head"] == "spatial" and enc["depth"] == 2 and enc["out_dim"] == 48
    assert main(spatial[:-1] + ["50", "--overwrite"]) == 2  # 50 is not a multiple of the 16 cells: a clear error


def test_shift_block_shares_shifts():
    rng = np.random.default_rng(0)
    states = np.tile(rng.standard_normal((1, 1, 8, 8)).astype(np.float32), (9, 1, 1, 1))  # one field, 9 days
    s = FieldPairSampler(states, [0], [0], lambda n, r: np.ones((n, 8, 8), bool), [0.0], shift=True, shift_block=3)
    xs, _ = s(np.random.default_rng(3))
    for b in range(3):
        assert np.array_equal(xs[3 * b], xs[3 * b + 1]) and np.array_equal(xs[3 * b], xs[3 * b + 2])
    assert not (np.array_equal(xs[0], xs[3]) and np.array_equal(xs[3], xs[6]))
