"""``ContrastiveModel``: the two encoders and the similarity, saved as safetensors + JSON.

The model defines nu(state | obs) ∝ exp(logits(embed_state(x), embed_obs(y))) mu_state(dx).
``config`` is a JSON-able dict holding everything needed to rebuild it (no pickling) plus what
callers must reuse: normalisation statistics, the grid fingerprint, the loss it was trained with,
and a free ``extra`` dict (e.g. how observation windows were built).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from oceanda.contrastive.encoders import Encoder, build_encoder
from oceanda.contrastive.similarity import Similarity
from oceanda.errors import CheckpointError


def _version() -> str:
    from oceanda._version import __version__

    return __version__


class ContrastiveModel(nn.Module):
    """The state encoder, the observation encoder and their similarity; ``config`` rebuilds it.

    Parameters
    ----------
    state_encoder, obs_encoder : encoders with the same ``out_dim``
    similarity : default cosine with tau 1
    config : JSON-able entries kept with the model (normalisation, grid fingerprint, ``extra``, ...)
    """

    def __init__(self, state_encoder: Encoder, obs_encoder: Encoder, similarity: Similarity | None = None,
                 config: dict[str, Any] | None = None):
        super().__init__()
        if state_encoder.out_dim != obs_encoder.out_dim:
            raise CheckpointError(
                f"state encoder embeds in {state_encoder.out_dim} dimensions, obs encoder in {obs_encoder.out_dim}; expected equal"
            )
        self.state_encoder = state_encoder
        self.obs_encoder = obs_encoder
        self.similarity = similarity if similarity is not None else Similarity("cosine")
        base = {"loss": None, "normalization": {}, "grid_fingerprint": None, "extra": {}}
        base.update(config or {})
        self.config = base
        self._refresh_config()

    def _refresh_config(self) -> None:
        self.config.update({
            "state_encoder": self.state_encoder.config(),
            "obs_encoder": self.obs_encoder.config(),
            "similarity": self.similarity.config(),
            "temperature": float(self.similarity.tau.detach()),
            "embedding_dim": self.state_encoder.out_dim,
            "oceanda_version": _version(),
        })

    @property
    def tau(self) -> torch.Tensor:
        """The similarity's temperature."""
        return self.similarity.tau

    def embed_state(self, x) -> torch.Tensor:
        """State embeddings ``[N, ne]`` of encoder inputs ``x``.

        Parameters
        ----------
        x : ``[N, ...]`` inputs of the state encoder

        Returns
        -------
        torch.Tensor
            ``[N, ne]``.
        """
        return self.state_encoder(x)

    def embed_obs(self, y) -> torch.Tensor:
        """Observation embeddings ``[N, ne]`` of encoder inputs ``y``.

        Parameters
        ----------
        y : ``[N, ...]`` inputs of the observation encoder

        Returns
        -------
        torch.Tensor
            ``[N, ne]``.
        """
        return self.obs_encoder(y)

    def logits(self, z_state: torch.Tensor, z_obs: torch.Tensor) -> torch.Tensor:
        """The logits s(z_state_i, z_obs_j) / tau.

        Parameters
        ----------
        z_state : ``[Ns, ne]`` state embeddings
        z_obs : ``[No, ne]`` observation embeddings

        Returns
        -------
        torch.Tensor
            ``[Ns, No]``.
        """
        return self.similarity(z_state, z_obs)

    def forward(self, x, y) -> torch.Tensor:
        """The logits ``[Ns, No]`` of state inputs ``x`` against observation inputs ``y``.

        Parameters
        ----------
        x : ``[Ns, ...]`` state encoder inputs
        y : ``[No, ...]`` observation encoder inputs

        Returns
        -------
        torch.Tensor
            ``[Ns, No]``.
        """
        return self.logits(self.embed_state(x), self.embed_obs(y))

    def save(self, directory, overwrite: bool = False) -> Path:
        """Write ``model.safetensors`` and ``config.json`` (no pickle).

        Parameters
        ----------
        directory : the checkpoint directory
        overwrite : replace a checkpoint there

        Returns
        -------
        pathlib.Path
            The directory.
        """
        from oceanda.io import save_checkpoint

        self._refresh_config()
        return save_checkpoint(directory, self.state_dict(), self.config, overwrite=overwrite)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "ContrastiveModel":
        """A fresh (untrained) model with the architecture in ``config``.

        Parameters
        ----------
        config : a model config (``config.json``)

        Returns
        -------
        ContrastiveModel
            Untrained, with the other config entries kept.
        """
        try:
            sim_cfg = dict(config["similarity"])
            sim = Similarity(sim_cfg["kind"], tau=sim_cfg.get("tau", 1.0), learn_tau=sim_cfg.get("learn_tau", False),
                             tau_min=sim_cfg.get("tau_min", 1e-3), tau_max=sim_cfg.get("tau_max", 100.0))
            se = build_encoder(config["state_encoder"])
            oe = build_encoder(config["obs_encoder"])
        except KeyError as exc:
            raise CheckpointError(f"model config lacks {exc}; expected state_encoder, obs_encoder and similarity") from exc
        keep = {k: v for k, v in config.items() if k not in ("state_encoder", "obs_encoder", "similarity")}
        return cls(se, oe, sim, keep)

    @classmethod
    def load(cls, directory) -> "ContrastiveModel":
        """Load a checkpoint written by :meth:`save` (eval mode).

        Parameters
        ----------
        directory : the checkpoint directory

        Returns
        -------
        ContrastiveModel
            The trained model; weights that do not fit the config raise ``CheckpointError``.
        """
        from oceanda.io import load_checkpoint

        tensors, config = load_checkpoint(directory)
        model = cls.from_config(config)
        try:
            missing, unexpected = model.load_state_dict(tensors, strict=False)
        except RuntimeError as exc:  # size mismatch
            raise CheckpointError(f"{directory}: weights do not match the architecture in config.json ({exc})") from exc
        if missing or unexpected:
            raise CheckpointError(
                f"{directory}: weights do not match the architecture in config.json (missing {missing[:5]}, unexpected {unexpected[:5]})"
            )
        model._refresh_config()
        model.eval()
        return model
