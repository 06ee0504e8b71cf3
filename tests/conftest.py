"""Shared test set-up: headless matplotlib, no cartopy downloads, small thread counts."""

import os
import warnings

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("OMP_NUM_THREADS", "2")
if "OCEANDA_CACHE_DIR" not in os.environ:  # embedding caches of the tests never land in the user's ~/.cache
    import tempfile

    os.environ["OCEANDA_CACHE_DIR"] = tempfile.mkdtemp(prefix="oceanda-test-cache-")

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import xarray as xr  # noqa: E402

import cartopy.io  # noqa: E402

from oceanda.plotting import configure_cartopy_offline  # noqa: E402

configure_cartopy_offline()
warnings.filterwarnings("error", category=cartopy.io.DownloadWarning)


@pytest.fixture(autouse=True)
def _no_cartopy_download(monkeypatch):
    """Any attempt to fetch Natural Earth data fails the test, warning filters or not."""

    def refuse(self, format_dict):  # pragma: no cover - only runs on a regression
        raise AssertionError(f"cartopy tried to download {self.url(format_dict)}")

    monkeypatch.setattr(cartopy.io.Downloader, "acquire_resource", refuse)


def make_state_dataset(nt=4, ny=6, nx=8, layers=True, seed=0, nan_frac=0.0):
    """A small CF-like gridded state Dataset (time, [layer,] y, x) with 2-D lat/lon."""
    rng = np.random.default_rng(seed)
    time = np.datetime64("2021-01-01T00:00:00", "ns") + np.arange(nt) * np.timedelta64(1, "D")
    y = np.arange(ny) * 15.0 + 7.5
    x = np.arange(nx) * 15.0 + 7.5
    lat = 38.0 + (y[:, None] - y.mean()) / 111.0 + 0 * x[None, :]
    lon = -60.0 + (x[None, :] - x.mean()) / (111.0 * np.cos(np.deg2rad(38))) + 0 * y[:, None]
    ssh = rng.normal(size=(nt, ny, nx))
    if nan_frac:
        ssh[rng.random(ssh.shape) < nan_frac] = np.nan
    data = {"ssh": (("time", "y", "x"), ssh, {"units": "m", "long_name": "sea surface height"})}
    coords = {"time": time, "y": ("y", y, {"units": "km"}), "x": ("x", x, {"units": "km"}),
              "lat": (("y", "x"), lat), "lon": (("y", "x"), lon)}
    if layers:
        data["psi"] = (("time", "layer", "y", "x"), rng.normal(size=(nt, 2, ny, nx)), {"units": "m2 s-1"})
        coords["layer"] = ("layer", np.array([1, 2]))
    return xr.Dataset(data, coords=coords, attrs={"title": "test state"})


@pytest.fixture
def state_ds():
    return make_state_dataset()


@pytest.fixture
def one_torch_thread():
    """Torch on one thread for the test (training tests: deterministic and fair on a shared machine)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
