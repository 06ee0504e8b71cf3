"""Reproductions of published experiments, each in a module named after its source (as DAPPER does).

Why a registry: ``oceanda reproduce NAME`` finds an experiment here without importing them all
(each pulls in torch and its own testbeds). ``EXPERIMENTS`` maps a name to its module; each module
has ``run(out, quick=False, seed=0, ...)``. Their parts that notebooks call step by step are public
modules too: :mod:`oceanda.experiments.torus_da` (the torus-flow drifter assimilation of
``baptista2025``).
"""

from __future__ import annotations

import importlib

EXPERIMENTS = {"baptista2025": "oceanda.experiments.baptista2025"}


def get(name: str):
    """The module of experiment ``name``.

    Parameters
    ----------
    name : str
        A key of :data:`EXPERIMENTS`.

    Returns
    -------
    module
        The experiment's module (with its ``run``).
    """
    from oceanda.errors import OceandaError

    if name not in EXPERIMENTS:
        raise OceandaError(f"experiment '{name}' unknown; expected one of {sorted(EXPERIMENTS)}")
    return importlib.import_module(EXPERIMENTS[name])


__all__ = ["EXPERIMENTS", "get"]
