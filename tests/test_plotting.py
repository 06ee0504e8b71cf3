"""Maps render offline: shipped Natural Earth data, downloads forbidden (see conftest)."""

import numpy as np

from oceanda import io, plotting

from conftest import make_state_dataset


def test_map_with_coastlines_renders_offline(tmp_path):
    import cartopy

    ds = make_state_dataset(ny=20, nx=24)
    ax = plotting.plot_map(ds.ssh.isel(time=0).values, ds.lat.values, ds.lon.values, title="ssh", units="m",
                           points=(ds.lat.values[::4, ::4].ravel(), ds.lon.values[::4, ::4].ravel()), margin_deg=12)
    assert cartopy.config["pre_existing_data_dir"] == str(plotting.NATURAL_EARTH_DIR)
    path = io.save_figure(ax.figure, tmp_path / "map.png")
    assert path.stat().st_size > 10_000
    # the coastline was really drawn: a feature artist with geometries in the extent
    from cartopy.mpl.feature_artist import FeatureArtist

    artists = [a for a in ax.get_children() if isinstance(a, FeatureArtist)]
    assert len(artists) >= 2
    geoms = list(artists[-1]._feature.intersecting_geometries(ax.get_extent()))
    assert len(geoms) > 0  # North America's coast lies within 12 degrees of 38N 60W
    assert np.isfinite(ax.get_extent()).all()


def _tick_labels(ax, axis):
    ax.figure.canvas.draw()
    ticks = ax.get_xticklabels() if axis == "x" else ax.get_yticklabels()
    return [t.get_text() for t in ticks if t.get_text()]


def test_map_ticks_name_wrapped_longitudes_across_the_dateline_and_hemispheres():
    import matplotlib.pyplot as plt

    frame = plotting.map_frame(np.linspace(-10, 10, 21), np.linspace(160, 200, 41))  # 160E .. 160W
    fig = plt.figure()
    ax = plotting.map_axes(fig, frame=frame)
    try:
        xs, ys = _tick_labels(ax, "x"), _tick_labels(ax, "y")
        assert "180\N{DEGREE SIGN}" in xs and "170\N{DEGREE SIGN}E" in xs and "170\N{DEGREE SIGN}W" in xs
        assert xs.index("170\N{DEGREE SIGN}E") < xs.index("180\N{DEGREE SIGN}") < xs.index("170\N{DEGREE SIGN}W")
        assert "0\N{DEGREE SIGN}" in ys and "10\N{DEGREE SIGN}S" in ys and "10\N{DEGREE SIGN}N" in ys
        assert 3 <= len(xs) <= 9 and 3 <= len(ys) <= 9
        assert np.allclose(ax.get_extent(), frame.extent)  # the ticks did not widen the map
    finally:
        plt.close(fig)


def test_degree_labels_drop_trailing_zeros_and_name_the_hemisphere():
    assert plotting._degree_label(-59.5, "E", "W") == "59.5\N{DEGREE SIGN}W"
    assert plotting._degree_label(30.0, "N", "S") == "30\N{DEGREE SIGN}N"
    assert plotting._degree_label(0.0, "N", "S") == "0\N{DEGREE SIGN}"
    assert plotting._degree_label(-180.0, "E", "W") == "180\N{DEGREE SIGN}"
