"""Training the local (window) encoder pair used by local and hybrid modes.

Pairs are drawn afresh every epoch: a random library state, a random window position on the
(doubly periodic) grid, a fresh observation pattern over ``1..max_days`` days (each day's
observations taken from that day's state, the latest day winning where tracks cross) with noise.
The state encoder sees the ``size x size`` state window, the observation encoder the
``size + 2 halo`` window of observations around it (values, then 0/1 masks, as
:func:`oceanda.fields.encoder_obs_input` builds them for every model). Standardisation uses the
library's per-channel statistics, which the model stores. Training runs on the shared
:class:`~oceanda.contrastive.training.Trainer`; :class:`WindowTrainingConfig` (frozen, validated)
holds the architecture, the variant and the budget, and :meth:`WindowTrainingConfig.train_config`
the training settings it implies. The default variant is cosine similarity with the CLIP loss (see
:data:`VARIANTS` for what was measured against the Gaussian-optimal neg-sq-distance state|obs).
"""

from __future__ import annotations

import time as _time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from oceanda import fields, grid
from oceanda.analysis import windows as W
from oceanda.analysis.obs_patterns import DEFAULT_FAMILIES, FAMILIES, PatternDraw, PatternMix, pattern_mix, qg_family_obs
from oceanda.analysis.settings import SamplerSettings
from oceanda.contrastive.losses import LOSSES
from oceanda.contrastive.similarity import canonical_kind
from oceanda.contrastive.training import TrainConfig, Trainer
from oceanda.errors import ConfigurationError
from oceanda.pairs import lag_weights, time_axis, valid_lag_times

from oceanda.settings import Settings, check_choice, check_number

ENCODER_TYPES = ("mlp", "masked_cnn")


@dataclass(frozen=True)
class WindowTrainingConfig(Settings):
    """Architecture, variant and budget of the window encoder pair (checked on construction).

    ``size``/``stride``/``halo``: the window geometry (:class:`~oceanda.analysis.windows.WindowSpec`);
    ``state_encoder``/``obs_encoder``: ``{"type": "mlp" | "masked_cnn", ...options}``; ``max_days``:
    observation days per pair (1..max_days drawn); ``pairs_per_epoch``/``val_pairs``: fresh pairs per
    epoch and validation pairs; ``seconds``: the training budget; ``library_stride``: the stride of
    library windows local mode uses; ``mask_bank``: day patterns drawn once and cut at random
    positions (periodic grids; 0 draws fresh patterns for every pair).
    """

    SCHEMA: ClassVar[str] = "oceanda.WindowTrainingConfig"
    VERSION: ClassVar[int] = 1

    size: int = 16
    stride: int = 8
    halo: int = 8
    embedding_dim: int = 64
    similarity: str = "cosine"  # the default variant, cosine_clip (see VARIANTS)
    loss: str = "clip"
    tau: float = 0.1
    learn_tau: bool = False
    state_encoder: dict = field(default_factory=lambda: {"type": "mlp", "hidden": [256, 256]})
    obs_encoder: dict = field(default_factory=lambda: {"type": "masked_cnn", "width": 16, "depth": 2})
    max_days: int = 5
    pairs_per_epoch: int = 8192
    val_pairs: int = 2048
    batch_size: int = 256
    lr: float = 2e-3
    epochs: int = 200
    seconds: float = 150.0
    library_stride: int = 8
    mask_bank: int = 2000
    seed: int = 0

    def validate(self) -> None:
        """Raise :class:`~oceanda.errors.ConfigurationError` naming the first setting out of range."""
        from oceanda.analysis.settings import TAU_RANGE

        for name in ("size", "stride", "embedding_dim", "max_days", "library_stride"):
            check_number(name, getattr(self, name), lo=1, integer=True)
        check_number("halo", self.halo, lo=0, integer=True)
        check_number("mask_bank", self.mask_bank, lo=0, integer=True)
        canonical_kind(self.similarity)
        check_choice("loss", self.loss, LOSSES)
        check_number("tau", self.tau, lo=TAU_RANGE[0], hi=TAU_RANGE[1])  # beyond: exp(s / tau) overflows
        for name in ("state_encoder", "obs_encoder"):
            spec = getattr(self, name)
            if not isinstance(spec, dict) or spec.get("type") not in ENCODER_TYPES:
                raise ConfigurationError(f"{name}={spec!r}; expected a dict with 'type' one of {list(ENCODER_TYPES)}")
        check_number("val_pairs", self.val_pairs, lo=2, integer=True)
        self.train_config()  # the training settings: epochs, batch_size, lr, seconds, seed
        check_number("pairs_per_epoch", self.pairs_per_epoch, lo=self.batch_size, integer=True)

    def train_config(self) -> TrainConfig:
        """The training settings of these windows (constant learning rate after 20 warm-up steps).

        Returns
        -------
        TrainConfig
            What :class:`~oceanda.contrastive.training.Trainer` runs with.
        """
        return TrainConfig(loss=self.loss, epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, seed=self.seed,
                           max_seconds=self.seconds, warmup_steps=20, schedule="constant")


def _encoder(spec: dict, in_shape: Sequence[int], out_dim: int, periodic: bool):
    from oceanda.contrastive.encoders import MaskedCNNEncoder, MLPEncoder

    spec = dict(spec)
    kind = spec.pop("type")
    if kind == "mlp":
        return MLPEncoder(in_shape, out_dim, **spec)
    if kind == "masked_cnn":
        spec.setdefault("periodic", False)  # a window is not periodic even when the grid is
        return MaskedCNNEncoder(in_shape, out_dim, **spec)
    raise ConfigurationError(f"encoder type '{kind}'; expected one of {list(ENCODER_TYPES)}")


@dataclass(frozen=True)
class NeighbourNegatives:
    """Forecast-error-scale neighbours of every positive, beside the batch's climatological negatives.

    ``errors`` ``[B, C, Y, X]``: error fields (e.g. cycled forecast members minus the truth of a tuning run)
    in the library's channel layout on its (periodic) grid; each neighbour adds one of them, cut at a
    random offset (errors of a homogeneous box are translation invariant) and scaled by a log-uniform
    factor in ``scale``, to a copy of the positive state window and to what its observations see.
    ``k``: neighbours per positive. The tilt is then relative to a mixture of climatology and
    forecast-scale neighbours of it (docs/critics.md).
    """

    errors: np.ndarray
    k: int = 7
    scale: tuple[float, float] = (0.5, 2.0)

    def __post_init__(self) -> None:
        check_number("neighbours k", self.k, lo=1, integer=True)
        e = np.asarray(self.errors)
        if e.ndim != 4 or len(e) == 0 or not np.all(np.isfinite(e)):
            raise ConfigurationError(f"neighbour errors of shape {e.shape}; expected finite [B, C, Y, X] error fields")
        if not 0 < self.scale[0] <= self.scale[1]:
            raise ConfigurationError(f"neighbour scale {self.scale}; expected 0 < low <= high")

    def perturbations(self, n: int, g: int, rng: np.random.Generator, state_ch: Sequence[int], obs_ch: Sequence[int],
                      spec: W.WindowSpec) -> tuple[np.ndarray, np.ndarray]:
        """``(state [n, Cs, s, s], obs [n, Co, o, o])`` offsets; row 0 of every group of ``g`` is unperturbed."""
        e = np.asarray(self.errors, np.float32)
        ny, nx = e.shape[-2:]
        b, oy, ox = rng.integers(0, len(e), n), rng.integers(0, ny, n), rng.integers(0, nx, n)
        lo, hi = np.log(self.scale[0]), np.log(self.scale[1])
        amp = np.exp(rng.uniform(lo, hi, n)).astype(np.float32)
        amp[::g] = 0.0  # the positive itself
        h = spec.halo
        ow = W.gather(W.pad(e[:, list(obs_ch)], h, h + spec.size, True), b, oy, ox, spec.obs_size)
        sw = W.gather(W.pad(e[:, list(state_ch)], h, h + spec.size, True), b, oy, ox, spec.obs_size)[..., h:h + spec.size,
                                                                                                       h:h + spec.size]
        return amp[:, None, None, None] * sw, amp[:, None, None, None] * ow


class WindowPairSampler:
    """Fresh (state window, observation window) pairs from library states ``[T, C, Y, X]``.

    ``segments`` labels contiguous runs (observations of earlier days come from the same run);
    ``days`` the float days of the times (default ``0, 1, 2, ...``): day k observes the state k days
    before, interpolated in time between snapshots saved less often than daily;
    ``mask_fn(n, rng) -> [n, Y, X]`` draws one day's observation pattern (e.g. altimetry tracks);
    ``sigma`` is the observation noise per observed channel (physical units); ``starts`` optional
    ``(iy, ix)`` window starts to draw from (e.g. windows mostly over the ocean; default: all).
    """

    def __init__(self, states: np.ndarray, segments: np.ndarray, state_ch: Sequence[int], obs_ch: Sequence[int],
                 mask_fn: Callable[[int, np.random.Generator], np.ndarray], sigma: Sequence[float], spec: W.WindowSpec,
                 max_days: int = 1, norm_state: fields.Standardizer | None = None,
                 norm_obs: fields.Standardizer | None = None, indices: np.ndarray | None = None,
                 mask_bank: int = 0, seed: int = 0, days: np.ndarray | None = None,
                 starts: tuple[np.ndarray, np.ndarray] | None = None, distinct: bool = False,
                 neighbours: NeighbourNegatives | None = None):
        self.states = states
        self.neighbours = neighbours  # None: plain pairs (the bundled model's sampler, unchanged)
        self.distinct = bool(distinct)  # validation: no state window twice (a copy ties with it: a sure miss)
        self.segments = np.asarray(segments)
        self.days = np.arange(len(states), dtype=np.float64) if days is None else np.asarray(days, np.float64)
        self.starts = starts
        self.state_ch, self.obs_ch = list(state_ch), list(obs_ch)
        self.mask_fn = mask_fn
        self.sigma = np.asarray(sigma, dtype=np.float32)
        self.spec = spec
        self.max_days = int(max_days)
        self.norm_state, self.norm_obs = norm_state, norm_obs
        self.indices = np.arange(len(states)) if indices is None else np.asarray(indices)
        self.valid = valid_lag_times(self.days, self.segments, self.max_days, self.indices)  # days back in the same run
        h = spec.halo  # padded once: gathering windows is then pure indexing
        self._state_pad = W.pad(states[:, self.state_ch], 0, spec.size, spec.periodic)
        self._obs_pad = W.pad(states[:, self.obs_ch], h, h + spec.size, spec.periodic)
        # a bank of day patterns, windows cut at random positions: on a periodic grid a shifted
        # pattern is another draw of the same (translation-invariant) pattern distribution
        self._bank = None
        if mask_bank and spec.periodic:
            bank = self.mask_fn(int(mask_bank), np.random.default_rng([seed, 7]))
            self._bank = W.pad(bank[:, None].astype(np.float32), h, h + spec.size, True)

    def __call__(self, n: int, rng: np.random.Generator, days: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``n`` fresh pairs: (state input ``[n, Cs, size, size]``, obs input ``[n, 2 Co, obs_size, obs_size]``).

        Parameters
        ----------
        n : pairs to draw
        rng : the random generator (times, positions, day counts, patterns, noise)
        days : observation days of every pair (default: drawn in ``1..max_days``)

        Returns
        -------
        tuple of numpy.ndarray
            float32 encoder inputs (:func:`oceanda.fields.encoder_state_input` / ``encoder_obs_input``).
        """
        if self.neighbours is not None:
            return self._neighbour_pairs(n, rng, days)
        spec = self.spec
        ny, nx = self.states.shape[-2:]
        t = rng.choice(self.valid, size=n)
        drawn = self._distinct_draw(n, rng) if self.distinct else None
        if drawn is not None:
            t, iy, ix = drawn
            n = len(t)
        elif self.starts is not None:
            pick = rng.integers(0, len(self.starts[0]), size=n)
            iy, ix = self.starts[0][pick], self.starts[1][pick]
        else:
            iy = rng.integers(0, ny, size=n) if spec.periodic else rng.integers(0, max(1, ny - spec.size + 1), size=n)
            ix = rng.integers(0, nx, size=n) if spec.periodic else rng.integers(0, max(1, nx - spec.size + 1), size=n)
        nd = np.full(n, days) if days is not None else rng.integers(1, self.max_days + 1, size=n)
        sw = W.gather(self._state_pad, t, iy, ix, spec.size)
        return fields.encoder_state_input(sw, self.norm_state), self._obs_input(t, iy, ix, nd, rng)

    def _obs_input(self, t: np.ndarray, iy: np.ndarray, ix: np.ndarray, nd: np.ndarray, rng: np.random.Generator,
                   offset: np.ndarray | None = None) -> np.ndarray:
        """The observation encoder's input of the pairs at ``(t, iy, ix)`` observed over ``nd`` days."""
        return fields.encoder_obs_input(self._observe(t, iy, ix, nd, rng, offset=offset), self.norm_obs)

    def _distinct_draw(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, ...] | None:
        """Up to ``n`` (time, iy, ix) without repeats when repeats would be common (few times or windows).

        Retrieval ranks ties against the true candidate, so a state window drawn twice makes both
        draws misses: on a tiny grid with 40 times R@5 was 0 for any model. None: draw as usual.
        """
        ny, nx = self.states.shape[-2:]
        if self.starts is not None:
            sy, sx = np.asarray(self.starts[0]), np.asarray(self.starts[1])
        else:
            ry = np.arange(ny if self.spec.periodic else max(1, ny - self.spec.size + 1))
            rx = np.arange(nx if self.spec.periodic else max(1, nx - self.spec.size + 1))
            sy, sx = (a.ravel() for a in np.meshgrid(ry, rx, indexing="ij"))
        total = len(self.valid) * len(sy)
        if total >= 50 * n:  # duplicates under ~1 %: keep the plain draw (and its random stream)
            return None
        pick = rng.choice(total, size=min(n, total), replace=False)
        return np.asarray(self.valid)[pick // len(sy)], sy[pick % len(sy)], sx[pick % len(sy)]

    def _neighbour_pairs(self, n: int, rng: np.random.Generator, days: int | None) -> tuple[np.ndarray, np.ndarray]:
        """Groups of ``k + 1`` consecutive pairs sharing one library window: the window itself, then ``k`` copies
        plus a forecast-error-like perturbation (each observed from its own perturbed state).

        Why: in-batch negatives of a group are then forecast-error-scale neighbours of the positive (the
        Trainer's ``block_size`` keeps a group in one batch), the rest of the batch climatological ones.
        """
        spec, nb = self.spec, self.neighbours
        g = nb.k + 1
        ng = n // g
        ny, nx = self.states.shape[-2:]
        t = np.repeat(rng.choice(self.valid, size=ng), g)
        if self.starts is not None:
            pick = rng.integers(0, len(self.starts[0]), size=ng)
            iy, ix = np.repeat(self.starts[0][pick], g), np.repeat(self.starts[1][pick], g)
        else:
            iy, ix = (np.repeat(rng.integers(0, m if spec.periodic else max(1, m - spec.size + 1), size=ng), g)
                      for m in (ny, nx))
        nd = np.full(len(t), days) if days is not None else np.repeat(rng.integers(1, self.max_days + 1, size=ng), g)
        de_state, de_obs = nb.perturbations(len(t), g, rng, self.state_ch, self.obs_ch, spec)
        sw = W.gather(self._state_pad, t, iy, ix, spec.size) + de_state
        return fields.encoder_state_input(sw, self.norm_state), self._obs_input(t, iy, ix, nd, rng, offset=de_obs)

    def _observe(self, t: np.ndarray, iy: np.ndarray, ix: np.ndarray, nd: np.ndarray,
                 rng: np.random.Generator, offset: np.ndarray | None = None) -> np.ndarray:
        """Physical observation windows, NaN unobserved: ``nd`` days merged, the latest day winning.

        ``offset`` ``[n, Co, o, o]``: added to every day's true values (a perturbed state observed).
        """
        spec = self.spec
        o = spec.obs_size
        obs = np.full((len(t), len(self.obs_ch), o, o), np.nan, np.float32)
        for k in range(int(nd.max()) - 1, -1, -1):  # oldest first; the latest day overwrites
            sel = np.flatnonzero(nd > k)
            vals = self._day_values(t, iy, ix, sel, k, offset)
            mwin = self._pattern_windows(iy[sel], ix[sel], rng)
            noisy = vals + self.sigma[None, :, None, None] * rng.standard_normal(vals.shape).astype(np.float32)
            obs[sel] = np.where(mwin > 0.5, noisy, obs[sel])
        return obs

    def _day_values(self, t: np.ndarray, iy: np.ndarray, ix: np.ndarray, sel: np.ndarray, k: int,
                    offset: np.ndarray | None) -> np.ndarray:
        """True values ``[len(sel), Co, o, o]`` of the pairs ``sel`` observed ``k`` days back (between snapshots:
        interpolated in time; ``offset`` added)."""
        o = self.spec.obs_size
        i0, i1, w, _ = lag_weights(self.days, self.segments, t[sel], k)
        vals = W.gather(self._obs_pad, i0, iy[sel], ix[sel], o)
        if np.any(w > 0):
            wb = w[:, None, None, None]
            vals = (1.0 - wb) * vals + wb * W.gather(self._obs_pad, i1, iy[sel], ix[sel], o)
        return vals if offset is None else vals + offset[sel]

    def _pattern_windows(self, iy: np.ndarray, ix: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One day's observation pattern in the observation windows at ``(iy, ix)``, ``[n, 1, o, o]``."""
        spec, n = self.spec, len(iy)
        ny, nx = self.states.shape[-2:]
        o, h = spec.obs_size, spec.halo
        if self._bank is not None:  # a banked pattern at a random position: the window's own is irrelevant
            return W.gather(self._bank, rng.integers(0, len(self._bank), n), rng.integers(0, ny, n),
                            rng.integers(0, nx, n), o)
        masks = self.mask_fn(n, rng)
        return W.gather(W.pad(masks[:, None].astype(np.float32), h, h + spec.size, spec.periodic), np.arange(n), iy, ix, o)


class PatternPairSampler(WindowPairSampler):
    """Pairs observed by a :class:`~oceanda.analysis.obs_patterns.PatternMix`: every pair draws a family, a noise
    level and, per day, a fresh pattern of that family; the encoder sees values, masks and errors.

    ``mix``: the pattern mixture; ``library``: whose layout names the observed channels (a pair observes a random
    non-empty subset of the variables its family sees, a variable's levels together) and whose grid spacing (km)
    scales the patterns. Noise is the pair's fraction of each channel's std (``norm_obs``). ``mask_fn`` and
    ``sigma`` are not used.
    """

    def __init__(self, *args, mix: PatternMix, library, **kw):
        super().__init__(*args, **{**kw, "mask_bank": 0})
        channels = [library.layout.channels[c] for c in self.obs_ch]
        names = list(dict.fromkeys(v for v, _ in channels))
        self.patterns = PatternDraw(mix, self.spec.obs_size, *grid.km_spacing(library.ds))
        self.channel_table = mix.channel_table(channels)
        self.groups = np.asarray([names.index(v) for v, _ in channels], np.int64)  # the variable of each channel
        self.obs_std = np.asarray(self.norm_obs.std, np.float32)

    def _obs_input(self, t: np.ndarray, iy: np.ndarray, ix: np.ndarray, nd: np.ndarray, rng: np.random.Generator,
                   offset: np.ndarray | None = None) -> np.ndarray:
        n, o = len(t), self.spec.obs_size
        fam = self.patterns.families(n, rng)
        sig = (self.patterns.sigma_fractions(n, rng)[:, None] * self.obs_std[None, :]).astype(np.float32)  # [n, Co]
        seen = self.patterns.channels(fam, rng, self.channel_table, self.groups)  # [n, Co]
        obs = np.full((n, len(self.obs_ch), o, o), np.nan, np.float32)
        for k in range(int(nd.max()) - 1, -1, -1):  # oldest first; the latest day overwrites
            sel = np.flatnonzero(nd > k)
            vals = self._day_values(t, iy, ix, sel, k, offset)
            m = self.patterns.masks(fam[sel], rng)[:, None] & seen[sel][:, :, None, None]
            noisy = vals + sig[sel][:, :, None, None] * rng.standard_normal(vals.shape).astype(np.float32)
            obs[sel] = np.where(m, noisy, obs[sel])
        err = np.broadcast_to(sig[:, :, None, None], obs.shape)
        return fields.encoder_obs_input(obs, self.norm_obs, errors=err)


def _channels(library, state_variables: Sequence[str], obs_variables: Sequence[str]) -> tuple[list[int], list[int]]:
    return library.layout.channels_of(state_variables), library.layout.channels_of(obs_variables)


def _warn_few_validation_times(n_val: int, n: int) -> None:
    """Few held-out times: R@K then ranks window positions of the same few states, not states -- say so."""
    if n_val < 3:
        warnings.warn(f"only {n} state times ({n_val} held out to validate): the validation R@K compares window "
                      "positions of the same few states, not states; a meaningful check needs more times", UserWarning,
                      stacklevel=3)


def _validation_times(seg: np.ndarray) -> np.ndarray:
    """Whether each time validates: the last segments (or the last 10 % of times), never trained on."""
    useg = np.unique(seg)
    if len(useg) >= 5:
        return np.isin(seg, useg[-max(1, len(useg) // 8):])
    return np.arange(len(seg)) >= int(0.9 * len(seg))


def _window_model(library, cfg: WindowTrainingConfig, spec: W.WindowSpec, sc: list[int], oc: list[int],
                  norm_s: fields.Standardizer, norm_o: fields.Standardizer, sigma: Sequence[float], periodic: bool,
                  extra: dict | None, error_channel: bool = False):
    """The untrained window encoder pair with the config local mode reads (seeded from ``cfg.seed``)."""
    import torch

    from oceanda.contrastive.model import ContrastiveModel
    from oceanda.contrastive.similarity import Similarity

    lay = library.layout
    state_vars = list(dict.fromkeys(lay.channels[i][0] for i in sc))
    torch.manual_seed(cfg.seed)
    se = _encoder(cfg.state_encoder, (len(sc), cfg.size, cfg.size), cfg.embedding_dim, periodic)
    per = 3 if error_channel else 2  # values, masks[, errors] per observed channel
    oe = _encoder(cfg.obs_encoder, (per * len(oc), spec.obs_size, spec.obs_size), cfg.embedding_dim, periodic)
    model_cfg = {
        "grid_fingerprint": fields.grid_fingerprint(library.ds[state_vars], state_vars),
        "normalization": {"state": norm_s.to_dict(), "obs": norm_o.to_dict()},
        "units": {v: str(library.ds[v].attrs["units"]) for v in dict.fromkeys(lay.channels[i][0] for i in (*sc, *oc))
                  if "units" in library.ds[v].attrs},  # the library and obs are converted to them at use
        "extra": {"state_channels": [list(lay.channels[i]) for i in sc], "obs_channels": [list(lay.channels[i]) for i in oc],
                  "window": spec.to_dict(), "obs_sigma": [float(s) for s in sigma], "max_days": cfg.max_days,
                  **(extra or {})},
        "window_training": cfg.to_dict(),
        "sampler": SamplerSettings(library_stride=cfg.library_stride).to_dict(),  # calibration adds to it
    }
    return ContrastiveModel(se, oe, Similarity(cfg.similarity, tau=cfg.tau, learn_tau=cfg.learn_tau), model_cfg)


def train_window_model(library, mask_fn: Callable[[int, np.random.Generator], np.ndarray], sigma: Sequence[float],
                       out_dir=None, *, state_variables: Sequence[str] = ("ssh",),
                       obs_variables: Sequence[str] = ("ssh",), segments: np.ndarray | None = None,
                       config: WindowTrainingConfig | None = None, periodic: bool = True, quiet: bool = True,
                       overwrite: bool = False, extra: dict | None = None, days: np.ndarray | None = None,
                       min_ocean: float = 0.0, neighbours: NeighbourNegatives | None = None,
                       init_from=None, patterns=None) -> tuple[Any, dict]:
    """Train a window encoder pair on a library within ``config.seconds``; save it to ``out_dir``.

    Parameters
    ----------
    library : an :class:`~oceanda.analysis.library.Library` (its states are loaded: a few hundred MB
        for the QG library)
    mask_fn : ``mask_fn(n, rng) -> bool [n, Y, X]``, one day's observation patterns
    sigma : observation noise per observed channel (physical units)
    out_dir : where to save the model (``None``: not saved)
    state_variables, obs_variables : encoded and observed variables
    segments : run label of each library time (default: one run)
    config : architecture, variant and budget (default: ``WindowTrainingConfig()``)
    periodic : the grid is doubly periodic
    quiet : no progress bar
    overwrite : replace a model in ``out_dir``
    extra : more entries for the model's ``config["extra"]`` (e.g. the variant)
    days : float days of each library time (default: ``0, 1, 2, ...``); observation day k looks k days back
    min_ocean : state windows are drawn where at least this fraction of cells is ocean (land is NaN)
    neighbours : forecast-error-scale negatives beside the climatological ones (:class:`NeighbourNegatives`;
        None: plain pairs, the bundled model's training unchanged)
    init_from : a model directory of the same architecture whose encoder weights start the training
        (fine-tuning, e.g. the bundled critic sharpened with neighbours; None: a fresh seeded start)
    patterns : a :class:`~oceanda.analysis.obs_patterns.PatternMix`: pairs observed by that mixture of
        observation patterns and noise levels, the error an encoder input (``mask_fn`` and ``sigma`` then
        unused); None: ``mask_fn`` patterns at ``sigma``, values and masks only

    Returns
    -------
    tuple
        ``(ContrastiveModel, {"history", "best_epoch", "health"})``; the model's config carries everything
        local mode needs (channels, statistics, window, grid fingerprint), the training settings (``train``)
        and the validation retrieval next to chance (``health``).
    """
    cfg = config or WindowTrainingConfig()
    spec = W.WindowSpec(cfg.size, cfg.stride, cfg.halo, periodic)
    sc, oc = _channels(library, state_variables, obs_variables)
    states = library.read(np.arange(library.n))
    seg = np.zeros(library.n, np.int64) if segments is None else np.asarray(segments)
    norm_s = fields.Standardizer.fit(states[:, sc])
    if all(c in sc for c in oc):  # observations of state channels share their statistics
        norm_o = fields.Standardizer(norm_s.mean[[sc.index(c) for c in oc]], norm_s.std[[sc.index(c) for c in oc]])
    else:
        norm_o = fields.Standardizer.fit(states[:, oc])
    is_val = _validation_times(seg)
    _warn_few_validation_times(int(is_val.sum()), library.n)
    starts = _ocean_starts(states[0, sc], spec, min_ocean) if min_ocean > 0 else None
    mk = lambda idx, **kw: WindowPairSampler(states, seg, sc, oc, mask_fn, sigma, spec, cfg.max_days, norm_s, norm_o,  # noqa: E731
                                             idx, mask_bank=cfg.mask_bank, seed=cfg.seed, days=days, starts=starts, **kw)
    tc = cfg.train_config()
    if patterns is not None:
        mk = lambda idx, **kw: PatternPairSampler(  # noqa: E731
            states, seg, sc, oc, None, [], spec, cfg.max_days, norm_s, norm_o, idx, seed=cfg.seed, days=days,
            starts=starts, mix=patterns, library=library, **kw)
        extra, sigma = _pattern_extra(patterns, norm_o, extra, neighbours)
    if neighbours is None:
        train_s, val_s = mk(np.flatnonzero(~is_val)), mk(np.flatnonzero(is_val), distinct=True)
    else:  # groups of k + 1 rows kept together in every batch (and validated alike)
        train_s, val_s = mk(np.flatnonzero(~is_val), neighbours=neighbours), mk(np.flatnonzero(is_val), neighbours=neighbours)
        tc = tc.replace(block_size=neighbours.k + 1)
        extra = {**(extra or {}), "neighbours": {"k": neighbours.k, "scale": list(neighbours.scale),
                                                 "errors": int(len(neighbours.errors))}}
    model = _window_model(library, cfg, spec, sc, oc, norm_s, norm_o, sigma, periodic, extra,
                          error_channel=patterns is not None)
    if init_from is not None:
        _init_encoders(model, init_from)
    t0 = _time.perf_counter()
    res = Trainer(tc, quiet=quiet).fit(
        model, lambda epoch, rng: train_s(cfg.pairs_per_epoch, rng), lambda rng: val_s(cfg.val_pairs, rng))
    model.config["extra"]["training_seconds"] = _time.perf_counter() - t0
    model.eval()
    if out_dir is not None:
        model.save(out_dir, overwrite=overwrite)
    return model, {"history": res.history, "best_epoch": res.best_epoch, "health": res.health}


def _pattern_extra(patterns, norm_o: fields.Standardizer, extra: dict | None, neighbours) -> tuple[dict, list[float]]:
    """The model's ``extra`` recording a pattern mixture, and the ``obs_sigma`` it records: the error assumed for
    observations that give none -- the middle of the trained range. (Neighbour negatives are not combined with it.)"""
    if neighbours is not None:
        raise ConfigurationError("patterns and neighbours together; expected one of them")
    sigma = [float(v) for v in norm_o.std * float(np.sqrt(np.prod(patterns.sigma_fraction)))]
    return {**(extra or {}), "obs_error_channel": True, "observation_patterns": patterns.to_dict()}, sigma


def _init_encoders(model, model_dir) -> None:
    """Copy the encoder weights of the model in ``model_dir`` (same shapes; the similarity's own temperature kept)."""
    from oceanda.contrastive.model import ContrastiveModel

    src = ContrastiveModel.load(model_dir)
    for name in ("state_encoder", "obs_encoder"):
        getattr(model, name).load_state_dict(getattr(src, name).state_dict())
    model.config["extra"]["init_from"] = str(model_dir)


def _ocean_starts(state: np.ndarray, spec: W.WindowSpec, min_ocean: float) -> tuple[np.ndarray, np.ndarray] | None:
    """Window starts whose state window is at least ``min_ocean`` ocean (None: every start qualifies)."""
    ny, nx = state.shape[-2:]
    ocean = np.isfinite(state).all(axis=0).astype(np.float32)[None, None]
    iy, ix = (a.ravel() for a in np.meshgrid(np.arange(ny if spec.periodic else max(1, ny - spec.size + 1)),
                                             np.arange(nx if spec.periodic else max(1, nx - spec.size + 1)), indexing="ij"))
    padded = np.nan_to_num(W.pad(ocean, 0, spec.size, spec.periodic), nan=0.0)
    frac = W.gather(padded, np.zeros(len(iy), np.int64), iy, ix, spec.size).mean(axis=(1, 2, 3))
    keep = frac >= min_ocean
    if keep.all():
        return None
    if not keep.any():
        raise ConfigurationError(f"no {spec.size} x {spec.size} window is {min_ocean:.0%} ocean; expected a smaller window (--window-size)")
    return iy[keep], ix[keep]



#: Similarity/loss variants compared by benchmarks/bench_sampler_variants.py; the first is the default.
#: Measured on the bundled QG sample (120 s of training each, local analyses of the tuning truth from
#: one day of tracks, no spread recalibration; seeds 0 and 1): cosine_clip RMSE/clim 0.821, 0.813 with
#: spread/skill 0.88, 0.89; negsq_state|obs 0.872, 0.868 with 0.66, 0.66; inner_state|obs 0.860 with
#: 0.70; negsq_spatial 0.919 with 0.49. The Gaussian theory favours negsq_state|obs (exact conditional
#: covariance at the optimum), but with a CPU-minute budget the learned neg-sq likelihood is
#: over-confident (ESS ~80 windows against ~2300 for cosine at tau 0.1), so cosine_clip is both the
#: more accurate and the better calibrated here.
VARIANTS = {
    "cosine_clip": {"similarity": "cosine", "loss": "clip", "tau": 0.1},
    "negsq_state|obs": {"similarity": "neg_sq_distance", "loss": "state|obs", "tau": 1.0},
    "inner_state|obs": {"similarity": "inner_product", "loss": "state|obs", "tau": 1.0},
    # spatial heads: both embeddings are 4x4 maps of 8 features over the state window (the observation
    # encoder crops its halo's cells after the convolutions), a sum of local agreements
    "negsq_spatial": {"similarity": "neg_sq_distance", "loss": "state|obs", "tau": 1.0, "embedding_dim": 128,
                      "state_encoder": {"type": "masked_cnn", "width": 16, "depth": 2, "head": "spatial"},
                      "obs_encoder": {"type": "masked_cnn", "width": 16, "depth": 2, "head": "spatial", "crop": 2}},
}
DEFAULT_VARIANT = next(iter(VARIANTS))


def altimetry_mask_fn(ny: int, nx: int, dy: float, dx: float):
    """One day of along-track altimetry (``observe.AlongTrackAltimetry()``) with a fresh orbit phase per sample.

    Parameters
    ----------
    ny, nx : the grid's shape
    dy, dx : its spacing (km)

    Returns
    -------
    callable
        ``mask_fn(n, rng) -> bool [n, ny, nx]``.
    """
    from oceanda.observe import AlongTrackAltimetry

    alt = AlongTrackAltimetry()
    return lambda n, rng: alt.sample_mask(n, rng, ny=ny, nx=nx, dy=dy, dx=dx)


#: what the QG window model observes: SSH, and psi of both layers (in-situ profiles)
QG_OBSERVED = ("ssh", "psi")


def qg_patterns(families: Sequence[str] | None = None):
    """The QG testbed's pattern mixture: tracks, clouds and swaths see SSH; points see SSH and/or psi profiles."""
    return PatternMix(families=tuple(families or DEFAULT_FAMILIES),
                      observes={"tracks": ["ssh"], "clouds": ["ssh"], "swaths": ["ssh"], "points": ["ssh", "psi"]})


def train_qg_window_model(library, out_dir=None, *, seconds: float = 150.0, variant: str = DEFAULT_VARIANT,
                          seed: int = 0, quiet: bool = True, overwrite: bool = True, sigma_fraction: float = 0.1,
                          neighbours: NeighbourNegatives | None = None, init_from=None, patterns=None,
                          **overrides) -> tuple[Any, dict]:
    """Train the QG altimetry window model on a library (path or Library with ``ssh``; ``run`` marks runs).

    Observations: 1..``max_days`` days of 4 altimetry tracks a day, noise ``sigma_fraction`` x the
    library SSH standard deviation.

    Parameters
    ----------
    library : a library path or :class:`~oceanda.analysis.library.Library`
    out_dir : where to save the model (``None``: not saved)
    seconds, seed : the training budget and seed
    variant : a key of :data:`VARIANTS`
    quiet, overwrite : as :func:`train_window_model`
    sigma_fraction : observation noise as a fraction of the library SSH standard deviation
    neighbours : forecast-error-scale negatives (:class:`NeighbourNegatives`; None: climatological only)
    init_from : a model directory whose encoder weights start the training (:func:`train_window_model`)
    patterns : a :class:`~oceanda.analysis.obs_patterns.PatternMix` (e.g. :func:`qg_patterns`): observations of
        SSH and psi drawn from that mixture, the error an input (``sigma_fraction`` then unused); None: altimetry
    **overrides : :class:`WindowTrainingConfig` fields

    Returns
    -------
    tuple
        As :func:`train_window_model`.
    """
    from oceanda.analysis.library import Library

    check_choice("variant", variant, list(VARIANTS))
    lib = library if isinstance(library, Library) else Library.open(library)
    lib.load(3e9)
    days, seg = time_axis(lib.ds)  # observation days look back in days (the sample library is every 2 days)
    ny, nx = lib.shape
    dy, dx = grid.yx_spacing(lib.ds)
    ch = lib.layout.channels.index(("ssh", None))
    sigma = sigma_fraction * float(np.std(lib.read(np.arange(0, lib.n, max(1, lib.n // 1000)))[:, ch]))
    cfg = WindowTrainingConfig(seconds=seconds, seed=seed, **{**VARIANTS[variant], **overrides})
    if patterns is not None:
        return train_window_model(lib, None, [], out_dir, obs_variables=QG_OBSERVED, segments=seg, config=cfg,
                                  quiet=quiet, overwrite=overwrite, extra={"variant": variant}, days=days,
                                  init_from=init_from, patterns=patterns)
    return train_window_model(lib, altimetry_mask_fn(ny, nx, dy, dx), [sigma], out_dir, segments=seg, config=cfg,
                              quiet=quiet, overwrite=overwrite, extra={"variant": variant}, days=days,
                              neighbours=neighbours, init_from=init_from)


#: sampler temperatures scanned on the tuning truth when the bundled window model is recalibrated
BUNDLED_TAUS = (0.1, 0.09, 0.08, 0.07, 0.06, 0.05)
#: the same for a pattern model (read on several families: sharper posteriors where observations are dense)
PATTERN_TAUS = (0.1, 0.08, 0.06, 0.05, 0.04, 0.03)


#: the bundled window model's training budget (its 200 epochs took 868 s on one thread of a shared 2-core CPU)
BUNDLED_SECONDS = 1200.0


def train_bundled_window_model(sample_dir, out_dir, *, quiet: bool = True, seed: int = 0,
                               seconds: float = BUNDLED_SECONDS, calibrate: bool = True,
                               families: Sequence[str] | None = DEFAULT_FAMILIES) -> Any:
    """The window model shipped in ``sample_data/models/qg_window`` (``oceanda demo --train`` reruns this).

    Trained on ``sample_dir/library.nc`` for 200 epochs or ``seconds``: with ``families`` (default: tracks, clouds,
    points) on that mixture of observation patterns (:func:`qg_patterns`; SSH and psi observed, 1..3 days, the
    error an input), with ``families=None`` on 1-day altimetry pairs (the bundled model before issue 18). The
    sampler temperature and spread factor are then calibrated on the tuning truth (``truth_tune.nc``; with
    ``families`` the temperature best over those families' observations of it), never on an evaluation run.

    Parameters
    ----------
    sample_dir : the sample folder
    out_dir : where the model is saved
    quiet, seed, seconds : as :func:`train_qg_window_model`
    calibrate : calibrate the spread factor and the hybrid settings on the tuning truth
    families : pattern families to train on (default ``obs_patterns.DEFAULT_FAMILIES``); None: altimetry only

    Returns
    -------
    ContrastiveModel
        The saved (and calibrated) model.
    """
    from pathlib import Path

    from oceanda.analysis.library import Library
    from oceanda.contrastive.model import ContrastiveModel

    sample_dir = Path(sample_dir)
    lib = Library.open(sample_dir / "library.nc")
    patterns = qg_patterns(families) if families else None
    model, _ = train_qg_window_model(lib, out_dir, seconds=seconds, seed=seed, quiet=quiet,
                                     max_days=3 if patterns else 1, pairs_per_epoch=4096, val_pairs=1024,
                                     patterns=patterns)
    if calibrate and (sample_dir / "truth_tune.nc").exists():
        _calibrate_bundled(sample_dir, out_dir, lib, families, seed)
        model = ContrastiveModel.load(out_dir)
    return model


def _calibrate_bundled(sample_dir, out_dir, lib, families: Sequence[str] | None, seed: int) -> None:
    """Temperature (mean relative RMSE over the families' tuning observations), then spread and hybrid on tracks."""
    from pathlib import Path

    from oceanda import io, superob
    from oceanda.analysis.calibration import calibrate_model_spread, calibrate_sampler_tau
    from oceanda.kalman import tuned_settings

    truth = io.open_states(Path(sample_dir) / "truth_tune.nc").load()
    tracks = io.open_obs(Path(sample_dir) / "obs_altimetry_tune.nc", like=lib.ds).load()
    cache = Path(out_dir) / "library_cache"
    sets = {"tracks": tracks}
    for f in families or ():
        if f != "tracks":
            o = qg_family_obs(truth, lib.ds, f, np.random.default_rng([18, FAMILIES.index(f), 99]))
            sets[f] = superob.to_grid(o, lib.ds) if superob.superobbable(o, lib.ds) else o
    taus = PATTERN_TAUS if families else BUNDLED_TAUS
    scans = {f: calibrate_sampler_tau(out_dir, lib, o, truth, taus, seed=seed, cache_dir=cache)[1]
             for f, o in sets.items()}
    score = {t: float(np.mean([s[t] / s[taus[0]] for s in scans.values()])) for t in taus}
    tau = min(score, key=lambda t: score[t])
    scan = scans["tracks"] if len(scans) == 1 else score  # several families: the mean RMSE relative to taus[0]
    calibrate_model_spread(out_dir, lib, tracks, truth, times=np.arange(0, tracks.sizes["time"], 3), seed=seed,
                           cache_dir=cache, hybrid_from_enoi=tuned_settings("qg_enoi"), tau=tau, tau_scan=scan)
    io.remove_tree(cache)  # not shipped


def window_geometry(ny: int, nx: int, periodic: bool, size: int | None = None, stride: int | None = None,
                    halo: int | None = None, log: Callable[[str], None] | None = None) -> dict[str, int]:
    """Window size, stride and halo that fit an ``ny x nx`` grid (the defaults, shrunk on small grids).

    Why: the default 16-cell window does not fit a grid of 12 rows; rather than refusing, the window
    shrinks to the grid (an even size, stride half of it) and says so.

    Parameters
    ----------
    ny, nx : the grid
    periodic : the grid is doubly periodic
    size, stride, halo : requested values (None: 16, size / 2, 8)
    log : where the adaptation is reported (None: silent)

    Returns
    -------
    dict
        ``{"size", "stride", "halo"}``.
    """
    defaults = WindowTrainingConfig()
    s = int(size or defaults.size)
    m = min(int(ny), int(nx))
    if s > m:
        s2 = max(2, m - m % 2)
        if log is not None:
            log(f"window size {s} exceeds the {ny} x {nx} grid; using {s2}")
        s = s2
    st = int(stride) if stride else max(1, s // 2)
    h = int(defaults.halo if halo is None else halo)
    return {"size": s, "stride": min(st, s), "halo": h, "library_stride": min(st, s)}


def train_window_model_from_obs(states, obs, out_dir, *, state_vars: Sequence[str] | None = None,
                                obs_vars: Sequence[str] | None = None, obs_days: int = 1, periodic: bool | None = None,
                                size: int | None = None, stride: int | None = None, halo: int | None = None,
                                seconds: float | None = None, seed: int = 0, quiet: bool = True,
                                overwrite: bool = False, source: dict | None = None,
                                log: Callable[[str], None] | None = None, patterns=None, **options) -> tuple[Any, Any]:
    """Train a window (local/hybrid) model on a user's states, observed like a user's observation file.

    Works on any grid of the canonical layout: (y, x) km, (lat, lon), curvilinear, with land (NaN;
    windows drawn where at least a quarter is ocean; land enters the encoders as zero with a zero
    mask), periodic or regional (the default follows :func:`oceanda.observe.geometry`: km boxes
    doubly periodic, other grids not). Observation patterns come from ``obs`` as for field models
    (:func:`oceanda.pairs.mask_sampler`: its altimetry operator, else its own masks; the first observed
    variable's pattern is shared by all observed variables), noise from ``<var>_error``.

    Parameters
    ----------
    states : the training states (Dataset; ``run`` coordinate marks independent runs)
    obs : gridded observations on the states' grid
    out_dir : the checkpoint directory
    state_vars, obs_vars : encoded and observed variables (default: the observed state variables)
    obs_days : observation days per pair (1..obs_days drawn), looking back in days
    periodic : the grid is doubly periodic (None: automatic)
    size, stride, halo : the window (:func:`window_geometry`)
    seconds, seed, quiet, overwrite : the budget (default 150 s), seed, progress, replacing a model
    source : provenance stored in ``extra.source``
    log : where adaptations are reported
    patterns : a :class:`~oceanda.analysis.obs_patterns.PatternMix` (or what ``obs_patterns.pattern_mix`` reads): pairs
        observed by that mixture of patterns and noise levels, the error an encoder input -- one model for any
        observation set (``obs`` then gives only the observed variables); None: ``obs``' own pattern and noise
    **options : other :class:`WindowTrainingConfig` fields (``similarity``, ``loss``, ``tau``, ``epochs``,
        ``batch_size``, ``lr``, ``embedding_dim``, ...)

    Returns
    -------
    tuple
        ``(model, TrainResult)`` (its ``health``: validation retrieval next to chance).
    """
    from pathlib import Path

    from oceanda import io, observe, pairs
    from oceanda.analysis.library import Library
    from oceanda.contrastive.training import TrainResult
    from oceanda.errors import OutputExistsError

    if out_dir is not None and not overwrite and (Path(out_dir) / "model.safetensors").exists():
        raise OutputExistsError(f"{out_dir}: holds a model already; pass overwrite=True (CLI: --overwrite)")
    obs_vars = pairs._data_variables(obs, obs_vars)
    state_vars = list(state_vars or obs_vars)
    lib = Library(states, variables=list(dict.fromkeys(state_vars + obs_vars)), source="states")
    ny, nx = lib.shape
    if periodic is None:
        periodic = bool(all(observe.geometry(states).periodic))
    geo = window_geometry(ny, nx, periodic, size, stride, halo, log)
    days, seg = pairs.time_axis(states)
    patterns = pattern_mix(patterns)
    if patterns is not None:
        mask_fn, sigma = None, []
    else:
        mask_fn = pairs.mask_sampler(obs, obs_vars[0], ny, nx)
        sigma = [pairs.obs_sigma(obs, lib.layout.channels[c][0]) for c in lib.layout.channels_of(obs_vars)]
    given = {k: v for k, v in options.items() if v is not None and k in WindowTrainingConfig.__dataclass_fields__}
    cfg = WindowTrainingConfig(seconds=float(seconds or WindowTrainingConfig.seconds), seed=int(seed),
                               max_days=int(obs_days), **geo, **given)
    model, out = train_window_model(lib, mask_fn, sigma, out_dir, state_variables=state_vars, obs_variables=obs_vars,
                                    segments=seg, config=cfg, periodic=periodic, quiet=quiet, overwrite=overwrite,
                                    extra={"source": source or {}, "periodic": bool(periodic)}, days=days,
                                    min_ocean=0.25, patterns=patterns)
    res = TrainResult(history=out["history"], best_epoch=out["best_epoch"], health=out["health"])
    if out_dir is not None:
        io.write_json(res.history, Path(out_dir) / "history.json", overwrite=True)
    return model, res

