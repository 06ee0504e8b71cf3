"""Observation-pattern training (issue 18): the pattern mixture, its statistics, the error channel, end to end.

Closed forms and seeded statistics for :mod:`oceanda.analysis.obs_patterns`; the error channel of
:func:`oceanda.fields.encoder_obs_input`; a tiny pattern-trained window model (trained once per module on
:func:`tinygrid.smooth_library`) read back, sampled and used by ``assimilate`` with observations of only some of
its observed variables, point observations and different errors.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import xarray as xr

import oceanda
from oceanda import fields, io
from oceanda.analysis import windows as W
from oceanda.analysis.encoding import obs_arrays, obs_error_arrays
from oceanda.analysis.library import Library
from oceanda.analysis.obs_patterns import PatternDraw, PatternMix
from oceanda.errors import CheckpointError, ConfigurationError, DataValidationError
from oceanda.observe import swath_masks
from tinygrid import smooth_library

DX = 15.625  # km, the QG testbed's cells
SIZE = 32  # cells of an observation window (16 + 2 x 8)
QG_OBSERVES = {"tracks": ["ssh"], "clouds": ["ssh"], "points": ["ssh", "psi"]}
# the tiny model trains for 2 epochs: weak by design (what is tested is what it reads, not how well)
pytestmark = pytest.mark.filterwarnings("ignore:.*a weak model")


# --------------------------------------------------------------------------- PatternMix settings


@pytest.mark.parametrize("bad, name", [
    (dict(families=("tracks", "lidar")), "patterns family"),
    (dict(families=("tracks", "tracks")), "patterns families"),
    (dict(families=()), "patterns families"),
    (dict(weights=(1.0, 2.0)), "patterns weights"),
    (dict(weights=(1.0, 0.0, 2.0)), "patterns weight"),
    (dict(sigma_fraction=(0.3, 0.03)), "patterns sigma_fraction"),
    (dict(sigma_fraction=(0.0, 0.3)), "patterns sigma_fraction"),
    (dict(sigma_fraction=(0.1,)), "patterns sigma_fraction"),
    (dict(track_spacing_km=(-50.0, 100.0)), "patterns track_spacing_km"),
    (dict(cloud_scale_km=(300.0, 200.0)), "patterns cloud_scale_km"),
    (dict(point_spacing_km=(0.0, 10.0)), "patterns point_spacing_km"),
    (dict(swath_width_km=(70.0, 50.0)), "patterns swath_width_km"),
    (dict(cloud_fraction=(0.5, 1.2)), "patterns cloud_fraction"),
    (dict(observes={"lidar": ["ssh"]}), "patterns observes family"),
    (dict(observes={"points": []}), "patterns observes"),
])
def test_pattern_mix_refuses_bad_settings_naming_them(bad, name):
    with pytest.raises(ConfigurationError, match=name) as err:
        PatternMix(**bad)
    msg = str(err.value)
    assert "\n" not in msg and "expected" in msg


def test_pattern_mix_round_trips_and_its_channel_table_follows_observes():
    mix = PatternMix(families=("tracks", "points", "swaths"), weights=(2.0, 1.0, 1.0), observes=QG_OBSERVES,
                     sigma_fraction=(0.05, 0.2), cloud_fraction=(0.3, 1.0))
    back = PatternMix.from_dict(json.loads(json.dumps(mix.to_dict())))
    assert back == mix and back.to_dict() == mix.to_dict()
    np.testing.assert_allclose(mix.probabilities(), [0.5, 0.25, 0.25])
    chans = [("ssh", None), ("psi", 0), ("psi", 1)]
    # tracks see ssh only; points ssh and psi; swaths are not named in observes: every observed channel
    np.testing.assert_array_equal(mix.channel_table(chans), [[1, 0, 0], [1, 1, 1], [1, 1, 1]])
    with pytest.raises(ConfigurationError, match=r"observes\['tracks'\].*expected at least one"):
        PatternMix(observes={"tracks": ["sst"]}).channel_table(chans)
    with pytest.raises(ConfigurationError, match="unknown"):
        PatternMix.from_dict({**mix.to_dict(), "track_count": 4})


# --------------------------------------------------------------------------- PatternDraw statistics


def _draw(**kw) -> PatternDraw:
    return PatternDraw(PatternMix(**kw), SIZE, DX, DX)


def test_clouds_observe_the_drawn_fraction_with_spatially_coherent_gaps():
    n, seed = 2000, 11
    draw = _draw(families=("clouds",))
    m = draw.masks(np.zeros(n, np.int64), np.random.default_rng(seed))
    replay = np.random.default_rng(seed)  # _clouds draws the scales, then the fractions
    replay.uniform(size=n)
    frac = replay.uniform(*draw.mix.cloud_fraction, n)
    count = m.reshape(n, -1).sum(axis=1)
    assert np.abs(count - frac * SIZE * SIZE).max() <= 1.0
    f = count / SIZE ** 2
    assert f.min() >= 0.2 - 1e-3 and f.max() <= 0.95 + 1e-3
    assert abs(f.mean() - 0.575) < 0.02  # uniform on (0.2, 0.95)
    # gaps, not salt and pepper: neighbours agree far more often than independent cells would
    agree = 0.5 * ((m[:, 1:] == m[:, :-1]).mean(axis=(1, 2)) + (m[:, :, 1:] == m[:, :, :-1]).mean(axis=(1, 2)))
    assert agree.mean() > (f ** 2 + (1 - f) ** 2).mean() + 0.2


@pytest.mark.parametrize("spacing", [(60.0, 400.0), (5.0, 40.0)])
def test_points_density_is_the_expected_cell_area_over_spacing_squared(spacing):
    n = 2000
    draw = _draw(families=("points",), point_spacing_km=spacing)
    m = draw.masks(np.zeros(n, np.int64), np.random.default_rng(3))
    u = (np.arange(200_000) + 0.5) / 200_000  # E over log-uniform spacings, numerically (clipped at 1 below ~dx)
    s = np.exp(np.log(spacing[0]) + u * np.log(spacing[1] / spacing[0]))
    expected = np.minimum(1.0, DX * DX / s ** 2).mean()
    assert abs(m.mean() / expected - 1.0) < 0.1


def test_track_lines_are_one_cell_wide_and_connected():
    n, S = 2000, 2000.0  # lines 2000 km apart: at most one in a 500 km window
    draw = _draw(families=("tracks",))
    m = draw._lines(n, np.random.default_rng(5), np.full(n, S))
    theta = np.random.default_rng(5).uniform(0.0, np.pi, n)
    c, s = np.abs(np.cos(theta)), np.abs(np.sin(theta))
    hit = m.any(axis=(1, 2))
    for k in np.flatnonzero(hit):
        mk = m[k] if c[k] >= s[k] else m[k].T  # rows along the axis the line crosses most
        per_row = mk.sum(axis=1)
        assert per_row.max() == 1, k  # one cell per row (or column): 1 cell wide
        rows = np.flatnonzero(per_row)
        assert np.all(np.diff(rows) == 1), k  # no break in the line
        cols = mk[rows].argmax(axis=1)
        assert np.abs(np.diff(cols)).max(initial=0) <= 1, k  # 8-connected
    # the line is in the window when the random phase falls in the window's extent across the lines
    width = np.maximum(c, s) * DX
    p_hit = np.minimum(1.0, ((SIZE - 1) * DX * (c + s) + width) / S)
    assert abs(hit.mean() / p_hit.mean() - 1.0) < 0.12


def test_tracks_observed_fraction_matches_its_closed_form():
    """One set: E[width] E[1/S]; a crossing set half the time, overlapping with probability (w1/S)(w2/S)."""
    n, lo, hi = 2000, 100.0, 800.0
    draw = _draw(families=("tracks",), track_spacing_km=(lo, hi))
    m = draw.masks(np.zeros(n, np.int64), np.random.default_rng(8))
    ew = 2 * np.sqrt(2) / np.pi * DX  # E[max(|cos|, |sin|)] dx, angle uniform
    e1 = (1 / lo - 1 / hi) / np.log(hi / lo)  # E[1/S], log-uniform
    e2 = (1 / lo ** 2 - 1 / hi ** 2) / (2 * np.log(hi / lo))  # E[1/S^2]
    f1 = ew * e1
    expected = f1 + 0.5 * (f1 - ew ** 2 * e2)
    assert abs(m.mean() / expected - 1.0) < 0.06
    # lines 1e4 km apart: at most one line per set, two sets, each at most one cell per row or column
    huge = _draw(families=("tracks",), track_spacing_km=(1e4, 1e4)).masks(np.zeros(n, np.int64),
                                                                          np.random.default_rng(9))
    assert huge.sum(axis=(1, 2)).max() <= 2 * SIZE


def test_swaths_leave_the_nadir_gap_and_have_the_given_width():
    n, seed, width, gap = 2000, 4, 60.0, 20.0
    m = swath_masks(n, np.random.default_rng(seed), SIZE, SIZE, DX, DX, width_km=width, gap_km=gap)
    replay = np.random.default_rng(seed)
    theta = replay.uniform(0.0, np.pi, n)
    off = np.minimum(0.0, (SIZE - 1) * DX * np.cos(theta)) + replay.uniform(0, 1, n) * SIZE * DX
    j, i = np.meshgrid(np.arange(SIZE), np.arange(SIZE), indexing="ij")
    # distance of every cell centre to the nadir line through (off cos, off sin) at angle theta + 90 degrees
    px, py = i[None] * DX - (off * np.cos(theta))[:, None, None], j[None] * DX - (off * np.sin(theta))[:, None, None]
    dist = np.abs(px * np.cos(theta)[:, None, None] + py * np.sin(theta)[:, None, None])
    assert not m[dist < 0.5 * gap].any()  # the nadir gap
    assert m[(dist >= 0.5 * gap + 1e-6) & (dist < 0.5 * gap + width - 1e-6)].all()  # both swaths, fully
    assert not m[dist >= 0.5 * gap + width].any()
    assert m.any(axis=(1, 2)).all()  # a pass somewhere across the window, at every angle
    east = theta < 0.5 * np.pi  # passes past 90 degrees are as likely in the window (once missed 13 % of windows)
    assert abs(m[east].mean() / m[~east].mean() - 1.0) < 0.05
    # an axis-aligned pass (north-south): every row the same, two bands of width/dx cells
    ns = swath_masks(1, _Fixed([0.0, 0.5]), SIZE, SIZE, DX, DX, width_km=width, gap_km=gap)[0]
    assert (ns == ns[0]).all()
    cols = np.flatnonzero(ns[0]) * DX - 0.5 * SIZE * DX  # signed distance to the nadir line at x = 250 km
    np.testing.assert_allclose(sorted(cols), [-62.5, -46.875, -31.25, -15.625, 15.625, 31.25, 46.875, 62.5])


class _Fixed:
    """A generator stand-in that returns given uniforms (``uniform(lo, hi, n)`` -> lo + u (hi - lo))."""

    def __init__(self, us):
        self.us = list(us)

    def uniform(self, lo=0.0, hi=1.0, n=1):
        return lo + np.full(n, self.us.pop(0)) * (hi - lo)


def test_channels_are_non_empty_allowed_subsets_with_levels_together():
    mix = PatternMix(observes=QG_OBSERVES)
    table = mix.channel_table([("ssh", None), ("psi", 0), ("psi", 1)])
    draw = PatternDraw(mix, SIZE, DX, DX)
    rng = np.random.default_rng(2)
    fam = draw.families(3000, rng)
    seen = draw.channels(fam, rng, table, np.array([0, 1, 1]))
    assert seen.shape == (3000, 3) and seen.any(axis=1).all()
    assert not (seen & ~table[fam]).any()  # only what the family may see: tracks and clouds ssh alone
    np.testing.assert_array_equal(seen[:, 1], seen[:, 2])  # a profile observes every level
    pts = seen[fam == list(mix.families).index("points")]
    kinds = {tuple(r) for r in pts[:, :2]}
    assert kinds == {(True, False), (False, True), (True, True)}
    # each allowed variable with probability 1/2, an empty draw replaced by one of them: 3/8, 3/8, 1/4
    np.testing.assert_allclose([(pts[:, 0] & ~pts[:, 1]).mean(), (~pts[:, 0] & pts[:, 1]).mean()], [0.375, 0.375],
                               atol=0.05)
    np.testing.assert_allclose(np.bincount(fam, minlength=3) / 3000, [1 / 3] * 3, atol=0.03)


# --------------------------------------------------------------------------- the error channel


def test_encoder_obs_input_appends_errors_over_the_channel_std():
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(3, 2, 5, 6)).astype(np.float32)
    obs[rng.random(obs.shape) < 0.4] = np.nan
    err = rng.uniform(0.1, 1.0, obs.shape).astype(np.float32)
    err[0, 0, 0, :] = np.nan  # an observation without an error: 0, like an unobserved cell
    norm = fields.Standardizer(np.array([1.0, -2.0]), np.array([2.0, 0.5]))
    got = fields.encoder_obs_input(obs, norm, errors=err)
    assert got.shape == (3, 6, 5, 6) and got.dtype == np.float32
    seen = np.isfinite(obs)
    mean, std = norm.mean.reshape(1, -1, 1, 1), norm.std.reshape(1, -1, 1, 1)
    np.testing.assert_allclose(got[:, :2], np.where(seen, (obs - mean) / std, 0.0), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(got[:, 2:4], seen.astype(np.float32))
    np.testing.assert_allclose(got[:, 4:], np.where(seen & np.isfinite(err), err / std, 0.0), rtol=1e-6)
    assert (got[:, 4:][~seen] == 0).all()
    plain = fields.encoder_obs_input(obs, norm)
    assert plain.shape == (3, 4, 5, 6)
    np.testing.assert_array_equal(plain, fields.with_mask_channels(norm.transform(obs).astype(np.float32)))
    np.testing.assert_array_equal(plain, got[:, :4])  # the error channel only appends
    np.testing.assert_allclose(fields.encoder_obs_input(obs, None, errors=err)[:, 4:],
                               np.where(seen & np.isfinite(err), err, 0.0))  # no statistics: errors as given


# --------------------------------------------------------------------------- a tiny pattern-trained model


TINY_MIX = PatternMix(observes=QG_OBSERVES, track_spacing_km=(40.0, 160.0), cloud_scale_km=(20.0, 80.0),
                      point_spacing_km=(25.0, 80.0))


def _tiny_config():
    from oceanda.analysis.window_training import WindowTrainingConfig

    return WindowTrainingConfig(size=4, stride=2, halo=2, epochs=2, seconds=5, pairs_per_epoch=256, val_pairs=64,
                                batch_size=64, library_stride=2, embedding_dim=8, max_days=1,
                                obs_encoder={"type": "mlp", "hidden": [32]},
                                state_encoder={"type": "mlp", "hidden": [32]})


@pytest.fixture(scope="module")
def library():
    return smooth_library(60, 8, 8)


@pytest.fixture(scope="module")
def pattern_model(library, tmp_path_factory):
    """A pattern model on ssh + psi observations (ssh state), ~2 s of training."""
    from oceanda.analysis.window_training import train_window_model

    out = tmp_path_factory.mktemp("pattern") / "m"
    model, info = train_window_model(Library(library), None, [], out, state_variables=("ssh",),
                                     obs_variables=("ssh", "psi"), config=_tiny_config(), patterns=TINY_MIX)
    assert np.isfinite(info["history"][-1]["val_loss"])
    return out


def _fixed_window_model(path, ds):
    """A non-pattern window model (values + masks of ssh; fixed linear encoders, as in test_assimilate)."""
    from oceanda.contrastive.encoders import FixedEncoder
    from oceanda.contrastive.model import ContrastiveModel
    from oceanda.contrastive.similarity import Similarity

    w, h = 4, 2
    o = w + 2 * h
    M = np.zeros((w * w, 2 * o * o))
    for a in range(w):
        for b in range(w):
            M[a * w + b, (h + a) * o + h + b] = 1.0
    st = fields.Standardizer.fit(fields.to_array(ds, fields.layout_of(ds, ["ssh"]))[0])
    cfg = {"grid_fingerprint": fields.grid_fingerprint(ds, ["ssh"]), "normalization": {"state": st.to_dict()},
           "extra": {"state_channels": [["ssh", None]], "obs_channels": [["ssh", None]],
                     "window": {"size": w, "stride": 2, "halo": h, "periodic": True}}}
    ContrastiveModel(FixedEncoder((1, w, w)), FixedEncoder((2, o, o), matrix=M), Similarity("neg_sq_distance", tau=1.0),
                     cfg).save(path)
    return path


def test_pattern_model_config_records_the_error_channel_and_reloads(pattern_model):
    cfg = json.loads((pattern_model / "config.json").read_text())
    assert cfg["extra"]["obs_error_channel"] is True
    assert PatternMix.from_dict(cfg["extra"]["observation_patterns"]) == TINY_MIX
    assert cfg["extra"]["obs_channels"] == [["ssh", None], ["psi", 0], ["psi", 1]]
    assert cfg["obs_encoder"]["in_shape"] == [9, 8, 8]  # (values, masks, errors) x 3 channels, 4 + 2 x 2 cells
    model, enc = oceanda.load_model(pattern_model)
    assert enc.error_channel
    # the error of observations that give none: the geometric middle of the trained fractions x the channel std
    std = np.asarray(cfg["normalization"]["obs"]["std"])
    np.testing.assert_allclose(enc.default_error, std * np.sqrt(0.03 * 0.3), rtol=1e-5)
    obs = np.random.default_rng(0).normal(size=(5, 3, 8, 8)).astype(np.float32)
    obs[:, 1:] = np.nan  # ssh only
    e1 = enc.embed_obs(obs)
    assert e1.shape == (5, 8) and np.isfinite(e1).all()
    np.testing.assert_allclose(enc.embed_obs(obs, np.broadcast_to(enc.default_error.reshape(1, 3, 1, 1), obs.shape)),
                               e1, rtol=1e-6, atol=1e-6)
    assert not np.allclose(enc.embed_obs(obs, np.full(obs.shape, 3.0, np.float32)), e1, atol=1e-4)  # errors are read
    errs = np.full(obs.shape, 0.5, np.float32)
    # one field's inputs, then windows cut from it (local mode), equal the windows' own inputs
    field = np.concatenate(list(obs), axis=-1)  # the 5 samples side by side: [3, 8, 40]
    inputs = enc.obs_field_input(field, np.concatenate(list(errs), axis=-1))
    cut = np.stack([inputs[..., 8 * i:8 * (i + 1)] for i in range(5)])
    np.testing.assert_array_equal(enc.embed_obs_input(cut), enc.embed_obs(obs, errs))


def test_pattern_pairs_carry_their_noise_level_in_the_error_channel(library):
    from oceanda.analysis.window_training import PatternPairSampler

    lib = Library(library)
    states = lib.read(np.arange(lib.n))
    sc, oc = lib.layout.channels_of(["ssh"]), lib.layout.channels_of(["ssh", "psi"])
    spec = W.WindowSpec(size=4, stride=2, halo=2, periodic=True)
    norm_s, norm_o = fields.Standardizer.fit(states[:, sc]), fields.Standardizer.fit(states[:, oc])
    sampler = PatternPairSampler(states, np.zeros(lib.n, np.int64), sc, oc, None, [], spec, 1, norm_s, norm_o,
                                 seed=0, mix=TINY_MIX, library=lib)  # as train_window_model builds it, 20 km cells
    sw, ob = sampler(2000, np.random.default_rng(1), days=1)
    assert sw.shape == (2000, 1, 4, 4) and ob.shape == (2000, 9, 8, 8)
    vals, mask, err = ob[:, :3], ob[:, 3:6], ob[:, 6:]
    assert set(np.unique(mask)) == {0.0, 1.0}
    assert (err[mask == 0] == 0).all() and (vals[mask == 0] == 0).all()
    seen = mask.any(axis=(2, 3))  # [n, 3]
    assert seen.any(axis=1).mean() > 0.9  # (a track may miss a small window)
    np.testing.assert_array_equal(mask[:, 1], mask[:, 2])  # psi levels together
    both = seen[:, 0] & seen[:, 1]
    np.testing.assert_array_equal(mask[both, 0], mask[both, 1])  # one pattern per pair, whatever it observes
    assert (~seen[:, 0] & seen[:, 1]).any() and (seen[:, 0] & ~seen[:, 1]).any()
    # one noise fraction per pair (sigma / std of each channel), log-uniform in the range
    ok = seen.any(axis=1)
    frac = np.where(mask > 0, err, np.nan)[ok].reshape(int(ok.sum()), -1)
    f = np.nanmax(frac, axis=1)
    np.testing.assert_allclose(np.nanmin(frac, axis=1), f, rtol=1e-6)
    assert f.min() >= 0.03 * (1 - 1e-6) and f.max() <= 0.3 * (1 + 1e-6)
    assert abs(np.log(f).mean() - 0.5 * np.log(0.03 * 0.3)) < 0.1
    # the noise is that error: standardised truth is ssh, 10 ssh and -ssh alike (psi = (10 ssh, -ssh))
    truth = np.stack([sw[:, 0], sw[:, 0], -sw[:, 0]], axis=1)
    centre = (slice(None), slice(None), slice(2, 6), slice(2, 6))
    m = mask[centre] > 0
    z = (vals[centre] - truth)[m] / err[centre][m]
    assert abs(z.std() - 1.0) < 0.05 and abs(z.mean()) < 0.05


def _gappy_obs(ds, var, idx, frac, error, seed):
    """``var`` of ``ds`` at times ``idx``, a random ``frac`` observed, a scalar ``<var>_error``."""
    rng = np.random.default_rng(seed)
    o = ds[[var]].isel(time=idx).copy(deep=True)
    o[var] = o[var].where(rng.random(o[var].shape) < frac)
    o[f"{var}_error"] = xr.DataArray(error, attrs={"units": ds[var].attrs.get("units", "1")})
    return o


def _psi_obs(ds, idx, frac=0.5, error=0.5, seed=1):
    return _gappy_obs(ds, "psi", idx, frac, error, seed)


def _ssh_obs(ds, idx, frac=0.6, error=0.05, seed=2):
    return _gappy_obs(ds, "ssh", idx, frac, error, seed)


def test_a_pattern_model_analyses_observations_of_any_of_its_variables(pattern_model, library, tmp_path):
    out = oceanda.assimilate(pattern_model, library, _psi_obs(library, [5, 11]), mode="local", members=4, seed=0)
    assert out.ssh_mean.shape == (2, 8, 8) and np.isfinite(out.ssh_mean.values).all()
    ssh_only = oceanda.assimilate(pattern_model, library, _ssh_obs(library, [5, 11]), mode="local", members=4, seed=0)
    assert np.isfinite(ssh_only.ssh_mean.values).all()
    assert not np.allclose(ssh_only.ssh_mean.values, out.ssh_mean.values)
    from oceanda.analysis.hybrid import HybridConfig

    obs = _psi_obs(library, [5, 11])  # the hybrid's Kalman update uses the psi observations alone
    loc = oceanda.assimilate(pattern_model, library, obs, mode="local", members=4, seed=0)
    hyb = oceanda.assimilate(pattern_model, library, obs, mode="hybrid", members=4, seed=0,
                             hybrid=HybridConfig(alpha=1.0, radius=60.0, static_members=40))
    m = np.isfinite(obs.psi.values)
    assert (np.abs(hyb.psi_mean.values - obs.psi.values)[m].mean()
            < 0.5 * np.abs(loc.psi_mean.values - obs.psi.values)[m].mean())
    plain = _fixed_window_model(tmp_path / "plain", library)  # a model without the error channel: refused
    with pytest.raises(DataValidationError, match=r"missing observed variable\(s\) \['ssh'\]") as err:
        oceanda.assimilate(plain, library, _psi_obs(library, [5]), mode="local", members=4)
    assert "\n" not in str(err.value)


def test_point_observations_are_superobbed_and_analysed(pattern_model, library, tmp_path):
    rng = np.random.default_rng(4)
    n = 40
    j, i, lev = rng.integers(0, 8, n), rng.integers(0, 8, n), rng.integers(0, 2, n)
    t = rng.choice([3, 9], n)
    truth = library.psi.values[t, lev, j, i]
    pts = xr.Dataset({"psi": ("obs", (truth + 0.1 * rng.normal(size=n)).astype(np.float32), {"units": "m2 s-1"}),
                      "psi_error": ("obs", rng.uniform(0.05, 0.5, n).astype(np.float32), {"units": "m2 s-1"})},
                     coords={"time": ("obs", library.time.values[t]),
                             "y": ("obs", library.y.values[j] + rng.uniform(-5, 5, n), {"units": "km"}),
                             "x": ("obs", library.x.values[i] + rng.uniform(-5, 5, n), {"units": "km"}),
                             "layer_index": ("obs", lev.astype(np.int32))})
    io.write_netcdf(pts, tmp_path / "points.nc")
    obs = oceanda.open_obs(tmp_path / "points.nc", like=library)
    assert "obs" not in obs.dims and obs.psi.dims == ("time", "layer", "y", "x") and obs.sizes["time"] == 2
    cells = {(int(a), int(b), int(c), int(d)) for a, b, c, d in zip(t, lev, j, i)}
    assert int(np.isfinite(obs.psi.values).sum()) == len(cells)
    # the encoder reads each superob's own error (per cell and layer); no ssh: NaN, like its values
    _, enc = oceanda.load_model(pattern_model)
    values = obs_arrays(obs, enc, (8, 8))
    errors = obs_error_arrays(obs, enc, values)
    assert np.isnan(values[:, 0]).all() and np.isnan(errors[:, 0]).all()
    np.testing.assert_array_equal(np.isfinite(errors[:, 1:]), np.isfinite(obs.psi.values))
    np.testing.assert_allclose(errors[:, 1:], obs.psi_error.values.astype(np.float32))
    assert np.nanstd(errors[:, 1]) > 0.05  # per point errors: a wrong layer or a scalar would not match
    out = oceanda.assimilate(pattern_model, library, obs, mode="local", members=4, seed=0)
    assert out.sizes["time"] == 2 and np.isfinite(out.ssh_mean.values).all()


def test_the_error_channel_is_read_and_a_plain_model_ignores_errors(pattern_model, library, tmp_path):
    a = oceanda.assimilate(pattern_model, library, _ssh_obs(library, [7], error=0.01), mode="local", members=4, seed=0)
    b = oceanda.assimilate(pattern_model, library, _ssh_obs(library, [7], error=0.8), mode="local", members=4, seed=0)
    assert not np.allclose(a.ssh_mean.values, b.ssh_mean.values)
    plain = _fixed_window_model(tmp_path / "plain", library)
    a = oceanda.assimilate(plain, library, _ssh_obs(library, [7], error=0.01), mode="local", members=4, seed=0)
    b = oceanda.assimilate(plain, library, _ssh_obs(library, [7], error=0.8), mode="local", members=4, seed=0)
    np.testing.assert_array_equal(a.ssh_mean.values, b.ssh_mean.values)
    np.testing.assert_array_equal(a.ssh.values, b.ssh.values)


def test_a_pattern_checkpoint_without_its_error_flag_is_refused(pattern_model, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(pattern_model, bad)
    cfg = json.loads((bad / "config.json").read_text())
    del cfg["extra"]["obs_error_channel"]
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"obs_encoder\.in_shape.*\[9, 8, 8\].*expected \[6, 8, 8\]") as err:
        oceanda.load_model(bad)
    assert "\n" not in str(err.value)
    cfg["extra"]["obs_error_channel"] = "yes"  # not a boolean
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="obs_error_channel"):
        oceanda.load_model(bad)


def test_wide_swath_observes_one_pass_with_its_error(library):
    from oceanda.observe import WideSwath

    big = smooth_library(n=6, ny=32, nx=32)
    obs = WideSwath(var="ssh", sigma=0.05, width_km=60.0).observe(big, np.random.default_rng(3))
    seen = np.isfinite(obs.ssh.values)
    assert obs.attrs["operator"] == "wide_swath" and float(obs.ssh_error) == pytest.approx(0.05)
    assert (seen.reshape(6, -1).any(axis=1)).all()  # a pass crosses the grid at every time
    assert 0.05 < seen.mean() < 0.6
    err = obs.ssh.values[seen] - big.ssh.values[seen]
    assert 0.04 < err.std() < 0.06


def test_drifter_positions_are_refused_with_the_lagrangian_pointer():
    path = _sample() / "obs_drifters_eval_1.nc"
    with pytest.raises(DataValidationError, match=r"not state variables.*docs/observations\.md") as err:
        oceanda.open_obs(path, like=xr.open_dataset(_sample() / "library.nc"))
    assert "\n" not in str(err.value)


def _sample():
    from oceanda.sampledata import bundled_sample_dir

    return bundled_sample_dir("qg")
