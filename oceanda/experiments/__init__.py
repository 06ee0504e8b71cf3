"""Reproductions of published experiments, each in a module named after its source (as DAPPER does).

``EXPERIMENTS`` maps a name to its module; each module has ``run(out, quick=False, seed=0, ...)``.
"""

from __future__ import annotations

import importlib

EXPERIMENTS = {"baptista2025": "oceanda.experiments.baptista2025"}


def get(name: str):
    """The module of experiment ``name``."""
    from oceanda.errors import OceandaError

    if name not in EXPERIMENTS:
        raise OceandaError(f"experiment '{name}' unknown; expected one of {sorted(EXPERIMENTS)}")
    return importlib.import_module(EXPERIMENTS[name])


__all__ = ["EXPERIMENTS", "get"]
