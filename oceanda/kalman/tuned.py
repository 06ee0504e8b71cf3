"""The tuned filter settings shipped in ``tuned.json``: the one loader.

Why one loader: the tuned values (inflation, localisation radius, ensemble size) are the defaults of
every twin experiment, the demo and the CLI; each used to read the file (or a fallback literal) in
its own way. ``tuned.json`` is written by ``benchmarks/bench_l96.py`` and
``benchmarks/tune_qg_letkf.py``; read it with :func:`tuned_settings` (the raw entries) or
:func:`tuned_filter` (a configured :class:`~oceanda.kalman.methods.Filter`).
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

from oceanda.errors import ConfigurationError
from oceanda.kalman.methods import Filter, make_filter

#: Keys of ``tuned.json`` entries named differently from the filter settings.
_ALIASES = {"radius_km": "radius"}


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


def tuned_filter(name: str, method: str | None = None, **overrides: Any) -> Filter:
    """The filter tuned for entry ``name`` (and ``method`` where the entry holds one per method).

    Parameters
    ----------
    name : entry of ``tuned.json`` (``qg_altimetry``, ``qg_enoi``, ``lorenz96``)
    method : for ``lorenz96``, which method's entry (``enkf``, ``etkf``, ``letkf``)
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
    values = {_ALIASES.get(k, k): v for k, v in entry.items() if k != "method"}
    return make_filter(make_filter(entry["method"], strict=False, **values), **overrides)
