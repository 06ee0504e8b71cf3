"""oceanda.fields: stacking, masks, standardisation and fingerprints (property-based where it fits)."""

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from oceanda import fields
from oceanda.errors import DataValidationError, GridMismatchError

from conftest import make_state_dataset


def _dataset(nt, nlev, ny, nx, dtype, nan_mask, seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(nt, ny, nx)).astype(dtype)
    b = rng.normal(loc=3.0, scale=5.0, size=(nt, nlev, ny, nx)).astype(dtype)
    if nan_mask:
        a[rng.random(a.shape) < 0.2] = np.nan
    return xr.Dataset(
        {"a": (("time", "y", "x"), a, {"units": "m"}), "b": (("time", "layer", "y", "x"), b, {"units": "degC"})},
        coords={"time": np.arange(nt), "layer": np.arange(nlev), "y": np.arange(ny) * 2.0, "x": np.arange(nx) * 3.0},
    )


shapes = st.tuples(st.integers(1, 4), st.integers(1, 3), st.integers(1, 6), st.integers(1, 6))


@settings(max_examples=30, deadline=None)
@given(shape=shapes, dtype=st.sampled_from([np.float32, np.float64]), nan_mask=st.booleans(), seed=st.integers(0, 10_000))
def test_stack_unstack_round_trip(shape, dtype, nan_mask, seed):
    ds = _dataset(*shape, dtype, nan_mask, seed)
    arr, layout = fields.to_array(ds, dtype=dtype)
    assert arr.shape == (shape[0], 1 + shape[1], shape[2], shape[3])
    back = fields.from_array(arr, layout, ds)
    for v in ds.data_vars:
        np.testing.assert_array_equal(back[v].transpose(*ds[v].dims).values, ds[v].values)
        assert back[v].attrs == ds[v].attrs
    # the layout itself survives JSON
    assert fields.FieldLayout.from_dict(layout.to_dict()) == layout


@settings(max_examples=30, deadline=None)
@given(
    arr=hnp.arrays(np.float64, hnp.array_shapes(min_dims=4, max_dims=4, min_side=1, max_side=5),
                   elements=st.floats(-1e3, 1e3, allow_nan=False)),
    nan_frac=st.sampled_from([0.0, 0.3]),
    seed=st.integers(0, 100),
)
def test_standardise_round_trip_and_masks(arr, nan_frac, seed):
    rng = np.random.default_rng(seed)
    arr = arr.copy()
    # keep at least one finite value per channel
    drop = rng.random(arr.shape) < nan_frac
    drop[0, :, 0, 0] = False
    arr[drop] = np.nan
    st_ = fields.Standardizer.fit(arr)
    z = st_.transform(arr)
    np.testing.assert_allclose(st_.inverse(z), arr, rtol=1e-9, atol=1e-9 * (1 + np.nanmax(np.abs(arr))))
    assert np.array_equal(np.isnan(z), np.isnan(arr))
    restored = fields.Standardizer.from_dict(st_.to_dict())
    np.testing.assert_allclose(restored.transform(arr), z)
    filled, mask = fields.split_mask(arr)
    assert np.all(np.isfinite(filled)) and np.array_equal(mask == 1, np.isfinite(arr))
    both = fields.with_mask_channels(arr)
    assert both.shape[1] == 2 * arr.shape[1]


def test_standardised_channels_have_zero_mean_unit_std():
    ds = _dataset(5, 2, 8, 9, np.float64, True, 0)
    arr, _ = fields.to_array(ds, dtype=np.float64)
    z = fields.Standardizer.fit(arr).transform(arr)
    np.testing.assert_allclose(np.nanmean(z, axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(np.nanstd(z, axis=(0, 2, 3)), 1, atol=1e-12)


def test_all_nan_channel_is_refused():
    arr = np.full((2, 1, 3, 3), np.nan)
    with pytest.raises(DataValidationError, match="all-NaN"):
        fields.Standardizer.fit(arr)


def test_fingerprint_depends_on_grid_and_variables_not_time():
    ds = make_state_dataset()
    fp = fields.grid_fingerprint(ds)
    assert fp == fields.grid_fingerprint(ds.isel(time=slice(0, 2)))
    assert fp != fields.grid_fingerprint(ds.isel(x=slice(0, 7)))
    assert fp != fields.grid_fingerprint(ds.assign_coords(x=ds.x * 2))
    assert fp != fields.grid_fingerprint(ds, variables=["ssh"])
    fields.check_fingerprint(fp, ds, ["psi", "ssh"], "data.nc")
    with pytest.raises(GridMismatchError, match="data.nc"):
        fields.check_fingerprint(fp, ds.isel(y=slice(0, 5)), ["psi", "ssh"], "data.nc")


def test_analysis_dataset_layout():
    ds = make_state_dataset(nt=3)
    arr, layout = fields.to_array(ds)
    rng = np.random.default_rng(0)
    members = arr[:, None] + rng.normal(size=(3, 5, *arr.shape[1:]))
    out = fields.analysis_dataset(members, layout, ds, ds.time.values, attrs={"seconds_per_analysis": 0.5})
    assert set(out.data_vars) == {"ssh", "ssh_mean", "ssh_spread", "psi", "psi_mean", "psi_spread"}
    assert out.psi.dims == ("time", "member", "layer", "y", "x")
    np.testing.assert_allclose(out.ssh_mean.values, members[:, :, layout.channels.index(("ssh", None))].mean(1), rtol=1e-6)
    psi_idx = [layout.channels.index(("psi", k)) for k in (0, 1)]
    np.testing.assert_allclose(out.psi_spread.values, members[:, :, psi_idx].std(1, ddof=1), rtol=1e-5)
    assert "lat" in out.coords and out.attrs["seconds_per_analysis"] == 0.5


def test_encoder_inputs_standardise_then_fill_and_mask():
    rng = np.random.default_rng(0)
    arr = rng.normal(3.0, 2.0, size=(4, 2, 5, 6))
    arr[0, 1, 2, 3] = np.nan
    norm = fields.Standardizer.fit(arr)
    s = fields.encoder_state_input(arr, norm)
    assert s.dtype == np.float32 and s.shape == arr.shape and s[0, 1, 2, 3] == 0.0  # land -> the channel mean
    np.testing.assert_allclose(s[1], norm.transform(arr)[1], rtol=1e-6)
    o = fields.encoder_obs_input(arr, norm)
    assert o.dtype == np.float32 and o.shape == (4, 4, 5, 6)
    np.testing.assert_array_equal(o[:, :2], s)  # values as the state side sees them ...
    np.testing.assert_array_equal(o[:, 2:], np.isfinite(arr).astype(np.float32))  # ... then the masks
    np.testing.assert_array_equal(fields.encoder_obs_input(arr), fields.with_mask_channels(arr.astype(np.float32)))
    from oceanda import pairs

    assert pairs.encoder_obs_input is fields.encoder_obs_input  # the former home still works
