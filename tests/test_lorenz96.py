import numpy as np
import pytest

from oceanda.testbeds.lorenz96 import Lorenz96


def test_fixed_point_stays_fixed():
    # x_i = F is an exact equilibrium of Lorenz-96.
    m = Lorenz96(n=40, forcing=8.0)
    x = np.full(40, 8.0)
    np.testing.assert_allclose(m.step(x), x, atol=1e-12)


def test_rk4_fourth_order_convergence():
    m = Lorenz96(n=12, forcing=8.0)
    rng = np.random.default_rng(0)
    x0 = 8 + rng.standard_normal(12)

    def integrate(h, T=0.2):
        x = x0.copy()
        for _ in range(round(T / h)):
            x = m.step(x, dt=h)
        return x

    ref = integrate(1e-4)
    e1 = np.abs(integrate(0.02) - ref).max()
    e2 = np.abs(integrate(0.01) - ref).max()
    assert 12 < e1 / e2 < 20  # ~2^4


def test_batched_equals_loop_and_energy_budget():
    m = Lorenz96()
    rng = np.random.default_rng(1)
    X = m.initial_state(rng, (3,), spinup=100)
    Y = m.step(X)
    for i in range(3):
        np.testing.assert_allclose(Y[i], m.step(X[i]), rtol=0, atol=1e-13)
    # advection conserves energy: d/dt (|x|^2/2) = -|x|^2 + F sum x
    x = X[0]
    np.testing.assert_allclose(x @ m.tendency(x), -x @ x + 8.0 * x.sum(), rtol=1e-12)


def test_run_and_dataset():
    m = Lorenz96()
    rng = np.random.default_rng(2)
    traj, times = m.run(m.initial_state(rng), 10, save_every=5)
    assert traj.shape == (3, 40)
    np.testing.assert_allclose(times, [0, 0.25, 0.5])
    ds = m.to_dataset(traj, times)
    assert ds["X"].dims == ("time", "x") and ds["X"].attrs["units"] == "1"
    np.testing.assert_array_equal(ds["X"].values, traj)
    g = m.to_dataset(traj, times, as_grid=True)
    assert g["X"].dims == ("time", "y", "x")
    from oceanda.fields import to_array
    arr, _ = to_array(g, dtype=np.float64)
    np.testing.assert_array_equal(arr[:, 0, 0, :], traj)
    # climatological mean/std on the attractor (Lorenz & Emanuel 1998: ~2.3 and ~3.6)
    long, _ = m.run(m.initial_state(rng, spinup=500), 2000, save_every=1)
    assert 2.0 < long.mean() < 2.7 and 3.3 < long.std() < 3.9
    with pytest.raises(ValueError):
        m.to_dataset(traj[:, :5], times)
