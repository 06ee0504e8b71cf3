"""The typed-settings base: validation on construction, versioned JSON round trip, one-line errors."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from oceanda.errors import ConfigurationError, OceandaError
from oceanda.settings import Settings, check_choice, check_number


@dataclasses.dataclass(frozen=True)
class Toy(Settings):
    SCHEMA = "test.Toy"
    VERSION = 2

    tau: float = 0.1
    members: int = 20
    kind: str = "cosine"
    hidden: tuple[int, ...] = (8, 8)

    def validate(self) -> None:
        check_number("tau", self.tau, lo=0, lo_open=True)
        check_number("members", self.members, lo=1, integer=True)
        check_choice("kind", self.kind, ("cosine", "inner"))


def test_round_trip_through_json_keeps_every_field_and_tuples():
    t = Toy(tau=0.5, members=3, kind="inner", hidden=(4, 2))
    d = json.loads(json.dumps(t.to_dict()))
    assert d["schema"] == "test.Toy" and d["version"] == 2
    assert Toy.from_dict(d) == t


def test_old_dicts_without_schema_or_version_load_with_defaults():
    assert Toy.from_dict({"tau": 0.2}) == Toy(tau=0.2)


@pytest.mark.parametrize("bad, message", [
    ({"tau": -1}, "tau=-1; expected a finite number > 0"),
    ({"tau": float("nan")}, "tau=nan"),
    ({"tau": math.inf}, "tau=inf"),
    ({"tau": True}, "tau=True; expected a number"),
    ({"members": 2.5}, "members=2.5; expected an integer"),
    ({"members": 0}, "members=0; expected an integer >= 1"),
    ({"kind": "dot"}, "kind='dot'; expected one of ['cosine', 'inner']"),
])
def test_bad_values_name_the_setting_value_and_range(bad, message):
    with pytest.raises(ConfigurationError) as err:
        Toy(**bad)
    assert message in str(err.value)
    assert isinstance(err.value, OceandaError) and isinstance(err.value, ValueError)
    assert "\n" not in str(err.value)


def test_from_dict_refuses_unknown_keys_other_schemas_and_newer_versions():
    with pytest.raises(ConfigurationError, match=r"model/config.json: unknown test.Toy setting\(s\) \['tua'\]"):
        Toy.from_dict({"tua": 1.0}, where="model/config.json")
    with pytest.raises(ConfigurationError, match="schema 'other'"):
        Toy.from_dict({"schema": "other"})
    with pytest.raises(ConfigurationError, match="version 3"):
        Toy.from_dict({"version": 3})
    with pytest.raises(ConfigurationError, match="cfg: tau=0"):
        Toy.from_dict({"tau": 0}, where="cfg")
    with pytest.raises(ConfigurationError, match="expected a JSON object"):
        Toy.from_dict([1, 2])  # type: ignore[arg-type]


def test_replace_validates_and_ignores_none():
    t = Toy()
    assert t.replace(tau=None, members=5) == Toy(members=5)
    with pytest.raises(ConfigurationError, match="members=-1"):
        t.replace(members=-1)


def test_check_number_bounds():
    check_number("x", 1.0, lo=1.0, hi=1.0)
    check_number("x", None, optional=True)
    with pytest.raises(ConfigurationError, match=r"x=1.0; expected a finite number in \(1.0, 2\]"):
        check_number("x", 1.0, lo=1.0, hi=2, lo_open=True)
    with pytest.raises(ConfigurationError, match="x=None"):
        check_number("x", None)


def test_numpy_numbers_are_numbers():
    import numpy as np

    t = Toy(tau=np.float32(0.5), members=np.int64(3))
    assert t.members == 3 and type(t.members) is int and type(t.tau) is float
    json.dumps(t.to_dict())  # plain Python values: checkpoints and cycling metadata are JSON

    from oceanda.kalman import EnKF

    f = EnKF(center_perturbations=np.False_)
    assert f.center_perturbations is False and json.loads(json.dumps(f.to_dict()))["center_perturbations"] is False
    with pytest.raises(ConfigurationError, match="expected a number"):
        Toy(tau=np.bool_(True))
