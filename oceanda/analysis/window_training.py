"""Training the local (window) encoder pair used by local and hybrid modes.

Pairs are drawn afresh every epoch: a random library state, a random window position on the
(doubly periodic) grid, a fresh observation pattern over ``1..max_days`` days (each day's
observations taken from that day's state, the latest day winning where tracks cross) with noise.
The state encoder sees the ``size x size`` state window, the observation encoder the
``size + 2 halo`` window of observations around it (values, then 0/1 masks). Standardisation uses
the library's per-channel statistics, which the model stores. The default variant is the
negative-squared-distance similarity with the one-sided state|obs loss: in the Gaussian case it
recovers the conditional covariance, not only the mean (paper-notes section 5(b)).
"""

from __future__ import annotations

import time as _time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from oceanda import fields
from oceanda.analysis import windows as W


@dataclass
class WindowTrainingConfig:
    """Architecture, variant and budget of the window encoder pair."""

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


def _encoder(spec: dict, in_shape: Sequence[int], out_dim: int, periodic: bool):
    from oceanda.contrastive.encoders import MaskedCNNEncoder, MLPEncoder

    spec = dict(spec)
    kind = spec.pop("type")
    if kind == "mlp":
        return MLPEncoder(in_shape, out_dim, **spec)
    if kind == "masked_cnn":
        spec.setdefault("periodic", False)  # a window is not periodic even when the grid is
        return MaskedCNNEncoder(in_shape, out_dim, **spec)
    raise ValueError(f"encoder type '{kind}'; expected 'mlp' or 'masked_cnn'")


class WindowPairSampler:
    """Fresh (state window, observation window) pairs from library states ``[T, C, Y, X]``.

    ``segments`` labels contiguous daily runs (observations of earlier days come from the same run);
    ``mask_fn(n, rng) -> [n, Y, X]`` draws one day's observation pattern (e.g. altimetry tracks);
    ``sigma`` is the observation noise per observed channel (physical units).
    """

    def __init__(self, states: np.ndarray, segments: np.ndarray, state_ch: Sequence[int], obs_ch: Sequence[int],
                 mask_fn: Callable[[int, np.random.Generator], np.ndarray], sigma: Sequence[float], spec: W.WindowSpec,
                 max_days: int = 1, norm_state: fields.Standardizer | None = None,
                 norm_obs: fields.Standardizer | None = None, indices: np.ndarray | None = None,
                 mask_bank: int = 0, seed: int = 0):
        self.states = states
        self.segments = np.asarray(segments)
        self.state_ch, self.obs_ch = list(state_ch), list(obs_ch)
        self.mask_fn = mask_fn
        self.sigma = np.asarray(sigma, dtype=np.float32)
        self.spec = spec
        self.max_days = int(max_days)
        self.norm_state, self.norm_obs = norm_state, norm_obs
        self.indices = np.arange(len(states)) if indices is None else np.asarray(indices)
        seg = self.segments[self.indices]
        ok = np.ones(len(self.indices), bool)
        for k in range(1, self.max_days):  # the previous days must exist in the same run
            prev = self.indices - k
            ok &= (prev >= 0) & (self.segments[np.maximum(prev, 0)] == seg)
        self.valid = self.indices[ok]
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
        spec = self.spec
        ny, nx = self.states.shape[-2:]
        t = rng.choice(self.valid, size=n)
        iy = rng.integers(0, ny, size=n) if spec.periodic else rng.integers(0, ny - spec.size + 1, size=n)
        ix = rng.integers(0, nx, size=n) if spec.periodic else rng.integers(0, nx - spec.size + 1, size=n)
        nd = np.full(n, days) if days is not None else rng.integers(1, self.max_days + 1, size=n)
        sw = W.gather(self._state_pad, t, iy, ix, spec.size)
        o = spec.obs_size
        h = spec.halo
        padded = self._obs_pad
        obs = np.full((n, len(self.obs_ch), o, o), np.nan, np.float32)
        for k in range(int(nd.max()) - 1, -1, -1):  # oldest first; the latest day overwrites
            sel = np.flatnonzero(nd > k)
            vals = W.gather(padded, t[sel] - k, iy[sel], ix[sel], o)
            if self._bank is not None:
                mwin = W.gather(self._bank, rng.integers(0, len(self._bank), len(sel)), rng.integers(0, ny, len(sel)),
                                rng.integers(0, nx, len(sel)), o)
            else:
                masks = self.mask_fn(len(sel), rng)
                mwin = W.gather(W.pad(masks[:, None].astype(np.float32), h, h + spec.size, spec.periodic),
                                np.arange(len(sel)), iy[sel], ix[sel], o)
            noisy = vals + self.sigma[None, :, None, None] * rng.standard_normal(vals.shape).astype(np.float32)
            obs[sel] = np.where(mwin > 0.5, noisy, obs[sel])
        if self.norm_state is not None:
            sw = self.norm_state.transform(sw.astype(np.float32))
        if self.norm_obs is not None:
            obs = self.norm_obs.transform(obs)
        m = np.isfinite(obs)
        obs_in = np.concatenate([np.where(m, obs, 0.0), m.astype(np.float32)], axis=1).astype(np.float32)
        return sw.astype(np.float32), obs_in


def train_window_model(library, mask_fn: Callable[[int, np.random.Generator], np.ndarray], sigma: Sequence[float],
                       out_dir=None, *, state_variables: Sequence[str] = ("ssh",),
                       obs_variables: Sequence[str] = ("ssh",), segments: np.ndarray | None = None,
                       config: WindowTrainingConfig | None = None, periodic: bool = True, quiet: bool = True,
                       overwrite: bool = False, extra: dict | None = None) -> tuple[Any, dict]:
    """Train a window encoder pair on a library within ``config.seconds``; save it to ``out_dir``.

    ``library`` is an :class:`~oceanda.analysis.library.Library` (its states are loaded: a few
    hundred MB for the QG library). Returns ``(ContrastiveModel, history)``; the model's config
    carries everything local mode needs (channels, statistics, window, grid fingerprint).
    """
    import torch

    from oceanda.contrastive.model import ContrastiveModel
    from oceanda.contrastive.similarity import Similarity
    from oceanda.contrastive.training import train

    cfg = config or WindowTrainingConfig()
    spec = W.WindowSpec(cfg.size, cfg.stride, cfg.halo, periodic)
    lay = library.layout
    sc = [lay.channels.index(c) for c in lay.channels if c[0] in state_variables]
    state_vars = list(dict.fromkeys(lay.channels[i][0] for i in sc))
    oc = [lay.channels.index(c) for c in lay.channels if c[0] in obs_variables]
    states = library.read(np.arange(library.n))
    seg = np.zeros(library.n, np.int64) if segments is None else np.asarray(segments)
    norm_s = fields.Standardizer.fit(states[:, sc])
    norm_o = fields.Standardizer(norm_s.mean[[sc.index(c) for c in oc]], norm_s.std[[sc.index(c) for c in oc]])
    # validation: the last segments (or the last 10 % of times) are never trained on
    useg = np.unique(seg)
    if len(useg) >= 5:
        val_seg = useg[-max(1, len(useg) // 8):]
        is_val = np.isin(seg, val_seg)
    else:
        is_val = np.arange(library.n) >= int(0.9 * library.n)
    mk = lambda idx: WindowPairSampler(states, seg, sc, oc, mask_fn, sigma, spec, cfg.max_days, norm_s, norm_o, idx,
                                       mask_bank=cfg.mask_bank, seed=cfg.seed)
    train_s, val_s = mk(np.flatnonzero(~is_val)), mk(np.flatnonzero(is_val))
    torch.manual_seed(cfg.seed)
    se = _encoder(cfg.state_encoder, (len(sc), cfg.size, cfg.size), cfg.embedding_dim, periodic)
    oe = _encoder(cfg.obs_encoder, (2 * len(oc), spec.obs_size, spec.obs_size), cfg.embedding_dim, periodic)
    model_cfg = {
        "grid_fingerprint": fields.grid_fingerprint(library.ds[state_vars], state_vars),
        "normalization": {"state": norm_s.to_dict(), "obs": norm_o.to_dict()},
        "extra": {"state_channels": [list(lay.channels[i]) for i in sc], "obs_channels": [list(lay.channels[i]) for i in oc],
                  "window": spec.to_dict(), "library_stride": cfg.library_stride, "obs_sigma": [float(s) for s in sigma],
                  "max_days": cfg.max_days, "training_config": cfg.__dict__, **(extra or {})},
    }
    model = ContrastiveModel(se, oe, Similarity(cfg.similarity, tau=cfg.tau, learn_tau=cfg.learn_tau), model_cfg)
    t0 = _time.perf_counter()
    res = train(model, lambda epoch, rng: train_s(cfg.pairs_per_epoch, rng), lambda rng: val_s(cfg.val_pairs, rng),
                loss=cfg.loss, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed,
                max_seconds=cfg.seconds, quiet=quiet, warmup_steps=20, schedule="constant")
    model.config["extra"]["training_seconds"] = _time.perf_counter() - t0
    model.eval()
    if out_dir is not None:
        model.save(out_dir, overwrite=overwrite)
    return model, {"history": res.history, "best_epoch": res.best_epoch}


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
    """One day of along-track altimetry (``observe.AlongTrackAltimetry()``) with a fresh orbit phase per sample."""
    from oceanda.observe import AlongTrackAltimetry

    alt = AlongTrackAltimetry()
    return lambda n, rng: alt.sample_mask(n, rng, ny=ny, nx=nx, dy=dy, dx=dx)


def train_qg_window_model(library, out_dir=None, *, seconds: float = 150.0, variant: str = DEFAULT_VARIANT,
                          seed: int = 0, quiet: bool = True, overwrite: bool = True, sigma_fraction: float = 0.1,
                          **overrides) -> tuple[Any, dict]:
    """Train the QG altimetry window model on a library (path or Library with ``ssh``; ``run`` marks runs).

    Observations: 1..``max_days`` days of 4 altimetry tracks a day, noise ``sigma_fraction`` x the
    library SSH standard deviation. ``overrides`` set :class:`WindowTrainingConfig` fields.
    """
    from oceanda.analysis.library import Library

    lib = library if isinstance(library, Library) else Library.open(library)
    lib.load(3e9)
    seg = np.asarray(lib.ds["run"].values) if "run" in lib.ds.variables else None
    ny, nx = lib.shape
    dy = float(lib.ds.y[1] - lib.ds.y[0]) if "y" in lib.ds.coords else 1.0
    dx = float(lib.ds.x[1] - lib.ds.x[0]) if "x" in lib.ds.coords else 1.0
    ch = lib.layout.channels.index(("ssh", None))
    sigma = sigma_fraction * float(np.std(lib.read(np.arange(0, lib.n, max(1, lib.n // 1000)))[:, ch]))
    cfg = WindowTrainingConfig(seconds=seconds, seed=seed, **{**VARIANTS[variant], **overrides})
    return train_window_model(lib, altimetry_mask_fn(ny, nx, dy, dx), [sigma], out_dir, segments=seg, config=cfg,
                              quiet=quiet, overwrite=overwrite, extra={"variant": variant})


def train_bundled_window_model(sample_dir, out_dir, *, quiet: bool = True, seed: int = 0, seconds: float = 150.0,
                               calibrate: bool = True) -> Any:
    """The window model shipped in ``sample_data/models/qg_window`` (``oceanda demo --train`` reruns this).

    Trained on ``sample_dir/library.nc`` with 1-day altimetry pairs (the sample's observations are
    daily tracks) within ``seconds``; the spread factor is then calibrated on the tuning truth
    (``truth_tune.nc`` / ``obs_altimetry_tune.nc``), never on an evaluation run.
    """
    from pathlib import Path

    from oceanda import io
    from oceanda.analysis.library import Library

    sample_dir = Path(sample_dir)
    lib = Library.open(sample_dir / "library.nc")
    model, _ = train_qg_window_model(lib, out_dir, seconds=seconds, seed=seed, quiet=quiet, max_days=1,
                                        pairs_per_epoch=4096, val_pairs=1024)
    if calibrate and (sample_dir / "truth_tune.nc").exists():
        truth = io.open_states(sample_dir / "truth_tune.nc").load()
        obs = io.open_obs(sample_dir / "obs_altimetry_tune.nc", like=lib.ds).load()
        from oceanda.kalman import tuned_settings

        from oceanda.analysis.calibration import calibrate_model_spread

        calibrate_model_spread(out_dir, lib, obs, truth, times=np.arange(0, obs.sizes["time"], 3), seed=seed,
                               cache_dir=Path(out_dir) / "library_cache", hybrid_from_enoi=tuned_settings("qg_enoi"))
        import shutil

        shutil.rmtree(Path(out_dir) / "library_cache", ignore_errors=True)  # not shipped
        from oceanda.contrastive.model import ContrastiveModel

        model = ContrastiveModel.load(out_dir)
    return model
