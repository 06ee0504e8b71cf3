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
