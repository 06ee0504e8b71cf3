"""oceanda: ocean data assimilation with contrastive learning as conditional probability.

The encoders g_state, g_obs define nu(x | y) ∝ exp(s(g_state(x), g_obs(y)) / tau) mu_state(dx)
(Baptista, Stuart & Tran 2025); oceanda turns that into gridded analyses with uncertainty and
compares them with ensemble Kalman filters on the same observations.

The front door (``oceanda.__all__``) is :mod:`oceanda.api`: ``open_states``, ``open_obs``, ``train``,
``assimilate``, ``analyse`` (Kalman), ``cycle``, ``evaluate``, ... -- Dataset in, Dataset out. Its names
are loaded on first use, so ``import oceanda`` does not import torch.
"""

from __future__ import annotations

from typing import Any

from oceanda._version import __version__
from oceanda.errors import (
    CheckpointError,
    ConfigurationError,
    DataValidationError,
    GridMismatchError,
    OceandaError,
    OutputExistsError,
)

#: The public API, defined in :mod:`oceanda.api`.
API = (
    "open_states", "open_obs", "observe_states", "open_library", "load_model", "train", "assimilate", "analyse", "cycle", "cycle_testbed", "run_twin", "cycle_summary",
    "evaluate", "climatology", "write", "sample_data", "demo", "demo_table", "reproduce",
)


def __getattr__(name: str) -> Any:
    if name in API or name == "api":
        import importlib

        api = importlib.import_module("oceanda.api")  # not `from oceanda import api`: that would call this again
        return api if name == "api" else getattr(api, name)
    raise AttributeError(f"module 'oceanda' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(API) | {"api"})


__all__ = [
    *API,
    "__version__",
    "OceandaError",
    "ConfigurationError",
    "DataValidationError",
    "GridMismatchError",
    "OutputExistsError",
    "CheckpointError",
]
