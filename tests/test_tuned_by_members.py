"""LETKF settings tuned per ensemble size: ``tuned.json``'s ``qg_altimetry.by_members`` and who reads it."""

import json

import pytest

from oceanda import io
from oceanda.cli import main
from oceanda.errors import ConfigurationError
from oceanda.experiments import qg_twin
from oceanda.experiments.qg_twin import cycled_letkf, qg_letkf_settings
from oceanda.kalman import LETKF, tuned_filter, tuned_settings
from oceanda.kalman import tuned as tuned_mod
from oceanda.kalman.tuned import tuned_members_entry
from oceanda.sampledata import bundled_sample_dir

#: Distinct settings per N, so that a pick of the wrong entry shows.
FAKE = {"10": {"radius_km": 31.0, "inflation": 1.07, "rtps": 0.1, "block": 1, "tuning": {}, "evaluation": {}},
        "20": {"radius_km": 42.0, "inflation": 1.05, "rtps": 0.0, "block": 2, "tuning": {}, "evaluation": {}},
        "40": {"radius_km": 53.0, "inflation": 1.04, "rtps": 0.2, "block": 3, "tuning": {}, "evaluation": {}}}


def _use_table(monkeypatch, by_members):
    """The shipped table with ``qg_altimetry.by_members`` replaced (``"absent"``: removed)."""
    table = json.loads(tuned_mod._table_text())
    if by_members == "absent":
        table["qg_altimetry"].pop("by_members", None)
    else:
        table["qg_altimetry"]["by_members"] = by_members
    monkeypatch.setattr(tuned_mod, "_table_text", lambda: json.dumps(table))
    return table


def _letkf(s):
    return LETKF(radius=s["radius_km"], inflation=s["inflation"], rtps=s["rtps"], block=s["block"])


def test_exact_n_picks_its_entry(monkeypatch):
    _use_table(monkeypatch, FAKE)
    for n in ("10", "20", "40"):
        used, entry = tuned_members_entry("qg_altimetry", int(n))
        assert used == int(n) and entry["radius_km"] == FAKE[n]["radius_km"]
        assert tuned_filter("qg_altimetry", "letkf", members=int(n)) == _letkf(FAKE[n])
    # the caller's overrides still win over the per-N values
    assert tuned_filter("qg_altimetry", members=10, inflation=1.2).inflation == 1.2
    assert tuned_filter("qg_altimetry", members=10, inflation=1.2).radius == 31.0


@pytest.mark.parametrize("members,used", [(2, 10), (14, 10), (15, 20), (28, 20), (29, 40), (1000, 40)])
def test_untuned_n_takes_the_nearest_on_a_log_scale(monkeypatch, members, used):
    # 29 is nearer 20 than 40 in members but nearer 40 in log(members): the log scale decides
    _use_table(monkeypatch, FAKE)
    assert tuned_members_entry("qg_altimetry", members)[0] == used
    assert tuned_filter("qg_altimetry", members=members) == _letkf(FAKE[str(used)])


def test_log_tie_goes_to_the_larger_n(monkeypatch):
    _use_table(monkeypatch, {k: FAKE[k] for k in ("10", "40")})
    assert tuned_members_entry("qg_altimetry", 20)[0] == 40  # log 20 is halfway between log 10 and log 40


def test_without_members_the_entry_itself(monkeypatch):
    table = _use_table(monkeypatch, FAKE)
    top = table["qg_altimetry"]
    want = LETKF(radius=top["radius_km"], inflation=top["inflation"], rtps=top["rtps"], block=top["block"])
    assert tuned_filter("qg_altimetry") == want
    assert tuned_filter("qg_altimetry", "letkf") == want
    assert want != _letkf(FAKE["20"])
    # an entry without a table ignores members; the per-N lookup says there is none
    _use_table(monkeypatch, "absent")
    assert tuned_filter("qg_altimetry", members=10) == want
    assert tuned_filter("lorenz96", "etkf", members=10).inflation == tuned_settings("lorenz96")["etkf"]["inflation"]
    with pytest.raises(ConfigurationError, match="by_members"):
        tuned_members_entry("qg_altimetry", 10)


def test_qg_letkf_settings_use_the_entry_of_the_n_in_use(monkeypatch):
    _use_table(monkeypatch, FAKE)
    f, n = qg_letkf_settings(members=10)
    assert n == 10 and f == _letkf(FAKE["10"])
    f, n = qg_letkf_settings()  # the tuned default size, 20, and its entry
    assert n == tuned_settings("qg_altimetry")["members"] == 20 and f == _letkf(FAKE["20"])
    f, _ = qg_letkf_settings(members=40, radius_km=70.0)
    assert f.radius == 70.0 and f.inflation == FAKE["40"]["inflation"]


def test_shipped_table_is_tuned_per_n():
    top = tuned_settings("qg_altimetry")
    assert top["members"] == 20 and set(top["by_members"]) >= {"10", "20", "40"}
    for n, e in top["by_members"].items():
        assert tuned_members_entry("qg_altimetry", int(n)) == (int(n), e)
        assert e["block"] == 2 and e["rtps"] == 0.0
        assert e["tuning"]["truth"] == "truth_tune.nc"
        assert {"eval_1", "eval_2", "eval_3", "pooled"} <= set(e["evaluation"])
        chosen = e["tuning"]["chosen"]["ssh_rmse_ratio"]
        assert chosen == min(r["ssh_rmse_ratio"] for r in e["tuning"]["grid"])  # selected on the tuning run
    f, _ = qg_letkf_settings(members=10)
    assert f == _letkf(top["by_members"]["10"])


def test_cycled_letkf_follows_the_n(monkeypatch):
    _use_table(monkeypatch, FAKE)
    data = bundled_sample_dir("qg")
    library = io.open_states(data / "library.nc").isel(time=slice(0, 60)).load()
    obs = io.open_obs(data / "obs_altimetry_eval_1.nc", like=library).isel(time=slice(0, 1)).load()
    ds = cycled_letkf(library, obs, members=10)  # the demo's call, at N = 10
    assert (ds.attrs["members"], ds.attrs["loc_radius_km"], ds.attrs["inflation"]) == (10, 31.0, 1.07)
    ds = cycled_letkf(library, obs)  # the demo's default: N = 20 and its entry
    assert (ds.attrs["members"], ds.attrs["loc_radius_km"], ds.attrs["inflation"]) == (20, 42.0, 1.05)


def test_cli_cycle_qg_follows_members(monkeypatch, tmp_path):
    _use_table(monkeypatch, FAKE)
    seen = []
    real = qg_twin.cycle

    def spy(forecast, E0, observations, f, **kw):
        seen.append((E0.shape[0], f))
        return real(forecast, E0, observations, f, **kw)

    monkeypatch.setattr(qg_twin, "cycle", spy)
    out = tmp_path / "cycle.nc"
    assert main(["enkf", "--cycle", "qg", "--members", "10", "--cycles", "1", "--out", str(out), "--quiet"]) == 0
    assert seen[-1] == (10, _letkf(FAKE["10"]))


@pytest.mark.parametrize("bad,what", [
    ([], "table"),
    ({"ten": FAKE["10"]}, "'ten'"),
    ({"1": FAKE["10"]}, "'1'"),
    ({"10": [30.0, 1.06]}, "'10'"),
    ({"10": {k: v for k, v in FAKE["10"].items() if k != "inflation"}}, "inflation"),
    ({"10": {**FAKE["10"], "radius_km": "40"}}, "radius_km"),
    ({"10": {**FAKE["10"], "rtps": 2.0}}, "rtps"),
    ({"10": {**FAKE["10"], "block": 0.5}}, "block"),
    ({"10": {**FAKE["10"], "inflation": float("nan")}}, "inflation"),
])
def test_malformed_by_members_is_one_line_naming_the_file(monkeypatch, capsys, tmp_path, bad, what):
    _use_table(monkeypatch, bad)
    for call in (lambda: tuned_filter("qg_altimetry", members=20), lambda: qg_letkf_settings(members=10)):
        with pytest.raises(ConfigurationError) as err:
            call()
        msg = str(err.value)
        assert "\n" not in msg and "tuned.json" in msg and "by_members" in msg and what in msg, msg
    assert tuned_filter("qg_altimetry") == tuned_filter("qg_altimetry", members=None)  # no members: not read
    out = tmp_path / "unused.nc"
    code = main(["enkf", "--cycle", "qg", "--members", "10", "--cycles", "1", "--out", str(out), "--quiet"])
    err_text = capsys.readouterr().err.strip()
    assert code == 2 and "tuned.json" in err_text and len(err_text.splitlines()) == 1, err_text
    assert not out.exists()
