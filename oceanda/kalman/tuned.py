"""The tuned filter settings shipped in ``tuned.json``: the one loader.

Why one loader: the tuned values (inflation, localisation radius, ensemble size) are the defaults of
every twin experiment, the demo and the CLI; each used to read the file (or a fallback literal) in
its own way. ``tuned.json`` is written by ``benchmarks/bench_l96.py`` and
``benchmarks/tune_qg_letkf.py``; read it with :func:`tuned_settings` (the raw entries) or
:func:`tuned_filter` (a configured :class:`~oceanda.kalman.methods.Filter`).

Settings per ensemble size: an entry may hold a ``by_members`` table, keyed by the ensemble size as a
string (``"10"``, ``"20"``, ``"40"``), each value the settings tuned for that N (``radius_km``,
``inflation``, ``rtps``, ``block``) with their scores (``tuning``, ``evaluation``). Why: the best
localisation radius and inflation depend on N (sampling noise of N members' covariances); one entry
tuned at N = 20 is 18 % off at N = 10 on the QG sample. :func:`tuned_members_entry` picks the entry
for an N: the exact one, else the nearest tuned N on a log scale (ties: the larger N), since the
settings vary with log N rather than N (the spurious correlations scale as 1/sqrt(N)).
"""

from __future__ import annotations

import json
from fractions import Fraction
from functools import lru_cache
from importlib import resources
from typing import Any

from oceanda.errors import ConfigurationError
from oceanda.kalman.methods import Filter, make_filter
from oceanda.settings import check_number

#: Keys of ``tuned.json`` entries named differently from the filter settings.
_ALIASES = {"radius_km": "radius"}
#: The filter settings a ``by_members`` entry holds, with the range each must lie in.
_PER_MEMBERS = {"radius_km": {"lo": 0.0, "lo_open": True}, "inflation": {"lo": 0.0, "lo_open": True},
                "rtps": {"lo": 0.0, "hi": 1.0}, "block": {"lo": 1, "integer": True}}
#: Entries whose ``by_members`` settings are not the LETKF's: their numbers and bounds.
_PER_MEMBERS_OF = {"qg_contrastive_cycle": {"hybrid_beta": {"lo": 0.0, "hi": 1.0, "hi_open": True}}}


@lru_cache(maxsize=1)
def _table_text() -> str:
    return resources.files("oceanda.kalman").joinpath("tuned.json").read_text()


def tuned_settings(name: str | None = None) -> Any:
    """Tuned filter settings shipped with the package (``tuned.json``): one entry by ``name``, or all.

    Parameters
    ----------
    name : entry name (``lorenz96``, ``qg_altimetry``, ``qg_enoi``); None returns the whole table

    Returns
    -------
    dict (a fresh copy: changing it changes nothing else)
    """
    table = json.loads(_table_text())
    if name is None:
        return table
    if name not in table:
        raise ConfigurationError(f"tuned.json: no entry {name!r}; expected one of {sorted(table)}")
    return table[name]


def _members_table(name: str, entry: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """``by_members`` of ``entry`` keyed by int N, every value checked (a malformed file: one line naming it)."""
    where = f"tuned.json {name}.by_members"
    schema = _PER_MEMBERS_OF.get(name, _PER_MEMBERS)
    raw = entry["by_members"]
    if not isinstance(raw, dict) or not raw:
        raise ConfigurationError(f"{where}: {type(raw).__name__} {raw!r}; expected a non-empty table "
                                 "{\"N\": {settings}}")
    out = {}
    for key, value in raw.items():
        if not (isinstance(key, str) and key.isdigit() and int(key) >= 2):
            raise ConfigurationError(f"{where}: key {key!r}; expected an ensemble size as a string, "
                                     "an integer >= 2 (\"10\", \"20\")")
        if not isinstance(value, dict):
            raise ConfigurationError(f"{where}[{key!r}]: {type(value).__name__} {value!r}; expected a table of "
                                     f"{sorted(schema)}")
        missing = sorted(set(schema) - set(value))
        if missing:
            raise ConfigurationError(f"{where}[{key!r}]: no {missing}; expected every one of {sorted(schema)}")
        for setting, bounds in schema.items():
            check_number(f"{where}[{key!r}].{setting}", value[setting], **bounds)
        out[int(key)] = value
    return out


def tuned_members_entry(name: str, members: int) -> tuple[int, dict[str, Any]]:
    """The ``by_members`` entry of ``name`` for an ensemble of ``members``: ``(N it was tuned for, entry)``.

    The entry of ``members`` itself when tuned, else the nearest tuned N on a log scale
    (``|log N - log members|`` smallest; a tie goes to the larger N).

    Parameters
    ----------
    name : entry of ``tuned.json`` with a ``by_members`` table (``qg_altimetry``)
    members : the ensemble size in use (at least 2)

    Returns
    -------
    ``(N_used, dict)``: the settings (``radius_km``, ``inflation``, ``rtps``, ``block``) and their scores
    """
    check_number("members", members, lo=2, integer=True)
    entry = tuned_settings(name)
    if "by_members" not in entry:
        raise ConfigurationError(f"tuned.json {name}: no settings per ensemble size (by_members); expected "
                                 "an entry tuned per N (qg_altimetry)")
    table = _members_table(name, entry)
    # |log n - log members| ordered exactly (as the ratio max/min, a Fraction): a tie is a tie
    used = min(table, key=lambda n: (Fraction(max(n, members), min(n, members)), -n))
    return used, table[used]


def tuned_filter(name: str, method: str | None = None, members: int | None = None, **overrides: Any) -> Filter:
    """The filter tuned for entry ``name`` (and ``method`` where the entry holds one per method).

    Parameters
    ----------
    name : entry of ``tuned.json`` (``qg_altimetry``, ``qg_enoi``, ``lorenz96``)
    method : for ``lorenz96``, which method's entry (``enkf``, ``etkf``, ``letkf``)
    members : the ensemble size in use: where the entry has a ``by_members`` table, the settings tuned
        for it (:func:`tuned_members_entry`); None (or no table) = the entry's own settings
    **overrides : settings that replace the tuned ones; None = the tuned value

    Returns
    -------
    Filter (its other settings the method's defaults)
    """
    entry = tuned_settings(name)
    if method is not None and "method" not in entry:
        if method not in entry:
            raise ConfigurationError(f"tuned.json {name}: no method {method!r}; expected one of "
                                     f"{sorted(k for k in entry if not k.startswith('_'))}")
        entry = dict(entry[method], method=method)
    if "method" not in entry:
        raise ConfigurationError(f"tuned.json {name}: one entry per method; expected method= one of "
                                 f"{sorted(k for k in entry if not k.startswith('_'))}")
    if method is not None and entry["method"] != method:
        raise ConfigurationError(f"tuned.json {name}: tuned for method {entry['method']!r}, not {method!r}")
    if members is not None and "by_members" in entry:
        _, per_n = tuned_members_entry(name, members)
        entry = dict(entry, **{k: per_n[k] for k in _PER_MEMBERS})
    values = {_ALIASES.get(k, k): v for k, v in entry.items() if k != "method"}
    return make_filter(make_filter(entry["method"], strict=False, **values), **overrides)
