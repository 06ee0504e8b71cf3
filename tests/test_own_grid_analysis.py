"""Local, hybrid and Kalman analyses on a user's own grid: lat/lon across the dateline, curvilinear, land, tiny grids.

Grids are built in memory: an 18 x 30 regional lat/lon grid with lon 150..250 (continuous across the
dateline) and land as NaN, a curvilinear (y, x) grid with 2-D lat/lon, and the QG-like periodic km box.
The contrastive models are fixed linear encoders (no training), so the tests are fast and exact.
"""

import numpy as np
import pytest
import xarray as xr

from oceanda import fields
from oceanda.analysis import windows as W
from oceanda.analysis.assimilate import assimilate
from oceanda.analysis.hybrid import grid_localizer_for, localizer_for
from oceanda.analysis.settings import HybridSettings
from oceanda.contrastive.encoders import FixedEncoder
from oceanda.contrastive.model import ContrastiveModel
from oceanda.contrastive.similarity import Similarity
from oceanda.errors import DataValidationError
from oceanda.kalman.dataset import analyse_dataset, grid_metric, localizer_for_dataset
from oceanda.kalman.localization import correlation_e_folding, estimate_radius, great_circle_km


def _smooth(n, ny, nx, length, seed=0):
    """Smooth random fields ``[n, ny, nx]`` (Gaussian spectrum, cropped from a doubled periodic box), unit std."""
    rng = np.random.default_rng(seed)
    k2 = np.fft.fftfreq(2 * ny)[:, None] ** 2 + np.fft.fftfreq(2 * nx)[None, :] ** 2
    f = np.real(np.fft.ifft2(np.fft.fft2(rng.normal(size=(n, 2 * ny, 2 * nx))) * np.exp(-k2 * (np.pi * length) ** 2)))
    f = f[:, :ny, :nx]
    return (f / f.std()).astype(np.float32)


def _land(ny, nx):
    land = np.zeros((ny, nx), bool)
    land[:5, :6] = True  # a coast in a corner
    land[10:12, 14:17] = True  # an island
    return land


def _latlon(n=80, ny=18, nx=30, land=True, seed=0):
    """Regional lat/lon library, lon 150..250 (across the dateline), land NaN."""
    ssh = 0.1 * _smooth(n, ny, nx, 3.0, seed)
    if land:
        ssh[:, _land(ny, nx)] = np.nan
    time = np.datetime64("2001-01-01", "ns") + np.arange(n) * np.timedelta64(1, "D")
    return xr.Dataset({"ssh": (("time", "lat", "lon"), ssh, {"units": "m"})},
                      coords={"time": time, "lat": ("lat", np.linspace(-20, 20, ny), {"units": "degrees_north"}),
                              "lon": ("lon", np.linspace(150, 250, nx), {"units": "degrees_east"})})


def _curvilinear(n=60, ny=18, nx=24, seed=0):
    """(y, x) index grid with 2-D lat/lon (a rotated patch across the dateline), land NaN."""
    base = _latlon(n, ny, nx, seed=seed)
    j, i = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    lat = -10 + 1.5 * j + 0.3 * i
    lon = 170 + 1.5 * i - 0.3 * j
    return xr.Dataset({"ssh": (("time", "y", "x"), base["ssh"].values, {"units": "m"})},
                      coords={"time": base.time, "lat": (("y", "x"), lat, {"units": "degrees_north"}),
                              "lon": (("y", "x"), lon, {"units": "degrees_east"})})


def _km_box(n=40, ny=16, nx=16):
    ssh = _smooth(n, ny, nx, 2.0)
    time = np.datetime64("2001-01-01", "ns") + np.arange(n) * np.timedelta64(1, "D")
    j, i = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    return xr.Dataset({"ssh": (("time", "y", "x"), ssh, {"units": "m"})},
                      coords={"time": time, "y": ("y", np.arange(ny) * 10.0 + 5, {"units": "km"}),
                              "x": ("x", np.arange(nx) * 10.0 + 5, {"units": "km"}),
                              "lat": (("y", "x"), 38 + 0.09 * j), "lon": (("y", "x"), -60 + 0.11 * i)})


def _obs(lib, truth_index, frac=0.3, seed=1, sigma=0.005):
    rng = np.random.default_rng(seed)
    o = lib[["ssh"]].isel(time=truth_index).copy(deep=True)
    o["ssh"] = o.ssh.where(rng.random(o.ssh.shape) < frac)
    o["ssh_error"] = xr.DataArray(sigma, attrs={"units": "m"})
    return o


def _window_model(path, ds, size=16, halo=8, stride=8, periodic=False):
    """Fixed window encoders: state -> its standardised window; obs -> the observed values of its centre."""
    o = size + 2 * halo
    M_obs = np.zeros((size * size, 2 * o * o))
    for i in range(size):
        for j in range(size):
            M_obs[i * size + j, (halo + i) * o + (halo + j)] = 1.0
    st = fields.Standardizer.fit(fields.to_array(ds, fields.layout_of(ds, ["ssh"]))[0])
    cfg = {"grid_fingerprint": fields.grid_fingerprint(ds, ["ssh"]), "normalization": {"state": st.to_dict()},
           "extra": {"state_channels": [["ssh", None]], "obs_channels": [["ssh", None]],
                     "window": {"size": size, "stride": stride, "halo": halo, "periodic": periodic}}}
    ContrastiveModel(FixedEncoder((1, size, size)), FixedEncoder((2, o, o), matrix=M_obs),
                     Similarity("neg_sq_distance", tau=0.05), cfg).save(path)
    return path


# --- one distance rule for every localiser -------------------------------------------------------------------------

@pytest.mark.parametrize("make, periodic, metric", [(_latlon, False, "great_circle"), (_latlon, True, "great_circle"),
                                                    (_curvilinear, False, "great_circle"),
                                                    (_km_box, True, "periodic"), (_km_box, False, "great_circle")])
def test_hybrid_and_kalman_localisers_agree_on_every_grid(make, periodic, metric):
    ds = make()
    coords, m, period = grid_metric(ds, periodic)
    assert m == metric and coords.shape == (ds.sizes[fields.spatial_dims(ds)[0]] * ds.sizes[fields.spatial_dims(ds)[1]], 2)
    a, b = grid_localizer_for(ds, 150.0, periodic), localizer_for_dataset(ds, 150.0, periodic=periodic)
    h = localizer_for(ds, HybridSettings(radius=150.0), periodic)  # the Schur path uses the same localizer
    for loc in (a, h):
        assert loc.metric == b.metric and loc.period == b.period
        np.testing.assert_array_equal(loc.coords, b.coords)


def test_great_circle_distances_are_continuous_across_the_dateline():
    ds = _latlon()
    coords, metric, _ = grid_metric(ds)
    lon = coords[:, 1]
    assert lon.min() == 150 and lon.max() == 250  # 150..250, no jump at 180
    near = np.abs(lon - 180).argmin()
    west, east = coords[near], coords[near] + [0, 3.4]
    assert great_circle_km(*west, *east) < 400  # neighbours across 180 are near, not 360 degrees apart


# --- the radius from the ensemble ----------------------------------------------------------------------------------

def test_correlation_e_folding_recovers_a_known_length():
    """Amplitude spectrum exp(-(pi L k)^2), k in cycles per cell: correlation exp(-r^2 / (2 L^2)), e-folding sqrt(2) L."""
    f = _smooth(400, 32, 32, 3.0, seed=2).reshape(400, -1)
    j, i = np.meshgrid(np.arange(32) * 10.0, np.arange(32) * 10.0, indexing="ij")
    e, dist, corr = correlation_e_folding(f, np.c_[j.ravel(), i.ravel()], "euclidean", rng=0)
    assert e == pytest.approx(np.sqrt(2) * 30.0, rel=0.08)  # L = 3 cells of 10 km
    assert corr[0] == pytest.approx(1.0) and np.all(np.diff(dist) > 0)
    r, e2 = estimate_radius([f], np.c_[j.ravel(), i.ravel()], members=400)
    assert e2 == pytest.approx(e) and r == pytest.approx(2.5 * e)  # sqrt(400) / 8
    assert estimate_radius([f], np.c_[j.ravel(), i.ravel()], members=20)[0] == pytest.approx(e)  # clipped to 1


@pytest.mark.parametrize("method", ["enoi", "letkf"])
def test_kalman_on_latlon_with_land_estimates_the_radius_and_keeps_land_nan(method):
    lib = _latlon()
    obs = _obs(lib, [3, 50])
    ens = lib.isel(time=slice(0, 40)) if method == "enoi" else \
        lib.isel(time=slice(0, 30)).rename(time="member").assign_coords(member=np.arange(30)).expand_dims(time=obs.time.values[:1])
    ob = obs if method == "enoi" else obs.isel(time=[0])
    a = analyse_dataset(ens, ob, method, rng=0, inflation=None)
    land = _land(18, 30)
    assert a.attrs["localization_radius_source"].startswith("estimated")
    assert a.attrs["localization_radius_km"] == a.attrs["loc_radius_km"] > 0
    for v in ("ssh_mean", "ssh_spread"):
        val = a[v].values
        assert np.isnan(val[:, land]).all() and np.isfinite(val[:, ~land]).all()
    assert np.isnan(a["ssh"].values[:, :, land]).all() and np.isfinite(a["ssh"].values[:, :, ~land]).all()
    # the analysis moves towards the observations
    m = np.isfinite(ob["ssh"].values)
    prior = ens["ssh"].values.reshape(-1, 18, 30).mean(axis=0)  # NaN on land
    assert np.abs(a["ssh_mean"].values[m] - ob["ssh"].values[m]).mean() < 0.6 * np.abs(
        np.broadcast_to(prior, m.shape)[m] - ob["ssh"].values[m]).mean()


def test_enoi_on_a_curvilinear_grid_and_the_explicit_choices():
    lib = _curvilinear()
    obs = _obs(lib, [5])
    a = analyse_dataset(lib, obs, "enoi", loc_radius_km=500.0)
    assert a.attrs["localization_radius_source"] == "given" and a.attrs["localization_radius_km"] == 500.0
    land = _land(18, 24)
    assert np.isnan(a["ssh_mean"].values[:, land]).all() and np.isfinite(a["ssh_mean"].values[:, ~land]).all()
    none = analyse_dataset(lib, obs, "enoi", loc_radius_km=np.inf)
    assert none.attrs["localization_radius_km"] == 0.0 and "unlocalised" in none.attrs["localization_radius_source"]
    assert "not localised" in analyse_dataset(lib, obs, "etkf").attrs["localization_radius_source"]
    with pytest.raises(DataValidationError, match="inf for no localisation"):
        analyse_dataset(lib, obs, "enoi", loc_radius_km=0.0)
    with pytest.raises(DataValidationError, match="etkf"):
        analyse_dataset(lib, obs, "letkf", loc_radius_km=np.inf)


# --- windows on non-periodic, small, land-covered grids ------------------------------------------------------------

def test_windows_cover_grids_smaller_than_or_not_divisible_by_the_window():
    spec = W.WindowSpec(16, 8, 8, periodic=False)
    assert list(W.starts(30, 16, 8, False)) == [0, 8, 14] and list(W.starts(12, 16, 8, False)) == [0]
    spec.check(12, 30)  # a non-periodic grid smaller than a window is padded, not refused
    with pytest.raises(DataValidationError):
        W.WindowSpec(16, 8, 8, periodic=True).check(12, 30)
    f = np.random.default_rng(0).normal(size=(1, 12, 30))
    iy, ix = W.positions(12, 30, spec)
    wins = W.extract(f, iy, ix, 16, 0, False)
    assert np.isnan(wins[:, :, 12:]).all()
    np.testing.assert_allclose(W.blend(wins, iy, ix, (12, 30), spec, nan_aware=True), f)
    holes = wins.copy()
    holes[0, 0, 0, 0] = np.nan  # a value only one window covers -> NaN; others average the rest
    out = W.blend(holes, iy, ix, (12, 30), spec, nan_aware=True)
    assert np.isnan(out[0, 0, 0]) and np.isfinite(out).sum() == f.size - 1


@pytest.mark.parametrize("make", [_latlon, _curvilinear])
@pytest.mark.parametrize("mode", ["local", "hybrid"])
def test_local_and_hybrid_on_own_grids_are_nan_on_land_only(tmp_path, make, mode):
    lib = make()
    obs = _obs(lib, [7, 41], frac=0.5)
    model = _window_model(tmp_path / "m", lib)
    hybrid = HybridSettings(radius=600.0, static_members=40) if mode == "hybrid" else None
    out = assimilate(model, lib, obs, mode=mode, members=6, seed=0, hybrid=hybrid)
    land = _land(*lib["ssh"].shape[1:])
    for v in ("ssh_mean", "ssh_spread"):
        assert np.isnan(out[v].values[:, land]).all() and np.isfinite(out[v].values[:, ~land]).all(), v
    assert np.isnan(out["ssh"].values[:, :, land]).all() and np.isfinite(out["ssh"].values[:, :, ~land]).all()
    truth = lib["ssh"].values[[7, 41]]
    clim = lib["ssh"].values.mean(axis=0)  # NaN on land
    err = np.sqrt(np.nanmean((out["ssh_mean"].values - truth) ** 2))
    assert err < 0.7 * np.sqrt(np.nanmean((clim - truth) ** 2))  # beats climatology (the truth is in the library)


@pytest.mark.parametrize("ensemble", ["local", "both", "static"])
def test_hybrid_letkf_paths_with_land(tmp_path, ensemble):
    lib = _latlon()
    obs = _obs(lib, [7, 61], frac=0.5)
    out = assimilate(_window_model(tmp_path / "m", lib), lib, obs, mode="hybrid", members=6, seed=0,
                     hybrid=HybridSettings(radius=600.0, ensemble=ensemble, kalman="letkf", static_members=40))
    land = _land(18, 30)
    assert np.isnan(out["ssh_mean"].values[:, land]).all() and np.isfinite(out["ssh_mean"].values[:, ~land]).all()
    assert np.isfinite(out["ssh"].values[:, :, ~land]).all()


def test_local_mode_on_a_grid_smaller_than_the_window(tmp_path):
    lib = _latlon(n=50, ny=12, nx=30).isel(lat=slice(0, 12))
    obs = _obs(lib, [4], frac=0.5)
    out = assimilate(_window_model(tmp_path / "m", lib), lib, obs, mode="local", members=4, seed=0)
    land = np.isnan(lib["ssh"].values[0])
    assert land.any() and np.isnan(out["ssh_mean"].values[0][land]).all()
    assert np.isfinite(out["ssh_mean"].values[0][~land]).all()
    assert out.attrs["window_size"] == 16 and out["ssh_mean"].shape == (1, 12, 30)


@pytest.mark.filterwarnings("ignore:.*weak model")  # 2 epochs of training: skill is not the point here
def test_a_window_model_trained_on_a_latlon_grid_with_land_runs_local_and_hybrid(tmp_path):
    """Training sees land as zero state input and unobserved (mask 0); local/hybrid use that model end to end."""
    from oceanda.analysis.library import Library
    from oceanda.analysis.window_training import WindowTrainingConfig, train_window_model

    lib = _latlon(n=120)
    cfg = WindowTrainingConfig(size=16, stride=8, halo=8, seconds=3.0, epochs=2, pairs_per_epoch=128, val_pairs=64,
                               batch_size=64, max_days=1, mask_bank=0, embedding_dim=16,
                               state_encoder={"type": "mlp", "hidden": [32]},
                               obs_encoder={"type": "masked_cnn", "width": 4, "depth": 1})
    model, hist = train_window_model(Library(lib), lambda n, rng: rng.random((n, 18, 30)) < 0.3, [0.005],
                                     tmp_path / "w", config=cfg, periodic=False)
    assert np.isfinite(hist["history"][-1]["val_loss"])
    assert model.config["extra"]["window"]["periodic"] is False
    obs = _obs(lib, [10, 90], frac=0.4)
    land = _land(18, 30)
    for mode in ("local", "hybrid"):
        out = assimilate(tmp_path / "w", lib, obs, mode=mode, members=4, seed=0,
                         hybrid=HybridSettings(radius=600.0, static_members=60) if mode == "hybrid" else None)
        m = out["ssh_mean"].values
        assert np.isnan(m[:, land]).all() and np.isfinite(m[:, ~land]).all(), mode


def test_domain_size_for_the_wide_radius_note():
    from oceanda.kalman.dataset import _domain_km

    box = np.c_[np.repeat(np.arange(0, 1000.0, 100), 10), np.tile(np.arange(0, 1000.0, 100), 10)]
    assert _domain_km(box, "euclidean", None) == pytest.approx(np.hypot(900, 900))
    assert _domain_km(box, "periodic", [1000.0, 1000.0]) == pytest.approx(np.hypot(1000, 1000) / 2)
    ll = np.c_[np.repeat([0.0, 10.0], 2), np.tile([0.0, 10.0], 2)]  # 10 x 10 degrees at the equator
    assert _domain_km(ll, "great_circle", None) == pytest.approx(1568, rel=0.01)
