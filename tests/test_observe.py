"""Observation generators: geometry, noise level, the operator H they imply, reproducibility, drifters.

H is built by the one builder, ``oceanda.kalman.observations_from_dataset`` (and ``selection_operator``).
"""

import numpy as np
import pytest

from oceanda.observe import (
    AlongTrackAltimetry,
    GappyField,
    InSituPoints,
    QGDrifters,
    advect_gridded,
)
from oceanda.fields import layout_of, to_array
from oceanda.kalman import observations_from_dataset, selection_operator
from oceanda.testbeds.qg import QGModel, spun_up_state


def _state_and_observations(ds, obs, t, variables):
    """The flat state at time index ``t`` and the Observations of that time (H from the one builder)."""
    state = ds.isel(time=[t])
    layout = layout_of(state, variables)
    if "obs" in obs.dims:
        sub = obs.isel(obs=np.flatnonzero(obs["time"].values == ds["time"].values[t]))
    else:
        sub = obs.isel(time=[t])
    (o,) = observations_from_dataset(sub, layout, state)
    X, _ = to_array(state, layout, dtype=np.float64)
    return X.reshape(1, -1), o, sub


@pytest.fixture(scope="module")
def qg():
    m = QGModel()
    traj, days = m.run(spun_up_state(member=0), 12, save_every_days=1)
    return m, traj[:, 0], days, m.to_dataset(traj, days)


def test_track_geometry_closed_form():
    alt = AlongTrackAltimetry(n_satellites=1, passes_per_day=1, angle_deg=60.0)
    mask = alt.mask(64, 64, 0, dy=15.625, dx=15.625)[0]
    # the day-0 track starts at x = 0, y = 0 and climbs at 60 degrees: at y = 500 km, x = 500 / tan 60 km
    assert mask[0, 0]
    assert mask[int(500 / 15.625), int(500 / np.tan(np.radians(60)) / 15.625)]
    # one track crosses every row in one or two cells
    per_row = mask.sum(axis=1)
    assert per_row.min() >= 1 and per_row.max() <= 2


def test_tracks_shift_daily_and_repeat():
    alt = AlongTrackAltimetry()
    m = alt.mask(64, 64, np.arange(21))
    assert not np.array_equal(m[0], m[1])
    assert np.array_equal(m[0], m[10]) and np.array_equal(m[3], m[13])
    # 4 tracks a day cover a few percent of the box; a repeat cycle covers much more
    assert 0.04 < m[0].mean() < 0.15
    assert m[:10].any(axis=0).mean() > 3 * m[0].mean()


def test_fresh_masks_reproducible_and_varied():
    alt = AlongTrackAltimetry()
    a = alt.sample_mask(50, np.random.default_rng(3))
    b = alt.sample_mask(50, np.random.default_rng(3))
    c = alt.sample_mask(50, np.random.default_rng(4))
    assert a.shape == (50, 64, 64) and np.array_equal(a, b) and not np.array_equal(a, c)
    assert len({m.tobytes() for m in a}) > 35  # continuous orbit phase, discretised to cells


def test_altimetry_noise_and_operator(qg):
    m, traj, days, ds = qg
    alt = AlongTrackAltimetry()
    obs = alt.observe(ds, np.random.default_rng(0))
    assert obs["ssh"].dims == ("time", "y", "x") and obs.attrs["operator"] == "along_track_altimetry"
    sigma = float(obs["ssh_error"])
    assert sigma == pytest.approx(0.1 * float(ds["ssh"].std()), rel=1e-4)
    resid = (obs["ssh"] - ds["ssh"]).values
    resid = resid[np.isfinite(resid)]
    assert resid.std() == pytest.approx(sigma, rel=0.1)
    # H samples the state's ssh channel on the tracks; as a scaled operator on psi it is ssh = f0 psi1 / g
    x, o, _ = _state_and_observations(ds, obs, 3, ["psi", "ssh"])
    assert o.size == int(np.isfinite(obs["ssh"].values[3]).sum())
    clean = o.apply(x)[0]
    np.testing.assert_array_equal(clean, ds["ssh"].values[3].ravel()[o.H - 2 * 64 * 64])
    H = selection_operator(o.H - 2 * 64 * 64, 2 * 64 * 64, m.f0 / m.g)
    assert H.shape == (o.size, 2 * 64 * 64)
    assert np.allclose(H @ ds["psi"].values[3].astype(np.float64).ravel(), clean, rtol=1e-5, atol=1e-9)


def test_gappy_masks_are_cloud_like(qg):
    _, _, _, ds = qg
    g = GappyField(cloud_fraction=(0.4, 0.6), length_km=100.0)
    masks = g.sample_mask(20, np.random.default_rng(1))
    frac = 1 - masks.mean(axis=(1, 2))
    assert np.all((frac > 0.38) & (frac < 0.62))
    agree = (masks[:, :, 1:] == masks[:, :, :-1]).mean()
    assert agree > 0.85  # spatially correlated, unlike independent pixels (0.5)
    obs = GappyField(var="psi", layer=1).observe(ds, np.random.default_rng(0))
    assert obs["psi"].dims == ("time", "layer", "y", "x")
    assert np.isnan(obs["psi"].values[:, 0]).all() and np.isfinite(obs["psi"].values[:, 1]).any()


def test_in_situ_points_and_operator(qg):
    _, _, _, ds = qg
    ins = InSituPoints(n_profiles=15, sigma=1e-3)
    obs = ins.observe(ds, np.random.default_rng(0))
    assert obs.sizes["obs"] == 15 * 2 * ds.sizes["time"]
    for c in ("lat", "lon", "time", "y_index", "x_index", "layer_index"):
        assert c in obs.coords
    x, o, sub = _state_and_observations(ds, obs, 2, ["psi"])
    assert o.size == 15 * 2
    assert np.allclose(o.apply(x)[0], sub["psi"].values, atol=0.01)
    assert abs(float(sub["lat"][0]) - float(ds["lat"][int(sub.y_index[0]), int(sub.x_index[0])])) < 1e-9


def test_rk4_drifters_exact_in_time_linear_uniform_flow():
    ny, nx, L, W = 8, 8, 1e5, 1e5
    t = np.array([0.0, 1000.0, 2000.0])
    u = np.stack([np.full((ny, nx), a) for a in (1.0, 2.0, 4.0)])
    v = -0.5 * u
    x, y = advect_gridded(u, v, t, np.array([10.0, 5e4]), np.array([0.0, 9.9e4]), L, W, substeps=3)
    assert np.allclose(x[1] - x[0], 1500.0) and np.allclose(x[2] - x[1], 3000.0)
    assert np.allclose(y[2] - y[0], -0.5 * 4500.0)


def test_qg_drifters_follow_the_flow(qg):
    m, traj, days, ds = qg
    d = QGDrifters(n_drifters=6)
    x, y = d.simulate(m, traj, days, np.full(6, 500.0), np.linspace(100, 900, 6))
    disp = np.hypot(x[-1] - x[0], y[-1] - y[0])
    assert np.all(disp > 1.0) and np.all(disp < 0.5 * 86.4 * days[-1])  # moves, slower than 50 cm/s
    obs = d.observe(m, traj, days, np.random.default_rng(0), ds.time.values)
    assert obs.sizes["obs"] == 6 * len(days) and {"lat", "lon", "time", "drifter"} <= set(obs.coords)


def test_fresh_draws_for_training(qg):
    _, _, _, ds = qg
    ssh = ds["ssh"].values
    alt = AlongTrackAltimetry(sigma=1e-3)
    a = alt.draw(ssh, np.random.default_rng(0))
    b = alt.draw(ssh, np.random.default_rng(1))
    assert a.shape == ssh.shape and not np.array_equal(np.isfinite(a), np.isfinite(b))
    on = np.isfinite(a)
    assert np.std((a - ssh)[on]) == pytest.approx(1e-3, rel=0.15)
    g = GappyField(sigma=1e-3).draw(ssh, np.random.default_rng(0))
    assert 0.2 < np.isfinite(g).mean() < 0.8


def test_torus_drifter_operator():
    from oceanda.observe import TorusDrifters
    from oceanda.testbeds.torus import TorusFlow

    flow = TorusFlow()
    c = flow.sample_coefficients(3, np.random.default_rng(0))
    op = TorusDrifters(dt=1e-3, T=0.01, keep_every=1)
    obs = op.observe(flow, c)
    assert obs.sizes["obs"] == 3 * 10
    pos, _ = flow.drifters(c, dt=1e-3, T=0.01, keep_every=1)
    assert np.allclose(obs["x_position"].values, pos[..., 0].ravel())
