"""`oceanda train --kind window --patterns`: one window model trained on a mixture of observation patterns."""

import json

import numpy as np
import pytest
import xarray as xr

from oceanda.cli import main
from tinygrid import smooth_library


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def files(tmp_path):
    """Tiny states (8 x 8, 20 km cells) and a gridded SSH observation file (half the cells, ssh_error)."""
    states = smooth_library(40, 8, 8)
    rng = np.random.default_rng(3)
    ssh = states["ssh"].values
    obs = xr.Dataset({"ssh": (("time", "y", "x"), np.where(rng.random(ssh.shape) < 0.5, ssh, np.nan).astype(np.float32),
                              {"units": "m"}),
                      "ssh_error": ((), np.float32(0.05), {"units": "m"})}, coords=states[["ssh"]].coords)
    states.to_netcdf(tmp_path / "states.nc")
    obs.to_netcdf(tmp_path / "obs.nc")
    return ["train", "--states", str(tmp_path / "states.nc"), "--obs", str(tmp_path / "obs.nc")]


def _run(argv, capsys):
    capsys.readouterr()
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse: the option's value
        rc = exc.code
    return rc, capsys.readouterr()


def _refused(argv, capsys, option, out):
    rc, cap = _run(argv, capsys)
    lines = [ln for ln in cap.err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in cap.err, cap.err
    assert option in lines[0], lines[0]
    assert not out.exists()
    return lines[0]


TINY = ["--kind", "window", "--window-size", "4", "--halo", "2", "--epochs", "2", "--seconds", "5",
        "--embedding-dim", "8", "--quiet", "--allow-weak"]


def test_a_pattern_model_from_the_cli(files, tmp_path, capsys):
    out = tmp_path / "m"
    rc, cap = _run(files + ["--out", out, *TINY, "--patterns", "tracks,points", "--sigma-range", "0.05,0.2"], capsys)
    assert rc == 0, cap.err
    assert "trained a window model: 2 epochs" in cap.out and "chance" in cap.out  # retrieval next to chance
    extra = json.loads((out / "config.json").read_text())["extra"]
    assert extra["obs_error_channel"] is True
    assert extra["observation_patterns"]["families"] == ["tracks", "points"]
    assert extra["observation_patterns"]["sigma_fraction"] == [0.05, 0.2]
    assert [c[0] for c in extra["obs_channels"]] == ["ssh"]  # --obs names the observed variables


def test_all_is_the_default_mixture_and_the_help_says_so(capsys):
    from oceanda.analysis.obs_patterns import DEFAULT_FAMILIES, PatternMix
    from oceanda.commands.train import _families
    from oceanda.analysis.obs_patterns import pattern_mix

    assert pattern_mix(_families("all")).families == DEFAULT_FAMILIES
    assert pattern_mix({"families": _families("clouds")}).sigma_fraction == PatternMix().sigma_fraction
    rc, cap = _run(["train", "--help"], capsys)
    text = " ".join(cap.out.split())
    assert rc == 0 and "--patterns" in text and "--sigma-range" in text
    assert f"all (= {','.join(DEFAULT_FAMILIES)})" in text
    assert "default {},{}".format(*(f"{v:g}" for v in PatternMix().sigma_fraction)) in text
    assert "the mask and the observation error as encoder inputs" in text and "no retraining" in text


@pytest.mark.parametrize("extra, option, says", [
    (["--kind", "field", "--patterns", "tracks"], "--patterns", "--kind window"),
    (["--patterns", "tracks,waves"], "--patterns", "tracks,clouds,points,swaths"),
    (["--patterns", "tracks,tracks"], "--patterns", "distinct"),
    (["--patterns", "all", "--sigma-range", "0.3"], "--sigma-range", "LO,HI"),
    (["--patterns", "all", "--sigma-range", "0.3,0.1"], "--sigma-range", "LO <= HI"),
    (["--patterns", "all", "--sigma-range", "0,0.1"], "--sigma-range", "0 < LO"),
    (["--patterns", "all", "--sigma-range", "a,b"], "--sigma-range", "two finite numbers"),
    (["--sigma-range", "0.05,0.2"], "--sigma-range", "--patterns"),
])
def test_bad_pattern_options_are_one_line_errors(files, tmp_path, capsys, extra, option, says):
    out = tmp_path / "m"
    line = _refused(files + ["--out", out, *extra], capsys, option, out)
    assert says in line, line


def test_the_api_refuses_patterns_for_field_models(files, tmp_path):
    import oceanda
    from oceanda.errors import ConfigurationError

    states = oceanda.api.open_states(tmp_path / "states.nc")
    obs = oceanda.api.open_obs(tmp_path / "obs.nc", like=states)
    with pytest.raises(ConfigurationError, match=r"\['patterns'\] do not apply to kind='field'"):
        oceanda.api.train(states, obs, tmp_path / "f", kind="field", patterns="all")
    with pytest.raises(ConfigurationError, match="patterns family='waves'"):
        oceanda.api.train(states, obs, tmp_path / "f", patterns=["waves"])
    assert not (tmp_path / "f").exists()
