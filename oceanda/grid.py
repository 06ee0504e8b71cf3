"""Grid geometry of a gridded Dataset: axes, 1-D coordinates, spacing, periods, points, lat/lon.

Why one module: localisation (kalman), windows (analysis) and the observation generators all need
the same facts about a grid; each used to read them from the Dataset in its own way. Everything here
works from a Dataset (or DataArray) with a (row, column) pair of spatial dims, see
:func:`oceanda.fields.spatial_dims`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from oceanda.fields import spatial_dims


def axis_values(like: Any, dim: str) -> np.ndarray:
    """The 1-D coordinate of ``dim`` as float64, or ``0, 1, 2, ...`` when the dim has no coordinate.

    Parameters
    ----------
    like : a Dataset or DataArray
    dim : the dim

    Returns
    -------
    numpy.ndarray ``[size]`` (float64)
    """
    if dim in like.coords and like[dim].ndim == 1:
        return np.asarray(like[dim].values, dtype=np.float64)
    return np.arange(like.sizes[dim], dtype=np.float64)


def coordinates(like: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(y, x)``: the 1-D row and column coordinates (their units; km on the testbeds).

    Parameters
    ----------
    like : a gridded Dataset or DataArray

    Returns
    -------
    tuple of numpy.ndarray ``(y, x)``
    """
    ydim, xdim = spatial_dims(like)
    return axis_values(like, ydim), axis_values(like, xdim)


def spacing(values: np.ndarray) -> float:
    """Median spacing of a 1-D coordinate (1 for a single point).

    Parameters
    ----------
    values : the 1-D coordinate values

    Returns
    -------
    float
    """
    return float(np.median(np.abs(np.diff(values)))) if len(values) > 1 else 1.0


def yx_spacing(like: Any) -> tuple[float, float]:
    """``(dy, dx)``: the spacing of 1-D ``y`` / ``x`` coordinates (km on the testbeds), 1 (one cell) where absent.

    What the observation generators measure track widths and gaps with; a lat/lon grid has no ``y``/``x``
    and is measured in cells (until degrees are converted to km).

    Parameters
    ----------
    like : a gridded Dataset or DataArray

    Returns
    -------
    tuple of two floats
    """
    return tuple(spacing(np.asarray(like[c].values, dtype=np.float64)) if c in like.coords and like[c].ndim == 1
                 else 1.0 for c in ("y", "x"))  # type: ignore[return-value]


def shape(like: Any) -> tuple[int, int]:
    """``(ny, nx)``: the sizes of the spatial dims.

    Parameters
    ----------
    like : a gridded Dataset or DataArray

    Returns
    -------
    tuple of int ``(ny, nx)``
    """
    ydim, xdim = spatial_dims(like)
    return int(like.sizes[ydim]), int(like.sizes[xdim])


def periods(like: Any) -> tuple[float, float]:
    """Periods of a doubly periodic grid: ``size * spacing`` along y and x.

    Parameters
    ----------
    like : a gridded Dataset or DataArray

    Returns
    -------
    tuple of float ``(period_y, period_x)``
    """
    y, x = coordinates(like)
    return len(y) * spacing(y), len(x) * spacing(x)


def points(like: Any, periodic: bool = False) -> tuple[np.ndarray, tuple[float, float] | None]:
    """Horizontal grid points ``[ny * nx, 2]`` (``y``, ``x``, C order) and the periods (None if not periodic).

    Parameters
    ----------
    like : a gridded Dataset or DataArray
    periodic : also return the periods

    Returns
    -------
    (points, periods): numpy.ndarray ``[ny * nx, 2]`` and a tuple of float, or None
    """
    y, x = coordinates(like)
    yy, xx = np.meshgrid(y, x, indexing="ij")
    return np.c_[yy.ravel(), xx.ravel()], (periods(like) if periodic else None)


def lat_lon(like: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """2-D ``(lat, lon)`` in degrees on the (row, column) grid, or None when the grid has neither.

    Parameters
    ----------
    like : a gridded Dataset or DataArray

    Returns
    -------
    tuple of numpy.ndarray ``(lat, lon)``, each ``[ny, nx]``, or None
    """
    ydim, xdim = spatial_dims(like)
    if "lat" in like.coords and "lon" in like.coords and like["lat"].ndim == 2:
        return like["lat"].transpose(ydim, xdim).values, like["lon"].transpose(ydim, xdim).values
    if (ydim, xdim) == ("lat", "lon"):
        lat, lon = np.meshgrid(axis_values(like, ydim), axis_values(like, xdim), indexing="ij")
        return lat, lon
    return None


def times(like: Any, dim: str = "time") -> np.ndarray:
    """The values of the time coordinate, or ``0, 1, ...`` when there is none.

    Parameters
    ----------
    like : a Dataset or DataArray
    dim : the time dim

    Returns
    -------
    numpy.ndarray
    """
    if dim in like.coords:
        return like[dim].values
    return np.arange(like.sizes.get(dim, 1))


#: Earth radius (km) of every great-circle distance in oceanda (the layout contract).
EARTH_RADIUS_KM = 6371.0


def great_circle_km(lat1: Any, lon1: Any, lat2: Any, lon2: Any) -> np.ndarray:
    """Great-circle distance (km, haversine) between points given in degrees (broadcast).

    Parameters
    ----------
    lat1, lon1, lat2, lon2 : degrees

    Returns
    -------
    numpy.ndarray
    """
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp, dl = p2 - p1, np.radians(np.asarray(lon2) - np.asarray(lon1))
    h = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


def km_spacing(like: Any) -> tuple[float, float]:
    """``(dy, dx)`` in km between neighbouring rows / columns, on any grid of the canonical layout.

    Why: observation generators take track spacing, swath width and cloud size in km whatever the grid.
    1-D ``y``/``x`` are km already; a (lat, lon) grid or 2-D ``lat``/``lon`` gives the median great-circle
    distance between neighbouring cells; a grid with neither is one km per cell.

    Parameters
    ----------
    like : a gridded Dataset or DataArray

    Returns
    -------
    tuple of two floats
    """
    ydim, xdim = spatial_dims(like)
    if (ydim, xdim) == ("y", "x") and all(c in like.coords and like[c].ndim == 1 for c in ("y", "x")):
        return yx_spacing(like)
    ll = lat_lon(like)
    if ll is None:
        return 1.0, 1.0
    lat, lon = (np.asarray(a, dtype=np.float64) for a in ll)
    dy = great_circle_km(lat[1:, :], lon[1:, :], lat[:-1, :], lon[:-1, :]) if lat.shape[0] > 1 else np.ones(1)
    dx = great_circle_km(lat[:, 1:], lon[:, 1:], lat[:, :-1], lon[:, :-1]) if lat.shape[1] > 1 else np.ones(1)
    return float(np.median(dy)), float(np.median(dx))


def time_days(values: Any) -> np.ndarray:
    """Float64 days since 1970-01-01 (in the values' own calendar): the one way to do arithmetic on times.

    Why: times are datetime64 for standard calendars and cftime objects for ``360_day``, ``noleap``,
    ``all_leap``, ``julian``; subtracting either kind directly breaks on the other. Numbers pass
    through unchanged (already days or indices); NaT / None become NaN.

    Parameters
    ----------
    values : numbers, datetime64 values, cftime datetimes (array, list, index, DataArray or scalar)

    Returns
    -------
    numpy.ndarray of float64 (0-d for a scalar)
    """
    arr = np.asarray(getattr(values, "values", values))
    if np.issubdtype(arr.dtype, np.number) or arr.dtype == bool:
        return arr.astype(np.float64)
    if np.issubdtype(arr.dtype, np.datetime64):
        ns = arr.astype("datetime64[ns]")
        out = (ns - np.datetime64("1970-01-01T00:00:00", "ns")) / np.timedelta64(1, "D")
        return np.where(np.isnat(ns), np.nan, out).astype(np.float64)
    import cftime

    flat = arr.ravel()
    out = np.full(flat.shape, np.nan)
    ok = np.array([isinstance(v, cftime.datetime) for v in flat], dtype=bool)
    if ok.any():
        calendar = flat[ok][0].calendar
        out[ok] = cftime.date2num(list(flat[ok]), "days since 1970-01-01 00:00:00", calendar=calendar)
    odd = [v for v in flat[~ok] if not (v is None or (isinstance(v, float) and np.isnan(v))
                                         or (isinstance(v, np.datetime64) and np.isnat(v)))]
    if odd:
        raise TypeError(f"time_days: {odd[0]!r} is not a time; expected numbers, datetime64 or cftime values")
    return out.reshape(arr.shape)


def calendar_of(values: Any) -> str | None:
    """The calendar of times: ``'standard'`` for datetime64 (and cftime standard/gregorian/proleptic_gregorian),
    the cftime calendar otherwise (``'360_day'``, ``'noleap'``, ...), None for numbers or no values.

    Why: days of two calendars are not comparable (2001-03-01 is day 60 of one and 61 of another), so
    two time axes must share a calendar before they are matched.

    Parameters
    ----------
    values : times (array, index, DataArray or scalar)

    Returns
    -------
    str or None
    """
    arr = np.asarray(getattr(values, "values", values))
    if np.issubdtype(arr.dtype, np.datetime64):
        return "standard"
    first = next((v for v in arr.ravel() if hasattr(v, "calendar")), None) if arr.dtype == object else None
    if first is None:
        return None
    cal = str(first.calendar).lower()
    return "standard" if cal in ("standard", "gregorian", "proleptic_gregorian") else cal


# ------------------------------------------------------------------------------------------------
# Points on a grid: the shared rules of superobbing (oceanda.superob) and the Kalman point operator
# ------------------------------------------------------------------------------------------------


def cell_edges(centres: np.ndarray) -> np.ndarray:
    """Cell bounds half-way between increasing centres (extended by half a cell at the ends).

    Parameters
    ----------
    centres : increasing 1-D cell centres

    Returns
    -------
    numpy.ndarray ``[size + 1]``
    """
    c = np.asarray(centres, dtype=np.float64)
    if c.size == 1:
        return np.array([c[0] - 0.5, c[0] + 0.5])
    mid = 0.5 * (c[1:] + c[:-1])
    return np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])


def shift_lon(lon: Any, lon0: float) -> np.ndarray:
    """Longitudes moved by whole turns into ``[lon0, lon0 + 360)``: any convention onto a grid's continuous lon.

    Parameters
    ----------
    lon : longitudes in degrees (0..360, -180..180, ...)
    lon0 : the western bound of the grid (its first cell edge)

    Returns
    -------
    numpy.ndarray
    """
    return lon0 + np.mod(np.asarray(lon, dtype=np.float64) - lon0, 360.0)


def global_lon(lon: np.ndarray) -> bool:
    """Whether a 1-D longitude axis closes the circle (a global grid, periodic in lon).

    Parameters
    ----------
    lon : the 1-D longitudes (degrees)

    Returns
    -------
    bool
    """
    lon = np.asarray(lon, dtype=np.float64)
    if lon.size < 2:
        return False
    d = spacing(lon)
    return abs(lon.size * d - 360.0) < 0.5 * d


def unit_vectors(lat: Any, lon: Any) -> np.ndarray:
    """3-D unit vectors ``[..., 3]`` of points given in degrees (chord distances for nearest-cell searches)."""
    la, lo = np.radians(lat), np.radians(lon)
    return np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], axis=-1)


def nearest_cells(lat2: np.ndarray, lon2: np.ndarray, plat: Any, plon: Any) -> tuple[np.ndarray, np.ndarray]:
    """Nearest cell ``(iy, ix)`` of points on a curvilinear grid ``lat2/lon2 [ny, nx]`` (-1 when off the grid).

    Nearest centre by ``scipy.spatial.cKDTree`` on unit vectors; off the grid when farther than 0.75 x that
    cell's largest great-circle distance to a neighbour.

    Parameters
    ----------
    lat2, lon2 : 2-D cell-centre latitude / longitude (degrees)
    plat, plon : the points (degrees, any longitude convention)

    Returns
    -------
    tuple of int64 arrays
    """
    from scipy.spatial import cKDTree

    lat2, lon2 = np.asarray(lat2, dtype=np.float64), np.asarray(lon2, dtype=np.float64)
    ny, nx = lat2.shape
    tree = cKDTree(unit_vectors(lat2.ravel(), lon2.ravel()))
    chord, idx = tree.query(unit_vectors(np.asarray(plat, float), np.asarray(plon, float)))
    dist = 2 * EARTH_RADIUS_KM * np.arcsin(np.clip(chord / 2, 0, 1))
    size = np.zeros((ny, nx))
    if ny > 1:
        d = great_circle_km(lat2[1:], lon2[1:], lat2[:-1], lon2[:-1])
        size[1:] = np.maximum(size[1:], d)
        size[:-1] = np.maximum(size[:-1], d)
    if nx > 1:
        d = great_circle_km(lat2[:, 1:], lon2[:, 1:], lat2[:, :-1], lon2[:, :-1])
        size[:, 1:] = np.maximum(size[:, 1:], d)
        size[:, :-1] = np.maximum(size[:, :-1], d)
    off = ~(dist <= 0.75 * size.ravel()[idx])
    iy, ix = np.divmod(idx, nx)
    return np.where(off, -1, iy).astype(np.int64), np.where(off, -1, ix).astype(np.int64)


def fractional_index(values: Any, centres: np.ndarray, period: float | None = None) -> np.ndarray:
    """Fractional index of ``values`` on a 1-D axis of cell centres: ``k + w`` between centres ``k`` and ``k + 1``.

    Why: bilinear observation operators weigh the two neighbouring centres by ``1 - w`` and ``w``.
    Non-periodic axes (any monotonic spacing): NaN outside the cells' bounds (:func:`cell_edges`), clipped
    to ``[0, size - 1]`` in the outer half cells. ``period`` (uniform periodic axes: a periodic box, a
    global longitude) wraps the result into ``[0, size)``.

    Parameters
    ----------
    values : positions in the axis' units
    centres : the monotonic 1-D cell centres
    period : the axis period (None = not periodic)

    Returns
    -------
    numpy.ndarray of float64 (NaN off the axis)
    """
    v = np.asarray(values, dtype=np.float64)
    c = np.asarray(centres, dtype=np.float64)
    n = c.size
    if period is not None and n > 1:
        step = (c[-1] - c[0]) / (n - 1)
        return np.mod((v - c[0]) / step, n)
    flip = n > 1 and c[-1] < c[0]
    cs = c[::-1] if flip else c
    e = cell_edges(cs)
    inside = (v >= e[0]) & (v <= e[-1])
    g = np.interp(v, cs, np.arange(n, dtype=np.float64)) if n > 1 else np.zeros(v.shape)
    g = (n - 1) - g if flip else g
    return np.where(inside, g, np.nan)


def corners(n: int, g: np.ndarray, periodic: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower / upper neighbour indices and the upper one's weight of fractional indices ``g`` on ``n`` cells.

    Parameters
    ----------
    n : cells along the axis
    g : fractional indices (finite)
    periodic : wrap at ``n``

    Returns
    -------
    ``(i0, i1, w)``: int64, int64, float64 arrays
    """
    g = np.asarray(g, dtype=np.float64)
    if n == 1:
        z = np.zeros(g.shape, dtype=np.int64)
        return z, z, np.zeros(g.shape)
    if periodic:
        g0 = np.floor(g).astype(np.int64)
        return g0 % n, (g0 + 1) % n, g - g0
    g = np.clip(g, 0, n - 1)
    g0 = np.minimum(np.floor(g).astype(np.int64), n - 2)
    return g0, g0 + 1, g - g0
