"""Every numeric option checked, every output checked against every input, --units checked against the data.

Each refused command line must exit with code 2, print one line on stderr naming the option (as the user
spelt it) or the file, print no traceback, and create nothing at its output path. The bad values fail
before any heavy work, so every case runs in well under a second on the bundled sample (read-only).
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from oceanda import api
from oceanda.errors import ConfigurationError, DataValidationError, OceandaError, OutputExistsError

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
QG = SAMPLE / "qg"
MODEL = SAMPLE / "models" / "qg_window"

ENOI = ["enkf", "--method", "enoi", "--ensemble", QG / "library.nc", "--obs", QG / "obs_altimetry_eval_1.nc"]
LETKF = ["enkf", "--method", "letkf", "--ensemble", QG / "library.nc", "--obs", QG / "obs_altimetry_eval_1.nc"]
CYCLE = ["enkf", "--cycle", "lorenz96", "--loc-radius", "12"]
OBSERVE = ["observe", "--states", QG / "truth_eval_1.nc", "--operator"]
ASSIMILATE = ["assimilate", "--model", MODEL, "--library", QG / "library.nc", "--obs", QG / "obs_altimetry_eval_1.nc"]
TRAIN = ["train", "--states", QG / "truth_tune.nc", "--obs", QG / "obs_altimetry_tune.nc"]
FIELD = TRAIN + ["--kind", "field"]
SAMPLE_DATA = ["sample-data", "--testbed", "lorenz96", "--size", "tiny"]


def run_cli(argv, capsys) -> tuple[int, str]:
    """``oceanda argv`` in this process: (exit code, stderr); argparse's SystemExit counts as its code."""
    from oceanda.cli import main

    capsys.readouterr()
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:
        rc = exc.code
    return rc, capsys.readouterr().err


def refused(argv, capsys, name: str, out: Path | None = None) -> str:
    """Assert the promises of a refused command; return its one error line."""
    rc, err = run_cli(argv, capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, err
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    assert name in lines[0], lines[0]
    if out is not None:
        assert not out.exists(), out
        assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]
    return lines[0]


def digest(path: Path) -> str:
    return hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()


# ----------------------------------------------------------------------------------------------
# Numeric options: type, finiteness, range (argparse), and what depends on the data (the API)
# ----------------------------------------------------------------------------------------------

CASES = [
    # enkf, one-shot
    ("alpha-negative", ENOI, ["--alpha", "-1"], "--alpha=-1"),
    ("alpha-nan", ENOI, ["--alpha", "nan"], "--alpha=nan"),
    ("alpha-huge", ENOI, ["--alpha", "1e300"], "--alpha=1e300"),
    ("inflation-zero", LETKF, ["--inflation", "0"], "--inflation=0"),
    ("inflation-negative", LETKF, ["--inflation", "-2"], "--inflation=-2"),
    ("inflation-nan", LETKF, ["--inflation", "nan"], "--inflation=nan"),
    ("rtps-2", LETKF, ["--rtps", "2"], "--rtps=2"),
    ("rtpp-negative", LETKF, ["--rtpp", "-1"], "--rtpp=-1"),
    ("loc-radius-zero", ENOI, ["--loc-radius", "0"], "--loc-radius=0"),
    ("loc-radius-negative", ENOI, ["--loc-radius", "-100"], "--loc-radius=-100"),
    ("loc-radius-nan", ENOI, ["--loc-radius", "nan"], "--loc-radius=nan"),
    ("block-negative", LETKF, ["--block", "-1"], "--block=-1"),
    ("block-zero", LETKF, ["--block", "0"], "--block=0"),
    ("block-fraction", LETKF, ["--block", "2.5"], "--block=2.5"),
    ("block-beyond-grid", LETKF, ["--block", "65"], "--block=65"),
    ("block-beyond-int64", LETKF, ["--block", "1e300"], "--block=1e300"),
    ("members-zero", ENOI, ["--members", "0"], "--members=0"),
    ("members-beyond-library", ENOI, ["--members", "100000000"], "--members=100000000"),
    ("seed-negative", ENOI, ["--seed", "-1"], "--seed=-1"),
    ("seed-beyond-32-bits", ENOI, ["--seed", str(2**32)], f"--seed={2**32}"),
    ("seed-text", ENOI, ["--seed", "abc"], "--seed=abc"),
    ("cycle-option-one-shot", ENOI, ["--cycles", "3"], "--cycles"),
    # enkf --cycle
    ("cycles-zero", CYCLE, ["--cycles", "0"], "--cycles=0"),
    ("cycles-memory", CYCLE, ["--cycles", str(10**15)], f"--cycles={10**15}"),
    ("cycle-members-one", CYCLE, ["--members", "1"], "--members=1"),
    ("checkpoint-every-zero", CYCLE, ["--checkpoint-every", "0"], "--checkpoint-every=0"),
    ("burn-in-negative", CYCLE, ["--burn-in", "-1"], "--burn-in=-1"),
    ("one-shot-option-cycle", CYCLE, ["--alpha", "0.5"], "--alpha"),
    # observe
    ("sigma-negative", OBSERVE + ["altimetry"], ["--sigma", "-1"], "--sigma=-1"),
    ("sigma-inf", OBSERVE + ["altimetry"], ["--sigma", "inf"], "--sigma=inf"),
    ("sigma-float32-overflow", OBSERVE + ["altimetry"], ["--sigma", "1e300"], "--sigma=1e300"),
    ("sigma-fraction-zero", OBSERVE + ["altimetry"], ["--sigma-fraction", "0"], "--sigma-fraction=0"),
    ("observe-seed-negative", OBSERVE + ["altimetry"], ["--seed", "-1"], "--seed=-1"),
    ("satellites-zero", OBSERVE + ["altimetry"], ["--satellites", "0"], "--satellites=0"),
    ("passes-per-day-huge", OBSERVE + ["altimetry"], ["--passes-per-day", "1000"], "--passes-per-day=1000"),
    ("repeat-days-zero", OBSERVE + ["altimetry"], ["--repeat-days", "0"], "--repeat-days=0"),
    ("track-spacing-zero", OBSERVE + ["altimetry"], ["--track-spacing-km", "0"], "--track-spacing-km=0"),
    ("track-width-negative", OBSERVE + ["altimetry"], ["--track-width-km", "-1"], "--track-width-km=-1"),
    ("angle-along-x", OBSERVE + ["altimetry"], ["--angle-deg", "0"], "--angle-deg=0"),
    ("along-track-memory", OBSERVE + ["points"], ["--along-track-km", "1e-7"], "--along-track-km=1e-07"),
    ("cloud-fraction-2", OBSERVE + ["gappy"], ["--cloud-fraction", "2"], "--cloud-fraction=2"),
    ("cloud-fraction-reversed", OBSERVE + ["gappy"], ["--cloud-fraction", "0.5", "0.2"], "--cloud-fraction="),
    ("cloud-size-zero", OBSERVE + ["gappy"], ["--cloud-size-km", "0"], "--cloud-size-km=0"),
    ("cloud-size-overflow", OBSERVE + ["gappy"], ["--cloud-size-km", "1e300"], "--cloud-size-km=1e300"),
    ("layer-of-a-surface-field", OBSERVE + ["gappy"], ["--layer", "7"], "--layer=7"),
    ("layer-beyond-levels", OBSERVE + ["gappy"], ["--layer", "2", "--variables", "psi"], "--layer=2"),
    ("profiles-memory", OBSERVE + ["profiles"], ["--profiles-per-day", "1e12"], "--profiles-per-day="),
    # assimilate
    ("tau-zero", ASSIMILATE, ["--tau", "0"], "--tau=0"),
    ("tau-nan", ASSIMILATE, ["--tau", "nan"], "--tau=nan"),
    ("assimilate-members-zero", ASSIMILATE, ["--members", "0"], "--members=0"),
    ("assimilate-members-memory", ASSIMILATE, ["--members", "100000000"], "--members=100000000"),
    ("assimilate-seed-negative", ASSIMILATE, ["--seed", "-1"], "--seed=-1"),
    ("top-k-zero", ASSIMILATE, ["--top-k", "0"], "--top-k=0"),
    ("top-k-beyond-library", ASSIMILATE, ["--top-k", "409"], "--top-k=409"),
    ("spread-factor-nan", ASSIMILATE, ["--spread-factor", "nan"], "--spread-factor=nan"),
    ("min-ess-negative", ASSIMILATE, ["--min-ess", "-1"], "--min-ess=-1"),
    ("scheduler-malformed", ASSIMILATE, ["--scheduler", "garbage"], "--scheduler='garbage'"),
    # train (window model by default on the 64 x 64 sample)
    ("epochs-zero", TRAIN, ["--epochs", "0"], "--epochs=0"),
    ("embedding-dim-zero", TRAIN, ["--embedding-dim", "0"], "--embedding-dim=0"),
    ("embedding-dim-memory", TRAIN, ["--embedding-dim", str(10**12)], f"--embedding-dim={10**12}"),
    ("train-seed-negative", TRAIN, ["--seed", "-1"], "--seed=-1"),
    ("lr-nan", TRAIN, ["--lr", "nan"], "--lr=nan"),
    ("lr-diverging", TRAIN, ["--lr", "2"], "--lr=2"),
    ("window-zero", TRAIN, ["--window", "0"], "--window=0"),
    ("obs-days-zero", TRAIN, ["--obs-days", "0"], "--obs-days=0"),
    ("obs-days-beyond-run", TRAIN, ["--obs-days", "100"], "--obs-days=100"),
    ("train-tau-zero", TRAIN, ["--tau", "0"], "--tau=0"),
    ("seconds-zero", TRAIN, ["--seconds", "0"], "--seconds=0"),
    ("seconds-nan", TRAIN, ["--seconds", "nan"], "--seconds=nan"),
    ("batch-size-one", TRAIN, ["--batch-size", "1"], "--batch-size=1"),
    ("batch-size-beyond-pairs", TRAIN, ["--batch-size", "100000"], "--batch-size=100000"),
    ("window-size-zero", TRAIN, ["--window-size", "0"], "--window-size=0"),
    ("window-stride-zero", TRAIN, ["--window-stride", "0"], "--window-stride=0"),
    ("halo-negative", TRAIN, ["--halo", "-1"], "--halo=-1"),
    ("halo-beyond-grid", TRAIN, ["--halo", "1000000"], "--halo=1000000"),
    ("depth-zero", FIELD, ["--depth", "0"], "--depth=0"),
    ("width-zero", FIELD, ["--width", "0"], "--width=0"),
    ("width-memory", FIELD, ["--width", "100000"], "--width=100000"),
    ("input-pool-zero", FIELD, ["--input-pool", "0"], "--input-pool=0"),
    ("input-pool-beyond-grid", FIELD, ["--input-pool", "65"], "--input-pool=65"),
    ("val-fraction-one", FIELD, ["--val-fraction", "1"], "--val-fraction=1"),
    ("val-fraction-zero", FIELD, ["--val-fraction", "0"], "--val-fraction=0"),
    ("patience-zero", FIELD, ["--patience", "0"], "--patience=0"),
    ("field-block-zero", FIELD, ["--block", "0"], "--block=0"),
    # demo, sample-data, reproduce
    ("demo-members-zero", ["demo"], ["--members", "0"], "--members=0"),
    ("demo-days-zero", ["demo"], ["--days", "0"], "--days=0"),
    ("demo-seed-negative", ["demo"], ["--seed", "-1"], "--seed=-1"),
    ("demo-unknown-truth", ["demo"], ["--truth", "eval_9"], "--truth='eval_9'"),
    ("sample-data-seed-negative", SAMPLE_DATA, ["--seed", "-1"], "--seed=-1"),
    ("sample-data-seed-fraction", SAMPLE_DATA, ["--seed", "2.5"], "--seed=2.5"),
    ("reproduce-seed-negative", ["reproduce", "baptista2025", "--quick"], ["--seed", "-1"], "--seed=-1"),
]
FOLDER_OUTPUTS = {"train", "demo", "sample-data", "reproduce", "evaluate"}


@pytest.mark.parametrize("base,extra,name", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_bad_option_is_one_line_exit_2_and_writes_nothing(base, extra, name, tmp_path, capsys):
    out = tmp_path / ("out" if base[0] in FOLDER_OUTPUTS else "out.nc")
    refused([*base, *extra, "--out", out], capsys, name, out)


def test_evaluate_time_out_of_range_fails_before_the_report_folder(tmp_path, capsys):
    lib, truth = api.open_states(QG / "library.nc"), api.open_states(QG / "truth_eval_1.nc")
    analysis = tmp_path / "clim.nc"
    api.write(api.climatology(lib, truth.time.values[:3], members=3), analysis)
    out = tmp_path / "report"
    line = refused(["evaluate", "--truth", QG / "truth_eval_1.nc", "--analysis", f"a={analysis}", "--time", "1000",
                    "--out", out], capsys, "--time", out)
    assert "expected -3 .. 2" in line


def test_the_error_says_what_is_expected(capsys, tmp_path):
    line = refused([*LETKF, "--inflation", "0", "--out", tmp_path / "a.nc"], capsys, "--inflation")
    assert "--inflation=0; expected a finite number in (0, 100]" in line
    line = refused([*ENOI, "--loc-radius", "0", "--out", tmp_path / "a.nc"], capsys, "--loc-radius")
    assert "or inf for no localisation" in line
    line = refused([*ENOI, "--members", "100000000", "--out", tmp_path / "a.nc"], capsys, "--members")
    assert "at most the 408 states" in line


def test_argparse_errors_are_one_line_too(capsys, tmp_path):
    refused(["enkf", "--method", "enoi"], capsys, "--out")  # a required option missing: no usage block
    refused([*ENOI, "--method", "kalman", "--out", tmp_path / "a.nc"], capsys, "--method")


def test_valid_spellings_of_numbers_parse():
    from oceanda.commands import number, positive_int, seed_int

    assert positive_int("20") == 20 and positive_int("20.0") == 20 and positive_int("1e3") == 1000
    assert isinstance(positive_int("20.0"), int)
    assert seed_int(str(2**32 - 1)) == 2**32 - 1
    radius = number(lo=0.0, lo_open=True, inf=True)
    assert radius("inf") == math.inf and radius("100") == 100.0


def test_cli_spelling_renames_only_the_leading_setting():
    from oceanda.commands import cli_spelling

    with pytest.raises(ConfigurationError, match=r"^--members=5; expected"):
        with cli_spelling(members="--members"):
            raise ConfigurationError("members=5; expected at most 3")
    with pytest.raises(DataValidationError, match=r"^lib.nc: members=5"):
        with cli_spelling(members="--members"):
            raise DataValidationError("lib.nc: members=5")


def test_valid_options_still_run(tmp_path, capsys):
    out = tmp_path / "l96.nc"
    rc, err = run_cli([*CYCLE, "--method", "etkf", "--cycles", "5", "--members", "10", "--burn-in", "0",
                       "--inflation", "1.02", "--seed", "4294967295", "--quiet", "--out", out], capsys)
    assert rc == 0 and out.exists(), err
    obs = tmp_path / "o.nc"
    rc, err = run_cli([*OBSERVE, "altimetry", "--seed", "0", "--sigma-fraction", "0.1", "--units", "ssh=m",
                       "--quiet", "--out", obs], capsys)
    assert rc == 0 and obs.exists(), err


# ----------------------------------------------------------------------------------------------
# --units VAR=UNITS naming no variable of the inputs
# ----------------------------------------------------------------------------------------------

UNITS_CASES = [
    ("enkf", [*ENOI, "--loc-radius", "100"], "out.nc"),
    ("assimilate", ASSIMILATE, "out.nc"),
    ("train", TRAIN, "out"),
    ("observe", OBSERVE + ["altimetry"], "out.nc"),
    ("evaluate", ["evaluate", "--truth", QG / "truth_eval_1.nc", "--analysis", f"a={QG / 'truth_eval_2.nc'}"], "out"),
]


@pytest.mark.parametrize("base,out_name", [c[1:] for c in UNITS_CASES], ids=[c[0] for c in UNITS_CASES])
def test_units_for_a_variable_no_input_has_are_refused(base, out_name, tmp_path, capsys):
    out = tmp_path / out_name
    line = refused([*base, "--units", "ssh=m", "sstt=degC", "--out", out], capsys, "--units sstt=degC", out)
    assert "'sstt'" in line and "ssh=m" not in line


def test_units_names_as_written_in_the_files_count(tmp_path):
    """An observed ``sla`` is read as the state ``ssh``: ``--units sla=m`` names a variable of the inputs."""
    path = tmp_path / "raw.nc"
    xr.Dataset({"sla": (("time",), np.zeros(3))}).to_netcdf(path)
    renamed = xr.Dataset({"ssh": (("time",), np.zeros(3))})
    api.check_units({"sla": "m"}, [renamed], [path])
    with pytest.raises(ConfigurationError, match="--units foo=m: no variable 'foo'"):
        api.check_units({"foo": "m"}, [renamed], [path])
    api.check_units(None, [renamed])


# ----------------------------------------------------------------------------------------------
# Path identity: no output is an input, holds one, or lies in an input folder -- before any work
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def inputs(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    for name in ("obs_altimetry_eval_1.nc", "truth_eval_1.nc"):
        (d / name).write_bytes((QG / name).read_bytes())
    (d / "model").mkdir()
    for name in ("config.json", "model.safetensors"):
        (d / "model" / name).write_bytes((MODEL / name).read_bytes())
    (d / "link.nc").symlink_to(d / "obs_altimetry_eval_1.nc")
    os.link(d / "obs_altimetry_eval_1.nc", d / "hard.nc")
    return d


@pytest.mark.parametrize("target", ["obs_altimetry_eval_1.nc", "link.nc", "hard.nc"])
@pytest.mark.parametrize("verb", ["enkf", "assimilate"])
def test_an_output_over_an_input_is_refused_even_with_overwrite(verb, target, inputs, capsys):
    obs = inputs / "obs_altimetry_eval_1.nc"
    before = digest(obs)
    base = ([*ENOI[:5], "--obs", obs, "--loc-radius", "100"] if verb == "enkf"
            else ["assimilate", "--model", inputs / "model", "--library", QG / "library.nc", "--obs", obs])
    refused([*base, "--out", inputs / target, "--overwrite"], capsys, str(inputs / target))
    assert digest(obs) == before


def test_a_glob_of_inputs_is_expanded_before_the_comparison(inputs, capsys):
    obs = inputs / "obs_altimetry_eval_1.nc"
    before = digest(obs)
    refused([*ENOI[:5], "--obs", str(inputs / "obs_*.nc"), "--out", obs, "--overwrite"], capsys, str(obs))
    assert digest(obs) == before


def test_assimilate_never_writes_into_the_model(inputs, tmp_path, capsys):
    base = ["assimilate", "--model", inputs / "model", "--library", QG / "library.nc",
            "--obs", inputs / "obs_altimetry_eval_1.nc"]
    refused([*base, "--out", inputs / "model" / "a.nc"], capsys, "model")
    refused([*base, "--out", tmp_path / "a.nc", "--cache-dir", inputs / "model"], capsys, "model")
    refused([*base, "--out", tmp_path / "a.nc", "--cache-dir", inputs], capsys, str(inputs))
    refused([*base, "--out", tmp_path / "c", "--cache-dir", tmp_path / "c"], capsys, str(tmp_path / "c"))
    assert sorted(p.name for p in (inputs / "model").iterdir()) == ["config.json", "model.safetensors"]


def test_every_writing_verb_refuses_its_input_as_output(inputs, tmp_path, capsys):
    truth, obs = inputs / "truth_eval_1.nc", inputs / "obs_altimetry_eval_1.nc"
    before = {p: digest(p) for p in (truth, obs)}
    refused(["observe", "--states", truth, "--operator", "altimetry", "--out", truth, "--overwrite"], capsys, str(truth))
    refused(["train", "--states", truth, "--obs", obs, "--out", inputs, "--overwrite"], capsys, str(inputs))
    refused(["train", "--states", truth, "--obs", obs, "--out", truth, "--overwrite"], capsys, str(truth))
    refused(["evaluate", "--truth", truth, "--analysis", f"a={obs}", "--out", inputs, "--overwrite"], capsys, str(inputs))
    refused(["evaluate", "--truth", truth, "--analysis", f"a={obs}", "--out", obs, "--overwrite"], capsys, str(obs))
    ck = tmp_path / "ck"
    ck.mkdir()
    refused([*CYCLE, "--cycles", "3", "--checkpoint-dir", ck, "--out", ck, "--overwrite"], capsys, str(ck))
    assert {p: digest(p) for p in before} == before


def test_demo_never_writes_into_the_bundled_sample(capsys):
    refused(["demo", "--out", QG / "demo_out"], capsys, str(QG / "demo_out"))
    assert not (QG / "demo_out").exists()


def test_check_outputs_in_the_api(inputs, tmp_path):
    obs = inputs / "obs_altimetry_eval_1.nc"
    new = tmp_path / "new.nc"
    assert api.check_outputs([obs, None], [new, None]) == [new, None]
    with pytest.raises(OutputExistsError, match="is the input"):
        api.check_outputs([str(inputs / "*.nc")], [inputs / "hard.nc"], overwrite=True)
    with pytest.raises(OutputExistsError, match="exists already"):
        api.check_outputs([obs], [inputs / "truth_eval_1.nc"])
    api.check_outputs([obs], [inputs / "truth_eval_1.nc"], overwrite=True)  # an existing non-input file: fine
    with pytest.raises(OutputExistsError):
        api.check_outputs([obs], [], folders=[inputs])  # a folder holding an input
    api.check_cache_dir(inputs / "model" / "library_cache", inputs / "model", [obs])  # the default place: fine


# ----------------------------------------------------------------------------------------------
# The Python API refuses the same values (errors name its keywords)
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample():
    lib = api.open_states(QG / "library.nc")
    obs = api.open_obs(QG / "obs_altimetry_eval_1.nc", like=lib)
    return lib, obs


@pytest.mark.parametrize("settings,name", [
    ({"alpha": -1.0}, "alpha=-1.0"), ({"alpha": math.nan}, "alpha=nan"), ({"members": 10**8}, "members=100000000"),
    ({"members": 1}, "members=1"), ({"rng": -1}, "rng=-1"), ({"block": 0}, "block=0"), ({"block": 65}, "block=65"),
])
def test_api_analyse_refuses_bad_settings(sample, settings, name):
    lib, obs = sample
    with pytest.raises(ConfigurationError, match=name.replace("(", r"\(")):
        api.analyse(lib, obs, "enoi", loc_radius_km=100.0, **settings)


def test_api_refuses_bad_seeds_and_sizes(sample, tmp_path):
    lib, obs = sample
    truth = api.open_states(QG / "truth_eval_1.nc")
    with pytest.raises(ConfigurationError, match="seed=-1"):
        api.observe_states(truth, "altimetry", seed=-1)
    with pytest.raises(DataValidationError, match="along_track_km=1e-07: needs"):
        api.observe_states(truth, "points", along_track_km=1e-7)
    with pytest.raises(ConfigurationError, match="members=1"):
        api.run_twin("lorenz96", "etkf", members=1, cycles=3)
    with pytest.raises(ConfigurationError, match="members=0"):
        api.climatology(lib, truth.time.values, members=0)
    with pytest.raises(ConfigurationError, match="seed=-1"):
        api.demo(tmp_path / "demo", seed=-1)
    with pytest.raises(ConfigurationError, match="seed=-1"):
        api.sample_data("lorenz96", tmp_path / "s", seed=-1, size="tiny")
    with pytest.raises(ConfigurationError, match="burn_in=-1"):
        api.cycle_summary(None, burn_in=-1)
    assert not (tmp_path / "demo").exists() and not (tmp_path / "s").exists()


@pytest.mark.parametrize("settings,name", [
    ({"epochs": 0}, "epochs=0"), ({"embedding_dim": 0}, "embedding_dim=0"), ({"seed": -1}, "seed=-1"),
    ({"seed": 2**32}, f"seed={2**32}"), ({"obs_days": 0}, "obs_days=0"), ({"lr": math.nan}, "lr=nan"),
    ({"halo": 10**6}, "halo=1000000"), ({"kind": "field", "cnn": {"width": 0}}, "width=0"),
])
def test_api_train_refuses_before_writing(settings, name, tmp_path):
    states = api.open_states(QG / "truth_tune.nc")
    obs = api.open_obs(QG / "obs_altimetry_tune.nc", like=states)
    with pytest.raises(OceandaError, match=name):
        api.train(states, obs, tmp_path / "m", **settings)
    assert not (tmp_path / "m").exists()


def test_typed_settings_hold_the_same_ranges():
    from oceanda.analysis.window_training import WindowTrainingConfig
    from oceanda.contrastive.training import TrainConfig
    from oceanda.kalman.methods import LETKF, EnOI

    for bad in ({"seed": 2**32}, {"lr": 2.0}, {"epochs": 0}):
        with pytest.raises(ConfigurationError, match=next(iter(bad))):
            TrainConfig(**bad)
    with pytest.raises(ConfigurationError, match="tau"):
        WindowTrainingConfig(tau=1e-9)
    with pytest.raises(ConfigurationError, match="members=1"):
        EnOI(members=1)
    with pytest.raises(ConfigurationError, match="inflation=1000"):
        LETKF(radius=100.0, inflation=1000.0)
    assert TrainConfig(seed=2**32 - 1, lr=1.0).seed == 2**32 - 1
