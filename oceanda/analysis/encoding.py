"""The trained encoder pair seen from the sampler: numpy in, embeddings out.

A :class:`ContrastiveModel` knows nothing about oceans; this wrapper applies what its ``config``
records -- which channels it encodes, the standardisation statistics, the mask channels, the
window geometry -- so the sampler can pass physical fields with NaN gaps (unobserved points in
observations, land in states). Keys read from
``model.config`` (written by ``benchmarks/train_window_model.py`` and ``oceanda train``)::

    grid_fingerprint                     grid the model was trained on (required; checked before use)
    normalization.state {mean, std}      per state channel (fields.Standardizer)
    normalization.obs   {mean, std}      per obs channel (default: the state statistics of that channel)
    extra.state_channels [[var, level]]  channels of the state encoder's input (level null if none)
    extra.obs_channels   [[var, level]]  observed channels (encoder input: values then 0/1 masks)
    extra.window {size, stride, halo, periodic}   present for window (local) models
    temperature / similarity.tau         the trained temperature (the sampler's default tau)
    sampler                              stored sampler settings (oceanda.analysis.settings.stored_settings)
    units {var: units}                   units of the data it was trained on (optional: older models lack it;
                                         a whole-field model's extra.layout.attrs then stand in)

Every one of them is checked on load, before the model is built (:func:`check_grid_config`: types,
finite values, std > 0, lengths matching the channels and the encoders' input shapes).
It also holds what the sampler needs of a checkpoint besides the encoders: :func:`load_model`, the
model fingerprint (names embedding caches and outputs), the grid check and the observations in the
model's channel order (:func:`obs_arrays`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from oceanda import fields, grid
from oceanda.analysis.library import Library
from oceanda.analysis.settings import stored_settings, trained_temperature
from oceanda.analysis.windows import WindowSpec
from oceanda.contrastive import checkpoint as ck
from oceanda.errors import CheckpointError, DataValidationError, GridMismatchError
from oceanda.fields import FieldLayout, Standardizer


def _channels(v: Any) -> list[tuple[str, int | None]]:
    return [(str(c[0]), None if c[1] is None else int(c[1])) for c in v]


# --- the checkpoint entries a grid model needs (checked before the model is built) -----------------

#: Smallest standard deviation accepted (standardised values must stay within float32).
MIN_STD = 1e-30
#: Largest |mean| / std accepted (the standardised value of a zero state must stay within float32).
MAX_MEAN_OVER_STD = 1e30


def _check_channels(config: Mapping[str, Any], key: str, where: str) -> list[tuple[str, int | None]]:
    v = ck.entry(config, key, where, list, "an array of [variable, level] pairs (level null if none)")
    if not 1 <= len(v) <= ck.MAX_SIZE:
        raise CheckpointError(f"{where}: '{key}' lists {len(v)} channels; expected 1 to {ck.MAX_SIZE}")
    for i, c in enumerate(v):
        ok = isinstance(c, list) and len(c) == 2 and isinstance(c[0], str) and c[0] != ""
        if not ok or not (c[1] is None or (isinstance(c[1], int) and not isinstance(c[1], bool))):
            raise CheckpointError(f"{where}: '{key}[{i}]' is {c!r:.60}; expected a [variable, level] pair "
                                  "(a name and an integer level or null)")
    return _channels(v)


def _check_norm(config: Mapping[str, Any], key: str, where: str, n: int) -> None:
    ck.entry(config, key, where, dict, "an object with 'mean' and 'std' (one value per channel)")
    mean = ck.numbers(ck.entry(config, f"{key}.mean", where, list, "an array of numbers"), f"{key}.mean", where, n)
    std = ck.numbers(ck.entry(config, f"{key}.std", where, list, "an array of numbers"), f"{key}.std", where, n,
                     lo=MIN_STD)
    for i, (m, sd) in enumerate(zip(mean, std)):
        if abs(m) > MAX_MEAN_OVER_STD * sd:
            raise CheckpointError(f"{where}: '{key}.mean[{i}]' = {m!r} is {abs(m) / sd:.3g} standard deviations from 0; "
                                  f"expected at most {MAX_MEAN_OVER_STD:.0e} (standardised values must fit float32)")


def _check_normalization(config: Mapping[str, Any], where: str, sc: list, oc: list, obs_norm: int) -> None:
    """Statistics per state channel and per observed encoder channel: finite, std > 0, lengths matching."""
    ck.entry(config, "normalization", where, dict, "an object with the 'state' (and 'obs') statistics")
    _check_norm(config, "normalization.state", where, len(sc))
    if ck.entry(config, "normalization.obs", where, dict, "an object with 'mean' and 'std'", None) is not None:
        _check_norm(config, "normalization.obs", where, obs_norm)
        return
    missing = [c for c in oc if c not in sc]
    if missing or obs_norm != len(oc):
        raise CheckpointError(f"{where}: missing key 'normalization.obs'; expected it when the observed channels "
                              f"{oc} are not one day of state channels {sc}")


def _check_window(config: Mapping[str, Any], where: str) -> WindowSpec | None:
    """``extra.window`` (window models): integer size, stride <= size, halo, a periodic flag."""
    w = ck.entry(config, "extra.window", where, (dict, bool, int, float, str, list),
                 "an object (size, stride, halo, periodic)", None)
    if not w:
        return None
    if not isinstance(w, dict):
        raise CheckpointError(f"{where}: 'extra.window' is {w!r:.40}; expected an object (size, stride, halo, periodic)")
    ck.unknown_keys(w, ("size", "stride", "halo", "periodic"), "extra.window", where)
    size = ck.size(config, "extra.window.size", where)
    stride = ck.size(config, "extra.window.stride", where, hi=size)
    halo = ck.size(config, "extra.window.halo", where, lo=0)
    periodic = ck.flag(config, "extra.window.periodic", where)
    return WindowSpec(size, stride, halo, periodic)


def _check_shapes(config: Mapping[str, Any], where: str, n_state: int, n_obs: int, spec: WindowSpec | None) -> None:
    """The encoders read what the channels, the window and the observation days say they read."""
    s = ck.entry(config, "state_encoder.in_shape", where, list, "an array of 3 sizes")
    o = ck.entry(config, "obs_encoder.in_shape", where, list, "an array of 3 sizes")
    per = 3 if ck.flag(config, "extra.obs_error_channel", where, False) else 2  # values, masks[, errors]
    if spec is not None:
        want_s, want_o = [n_state, spec.size, spec.size], [per * n_obs, spec.obs_size, spec.obs_size]
        why = f"the window (size {spec.size}, halo {spec.halo})"
    else:
        want_s, want_o = [n_state, *s[1:]], [per * n_obs, *s[1:]]
        why = "one grid for states and observations"
    for key, got, want in (("state_encoder.in_shape", s, want_s), ("obs_encoder.in_shape", o, want_o)):
        if list(got) != want:
            raise CheckpointError(f"{where}: '{key}' = {list(got)}; expected {want} ({n_state} state channel(s), "
                                  f"{n_obs} observed channel(s) plus masks, {why})")


def _check_health(config: Mapping[str, Any], where: str) -> None:
    if ck.entry(config, "health", where, dict, "an object (training health) or null", None) is None:
        return
    ck.flag(config, "health.weak", where, None)
    for k in ("r5", "chance_r5"):
        ck.entry(config, f"health.{k}", where, (int, float), "a number", None)
    ck.entry(config, "health.candidates", where, int, "an integer", None)


def check_grid_config(config: Mapping[str, Any], where: str) -> None:
    """The entries a model that analyses grids must hold, as :class:`EncoderPair` reads them.

    Why: each used to be read where it was needed, so a missing key was a ``KeyError``, a zero
    standard deviation an all-NaN analysis and a deleted ``grid_fingerprint`` a skipped grid check.
    Run by :func:`load_model` before the model is built (the architecture itself is checked by
    :func:`oceanda.contrastive.checkpoint.check_architecture`).

    Parameters
    ----------
    config : the decoded ``config.json``
    where : the file named in errors

    Raises
    ------
    CheckpointError (ConfigurationError for stored sampler settings out of range)
    """
    fp = ck.entry(config, "grid_fingerprint", where, str, "the grid's fingerprint", "")
    if not fp:
        raise CheckpointError(f"{where}: missing 'grid_fingerprint'; retrain or re-save with this oceanda "
                              "(a model that analyses grids must name the grid it was trained on)")
    if len(fp) > 64 or any(ch not in "0123456789abcdef" for ch in fp):
        raise CheckpointError(f"{where}: 'grid_fingerprint' is {fp[:70]!r}; expected hex digits "
                              "(oceanda.fields.grid_fingerprint)")
    ck.entry(config, "extra", where, dict, "an object with the channels the encoders read")
    sc = _check_channels(config, "extra.state_channels", where)
    oc = _check_channels(config, "extra.obs_channels", where)
    spec = _check_window(config, where)
    days = ck.size(config, "extra.obs_window_days", where, 1) if spec is None else 1
    _check_normalization(config, where, sc, oc, len(oc) * days)
    _check_shapes(config, where, len(sc), len(oc) * days, spec)
    _check_health(config, where)
    ck.check_units(config, where)
    stored_settings(config, where)


def model_units(config: Mapping[str, Any]) -> dict[str, str]:
    """``{variable: units}`` of the data a model was trained on (``units``; else its layout's attributes).

    Parameters
    ----------
    config : a model config checked by :func:`check_grid_config`

    Returns
    -------
    dict (empty when the model records none: its inputs are then taken as they come)
    """
    if isinstance(config.get("units"), dict):
        return dict(config["units"])
    from oceanda.io import units_are_known

    attrs = ((config.get("extra") or {}).get("layout") or {}).get("attrs")
    if not isinstance(attrs, dict):
        return {}
    return {str(v): a["units"] for v, a in attrs.items()
            if isinstance(a, dict) and isinstance(a.get("units"), str) and units_are_known(a["units"])}


def _check_geometry(encoders: EncoderPair, library: Library, what: str) -> None:
    """The grid of ``library`` fits the model: a field model's grid, a window (and halo) within the grid."""
    ny, nx = library.shape
    spec = encoders.window
    if spec is None:
        want = tuple(encoders.model.state_encoder.in_shape[1:])
        if want != (ny, nx):
            raise GridMismatchError(f"{what}: grid {ny} x {nx}; the model {encoders.where} encodes {want[0]} x {want[1]} fields")
        return
    spec.check(ny, nx, what)
    limit = max(ny, nx, WindowSpec.halo)
    if spec.size > max(ny, nx) or spec.halo > limit:
        raise CheckpointError(f"{encoders.where}: window size {spec.size} / halo {spec.halo} on the {ny} x {nx} grid of "
                              f"{what}; expected a window and halo of at most {max(ny, nx)} and {limit} cells")


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
        self.units = model_units(model.config)  # of the training data: the library and obs are converted to them
        # days of observations a whole-field model stacks (``oceanda train --obs-days``; 1 for window models)
        self.obs_days = int((model.config.get("extra") or {}).get("obs_window_days", 1) or 1)
        extra = model.config.get("extra") or {}
        #: the observation encoder reads the error std of every observation (models trained on a PatternMix)
        self.error_channel = bool(extra.get("obs_error_channel", False))
        #: the error assumed where observations give none (the middle of the trained range)
        self.default_error = np.asarray(extra.get("obs_sigma") or [np.nan] * len(self.obs_channels), np.float32)
        self.where = "model config"  # the config's name in errors (from_model: the checkpoint's config.json)


    @classmethod
    def from_model(cls, model, key: str | None = None, where: str = "model config") -> EncoderPair:
        """The encoder pair of a :class:`~oceanda.contrastive.model.ContrastiveModel`, as its config describes.

        Parameters
        ----------
        model : the trained model
        key : names the model in embedding caches (default: a hash of its config)
        where : the config's name in errors (``<model dir>/config.json``)

        Returns
        -------
        EncoderPair
            Its config checked by :func:`check_grid_config` first (a malformed one raises
            :class:`CheckpointError` naming ``where``).
        """
        cfg = model.config
        check_grid_config(cfg, where)
        extra = cfg["extra"]
        sc = _channels(extra["state_channels"])
        oc = _channels(extra["obs_channels"])
        norm = cfg["normalization"]
        sn = Standardizer.from_dict(norm["state"])
        if norm.get("obs") is not None:
            on = Standardizer.from_dict(norm["obs"])
        else:  # observations of a state variable share its statistics
            idx = [sc.index(c) for c in oc]
            on = Standardizer(sn.mean[idx], sn.std[idx])
        win = WindowSpec.from_dict(extra["window"]) if extra.get("window") else None
        if key is None:
            import hashlib
            import json

            key = hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:12]
        pair = cls(model, sc, oc, sn, on, win, key=key)
        pair.where = where
        return pair

    @property
    def is_window_model(self) -> bool:
        return self.window is not None

    def _run(self, encoder, x: np.ndarray, checked: bool = False) -> np.ndarray:
        """Embeddings of ``x`` in batches, on one torch thread: the same digits whatever the machine's threads.

        ``checked``: ``x`` is known NaN-free in the encoder's shape (its ``embed_checked`` skips the scan).
        """
        import torch

        from oceanda.threads import one_torch_thread

        fn = getattr(encoder, "embed_checked", encoder) if checked else encoder
        out = []
        with torch.inference_mode(), one_torch_thread():
            for a in range(0, len(x), self.batch):
                out.append(fn(torch.as_tensor(np.ascontiguousarray(x[a:a + self.batch]), dtype=torch.float32)).numpy())
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

    def embed_obs(self, obs: np.ndarray, errors: np.ndarray | None = None) -> np.ndarray:
        """Embed observations in physical units, NaN unobserved (:func:`oceanda.fields.encoder_obs_input`).

        Parameters
        ----------
        obs : ``[N, C_obs, Y, X]``
        errors : their error std, same shape (models with an error channel; None: ``obs_sigma`` of the
            model's config); ignored by models without one

        Returns
        -------
        ``[N, ne]`` float32 embeddings
        """
        if not self.error_channel:
            return self._run(self.model.obs_encoder, fields.encoder_obs_input(obs, self.obs_norm))
        return self._run(self.model.obs_encoder, fields.encoder_obs_input(obs, self.obs_norm,
                                                                           errors=self.errors_for(obs, errors)))

    def errors_for(self, obs: np.ndarray, errors: np.ndarray | None = None) -> np.ndarray:
        """``errors``, else the model's ``obs_sigma`` broadcast over ``obs`` ``[..., C_obs, Y, X]``."""
        return errors if errors is not None else np.broadcast_to(self.default_error[:, None, None], np.shape(obs))

    def obs_field_input(self, obs: np.ndarray, errors: np.ndarray | None = None) -> np.ndarray:
        """The observation encoder's input channels ``[2 or 3 C_obs, Y, X]`` of one whole field ``[C_obs, Y, X]``.

        Why the whole field: local mode's observation windows overlap 16-fold, and the inputs (standardised
        values, masks, errors) are element-wise, so windows cut from this field equal the windows' own inputs
        bit for bit at a sixteenth of the work (:meth:`embed_obs_input` embeds them).
        """
        errs = self.errors_for(obs, errors) if self.error_channel else None
        return fields.encoder_obs_input(np.asarray(obs)[None], self.obs_norm,
                                        errors=None if errs is None else np.asarray(errs)[None])[0]

    def embed_obs_input(self, windows: np.ndarray) -> np.ndarray:
        """Embeddings ``[N, ne]`` of windows cut from :meth:`obs_field_input`; NaN (beyond a non-periodic grid,
        where the cut pads) is unobserved: 0 in every channel, as :func:`~oceanda.fields.encoder_obs_input` writes it."""
        x = np.asarray(windows, dtype=np.float32)
        return self._run(self.model.obs_encoder, np.where(np.isnan(x), np.float32(0.0), x), checked=True)


#: Config keys that do not change what a model computes from given arrays: left out of :func:`model_fingerprint`
#: (``units`` was added to the bundled models after their embeddings were cached and their outputs recorded).
_UNHASHED = ("oceanda_version", "units")


def model_fingerprint(model) -> str:
    """Hash of the weights and the configuration of a model (its version and units excepted).

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
    h.update(json.dumps({k: v for k, v in model.config.items() if k not in _UNHASHED}, sort_keys=True,
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
    from oceanda.contrastive.checkpoint import config_file
    from oceanda.contrastive.model import ContrastiveModel

    model = ContrastiveModel.load(model_dir, check=check_grid_config)
    health = model.config.get("health") or {}
    if health.get("weak"):  # recorded by training (oceanda.contrastive.training.training_health)
        import warnings

        def num(k: str) -> float:
            return float(health[k]) if isinstance(health.get(k), (int, float)) else float("nan")

        warnings.warn(f"{model_dir}: a weak model: validation R@5 {num('r5'):.3f} is within 2x of "
                      f"chance {num('chance_r5'):.3f} ({health.get('candidates')} candidates); "
                      "its analyses stay close to the library mean", UserWarning, stacklevel=2)
    return model, EncoderPair.from_model(model, key=model_fingerprint(model), where=config_file(model_dir))



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
        raise CheckpointError(f"{encoders.where}: missing 'grid_fingerprint'; retrain or re-save with this oceanda "
                              "(the grid a model was trained on is checked before it weights a library)")
    _check_geometry(encoders, library, what)
    state_vars = list(dict.fromkeys(v for v, _ in encoders.state_channels))
    obs_vars = list(dict.fromkeys(v for v, _ in encoders.obs_channels))
    candidates = [state_vars, list(dict.fromkeys(state_vars + obs_vars)), library.variables]
    ds = library.ds
    for vs in candidates:  # on the whole Dataset and on the encoded variables alone (no unrelated level dim)
        if all(v in ds.data_vars for v in vs) and expected in (fields.grid_fingerprint(ds, vs),
                                                               fields.grid_fingerprint(ds[vs], vs)):
            return
    lacking = [v for v in state_vars if v not in ds.data_vars]
    if lacking:
        raise GridMismatchError(f"{what}: lacks {lacking}; expected the variables {state_vars} that the model "
                                f"{encoders.where} encodes")
    got = fields.grid_fingerprint(ds, state_vars)
    raise GridMismatchError(f"{what}: grid fingerprint {got} differs from {expected} in {encoders.where}; the model was "
                            f"trained on another grid or other variables ({state_vars}); expected its grid "
                            "(or retrain it on this one)")


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
    present = [v for v in names if v in obs.data_vars]
    missing = [v for v in names if v not in obs.data_vars]
    if missing and not (encoders.error_channel and present):  # a pattern-trained model reads any subset
        raise DataValidationError(f"{source}: missing observed variable(s) {missing}; the model {encoders.where} "
                                  f"encodes {names}" + (" (observations of at least one)" if encoders.error_channel
                                                        else ""))
    got = grid.shape(obs)
    if got != tuple(shape):
        raise GridMismatchError(f"{source}: grid {got[0]} x {got[1]}; expected the library grid {shape[0]} x {shape[1]}")
    layout = fields.layout_of(obs, present)
    arr, _ = fields.to_array(obs, layout)
    out = np.full((arr.shape[0], len(encoders.obs_channels), *arr.shape[2:]), np.nan, np.float32)
    for k, c in enumerate(encoders.obs_channels):
        if c[0] in present:
            out[:, k] = arr[:, channel_index(layout, [c], source)[0]]
    return out


def obs_error_arrays(obs: xr.Dataset, encoders: EncoderPair, values: np.ndarray) -> np.ndarray:
    """Error std ``[T, C_obs, Y, X]`` of :func:`obs_arrays`' values: ``<var>_error`` (a scalar or per cell),
    else the model's ``obs_sigma``; NaN where unobserved. What a model with an error channel reads."""
    out = np.full(values.shape, np.nan, np.float32)
    for k, (v, lev) in enumerate(encoders.obs_channels):
        e = obs.get(f"{v}_error")
        if e is None:
            out[:, k] = encoders.default_error[k]
            continue
        if v in obs.data_vars:
            e = e.broadcast_like(obs[v]).transpose(*obs[v].dims)
        arr = np.asarray(e.values, np.float32)
        if arr.ndim == 0:
            out[:, k] = arr
        else:
            arr = arr.reshape(values.shape[0], -1, *values.shape[2:])
            out[:, k] = arr[:, 0 if lev is None else lev]
    return np.where(np.isfinite(values), out, np.nan)


def to_model_units(encoders: EncoderPair, library: Library, obs: xr.Dataset) -> tuple[Library, xr.Dataset]:
    """The library and the observations in the units the model was trained in (cf-units, with a warning).

    Why: the model standardises its inputs with statistics of its training units, so a library in
    ``cm`` for a model trained in ``m`` would be analysed 100x off, silently. Incompatible units are
    refused naming the file, the variable and both units. A model without recorded units: unchanged.

    Parameters
    ----------
    encoders : the model's encoder pair (its ``units``)
    library : the library (its variables converted by :meth:`~oceanda.analysis.library.Library.in_units`)
    obs : gridded observations (in the library's units, as :func:`oceanda.io.open_obs` gives them)

    Returns
    -------
    tuple (Library, xarray.Dataset): ``library`` and ``obs`` themselves when nothing is to convert
    """
    units = encoders.units
    if not units:
        return library, obs
    return library.in_units(units, encoders.where), obs_in_model_units(encoders, obs)


def obs_in_model_units(encoders: EncoderPair, obs: xr.Dataset) -> xr.Dataset:
    """The observations of :func:`to_model_units` alone (several files against one converted library).

    Parameters
    ----------
    encoders : the model's encoder pair (its ``units``)
    obs : gridded observations

    Returns
    -------
    xarray.Dataset: ``obs`` itself when nothing is to convert
    """
    from oceanda import io

    units = encoders.units
    if not units:
        return obs
    source = (obs.encoding.get("oceanda_sources") or ["observations"])[0]
    names = list(dict.fromkeys(v for v, _ in encoders.obs_channels))
    names = [n for n in names if n in obs.data_vars and n in units]
    return io.convert_observed(obs, names, units, source, lambda want: f"the units '{want}' of {encoders.where}")
