"""Schur-localised EnOI (oceanda.kalman.schur) against closed forms and the ETKF-transform EnOI."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from oceanda.kalman import Localizer, enoi, schur_enoi, schur_enoi_ensemble
from oceanda.kalman import schur as schur_module
from oceanda.kalman.dataset import analyse_dataset, localizer_for_dataset
from oceanda.kalman.localization import gaspari_cohn, pairwise_distances
from oceanda.kalman.obsspace import Observations

NY, NX, C = 6, 5, 2
G = NY * NX


def _problem(seed=0, M=40, p=9):
    rng = np.random.default_rng(seed)
    n = C * G
    lib = rng.standard_normal((M, n)) @ (np.eye(n) + 0.3 * rng.standard_normal((n, n)))
    xb = rng.standard_normal(n)
    idx = np.sort(rng.choice(n, size=p, replace=False))
    err = rng.uniform(0.3, 0.8, size=p)
    y = rng.standard_normal(p)
    yy, xx = np.meshgrid(np.arange(NY) * 10.0, np.arange(NX) * 10.0, indexing="ij")
    points = np.c_[yy.ravel(), xx.ravel()]
    return lib, xb, Observations(y, err, idx), points


def _dense(lib, xb, obs, alpha, rho):
    """x + (B o rho) H^T (H (B o rho) H^T + R)^-1 (y - H x) and diag((I - K H)(B o rho)), explicitly."""
    A = lib - lib.mean(0)
    B = alpha * A.T @ A / (len(lib) - 1) * rho
    Hm = np.eye(xb.size)[obs.H]
    K = B @ Hm.T @ np.linalg.inv(Hm @ B @ Hm.T + np.diag(obs.error ** 2))
    return xb + K @ (obs.y - Hm @ xb), np.diag((np.eye(xb.size) - K @ Hm) @ B)


def _rho(points, radius, metric="euclidean", period=None):
    r = gaspari_cohn(pairwise_distances(points, points, metric, period), radius)
    return np.tile(r, (C, C))  # flat index c*G + g sits at point g


def test_schur_enoi_without_localisation_is_the_kalman_update_and_the_etkf_enoi():
    lib, xb, obs, points = _problem()
    alpha = 0.7
    xa, var = schur_enoi(xb, lib, obs, alpha=alpha, radius=1e9, points=points)
    xk, vk = _dense(lib, xb, obs, alpha, np.ones((xb.size, xb.size)))
    np.testing.assert_allclose(xa, xk, atol=1e-8)
    np.testing.assert_allclose(var, vk, atol=1e-8)
    np.testing.assert_allclose(xa, enoi(xb, lib, obs, alpha=alpha, return_ensemble=False), atol=1e-8)
    # the ensemble form: mean and variance exact, one member per static state
    loc = Localizer(points, 1e9)
    Ea = schur_enoi_ensemble(xb, lib, obs, alpha=alpha, localizer=loc, rng=1)
    assert Ea.shape == lib.shape
    np.testing.assert_allclose(Ea.mean(0), xk, atol=1e-8)
    np.testing.assert_allclose(Ea.var(0, ddof=1), vk, atol=1e-8)
    np.testing.assert_allclose(schur_enoi_ensemble(xb, lib, obs, alpha=alpha, localizer=loc, return_ensemble=False), xk,
                               atol=1e-8)
    # and the ETKF-transform EnOI has the same analysis covariance diagonal
    np.testing.assert_allclose(enoi(xb, lib, obs, alpha=alpha).var(0, ddof=1), vk, atol=1e-8)


@pytest.mark.parametrize("dense_fraction", [0.0, 1.1])  # force the dense and the sparse blocks
@pytest.mark.parametrize("metric", ["euclidean", "periodic"])
def test_schur_enoi_with_a_finite_radius_is_the_schur_product_covariance(monkeypatch, dense_fraction, metric):
    monkeypatch.setattr(schur_module, "DENSE_FRACTION", dense_fraction)
    lib, xb, obs, points = _problem(seed=3)
    period = (NY * 10.0, NX * 10.0) if metric == "periodic" else None
    alpha, radius = 0.5, 12.0
    rho = _rho(points, radius, metric, period)
    assert (rho == 0).mean() > 0.2  # the taper really cuts
    xk, vk = _dense(lib, xb, obs, alpha, rho)
    xa, var = schur_enoi(xb, lib, obs, alpha=alpha, radius=radius, points=points, period=period, chunk=7)
    np.testing.assert_allclose(xa, xk, atol=1e-8)
    np.testing.assert_allclose(var, vk, atol=1e-8)
    xa1, var1 = schur_enoi(xb, lib, obs, alpha=alpha, radius=radius, points=points, period=period, var_channels=[1])
    np.testing.assert_allclose(xa1, xk, atol=1e-8)
    assert np.isnan(var1[:G]).all()
    np.testing.assert_allclose(var1[G:], vk[G:], atol=1e-8)
    loc = Localizer(points, radius, metric=metric, period=period)
    Ea = schur_enoi_ensemble(xb, lib, obs, alpha=alpha, localizer=loc, rng=np.random.default_rng(2))
    np.testing.assert_allclose(Ea.mean(0), xk, atol=1e-8)
    np.testing.assert_allclose(Ea.var(0, ddof=1), vk, atol=1e-8)


def test_schur_enoi_members_are_the_static_members_out_of_reach_of_the_observations():
    lib, xb, obs, points = _problem(seed=5, M=50, p=3)
    radius = 6.0
    Ea = schur_enoi_ensemble(xb, lib, obs, alpha=0.5, localizer=Localizer(points, radius), rng=0)
    untouched = np.tile((pairwise_distances(points, points[obs.H % G]) >= 2 * radius).all(axis=1), C)
    assert 0 < untouched.sum() < untouched.size
    A = lib - lib.mean(0)
    np.testing.assert_allclose(Ea[:, untouched], xb[untouched] + np.sqrt(0.5) * A[:, untouched], atol=1e-10)
    assert not np.allclose(Ea[:, ~untouched], xb[~untouched] + np.sqrt(0.5) * A[:, ~untouched])


def _previous_dense_ensemble(xb, lib, obs, loc, alpha, rng):
    """The dense ``p x p`` implementation this module had before the tiles (issue 16), as a reference."""
    g = np.random.default_rng(rng)
    N = lib.shape[0]
    X = np.sqrt(alpha) * (lib - lib.mean(0)) / np.sqrt(N - 1)
    eps = g.standard_normal((N, obs.size))
    eps = (eps - eps.mean(axis=0)) * np.sqrt(N / (N - 1)) * obs.error / np.sqrt(N - 1)
    pts, opts = loc.coords, loc.coords[obs.H % len(loc.coords)]
    HX = X[:, obs.H]
    rho_oo = gaspari_cohn(pairwise_distances(opts, opts, loc.metric, loc.period), loc.radius)
    Sinv = np.linalg.inv(rho_oo * (HX.T @ HX) + np.diag(obs.error ** 2))
    rho = np.tile(gaspari_cohn(pairwise_distances(pts, opts, loc.metric, loc.period), loc.radius), (lib.shape[1] // len(pts), 1))
    P = rho * (X.T @ HX)  # [n, p]
    xa = xb + P @ (Sinv @ (obs.y - xb[obs.H]))
    K = P @ Sinv
    var = np.maximum(np.sum(X * X, axis=0) - np.sum(K * P, axis=1), 0.0)
    Xa = X - (P @ Sinv @ (HX - eps).T).T
    sd = np.sqrt(np.sum(Xa * Xa, axis=0))
    return xa[None] + Xa * (np.sqrt(var) / sd * np.sqrt(N - 1))[None]


@pytest.mark.parametrize("metric", ["periodic", "great_circle"])
def test_schur_enoi_in_tiles_equals_the_previous_dense_solution_on_a_fully_observed_grid(monkeypatch, metric):
    monkeypatch.setattr(schur_module, "TILE_POINTS", 4)  # many tiles, each with its own observations
    rng = np.random.default_rng(11)
    ny, nx = 9, 8
    g = ny * nx
    lib = rng.standard_normal((30, 2 * g)).cumsum(axis=1)
    xb = lib.mean(0) + 0.1 * rng.standard_normal(2 * g)
    H = np.arange(g)  # every point of channel 0
    obs = Observations(xb[H] + rng.standard_normal(g), rng.uniform(0.3, 0.6, g), H)
    if metric == "periodic":
        yy, xx = np.meshgrid(np.arange(ny) * 10.0, np.arange(nx) * 10.0, indexing="ij")
        loc = Localizer(np.c_[yy.ravel(), xx.ravel()], 12.0, metric="periodic", period=[ny * 10.0, nx * 10.0])
    else:
        lat, lon = np.meshgrid(np.linspace(40.0, 48.0, ny), np.linspace(350.0, 364.0, nx) % 360, indexing="ij")
        loc = Localizer(np.c_[lat.ravel(), lon.ravel()], 150.0, metric="great_circle")
    assert 0.05 < (gaspari_cohn(pairwise_distances(loc.coords, loc.coords, loc.metric, loc.period), 12.0 if
                                metric == "periodic" else 150.0) > 0).mean() < 0.7  # the taper cuts
    Ea = schur_enoi_ensemble(xb, lib, obs, alpha=0.6, localizer=loc, rng=4)
    np.testing.assert_allclose(Ea, _previous_dense_ensemble(xb, lib, obs, loc, 0.6, 4), rtol=1e-9, atol=1e-9)


def test_schur_enoi_accepts_no_callable_operator():
    lib, xb, obs, points = _problem()
    bad = Observations(obs.y, obs.error, lambda E: E[:, obs.H])
    with pytest.raises(Exception, match="direct"):
        schur_enoi(xb, lib, bad, alpha=1.0, radius=10.0, points=points)


def _library_dataset(seed=0, T=30):
    rng = np.random.default_rng(seed)
    y = np.arange(NY) * 10.0 + 5.0
    x = np.arange(NX) * 10.0 + 5.0
    base = rng.standard_normal((T, NY, NX)).cumsum(axis=2)
    ssh = base * 0.1
    temp = np.stack([base + rng.standard_normal(base.shape) * 0.3, base[:, ::-1]], axis=1)
    ssh[:, 0, 0] = np.nan  # land
    temp[:, :, 0, 0] = np.nan
    lat, lon = np.meshgrid(30.0 + y / 111.0, -40.0 + x / 90.0, indexing="ij")
    ds = xr.Dataset({"ssh": (("time", "y", "x"), ssh, {"units": "m"}),
                     "temp": (("time", "layer", "y", "x"), temp, {"units": "K"})},
                    coords={"time": np.arange(T, dtype=float), "layer": [1, 2], "y": ("y", y, {"units": "km"}),
                            "x": ("x", x, {"units": "km"}), "lat": (("y", "x"), lat), "lon": (("y", "x"), lon)})
    o = np.full((2, NY, NX), np.nan)
    o[0, 2, 1:4] = [0.3, -0.2, 0.5]
    o[0, 4, 3] = 0.1
    o[1, 1, 2] = -0.4
    obs = xr.Dataset({"ssh": (("time", "y", "x"), o, {"units": "m"}), "ssh_error": ((), 0.05, {"units": "m"})},
                     coords={"time": [0.0, 1.0], "y": ds.y, "x": ds.x})
    return ds, obs


@pytest.mark.parametrize("periodic", [False, True])
def test_analyse_dataset_enoi_with_a_radius_uses_the_schur_form(periodic):
    lib, obs = _library_dataset()
    a = analyse_dataset(lib, obs, "enoi", loc_radius_km=15.0, alpha=0.8, periodic=periodic, rng=0)
    assert a.sizes["member"] == 30 and a.attrs["method"] == "enoi" and a.attrs["loc_radius_km"] == 15.0
    assert {"ssh_mean", "ssh_spread", "ssh", "temp_mean", "temp_spread", "temp"} <= set(a.data_vars)
    assert np.isnan(a["ssh_mean"].values[:, 0, 0]).all() and np.isnan(a["temp"].values[:, :, :, 0, 0]).all()
    # the same as the array-level Schur EnOI with the dataset's localizer (great-circle km, or periodic y/x)
    from oceanda.fields import layout_of, to_array
    from oceanda.kalman.obsspace import observations_from_dataset

    layout = layout_of(lib, ["ssh", "temp"], sample_dim="time")
    E = to_array(lib, layout, dtype=np.float64)[0].reshape(30, -1)
    land = ~np.isfinite(E).any(axis=0)
    E = np.where(land, 0.0, E)
    loc = localizer_for_dataset(lib, 15.0, periodic=periodic)
    assert loc.metric == ("periodic" if periodic else "great_circle")
    ol = observations_from_dataset(obs, layout, lib, variables=["ssh"])
    for t, o in enumerate(ol):
        xa, var = schur_enoi(E.mean(0), E, o, alpha=0.8, radius=15.0, points=loc.coords, period=loc.period,
                             metric=loc.metric)
        xa[land], var[land] = np.nan, np.nan
        mean = np.concatenate([a["ssh_mean"].values[t].ravel(), a["temp_mean"].values[t].ravel()])
        spread = np.concatenate([a["ssh_spread"].values[t].ravel(), a["temp_spread"].values[t].ravel()])
        order = [layout.channels.index(c) for c in (("ssh", None), ("temp", 0), ("temp", 1))]
        xa3, sd3 = xa.reshape(3, -1)[order].ravel(), np.sqrt(var).reshape(3, -1)[order].ravel()
        np.testing.assert_allclose(mean, xa3, atol=1e-10, equal_nan=True)
        np.testing.assert_allclose(spread, sd3, atol=1e-10, equal_nan=True)
    # observed points move towards the observations; with an infinite radius EnOI is the ETKF transform
    m = np.isfinite(obs["ssh"].values[0])
    before = np.abs(lib["ssh"].values.mean(0)[m] - obs["ssh"].values[0][m]).mean()
    assert np.abs(a["ssh_mean"].values[0][m] - obs["ssh"].values[0][m]).mean() < 0.5 * before
    g = analyse_dataset(lib, obs, "enoi", alpha=0.8, loc_radius_km=np.inf)
    assert g.attrs["localization_radius_km"] == 0.0 and "unlocalised" in g.attrs["localization_radius_source"]
    big = analyse_dataset(lib, obs, "enoi", alpha=0.8, loc_radius_km=1e7, periodic=periodic)
    np.testing.assert_allclose(big["ssh_mean"].values, g["ssh_mean"].values, atol=1e-8, equal_nan=True)
    np.testing.assert_allclose(big["temp_spread"].values, g["temp_spread"].values, atol=1e-8, equal_nan=True)


def test_write_members_keeps_those_members_and_the_whole_ensembles_moments(tmp_path):
    from oceanda.errors import ConfigurationError

    lib, obs = _library_dataset()
    full = analyse_dataset(lib, obs, "enoi", loc_radius_km=15.0, alpha=0.8, rng=0)
    keep = [3, 7, 11, 29]
    part = analyse_dataset(lib, obs, "enoi", loc_radius_km=15.0, alpha=0.8, rng=0, write_members=keep)
    assert part.sizes["member"] == 4 and part.attrs["n_members"] == 30 and part["member"].values.tolist() == [0, 1, 2, 3]
    for v in ("ssh", "temp"):
        np.testing.assert_array_equal(part[v].values, full[v].isel(member=keep).values)
        for key in ("mean", "spread"):  # of all 30 members, not of the 4 written
            np.testing.assert_array_equal(part[f"{v}_{key}"].values, full[f"{v}_{key}"].values)
    assert not np.allclose(part["ssh"].std("member", ddof=1).values[:, 2:, 2:], part["ssh_spread"].values[:, 2:, 2:])
    seen = []
    picked = analyse_dataset(lib, obs, "enoi", loc_radius_km=15.0, alpha=0.8, rng=0,
                             write_members=lambda n: seen.append(n) or keep)  # chosen once n is known
    assert seen == [30]
    np.testing.assert_array_equal(picked["ssh"].values, part["ssh"].values)
    for bad in ([0, 0], [30], [-1], []):
        with pytest.raises(ConfigurationError, match="write_members"):
            analyse_dataset(lib, obs, "enoi", loc_radius_km=15.0, rng=0, write_members=bad)
    with pytest.raises(ConfigurationError, match="out="):
        analyse_dataset(lib, obs, "enoi", loc_radius_km=15.0, rng=0, write_members=keep, out=tmp_path / "a.nc")
