"""`oceanda sample-data` for every testbed (tiny size), reproducibility, bundled set, a map with tracks."""

import os

import numpy as np
import pytest
import xarray as xr

from oceanda import io
from oceanda.cli import main
from oceanda.errors import OceandaError
from oceanda.sampledata import bundled_sample_dir


def _load(path):
    with xr.open_dataset(path) as ds:
        return ds.load()


@pytest.fixture(scope="module")
def qg_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("qg")
    assert main(["sample-data", "--testbed", "qg", "--out", str(out), "--seed", "5", "--size", "tiny", "--quiet"]) == 0
    return out


def test_qg_sample_data_files_and_reproducible(qg_dir, tmp_path):
    names = sorted(os.listdir(qg_dir))
    for n in ("library.nc", "truth_tune.nc", "truth_eval_1.nc", "truth_eval_2.nc", "truth_eval_3.nc",
              "obs_altimetry_eval_3.nc", "obs_gappy_eval_1.nc", "obs_insitu_eval_1.nc", "obs_drifters_eval_1.nc",
              "train_obs.nc", "README.txt"):
        assert n in names
    readme = (qg_dir / "README.txt").read_text()
    assert "--seed 5" in readme and "--size tiny" in readme
    lib = io.open_states(qg_dir / "library.nc")
    assert {"psi", "ssh"} <= set(lib.data_vars) and "run" in lib.coords
    obs = io.open_obs(qg_dir / "obs_altimetry_eval_1.nc", like=lib)
    truth = _load(qg_dir / "truth_eval_1.nc")
    assert obs.sizes["time"] == truth.sizes["time"]
    # truths are independent of the library: not even correlated with a library state
    def unit(a):
        a = a.reshape(a.shape[0], -1)
        a = a - a.mean(1, keepdims=True)
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    for name in ("tune", "eval_1", "eval_2", "eval_3"):
        t = _load(qg_dir / f"truth_{name}.nc")["ssh"].values
        assert np.abs(unit(t) @ unit(lib["ssh"].values).T).max() < 0.8
    ins = io.open_obs(qg_dir / "obs_insitu_eval_1.nc", like=lib)
    assert {"lat", "lon", "time", "y_index", "x_index", "layer_index"} <= set(ins.coords)
    dr = io.open_obs(qg_dir / "obs_drifters_eval_1.nc")
    assert "x_position" in dr and "x_position_error" in dr
    # a truth file carries its model: forecasting from it continues the truth run
    from oceanda.testbeds.qg import QGModel

    model = QGModel.from_attrs(truth.attrs)
    q = model.q_from_dataset(truth)
    ahead = model.advance(q[:1], 1)
    err = np.abs(model.ssh(model.psi_from_q(ahead))[0] - truth["ssh"].values[1]).max()
    assert err < 0.05 * np.abs(truth["ssh"].values[1]).max()
    train = io.open_obs(qg_dir / "train_obs.nc", like=lib)
    np.testing.assert_array_equal(train["time"].values, lib["time"].values)
    # same seed, same data; the existing folder is refused without --overwrite
    again = tmp_path / "again"
    assert main(["sample-data", "--testbed", "qg", "--out", str(again), "--seed", "5", "--size", "tiny", "--quiet"]) == 0
    for n in ("library.nc", "obs_altimetry_tune.nc", "obs_insitu_eval_1.nc", "obs_drifters_eval_1.nc"):
        a, b = _load(qg_dir / n), _load(again / n)
        for v in a.data_vars:
            np.testing.assert_array_equal(a[v].values, b[v].values)
    assert main(["sample-data", "--testbed", "qg", "--out", str(again), "--seed", "5", "--size", "tiny", "--quiet"]) == 2


@pytest.mark.parametrize("testbed", ["torus", "lorenz96"])
def test_other_testbeds(testbed, tmp_path):
    assert main(["sample-data", "--testbed", testbed, "--out", str(tmp_path), "--seed", "1", "--size", "tiny", "--quiet"]) == 0
    lib = _load(tmp_path / "library.nc")
    for n in ("truth_tune.nc", "truth_eval_1.nc", "truth_eval_2.nc", "truth_eval_3.nc", "README.txt"):
        assert (tmp_path / n).exists()
    if testbed == "torus":
        assert lib["coefficients"].shape == (16, 98) and lib["drifter_x"].shape == (16, 100, 1)
        assert float(lib["drifter_x"].min()) >= 0 and float(lib["drifter_x"].max()) < 1
    else:
        assert lib["X"].dims == ("time", "y", "x") and lib.sizes["x"] == 40
        obs = io.open_obs(tmp_path / "obs_half_eval_1.nc", like=io.open_states(tmp_path / "library.nc"))
        assert np.isnan(obs["X"].values[:, 0, 1::2]).all() and np.isfinite(obs["X"].values[:, 0, ::2]).all()


def test_bundled_sample_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("OCEANDA_SAMPLE_DATA", str(tmp_path))
    assert bundled_sample_dir() == tmp_path
    with pytest.raises(OceandaError, match="sample-data"):
        bundled_sample_dir("qg")
    monkeypatch.delenv("OCEANDA_SAMPLE_DATA")
    root = bundled_sample_dir()
    assert root.name == "sample_data"
    qg = bundled_sample_dir("qg")
    lib = io.open_states(qg / "library.nc")
    assert lib.sizes["time"] >= 400 and lib.sizes["y"] == 64
    total = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    assert total < 30e6


def test_plot_qg_snapshot_with_tracks(qg_dir, tmp_path):
    from oceanda.plotting import plot_map

    truth = _load(qg_dir / "truth_eval_1.nc")
    obs = _load(qg_dir / "obs_altimetry_eval_1.nc")
    ssh = obs["ssh"].values[1]
    on = np.isfinite(ssh)
    assert on.any()
    ax = plot_map(truth["ssh"].values[1], truth["lat"].values, truth["lon"].values, units="m",
                  title="QG SSH and along-track altimetry",
                  points=(truth["lat"].values[on], truth["lon"].values[on]))
    out = io.save_figure(ax.figure, tmp_path / "qg_tracks.png")
    assert out.exists() and out.stat().st_size > 10_000
    with open(out, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_qg_library_extension():
    from oceanda.sampledata import qg_library
    from oceanda.testbeds.qg import QGModel

    lib = qg_library(QGModel(), n_runs=2, run_days=4, rng=np.random.default_rng(0), decorrelation_days=2)
    assert lib.sizes["time"] == 2 * 3 and list(lib["run"].values) == [0, 0, 0, 1, 1, 1]
    assert np.all(np.diff(lib["time"].values) > np.timedelta64(0))


def test_qg_64_unchanged(qg_dir):
    """The default (64 x 64) set is what it was before --nx existed: values recorded from the earlier code.

    (The bundled set, seed 2026 small, was also regenerated bit for bit with --nx; recorded here are
    tolerances loose enough for another FFT library's rounding over these few days.)
    """
    lib, truth = _load(qg_dir / "library.nc"), _load(qg_dir / "truth_eval_3.nc")
    obs = _load(qg_dir / "obs_altimetry_eval_1.nc")
    assert lib["ssh"].shape == (10, 64, 64) and lib.attrs["qg_dt_s"] == 7200.0
    assert float(np.abs(lib["ssh"].values).astype(np.float64).sum()) == pytest.approx(459.0313824610335, rel=1e-5)
    assert float(lib["psi"].values[3, 1, 10, 20]) == pytest.approx(-314.23089599609375, rel=1e-4)
    assert float(truth["ssh"].values[-1, 5, 7]) == pytest.approx(0.029794842004776, rel=1e-4)
    assert int(np.isfinite(obs["ssh"].values).sum()) == 1822
    assert float(np.nansum(obs["ssh"].values.astype(np.float64))) == pytest.approx(0.6890923185274005, rel=1e-4)
    assert "--nx" not in (qg_dir / "README.txt").read_text()


def test_qg_nx128_same_layout(qg_dir, tmp_path, monkeypatch):
    """A finer grid: the same files, variables, dims and attributes, only more cells; a short cached spin-up."""
    from oceanda.testbeds import qg

    monkeypatch.setenv("OCEANDA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setitem(qg.SPINUP_DAYS, 128, 0.5)  # tests never run the full spin-up
    out = tmp_path / "qg128"
    assert main(["sample-data", "--testbed", "qg", "--nx", "128", "--out", str(out), "--seed", "5", "--size", "tiny",
                 "--quiet"]) == 0
    assert sorted(os.listdir(out)) == sorted(os.listdir(qg_dir))
    assert len(list((tmp_path / "cache" / "qg_spinup").glob("nx128-*.nc"))) == 1
    for name in sorted(os.listdir(out)):
        if not name.endswith(".nc"):
            continue
        a, b = _load(qg_dir / name), _load(out / name)
        assert set(a.variables) == set(b.variables), name
        for v in a.variables:
            assert a[v].dims == b[v].dims, (name, v)
            assert set(a[v].attrs) == set(b[v].attrs), (name, v)
            for key in ("units", "standard_name", "axis", "long_name"):
                assert (key in a[v].attrs) == (key in b[v].attrs), (name, v, key)
        assert set(a.attrs) == set(b.attrs), name
    lib = io.open_states(out / "library.nc")
    assert lib.sizes["y"] == lib.sizes["x"] == 128 and lib.attrs["qg_nx"] == 128 and lib.attrs["qg_dt_s"] == 3600.0
    assert float(lib["x"][1] - lib["x"][0]) == pytest.approx(1000 / 128)
    assert float(lib["lat"].mean()) == pytest.approx(float(_load(qg_dir / "library.nc")["lat"].mean()), abs=0.05)
    obs = io.open_obs(out / "obs_altimetry_eval_1.nc", like=lib)
    assert obs["ssh"].shape[1:] == (128, 128) and np.isfinite(obs["ssh"].values).any()
    readme = (out / "README.txt").read_text()
    assert "--nx 128" in readme and "testbed_model(128)" in readme and "fingerprint" in readme
    truth = _load(out / "truth_eval_1.nc")  # a truth file still carries its model
    assert qg.QGModel.from_attrs(truth.attrs).config_attrs() == qg.testbed_model(128).config_attrs()


def test_nx_only_for_qg(tmp_path):
    from oceanda.errors import ConfigurationError
    from oceanda.sampledata import make_sample_data

    assert main(["sample-data", "--testbed", "torus", "--nx", "128", "--out", str(tmp_path / "t"), "--size", "tiny",
                 "--quiet"]) == 2
    assert not (tmp_path / "t").exists()
    with pytest.raises(ConfigurationError, match="--nx"):
        make_sample_data("qg", tmp_path / "q", size="tiny", nx=100)
    with pytest.raises(SystemExit):
        main(["sample-data", "--testbed", "qg", "--nx", "96", "--out", str(tmp_path / "q")])
