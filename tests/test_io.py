"""oceanda.io: CF round trips, validation errors naming file and variable, atomic and refused writes."""

import hashlib
import os
import warnings

import numpy as np
import pytest
import xarray as xr

from oceanda import io
from oceanda.errors import DataValidationError, GridMismatchError, OceandaError, OutputExistsError

from conftest import make_state_dataset


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.mark.parametrize("engine", ["netcdf4", "h5netcdf"])
@pytest.mark.parametrize("layers", [True, False])
def test_round_trip_keeps_values_coords_attrs_encoding(tmp_path, engine, layers):
    ds = make_state_dataset(layers=layers, nan_frac=0.1)
    path = io.write_netcdf(ds, tmp_path / "s.nc", engine=engine)
    back = io.open_states(path, engine=engine)
    for v in ds.data_vars:
        np.testing.assert_array_equal(back[v].values, ds[v].values.astype(np.float32))  # NaN positions equal too
        assert back[v].dtype == np.float32
        assert back[v].attrs["units"] == ds[v].attrs["units"]
        enc = back[v].encoding
        assert enc.get("zlib", enc.get("compression") == "gzip")
        assert enc["shuffle"] is True
        assert enc["chunksizes"][0] == 1  # one time step per chunk
    for c in ("time", "y", "x", "lat", "lon"):
        np.testing.assert_array_equal(back[c].values, ds[c].values)
    assert back.attrs["Conventions"] == "CF-1.8"
    assert "oceanda 0.1.0" in back.attrs["history"]
    assert back.attrs["title"] == "test state"
    assert back["ssh"].attrs["standard_name"] == "sea_surface_height_above_geoid"
    assert back["lat"].attrs["units"] == "degrees_north"
    assert back["ssh"].chunks is not None  # lazy (dask)


@pytest.mark.parametrize("engine", ["netcdf4", "h5netcdf"])
def test_complevel_zero_writes_without_a_filter_and_the_same_values(tmp_path, engine):
    ds = make_state_dataset(layers=True, nan_frac=0.1)
    plain = io.open_states(io.write_netcdf(ds, tmp_path / "plain.nc", engine=engine, complevel=0), engine=engine)
    packed = io.open_states(io.write_netcdf(ds, tmp_path / "packed.nc", engine=engine), engine=engine)
    for v in ds.data_vars:
        np.testing.assert_array_equal(plain[v].values, packed[v].values)
        enc = plain[v].encoding
        assert not enc.get("zlib", False) and enc.get("compression") in (None, False) and not enc.get("shuffle", False)
        assert enc["chunksizes"][0] == 1 and plain[v].dtype == np.float32


def test_constrained_figure_is_saved_in_one_draw_as_savefig_would(tmp_path, monkeypatch):
    """save_figure's single-draw PNG of a constrained layout is pixel for pixel savefig's (which draws twice)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.figure as mfig
    import matplotlib.pyplot as plt
    from PIL import Image

    def figure():
        fig = plt.figure(figsize=(5, 3), layout="constrained")
        ax = fig.subplots(1, 2)
        im = ax[0].imshow(np.arange(20.0).reshape(4, 5))
        fig.colorbar(im, ax=ax[0], label="a long colour bar label (m)")
        ax[1].plot([1, 2, 3], [3, 1, 2])
        ax[1].set(title="title", xlabel="x (km)")
        return fig

    fig = figure()
    fig.savefig(tmp_path / "ref.png", dpi=90)
    plt.close(fig)
    draws = []
    orig = mfig.Figure.draw
    monkeypatch.setattr(mfig.Figure, "draw", lambda self, r: (draws.append(1), orig(self, r))[1])
    fig = figure()
    io.save_figure(fig, tmp_path / "one.png", dpi=90)
    plt.close(fig)
    assert len(draws) == 1
    a, b = np.asarray(Image.open(tmp_path / "ref.png")), np.asarray(Image.open(tmp_path / "one.png"))
    assert a.shape == b.shape and np.array_equal(a, b)
    assert Image.open(tmp_path / "one.png").info.get("dpi", (0,))[0] == pytest.approx(90, abs=0.5)
    fig = figure()
    canvas, dpi = fig.canvas, fig.dpi
    io.save_figure(fig, tmp_path / "again.png", dpi=55)
    assert fig.canvas is canvas and fig.dpi == dpi  # the caller's figure is left as it was
    plt.close(fig)


def test_open_states_concatenates_files_along_time(tmp_path):
    ds = make_state_dataset(nt=6)
    io.write_netcdf(ds.isel(time=slice(0, 3)), tmp_path / "a.nc")
    io.write_netcdf(ds.isel(time=slice(3, 6)), tmp_path / "b.nc")
    back = io.open_states([tmp_path / "a.nc", tmp_path / "b.nc"])
    assert back.sizes["time"] == 6
    np.testing.assert_allclose(back.ssh.values, ds.ssh.values.astype(np.float32))
    glob_back = io.open_states(str(tmp_path / "*.nc"))
    assert glob_back.sizes["time"] == 6


def test_overlapping_files_are_refused(tmp_path):
    ds = make_state_dataset(nt=4)
    io.write_netcdf(ds.isel(time=slice(0, 3)), tmp_path / "a.nc")
    io.write_netcdf(ds.isel(time=slice(2, 4)), tmp_path / "b.nc")
    with pytest.raises(DataValidationError, match="time"):
        io.open_states([tmp_path / "a.nc", tmp_path / "b.nc"])


def _raw_write(ds, path):
    ds.to_netcdf(path)
    return str(path)


@pytest.mark.parametrize(
    "mutate, var, needle",
    [
        (lambda ds: ds.drop_vars("psi"), "psi", "missing variable"),
        (lambda ds: ds.assign(ssh=ds.ssh.expand_dims(band=[0])), "ssh", "unexpected dimension"),
        (lambda ds: ds.assign(ssh=ds.ssh.isel(time=0, drop=True)), "ssh", "missing dimension 'time'"),
        (lambda ds: ds.assign(ssh=ds.ssh.where(False)), "ssh", "all NaN"),
        (lambda ds: ds.assign(ssh=ds.ssh.where(ds.ssh < 1.0, np.inf)), "ssh", "Inf"),
        (lambda ds: ds.assign(ssh=ds.ssh.assign_attrs(units="wibbles")), "ssh", "unknown units"),
        (lambda ds: ds.assign(ssh=ds.ssh.drop_attrs()), "ssh", "no 'units'"),
        (lambda ds: ds.assign(ssh=(ds.ssh > 0).assign_attrs(units="1")), "ssh", "non-numeric dtype"),
    ],
)
def test_validation_errors_name_file_and_variable(tmp_path, mutate, var, needle):
    path = _raw_write(mutate(make_state_dataset()), tmp_path / "bad.nc")
    with pytest.raises(DataValidationError) as exc:
        io.open_states(path, variables=["ssh", "psi"])
    msg = str(exc.value)
    assert path in msg and f"'{var}'" in msg and needle in msg


@pytest.mark.parametrize(
    "coord, values, needle",
    [
        ("x", lambda x: np.r_[x[:3], x[2], x[4:]], "duplicated"),
        ("y", lambda y: np.r_[y[1], y[0], y[2:]], "not monotonic"),
        ("time", lambda t: t[::-1], "not increasing"),
    ],
)
def test_bad_coordinates_are_refused(tmp_path, coord, values, needle):
    ds = make_state_dataset()
    ds = ds.assign_coords({coord: values(ds[coord].values)})
    path = _raw_write(ds, tmp_path / "coords.nc")
    with pytest.raises(DataValidationError) as exc:
        io.open_states(path)
    assert path in str(exc.value) and f"'{coord}'" in str(exc.value) and needle in str(exc.value)


def test_open_obs_checks_grid_and_defaults_error(tmp_path):
    states = make_state_dataset()
    obs = states[["ssh"]].where(np.random.default_rng(1).random(states.ssh.shape) < 0.3)
    path = _raw_write(obs, tmp_path / "obs.nc")
    with pytest.warns(UserWarning, match="ssh_error"):
        o = io.open_obs(path, like=states)
    assert float(o.ssh_error) == pytest.approx(0.1 * float(obs.ssh.std()), rel=1e-5)
    # With an explicit error variable: no warning, values kept.
    obs2 = obs.assign(ssh_error=xr.full_like(obs.ssh, 0.05).assign_attrs(units="m"))
    p2 = _raw_write(obs2, tmp_path / "obs2.nc")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        o2 = io.open_obs(p2, like=states)
    assert float(o2.ssh_error.max()) == pytest.approx(0.05)
    # A grid that does not match the states.
    p3 = _raw_write(obs2.isel(x=slice(0, 5)), tmp_path / "obs3.nc")
    with pytest.raises(GridMismatchError) as exc:
        io.open_obs(p3, like=states)
    assert p3 in str(exc.value) and "'x'" in str(exc.value)
    p4 = _raw_write(obs2.rename(ssh="sst", ssh_error="sst_error"), tmp_path / "obs4.nc")
    with pytest.raises(DataValidationError, match="sst"):
        io.open_obs(p4, like=states)


def test_refused_overwrite_leaves_file_byte_identical(tmp_path):
    ds = make_state_dataset()
    path = io.write_netcdf(ds, tmp_path / "out.nc")
    before = sha(path)
    with pytest.raises(OutputExistsError, match="out.nc"):
        io.write_netcdf(ds * 2, path)
    assert sha(path) == before
    io.write_netcdf(ds * 2, path, overwrite=True)
    assert sha(path) != before


def test_input_file_is_never_overwritten(tmp_path):
    path = io.write_netcdf(make_state_dataset(), tmp_path / "in.nc")
    before = sha(path)
    ds = io.open_states(path)
    with pytest.raises(OutputExistsError, match="input"):
        io.write_netcdf(ds, path, overwrite=True)
    assert sha(path) == before


def test_failed_write_leaves_no_file_and_no_temporary(tmp_path, monkeypatch):
    ds = make_state_dataset()

    def boom(self, path, *a, **k):
        with open(path, "wb") as fh:
            fh.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        io.write_netcdf(ds, tmp_path / "x.nc")
    assert os.listdir(tmp_path) == []


def test_json_and_checkpoint_round_trip(tmp_path):
    import torch

    io.write_json({"a": np.float32(1.5), "b": [np.int64(2)], "c": float("nan")}, tmp_path / "m.json")
    assert io.read_json(tmp_path / "m.json") == {"a": 1.5, "b": [2], "c": None}
    tensors = {"w": torch.arange(6.0).reshape(2, 3)}
    io.save_checkpoint(tmp_path / "ck", tensors, {"kind": "linear"})
    with pytest.raises(OutputExistsError):
        io.save_checkpoint(tmp_path / "ck", tensors, {"kind": "linear"})
    t, cfg = io.load_checkpoint(tmp_path / "ck")
    assert torch.equal(t["w"], tensors["w"]) and cfg == {"kind": "linear"}
    (tmp_path / "ck" / "model.safetensors").write_bytes(b"\x80\x04not a safetensors file")
    with pytest.raises(OceandaError, match="safetensors"):
        io.load_checkpoint(tmp_path / "ck")


def test_units_parser():
    for ok in ["m", "m s-1", "m2 s-1", "s-1", "degC", "degrees_north", "1", "kg m-3", "m/s", "days since 2000-01-01",
               "meters", "metres s-1", "degree_C", "kelvin"]:
        assert io.units_are_known(ok), ok
    for bad in ["", "wibbles", "unknown", "m wibbles"]:  # (furlongs and parsecs are UDUNITS units)
        assert not io.units_are_known(bad), bad


def test_open_states_reads_zarr(tmp_path):
    ds = make_state_dataset()
    ds.to_zarr(tmp_path / "s.zarr", consolidated=False)
    back = io.open_states(tmp_path / "s.zarr")
    np.testing.assert_allclose(back.ssh.values, ds.ssh.values)
    bad = ds.assign(ssh=ds.ssh.assign_attrs(units="wibbles"))
    bad.to_zarr(tmp_path / "bad.zarr", consolidated=False)
    with pytest.raises(DataValidationError, match="bad.zarr.*'ssh'"):
        io.open_states(tmp_path / "bad.zarr")


def test_point_observations_open_with_time_along_obs(tmp_path):
    states = make_state_dataset()
    n = 7
    pts = xr.Dataset(
        {"ssh": ("obs", np.linspace(-1, 1, n), {"units": "m"}), "ssh_error": ("obs", np.full(n, 0.02), {"units": "m"})},
        coords={"time": ("obs", states.time.values[np.arange(n) % 4]), "lat": ("obs", np.full(n, 38.0)),
                "lon": ("obs", np.full(n, -60.0)), "y_index": ("obs", np.arange(n) % 6), "x_index": ("obs", np.arange(n))},
    )
    path = _raw_write(pts, tmp_path / "points.nc")
    o = io.open_obs(path, like=states)
    assert o.sizes["obs"] == n and float(o.ssh_error.max()) == pytest.approx(0.02)
    no_time = _raw_write(pts.drop_vars("time"), tmp_path / "points_no_time.nc")
    with pytest.raises(DataValidationError, match="points_no_time.nc.*'time'"):
        io.open_obs(no_time, like=states)


def test_outputs_get_umask_permissions(tmp_path):
    import torch

    old = os.umask(0o022)
    try:
        path = io.write_netcdf(make_state_dataset(), tmp_path / "perm.nc")
        io.save_checkpoint(tmp_path / "ck", {"w": torch.zeros(3)}, {"kind": "linear"})
    finally:
        os.umask(old)
    assert (path.stat().st_mode & 0o777) == 0o644
    for f in ("model.safetensors", "config.json"):  # safetensors writes its own 0600 file: reset before the rename
        assert ((tmp_path / "ck" / f).stat().st_mode & 0o777) == 0o644, f
