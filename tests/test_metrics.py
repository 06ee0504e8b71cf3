"""oceanda.metrics against properscoring/scoringrules/scikit-learn and closed forms."""

import numpy as np
import properscoring as ps
import pytest
import scoringrules as sr
import xarray as xr
from sklearn.metrics import top_k_accuracy_score

from oceanda import metrics as M
from oceanda.contrastive.retrieval import recall_at_k
from oceanda.errors import DataValidationError


def _ens(rng, nt=5, m=7, shape=(6, 8), scale=1.0):
    dims_t = ("time",) + tuple(["layer", "y", "x"][-len(shape):])
    truth = xr.DataArray(rng.normal(size=(nt, *shape)), dims=dims_t)
    ens = xr.DataArray(rng.normal(size=(nt, m, *shape)) * scale, dims=("time", "member", *dims_t[1:]))
    return ens, truth


# ---------------------------------------------------------------- moments


def test_rmse_bias_spread_closed_forms():
    truth = xr.DataArray(np.zeros((2, 3, 4)), dims=("time", "y", "x"))
    mean = xr.DataArray(np.stack([np.full((3, 4), 1.0), np.full((3, 4), 3.0)]), dims=("time", "y", "x"))
    # time mean of the spatial RMS: (1 + 3) / 2 = 2, not sqrt((1 + 9) / 2)
    assert float(M.rmse(mean, truth)) == pytest.approx(2.0)
    np.testing.assert_allclose(M.rmse(mean, truth, per_time=True).values, [1.0, 3.0])
    assert float(M.bias(-mean, truth)) == pytest.approx(-2.0)
    # two members at c +- s: ddof=1 variance 2 s^2
    s = 0.3
    ens = xr.concat([mean - s, mean + s], dim="member").transpose("time", "member", "y", "x")
    assert float(M.spread(ens)) == pytest.approx(np.sqrt(2) * s)
    assert float(M.spread(spread_field=xr.full_like(mean, 0.7))) == pytest.approx(0.7)
    # NaN (land) points are skipped, and the spread is taken where the truth is finite
    truth_nan = truth.where(truth.x > 0)
    ens_nan = ens.copy()
    ens_nan[:, :, :, 0] = 100.0
    assert float(M.spread(ens_nan, truth=truth_nan)) == pytest.approx(np.sqrt(2) * s)
    assert float(M.rmse(mean, truth_nan)) == pytest.approx(2.0)


def test_nrmse_score_closed_form():
    rng = np.random.default_rng(1)
    truth = xr.DataArray(rng.normal(size=(4, 5, 6)) + 2.0, dims=("time", "y", "x"))
    assert float(M.nrmse_score(0.9 * truth, truth)) == pytest.approx(0.9)
    assert float(M.nrmse_score(truth, truth)) == pytest.approx(1.0)


def test_layers_are_pooled():
    truth = xr.DataArray(np.zeros((1, 2, 3, 3)), dims=("time", "layer", "y", "x"))
    mean = truth.copy()
    mean[:, 0] = 1.0
    mean[:, 1] = 7.0
    assert float(M.rmse(mean, truth)) == pytest.approx(np.sqrt((1 + 49) / 2))


@pytest.mark.parametrize("m", [5, 20])
def test_spread_skill_calibrated_and_underdispersed(m):
    """Truth and members drawn from the same law around a random centre: calibrated by construction."""
    rng = np.random.default_rng(m)
    nt, ny, nx, sigma = 30, 20, 20, 0.8
    centre = rng.normal(size=(nt, 1, ny, nx)) * 3
    truth = xr.DataArray((centre + sigma * rng.normal(size=(nt, 1, ny, nx)))[:, 0], dims=("time", "y", "x"))
    good = xr.DataArray(centre + sigma * rng.normal(size=(nt, m, ny, nx)), dims=("time", "member", "y", "x"))
    narrow = xr.DataArray(centre + 0.5 * sigma * rng.normal(size=(nt, m, ny, nx)), dims=("time", "member", "y", "x"))

    def ratio(ens):
        return float(M.spread_skill_ratio(M.spread(ens), M.rmse(ens.mean("member"), truth), m))

    assert ratio(good) == pytest.approx(1.0, abs=0.04)
    # expected for the narrow one: sqrt((M+1)/M) * 0.5 / sqrt(1 + 1/(4M))
    expected = np.sqrt((m + 1) / m) * 0.5 / np.sqrt(1 + 0.25 / m)
    assert ratio(narrow) == pytest.approx(expected, abs=0.04)
    assert ratio(narrow) < 0.6
    # without the finite-ensemble correction a calibrated small ensemble would look under-dispersed
    assert M.spread_correction(m) == pytest.approx(np.sqrt((m + 1) / m))
    assert M.spread_correction(None) == 1.0


# ---------------------------------------------------------------- CRPS


def test_crps_vs_properscoring_and_scoringrules():
    rng = np.random.default_rng(2)
    ens, truth = _ens(rng, m=9)
    members_last = np.moveaxis(ens.values, 1, -1)
    plugin = M.crps_ensemble(ens, truth, fair=False)
    fair = M.crps_ensemble(ens, truth, fair=True)
    np.testing.assert_allclose(plugin.values, ps.crps_ensemble(truth.values, members_last), rtol=1e-10)
    np.testing.assert_allclose(fair.values, sr.crps_ensemble(truth.values, members_last, estimator="fair"), rtol=1e-10)
    # closed relation: fair = plugin - (E|X - y| - plugin) / (M - 1)
    skill = np.abs(members_last - truth.values[..., None]).mean(-1)
    m = ens.sizes["member"]
    np.testing.assert_allclose(fair.values, plugin.values - (skill - plugin.values) / (m - 1), rtol=1e-10)
    # one member: the absolute error
    one = ens.isel(member=[0])
    np.testing.assert_allclose(M.crps_ensemble(one, truth).values, np.abs(one.values[:, 0] - truth.values))


def test_crps_nan_member_and_dask_streaming():
    rng = np.random.default_rng(3)
    ens, truth = _ens(rng)
    ens = ens.copy()
    ens[0, 2, 0, 0] = np.nan
    eager = M.crps_ensemble(ens, truth)
    assert np.isnan(eager.values[0, 0, 0]) and np.isfinite(eager.values[1, 0, 0])
    lazy = M.crps_ensemble(ens.chunk({"time": 2, "member": 3}), truth.chunk({"time": 2}))
    assert lazy.chunks is not None  # nothing computed yet
    np.testing.assert_allclose(lazy.compute().values, eager.values)


def test_crps_gaussian_vs_properscoring():
    rng = np.random.default_rng(4)
    mu = xr.DataArray(rng.normal(size=(3, 4, 5)), dims=("time", "y", "x"))
    sd = xr.DataArray(rng.uniform(0.1, 2, size=(3, 4, 5)), dims=("time", "y", "x"))
    y = xr.DataArray(rng.normal(size=(3, 4, 5)), dims=("time", "y", "x"))
    np.testing.assert_allclose(M.crps_gaussian(mu, sd, y).values, ps.crps_gaussian(y.values, mu.values, sd.values), rtol=1e-10)
    np.testing.assert_allclose(M.crps_gaussian(mu, 0 * sd, y).values, np.abs(mu - y).values)


# ---------------------------------------------------------------- energy score


def test_energy_score_vs_scoringrules():
    rng = np.random.default_rng(5)
    ens, truth = _ens(rng, nt=4, m=6, shape=(2, 3, 4))  # with a layer dim: one vector per time
    obs = truth.values.reshape(4, -1)
    fct = ens.values.reshape(4, 6, -1)
    np.testing.assert_allclose(M.energy_score(ens, truth, fair=False).values, sr.es_ensemble(obs, fct), rtol=1e-9)
    np.testing.assert_allclose(M.energy_score(ens, truth).values, sr.es_ensemble(obs, fct, estimator="fair"), rtol=1e-9)
    lazy = M.energy_score(ens.chunk({"time": 1}), truth.chunk({"time": 1}))
    assert lazy.chunks is not None
    np.testing.assert_allclose(lazy.compute().values, M.energy_score(ens, truth).values)


def test_energy_score_is_crps_in_one_dimension_and_drops_nan():
    rng = np.random.default_rng(6)
    ens, truth = _ens(rng, nt=3, m=5, shape=(1, 1))
    es = M.energy_score(ens, truth)
    np.testing.assert_allclose(es.values, M.crps_ensemble(ens, truth).values[:, 0, 0], rtol=1e-9)
    ens2, truth2 = _ens(rng, nt=2, m=4, shape=(3, 3))
    t_nan = truth2.copy()
    t_nan[:, 0, 0] = np.nan
    ref = sr.es_ensemble(truth2.values.reshape(2, -1)[:, 1:], ens2.values.reshape(2, 4, -1)[:, :, 1:], estimator="fair")
    np.testing.assert_allclose(M.energy_score(ens2, t_nan).values, ref, rtol=1e-9)


# ---------------------------------------------------------------- rank histograms


def test_rank_histogram_exact_counts_and_ties():
    ens = xr.DataArray(np.array([0.0, 1.0, 2.0])[None, :, None, None] * np.ones((1, 3, 1, 3)), dims=("time", "member", "y", "x"))
    truth = xr.DataArray(np.array([[[1.5, -1.0, 1.0]]]), dims=("time", "y", "x"))
    counts = M.rank_histogram(ens, truth).values
    # 1.5 -> rank 2; -1 -> rank 0; 1.0 ties with one member -> half to rank 1, half to rank 2
    np.testing.assert_allclose(counts, [1.0, 0.5, 1.5, 0.0])


def test_rank_histogram_flat_when_calibrated_u_shaped_when_narrow():
    rng = np.random.default_rng(7)
    nt, m, ny, nx = 20, 9, 15, 15
    centre = rng.normal(size=(nt, 1, ny, nx))
    truth = xr.DataArray((centre + rng.normal(size=(nt, 1, ny, nx)))[:, 0], dims=("time", "y", "x"))
    good = xr.DataArray(centre + rng.normal(size=(nt, m, ny, nx)), dims=("time", "member", "y", "x"))
    narrow = xr.DataArray(centre + 0.4 * rng.normal(size=(nt, m, ny, nx)), dims=("time", "member", "y", "x"))
    c = M.rank_histogram(good.chunk({"time": 5}), truth.chunk({"time": 5})).compute().values
    n = nt * ny * nx
    assert c.sum() == pytest.approx(n)
    expected = n / (m + 1)
    chi2 = ((c - expected) ** 2 / expected).sum()
    assert chi2 < 30  # 9 degrees of freedom: p ~ 4e-4 at 30
    u = M.rank_histogram(narrow, truth).values
    assert min(u[0], u[-1]) > 2.5 * u[m // 2]
    assert M.rank_histogram(good, truth, per_time=True).sizes == {"time": nt, "rank": m + 1}


# ---------------------------------------------------------------- retrieval (oceanda.contrastive.retrieval: the one R@K)


def test_recall_at_k_vs_sklearn():
    rng = np.random.default_rng(8)
    scores = rng.normal(size=(60, 60)) + 1.5 * np.eye(60)
    got = recall_at_k(scores, k=(1, 5, 10))
    for k in (1, 5, 10):
        assert got[k] == pytest.approx(top_k_accuracy_score(np.arange(60), scores, k=k, labels=np.arange(60)))
    assert recall_at_k(np.eye(5), k=1) == 1.0
    assert recall_at_k(-np.eye(5), k=4) == 0.0  # the true candidate is always last of 5
    targets = rng.permutation(60)
    permuted = scores[:, np.argsort(targets)]  # column targets[i] holds query i's true candidate
    assert recall_at_k(permuted, k=5, targets=targets) == pytest.approx(got[5])
    torch = pytest.importorskip("torch")
    assert recall_at_k(torch.tensor(scores).T, k=5) == pytest.approx(
        top_k_accuracy_score(np.arange(60), scores.T, k=5, labels=np.arange(60))
    )
    assert recall_at_k(np.ones((3, 3)), k=2) == 0.0  # ties count against the query


# ---------------------------------------------------------------- spectra / effective resolution


def _grid(nt=6, n=64, dx=10.0, seed=9):
    rng = np.random.default_rng(seed)
    c = np.arange(n) * dx
    field = rng.normal(size=(nt, n, n))
    return field, c


def _da(a, c):
    return xr.DataArray(a, dims=("time", "y", "x"), coords={"y": ("y", c, {"units": "km"}), "x": ("x", c, {"units": "km"})})


def test_psd_parseval():
    field, c = _grid()
    n, dx = c.size, c[1] - c[0]
    # band-limit to the resolved disc so the isotropic rings hold all the power
    k = np.hypot(np.fft.fftfreq(n, dx)[:, None], np.fft.fftfreq(n, dx)[None, :])
    f = np.real(np.fft.ifft2(np.fft.fft2(field) * (k < 0.45 / dx)))
    p = M.power_spectrum(_da(f, c), window=None)
    dk = p.wavenumber.values[0]
    ms = ((f - f.mean(axis=(1, 2), keepdims=True)) ** 2).mean()
    assert float(p.sum()) * dk == pytest.approx(ms, rel=1e-9)
    px = M.power_spectrum(_da(field, c), kind="x", window=None)
    msx = ((field - field.mean(axis=2, keepdims=True)) ** 2).mean()
    assert float(px.sum()) * px.wavenumber.values[0] == pytest.approx(msx, rel=1e-9)
    np.testing.assert_allclose(px.wavelength.values * px.wavenumber.values, 1.0)
    # the Hann taper preserves power on average (white noise)
    ph = M.power_spectrum(_da(f, c))
    assert float(ph.sum()) * dk == pytest.approx(ms, rel=0.1)


@pytest.mark.parametrize("window", [None, "hann"])
def test_effective_resolution_known_answer(window):
    """Error = truth filtered by H with |H(k)|^2 = 1 / (1 + (k0/k)^4): the score crosses 0.5 at k = k0."""
    field, c = _grid()
    n, dx = c.size, c[1] - c[0]
    k0 = 1 / 100.0
    ky, kx = np.fft.fftfreq(n, dx)[:, None], np.fft.fftfreq(n, dx)[None, :]
    k = np.hypot(ky, kx)
    with np.errstate(divide="ignore"):
        h = np.sqrt(1.0 / (1.0 + (k0 / k) ** 4))
    err = np.real(np.fft.ifft2(np.fft.fft2(field) * h))
    truth = _da(field, c)
    res = M.effective_resolution(truth + _da(err, c), truth, window=window)
    assert res == pytest.approx(100.0, rel=0.06)
    # along x, with a filter of kx only
    with np.errstate(divide="ignore"):
        hx = np.sqrt(1.0 / (1.0 + (k0 / np.abs(kx)) ** 4)) * np.ones_like(ky)
    err_x = np.real(np.fft.ifft2(np.fft.fft2(field) * hx))
    res_x = M.effective_resolution(truth + _da(err_x, c), truth, kind="x", window=window)
    assert res_x == pytest.approx(100.0, rel=0.06)


def test_effective_resolution_bounds_and_degrees():
    field, c = _grid(nt=2, n=32)
    truth = _da(field, c)
    assert M.effective_resolution(truth + 0.01 * truth, truth) == pytest.approx(20.0)  # resolved to 2 dx
    assert M.effective_resolution(truth * 0 + 0, truth) == pytest.approx(320.0)  # nothing: the domain
    ll = xr.DataArray(field, dims=("time", "lat", "lon"),
                      coords={"lat": 40 + np.arange(32) * 0.1, "lon": -60 + np.arange(32) * 0.1})
    p = M.power_spectrum(ll, kind="x")
    assert float(p.wavelength.max()) == pytest.approx(32 * 0.1 * M.KM_PER_DEG * np.cos(np.deg2rad(41.55)), rel=1e-3)
    uneven = truth.assign_coords(x=c ** 1.1)
    with pytest.raises(DataValidationError, match="not evenly spaced"):
        M.power_spectrum(uneven)


def test_missing_member_dim_is_a_clear_error():
    rng = np.random.default_rng(10)
    _, truth = _ens(rng)
    with pytest.raises(DataValidationError, match="member"):
        M.crps_ensemble(truth.rename("ssh"), truth)
