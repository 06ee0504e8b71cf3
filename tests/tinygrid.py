"""A tiny smooth QG-like library (ssh and a two-layer psi on an 8 x 8 grid of 20 km cells, daily) for tests.

One copy for the test modules that build window models on it (test_assimilate, test_calibration_tau).
"""

from __future__ import annotations

import numpy as np
import xarray as xr


def smooth_library(n: int = 60, ny: int = 8, nx: int = 8, seed: int = 0) -> xr.Dataset:
    """Smooth random SSH (standardised, m) and psi = (10 ssh, -ssh), ``n`` daily times."""
    rng = np.random.default_rng(seed)
    k = np.fft.fftfreq(ny)[:, None] ** 2 + np.fft.fftfreq(nx)[None, :] ** 2
    ssh = np.real(np.fft.ifft2(np.fft.fft2(rng.normal(size=(n, ny, nx))) * np.exp(-k / 0.02)))
    ssh = (ssh / ssh.std()).astype(np.float32)
    psi = np.stack([10 * ssh, -ssh], axis=1)
    time = np.datetime64("2001-01-01", "ns") + np.arange(n) * np.timedelta64(1, "D")
    return xr.Dataset({"ssh": (("time", "y", "x"), ssh, {"units": "m"}),
                       "psi": (("time", "layer", "y", "x"), psi, {"units": "m2 s-1"})},
                      coords={"time": time, "layer": [1, 2], "y": ("y", np.arange(ny) * 20.0 + 10, {"units": "km"}),
                              "x": ("x", np.arange(nx) * 20.0 + 10, {"units": "km"})})
