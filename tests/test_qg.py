"""Two-layer QG testbed: steady state, spectrum, CFL, batching, inversion, Dataset layout."""

import numpy as np
import pytest
import torch

from oceanda.testbeds.qg import QGModel, perturbed_ensemble, spectral_regrid, spun_up_state


@pytest.fixture(scope="module")
def model():
    return QGModel()


@pytest.fixture(scope="module")
def steady_run(model):
    """16 shipped members, 60 days, saved every 2 days."""
    torch.set_num_threads(2)
    q0 = spun_up_state(member=list(range(16)))
    traj, days = model.run(q0, 60, save_every_days=2)
    return traj, days


def test_shipped_state_is_statistically_steady(model, steady_run):
    traj, days = steady_run
    ke = np.array([model.kinetic_energy(q).mean() for q in traj])
    second = ke[len(ke) // 2 :]
    assert (second.max() - second.min()) / second.mean() < 0.10
    # ... at the saturation level of the pyqg "eddy" configuration (about 4.9e-4 m2 s-2).
    assert 3.0e-4 < second.mean() < 7.0e-4


def test_spectrum_peaks_near_deformation_wavenumber(model, steady_run):
    traj, _ = steady_run
    k, E = model.energy_spectrum(traj[::5].reshape(-1, 2, model.ny, model.nx))
    kpeak = k[np.argmax(E)]
    assert 0.4 * model.kd < kpeak < 2.0 * model.kd
    # energy falls off at small scales (filter + cascade)
    assert E[-1] < 1e-3 * E.max()


def test_cfl_respected(model, steady_run):
    traj, _ = steady_run
    c = model.cfl(traj[-1])
    assert 0.01 < c < 0.5


def test_batched_equals_single_member(model):
    q0 = spun_up_state()[:3]
    batched = model.advance(q0, 2)
    single = np.concatenate([model.advance(q0[i : i + 1], 2) for i in range(3)])
    assert np.allclose(batched, single, rtol=0, atol=1e-6 * np.abs(batched).max())
    m64 = QGModel(dtype=torch.float64)
    b64 = m64.advance(q0, 2)
    s64 = np.concatenate([m64.advance(q0[i : i + 1], 2) for i in range(3)])
    assert np.allclose(b64, s64, rtol=0, atol=1e-12 * np.abs(b64).max())
    # float32 and float64 agree over a short forecast
    assert np.abs(batched - b64).max() < 1e-3 * np.abs(b64).max()


def test_inversion_closed_form(model):
    """A single Fourier mode: psi from q by the 2x2 spectral inversion, checked by hand."""
    m = QGModel(dtype=torch.float64)
    x = (np.arange(m.nx) + 0.5) * m.dx
    y = (np.arange(m.ny) + 0.5) * m.dy
    X, Y = np.meshgrid(x, y)
    k, l = 2 * np.pi * 3 / m.L, 2 * np.pi * 2 / m.W
    e = np.cos(k * X + l * Y)
    a1, a2 = 1.0, -0.3  # psi amplitudes
    k2 = k**2 + l**2
    q1 = (-k2 * a1 + m.F1 * (a2 - a1)) * e
    q2 = (-k2 * a2 + m.F2 * (a1 - a2)) * e
    psi = m.psi_from_q(np.stack([q1, q2])[None])
    assert np.allclose(psi[0, 0], a1 * e, atol=1e-10)
    assert np.allclose(psi[0, 1], a2 * e, atol=1e-10)
    u, v = m.velocity(psi, include_mean=False)
    assert np.allclose(v[0, 0], -a1 * k * np.sin(k * X + l * Y), atol=1e-12)
    assert np.allclose(u[0, 0], a1 * l * np.sin(k * X + l * Y), atol=1e-12)
    assert np.allclose(m.ssh(psi)[0], m.f0 * a1 * e / m.g)


def test_linear_phase_speed_of_a_barotropic_rossby_wave():
    """Small-amplitude barotropic mode without shear or drag travels at the Rossby phase speed -beta/k^2."""
    m = QGModel(dtype=torch.float64, U1=0.0, rek=0.0, nx=32, dt=3600.0)
    x = (np.arange(m.nx) + 0.5) * m.dx
    X, Y = np.meshgrid(x, (np.arange(m.ny) + 0.5) * m.dy)
    k = 2 * np.pi / m.L
    amp = 1e-3
    psi = np.stack([amp * np.cos(k * X), amp * np.cos(k * X)])[None]
    q0 = m.q_from_psi(psi)
    days = 10
    q1 = m.advance(q0, days)
    c = -m.beta / k**2
    expected = amp * np.cos(k * (X - c * days * 86400))
    assert np.allclose(m.psi_from_q(q1)[0, 0], expected, atol=1e-4 * amp)


def test_to_dataset_layout(model):
    q = spun_up_state(member=[0, 1])
    traj, days = model.run(q, 2, save_every_days=1)
    ds = model.to_dataset(traj, days)
    assert ds["psi"].dims == ("time", "member", "layer", "y", "x")
    assert ds["ssh"].dims == ("time", "member", "y", "x")
    assert list(ds["layer"].values) == [1, 2]
    assert ds["psi"].attrs["units"] == "m2 s-1" and ds["ssh"].attrs["units"] == "m" and ds["q"].attrs["units"] == "s-1"
    assert abs(float(ds.lat.mean()) - 38) < 0.5 and abs(float(ds.lon.mean()) + 60) < 0.5
    assert ds["x"].attrs["units"] == "km" and ds.x.values[1] - ds.x.values[0] == pytest.approx(1000 / 64)
    one = model.to_dataset(traj[:, 0], days)
    assert one["psi"].dims == ("time", "layer", "y", "x")
    assert np.allclose(model.q_from_dataset(one.drop_vars("q")), one["q"].values, atol=1e-4 * float(abs(one.q).max()))


def test_spectral_regrid_and_ensemble(model):
    q = spun_up_state(member=0)
    up = spectral_regrid(q, 128)
    assert up.shape == (1, 2, 128, 128)
    assert np.allclose(up[..., ::2, ::2].mean(), q.mean(), atol=1e-12)
    back = spectral_regrid(up, 64)
    assert np.allclose(back, q, atol=1e-6 * np.abs(q).max())
    ens = perturbed_ensemble(3, np.random.default_rng(0), model=model, decorrelation_days=4)
    assert ens.shape == (3, 2, 64, 64)
    assert not np.allclose(ens[0], spun_up_state(member=0)[0])
    again = perturbed_ensemble(3, np.random.default_rng(0), model=model, decorrelation_days=4)
    assert np.array_equal(ens, again)


# ---------------------------------------------------------------------- finer grids and the spin-up cache


def test_testbed_model_keeps_box_and_courant_number():
    from oceanda.errors import ConfigurationError
    from oceanda.testbeds.qg import testbed_model

    assert testbed_model(64).config_attrs() == QGModel().config_attrs()
    m = testbed_model(256)
    assert (m.nx, m.dt, m.L) == (256, 1800.0, 1.0e6) and m.dx == pytest.approx(1e6 / 256)
    assert m.steps_per_day() == 48 and m.rd == QGModel().rd and m.filterfac == QGModel().filterfac
    with pytest.raises(ConfigurationError, match="nx"):
        testbed_model(100)


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OCEANDA_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_spinup_made_once_then_read_from_cache(cache, monkeypatch):
    from oceanda.testbeds import qg

    q = qg.spun_up_state_nx(128, members=2, days=0.5)
    assert q.shape == (2, 2, 128, 128) and q.dtype == np.float64 and np.isfinite(q).all()
    path = qg.spinup_path(128, members=2, days=0.5)
    assert path.parent == cache / "qg_spinup" and path.name.startswith("nx128-") and path.exists()
    # the spun-up state differs from the plain regridded shipped state (it was run), yet keeps its energy level
    m = qg.testbed_model(128)
    regrid = spectral_regrid(spun_up_state(member=[0, 1]), 128)
    assert not np.allclose(q, regrid)
    assert abs(m.kinetic_energy(q).mean() / m.kinetic_energy(regrid).mean() - 1) < 0.1

    def no_run(*a, **k):
        raise AssertionError("spun up again instead of reading the cache")

    monkeypatch.setattr(qg, "_spin_up_nx", no_run)
    again = qg.spun_up_state_nx(128, members=2, days=0.5)
    np.testing.assert_array_equal(again, q)  # what is read back equals what was made
    # other settings, other file (never a stale entry)
    assert qg.spinup_path(128, members=2, days=1.0) != path
    assert qg.spinup_path(128, members=3, days=0.5) != path


def test_corrupt_spinup_cache_is_regenerated(cache):
    from oceanda.testbeds import qg

    q = qg.spun_up_state_nx(128, members=1, days=0.25)
    path = qg.spinup_path(128, members=1, days=0.25)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])  # truncated by a crash or a full disk
    with pytest.warns(UserWarning, match="regenerating"):
        again = qg.spun_up_state_nx(128, members=1, days=0.25)
    np.testing.assert_array_equal(again, q)
    assert path.stat().st_size == len(data)
    path.write_bytes(b"not a netcdf file")
    with pytest.warns(UserWarning, match=str(path.name)):
        np.testing.assert_array_equal(qg.spun_up_state_nx(128, members=1, days=0.25), q)


def test_spinup_settings_checked_and_64_is_the_shipped_state(cache):
    from oceanda.errors import ConfigurationError
    from oceanda.testbeds import qg

    np.testing.assert_array_equal(qg.spun_up_state_nx(64, members=3), spun_up_state(member=[0, 1, 2]))
    with pytest.raises(ConfigurationError, match="members"):
        qg.spinup_settings(128, members=0)
    with pytest.raises(ConfigurationError, match="nx"):
        qg.spinup_settings(96)
    # 256 is spun up from 128: its key names the 128 state it starts from
    assert qg.spinup_settings(256)["source"] == qg.spinup_key(qg.spinup_settings(128))
    assert not (cache / "qg_spinup").exists()  # settings and keys alone run nothing


def test_perturbed_ensemble_from_given_states(model):
    from oceanda.errors import DataValidationError

    base = spun_up_state(member=[0, 1])
    ens = perturbed_ensemble(2, np.random.default_rng(0), model=model, decorrelation_days=0, base=base)
    assert ens.shape == (2, 2, 64, 64) and np.abs(ens - base).max() < 0.5 * np.abs(base).max()
    with pytest.raises(DataValidationError, match="grid"):
        perturbed_ensemble(2, np.random.default_rng(0), model=model, base=spectral_regrid(base, 128))
