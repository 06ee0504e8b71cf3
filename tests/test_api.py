"""The front door as a user meets it: ``import oceanda``, the README's Python example, settings errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import oceanda
from oceanda.sampledata import bundled_sample_dir


def test_import_oceanda_is_light_and_lists_the_front_door():
    code = ("import sys, oceanda; assert 'torch' not in sys.modules, 'torch imported'; "
            "assert 'xarray' not in sys.modules, 'xarray imported'; print(len(oceanda.__all__))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    for name in ("open_states", "open_obs", "train", "assimilate", "analyse", "cycle", "evaluate"):
        assert name in oceanda.__all__ and callable(getattr(oceanda, name))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        oceanda.nope  # noqa: B018


def test_readme_python_example(tmp_path):
    data = bundled_sample_dir("qg")
    library = oceanda.open_library(data / "library.nc")
    obs = oceanda.open_obs(data / "obs_altimetry_eval_1.nc", like=library.ds).isel(time=slice(0, 2))
    analysis = oceanda.assimilate(data.parent / "models" / "qg_window", library, obs, mode="local", members=5,
                                  cache_dir=tmp_path / "cache")
    enoi = oceanda.analyse(oceanda.open_states(data / "library.nc"), obs, "enoi", loc_radius_km=100, periodic=True,
                           members=50)
    out = oceanda.write(analysis, tmp_path / "analysis.nc")
    assert out.exists() and analysis.sizes["member"] == 5 and enoi.attrs["method"] == "enoi"
    truth = oceanda.open_states(data / "truth_eval_1.nc")
    metrics = oceanda.evaluate(truth, {"contrastive": analysis, "enoi": enoi}, tmp_path / "report", figures=False,
                               quiet=True)
    assert set(metrics["methods"]) == {"contrastive", "enoi"}
    assert all(np.isfinite(m["rmse"]) for m in metrics["methods"].values())
    with pytest.raises(oceanda.OutputExistsError):
        oceanda.write(analysis, out)


def test_bad_settings_are_configuration_errors_naming_the_setting():
    from oceanda.kalman import LETKF

    with pytest.raises(oceanda.ConfigurationError, match="inflation"):
        LETKF(radius=40.0, inflation=-2.0)
    data = bundled_sample_dir("qg")
    library = oceanda.open_library(data / "library.nc")
    obs = oceanda.open_obs(data / "obs_altimetry_eval_1.nc", like=library.ds).isel(time=slice(0, 1))
    with pytest.raises(oceanda.ConfigurationError, match="members"):
        oceanda.assimilate(data.parent / "models" / "qg_field", library, obs, members=0)


def test_cycle_through_the_front_door_with_any_forecast():
    from oceanda.kalman import ETKF, Observations

    rng = np.random.default_rng(0)
    truth = np.zeros(3)
    obs = [Observations(y=rng.normal(truth, 0.1), error=np.full(3, 0.1), H=np.arange(3), time=float(k + 1))
           for k in range(5)]
    res = oceanda.cycle(lambda E, t0, t1: E, rng.normal(size=(10, 3)), obs, ETKF(), truth=np.tile(truth, (5, 1)),
                        progress=False)
    summary = oceanda.cycle_summary(res, burn_in=0)
    assert summary["rmse_a"] < 0.2 < float(res.stats["rmse_f"][0])
