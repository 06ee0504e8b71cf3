"""oceanda: ocean data assimilation with contrastive learning as conditional probability.

The encoders g_state, g_obs define nu(x | y) ∝ exp(s(g_state(x), g_obs(y)) / tau) mu_state(dx)
(Baptista, Stuart & Tran 2025); oceanda turns that into gridded analyses with uncertainty and
compares them with ensemble Kalman filters on the same observations.
"""

from oceanda.errors import (
    CheckpointError,
    DataValidationError,
    GridMismatchError,
    OceandaError,
    OutputExistsError,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "OceandaError",
    "DataValidationError",
    "GridMismatchError",
    "OutputExistsError",
    "CheckpointError",
]
