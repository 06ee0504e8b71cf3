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
    temperature / similarity.tau         the trained temperature (the sampler's default tau)
    sampler                              stored sampler settings (oceanda.analysis.settings.stored_settings)

It also holds what the sampler needs of a checkpoint besides the encoders: :func:`load_model`, the
model fingerprint (names embedding caches and outputs), the grid check and the observations in the
model's channel order (:func:`obs_arrays`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from oceanda import fields, grid
from oceanda.analysis.library import Library
from oceanda.analysis.settings import trained_temperature
from oceanda.analysis.windows import WindowSpec
from oceanda.errors import CheckpointError, DataValidationError, GridMismatchError
from oceanda.fields import FieldLayout, Standardizer


def _channels(v: Any) -> list[tuple[str, int | None]]:
    return [(str(c[0]), None if c[1] is None else int(c[1])) for c in v]


def channel_index(layout: FieldLayout, channels: Sequence[tuple[str, int | None]], what: str) -> np.ndarray:
    """Positions of ``channels`` in ``layout``; a missing one is a clear error.

    Parameters
    ----------
    layout : the data's layout
    channels : ``(variable, level)`` pairs the model encodes
    what : the data's name in errors

    Returns
    -------
    int64 indices into ``layout.channels``
    """
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
        self.tau = trained_temperature(model.config)  # the sampler's default (resolve_tau)
        self.grid_fingerprint = model.config.get("grid_fingerprint")
        # days of observations a whole-field model stacks (``oceanda train --obs-days``; 1 for window models)
        self.obs_days = int((model.config.get("extra") or {}).get("obs_window_days", 1) or 1)


    @classmethod
    def from_model(cls, model, key: str | None = None) -> EncoderPair:
        """The encoder pair of a :class:`~oceanda.contrastive.model.ContrastiveModel`, as its config describes.

        Parameters
        ----------
        model : the trained model
        key : names the model in embedding caches (default: a hash of its config)

        Returns
        -------
        EncoderPair
        """
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
        """Embed states in physical units.

        NaN (land) is handled as in training (:func:`oceanda.fields.encoder_state_input`): standardised,
        then set to 0, i.e. the channel mean -- so a library with a land mask embeds exactly as the
        whole-field training saw its states, and as the same library with land filled by the mean.

        Parameters
        ----------
        states : ``[N, C, Y, X]``
        layout : the states' layout; when given, the model's channels are picked from it

        Returns
        -------
        ``[N, ne]`` float32 embeddings
        """
        x = np.asarray(states, dtype=np.float32)
        if layout is not None:
            x = x[:, channel_index(layout, self.state_channels, "library")]
        return self._run(self.model.state_encoder, fields.encoder_state_input(x, self.state_norm))

    def embed_obs(self, obs: np.ndarray) -> np.ndarray:
        """Embed observations in physical units, NaN unobserved (:func:`oceanda.fields.encoder_obs_input`).

        Parameters
        ----------
        obs : ``[N, C_obs, Y, X]``

        Returns
        -------
        ``[N, ne]`` float32 embeddings
        """
        return self._run(self.model.obs_encoder, fields.encoder_obs_input(obs, self.obs_norm))


def model_fingerprint(model) -> str:
    """Hash of the weights and the configuration of a model (its version excepted).

    Parameters
    ----------
    model : a :class:`~oceanda.contrastive.model.ContrastiveModel`

    Returns
    -------
    16 hex digits
    """
    import hashlib
    import json

    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    h.update(json.dumps({k: v for k, v in model.config.items() if k != "oceanda_version"}, sort_keys=True,
                        default=str).encode())
    return h.hexdigest()[:16]


def load_model(model_dir) -> tuple[Any, EncoderPair]:
    """A trained model and its encoder pair from a checkpoint directory.

    Parameters
    ----------
    model_dir : directory with ``model.safetensors`` and ``config.json``

    Returns
    -------
    ``(ContrastiveModel, EncoderPair)``; the pair's ``key`` is :func:`model_fingerprint`
    """
    from oceanda.contrastive.model import ContrastiveModel

    model = ContrastiveModel.load(model_dir)
    health = model.config.get("health") or {}
    if health.get("weak"):  # recorded by training (oceanda.contrastive.training.training_health)
        import warnings

        warnings.warn(f"{model_dir}: a weak model: validation R@5 {health.get('r5', float('nan')):.3f} is within 2x of "
                      f"chance {health.get('chance_r5', float('nan')):.3f} ({health.get('candidates')} candidates); "
                      "its analyses stay close to the library mean", UserWarning, stacklevel=2)
    return model, EncoderPair.from_model(model, key=model_fingerprint(model))



def check_model_grid(encoders: EncoderPair, library: Library, what: str) -> None:
    """Refuse a model trained on another grid (or other variables) than the library's.

    Parameters
    ----------
    encoders : the model's encoder pair (``grid_fingerprint`` from its config)
    library : the library it is to weight
    what : the library's name in errors

    Raises
    ------
    GridMismatchError
    """
    expected = encoders.grid_fingerprint
    if not expected:
        return
    state_vars = list(dict.fromkeys(v for v, _ in encoders.state_channels))
    obs_vars = list(dict.fromkeys(v for v, _ in encoders.obs_channels))
    candidates = [state_vars, list(dict.fromkeys(state_vars + obs_vars)), library.variables]
    ds = library.ds
    for vs in candidates:  # on the whole Dataset and on the encoded variables alone (no unrelated level dim)
        if all(v in ds.data_vars for v in vs) and expected in (fields.grid_fingerprint(ds, vs),
                                                               fields.grid_fingerprint(ds[vs], vs)):
            return
    vs = [v for v in state_vars if v in ds.data_vars] or library.variables
    fields.check_fingerprint(expected, ds, vs, what)  # raises GridMismatchError with the details
    raise GridMismatchError(f"{what}: the model encodes {state_vars}, which the library lacks")  # pragma: no cover


def obs_arrays(obs: xr.Dataset, encoders: EncoderPair, shape: tuple[int, int], source: str = "observations") -> np.ndarray:
    """Gridded observations in the model's observed-channel order.

    Parameters
    ----------
    obs : gridded observations (NaN where unobserved)
    encoders : the encoder pair (its ``obs_channels``)
    shape : the library grid ``(ny, nx)`` the observations must be on
    source : the observations' name in errors

    Returns
    -------
    ``[T, C_obs, Y, X]`` float32, NaN kept
    """
    if "obs" in obs.dims:
        raise DataValidationError(f"{source}: point observations (dim 'obs'); the contrastive sampler expects "
                                  "gridded observations with NaN where unobserved")
    names = list(dict.fromkeys(v for v, _ in encoders.obs_channels))
    missing = [v for v in names if v not in obs.data_vars]
    if missing:
        raise DataValidationError(f"{source}: missing observed variable(s) {missing}; the model encodes {names}")
    layout = fields.layout_of(obs, names)
    got = grid.shape(obs)
    if got != tuple(shape):
        raise GridMismatchError(f"{source}: grid {got[0]} x {got[1]}; expected the library grid {shape[0]} x {shape[1]}")
    arr, _ = fields.to_array(obs, layout)
    return arr[:, channel_index(layout, encoders.obs_channels, source)]
