"""Torus flow of the paper: incompressibility, RK4 order, periodicity, layout."""

import numpy as np
import pytest

from oceanda.testbeds.torus import TorusFlow, half_plane_wavevectors, spectral_divergence


@pytest.fixture(scope="module")
def flow():
    return TorusFlow()


def test_modes_and_coefficients(flow):
    k = half_plane_wavevectors(49)
    assert k.shape == (49, 2) and len({tuple(r) for r in k}) == 49
    # no mode is the negative of another (Re of a sum would double count)
    assert not any(tuple(-r) in {tuple(s) for s in k} for r in k)
    c = flow.sample_coefficients(5, np.random.default_rng(0))
    assert c.shape == (5, 98)
    assert np.array_equal(c, flow.sample_coefficients(5, np.random.default_rng(0)))


def test_gridded_velocity_divergence_free(flow):
    c = flow.sample_coefficients(8, np.random.default_rng(1))
    g = flow.gridded(c, [0.0, 0.037, 0.1], n=32)
    assert g["u"].shape == (8, 3, 32, 32)
    div = spectral_divergence(g["u"], g["v"])
    assert np.abs(div).max() < 1e-10 * max(1.0, np.abs(g["u"]).max())
    # and the velocity really is the skew gradient of psi: v = -dpsi/dx checked by FFT
    kx = 2j * np.pi * np.fft.fftfreq(32, d=1 / 32)
    dpdx = np.fft.ifft(np.fft.fft(g["psi"], axis=-1) * kx, axis=-1).real
    assert np.allclose(g["v"], -dpdx, atol=1e-9)


def test_single_mode_closed_form():
    f = TorusFlow()
    c = np.zeros((1, 98))
    c[0, 0] = 0.5  # Re psi for k = (1, 0): psi = 0.5 cos(2 pi x + omega t)
    x = np.array([[0.1, 0.3]])
    u, v = f.velocity_at(c, x, np.array([[0.2, 0.9]]), t=0.01)
    assert np.allclose(u, 0.0, atol=1e-14)
    assert np.allclose(v, 0.5 * 2 * np.pi * np.sin(2 * np.pi * x + f.omega[0] * 0.01), atol=1e-12)


def test_rk4_fourth_order(flow):
    c = flow.sample_coefficients(2, np.random.default_rng(2))
    T = 0.02

    def end(dt):
        n = int(round(T / dt))
        pos, _ = flow.drifters(c, dt=dt, T=T, keep_every=n, wrap=False)
        return pos[:, -1]

    ref = end(T / 1600)
    errs = [np.abs(end(T / n) - ref).max() for n in (50, 100, 200)]
    rates = np.log2(np.array(errs[:-1]) / np.array(errs[1:]))
    assert np.all(rates > 3.6) and np.all(rates < 4.5), (errs, rates)


def test_torus_wrapping_consistent(flow):
    c = flow.sample_coefficients(3, np.random.default_rng(3))
    a, t = flow.drifters(c, x0=[0.75], y0=[0.75], dt=1e-4, T=0.02, keep_every=2)
    b, _ = flow.drifters(c, x0=[1.75], y0=[-0.25], dt=1e-4, T=0.02, keep_every=2)
    assert a.shape == (3, 100, 1, 2) and np.allclose(t[-1], 0.02)
    assert np.all((a >= 0) & (a < 1))
    d = np.abs(a - b)
    assert np.allclose(np.minimum(d, 1 - d), 0, atol=1e-10)
    un, _ = flow.drifters(c, dt=1e-4, T=0.02, keep_every=2, wrap=False)
    assert np.allclose(np.mod(un, 1.0), a, atol=1e-12) or np.allclose(np.minimum(np.abs(np.mod(un, 1) - a), 1 - np.abs(np.mod(un, 1) - a)), 0, atol=1e-12)
    step = np.abs(np.diff(un, axis=1)).max()
    assert step < 0.1  # unwrapped paths are continuous


def test_paper_default_shape_and_dataset(flow):
    c = flow.sample_coefficients(2, np.random.default_rng(4))
    pos, t = flow.drifters(c, dt=1e-4, T=0.1, keep_every=1)
    assert pos.shape == (2, 1000, 1, 2)
    ds = flow.to_dataset(c, pos, t)
    assert ds["coefficients"].shape == (2, 98) and ds["psi"].dims == ("sample", "time", "y", "x")
    assert ds["drifter_x"].shape == (2, 1000, 1) and ds.sizes["x"] == 32
