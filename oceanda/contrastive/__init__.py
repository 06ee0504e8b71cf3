"""The paper's contrastive learning, knowing nothing about oceans.

``similarity`` (logits matrix S/tau, rows states, columns observations), ``losses`` (every loss
of one logits matrix), ``encoders``, ``model`` (``ContrastiveModel`` with save/load),
``training`` (one loop for all), ``gaussian`` (closed forms used by tests and notebooks).
"""

from oceanda.contrastive.losses import LOSSES, get_loss
from oceanda.contrastive.similarity import KINDS, Similarity

__all__ = ["Similarity", "KINDS", "get_loss", "LOSSES"]
