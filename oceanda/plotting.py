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


def _pyplot():
    import matplotlib

    if not os.environ.get("MPLBACKEND") and not os.environ.get("DISPLAY"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def map_axes(fig: Any, position: Any = 111, extent: Sequence[float] | None = None):
    """A PlateCarree GeoAxes with shipped coastlines and land, gridlines labelled."""
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
    """
    import cartopy.crs as ccrs

    plt = _pyplot()
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
