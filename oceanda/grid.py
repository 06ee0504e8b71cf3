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
