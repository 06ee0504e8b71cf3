"""Maps and `evaluate` on a user's own grid: a Pacific box across the dateline with land, curvilinear grids.

The grids are built here in memory: 1-D lat/lon 18 x 30 with lon 150..250 (and the same box written
150..180 + -180..-110), a rotated curvilinear grid with 2-D lat/lon, and a km box without lat/lon.
"""

import json

import numpy as np
import pytest
import xarray as xr

from oceanda import cli, io, metrics, plotting, report
from oceanda.commands.evaluate import summary

NY, NX = 18, 30
LAT = np.linspace(-20.0, 30.0, NY)
LON = np.linspace(150.0, 250.0, NX)  # continuous across the dateline (the canonical layout)
MARGIN = 4.0


def _land():
    lon2, lat2 = np.meshgrid(LON, LAT)
    return (lat2 > 15) & (lon2 < 165)  # a north-western corner of land


def _pacific(nt=5, seed=0):
    """Truth with ``sst`` first and ``zos`` (SSH standard_name) second, NaN on land at every time."""
    rng = np.random.default_rng(seed)
    time = np.datetime64("2020-01-01", "ns") + np.arange(nt) * np.timedelta64(1, "D")
    lon2, lat2 = np.meshgrid(LON, LAT)
    base = np.sin(np.deg2rad(lon2) * 3) * np.cos(np.deg2rad(lat2) * 4)
    zos = 0.3 * base[None] + 0.05 * rng.standard_normal((nt, NY, NX))
    sst = 20.0 + 2.0 * base[None] + 0.3 * rng.standard_normal((nt, NY, NX))
    zos[:, _land()] = np.nan
    sst[:, _land()] = np.nan
    return xr.Dataset(
        {"sst": (("time", "lat", "lon"), sst, {"units": "degC", "standard_name": "sea_surface_temperature"}),
         "zos": (("time", "lat", "lon"), zos, {"units": "m", "standard_name": "sea_surface_height_above_geoid"})},
        coords={"time": time, "lat": ("lat", LAT, {"units": "degrees_north"}),
                "lon": ("lon", LON, {"units": "degrees_east"})})


def _ensemble(truth, sigma, seed, members=6):
    """Members around a perturbed centre (``sigma`` x the field's std); NaN on land like the truth."""
    rng = np.random.default_rng(seed)
    out = xr.Dataset(coords={k: truth[k] for k in ("time", "lat", "lon")})
    for v in truth.data_vars:
        t = truth[v].values
        sd = float(np.nanstd(t)) * sigma
        centre = t + sd * rng.standard_normal(t.shape)
        ens = centre[:, None] + sd * rng.standard_normal((t.shape[0], members, *t.shape[1:]))
        out[v] = (("time", "member", "lat", "lon"), ens, truth[v].attrs)
        out[f"{v}_mean"] = (("time", "lat", "lon"), ens.mean(axis=1), truth[v].attrs)
    return out.assign_coords(member=np.arange(members))


def _climatology(truth):
    """A no-skill deterministic analysis: each time's spatial mean, flat (the error is the whole signal)."""
    out = xr.Dataset(coords={k: truth[k] for k in ("time", "lat", "lon")})
    for v in truth.data_vars:
        flat = truth[v].mean(("lat", "lon")) + 0 * truth[v].fillna(0)
        out[f"{v}_mean"] = flat.where(truth[v].notnull()).transpose(*truth[v].dims)
    return out


def _mesh_x_range(ax):
    xy = np.asarray(ax._oceanda_mesh.get_coordinates())
    return float(xy[..., 0].min()), float(xy[..., 0].max())


# ------------------------------------------------------------------ frames


def test_frame_of_a_dateline_domain_is_regional_and_centred():
    frame = plotting.map_frame(LAT, LON, MARGIN)
    assert frame.kind == "geo" and not frame.is_global
    assert frame.central_longitude == pytest.approx(200.0 - 360.0)  # 200E
    x0, x1, y0, y1 = frame.extent
    assert (x0, x1) == pytest.approx((-50.0 - MARGIN, 50.0 + MARGIN))  # 100 degrees wide, not a world map
    assert (y0, y1) == pytest.approx((-20.0 - MARGIN, 30.0 + MARGIN))
    jump = np.where(LON > 180, LON - 360, LON)  # 150..180 then -180..-110
    assert plotting.map_frame(LAT, jump, MARGIN) == frame
    assert plotting.longitude_arc(jump) == pytest.approx((150.0, 250.0))
    # a global grid gets the globe, centred on the middle of its own convention
    g = plotting.map_frame(np.linspace(-80, 80, 9), np.arange(0.0, 360.0, 2.5))
    assert g.is_global and abs(g.central_longitude) == pytest.approx(180.0)
    assert not plotting.map_frame([10.0, 20.0], [-10.0, 10.0]).is_global
    assert plotting.map_frame([10.0, 20.0], [-10.0, 10.0]).central_longitude == pytest.approx(0.0)


@pytest.mark.parametrize("convention", ["0..360", "jump"])
def test_dateline_field_is_one_contiguous_panel(tmp_path, convention):
    truth = _pacific()["zos"].isel(time=0).values
    lon = LON if convention == "0..360" else np.where(LON > 180, LON - 360, LON)
    ax = plotting.plot_map(truth, LAT, lon, units="m", margin_deg=MARGIN)
    frame = ax._oceanda_frame
    assert frame.central_longitude == pytest.approx(-160.0)
    x0, x1 = _mesh_x_range(ax)
    # one piece of about 100 degrees (+ half a cell each side) inside the extent: no slivers at +-180
    assert x1 - x0 == pytest.approx(100.0 + 100.0 / (NX - 1), rel=1e-6)
    assert frame.extent[0] <= x0 and x1 <= frame.extent[1]
    got_extent = ax.get_extent(crs=frame.projection())
    assert got_extent[1] - got_extent[0] == pytest.approx(100.0 + 2 * MARGIN, abs=0.5)
    # land (NaN) is masked and drawn in the land colour, not as a value
    arr = ax._oceanda_mesh.get_array()
    assert int(np.ma.count_masked(arr)) == int(_land().sum())
    import matplotlib.colors as mcolors

    assert mcolors.to_rgba(ax._oceanda_mesh.get_cmap().get_bad()) == mcolors.to_rgba(plotting.LAND_COLOUR)
    path = io.save_figure(ax.figure, tmp_path / f"pacific_{convention.replace('.', '')}.png")
    assert path.stat().st_size > 10_000


def test_curvilinear_grid_drawn_on_its_coordinates(tmp_path):
    j, i = np.meshgrid(np.arange(NX), np.arange(NY))
    lat = 10.0 + 1.5 * i + 0.4 * j
    lon = 170.0 + 2.0 * j - 0.5 * i
    lon = np.where(lon > 180, lon - 360, lon)  # crosses the dateline within rows
    field = np.cos(i / 3.0) * np.sin(j / 4.0)
    field[:3, :4] = np.nan
    ax = plotting.plot_map(field, lat, lon, units="m", margin_deg=MARGIN)
    frame = ax._oceanda_frame
    xy = np.asarray(ax._oceanda_mesh.get_coordinates())
    assert xy.shape == (NY + 1, NX + 1, 2)  # cell corners of the 2-D grid, not a rectangle
    centre = xy[1:-1, 1:-1].reshape(-1, 2)
    assert np.ptp(centre[:, 0]) < 80.0  # contiguous in the projection centred on the grid
    inner = 0.25 * (xy[:-1, :-1] + xy[1:, 1:] + xy[:-1, 1:] + xy[1:, :-1])[2:-2, 2:-2]
    np.testing.assert_allclose(inner[..., 0], plotting.wrap_longitude(lon, frame.central_longitude)[2:-2, 2:-2], atol=1e-6)
    np.testing.assert_allclose(inner[..., 1], lat[2:-2, 2:-2], atol=1e-6)
    assert io.save_figure(ax.figure, tmp_path / "curvilinear.png").stat().st_size > 10_000


def test_colourbar_labels_do_not_run_into_the_next_panel(tmp_path):
    truth = _pacific()["zos"].isel(time=0).values
    rng = np.random.default_rng(1)
    for lat, lon in ((LAT, LON), (np.linspace(33.5, 42.5, 40), np.linspace(-65.0, -54.0, 40))):
        t = truth if lat.size == NY else rng.standard_normal((lat.size, lon.size))
        fig = plotting.plot_analysis_maps(t, t + 0.1, np.full_like(t, 0.05), lat, lon, units="m", variable="zos",
                                          title="maps", note="a note under the panels")
        fig.savefig(tmp_path / "four.png", dpi=60)
        renderer = fig.canvas.get_renderer()
        maps = [a for a in fig.axes if hasattr(a, "_oceanda_frame")]
        bars = [a for a in fig.axes if a not in maps]
        assert len(maps) == 4 and len(bars) == 4
        boxes = [a.get_tightbbox(renderer) for a in maps]
        for k, bar in enumerate(bars):
            label = bar.get_tightbbox(renderer)
            for j, box in enumerate(boxes):
                if j != k:
                    assert not label.overlaps(box), (k, j)


# ------------------------------------------------------------------ evaluate on the own grid


@pytest.fixture(scope="module")
def pacific_report(tmp_path_factory):
    truth = _pacific()
    analyses = {"good": _ensemble(truth, 0.2, seed=1), "poor": _ensemble(truth, 0.8, seed=2),
                "clim": _climatology(truth)}
    recorded = []
    original = plotting.plot_analysis_maps

    def spy(*args, **kwargs):
        fig = original(*args, **kwargs)
        recorded.append([a._oceanda_mesh.get_clim() for a in fig.axes if hasattr(a, "_oceanda_mesh")])
        return fig

    out = tmp_path_factory.mktemp("pacific") / "report"
    mp = pytest.MonkeyPatch()
    mp.setattr(plotting, "plot_analysis_maps", spy)
    try:
        res = report.evaluate(truth, analyses, out, time_index=2, quiet=True)
    finally:
        mp.undo()
    return truth, analyses, out, res, recorded


def test_evaluate_on_lat_lon_grid_with_land(pacific_report):
    truth, analyses, out, res, recorded = pacific_report
    assert res["meta"]["headline_variable"] == "zos"  # no obs: the variable with an SSH standard_name
    assert "standard_name" in res["meta"]["headline_rule"]
    good = res["methods"]["good"]
    assert good["units"] == "m" and good["variables"]["sst"]["units"] == "degC"
    assert good["score_units"]["rmse"] == "m" and good["score_units"]["spread_skill"] == "1"
    assert np.isfinite(good["rmse"]) and good["rmse"] < res["methods"]["poor"]["rmse"]
    figs = set(res["meta"]["figures"])
    assert {"map_good_zos.png", "map_poor_zos.png", "map_clim_zos.png"} <= figs
    for f in figs:
        assert (out / f).stat().st_size > 5_000


def test_error_and_spread_panels_share_one_scale(pacific_report):
    truth, analyses, _, res, recorded = pacific_report
    assert len(recorded) == 3
    when = truth["time"].values[2]
    t = truth["zos"].sel(time=when).values
    errs = [float(np.nanmax(np.abs(a["zos_mean"].sel(time=when).values - t))) for a in analyses.values()]
    spreads = [float(np.nanmax(a["zos"].sel(time=when).std("member", ddof=1).values))
               for a in analyses.values() if "zos" in a]
    for clims in recorded:
        assert clims[0] == clims[1]  # truth and mean on one scale
        assert clims[2] == pytest.approx((-max(errs), max(errs)))  # the largest error of any method
    spread_clims = [c[3] for c in recorded if len(c) == 4]
    assert len(spread_clims) == 2 and spread_clims[0] == spread_clims[1] == pytest.approx((0.0, max(spreads)))
    # the 'good' method's error scale is not its own (smaller) maximum
    assert errs[0] < max(errs)


def test_never_resolved_scale_is_null_with_a_reason(pacific_report, tmp_path, capsys):
    _, _, out, res, _ = pacific_report
    clim = res["methods"]["clim"]
    assert clim["effective_resolution_km"] is None
    assert clim["effective_resolution_status"] == "not_resolved"
    assert "not resolved at any scale up to the domain size" in clim["effective_resolution_note"]
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["methods"]["clim"]["effective_resolution_km"] is None
    assert "effective_resolution_km" in on_disk["methods"]["clim"]  # the key stays
    text = summary(res)
    assert "zos (m)" in text and "rmse [m]" in text and "not resolved*" in text
    assert "up to the domain size" in text
    good = res["methods"]["good"]
    assert good["effective_resolution_status"] in ("resolved", "resolved_to_grid")
    assert good["effective_resolution_km"] > 0


def test_headline_is_the_observed_variable(tmp_path):
    truth = _pacific(nt=3)
    ens = _ensemble(truth, 0.3, seed=3)
    rng = np.random.default_rng(4)
    pts = xr.Dataset({"sst": ("obs", 20 + rng.standard_normal(10), {"units": "degC"})},
                     coords={"lat": ("obs", rng.uniform(-10, 10, 10)), "lon": ("obs", rng.uniform(170, 230, 10)),
                             "time": ("obs", np.repeat(truth["time"].values[1], 10))})
    res = report.evaluate(truth, {"e": ens}, tmp_path / "r", obs=pts, figures=False, quiet=True)
    assert res["meta"]["headline_variable"] == "sst" and res["meta"]["headline_rule"] == "the observed variable"
    assert res["methods"]["e"]["units"] == "degC"
    res = report.evaluate(truth[["sst"]], {"e": ens}, tmp_path / "s", figures=False, quiet=True)
    assert res["meta"]["headline_variable"] == "sst" and "first" in res["meta"]["headline_rule"]


def test_cli_prints_units_and_explains(tmp_path, capsys):
    truth = _pacific(nt=3)
    io.write_netcdf(truth, tmp_path / "truth.nc")
    io.write_netcdf(_climatology(truth), tmp_path / "clim.nc")
    args = ["evaluate", "--truth", str(tmp_path / "truth.nc"), "--analysis", f"clim={tmp_path / 'clim.nc'}",
            "--out", str(tmp_path / "rep"), "--quiet"]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "headline variable: zos (m)" in printed and "crps [m]" in printed
    assert "not resolved at any scale up to the domain size" in printed and "spread/skill" in printed
    assert (tmp_path / "rep" / "map_clim_zos.png").exists()


def test_km_grid_without_lat_lon_keeps_plain_axes(tmp_path):
    rng = np.random.default_rng(0)
    y = np.arange(12) * 15.0 + 7.5
    x = np.arange(16) * 15.0 + 7.5
    da = xr.DataArray(rng.standard_normal((2, 12, 16)), dims=("time", "y", "x"),
                      coords={"y": ("y", y, {"units": "km"}), "x": ("x", x, {"units": "km"})})
    frame, fy, fx = report.map_frame_of(da)
    assert frame.kind == "km" and frame.extent == pytest.approx((0.0, 240.0, 0.0, 180.0))
    fig = plotting.plot_analysis_maps(da[0].values, da[1].values, None, fy, fx, frame=frame, units="m")
    assert not any(hasattr(a, "projection") for a in fig.axes)
    assert io.save_figure(fig, tmp_path / "km.png").stat().st_size > 5_000


def test_resolution_verdict_cases():
    lam = np.array([1000.0, 500.0, 250.0, 125.0])
    mk = lambda s: xr.DataArray(np.asarray(s, float), dims="wavenumber",  # noqa: E731
                                coords={"wavelength": ("wavenumber", lam)})
    v = metrics.resolution_verdict(mk([0.2, 0.1, 0.0, -0.1]))
    assert v.status == "not_resolved" and np.isnan(v.km) and v.longest_km == 1000.0
    assert "up to the domain size (1000 km)" in v.note
    assert metrics.resolution_from_score(mk([0.2, 0.1, 0.0, -0.1])) == 1000.0  # the bound, as before
    v = metrics.resolution_verdict(mk([0.9, 0.7, 0.3, 0.1]))
    assert v.status == "resolved" and 250.0 < v.km < 500.0
    v = metrics.resolution_verdict(mk([0.9, 0.9, 0.9, 0.9]))
    assert v.status == "resolved_to_grid" and v.km == 125.0
    assert metrics.resolution_verdict(mk([np.nan] * 4)).status == "no_score"


def test_evaluate_on_curvilinear_grid_draws_its_cells(tmp_path):
    j, i = np.meshgrid(np.arange(12), np.arange(10))
    lat = 10.0 + 1.5 * i + 0.4 * j
    lon = np.where(170.0 + 2.0 * j - 0.5 * i > 180, 170.0 + 2.0 * j - 0.5 * i - 360, 170.0 + 2.0 * j - 0.5 * i)
    rng = np.random.default_rng(5)
    zos = rng.standard_normal((3, 10, 12))
    zos[:, :2, :3] = np.nan  # land
    time = np.datetime64("2020-01-01", "ns") + np.arange(3) * np.timedelta64(1, "D")
    coords = {"time": time, "lat": (("y", "x"), lat, {"units": "degrees_north"}),
              "lon": (("y", "x"), lon, {"units": "degrees_east"})}
    truth = xr.Dataset({"zos": (("time", "y", "x"), zos, {"units": "m"})}, coords=coords)
    mean = xr.Dataset({"zos_mean": (("time", "y", "x"), zos + 0.3 * rng.standard_normal(zos.shape), {"units": "m"})},
                      coords=coords)
    frame, flat, flon = report.map_frame_of(truth["zos"])
    assert frame.kind == "geo" and frame.central_longitude == pytest.approx(plotting.wrap_longitude(
        sum(plotting.longitude_arc(lon)) / 2, 0.0).item())
    res = report.evaluate(truth, {"m": mean}, tmp_path / "r", quiet=True)  # spectra at the cells' km spacing
    m = res["methods"]["m"]
    assert m["effective_resolution_status"] != "no_score"
    assert np.isfinite(m["rmse"]) and "map_m_zos.png" in res["meta"]["figures"]
