"""The paper's contrastive learning, knowing nothing about oceans.

``similarity`` (logits matrix S/tau, rows states, columns observations; the one table of kinds and
aliases, and the same scores in numpy), ``losses`` (every loss of one logits matrix), ``encoders``,
``model`` (``ContrastiveModel`` with save/load), ``training`` (one :class:`Trainer` with a typed
:class:`TrainConfig` for all), ``retrieval`` (R@K, ties against the query), ``gaussian`` (closed
forms used by tests and notebooks). Imports nothing from oceanda but errors, io and settings.
"""

from oceanda.contrastive.losses import LOSSES, get_loss
from oceanda.contrastive.retrieval import recall_at_k, retrieval_recalls
from oceanda.contrastive.similarity import KINDS, Similarity, canonical_kind, numpy_scores
from oceanda.contrastive.training import TrainConfig, Trainer, TrainResult, train

__all__ = ["Similarity", "KINDS", "canonical_kind", "numpy_scores", "get_loss", "LOSSES", "TrainConfig", "Trainer",
           "TrainResult", "train", "recall_at_k", "retrieval_recalls"]
