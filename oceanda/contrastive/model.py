"""``ContrastiveModel``: the two encoders and the similarity, saved as safetensors + JSON.

The model defines nu(state | obs) ∝ exp(logits(embed_state(x), embed_obs(y))) mu_state(dx).
``config`` is a JSON-able dict holding everything needed to rebuild it (no pickling) plus what
callers must reuse: normalisation statistics, the grid fingerprint, the loss it was trained with,
and a free ``extra`` dict (e.g. how observation windows were built).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from oceanda.contrastive.encoders import Encoder, build_encoder
from oceanda.contrastive.similarity import Similarity
from oceanda.errors import CheckpointError, OceandaError


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
    def from_config(cls, config: dict[str, Any], where: str = "model config") -> "ContrastiveModel":
        """A fresh (untrained) model with the architecture in ``config``.

        Parameters
        ----------
        config : a model config (``config.json``)
        where : the config's name in errors (a file)

        Returns
        -------
        ContrastiveModel
            Untrained, with the other config entries kept; a config that does not describe a model
            raises :class:`CheckpointError` naming ``where`` (checked before anything is built).
        """
        from oceanda.contrastive.checkpoint import check_architecture

        check_architecture(config, where)
        parts = _parts(config, where)
        keep = {k: v for k, v in config.items() if k not in parts}
        return cls(parts["state_encoder"], parts["obs_encoder"], parts["similarity"], keep)

    @classmethod
    def load(cls, directory, check: Callable[[dict[str, Any], str], None] | None = None) -> "ContrastiveModel":
        """Load a checkpoint written by :meth:`save` (eval mode), validated before anything is built.

        The config is checked against the schema (:mod:`oceanda.contrastive.checkpoint`: types, ranges,
        sizes bounded by the memory available) and the weights against the architecture's tensors
        (names, shapes, float dtypes, finite values; taken from a model built on the ``meta`` device)
        before the model is built for real.

        Parameters
        ----------
        directory : the checkpoint directory
        check : ``check(config, "<directory>/config.json")``, run on the config before the model is
            built (e.g. the ocean entries ``oceanda.analysis.encoding`` needs)

        Returns
        -------
        ContrastiveModel
            The trained model; anything malformed raises :class:`CheckpointError` naming the file.
        """
        from oceanda.contrastive import checkpoint as ck

        tensors, config = ck.read(directory)
        where = ck.config_file(directory)
        ck.check_architecture(config, where)
        if check is not None:
            check(config, where)
        with torch.device("meta"):  # names, shapes and dtypes of the architecture, nothing allocated
            expected = {f"{name}.{k}": v for name, part in _parts(config, where).items()
                        for k, v in part.state_dict().items()}
        ck.check_tensors(expected, tensors, ck.weights_file(directory))
        model = cls.from_config(config, where)  # now as large as the weights already read
        try:
            model.load_state_dict(tensors, strict=True)
        except RuntimeError as exc:  # pragma: no cover - check_tensors found nothing, torch still refuses
            msg = " ".join(str(exc).split())[:300]
            raise CheckpointError(f"{ck.weights_file(directory)}: weights do not fit config.json ({msg})") from exc
        model._refresh_config()
        model.eval()
        return model


def _parts(config: dict[str, Any], where: str) -> dict[str, nn.Module]:
    """The encoders and the similarity of a checked config, by the names they hold in a ``ContrastiveModel``."""
    sim_cfg = dict(config["similarity"])
    try:
        return {"state_encoder": build_encoder(config["state_encoder"]),
                "obs_encoder": build_encoder(config["obs_encoder"]),
                "similarity": Similarity(sim_cfg["kind"], tau=sim_cfg.get("tau", 1.0),
                                         learn_tau=sim_cfg.get("learn_tau", False),
                                         tau_min=sim_cfg.get("tau_min", 1e-3), tau_max=sim_cfg.get("tau_max", 100.0))}
    except OceandaError as exc:  # a combination the schema lets through but a constructor refuses
        raise CheckpointError(f"{where}: {' '.join(str(exc).split())}") from exc
