"""Window geometry, the library and local mode against closed forms."""

import numpy as np
import pytest
import xarray as xr

from oceanda.analysis import windows as W
from oceanda.analysis.library import Library
from oceanda.analysis.local_mode import WindowLibrary, analyse_local, calibrate_spread
from oceanda.errors import DataValidationError


def _noise_library(n, ny=8, nx=8, seed=0):
    rng = np.random.default_rng(seed)
    data = rng.normal(size=(n, ny, nx)).astype(np.float32)
    time = np.datetime64("2001-01-01", "ns") + np.arange(n) * np.timedelta64(1, "D")
    ds = xr.Dataset({"ssh": (("time", "y", "x"), data, {"units": "m"})},
                    coords={"time": time, "y": np.arange(ny) * 10.0, "x": np.arange(nx) * 10.0})
    return ds.chunk({"time": 500})


@pytest.mark.parametrize("periodic", [True, False])
def test_blend_is_a_partition_of_unity(periodic):
    spec = W.WindowSpec(size=8, stride=4, halo=2, periodic=periodic)
    iy, ix = W.positions(20, 24, spec)
    const = np.full((len(iy), 2, 8, 8), 3.5)
    np.testing.assert_allclose(W.blend(const, iy, ix, (20, 24), spec), 3.5)
    t = W.taper_1d(8, 4)
    np.testing.assert_allclose(t[:4] + t[4:], 1.0)  # sin^2 + cos^2: exact without renormalising


@pytest.mark.parametrize("shape,size,stride,periodic", [((64, 48), 16, 8, True), ((37, 29), 8, 4, False),
                                                          ((33, 33), 16, 6, False), ((30, 30), 10, 5, True)])
def test_blend_operator_equals_the_taper_weighted_average(shape, size, stride, periodic):
    """The cached sparse operator gives the definition: sum of taper x window over windows covering a pixel, over
    the summed taper (overhang dropped, or wrapped when periodic), for any lead dimensions."""
    ny, nx = shape
    spec = W.WindowSpec(size=size, stride=stride, halo=2, periodic=periodic)
    iy, ix = W.positions(ny, nx, spec)
    wins = np.random.default_rng(0).normal(size=(len(iy), 3, 2, size, size)).astype(np.float32)
    t1 = W.taper_1d(size, stride)
    taper = t1[:, None] * t1[None, :]
    acc, wsum = np.zeros((3, 2, ny, nx)), np.zeros((ny, nx))
    dy, dx = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    for p in range(len(iy)):
        y, x = iy[p] + dy, ix[p] + dx
        if periodic:
            y, x = y % ny, x % nx
        ok = (y < ny) & (x < nx)
        np.add.at(acc, (slice(None), slice(None), y[ok], x[ok]), (taper * wins[p])[..., ok])
        np.add.at(wsum, (y[ok], x[ok]), taper[ok])
    out = W.blend(wins, iy, ix, shape, spec)
    assert out.shape == (3, 2, ny, nx) and out.dtype == np.float64
    np.testing.assert_allclose(out, acc / wsum, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(W.blend(wins[:, 0, 0], iy, ix, shape, spec), acc[0, 0] / wsum, rtol=1e-12, atol=1e-12)
    # float32 windows are scattered by a compiled loop in the sparse product's order: the same bits
    np.testing.assert_array_equal(out, W.blend(wins.astype(np.float64), iy, ix, shape, spec))


def test_blend_refuses_a_geometry_that_leaves_pixels_uncovered():
    spec = W.WindowSpec(size=4, stride=8, halo=0, periodic=False)
    iy, ix = np.array([0, 8]), np.array([0, 0])
    with pytest.raises(DataValidationError, match="uncovered"):
        W.blend(np.ones((2, 4, 4)), iy, ix, (12, 4), spec)
    spec = W.WindowSpec(size=8, stride=4, halo=2, periodic=True)
    iy, ix = W.positions(16, 16, spec)
    for bad in ((len(iy), 2, 4, 16), (len(iy) - 1, 8, 8)):  # a window shape the spec does not have: refused
        with pytest.raises(DataValidationError, match="windows of shape"):
            W.blend(np.ones(bad), iy, ix, (16, 16), spec)


def test_extract_then_blend_reproduces_a_field_and_wraps_periodically():
    rng = np.random.default_rng(3)
    f = rng.normal(size=(2, 12, 16))
    spec = W.WindowSpec(size=4, stride=2, halo=3, periodic=True)
    iy, ix = W.positions(12, 16, spec)
    wins = W.extract(f, iy, ix, spec.size, 0, True)
    np.testing.assert_allclose(W.blend(wins, iy, ix, (12, 16), spec), f)
    big = W.extract(f, iy, ix, spec.size, spec.halo, True)
    assert big.shape == (len(iy), 2, 10, 10)
    p = int(np.flatnonzero((iy == 0) & (ix == 0))[0])
    np.testing.assert_allclose(big[p, :, 0, 0], f[:, -3, -3])  # the halo wraps around
    np.testing.assert_allclose(big[p, :, 3:7, 3:7], f[:, :4, :4])
    nonper = W.extract(f, iy[:1], ix[:1], 4, 2, False)
    assert np.isnan(nonper[0, 0, 0, 0]) and nonper[0, 0, 2, 2] == f[0, 0, 0]


def test_library_open_reads_scattered_states_from_the_file_without_dask(tmp_path):
    from oceanda import io

    ds = _noise_library(40).compute()
    io.write_netcdf(ds, tmp_path / "lib.nc")
    lib = Library.open(tmp_path / "lib.nc")
    assert lib._direct is not None and lib.ds.ssh.chunks is not None  # both views of one file
    dask_only = Library(lib.ds)
    for idx in ([7, 3, 7, 39], np.arange(5, 21), [0], np.arange(40)[::-3]):
        np.testing.assert_array_equal(lib.read(idx), dask_only.read(idx))
        np.testing.assert_array_equal(lib.read(idx)[:, 0], ds.ssh.values[np.asarray(idx)])
    assert lib.fingerprint == dask_only.fingerprint
    io.write_netcdf(ds.isel(time=slice(20, 40)), tmp_path / "b.nc")
    io.write_netcdf(ds.isel(time=slice(0, 20)), tmp_path / "a.nc")
    multi = Library.open([tmp_path / "a.nc", tmp_path / "b.nc"])
    assert multi._direct is None  # several files: dask reads only
    np.testing.assert_array_equal(multi.read([3, 25])[:, 0], ds.ssh.values[[3, 25]])


def test_library_reads_lazily_and_fingerprints(tmp_path):
    ds = _noise_library(50)
    lib = Library(ds)
    assert not lib.in_memory and lib.layout.n_channels == 1
    np.testing.assert_allclose(lib.read([7, 3, 7])[:, 0], ds.ssh.values[[7, 3, 7]])
    fp = lib.fingerprint
    assert Library(ds.isel(time=slice(0, 49))).fingerprint != fp
    calls = []

    def embed(x):
        calls.append(len(x))
        return x.reshape(len(x), -1)[:, :3]

    z = lib.embeddings(embed, key="m1", cache_dir=tmp_path, chunk=16)
    assert z.shape == (50, 3) and calls == [16, 16, 16, 2]
    z2 = lib.embeddings(embed, key="m1", cache_dir=tmp_path, chunk=16)
    assert calls == [16, 16, 16, 2]  # cached: not recomputed
    np.testing.assert_array_equal(z, z2)


def test_local_posterior_matches_gaussian_closed_form():
    """i.i.d. N(0, 1) pixels, y = x + N(0, 1) noise, exact likelihood encoders (neg. sq. distance,
    tau = 1): every pixel's posterior is N(y / 2, 1 / 2)."""
    n = 2500
    lib = Library(_noise_library(n, seed=1))
    lib.load()
    spec = W.WindowSpec(size=2, stride=2, halo=0, periodic=True)
    wlib = WindowLibrary(lib, spec, stride=2)
    flat = lambda x: np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    z = wlib.embeddings(flat, "exact")
    assert z.shape == (n * 16, 4)
    rng = np.random.default_rng(5)
    y = rng.normal(size=(1, 8, 8)) * 1.4
    res = analyse_local(y, wlib, z, flat, kind="neg_sq_distance", tau=1.0, members=400, rng=rng, max_keep=None)
    np.testing.assert_allclose(res.mean[0], y[0] / 2, atol=0.06)
    assert np.mean(res.spread ** 2) == pytest.approx(0.5, rel=0.12)
    assert res.ess.min() > 200
    # a recalibrated spread scales the deviations, keeps the mean
    res2 = analyse_local(y, wlib, z, flat, members=50, rng=np.random.default_rng(1), spread_factor=0.5)
    np.testing.assert_allclose(res2.members.mean(axis=0), res2.mean, atol=1e-5)
    assert calibrate_spread(np.full(10, 4.0), np.full(10, 1.0)) == pytest.approx(2.0)


def test_overlapping_windows_give_coherent_members():
    """With overlapping windows and shared resampling noise, adjacent pixels of a member stay as
    correlated as the library states are (here: smooth fields)."""
    rng = np.random.default_rng(2)
    n, ny, nx = 600, 16, 16
    k = np.fft.fftfreq(16)
    filt = np.exp(-(k[:, None] ** 2 + k[None, :] ** 2) / 0.01)
    smooth = np.real(np.fft.ifft2(np.fft.fft2(rng.normal(size=(n, ny, nx))) * filt))
    smooth /= smooth.std()
    time = np.datetime64("2001-01-01", "ns") + np.arange(n) * np.timedelta64(1, "D")
    ds = xr.Dataset({"ssh": (("time", "y", "x"), smooth.astype(np.float32), {"units": "m"})},
                    coords={"time": time, "y": np.arange(ny) * 1.0, "x": np.arange(nx) * 1.0})
    lib = Library(ds)
    spec = W.WindowSpec(size=8, stride=4, halo=0, periodic=True)
    wlib = WindowLibrary(lib, spec, stride=4)
    coarse = lambda x: np.asarray(x, dtype=np.float64)[:, :, ::4, ::4].reshape(len(x), -1) * 2
    z = wlib.embeddings(coarse, "coarse")
    obs = smooth[:1] + 0.1 * rng.normal(size=(1, ny, nx))
    lib_corr = np.mean(smooth[..., 1:] * smooth[..., :-1]) / np.mean(smooth ** 2)
    corr = {}
    for coupling in ("copula", "independent"):
        res = analyse_local(obs, wlib, z, coarse, members=30, rng=np.random.default_rng(0), coupling=coupling)
        d = res.members - res.mean[None]
        corr[coupling] = np.mean(d[..., :, 1:] * d[..., :, :-1]) / np.mean(d ** 2)
    assert corr["copula"] > corr["independent"] + 0.05
    assert corr["copula"] > lib_corr - 0.1
