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
