"""Maps and diagnostic figures; cartopy is pointed at shipped Natural Earth data, never the network.

Cartopy downloads Natural Earth shapefiles on first use. oceanda ships the 1:110m land and coastline
files and sets ``cartopy.config["pre_existing_data_dir"]`` to them before any map is drawn; tests turn
``cartopy.io.DownloadWarning`` into an error so a download attempt fails loudly.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import numpy as np

NATURAL_EARTH_DIR = Path(str(resources.files("oceanda") / "data" / "natural_earth"))


def configure_cartopy_offline() -> None:
    """Point cartopy at the shipped Natural Earth data (idempotent)."""
    import cartopy

    cartopy.config["pre_existing_data_dir"] = str(NATURAL_EARTH_DIR)
    # Anything not shipped would be downloaded into data_dir; keep that out of the user's home.
    cartopy.config.setdefault("data_dir", os.path.join(os.path.expanduser("~"), ".local", "share", "cartopy"))


def pyplot():
    """``matplotlib.pyplot``, on the Agg backend when there is no display (and none was chosen).

    Returns
    -------
    module
        ``matplotlib.pyplot``.
    """
    import matplotlib

    if not os.environ.get("MPLBACKEND") and not os.environ.get("DISPLAY"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def map_axes(fig: Any, position: Any = 111, extent: Sequence[float] | None = None):
    """A PlateCarree GeoAxes with shipped coastlines and land, gridlines labelled.

    Parameters
    ----------
    fig : a matplotlib Figure
    position : subplot position (e.g. ``111``, ``221``)
    extent : ``[lon0, lon1, lat0, lat1]`` in degrees (None: automatic)

    Returns
    -------
    cartopy GeoAxes
    """
    configure_cartopy_offline()
    import cartopy.crs as ccrs
    import cartopy.feature as cfeature

    ax = fig.add_subplot(position, projection=ccrs.PlateCarree())
    if extent is not None:
        ax.set_extent(extent, crs=ccrs.PlateCarree())
    ax.add_feature(cfeature.NaturalEarthFeature("physical", "land", "110m"), facecolor="0.85", edgecolor="none", zorder=2)
    ax.coastlines(resolution="110m", linewidth=0.6, zorder=3)
    gl = ax.gridlines(draw_labels=True, linewidth=0.3, color="0.5", alpha=0.6)
    gl.top_labels = gl.right_labels = False
    return ax


def plot_map(
    field: Any,
    lat: np.ndarray,
    lon: np.ndarray,
    *,
    ax: Any = None,
    title: str | None = None,
    cmap: str = "RdBu_r",
    vmin: float | None = None,
    vmax: float | None = None,
    points: tuple[np.ndarray, np.ndarray] | None = None,
    units: str = "",
    margin_deg: float = 4.0,
):
    """Draw a gridded field (2-D, on 2-D lat/lon) on a map with coastlines; optional observation points.

    Returns the GeoAxes. The extent is the grid's bounding box plus ``margin_deg`` so that the
    nearest coasts show.

    Parameters
    ----------
    field : 2-D values ``[ny, nx]``
    lat, lon : 2-D (or 1-D) coordinates in degrees
    ax : GeoAxes to draw on (None: a new figure)
    title : panel title
    cmap : colormap name
    vmin, vmax : colour limits (default: symmetric about 0 for diverging colormaps)
    points : observation locations ``(lat, lon)``
    units : colour-bar label
    margin_deg : margin around the grid, in degrees

    Returns
    -------
    cartopy GeoAxes
    """
    import cartopy.crs as ccrs

    plt = pyplot()
    field = np.asarray(field, dtype=float)
    lat, lon = np.asarray(lat, float), np.asarray(lon, float)
    if lat.ndim == 1 and lon.ndim == 1:
        lon, lat = np.meshgrid(lon, lat)
    extent = [lon.min() - margin_deg, lon.max() + margin_deg, lat.min() - margin_deg, lat.max() + margin_deg]
    if ax is None:
        fig = plt.figure(figsize=(6, 4.8))
        ax = map_axes(fig, extent=extent)
    if vmin is None and vmax is None and cmap in ("RdBu_r", "coolwarm", "seismic"):
        lim = np.nanmax(np.abs(field)) if np.isfinite(field).any() else 1.0
        vmin, vmax = -lim, lim
    mesh = ax.pcolormesh(lon, lat, field, transform=ccrs.PlateCarree(), cmap=cmap, vmin=vmin, vmax=vmax,
                         shading="auto", zorder=1)
    if points is not None:
        plat, plon = points
        ax.scatter(plon, plat, s=1.5, c="k", transform=ccrs.PlateCarree(), zorder=4, label="observations")
    cb = ax.figure.colorbar(mesh, ax=ax, shrink=0.8, pad=0.08)
    if units:
        cb.set_label(units)
    if title:
        ax.set_title(title, fontsize=9)
    return ax


# ----------------------------------------------------------------------------------------------
# Diagnostics figures of `oceanda evaluate` (each returns the Figure; saving goes through oceanda.io)
# ----------------------------------------------------------------------------------------------


def _limits(field: np.ndarray, symmetric: bool) -> tuple[float, float]:
    f = np.asarray(field, dtype=float)
    if not np.isfinite(f).any():
        return (-1.0, 1.0) if symmetric else (0.0, 1.0)
    if symmetric:
        lim = float(np.nanmax(np.abs(f))) or 1.0
        return -lim, lim
    lo, hi = float(np.nanmin(f)), float(np.nanmax(f))
    return (lo, hi) if hi > lo else (lo - 1.0, hi + 1.0)


def plot_analysis_maps(
    truth: Any,
    mean: Any,
    spread: Any | None,
    lat: np.ndarray,
    lon: np.ndarray,
    *,
    points: tuple[np.ndarray, np.ndarray] | None = None,
    title: str = "",
    units: str = "",
    margin_deg: float = 4.0,
):
    """Truth, analysis mean (same colour scale), error (mean - truth) and spread on four maps.

    Observation locations ``points = (lat, lon)`` are drawn on the truth and mean panels.

    Parameters
    ----------
    truth, mean : 2-D fields
    spread : 2-D ensemble standard deviation, or None (deterministic analysis)
    lat, lon : coordinates in degrees
    points : observation locations ``(lat, lon)``
    title : figure title
    units : colour-bar label
    margin_deg : margin around the grid, in degrees

    Returns
    -------
    matplotlib Figure
    """
    plt = pyplot()
    truth, mean = np.asarray(truth, float), np.asarray(mean, float)
    lat, lon = np.asarray(lat, float), np.asarray(lon, float)
    if lat.ndim == 1 and lon.ndim == 1:
        lon, lat = np.meshgrid(lon, lat)
    extent = [lon.min() - margin_deg, lon.max() + margin_deg, lat.min() - margin_deg, lat.max() + margin_deg]
    fig = plt.figure(figsize=(12, 9))
    straddles = np.nanmin(truth) < 0 < np.nanmax(truth) if np.isfinite(truth).any() else True
    vmin, vmax = _limits(truth, symmetric=bool(straddles))
    cmap = "RdBu_r" if straddles else "viridis"
    plot_map(truth, lat, lon, ax=map_axes(fig, 221, extent), title="truth", cmap=cmap, vmin=vmin, vmax=vmax,
             points=points, units=units)
    plot_map(mean, lat, lon, ax=map_axes(fig, 222, extent), title="analysis mean", cmap=cmap, vmin=vmin,
             vmax=vmax, points=points, units=units)
    err = mean - truth
    lo, hi = _limits(err, symmetric=True)
    plot_map(err, lat, lon, ax=map_axes(fig, 223, extent), title="error (mean - truth)", cmap="RdBu_r",
             vmin=lo, vmax=hi, units=units)
    ax = map_axes(fig, 224, extent)
    if spread is None:
        ax.set_title("spread: not available (deterministic analysis)", fontsize=9)
    else:
        spread = np.asarray(spread, float)
        plot_map(spread, lat, lon, ax=ax, title="spread (ensemble std)", cmap="viridis", vmin=0.0,
                 vmax=_limits(spread, symmetric=False)[1], units=units)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def plot_timeseries(times: Any, series: dict[str, dict[str, np.ndarray]], *, ylabel: str = "", title: str = ""):
    """RMSE (solid) and spread (dashed) against time, one colour per method.

    ``series[name]`` holds ``"rmse"`` and optionally ``"spread"`` arrays aligned with ``times[name]``
    (or with ``times`` itself when it is one array).

    Parameters
    ----------
    times : time values, or {method: time values}
    series : {method: {"rmse": ..., "spread": ...}}
    ylabel : y-axis label
    title : figure title

    Returns
    -------
    matplotlib Figure
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    for i, (name, s) in enumerate(series.items()):
        t = times[name] if isinstance(times, dict) else times
        colour = f"C{i % 10}"
        ax.plot(t, s["rmse"], color=colour, lw=1.5, label=f"{name} RMSE")
        if s.get("spread") is not None:
            ax.plot(t, s["spread"], color=colour, lw=1.2, ls="--", label=f"{name} spread")
    ax.set_xlabel("time")
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    if title:
        ax.set_title(title, fontsize=10)
    fig.autofmt_xdate()
    return fig


def plot_rank_histograms(counts: dict[str, np.ndarray], *, title: str = ""):
    """Rank histograms (relative frequency) per method with the flat line of a calibrated ensemble.

    Parameters
    ----------
    counts : {method: counts over ranks 0..M}
    title : figure title

    Returns
    -------
    matplotlib Figure
    """
    plt = pyplot()
    n = max(len(counts), 1)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.2), squeeze=False)
    for ax, (name, c) in zip(axes[0], counts.items()):
        c = np.asarray(c, float)
        freq = c / c.sum() if c.sum() > 0 else c
        ax.bar(np.arange(c.size), freq, width=1.0, color="C0", edgecolor="white", linewidth=0.3)
        ax.axhline(1.0 / c.size, color="k", ls="--", lw=1, label="calibrated")
        ax.set_title(f"{name} (M={c.size - 1})", fontsize=9)
        ax.set_xlabel("rank of truth")
    axes[0][0].set_ylabel("frequency")
    if counts:
        axes[0][0].legend(fontsize=7)
    else:
        axes[0][0].set_title("no ensemble analysis", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_spectra(
    wavelength: np.ndarray,
    psd_truth: np.ndarray,
    psd_error: dict[str, np.ndarray],
    resolution_km: dict[str, float] | None = None,
    *,
    title: str = "",
    units: str = "",
):
    """Left: PSD of the truth and of each method's error. Right: the score 1 - PSD(error)/PSD(truth),
    the 0.5 line and each method's effective resolution.

    Parameters
    ----------
    wavelength : wavelengths (km)
    psd_truth : PSD of the truth
    psd_error : {method: PSD of its error}
    resolution_km : {method: effective resolution (km)}, drawn as dotted lines
    title : figure title
    units : field units, for the PSD axis label

    Returns
    -------
    matplotlib Figure
    """
    plt = pyplot()
    wavelength = np.asarray(wavelength, float)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    a1.loglog(wavelength, psd_truth, color="k", lw=2, label="truth")
    pt = np.asarray(psd_truth, float)
    for i, (name, p) in enumerate(psd_error.items()):
        colour = f"C{i % 10}"
        p = np.asarray(p, float)
        a1.loglog(wavelength, p, color=colour, lw=1.3, label=f"{name} error")
        with np.errstate(divide="ignore", invalid="ignore"):
            a2.semilogx(wavelength, 1.0 - p / np.where(pt > 0, pt, np.nan), color=colour, lw=1.3, label=name)
        if resolution_km and np.isfinite(resolution_km.get(name, np.nan)):
            a2.axvline(resolution_km[name], color=colour, ls=":", lw=1)
    a2.axhline(0.5, color="k", ls="--", lw=1)
    for ax in (a1, a2):
        ax.invert_xaxis()
        ax.set_xlabel("wavelength (km)")
        ax.grid(alpha=0.3, which="both")
    a1.set_ylabel(f"PSD ({units}^2 km)" if units else "PSD")
    a2.set_ylabel("1 - PSD(error) / PSD(truth)")
    a2.set_ylim(-0.5, 1.05)
    a1.legend(fontsize=7)
    a2.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
