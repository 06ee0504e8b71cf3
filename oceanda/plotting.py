"""Maps and diagnostic figures; cartopy is pointed at shipped Natural Earth data, never the network.

Cartopy downloads Natural Earth shapefiles on first use. oceanda ships the 1:110m land and coastline
files and sets ``cartopy.config["pre_existing_data_dir"]`` to them before any map is drawn; tests turn
``cartopy.io.DownloadWarning`` into an error so a download attempt fails loudly.

Maps are drawn in the frame of the data (:func:`map_frame`): a PlateCarree projection centred on the
middle of the smallest longitude arc that holds the grid, the extent that arc plus a margin. A Pacific
domain given as 150..250 or as 150..180 + -180..-110 is thus one contiguous panel centred on 200E;
a global grid gets the whole globe. Curvilinear grids (2-D lat/lon) are drawn cell by cell on their
coordinates; grids with km axes and no lat/lon on plain axes in km (:func:`km_frame`). Land (NaN
cells) is drawn in :data:`LAND_COLOUR`, as is the Natural Earth land around the grid.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import numpy as np

NATURAL_EARTH_DIR = Path(str(resources.files("oceanda") / "data" / "natural_earth"))
#: Colour of land: NaN cells of a field and the Natural Earth land around the grid.
LAND_COLOUR = "0.82"
DIVERGING = ("RdBu_r", "coolwarm", "seismic")


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


# ----------------------------------------------------------------------------------------------
# The frame of a map: projection centre and extent from the data
# ----------------------------------------------------------------------------------------------


def wrap_longitude(lon: Any, central_longitude: float) -> np.ndarray:
    """Longitudes relative to ``central_longitude``, in [-180, 180): x in a PlateCarree centred there.

    Parameters
    ----------
    lon : longitudes in degrees (any convention, jumps allowed)
    central_longitude : centre of the projection, degrees east

    Returns
    -------
    numpy.ndarray of the same shape
    """
    return (np.asarray(lon, dtype=float) - central_longitude + 180.0) % 360.0 - 180.0


def longitude_arc(lon: Any) -> tuple[float, float]:
    """``(west, east)`` of the smallest arc holding every finite longitude; ``east - west`` is its width.

    The arc is the complement of the largest gap between the sorted longitudes on the circle, so
    150..250, 150..180 + -180..-110 and -210..-110 all give (150, 250). ``west`` is in [0, 360).

    Parameters
    ----------
    lon : longitudes in degrees

    Returns
    -------
    tuple of float
    """
    u = np.unique(np.asarray(lon, dtype=float)[np.isfinite(lon)] % 360.0)
    if u.size == 0:
        raise ValueError("no finite longitude; expected grid longitudes in degrees")
    if u.size == 1:
        return float(u[0]), float(u[0])
    gaps = np.diff(np.r_[u, u[0] + 360.0])
    k = int(np.argmax(gaps))
    west = float(u[(k + 1) % u.size])
    east = float(u[k]) if u[k] >= west else float(u[k]) + 360.0
    return west, east


@dataclass(frozen=True)
class MapFrame:
    """Where and how a grid is drawn: ``kind`` "geo" (PlateCarree centred on ``central_longitude``,
    ``extent`` in that projection's x = longitude - centre) or "km" (plain axes, ``extent`` in km)."""

    kind: str
    extent: tuple[float, float, float, float]
    central_longitude: float = 0.0
    is_global: bool = False

    def projection(self):
        """The cartopy projection of a geographic frame (None for km frames)."""
        if self.kind != "geo":
            return None
        import cartopy.crs as ccrs

        return ccrs.PlateCarree(central_longitude=self.central_longitude)

    def xy(self, lat: Any, lon: Any) -> tuple[np.ndarray, np.ndarray]:
        """Plot coordinates ``(x, y)`` of points given as latitude/longitude (or y/x km in a km frame)."""
        if self.kind != "geo":
            return np.asarray(lon, float), np.asarray(lat, float)
        return wrap_longitude(lon, self.central_longitude), np.asarray(lat, float)


def map_frame(lat: Any, lon: Any, margin_deg: float = 4.0) -> MapFrame:
    """The geographic frame of a grid: centred on its longitude arc, extent the arc and latitudes + margin.

    Parameters
    ----------
    lat, lon : coordinates in degrees (1-D or 2-D; longitudes in any convention)
    margin_deg : margin around the grid, in degrees

    Returns
    -------
    MapFrame
    """
    west, east = longitude_arc(lon)
    lat = np.asarray(lat, dtype=float)
    south, north = float(np.nanmin(lat)), float(np.nanmax(lat))
    lat_range = (max(south - margin_deg, -90.0), min(north + margin_deg, 90.0))
    u = np.unique(np.asarray(lon, float)[np.isfinite(lon)] % 360.0)
    gaps = np.sort(np.diff(np.r_[u, u[0] + 360.0]))[:-1]  # the spacing within the arc (largest gap left out)
    step = float(np.median(gaps)) if gaps.size else 0.0
    if east - west + 1.5 * step >= 360.0 or east - west + 2 * margin_deg >= 360.0:  # global in longitude
        centre = 180.0 if np.nanmax(np.asarray(lon, float)) > 180.0 else 0.0  # 0..360 grids: Pacific; -180..180: Greenwich
        return MapFrame("geo", (-180.0, 180.0, *lat_range), centre, True)
    centre = wrap_longitude((west + east) / 2.0, 0.0).item()
    half = (east - west) / 2.0 + margin_deg
    return MapFrame("geo", (-half, half, *lat_range), centre)


def km_frame(y: Any, x: Any) -> MapFrame:
    """The frame of a projected grid with km axes and no latitude/longitude: plain axes, the grid's extent.

    Parameters
    ----------
    y, x : 1-D cell centres in km

    Returns
    -------
    MapFrame
    """
    y, x = np.asarray(y, float), np.asarray(x, float)
    hy = 0.5 * abs(float(np.diff(y[:2])[0])) if y.size > 1 else 0.5
    hx = 0.5 * abs(float(np.diff(x[:2])[0])) if x.size > 1 else 0.5
    return MapFrame("km", (float(x.min()) - hx, float(x.max()) + hx, float(y.min()) - hy, float(y.max()) + hy))


def _frame_of_axes(ax: Any) -> MapFrame | None:
    """The frame of axes made by :func:`map_axes` / :func:`frame_axes` (None: other axes)."""
    return getattr(ax, "_oceanda_frame", None)


def _geo_frame_of(ax: Any) -> MapFrame:
    """A frame for a GeoAxes made elsewhere: its projection's central longitude; its extent left alone."""
    params = getattr(getattr(ax, "projection", None), "proj4_params", {}) or {}
    return MapFrame("geo", (), float(params.get("lon_0", 0.0)))


def map_axes(fig: Any, position: Any = 111, extent: Sequence[float] | None = None, *, frame: MapFrame | None = None):
    """A PlateCarree GeoAxes with shipped coastlines and land, gridlines labelled.

    Parameters
    ----------
    fig : a matplotlib Figure
    position : subplot position (e.g. ``111``, ``221``, a GridSpec cell)
    extent : ``[lon0, lon1, lat0, lat1]`` in degrees east/north (``lon1 < lon0`` crosses the dateline);
        the map is centred on its middle longitude. None: ``frame``'s, else automatic.
    frame : a :func:`map_frame` (wins over ``extent``)

    Returns
    -------
    cartopy GeoAxes
    """
    configure_cartopy_offline()
    import cartopy.feature as cfeature

    if frame is None and extent is not None:
        lon0, lon1, lat0, lat1 = (float(e) for e in extent)
        lon1 = lon1 + 360.0 if lon1 < lon0 else lon1
        centre = wrap_longitude((lon0 + lon1) / 2.0, 0.0).item()
        x0 = wrap_longitude(lon0, centre).item()
        frame = MapFrame("geo", (x0, x0 + lon1 - lon0, lat0, lat1), centre)
    frame = frame or MapFrame("geo", (), 0.0)
    proj = frame.projection()
    ax = fig.add_subplot(position, projection=proj)
    if frame.is_global:
        ax.set_global()
    elif frame.extent:
        ax.set_extent(frame.extent, crs=proj)
    ax.add_feature(cfeature.NaturalEarthFeature("physical", "land", "110m"), facecolor=LAND_COLOUR, edgecolor="none",
                   zorder=2)
    ax.coastlines(resolution="110m", linewidth=0.6, zorder=3)
    if frame.extent:  # a known extent: labelled ticks (cartopy's labelled gridliner was 60 % of a report's time)
        _degree_ticks(ax, frame)
    else:  # the extent is left to the data
        gl = ax.gridlines(draw_labels=True, linewidth=0.3, color="0.5", alpha=0.6)
        gl.top_labels = gl.right_labels = False
        gl.xlabel_style = gl.ylabel_style = {"size": 8}
    ax._oceanda_frame = frame
    return ax


def _round_steps(lo: float, hi: float, most: int = 8) -> np.ndarray:
    """Multiples of a round step (0.5 .. 60 degrees, else 90) in ``[lo, hi]``, at most about ``most`` of them."""
    step = next((s for s in (0.5, 1, 2, 2.5, 5, 10, 15, 20, 30, 45, 60) if (hi - lo) / s <= most), 90)
    return np.arange(np.ceil(lo / step) * step, hi + 1e-9, step)


def _degree_label(value: float, positive: str, negative: str) -> str:
    """``30°N``, ``59.5°W``, ``0°``: degrees with a hemisphere letter, no trailing ``.0``."""
    v = round(float(value), 6)
    text = f"{abs(v):g}\N{DEGREE SIGN}"
    return text if v == 0 or abs(v) == 180 else text + (positive if v > 0 else negative)


def _degree_ticks(ax: Any, frame: MapFrame) -> None:
    """Longitude and latitude ticks with degree labels on the left and bottom of a PlateCarree map, light grid lines.

    Ticks sit in the projection's own x (longitude - centre), so a map across the dateline is labelled by
    its wrapped longitudes (170°E, 180°, 170°W) without transforming them.
    """
    import matplotlib.ticker as mticker

    x0, x1, y0, y1 = frame.extent
    centre = frame.central_longitude
    xt = _round_steps(centre + x0, centre + x1) - centre
    ax.set_xticks(xt)
    ax.set_yticks(_round_steps(y0, y1))
    ax.xaxis.set_major_formatter(mticker.FuncFormatter(
        lambda x, _: _degree_label(wrap_longitude(x + centre, 0.0).item(), "E", "W")))
    ax.yaxis.set_major_formatter(mticker.FuncFormatter(lambda y, _: _degree_label(y, "N", "S")))
    ax.tick_params(labelsize=8, length=2)
    ax.grid(True, linewidth=0.3, color="0.5", alpha=0.6)


def frame_axes(fig: Any, position: Any, frame: MapFrame):
    """Axes for a frame: a :func:`map_axes` for a geographic one, plain equal-aspect axes in km otherwise.

    Parameters
    ----------
    fig : a matplotlib Figure
    position : subplot position
    frame : the frame

    Returns
    -------
    matplotlib Axes (a GeoAxes for geographic frames)
    """
    if frame.kind == "geo":
        return map_axes(fig, position, frame=frame)
    ax = fig.add_subplot(position)
    ax.set_xlim(frame.extent[0], frame.extent[1])
    ax.set_ylim(frame.extent[2], frame.extent[3])
    ax.set_aspect("equal")
    ax.set_facecolor("white")
    ax.set_xlabel("x (km)", fontsize=8)
    ax.set_ylabel("y (km)", fontsize=8)
    ax.tick_params(labelsize=8)
    ax._oceanda_frame = frame
    return ax


def _mesh_coordinates(field: np.ndarray, lat: np.ndarray, lon: np.ndarray, frame: MapFrame):
    """``(x, y, field)`` in the frame's plot coordinates; 1-D axes sorted so that cells are contiguous."""
    if lat.ndim == 1 and lon.ndim == 1:
        x, y = frame.xy(lat, lon)
        ox, oy = np.argsort(x, kind="stable"), np.argsort(y, kind="stable")
        return x[ox], y[oy], field[np.ix_(oy, ox)]
    if lat.shape != field.shape or lon.shape != field.shape:
        raise ValueError(f"coordinates of shape {lat.shape} / {lon.shape} for a field of shape {field.shape}; "
                         "expected 1-D lat/lon or 2-D ones of the field's shape")
    if not (np.isfinite(lat).all() and np.isfinite(lon).all()):
        raise ValueError("latitude/longitude with NaN; expected finite coordinates at every cell (mask land in the field)")
    x, y = frame.xy(lat, lon)
    return x, y, field


def _colourmap(name: str):
    """The named colormap with NaN (land) in :data:`LAND_COLOUR`."""
    import matplotlib

    return matplotlib.colormaps[name].with_extremes(bad=LAND_COLOUR)


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
    frame: MapFrame | None = None,
    colorbar: str = "right",
):
    """Draw a gridded field on a map with coastlines (or on km axes); optional observation points.

    Returns the axes. Without ``ax`` the map is drawn in the data's own frame (:func:`map_frame`:
    centred on the grid, its extent plus ``margin_deg``), so a domain across the dateline stays one
    piece. NaN cells (land) are drawn in :data:`LAND_COLOUR`.

    Parameters
    ----------
    field : 2-D values ``[ny, nx]``
    lat, lon : 2-D (curvilinear) or 1-D coordinates in degrees; y/x in km for a km ``frame``
    ax : axes to draw on (None: a new figure); its frame is kept
    title : panel title
    cmap : colormap name
    vmin, vmax : colour limits (default: symmetric about 0 for diverging colormaps)
    points : observation locations ``(lat, lon)`` (``(y, x)`` km in a km frame)
    units : colour-bar label
    margin_deg : margin around the grid, in degrees
    frame : the frame to draw in (None: the axes', else :func:`map_frame` of the grid)
    colorbar : ``"right"``, ``"bottom"`` or ``"none"``

    Returns
    -------
    matplotlib Axes (a cartopy GeoAxes on geographic frames)
    """
    plt = pyplot()
    field = np.asarray(field, dtype=float)
    lat, lon = np.asarray(lat, float), np.asarray(lon, float)
    if ax is not None:
        frame = _frame_of_axes(ax) or (frame if frame is not None else _geo_frame_of(ax))
    else:
        frame = frame or map_frame(lat, lon, margin_deg)
        ax = frame_axes(plt.figure(figsize=(6, 4.8)), 111, frame)
    if vmin is None and vmax is None and cmap in DIVERGING:
        lim = np.nanmax(np.abs(field)) if np.isfinite(field).any() else 1.0
        vmin, vmax = -lim, lim
    x, y, values = _mesh_coordinates(field, lat, lon, frame)
    geo = {"transform": frame.projection()} if frame.kind == "geo" else {}
    mesh = ax.pcolormesh(x, y, np.ma.masked_invalid(values), cmap=_colourmap(cmap), vmin=vmin, vmax=vmax,
                         shading="auto", zorder=1, **geo)
    if frame.kind == "geo" and not frame.is_global and frame.extent:
        ax.set_extent(frame.extent, crs=frame.projection())  # pcolormesh autoscales; keep the frame
    if points is not None:
        px, py = frame.xy(*points)
        ax.scatter(px, py, s=1.5, c="k", zorder=4, label="observations", **geo)
    if colorbar != "none":
        horizontal = colorbar == "bottom"
        cb = ax.figure.colorbar(mesh, ax=ax, orientation="horizontal" if horizontal else "vertical",
                                shrink=0.8, pad=0.1 if horizontal else 0.04, fraction=0.05, aspect=30 if horizontal else 20)
        cb.ax.tick_params(labelsize=8)
        if units:
            cb.set_label(units, fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    ax._oceanda_mesh = mesh
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


def analysis_map_limits(truth: Any, means: Sequence[Any], spreads: Sequence[Any | None] = ()) -> dict[str, Any]:
    """Colour limits shared by the analysis maps of several methods, so that their panels compare.

    ``field``: the truth's range (symmetric about 0 when it straddles 0) for the truth and mean
    panels; ``error``: the largest ``|mean - truth|`` of any method, ``spread``: the largest spread of
    any method (0 up to it).

    Parameters
    ----------
    truth : 2-D truth
    means : 2-D analysis means, one per method
    spreads : 2-D spreads (None for deterministic methods)

    Returns
    -------
    dict with ``field`` ``(vmin, vmax)``, ``cmap``, ``error`` and ``spread`` (positive limits)
    """
    truth = np.asarray(truth, float)
    straddles = bool(np.nanmin(truth) < 0 < np.nanmax(truth)) if np.isfinite(truth).any() else True
    errors = [np.asarray(m, float) - truth for m in means]
    err = max((_limits(e, symmetric=True)[1] for e in errors), default=1.0)
    finite = [np.asarray(s, float) for s in spreads if s is not None and np.isfinite(s).any()]
    spr = max((float(np.nanmax(s)) for s in finite), default=1.0) or 1.0
    return {"field": _limits(truth, symmetric=straddles), "cmap": "RdBu_r" if straddles else "viridis",
            "error": err, "spread": spr}


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
    limits: dict[str, Any] | None = None,
    frame: MapFrame | None = None,
    variable: str = "",
    note: str = "",
):
    """Truth, analysis mean (same colour scale), error (mean - truth) and spread on four maps.

    Observation locations ``points = (lat, lon)`` are drawn on the truth and mean panels. Pass the
    same ``limits`` (:func:`analysis_map_limits` of every method) to the figures of several methods
    so that their error and spread panels share one colour scale. Colour bars sit under their panel.

    Parameters
    ----------
    truth, mean : 2-D fields
    spread : 2-D ensemble standard deviation, or None (deterministic analysis)
    lat, lon : coordinates in degrees (1-D or 2-D); y/x in km with a km ``frame``
    points : observation locations ``(lat, lon)``
    title : figure title
    units : units of the fields, in the colour-bar labels
    margin_deg : margin around the grid, in degrees
    limits : colour limits (None: this method's own, :func:`analysis_map_limits`)
    frame : the frame (None: :func:`map_frame` of lat/lon)
    variable : variable name, in the colour-bar labels
    note : a line printed under the panels (e.g. how to read the spread)

    Returns
    -------
    matplotlib Figure
    """
    plt = pyplot()
    truth, mean = np.asarray(truth, float), np.asarray(mean, float)
    frame = frame or map_frame(lat, lon, margin_deg)
    lim = limits or analysis_map_limits(truth, [mean], [spread])
    size, bar = _panel_layout(frame, note)
    fig = plt.figure(figsize=size, layout="constrained")
    u = f" ({units})" if units else ""
    name = variable or "field"
    common = {"frame": frame, "colorbar": bar}
    vmin, vmax = lim["field"]
    plot_map(truth, lat, lon, ax=frame_axes(fig, 221, frame), title="truth", cmap=lim["cmap"], vmin=vmin,
             vmax=vmax, points=points, units=f"{name}{u}", **common)
    plot_map(mean, lat, lon, ax=frame_axes(fig, 222, frame), title="analysis mean", cmap=lim["cmap"], vmin=vmin,
             vmax=vmax, points=points, units=f"{name}{u}", **common)
    plot_map(mean - truth, lat, lon, ax=frame_axes(fig, 223, frame), title="error (mean - truth)", cmap="RdBu_r",
             vmin=-lim["error"], vmax=lim["error"], units=f"{name} error{u}", **common)
    ax = frame_axes(fig, 224, frame)
    if spread is None:
        ax.set_title("spread: not available (deterministic analysis)", fontsize=9)
    else:
        plot_map(np.asarray(spread, float), lat, lon, ax=ax, title="spread (ensemble std)", cmap="viridis",
                 vmin=0.0, vmax=lim["spread"], units=f"{name} spread{u}", **common)
    if title:
        fig.suptitle(title, fontsize=11)
    if note:
        import textwrap

        fig.supxlabel("\n".join(textwrap.wrap(note, 150)), fontsize=8, color="0.25")
    return fig


def _panel_layout(frame: MapFrame, note: str) -> tuple[tuple[float, float], str]:
    """Figure size of the four-panel maps, fitted to the frame's aspect, and where the colour bars go
    (right of near-square panels, under wide ones), so that nothing overlaps the next panel."""
    x0, x1, y0, y1 = frame.extent if frame.extent else (-180.0, 180.0, -90.0, 90.0)
    aspect = (x1 - x0) / max(y1 - y0, 1e-9)
    bar = "bottom" if aspect > 1.4 else "right"
    width = 12.0
    map_w = 5.2 if bar == "bottom" else 4.3
    map_h = min(max(map_w / aspect, 1.8), 6.0)
    extra = 1.5 if bar == "bottom" else 0.8  # panel title, longitude labels (and a colour bar under the map)
    height = 2 * (map_h + extra) + 0.5 + (0.3 * (1 + len(note) // 150) if note else 0.0)
    return (width, round(height, 2)), bar


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
    fig, ax = plt.subplots(figsize=(8, 4), layout="constrained")  # laid out in the one draw of io.save_figure
    for i, (name, s) in enumerate(series.items()):
        t = times[name] if isinstance(times, dict) else times
        if np.asarray(t).dtype == object:  # cftime calendars (360_day, noleap): matplotlib plots days, not cftime
            from oceanda.grid import time_days

            t = time_days(t)
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
    cols = min(n, 4)  # rows of 4: eight methods in one row made a strip 33 inches wide
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.0 * rows), squeeze=False, layout="constrained")
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    for ax, (name, c) in zip(axes.ravel(), counts.items()):
        c = np.asarray(c, float)
        freq = c / c.sum() if c.sum() > 0 else c
        ax.bar(np.arange(c.size), freq, width=1.0, color="C0", edgecolor="white", linewidth=0.3)
        ax.axhline(1.0 / c.size, color="k", ls="--", lw=1, label="calibrated")
        ax.set_title(f"{name} (M={c.size - 1})", fontsize=9)
        ax.set_xlabel("rank of truth")
    for row in axes:
        row[0].set_ylabel("frequency")
    if counts:
        axes[0][0].legend(fontsize=7)
    else:
        axes[0][0].set_title("no ensemble analysis", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
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
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
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
    return fig
