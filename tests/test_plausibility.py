"""Values that cannot be what they claim, and the units a model was trained in (issue 17).

- an undeclared fill value (|x| >= 1e20) in a field is refused when the file is opened;
- observations far outside the range of the states they observe (-999 in SSH in metres) are refused;
- a zero, NaN or Inf ``scale_factor`` (or a non-finite ``add_offset``) is refused at open;
- a model records the units of its training data (``config["units"]``); at ``assimilate`` the library
  and the observations are converted to them (cm -> m), or refused when incompatible.
Each finding has a CLI case through :func:`oceanda.cli.main`: exit 2, one line naming the file.
"""

import contextlib
import copy
import io as _io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from oceanda import cli, io
from oceanda.analysis.encoding import check_grid_config, model_fingerprint, model_units, to_model_units
from oceanda.analysis.library import Library
from oceanda.errors import CheckpointError, DataValidationError

from conftest import make_state_dataset

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data" / "qg"
MODELS = REPO / "sample_data" / "models"


def _states(nt=8, n=16, seed=0) -> xr.Dataset:
    """Small SSH states in metres (std 0.1 m) on a 16 x 16 projected grid."""
    ds = make_state_dataset(nt=nt, ny=n, nx=n, layers=False, seed=seed)
    ds["ssh"] = (ds.ssh.dims, 0.1 * ds.ssh.values.astype(np.float32),
                 {"units": "m", "standard_name": "sea_surface_height_above_geoid", "long_name": "sea surface height"})
    return ds


def _obs(states: xr.Dataset, times=2, frac=0.3, seed=1) -> xr.Dataset:
    """Gridded observations of ``states``: NaN where unobserved, a 1 cm error."""
    rng = np.random.default_rng(seed)
    obs = states[["ssh"]].isel(time=slice(0, times)).copy(deep=True)
    keep = rng.random(obs.ssh.shape) < frac
    obs["ssh"] = obs.ssh.where(keep).assign_attrs(states.ssh.attrs)
    obs["ssh_error"] = (obs.ssh.dims, np.full(obs.ssh.shape, 0.01, np.float32), {"units": "m"})
    return obs


def _write(ds: xr.Dataset, path: Path, encoding=None) -> Path:
    ds.to_netcdf(path, encoding=encoding)
    return path


def _run(argv) -> tuple[int, list[str]]:
    """``oceanda argv`` in this process: exit code and the error lines on stderr."""
    err = _io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(_io.StringIO()):
        rc = cli.main([str(a) for a in argv])
    text = err.getvalue()
    assert "Traceback" not in text, text
    return rc, [ln for ln in text.splitlines() if ": error:" in ln]


def _one_error(argv, *needles) -> str:
    rc, lines = _run(argv)
    assert rc == 2 and len(lines) == 1, (rc, lines)
    for n in needles:
        assert str(n) in lines[0], (n, lines[0])
    return lines[0]


# ----------------------------------------------------------------------------------------------
# 1. Undeclared fill values in fields
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value, shown", [(1e30, "1e+30"), (-1e30, "-1e+30"), (1e20, "1e+20"),
                                          (9.969209968386869e36, "9.96921e+36")])
def test_undeclared_fill_value_refused(tmp_path, value, shown):
    ds = _states()
    a = ds.ssh.values.copy()
    a[2, 3, 4] = a[5, 6, 7] = value
    ds["ssh"] = ds.ssh.copy(data=a)
    path = _write(ds, tmp_path / "states.nc")
    with pytest.raises(DataValidationError) as e:
        io.open_states(path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{path}: variable 'ssh' holds {shown} at 2 points;"), msg
    assert "_FillValue or missing_value" in msg


def test_declared_fill_value_and_large_physical_values_accepted(tmp_path):
    ds = _states()
    a = ds.ssh.values.copy()
    a[2, 3, 4] = np.nan
    ds["ssh"] = ds.ssh.copy(data=a)
    ds["psi"] = (("time", "y", "x"), 1e19 * np.ones(ds.ssh.shape, np.float32), {"units": "m2 s-1"})  # big, not fill
    path = _write(ds, tmp_path / "states.nc", encoding={"ssh": {"_FillValue": np.float32(1e30)}})
    out = io.open_states(path)
    assert np.isnan(float(out.ssh[2, 3, 4])) and float(out.psi.max()) == pytest.approx(1e19)


def test_undeclared_fill_value_refused_in_point_observations(tmp_path):
    n = 20
    pts = xr.Dataset({"ssh": ("obs", np.r_[np.full(n - 1, 0.05), 1e30].astype(np.float32), {"units": "m"}),
                      "ssh_error": ("obs", np.full(n, 0.01, np.float32), {"units": "m"})},
                     coords={"time": ("obs", np.datetime64("2021-01-01", "ns") + np.arange(n) * np.timedelta64(1, "h")),
                             "lat": ("obs", np.full(n, 38.0)), "lon": ("obs", np.full(n, -60.0))})
    path = _write(pts, tmp_path / "points.nc")
    with pytest.raises(DataValidationError, match=r"points.nc: variable 'ssh' holds 1e\+30 at 1 points"):
        io.open_obs(path)


def test_cli_enoi_ensemble_with_undeclared_fill(tmp_path):
    ds = _states()
    a = ds.ssh.values.copy()
    a[1, 8, 8] = 1e30
    ens = _write(ds.copy(data={"ssh": a}), tmp_path / "ens.nc")
    obs = _write(_obs(_states()), tmp_path / "obs.nc")
    out = tmp_path / "a.nc"
    _one_error(["enkf", "--method", "enoi", "--ensemble", ens, "--obs", obs, "--out", out, "--quiet"],
               ens, "'ssh' holds 1e+30 at 1 points")
    assert not out.exists()


# ----------------------------------------------------------------------------------------------
# 1b. Observations far outside the states they observe
# ----------------------------------------------------------------------------------------------


def test_obs_far_outside_the_states_refused(tmp_path):
    states = _states()
    obs = _obs(states)
    a = obs.ssh.values.copy()
    a[np.isnan(a)] = -999.0  # unobserved cells written as -999, no _FillValue says so
    obs["ssh"] = obs.ssh.copy(data=a)
    path = _write(obs, tmp_path / "obs.nc")
    st = _write(states, tmp_path / "states.nc")
    like = io.open_states(st)
    with pytest.raises(DataValidationError) as e:
        io.open_obs(path, like=like)
    msg = str(e.value)
    lo, hi = float(states.ssh.min()), float(states.ssh.max())
    assert "\n" not in msg and msg.startswith(f"{path}: observed variable 'ssh' holds -999 m"), msg
    assert f"the states' range [{lo:.4g}, {hi:.4g}] m of {st.resolve()}" in msg and "undeclared fill value" in msg
    assert f"({int(np.sum(a == -999.0))} values outside" in msg


def test_obs_range_check_keeps_legitimate_observations(tmp_path):
    states = _states()
    like = io.open_states(_write(states, tmp_path / "states.nc"))
    obs = _obs(states)
    obs["ssh"] = (5 * obs.ssh).assign_attrs(states.ssh.attrs)  # 5x the states' values: unusual, not garbage
    assert np.isfinite(io.open_obs(_write(obs, tmp_path / "obs5.nc"), like=like).ssh).any()
    cm = _obs(states)  # in cm: converted first, then compared
    cm["ssh"] = (100 * cm.ssh).assign_attrs({**states.ssh.attrs, "units": "cm"})
    cm["ssh_error"] = (100 * cm.ssh_error).assign_attrs(units="cm")
    with pytest.warns(UserWarning, match="converted from 'cm'"):
        got = io.open_obs(_write(cm, tmp_path / "obs_cm.nc"), like=like)
    np.testing.assert_allclose(got.ssh.values, obs.ssh.values / 5, rtol=1e-5)
    fill = _obs(states)  # -999 declared: decoded to NaN, fine
    path = _write(fill, tmp_path / "obs_fill.nc", encoding={"ssh": {"_FillValue": np.float32(-999.0)}})
    assert float(io.open_obs(path, like=like).ssh.min()) > -1


def test_obs_range_check_with_constant_or_zero_states(tmp_path):
    states = _states()
    obs = _obs(states)
    const = states.copy(data={"ssh": np.full(states.ssh.shape, 0.05, np.float32)})
    like = io.open_states(_write(const, tmp_path / "const.nc"))
    assert io.open_obs(_write(obs, tmp_path / "obs.nc"), like=like).sizes["time"] == 2  # within 10 x |0.05|
    far = obs.copy(data={"ssh": obs.ssh.values + 5.0, "ssh_error": obs.ssh_error.values})
    with pytest.raises(DataValidationError, match="far outside the states' range"):
        io.open_obs(_write(far, tmp_path / "far.nc"), like=like)
    zero = states.copy(data={"ssh": np.zeros(states.ssh.shape, np.float32)})  # no scale to judge by: no check
    like0 = io.open_states(_write(zero, tmp_path / "zero.nc"))
    assert io.open_obs(tmp_path / "far.nc", like=like0).sizes["time"] == 2


def test_obs_range_of_large_states_from_a_sample_of_times(tmp_path, monkeypatch):
    states = _states(nt=40)
    like = io.open_states(_write(states, tmp_path / "states.nc"), chunks={"time": 5})
    monkeypatch.setattr(io, "RANGE_SAMPLE_BYTES", like.ssh.nbytes // 4)  # 2 of the 8 dask chunks: the first, the last
    seen = []
    real = io._state_range
    monkeypatch.setattr(io, "_state_range", lambda ds, n: seen.append(real(ds, n)) or seen[-1])
    obs = _obs(states)
    files = [_write(obs, tmp_path / "obs.nc"), _write(_obs(states.isel(time=slice(2, None))), tmp_path / "obs2.nc")]
    assert io.open_obs(files, like=like).sizes["time"] == 4
    part = states.ssh.isel(time=[*range(5), *range(35, 40)])
    assert seen == [(float(part.min()), float(part.max()))]  # computed once for the two files
    a = obs.ssh.values.copy()
    a[0, 0, 0] = -999.0
    bad = _write(obs.copy(data={"ssh": a, "ssh_error": obs.ssh_error.values}), tmp_path / "bad.nc")
    with pytest.raises(DataValidationError, match="bad.nc: observed variable 'ssh' holds -999 m"):
        io.open_obs(bad, like=like)


def test_cli_enoi_obs_with_undeclared_minus_999(tmp_path):
    states = _states()
    ens = _write(states, tmp_path / "ens.nc")
    obs = _obs(states)
    a = obs.ssh.values.copy()
    a[np.isnan(a)] = -999.0
    path = _write(obs.copy(data={"ssh": a, "ssh_error": obs.ssh_error.values}), tmp_path / "obs.nc")
    out = tmp_path / "a.nc"
    _one_error(["enkf", "--method", "enoi", "--ensemble", ens, "--obs", path, "--out", out, "--quiet"],
               path, "'ssh' holds -999 m", "the states' range", ens)
    assert not out.exists()


# ----------------------------------------------------------------------------------------------
# 2. Packing attributes
# ----------------------------------------------------------------------------------------------


def _packed(states: xr.Dataset, scale, offset=0.0) -> xr.Dataset:
    ds = states.copy()
    packed = np.round(np.nan_to_num(states.ssh.values) / 1e-4).astype(np.int16)
    attrs = {**states.ssh.attrs, "scale_factor": np.float32(scale), "add_offset": np.float32(offset),
             "_FillValue": np.int16(-32768)}
    ds["ssh"] = (states.ssh.dims, packed, attrs)
    return ds


@pytest.mark.parametrize("scale, offset, shown", [(0.0, 0.0, "scale_factor 0;"), (np.nan, 0.0, "scale_factor nan;"),
                                                  (np.inf, 0.0, "scale_factor inf;"), (1e-4, np.nan, "add_offset nan;"),
                                                  (1e-4, -np.inf, "add_offset -inf;")])
def test_bad_packing_refused_at_open(tmp_path, scale, offset, shown):
    path = tmp_path / "packed.nc"
    ds = _packed(_states(), scale, offset)
    ds.to_netcdf(path)  # the packing attributes written as given
    with pytest.raises(DataValidationError) as e:
        io.open_states(path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{path}: variable 'ssh' has {shown}"), msg


def test_valid_packing_accepted(tmp_path):
    states = _states()
    path = tmp_path / "packed.nc"
    _packed(states, 1e-4).to_netcdf(path)
    got = io.open_states(path)
    np.testing.assert_allclose(got.ssh.values, states.ssh.values, atol=1e-4)


def test_cli_observe_states_packed_with_scale_factor_0(tmp_path):
    path = tmp_path / "packed.nc"
    _packed(_states(), 0.0).to_netcdf(path)
    out = tmp_path / "obs.nc"
    _one_error(["observe", "--states", path, "--operator", "altimetry", "--out", out, "--quiet"],
               path, "variable 'ssh' has scale_factor 0")
    assert not out.exists()


# ----------------------------------------------------------------------------------------------
# 3. Units of a model
# ----------------------------------------------------------------------------------------------


def _config(name: str) -> dict:
    return json.loads((MODELS / name / "config.json").read_text())


def test_bundled_models_record_the_units_of_their_library():
    lib = xr.open_dataset(SAMPLE / "library.nc")
    for name, names in (("qg_window", ["psi", "ssh"]), ("qg_field", ["psi", "ssh"])):  # the window model observes psi
        units = _config(name)["units"]
        assert sorted(units) == names
        assert all(units[v] == lib[v].attrs["units"] for v in names)
    lib.close()


@pytest.mark.parametrize("units, key", [("m", "'units' is the string 'm'"), ({"ssh": 5}, "'units.ssh' is 5"),
                                        ({"ssh": "bananas"}, "'units.ssh' is the string 'bananas'")])
def test_malformed_units_in_a_checkpoint_refused(units, key):
    cfg = _config("qg_window")
    cfg["units"] = units
    with pytest.raises(CheckpointError, match=rf"^x/config.json: {key}; expected"):
        check_grid_config(cfg, "x/config.json")


def test_units_optional_and_the_layout_stands_in():
    cfg = _config("qg_field")
    check_grid_config(cfg, "c")
    assert model_units(cfg) == {"psi": "m2 s-1", "ssh": "m"}
    old = {k: v for k, v in cfg.items() if k != "units"}  # a model trained before units were recorded
    check_grid_config(old, "c")
    assert model_units(old) == {"psi": "m2 s-1", "ssh": "m"}  # from extra.layout.attrs
    older = copy.deepcopy(old)
    del older["extra"]["layout"]
    assert model_units(older) == {}


def test_model_fingerprint_unchanged_by_the_units_key():
    from oceanda.analysis.encoding import load_model

    model, enc = load_model(MODELS / "qg_window")
    assert enc.units == {"psi": "m2 s-1", "ssh": "m"}
    key = model_fingerprint(model)
    del model.config["units"]
    assert model_fingerprint(model) == key == enc.key


def _library_file(tmp_path: Path, name: str, units: str = "m", factor: float = 1.0, nt: int = 8) -> Path:
    ds = _states(nt=nt)
    ds["ssh"] = (ds.ssh * np.float32(factor)).assign_attrs({**ds.ssh.attrs, "units": units})
    return _write(ds, tmp_path / name)


def test_library_in_units_converts_lazily_on_every_read_path(tmp_path):
    lib_m = Library.open(_library_file(tmp_path, "m.nc"))
    assert lib_m.in_units({"ssh": "m"}) is lib_m and lib_m.in_units({"ssh": "meters"}) is lib_m
    lib_cm = Library.open(_library_file(tmp_path, "cm.nc", "cm", 100.0))
    with pytest.warns(UserWarning, match=r"cm.nc: library 'ssh' converted from 'cm' to the units 'm' of M \(x 0.01\)"):
        conv = lib_cm.in_units({"ssh": "m"}, "M")
    assert conv.layout.attrs["ssh"]["units"] == "m" and conv.ds.ssh.attrs["units"] == "m"
    assert conv._direct is not None  # scattered reads stay direct, converted as read
    want = lib_m.read([0, 3, 5])
    np.testing.assert_allclose(conv.read([0, 3, 5]), want, rtol=1e-6)  # _direct path
    conv._direct = None
    np.testing.assert_allclose(conv.read([0, 3, 5]), want, rtol=1e-6)  # dask path
    np.testing.assert_allclose(lib_cm.read([0]), 100 * want[:1], rtol=1e-6)  # the original untouched


def test_library_in_incompatible_units_refused(tmp_path):
    path = _library_file(tmp_path, "k.nc", "K")
    lib = Library.open(path)
    with pytest.raises(DataValidationError) as e:
        lib.in_units({"ssh": "m"}, "model/config.json")
    msg = str(e.value)
    assert msg.startswith(f"{path}: variable 'ssh' has units 'K', incompatible with the units 'm' of model/config.json")


def test_to_model_units_converts_the_observations_and_their_errors(tmp_path):
    from oceanda.analysis.encoding import load_model

    _, enc = load_model(MODELS / "qg_window")
    lib = Library.open(_library_file(tmp_path, "m.nc"))
    obs = _obs(_states())
    assert to_model_units(enc, lib, obs) == (lib, obs)  # already the model's units: the same objects
    cm = obs.copy()
    cm["ssh"] = (100 * obs.ssh).assign_attrs(units="cm")
    cm["ssh_error"] = (100 * obs.ssh_error).assign_attrs(units="cm")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        _, got = to_model_units(enc, lib, cm)
    assert any("observed 'ssh' converted from 'cm' to the units 'm'" in str(x.message) for x in w)
    np.testing.assert_allclose(got.ssh.values, obs.ssh.values, rtol=1e-6)
    np.testing.assert_allclose(got.ssh_error.values, obs.ssh_error.values, rtol=1e-6)
    assert got.ssh.attrs["units"] == "m"


def _sample_subset(path: Path, name: str, times: int, change=None) -> Path:
    with xr.open_dataset(SAMPLE / f"{name}.nc") as ds:
        sub = ds.isel(time=slice(0, times)).load()
    if change is not None:
        sub = change(sub)
    return _write(sub, path)


def test_cli_assimilate_library_in_cm_analyses_as_in_m(tmp_path, monkeypatch):
    # float32 window means: an ulp's change of input can move a bfloat16 rounding by 2^-9 (its own test bounds that)
    monkeypatch.setenv("OCEANDA_BF16", "0")

    def in_cm(ds):
        ds["ssh"] = (100 * ds.ssh).assign_attrs({**ds.ssh.attrs, "units": "cm"})
        return ds

    lib_m = _sample_subset(tmp_path / "lib_m.nc", "library", 24)
    lib_cm = _sample_subset(tmp_path / "lib_cm.nc", "library", 24, in_cm)
    obs = _sample_subset(tmp_path / "obs.nc", "obs_altimetry_eval_1", 1)
    outs = {}
    for lib in (lib_m, lib_cm):
        outs[lib] = tmp_path / f"a_{lib.stem}.nc"
        argv = ["assimilate", "--model", MODELS / "qg_window", "--library", lib, "--obs", obs, "--out", outs[lib],
                "--members", "4", "--quiet", "--cache-dir", tmp_path / "cache"]
        assert _run(argv) == (0, [])
    with xr.open_dataset(outs[lib_m]) as a, xr.open_dataset(outs[lib_cm]) as b:
        assert b.ssh_mean.attrs["units"] == "m"
        # 2.3 cm apart before the conversion; after it, float32 rounding of x100 then x0.01 leaves the library an
        # ulp off, which moved 1 % of cells by up to 4.9e-7 m on an AVX-512 machine (passed at 1e-7 on AVX2)
        np.testing.assert_allclose(b.ssh_mean.values, a.ssh_mean.values, rtol=0, atol=1e-5)


def test_cli_assimilate_library_in_incompatible_units(tmp_path):
    def psi_in_k(ds):
        ds["psi"] = ds.psi.assign_attrs(units="K")
        return ds

    lib = _sample_subset(tmp_path / "lib.nc", "library", 8, psi_in_k)
    obs = _sample_subset(tmp_path / "obs.nc", "obs_altimetry_eval_1", 1)
    model = MODELS / "qg_field"
    out = tmp_path / "a.nc"
    _one_error(["assimilate", "--model", model, "--library", lib, "--obs", obs, "--out", out, "--mode", "global",
                "--quiet", "--cache-dir", tmp_path / "cache"],
               lib, "variable 'psi' has units 'K'", "'m2 s-1'", model / "config.json")
    assert not out.exists()


def _smooth_library(n=60, size=16, seed=0) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    k = np.fft.fftfreq(size)[:, None] ** 2 + np.fft.fftfreq(size)[None, :] ** 2
    ssh = np.real(np.fft.ifft2(np.fft.fft2(rng.normal(size=(n, size, size))) * np.exp(-k / 0.02))).astype(np.float32)
    return xr.Dataset({"ssh": (("time", "y", "x"), ssh, {"units": "m"})},
                      coords={"time": np.datetime64("2001-01-01", "ns") + np.arange(n) * np.timedelta64(1, "D"),
                              "y": np.arange(size) * 10.0, "x": np.arange(size) * 10.0})


def test_window_training_records_units_and_a_cm_library_analyses_alike(tmp_path, monkeypatch):
    import torch

    monkeypatch.setenv("OCEANDA_BF16", "0")  # float32 window means, as in the CLI's units test

    from oceanda.analysis.assimilate import assimilate
    from oceanda.analysis.window_training import WindowTrainingConfig, train_window_model

    torch.set_num_threads(1)
    ds = _smooth_library()
    cfg = WindowTrainingConfig(size=8, stride=4, halo=4, embedding_dim=8, epochs=1, pairs_per_epoch=128, val_pairs=64,
                               batch_size=64, seconds=30, max_days=1, library_stride=4,
                               obs_encoder={"type": "mlp", "hidden": [16]}, state_encoder={"type": "mlp", "hidden": [16]})
    train_window_model(Library(ds), lambda m, r: r.random((m, 16, 16)) < 0.2, [0.05], tmp_path / "m", config=cfg)
    assert json.loads((tmp_path / "m" / "config.json").read_text())["units"] == {"ssh": "m"}
    obs = ds[["ssh"]].isel(time=[3]).where(np.random.default_rng(1).random((1, 16, 16)) < 0.3)
    obs["ssh_error"] = xr.DataArray(0.05, attrs={"units": "m"})
    a = assimilate(tmp_path / "m", ds, obs, members=4, cache_dir=tmp_path / "cache")
    cm = ds.copy()
    cm["ssh"] = (100 * ds.ssh).assign_attrs(units="cm")
    obs_cm = obs.copy()  # as io.open_obs gives them against a cm library
    obs_cm["ssh"], obs_cm["ssh_error"] = (100 * obs.ssh).assign_attrs(units="cm"), obs.ssh_error.copy(data=5.0)
    obs_cm["ssh_error"].attrs["units"] = "cm"
    with pytest.warns(UserWarning, match="converted from 'cm' to the units 'm'"):
        b = assimilate(tmp_path / "m", cm, obs_cm, members=4, cache_dir=tmp_path / "cache")
    np.testing.assert_allclose(b.ssh_mean.values, a.ssh_mean.values, atol=1e-6)
    assert b.attrs["model_fingerprint"] == a.attrs["model_fingerprint"]


def test_field_training_records_units(tmp_path):
    import torch

    from oceanda.observe import AlongTrackAltimetry
    from oceanda.pairs import train_field_model

    torch.set_num_threads(1)
    ds = make_state_dataset(nt=24, ny=16, nx=16, layers=True, seed=3)
    obs = AlongTrackAltimetry().observe(ds, np.random.default_rng(0))
    train_field_model(ds, obs, tmp_path / "m", state_vars=["ssh", "psi"], obs_vars=["ssh"], epochs=1, batch_size=8,
                      embedding_dim=8, cnn={"width": 4, "depth": 1}, quiet=True)
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["units"] == {"ssh": "m", "psi": "m2 s-1"}
    check_grid_config(cfg, "c")
