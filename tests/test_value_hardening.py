"""Values that reach the numerics (issue 17): the embedding cache, library and member NaN, observation
errors and units, cftime calendars.

Small inputs built here (an 8 x 8 synthetic library with a fixed linear model) or subsets of the
bundled sample (12 library states, 3 observation times) written to tmp_path; every verb is run
in-process through ``oceanda.cli.main``.
"""

import errno
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from oceanda import fields
from oceanda.analysis.library import CACHE_DIRNAME, Library
from oceanda.cli import main
from oceanda.errors import DataValidationError
from oceanda.sampledata import bundled_sample_dir

# ------------------------------------------------------------------------------------------------
# inputs
# ------------------------------------------------------------------------------------------------


def _synthetic(n=30, ny=8, nx=8, seed=0):
    """Smooth random SSH (m) and a two-layer psi on an 8 x 8 km grid, daily."""
    rng = np.random.default_rng(seed)
    k = np.fft.fftfreq(ny)[:, None] ** 2 + np.fft.fftfreq(nx)[None, :] ** 2
    ssh = np.real(np.fft.ifft2(np.fft.fft2(rng.normal(size=(n, ny, nx))) * np.exp(-k / 0.02)))
    ssh = (0.05 * ssh / ssh.std()).astype(np.float32)
    psi = np.stack([1e4 * ssh, -1e3 * ssh], axis=1)
    time = np.datetime64("2001-01-01", "ns") + np.arange(n) * np.timedelta64(1, "D")
    return xr.Dataset({"ssh": (("time", "y", "x"), ssh, {"units": "m"}),
                       "psi": (("time", "layer", "y", "x"), psi, {"units": "m2 s-1"})},
                      coords={"time": time, "layer": [1, 2], "y": ("y", np.arange(ny) * 20.0 + 10, {"units": "km"}),
                              "x": ("x", np.arange(nx) * 20.0 + 10, {"units": "km"})})


def _model(path, ds, tau=0.05):
    """A whole-field model with fixed encoders: state -> its standardised SSH, obs -> the observed SSH."""
    from oceanda.contrastive.encoders import FixedEncoder
    from oceanda.contrastive.model import ContrastiveModel
    from oceanda.contrastive.similarity import Similarity

    ny, nx = ds.sizes["y"], ds.sizes["x"]
    d = ny * nx
    st = fields.Standardizer.fit(fields.to_array(ds, fields.layout_of(ds, ["ssh"]))[0])
    cfg = {"grid_fingerprint": fields.grid_fingerprint(ds, ["ssh"]),
           "normalization": {"state": st.to_dict()},
           "extra": {"state_channels": [["ssh", None]], "obs_channels": [["ssh", None]]}}
    obs_enc = FixedEncoder((2, ny, nx), matrix=np.concatenate([np.eye(d), np.zeros((d, d))], axis=1))
    ContrastiveModel(FixedEncoder((1, ny, nx)), obs_enc, Similarity("neg_sq_distance", tau=tau), cfg).save(path)
    return path


def _obs(ds, idx, frac=0.6, seed=1, error=0.005):
    rng = np.random.default_rng(seed)
    o = ds[["ssh"]].isel(time=idx).copy(deep=True)
    o["ssh"] = o.ssh.where(rng.random(o.ssh.shape) < frac)
    o["ssh_error"] = xr.DataArray(np.float32(error), attrs={"units": "m"})
    return o


def _write(ds, path):
    """Write ``ds`` to ``path``, replacing a file there as a user would (a new file renamed over it)."""
    tmp = path.with_name(path.name + ".new")
    ds.to_netcdf(tmp)
    os.replace(tmp, path)
    return path


def _one_line(capsys, *names):
    """The CLI's error: one line on stderr, no traceback, naming every one of ``names``."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    for name in names:
        assert str(name) in err[0], (name, err[0])
    return err[0]


def _synthetic_run(tmp_path, lib_ds, obs_ds=None):
    """Library, observations and a model in tmp_path; the argument list of a global-mode assimilate."""
    lib = _write(lib_ds, tmp_path / "lib.nc")
    obs = _write(obs_ds if obs_ds is not None else _obs(_synthetic(), [4, 11]), tmp_path / "obs.nc")
    model = _model(tmp_path / "model", _synthetic())
    return lib, obs, ["assimilate", "--model", str(model), "--library", str(lib), "--obs", str(obs),
                      "--mode", "global", "--members", "4", "--quiet", "--cache-dir", str(tmp_path / "cache")]


def _embed(states):
    """A fixed linear embedding of whole states (what a model's state encoder is, as far as the cache cares)."""
    flat = np.nan_to_num(states.reshape(len(states), -1).astype(np.float64))
    return (flat @ np.random.default_rng(5).normal(size=(flat.shape[1], 6))).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# 1. the embedding cache is keyed on the states themselves
# ------------------------------------------------------------------------------------------------


def _replaced_states(ds, probes=(0, 15, 29)):
    """Other states at the same times, keeping the states the cheap fingerprint samples."""
    other = _synthetic(seed=9)
    new = ds.copy(deep=True)
    keep = np.isin(np.arange(ds.sizes["time"]), probes)
    for v in ("ssh", "psi"):
        new[v].values[~keep] = other[v].values[~keep]
    return new


def test_cache_follows_the_states_not_their_times(tmp_path):
    ds = _synthetic()
    path = _write(ds, tmp_path / "lib.nc")
    cache = tmp_path / "cache"
    z1 = Library.open(path).embeddings(_embed, "m1", cache_dir=cache)
    np.testing.assert_array_equal(Library.open(path).embeddings(_embed, "m1", cache_dir=cache), z1)  # reused
    first = Library.open(path)
    _write(_replaced_states(ds), path)  # same times, same sampled states: only the others differ
    lib = Library.open(path)
    assert lib.fingerprint == first.fingerprint and lib.content_hash != first.content_hash
    with pytest.warns(UserWarning, match="other library states"):
        z2 = lib.embeddings(_embed, "m1", cache_dir=cache)
    fresh = Library.open(path).embeddings(_embed, "m1")
    np.testing.assert_array_equal(z2, fresh)
    assert np.abs(z2 - z1).max() > 0.1 * np.abs(z1).max()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rewritten cache is now the one used, silently
        np.testing.assert_array_equal(Library.open(path).embeddings(_embed, "m1", cache_dir=cache), fresh)


def test_assimilate_after_the_library_is_replaced_matches_a_fresh_run(tmp_path):
    ds = _synthetic()
    lib, _, args = _synthetic_run(tmp_path, ds)
    assert main(args + ["--out", str(tmp_path / "a1.nc")]) == 0
    assert any((tmp_path / "cache").iterdir())
    _write(_replaced_states(ds), lib)
    with pytest.warns(UserWarning, match="other library states"):
        assert main(args + ["--out", str(tmp_path / "a2.nc")]) == 0
    fresh = [a if a != str(tmp_path / "cache") else str(tmp_path / "fresh_cache") for a in args]
    assert main(fresh + ["--out", str(tmp_path / "a3.nc")]) == 0
    with xr.open_dataset(tmp_path / "a1.nc") as a1, xr.open_dataset(tmp_path / "a2.nc") as a2, \
            xr.open_dataset(tmp_path / "a3.nc") as a3:
        for v in ("ssh_mean", "ssh", "psi_mean", "weight", "retrieved_index"):
            np.testing.assert_array_equal(a2[v].values, a3[v].values, err_msg=v)
        assert float(np.abs(a2.ssh_mean - a1.ssh_mean).max()) > 1e-3
        assert a2.attrs["library_content_hash"] == a3.attrs["library_content_hash"] != a1.attrs["library_content_hash"]


def _cache_files(cache):
    (entry,) = [p for p in cache.iterdir() if p.is_dir()]
    return entry / "model.safetensors", entry / "config.json"


@pytest.mark.parametrize("damage", ["truncate", "flip", "nan", "config_hash", "shape"])
def test_damaged_cache_is_recomputed(tmp_path, damage):
    path = _write(_synthetic(), tmp_path / "lib.nc")
    cache = tmp_path / "cache"
    z = Library.open(path).embeddings(_embed, "m1", cache_dir=cache)
    weights, config = _cache_files(cache)
    raw = bytearray(weights.read_bytes())
    if damage == "truncate":  # a write cut short (full disk, killed)
        weights.write_bytes(bytes(raw[: len(raw) // 2]))
    elif damage in ("flip", "nan"):  # a value changed in the data part: only the checksum sees it
        pos = len(raw) - 4 * 7
        raw[pos:pos + 4] = np.float32(np.nan if damage == "nan" else 123.0).tobytes()
        weights.write_bytes(bytes(raw))
    else:
        cfg = json.loads(config.read_text())
        if damage == "config_hash":
            cfg["content_hash"] = "0" * 32
        else:
            cfg["shape"] = [cfg["shape"][0] - 1, cfg["shape"][1]]
        config.write_text(json.dumps(cfg))
    with pytest.warns(UserWarning, match="not used"):
        again = Library.open(path).embeddings(_embed, "m1", cache_dir=cache)
    np.testing.assert_array_equal(again, z)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rewritten whole
        np.testing.assert_array_equal(Library.open(path).embeddings(_embed, "m1", cache_dir=cache), z)


def test_cache_of_another_key_or_variable_set_is_not_used(tmp_path):
    ds = _synthetic()
    path = _write(ds, tmp_path / "lib.nc")
    cache = tmp_path / "cache"
    Library.open(path).embeddings(_embed, "m1", cache_dir=cache)
    weights, config = _cache_files(cache)
    cfg = json.loads(config.read_text())
    cfg["variables"] = ["ssh"]
    config.write_text(json.dumps(cfg))
    with pytest.warns(UserWarning, match="another model"):
        Library.open(path).embeddings(_embed, "m1", cache_dir=cache)


def test_cache_write_failure_is_a_warning_and_leaves_no_cache(tmp_path, monkeypatch):
    path = _write(_synthetic(), tmp_path / "lib.nc")
    fresh = Library.open(path).embeddings(_embed, "m1")
    (tmp_path / "file").write_text("x")
    with pytest.warns(UserWarning, match="cannot cache"):  # --cache-dir under a regular file
        np.testing.assert_array_equal(Library.open(path).embeddings(_embed, "m1", cache_dir=tmp_path / "file" / "c"),
                                      fresh)

    real_write = Path.write_bytes

    def full_disk(self, data):  # the disk fills after 40 bytes of the weights file
        real_write(self, data[:40])
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    cache = tmp_path / "cache"
    with pytest.warns(UserWarning, match="cannot cache"):
        np.testing.assert_array_equal(Library.open(path).embeddings(_embed, "m1", cache_dir=cache), fresh)
    assert not cache.exists() or not [p for p in cache.rglob("*") if p.is_file()]  # nothing half-written left
    monkeypatch.undo()
    np.testing.assert_array_equal(Library.open(path).embeddings(_embed, "m1", cache_dir=cache), fresh)
    assert _cache_files(cache)[0].stat().st_size > 40


def test_cache_scan_cost_on_the_sample_library():
    """The full-content hash streams the 17 MB sample library in one pass (measured ~0.1 s)."""
    import time

    lib = Library.open(bundled_sample_dir("qg") / "library.nc")
    t0 = time.perf_counter()
    scan = lib.scan()
    seconds = time.perf_counter() - t0
    assert len(scan.content_hash) == 32 and scan.bad.size == 0 and scan.land is None
    assert seconds < 3.0, seconds


# ------------------------------------------------------------------------------------------------
# 2. library values: Inf, all-NaN, NaN outside the land
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("what", ["inf", "all_nan"])
def test_assimilate_refuses_inf_or_all_nan_library_like_enkf(tmp_path, capsys, what):
    ds = _synthetic()
    if what == "inf":
        ds.psi.values[3, 0, 2, 2] = np.inf
    else:
        ds["psi"] = ds.psi * np.nan
    lib, obs, args = _synthetic_run(tmp_path, ds)
    out = tmp_path / "a.nc"
    assert main(args + ["--out", str(out)]) == 2
    line = _one_line(capsys, lib, "'psi'")
    assert ("Inf" in line) if what == "inf" else ("all NaN" in line)
    assert not out.exists()
    assert main(["enkf", "--method", "enoi", "--ensemble", str(lib), "--obs", str(obs), "--out", str(out), "--quiet"]) == 2
    assert _one_line(capsys, lib, "'psi'").split("error: ")[1] == line.split("error: ")[1]  # the same words as enkf
    with pytest.raises(DataValidationError, match="psi"):  # a Dataset given to the API is checked too
        Library(ds, source="lib").scan()


def test_library_states_nan_outside_the_land_are_dropped_with_a_warning(tmp_path):
    ds = _synthetic()
    for v in ("ssh", "psi"):  # land: the same two cells NaN in every state
        ds[v].values[..., 0, :2] = np.nan
    bad = ds.copy(deep=True)
    bad.ssh.values[7, 4, 4] = np.nan  # one value missing in one state
    lib, obs, args = _synthetic_run(tmp_path, bad)
    with pytest.warns(UserWarning, match=r"lib\.nc: 1 of 30 library states \(time indices 7\).*dropped, 29"):
        assert main(args + ["--out", str(tmp_path / "a.nc")]) == 0
    _write(ds.drop_isel(time=7), tmp_path / "lib29.nc")
    ref = [a if a != str(lib) else str(tmp_path / "lib29.nc") for a in args]
    assert main(ref + ["--out", str(tmp_path / "ref.nc")]) == 0
    with xr.open_dataset(tmp_path / "a.nc") as a, xr.open_dataset(tmp_path / "ref.nc") as r:
        land = np.zeros((8, 8), bool)
        land[0, :2] = True
        assert np.isnan(a.ssh_mean.values[:, land]).all() and np.isfinite(a.ssh_mean.values[:, ~land]).all()
        for v in ("ssh_mean", "ssh_spread", "ssh", "psi_mean"):
            np.testing.assert_array_equal(a[v].values, r[v].values, err_msg=v)  # as if the state were not there
        assert a.attrs["library_size"] == 29


def test_land_that_moves_in_every_state_is_refused(tmp_path, capsys):
    ds = _synthetic()
    for t in range(ds.sizes["time"]):
        ds.ssh.values[t, t % 8, (3 * t) % 8] = np.nan
    lib, _, args = _synthetic_run(tmp_path, ds)
    assert main(args + ["--out", str(tmp_path / "a.nc")]) == 2
    line = _one_line(capsys, lib, "30 of 30 library states")
    assert "expected NaN only on land" in line and not (tmp_path / "a.nc").exists()


def test_local_mode_drops_a_library_state_with_nan(tmp_path):
    """Windows of a state with NaN are never candidates: the local analysis is that of the other states."""
    from oceanda.analysis.assimilate import assimilate
    from oceanda.analysis.windows import WindowSpec

    ds = _synthetic()
    bad = ds.copy(deep=True)
    bad.ssh.values[12, 3, 5] = np.nan
    from oceanda.contrastive.encoders import FixedEncoder
    from oceanda.contrastive.model import ContrastiveModel
    from oceanda.contrastive.similarity import Similarity

    w, h = 4, 2
    o = w + 2 * h
    M = np.zeros((w * w, 2 * o * o))
    for i in range(w):
        for j in range(w):
            M[i * w + j, (h + i) * o + (h + j)] = 1.0
    st = fields.Standardizer.fit(fields.to_array(ds, fields.layout_of(ds, ["ssh"]))[0])
    cfg = {"grid_fingerprint": fields.grid_fingerprint(ds, ["ssh"]), "normalization": {"state": st.to_dict()},
           "extra": {"state_channels": [["ssh", None]], "obs_channels": [["ssh", None]],
                     "window": WindowSpec(size=w, stride=2, halo=h, periodic=True).to_dict()}}
    ContrastiveModel(FixedEncoder((1, w, w)), FixedEncoder((2, o, o), matrix=M), Similarity("neg_sq_distance", tau=0.05),
                     cfg).save(tmp_path / "w")
    obs = _obs(ds, [5, 20])
    with pytest.warns(UserWarning, match=r"time indices 12\).*dropped"):
        out = assimilate(tmp_path / "w", bad, obs, members=4, seed=0)
    ref = assimilate(tmp_path / "w", ds.drop_isel(time=12), obs, members=4, seed=0)
    assert np.isfinite(out.ssh_mean.values).all()
    np.testing.assert_array_equal(out.ssh_mean.values, ref.ssh_mean.values)


# ------------------------------------------------------------------------------------------------
# 3. one NaN in one Kalman member
# ------------------------------------------------------------------------------------------------


def test_enoi_drops_a_library_member_with_nan_and_equals_the_run_without_it(tmp_path):
    ds = _synthetic()
    bad = ds.copy(deep=True)
    bad.ssh.values[9, 2, 6] = np.nan
    lib = _write(bad, tmp_path / "lib.nc")
    ref_lib = _write(ds.drop_isel(time=9), tmp_path / "lib29.nc")
    obs = _write(_obs(ds, [3, 17]), tmp_path / "obs.nc")
    run = ["enkf", "--method", "enoi", "--obs", str(obs), "--quiet"]
    with pytest.warns(UserWarning, match=r"lib\.nc: 1 of 30 members \(time indices 9\).*dropped, 29"):
        assert main(run + ["--ensemble", str(lib), "--out", str(tmp_path / "e.nc")]) == 0
    assert main(run + ["--ensemble", str(ref_lib), "--out", str(tmp_path / "ref.nc")]) == 0
    with xr.open_dataset(tmp_path / "e.nc") as e, xr.open_dataset(tmp_path / "ref.nc") as r:
        assert np.isfinite(e.ssh_mean.values).all() and np.isfinite(e.psi_mean.values).all()
        for v in ("ssh_mean", "ssh_spread", "psi_mean", "ssh"):
            np.testing.assert_array_equal(e[v].values, r[v].values, err_msg=v)
        assert e.attrs["localization_radius_km"] == r.attrs["localization_radius_km"]


def _member_ensemble(ds, members=8):
    """A member ensemble at the first time of ``ds``: library states 0..members-1 as members."""
    ens = ds.isel(time=slice(0, members)).rename({"time": "member"}).assign_coords(member=np.arange(members))
    return ens.expand_dims(time=ds.time.values[:1]).transpose("time", "member", ...)


@pytest.mark.parametrize("method", [["etkf"], ["letkf", "--loc-radius", "60"]])
def test_member_with_nan_is_dropped_and_too_few_clean_members_refused(tmp_path, capsys, method):
    ds = _synthetic()
    ens = _member_ensemble(ds)
    ens.psi.values[0, 2, 1, 3, 3] = np.nan
    path = _write(ens, tmp_path / "ens.nc")
    obs = _write(_obs(ds, [0]), tmp_path / "obs.nc")
    run = ["enkf", "--method", *method, "--obs", str(obs), "--quiet"]
    with pytest.warns(UserWarning, match=r"ens\.nc at time 2001-01-01T00:00:00: 1 of 8 members \(member indices 2\).*dropped, 7"):
        assert main(run + ["--ensemble", str(path), "--out", str(tmp_path / "e.nc")]) == 0
    with xr.open_dataset(tmp_path / "e.nc") as e:
        assert np.isfinite(e.ssh_mean.values).all() and np.isfinite(e.psi_mean.values).all()
        assert e.sizes["member"] == 7
    few = ens.copy(deep=True)
    few.ssh.values[0, 1:, 0, 0] = np.nan  # 7 of 8 members NaN at one cell that member 0 has
    path = _write(few, tmp_path / "few.nc")
    assert main(run + ["--ensemble", str(path), "--out", str(tmp_path / "f.nc")]) == 2
    _one_line(capsys, "few.nc", "7 of 8 members", "at least 2 members")
    assert not (tmp_path / "f.nc").exists()


@pytest.mark.parametrize("value", [np.nan, np.inf, 0.0, -0.01])
def test_observation_errors_must_be_positive_finite(tmp_path, capsys, value):
    ds = _synthetic()
    o = _obs(ds, [3])
    err = np.full(o.ssh.shape, 0.005, np.float32)
    err[0, 4, :] = value  # a row of bad errors (some of it observed)
    o["ssh_error"] = (("time", "y", "x"), err, {"units": "m"})
    lib, obs, args = _synthetic_run(tmp_path, ds, o)
    out = tmp_path / "e.nc"
    assert main(["enkf", "--method", "enoi", "--ensemble", str(lib), "--obs", str(obs), "--out", str(out),
                 "--quiet"]) == 2
    _one_line(capsys, "obs.nc", "'ssh_error'")
    assert main(args + ["--out", str(out)]) == 2  # the contrastive modes too, though only the hybrid uses errors
    _one_line(capsys, "obs.nc", "'ssh_error'")
    assert not out.exists()


def test_point_observation_error_nan_is_refused(tmp_path, capsys):
    ds = _synthetic()
    lib = _write(ds, tmp_path / "lib.nc")
    n = 6
    pts = xr.Dataset({"ssh": ("obs", np.full(n, 0.01, np.float32), {"units": "m"}),
                      "ssh_error": ("obs", np.array([0.005] * (n - 1) + [np.nan], np.float32), {"units": "m"})},
                     coords={"time": ("obs", np.repeat(ds.time.values[2], n)),
                             "y": ("obs", np.linspace(20, 140, n), {"units": "km"}),
                             "x": ("obs", np.linspace(30, 120, n), {"units": "km"})})
    obs = _write(pts, tmp_path / "pts.nc")
    assert main(["enkf", "--method", "enoi", "--ensemble", str(lib), "--obs", str(obs), "--out",
                 str(tmp_path / "e.nc"), "--quiet"]) == 2
    _one_line(capsys, "pts.nc", "'ssh_error'")


# ------------------------------------------------------------------------------------------------
# 4. units where observations meet states
# ------------------------------------------------------------------------------------------------


def test_observations_in_cm_give_the_analysis_in_m_and_kelvin_is_refused(tmp_path, capsys):
    ds = _synthetic()
    o = _obs(ds, [4, 11])
    lib, obs_m, args = _synthetic_run(tmp_path, ds, o)
    cm = o.copy()
    cm["ssh"] = (o.ssh * 100).assign_attrs(units="cm")
    cm["ssh_error"] = (o.ssh_error * 100).assign_attrs(units="cm")
    obs_cm = _write(cm, tmp_path / "obs_cm.nc")
    kel = o.copy()
    kel["ssh"] = o.ssh.assign_attrs(units="K")
    obs_k = _write(kel, tmp_path / "obs_K.nc")
    swap = lambda a, new: [str(new) if x == str(obs_m) else x for x in a]  # noqa: E731
    enkf = ["enkf", "--method", "enoi", "--ensemble", str(lib), "--obs", str(obs_m), "--quiet"]
    for name, run in (("a", args), ("e", enkf)):
        assert main(run + ["--out", str(tmp_path / f"{name}_m.nc")]) == 0
        with pytest.warns(UserWarning, match="converted from 'cm'"):
            assert main(swap(run, obs_cm) + ["--out", str(tmp_path / f"{name}_cm.nc")]) == 0
        with xr.open_dataset(tmp_path / f"{name}_m.nc") as m, xr.open_dataset(tmp_path / f"{name}_cm.nc") as c:
            for v in ("ssh_mean", "ssh_spread", "psi_mean"):
                scale = float(np.abs(m[v]).max())
                np.testing.assert_allclose(c[v].values, m[v].values, rtol=0, atol=1e-5 * scale, err_msg=(name, v))
        capsys.readouterr()
        assert main(swap(run, obs_k) + ["--out", str(tmp_path / f"{name}_K.nc")]) == 2
        _one_line(capsys, "obs_K.nc", "'K'", "'m'")
        assert not (tmp_path / f"{name}_K.nc").exists()


# ------------------------------------------------------------------------------------------------
# 5. cftime calendars through enkf, assimilate and evaluate
# ------------------------------------------------------------------------------------------------


def _in_calendar(ds, calendar):
    """``ds`` with its (standard) dates relabelled as the same year/month/day in ``calendar`` (day 31 -> 30)."""
    import cftime

    dates = [t.astype("datetime64[s]").astype(object) for t in ds.time.values]
    times = [cftime.datetime(d.year, d.month, min(d.day, 30) if calendar == "360_day" else d.day, d.hour,
                             calendar=calendar) for d in dates]
    out = ds.assign_coords(time=("time", times, ds.time.attrs))
    out.time.encoding = {"units": "days since 2000-01-01", "calendar": calendar}
    return out


def _sample_subset(tmp_path, calendar=None):
    data = bundled_sample_dir("qg")
    files = {}
    for name, src, sel in (("lib", "library.nc", slice(0, 12)), ("truth", "truth_eval_1.nc", slice(0, 3)),
                           ("obs", "obs_altimetry_eval_1.nc", slice(0, 3))):
        with xr.open_dataset(data / src) as ds:
            sub = ds.isel(time=sel).load()
        if name == "truth":  # maps on its y/x km axes: the report's figures without cartopy (seconds faster)
            sub = sub.drop_vars(["lat", "lon"])
        files[name] = _write(_in_calendar(sub, calendar) if calendar else sub, tmp_path / f"{name}.nc")
    return files


@pytest.mark.parametrize("calendar", ["360_day", "noleap"])
def test_calendars_through_enkf_assimilate_and_evaluate(tmp_path, calendar):
    f = _sample_subset(tmp_path, calendar)
    model = bundled_sample_dir("qg").parent / "models" / "qg_window"
    assert main(["enkf", "--method", "enoi", "--ensemble", str(f["lib"]), "--obs", str(f["obs"]),
                 "--out", str(tmp_path / "enoi.nc"), "--quiet"]) == 0
    assert main(["assimilate", "--model", str(model), "--library", str(f["lib"]), "--obs", str(f["obs"]),
                 "--out", str(tmp_path / "local.nc"), "--members", "4", "--quiet",
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    assert not (model / CACHE_DIRNAME).exists() or any((tmp_path / "cache").iterdir())
    for name in ("enoi.nc", "local.nc"):
        with xr.open_dataset(tmp_path / name, decode_times=False) as a:
            assert a.time.attrs["calendar"] == calendar, name
            assert np.isfinite(a.ssh_mean.values).all() and np.isfinite(a.psi_mean.values).all(), name
            np.testing.assert_array_equal(a.time.values - a.time.values[0], [0, 1, 2])
    assert main(["evaluate", "--truth", str(f["truth"]), "--analysis", f"enoi={tmp_path / 'enoi.nc'}",
                 f"local={tmp_path / 'local.nc'}", "--obs", str(f["obs"]), "--climatology", str(f["lib"]),
                 "--variable", "ssh", "--out", str(tmp_path / "report"), "--quiet"]) == 0
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    for name in ("enoi", "local", "climatology"):
        m = metrics["methods"][name]
        assert np.isfinite(m["rmse"]) and m["n_times"] == 3, name
    assert metrics["methods"]["enoi"]["rmse"] < metrics["methods"]["climatology"]["rmse"]


def test_mixed_calendars_are_refused_in_one_line(tmp_path, capsys):
    f = _sample_subset(tmp_path)
    d360 = tmp_path / "d360"
    d360.mkdir()
    g = _sample_subset(d360, "360_day")
    assert main(["enkf", "--method", "enoi", "--ensemble", str(g["lib"]), "--obs", str(g["obs"]),
                 "--out", str(tmp_path / "enoi360.nc"), "--quiet", "--loc-radius", "100"]) == 0
    out = tmp_path / "report"
    assert main(["evaluate", "--truth", str(f["truth"]), "--analysis", f"enoi={tmp_path / 'enoi360.nc'}",
                 "--out", str(out), "--quiet"]) == 2
    _one_line(capsys, "enoi360.nc", "360_day", "standard")
    assert not out.exists() or not any(out.iterdir())
    # a member ensemble with times is matched to the observation times: in one calendar only
    with xr.open_dataset(f["lib"]) as lib, xr.open_dataset(f["obs"]) as o:
        one = lib.isel(time=slice(0, 6)).load().rename(time="member").assign_coords(member=np.arange(6))
        times = xr.DataArray(o.time.values[:2], dims="time", name="time")
    ens = xr.concat([one, one], dim=times).transpose("time", "member", ...)
    path = _write(ens, tmp_path / "ens.nc")
    assert main(["enkf", "--method", "etkf", "--ensemble", str(path), "--obs", str(g["obs"]),
                 "--out", str(tmp_path / "e.nc"), "--quiet"]) == 2
    _one_line(capsys, "ens.nc", "360_day", "standard")
    assert not (tmp_path / "e.nc").exists()
