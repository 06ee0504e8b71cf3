"""The trained encoder pair seen from the sampler: numpy in, embeddings out.

A :class:`ContrastiveModel` knows nothing about oceans; this wrapper applies what its ``config``
records -- which channels it encodes, the standardisation statistics, the mask channels, the
window geometry -- so the sampler can pass physical fields with NaN gaps (unobserved points in
observations, land in states). Keys read from
``model.config`` (written by ``benchmarks/train_window_model.py`` and ``oceanda train``)::

    grid_fingerprint                     grid the model was trained on (checked before use)
    normalization.state {mean, std}      per state channel (fields.Standardizer)
    normalization.obs   {mean, std}      per obs channel (default: the state statistics of that channel)
    extra.state_channels [[var, level]]  channels of the state encoder's input (level null if none)
    extra.obs_channels   [[var, level]]  observed channels (encoder input: values then 0/1 masks)
    extra.window {size, stride, halo, periodic}   present for window (local) models
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from oceanda.analysis.windows import WindowSpec
from oceanda.errors import CheckpointError
from oceanda.fields import FieldLayout, Standardizer


def _channels(v: Any) -> list[tuple[str, int | None]]:
    return [(str(c[0]), None if c[1] is None else int(c[1])) for c in v]


def channel_index(layout: FieldLayout, channels: Sequence[tuple[str, int | None]], what: str) -> np.ndarray:
    """Positions of ``channels`` in ``layout``; a missing one is a clear error."""
    out = []
    for c in channels:
        if c not in layout.channels:
            # a 2-D variable stored without level matches level None
            raise CheckpointError(
                f"{what}: the model encodes channel {c[0]}{'' if c[1] is None else f'[level {c[1]}]'}, "
                f"which the data lack; expected channels {layout.channels}"
            )
        out.append(layout.channels.index(c))
    return np.asarray(out, dtype=np.int64)


class EncoderPair:
    """Numpy-facing encoders with standardisation, mask channels and batching (no gradients)."""

    def __init__(self, model, state_channels: Sequence[tuple[str, int | None]],
                 obs_channels: Sequence[tuple[str, int | None]], state_norm: Standardizer, obs_norm: Standardizer,
                 window: WindowSpec | None = None, batch: int = 512, key: str = "model"):
        self.model = model
        self.state_channels = list(state_channels)
        self.obs_channels = list(obs_channels)
        self.state_norm = state_norm
        self.obs_norm = obs_norm
        self.window = window
        self.batch = int(batch)
        self.key = key
        sim = model.config.get("similarity", {})
        self.kind = str(sim.get("kind", "cosine"))
        self.tau = float(model.config.get("temperature", sim.get("tau", 1.0)))
        self.grid_fingerprint = model.config.get("grid_fingerprint")

    @classmethod
    def from_model(cls, model, key: str | None = None) -> EncoderPair:
        cfg = model.config
        extra = cfg.get("extra") or {}
        try:
            sc = _channels(extra["state_channels"])
            oc = _channels(extra["obs_channels"])
        except KeyError as exc:
            raise CheckpointError(f"model config lacks extra.{exc.args[0]}; expected the channels the encoders read") from exc
        norm = cfg.get("normalization") or {}
        if "state" not in norm:
            raise CheckpointError("model config lacks normalization.state; expected the standardisation statistics")
        sn = Standardizer.from_dict(norm["state"])
        if "obs" in norm:
            on = Standardizer.from_dict(norm["obs"])
        else:  # observations of a state variable share its statistics
            idx = [sc.index(c) for c in oc]
            on = Standardizer(sn.mean[idx], sn.std[idx])
        win = WindowSpec.from_dict(extra["window"]) if extra.get("window") else None
        if key is None:
            import hashlib
            import json

            key = hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:12]
        return cls(model, sc, oc, sn, on, win, key=key)

    @property
    def is_window_model(self) -> bool:
        return self.window is not None

    def _run(self, encoder, x: np.ndarray) -> np.ndarray:
        import torch

        out = []
        with torch.no_grad():
            for a in range(0, len(x), self.batch):
                out.append(encoder(torch.as_tensor(np.ascontiguousarray(x[a:a + self.batch]), dtype=torch.float32)).numpy())
        return np.concatenate(out, axis=0) if out else np.zeros((0, 0), np.float32)

    def embed_state(self, states: np.ndarray, layout: FieldLayout | None = None) -> np.ndarray:
        """Embed states ``[N, C, Y, X]`` in physical units; with ``layout`` pick the model's channels.

        NaN (land) is handled as in training (:func:`oceanda.pairs.encoder_state_input`): standardised,
        then set to 0, i.e. the channel mean -- so a library with a land mask embeds exactly as the
        whole-field training saw its states, and as the same library with land filled by the mean.
        """
        from oceanda.pairs import encoder_state_input

        x = np.asarray(states, dtype=np.float32)
        if layout is not None:
            x = x[:, channel_index(layout, self.state_channels, "library")]
        return self._run(self.model.state_encoder, encoder_state_input(x, self.state_norm))

    def embed_obs(self, obs: np.ndarray) -> np.ndarray:
        """Embed observations ``[N, C_obs, Y, X]`` (physical units, NaN unobserved): values, then masks."""
        y = self.obs_norm.transform(np.asarray(obs, dtype=np.float32))
        m = np.isfinite(y)
        x = np.concatenate([np.where(m, y, 0.0), m.astype(np.float32)], axis=1).astype(np.float32)
        return self._run(self.model.obs_encoder, x)
