"""Datasets <-> arrays/tensors without losing coordinates or attributes.

Gridded fields become arrays ``[sample, channel, y, x]``: each variable -- and each level of a
variable with a ``layer``/``depth`` dimension -- is one channel. NaN (land, unobserved) is kept in
the values and can be split off as a separate 0/1 mask channel for encoders. Standardisation
statistics are stored (plain JSON-able dicts) so training and inference use the same ones, and a
grid fingerprint lets a model refuse data on another grid.

The encoder input is defined here, once, for training and for the sampler alike:
:func:`encoder_state_input` (standardised, land set to 0) and :func:`encoder_obs_input`
(standardised values with 0 in gaps, then their 0/1 masks).
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import xarray as xr

from oceanda.errors import DataValidationError, GridMismatchError

LEVEL_DIMS = ("layer", "depth")
SPATIAL_PAIRS = (("y", "x"), ("lat", "lon"))


def source_of(ds: xr.Dataset | xr.DataArray, source: str | None = None) -> str | None:
    """What to call ``ds`` in errors: ``source`` if given, else the file(s) it was opened from (None if unknown).

    Why: arrays reach this module far from the file they came from; a Dataset opened by
    :mod:`oceanda.io` keeps its files in ``encoding["oceanda_sources"]`` through selections.
    """
    if source:
        return str(source)
    files = ds.encoding.get("oceanda_sources") or ([ds.encoding["source"]] if ds.encoding.get("source") else [])
    return " + ".join(map(str, files)) if files else None


def _where(ds: xr.Dataset | xr.DataArray, source: str | None = None) -> str:
    """``"FILE: "`` for an error message (empty when the file is unknown)."""
    src = source_of(ds, source)
    return f"{src}: " if src else ""


def spatial_dims(ds: xr.Dataset | xr.DataArray, source: str | None = None) -> tuple[str, str]:
    """The (row, column) dimension names of a gridded Dataset: ('y', 'x') or ('lat', 'lon').

    Parameters
    ----------
    ds : a Dataset or DataArray
    source : what to call it in the error (default: the file it was opened from, when known)

    Returns
    -------
    tuple of str
        The two spatial dimension names.
    """
    for pair in SPATIAL_PAIRS:
        if all(d in ds.dims for d in pair):
            return pair
    dims = tuple(map(str, ds.dims))
    if isinstance(ds, xr.DataArray):
        what = f"variable '{ds.name}' has dims {dims}" if ds.name is not None else f"dims {dims}"
    else:
        what = f"dims {dims} of variables {sorted(map(str, ds.data_vars))}"
    raise DataValidationError(f"{_where(ds, source)}no spatial dimensions ({what}); expected (y, x) or (lat, lon)")


def _check_field_dims(da: xr.DataArray, name: str, spatial: tuple[str, str], level: str | None,
                      where: str) -> None:
    """Refuse a variable that lacks the grid's spatial dims (e.g. a time series among fields), or its level dim."""
    missing = [d for d in (*spatial, *([level] if level else [])) if d not in da.dims]
    if missing:
        raise DataValidationError(f"{where}variable '{name}' has dims {tuple(map(str, da.dims))}, lacking {missing}; "
                                  f"expected a gridded field ({', '.join(spatial)}) like the other variables")


@dataclass
class FieldLayout:
    """How channels map back to variables and levels; enough to rebuild a Dataset."""

    variables: list[str]
    channels: list[tuple[str, int | None]]  # (variable, level index or None)
    level_dim: str | None
    spatial: tuple[str, str]
    sample_dim: str
    attrs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (stored in checkpoints as ``extra.layout``)."""
        return {
            "variables": self.variables,
            "channels": [[v, lev] for v, lev in self.channels],
            "level_dim": self.level_dim,
            "spatial": list(self.spatial),
            "sample_dim": self.sample_dim,
            "attrs": self.attrs,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FieldLayout":
        """Rebuild from :meth:`to_dict` output.

        Parameters
        ----------
        d : a dict from :meth:`to_dict`

        Returns
        -------
        FieldLayout
        """
        return cls(
            variables=list(d["variables"]),
            channels=[(v, lev) for v, lev in d["channels"]],
            level_dim=d["level_dim"],
            spatial=tuple(d["spatial"]),  # type: ignore[arg-type]
            sample_dim=d["sample_dim"],
            attrs=dict(d.get("attrs", {})),
        )

    @property
    def n_channels(self) -> int:
        """The number of channels."""
        return len(self.channels)

    def channels_of(self, variables: Sequence[str]) -> list[int]:
        """Indices of the channels (every level) of ``variables``, in channel order.

        Parameters
        ----------
        variables : variable names

        Returns
        -------
        list of int
        """
        return [i for i, (v, _) in enumerate(self.channels) if v in variables]


def _attrs_jsonable(attrs: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in attrs.items():
        if isinstance(v, (str, int, float, bool)):
            out[k] = v
        elif isinstance(v, np.generic):
            out[k] = v.item()
    return out


def layout_of(ds: xr.Dataset, variables: Sequence[str] | None = None, sample_dim: str = "time",
              source: str | None = None) -> FieldLayout:
    """Describe the channels of ``variables`` in ``ds``.

    Parameters
    ----------
    ds : a gridded Dataset
    variables : the variables (default: every data variable with ``sample_dim``, except ``*_error``)
    sample_dim : the sample dimension
    source : what to call ``ds`` in errors (default: the file it was opened from, when known)

    Returns
    -------
    FieldLayout
        One channel per variable, or per level of a variable with a ``layer``/``depth`` dimension.
    """
    if variables is None:
        variables = [str(v) for v in ds.data_vars if not str(v).endswith("_error") and sample_dim in ds[v].dims]
    where = _where(ds, source)
    if not variables:
        raise DataValidationError(f"{where}no gridded variables with dimension '{sample_dim}' to stack")
    sp = spatial_dims(ds, source)
    level_dim = next((d for d in LEVEL_DIMS if d in ds.dims), None)
    channels: list[tuple[str, int | None]] = []
    for v in variables:
        if v not in ds:
            raise DataValidationError(f"{where}missing variable '{v}'; expected one of {sorted(map(str, ds.data_vars))}")
        da = ds[v]
        allowed = {sample_dim, *sp, *( [level_dim] if level_dim else [])}
        extra = [d for d in da.dims if d not in allowed]
        if extra:
            raise DataValidationError(f"{where}variable '{v}' has dimension(s) {extra}; expected only {sorted(allowed)}")
        _check_field_dims(da, v, sp, None, where)
        if level_dim and level_dim in da.dims:
            channels.extend((v, i) for i in range(da.sizes[level_dim]))
        else:
            channels.append((v, None))
    return FieldLayout(
        variables=list(variables),
        channels=channels,
        level_dim=level_dim,
        spatial=sp,
        sample_dim=sample_dim,
        attrs={v: _attrs_jsonable(dict(ds[v].attrs)) for v in variables},
    )


def to_array(ds: xr.Dataset, layout: FieldLayout | None = None, dtype: Any = np.float32,
             source: str | None = None) -> tuple[np.ndarray, FieldLayout]:
    """Stack ``ds`` into ``[sample, channel, y, x]`` (NaN kept). Loads the data.

    Parameters
    ----------
    ds : a gridded Dataset
    layout : which channels (default: :func:`layout_of` ``ds``)
    dtype : the array's dtype
    source : what to call ``ds`` in errors (default: the file it was opened from, when known)

    Returns
    -------
    tuple
        ``(array, layout)``.
    """
    if layout is None:
        layout = layout_of(ds, source=source)
    where = _where(ds, source)
    planes = []
    for v, lev in layout.channels:
        if v not in ds:
            raise DataValidationError(f"{where}missing variable '{v}'; expected one of {sorted(map(str, ds.data_vars))}")
        da = ds[v]
        _check_field_dims(da, v, layout.spatial, layout.level_dim if lev is not None else None, where)
        if lev is not None:
            da = da.isel({layout.level_dim: lev})
        if layout.sample_dim not in da.dims:
            da = da.expand_dims(layout.sample_dim)
        planes.append(np.asarray(da.transpose(layout.sample_dim, *layout.spatial).values, dtype=dtype))
    return np.stack(planes, axis=1), layout


def from_array(array: np.ndarray, layout: FieldLayout, like: xr.Dataset, sample_coord: Any = None,
               sample_dim: str | None = None) -> xr.Dataset:
    """Rebuild a Dataset from ``[sample, channel, y, x]`` using the grid coordinates of ``like``.

    ``sample_coord`` gives the values of the sample dimension (default: those of ``like`` when the
    sizes agree, else 0..N-1). Attributes stored in ``layout`` are restored.

    Parameters
    ----------
    array : ``[sample, channel, y, x]``
    layout : the channels' variables and levels
    like : a Dataset on the grid (its coordinates are copied)
    sample_coord : values of the sample dimension
    sample_dim : its name (default: ``layout.sample_dim``)

    Returns
    -------
    xarray.Dataset
        One variable per layout variable.
    """
    array = np.asarray(array)
    if array.ndim != 4 or array.shape[1] != layout.n_channels:
        raise DataValidationError(
            f"array of shape {array.shape}; expected [sample, {layout.n_channels} channels, y, x]"
        )
    sdim = sample_dim or layout.sample_dim
    ydim, xdim = layout.spatial
    n = array.shape[0]
    if sample_coord is None and sdim in like.coords and like.sizes.get(sdim) == n:
        sample_coord = like[sdim].values
    data_vars = {}
    for v in layout.variables:
        idx = [i for i, (name, _) in enumerate(layout.channels) if name == v]
        levels = [layout.channels[i][1] for i in idx]
        if levels == [None]:
            data = array[:, idx[0]]
            dims = (sdim, ydim, xdim)
        else:
            data = array[:, idx]
            dims = (sdim, layout.level_dim, ydim, xdim)
        data_vars[v] = xr.DataArray(data, dims=dims, attrs=dict(layout.attrs.get(v, {})))
    coords = {}
    for name, c in like.coords.items():
        if set(c.dims) <= {ydim, xdim, *( [layout.level_dim] if layout.level_dim else [])}:
            coords[name] = c
    if sample_coord is not None:
        coords[sdim] = (sdim, np.asarray(sample_coord))
    ds = xr.Dataset(data_vars, coords=coords)
    if sdim in like.coords and sdim in ds.coords:
        ds[sdim].attrs.update(like[sdim].attrs)
    return ds


def split_mask(array: np.ndarray, fill: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Split NaN gaps off an array.

    Parameters
    ----------
    array : any float array, NaN where unobserved
    fill : the value written into the gaps

    Returns
    -------
    tuple of numpy.ndarray
        ``(values with NaN replaced by fill, mask)``; mask is 1 where finite, 0 where NaN, both in
        ``array``'s dtype.
    """
    mask = np.isfinite(array)
    return np.where(mask, array, fill).astype(array.dtype, copy=False), mask.astype(array.dtype)


def with_mask_channels(array: np.ndarray, fill: float = 0.0) -> np.ndarray:
    """Filled values, then their 0/1 masks, as channels.

    Parameters
    ----------
    array : ``[N, C, Y, X]``, NaN where unobserved
    fill : the value written into the gaps

    Returns
    -------
    numpy.ndarray
        ``[N, 2C, Y, X]`` in ``array``'s dtype.
    """
    values, mask = split_mask(array, fill)
    return np.concatenate([values, mask], axis=1)


def encoder_state_input(states: np.ndarray, norm: Standardizer | None = None) -> np.ndarray:
    """What a state encoder sees: standardised values, NaN (land) set to 0 (the channel mean).

    Parameters
    ----------
    states : ``[N, C, ...]`` in physical units
    norm : the model's state statistics (``None``: values are used as given)

    Returns
    -------
    numpy.ndarray
        float32, the shape of ``states``.
    """
    x = np.asarray(states, dtype=np.float32)
    if norm is not None:
        x = norm.transform(x).astype(np.float32, copy=False)  # float32 in, float32 out: no copy
    return np.nan_to_num(x, nan=0.0).astype(np.float32, copy=False)


def encoder_obs_input(obs: np.ndarray, norm: Standardizer | None = None, errors: np.ndarray | None = None) -> np.ndarray:
    """What an observation encoder sees: standardised values (0 in gaps), their 0/1 masks[, their errors].

    Parameters
    ----------
    obs : ``[N, C, ...]`` in physical units, NaN unobserved (a multi-day window stacks its days as
        channels, see ``pairs.stack_obs_window``)
    norm : the model's observation statistics, one per channel of ``obs`` (``None``: as given)
    errors : observation error std ``[N, C, ...]`` in physical units (models with an error channel):
        appended divided by the channel std, 0 where unobserved -- so one model serves any noise level

    Returns
    -------
    numpy.ndarray
        float32 ``[N, 2C, ...]``, or ``[N, 3C, ...]`` with ``errors``.
    """
    x = np.asarray(obs, dtype=np.float32)
    if norm is not None:
        x = norm.transform(x).astype(np.float32, copy=False)
    out = with_mask_channels(x).astype(np.float32, copy=False)
    if errors is None:
        return out
    e = np.asarray(errors, dtype=np.float32)
    if norm is not None:
        e = e / np.asarray(norm.std, np.float32).reshape((1, -1) + (1,) * (e.ndim - 2))
    e = np.where(np.isfinite(x) & np.isfinite(e), e, np.float32(0.0)).astype(np.float32, copy=False)
    return np.concatenate([out, e], axis=1)


@dataclass
class Standardizer:
    """Per-channel mean and standard deviation (NaN-aware), stored and reused.

    Statistics are per channel (variable and level), pooled over samples and grid points.
    """

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, array: np.ndarray, min_std: float = 1e-12) -> "Standardizer":
        """Fit per-channel statistics.

        Parameters
        ----------
        array : ``[sample, channel, ...]``, NaN ignored
        min_std : a smaller standard deviation (a constant channel) is replaced by 1

        Returns
        -------
        Standardizer
            The statistics; an all-NaN channel is refused.
        """
        a = np.asarray(array, dtype=np.float64)
        axes = tuple(i for i in range(a.ndim) if i != 1)
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(a, axis=axes)
            std = np.nanstd(a, axis=axes)
        if not np.all(np.isfinite(mean)):
            bad = int(np.flatnonzero(~np.isfinite(mean))[0])
            raise DataValidationError(f"channel {bad} has no finite value; cannot standardise an all-NaN field")
        std = np.where(std > min_std, std, 1.0)
        return cls(mean=mean, std=std)

    def _shape(self, ndim: int) -> tuple[int, ...]:
        return (1, -1) + (1,) * (ndim - 2)

    def transform(self, array: np.ndarray) -> np.ndarray:
        """``(array - mean) / std`` per channel (axis 1), in ``array``'s float dtype.

        Parameters
        ----------
        array : ``[sample, channel, ...]`` in physical units

        Returns
        -------
        numpy.ndarray
            Standardised values, NaN kept.
        """
        a = np.asarray(array)
        out = (a - self.mean.reshape(self._shape(a.ndim))) / self.std.reshape(self._shape(a.ndim))
        return out.astype(a.dtype if np.issubdtype(a.dtype, np.floating) else np.float64, copy=False)

    def inverse(self, array: np.ndarray) -> np.ndarray:
        """``array * std + mean`` per channel: the inverse of :meth:`transform`.

        Parameters
        ----------
        array : ``[sample, channel, ...]`` standardised values

        Returns
        -------
        numpy.ndarray
            Physical values.
        """
        a = np.asarray(array)
        out = a * self.std.reshape(self._shape(a.ndim)) + self.mean.reshape(self._shape(a.ndim))
        return out.astype(a.dtype if np.issubdtype(a.dtype, np.floating) else np.float64, copy=False)

    def to_dict(self) -> dict[str, list[float]]:
        """JSON-able ``{"mean": [...], "std": [...]}`` (stored in checkpoints)."""
        return {"mean": [float(x) for x in self.mean], "std": [float(x) for x in self.std]}

    @classmethod
    def from_dict(cls, d: dict[str, Sequence[float]]) -> "Standardizer":
        """Rebuild from :meth:`to_dict` output.

        Parameters
        ----------
        d : a dict from :meth:`to_dict`

        Returns
        -------
        Standardizer
        """
        return cls(mean=np.asarray(d["mean"], dtype=np.float64), std=np.asarray(d["std"], dtype=np.float64))


def grid_fingerprint(ds: xr.Dataset, variables: Sequence[str] | None = None) -> str:
    """A short hash of the grid: spatial/level dimensions, their coordinates and the variable names.

    Time and member are excluded, so states and observations on one grid share a fingerprint.

    Parameters
    ----------
    ds : a gridded Dataset
    variables : the variable names hashed (default: every data variable except ``*_error``)

    Returns
    -------
    str
        16 hex digits.
    """
    if variables is None:
        variables = sorted(str(v) for v in ds.data_vars if not str(v).endswith("_error"))
    h = hashlib.sha256()
    sp = spatial_dims(ds)
    dims = [d for d in (*LEVEL_DIMS, *sp) if d in ds.dims]
    for d in dims:
        h.update(f"{d}={ds.sizes[d]};".encode())
        if d in ds.coords:
            h.update(np.round(np.asarray(ds[d].values, dtype=np.float64), 6).astype(np.float32).tobytes())
    for c in ("lat", "lon"):
        if c in ds.coords and c not in dims:
            h.update(np.round(np.asarray(ds[c].values, dtype=np.float64), 6).astype(np.float32).tobytes())
    h.update(("vars=" + ",".join(sorted(variables))).encode())
    return h.hexdigest()[:16]


def check_fingerprint(expected: str, ds: xr.Dataset, variables: Sequence[str], what: str) -> None:
    """Raise :class:`GridMismatchError` if ``ds`` is not on the grid a model was trained on.

    Parameters
    ----------
    expected : the model's fingerprint
    ds : the data
    variables : the variables the model encodes
    what : the data's name in the error (a file)
    """
    got = grid_fingerprint(ds, variables)
    if got != expected:
        raise GridMismatchError(
            f"{what}: grid fingerprint {got} differs from the model's {expected}; the model was trained on another "
            f"grid or other variables ({list(variables)}); retrain it on this grid"
        )



def moments_dataset(mean: np.ndarray, spread: np.ndarray, layout: FieldLayout, like: xr.Dataset,
                    times: Any) -> xr.Dataset:
    """``<var>_mean`` and ``<var>_spread`` (``[time, ...]`` arrays) with the variables' attributes.

    Why one place: every analysis writer (in memory or streamed) must name and describe them alike.
    """
    out = xr.Dataset()
    for name, arr in (("mean", mean), ("spread", spread)):
        ds = from_array(arr, layout, like, sample_coord=np.asarray(times), sample_dim="time")
        for v in layout.variables:
            da = ds[v]
            da.attrs = dict(layout.attrs.get(v, {}))
            da.attrs["long_name"] = f"analysis ensemble {'mean' if name == 'mean' else 'standard deviation'} of {v}"
            da.attrs.pop("standard_name", None) if name == "spread" else None
            out[f"{v}_{name}"] = da
    return out

def analysis_dataset(
    members: np.ndarray,
    layout: FieldLayout,
    like: xr.Dataset,
    times: Any,
    *,
    attrs: dict[str, Any] | None = None,
    keep_members: bool = True,
    moments: tuple[np.ndarray, np.ndarray] | None = None,
) -> xr.Dataset:
    """The common analysis layout written by ``oceanda assimilate`` and ``oceanda enkf``.

    ``members`` is ``[time, member, channel, y, x]`` in physical units. For every state variable
    ``v`` the result holds ``v_mean`` and ``v_spread`` (ensemble standard deviation, ddof=1) with dims
    ``(time, [level,] y, x)`` and, if ``keep_members``, the ensemble ``v`` with dims
    ``(time, member, [level,] y, x)``. Grid coordinates come from ``like``.

    Parameters
    ----------
    members : ``[time, member, channel, y, x]`` physical units
    layout : the channels' variables and levels
    like : a Dataset on the grid
    times : the analysis times
    attrs : global attributes of the result
    keep_members : also store the ensemble
    moments : ``(mean, spread)`` ``[time, channel, y, x]`` when ``members`` are a subset of the ensemble
        (default: the members' own)

    Returns
    -------
    xarray.Dataset
        The analysis Dataset.
    """
    members = np.asarray(members)
    if members.ndim != 5 or members.shape[2] != layout.n_channels:
        raise DataValidationError(
            f"ensemble of shape {members.shape}; expected [time, member, {layout.n_channels} channels, y, x]"
        )
    nt, m = members.shape[:2]
    if moments is not None:
        mean, spread = moments
    else:
        mean = members.mean(axis=1)
        spread = members.std(axis=1, ddof=1) if m > 1 else np.zeros_like(mean)
    out = moments_dataset(mean, spread, layout, like, times)
    if keep_members:
        flat = members.reshape(nt * m, *members.shape[2:])
        ds = from_array(flat, layout, like, sample_coord=np.arange(nt * m), sample_dim="sample")
        for v in layout.variables:
            da = ds[v]
            full = da.values.reshape(nt, m, *da.shape[1:])
            out[v] = xr.DataArray(full, dims=("time", "member", *da.dims[1:]), attrs=dict(layout.attrs.get(v, {})))
            out[v].attrs["long_name"] = f"analysis ensemble of {v}"
        out = out.assign_coords(member=np.arange(m))
    out = out.assign_coords({c: v for c, v in like.coords.items() if c not in out.coords and set(v.dims) <= set(out.dims) and "time" not in v.dims})
    if "time" in like.coords:
        out["time"].attrs.update(like["time"].attrs)
    out.attrs.update(attrs or {})
    return out
