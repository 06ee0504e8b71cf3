"""Ocean Datasets -> training pairs for the contrastive core (which knows nothing about oceans).

A pair is (state, observations of that state). The observation side may be a *window* of recent
days: with ``window`` W the encoder input holds W days of observations stacked as channels --
channel ``k*C + c`` is observed channel c on day t-k (k = 0 the latest), so each channel's age is
its position -- then their 0/1 masks: ``[N, 2*W*C, Y, X]`` (``fields.with_mask_channels`` layout).
One day of altimetry tracks sees about 6 % of the grid; five days see about a quarter.

:class:`FieldPairSampler` draws pairs afresh at every call: a fresh observation pattern for every
day (``mask_fn(n, rng) -> bool [n, Y, X]`` or ``[n, C, Y, X]`` per observed channel, e.g. ``observe.AlongTrackAltimetry.sample_mask`` or
patterns bootstrapped from an observation file), fresh noise, and -- on doubly periodic grids -- a
random periodic shift applied identically to the state and its observations. Its :meth:`epoch`
method is the ``train_data`` callable of :func:`oceanda.contrastive.training.train`.

Window (local) pairs for the sampler's local mode live in ``oceanda.analysis.window_training``
(``WindowPairSampler``), built on the same conventions.

Values are standardised with the state statistics (an observed channel shares the statistics of
the state channel it observes); NaN in states (land) becomes 0 after standardisation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import xarray as xr

from oceanda import fields
from oceanda.errors import DataValidationError

MaskFn = Callable[[int, np.random.Generator], np.ndarray]


def segments_from_times(times: Sequence) -> np.ndarray:
    """Label contiguous runs of a time axis: a step larger than 1.5x the most common step starts a new run."""
    t = np.asarray(times)
    if t.size < 2:
        return np.zeros(t.size, np.int64)
    if np.issubdtype(t.dtype, np.datetime64):
        t = (t - t[0]) / np.timedelta64(1, "s")
    d = np.diff(t.astype(np.float64))
    vals, counts = np.unique(d, return_counts=True)
    step = vals[np.argmax(counts)]
    return np.concatenate([[0], np.cumsum((d > 1.5 * step) | (d <= 0))]).astype(np.int64)


def valid_window_times(segments: np.ndarray, window: int, indices: np.ndarray | None = None) -> np.ndarray:
    """Times t (among ``indices``) whose previous ``window - 1`` days lie in the same run."""
    seg = np.asarray(segments)
    idx = np.arange(len(seg)) if indices is None else np.asarray(indices)
    ok = np.ones(len(idx), bool)
    for k in range(1, int(window)):
        prev = idx - k
        ok &= (prev >= 0) & (seg[np.maximum(prev, 0)] == seg[idx])
    return idx[ok]


def periodic_shift(a: np.ndarray, sy: np.ndarray, sx: np.ndarray) -> np.ndarray:
    """Roll each sample ``a[i] [..., Y, X]`` by (sy[i], sx[i]) cells (np.roll convention)."""
    n, Y, X = a.shape[0], a.shape[-2], a.shape[-1]
    iy = (np.arange(Y)[None, :] - np.asarray(sy)[:, None]) % Y  # [n, Y]
    ix = (np.arange(X)[None, :] - np.asarray(sx)[:, None]) % X
    rows = np.arange(n)[:, None, None]
    moved = np.moveaxis(a, (-2, -1), (1, 2))  # [n, Y, X, ...]
    out = moved[rows, iy[:, :, None], ix[:, None, :]]
    return np.moveaxis(out, (1, 2), (-2, -1))


def stack_obs_window(obs: np.ndarray, t: np.ndarray, window: int, segments: np.ndarray | None = None) -> np.ndarray:
    """Observation windows from a daily observation array ``[T, C, Y, X]`` (NaN unobserved):
    ``[n, W*C, Y, X]`` with day t-k in channels k*C..(k+1)*C-1; days before a run started are NaN."""
    obs = np.asarray(obs)
    T, C = obs.shape[:2]
    t = np.asarray(t)
    seg = np.zeros(T, np.int64) if segments is None else np.asarray(segments)
    out = np.full((len(t), int(window) * C) + obs.shape[2:], np.nan, dtype=np.float32)
    for k in range(int(window)):
        p = t - k
        ok = (p >= 0) & (seg[np.maximum(p, 0)] == seg[t])
        out[ok, k * C:(k + 1) * C] = obs[p[ok]]
    return out


def encoder_obs_input(obs_window: np.ndarray, norm: fields.Standardizer | None = None) -> np.ndarray:
    """``[n, W*C, Y, X]`` physical (NaN unobserved) -> standardised values (0 in gaps) then masks."""
    x = np.asarray(obs_window, dtype=np.float32)
    if norm is not None:
        x = norm.transform(x).astype(np.float32)
    return fields.with_mask_channels(x).astype(np.float32)


def encoder_state_input(states: np.ndarray, norm: fields.Standardizer | None = None) -> np.ndarray:
    """``[n, C, Y, X]`` physical -> standardised, NaN (land) set to 0."""
    x = np.asarray(states, dtype=np.float32)
    if norm is not None:
        x = norm.transform(x).astype(np.float32)
    return np.nan_to_num(x, nan=0.0).astype(np.float32)


@dataclass
class FieldPairSampler:
    """Fresh whole-field pairs from daily states ``[T, C, Y, X]`` (physical units).

    ``state_channels``: channels the state encoder sees; ``obs_channels``: observed channels;
    ``sigma``: noise standard deviation per observed channel; ``window``: days of observations;
    ``indices``: the times this sampler may use (e.g. the training part of :func:`time_split`);
    ``shift``: random periodic shifts (only for doubly periodic grids); ``shift_block`` k: rows
    i with equal i // k share a shift, so blocks of consecutive days stay near-duplicates (hard
    negatives when training with ``train(..., block_size=k)``).
    """

    states: np.ndarray
    state_channels: Sequence[int]
    obs_channels: Sequence[int]
    mask_fn: MaskFn
    sigma: Sequence[float]
    window: int = 1
    segments: np.ndarray | None = None
    indices: np.ndarray | None = None
    norm_state: fields.Standardizer | None = None
    norm_obs: fields.Standardizer | None = None
    shift: bool = False
    shift_block: int = 1

    def __post_init__(self):
        self.states = np.asarray(self.states)
        if self.states.ndim != 4:
            raise DataValidationError(f"states of shape {self.states.shape}; expected [time, channel, y, x]")
        T = len(self.states)
        self.segments = np.zeros(T, np.int64) if self.segments is None else np.asarray(self.segments)
        self.state_channels, self.obs_channels = list(self.state_channels), list(self.obs_channels)
        self.sigma = np.broadcast_to(np.asarray(self.sigma, dtype=np.float32), (len(self.obs_channels),)).copy()
        self.valid = valid_window_times(self.segments, self.window, self.indices)
        if len(self.valid) == 0:
            raise DataValidationError(f"no time has {self.window} days of observations in the same run; expected contiguous daily states")

    def __len__(self) -> int:
        return len(self.valid)

    def observe(self, t: np.ndarray, rng: np.random.Generator, shifts: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """Physical observation windows ``[n, W*C, Y, X]`` of states at times ``t`` (fresh patterns and noise)."""
        t = np.asarray(t)
        n, C = len(t), len(self.obs_channels)
        Y, X = self.states.shape[-2:]
        out = np.full((n, self.window * C, Y, X), np.nan, dtype=np.float32)
        for k in range(self.window):
            vals = self.states[t - k][:, self.obs_channels].astype(np.float32)
            if shifts is not None:
                vals = periodic_shift(vals, *shifts)
            mask = np.asarray(self.mask_fn(n, rng), bool)
            if mask.ndim == 3:
                mask = mask[:, None]
            if mask.shape not in ((n, 1, Y, X), (n, C, Y, X)):
                raise DataValidationError(f"observation pattern of shape {mask.shape}; expected [{n}, ({C},) {Y}, {X}]")
            noisy = vals + self.sigma[None, :, None, None] * rng.standard_normal(vals.shape).astype(np.float32)
            out[:, k * C:(k + 1) * C] = np.where(mask, noisy, np.nan)
        return out

    def __call__(self, rng: np.random.Generator, n: int | None = None, t: np.ndarray | None = None):
        """``(state input [n, Cs, Y, X], obs input [n, 2*W*C, Y, X])``; all valid times once when n is None."""
        if t is None:
            t = self.valid.copy() if n is None else rng.choice(self.valid, size=int(n))
        t = np.asarray(t)
        Y, X = self.states.shape[-2:]
        shifts = None
        if self.shift:
            k = max(1, int(self.shift_block))
            nb = -(-len(t) // k)
            rep = np.repeat(np.arange(nb), k)[: len(t)]
            shifts = (rng.integers(0, Y, nb)[rep], rng.integers(0, X, nb)[rep])
        st = self.states[t][:, self.state_channels]
        if shifts is not None:
            st = periodic_shift(st, *shifts)
        ob = self.observe(t, rng, shifts)
        return encoder_state_input(st, self.norm_state), encoder_obs_input(ob, self.norm_obs)

    def epoch(self, epoch: int, rng: np.random.Generator):
        """The ``train_data`` callable of ``training.train``: every valid time once, fresh observations."""
        return self(rng)


# --- observation patterns from an observation Dataset --------------------------------------------

def mask_sampler(obs: xr.Dataset, var: str, ny: int, nx: int, prefer_operator: bool = True) -> MaskFn:
    """Fresh observation patterns like those of ``obs[var]``.

    Along-track altimetry (attribute ``operator``) is rebuilt from the recorded orbit attributes
    and draws random orbit phases and days; any other gridded operator is bootstrapped: a random
    time's pattern from the file.
    """
    from oceanda import observe

    da = obs[var]
    op = obs.attrs.get("operator", da.attrs.get("operator"))
    attrs = {**obs.attrs, **da.attrs}
    if prefer_operator and op == observe.AlongTrackAltimetry.name:
        kw = {k: type(getattr(observe.AlongTrackAltimetry, k))(attrs[a]) for k, a in
              (("n_satellites", "n_satellites"), ("passes_per_day", "passes_per_day"),
               ("repeat_days", "repeat_days"), ("angle_deg", "track_angle_deg")) if a in attrs}
        alt = observe.AlongTrackAltimetry(var=var, **kw)
        dy = float(obs["y"][1] - obs["y"][0]) if "y" in obs.coords and ny > 1 else 1.0
        dx = float(obs["x"][1] - obs["x"][0]) if "x" in obs.coords and nx > 1 else 1.0
        return lambda n, rng: alt.sample_mask(n, rng, ny=ny, nx=nx, dy=dy, dx=dx)
    a = da
    if "layer" in a.dims:
        a = a.isel(layer=0)
    sp = fields.spatial_dims(a)
    patterns = np.isfinite(np.asarray(a.transpose("time", *sp).values))
    if patterns.shape[1:] != (ny, nx):
        raise DataValidationError(f"observation variable '{var}' on a {patterns.shape[1:]} grid; expected ({ny}, {nx}) like the states")
    return lambda n, rng: patterns[rng.integers(0, len(patterns), size=n)]


def obs_sigma(obs: xr.Dataset, var: str) -> float:
    """Observation error standard deviation of ``var`` from ``<var>_error`` (its mean if a field)."""
    name = f"{var}_error"
    if name not in obs:
        raise DataValidationError(f"observation dataset lacks '{name}'; expected the error standard deviation of '{var}'")
    return float(np.nanmean(np.asarray(obs[name].values, dtype=np.float64)))


# --- from files to a trained model (what `oceanda train` calls) ------------------------------------

ENCODER_CHOICES = ("cnn", "mlp", "linear")


def _field_encoder(kind: str, in_shape: tuple[int, ...], ne: int, periodic: bool, cnn: dict | None = None):
    from oceanda.contrastive import encoders as E

    if kind == "cnn":
        return E.MaskedCNNEncoder(in_shape, ne, periodic=periodic, **(cnn or {}))
    if kind == "mlp":
        return E.MLPEncoder(in_shape, ne, hidden=(256, 256))
    if kind == "linear":
        return E.LinearEncoder(in_shape, ne, bias=True)
    raise DataValidationError(f"encoder '{kind}' unknown; expected one of {list(ENCODER_CHOICES)}")


def train_field_model(
    states: xr.Dataset,
    obs: xr.Dataset,
    out_dir,
    *,
    state_vars: Sequence[str] | None = None,
    obs_vars: Sequence[str] | None = None,
    window: int = 1,
    similarity: str = "cosine",
    loss: str = "clip",
    encoder: str = "cnn",
    embedding_dim: int = 128,
    tau: float = 0.07,
    learn_tau: bool = True,
    epochs: int = 20,
    batch_size: int = 128,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    val_fraction: float = 0.2,
    fresh: bool = True,
    shift: bool | None = None,
    periodic: bool = True,
    seed: int = 0,
    seconds: float | None = None,
    patience: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    quiet: bool | None = None,
    cnn: dict | None = None,
    block: int = 1,
    source: dict | None = None,
):
    """Train a whole-field encoder pair on gridded states and observations; save it in ``out_dir``.

    ``obs`` supplies the observation patterns (its operator, or its own masks bootstrapped) and the
    noise (``<var>_error``); with ``fresh`` (default) each epoch redraws both on the training states,
    otherwise the file's observations are the fixed pairs (times must match the states). The last
    ``val_fraction`` of the times validates, after a gap of ``window`` days. Returns
    ``(model, TrainResult)``; the model's config holds what ``oceanda.analysis`` reads (channels,
    statistics, grid fingerprint, observation window). ``block``: batches hold blocks of this many
    consecutive days sharing one shift, hard negatives that teach neighbouring days apart.
    """
    from oceanda.contrastive.model import ContrastiveModel
    from oceanda.contrastive.similarity import Similarity
    from oceanda.contrastive.training import time_split, train

    state_vars = list(state_vars or [str(v) for v in states.data_vars if not str(v).endswith("_error") and "time" in states[v].dims])
    obs_vars = list(obs_vars or [str(v) for v in obs.data_vars if not str(v).endswith("_error") and "time" in obs[v].dims])
    for v in obs_vars:
        if v not in states:
            raise DataValidationError(f"observed variable '{v}' is not in the states ({sorted(map(str, states.data_vars))}); expected observations of a state variable")
        if v not in obs:
            raise DataValidationError(f"observation dataset lacks '{v}'; expected one of {sorted(map(str, obs.data_vars))}")
    all_vars = list(dict.fromkeys(state_vars + obs_vars))
    arr, layout = fields.to_array(states, fields.layout_of(states, all_vars))
    sc = [i for i, c in enumerate(layout.channels) if c[0] in state_vars]
    oc = [i for i, c in enumerate(layout.channels) if c[0] in obs_vars]
    Y, X = arr.shape[-2:]
    seg = segments_from_times(states["time"].values) if "time" in states.coords else np.zeros(len(arr), np.int64)
    tr_idx, va_idx = time_split(len(arr), val_fraction, gap=int(window))
    norm_all = fields.Standardizer.fit(arr[tr_idx])
    norm_s = fields.Standardizer(norm_all.mean[sc], norm_all.std[sc])
    norm_o = fields.Standardizer(np.tile(norm_all.mean[oc], window), np.tile(norm_all.std[oc], window))
    sig_by_var = {v: obs_sigma(obs, v) for v in obs_vars}
    sigma = [sig_by_var[layout.channels[i][0]] for i in oc]
    if fresh:
        fns = {v: mask_sampler(obs, v, Y, X) for v in obs_vars}
        names = [layout.channels[i][0] for i in oc]

        def mask_fn(n, rng):
            drawn = {v: np.asarray(f(n, rng), bool) for v, f in fns.items()}
            return np.stack([drawn[v] for v in names], axis=1)

        shift = periodic if shift is None else shift
        mk = lambda idx, sh: FieldPairSampler(arr, sc, oc, mask_fn, sigma, window, seg, idx, norm_s, norm_o, sh, block)  # noqa: E731
        train_data, val_sampler = mk(tr_idx, shift).epoch, mk(va_idx, False)
        val_data = lambda rng: val_sampler(rng)  # noqa: E731
    else:
        o_arr, _ = fields.to_array(obs, fields.FieldLayout(obs_vars, [layout.channels[i] for i in oc], layout.level_dim,
                                                             layout.spatial, layout.sample_dim))
        if o_arr.shape[0] != arr.shape[0]:
            raise DataValidationError(f"observations hold {o_arr.shape[0]} times, states {arr.shape[0]}; expected the same times for fixed pairs")

        def fixed(idx):
            t = valid_window_times(seg, window, idx)
            return (encoder_state_input(arr[t][:, sc], norm_s), encoder_obs_input(stack_obs_window(o_arr, t, window, seg), norm_o))

        train_data, val_data = fixed(tr_idx), fixed(va_idx)
    periodic_cnn = bool(periodic)
    se = _field_encoder(encoder, (len(sc), Y, X), embedding_dim, periodic_cnn, cnn)
    oe = _field_encoder(encoder, (2 * window * len(oc), Y, X), embedding_dim, periodic_cnn, cnn)
    cfg = {
        "grid_fingerprint": fields.grid_fingerprint(states[state_vars], state_vars),
        "normalization": {"state": norm_s.to_dict(), "obs": norm_o.to_dict()},
        "extra": {"state_channels": [list(layout.channels[i]) for i in sc],
                  "obs_channels": [list(layout.channels[i]) for i in oc],
                  "obs_window_days": int(window),
                  "obs_window_layout": "channel k*C + c = obs channel c on day t-k (k=0 latest), then 0/1 masks",
                  "obs_sigma": sigma, "fresh_patterns": bool(fresh), "periodic": bool(periodic),
                  "layout": layout.to_dict(), "source": source or {}},
    }
    model = ContrastiveModel(se, oe, Similarity(similarity, tau=tau, learn_tau=learn_tau), cfg)
    res = train(model, train_data, val_data, loss=loss, epochs=epochs, batch_size=batch_size, lr=lr,
                weight_decay=weight_decay, warmup_steps=20, seed=seed, checkpoint_dir=out_dir, resume=resume,
                overwrite=overwrite, quiet=quiet, max_seconds=seconds, patience=patience, block_size=block,
                block_start=min(3, max(0, epochs // 4)))
    return model, res


def train_bundled_field_model(sample_dir, out_dir, *, quiet: bool = True, seed: int = 0, seconds: float = 120.0,
                              overwrite: bool = False):
    """The whole-field model shipped in ``sample_data/models/qg_field`` (global mode; ``oceanda demo --train``).

    A small masked CNN pair (64-d embedding, 2x2 input pooling, cosine similarity, CLIP loss) trained on
    ``sample_dir/library.nc`` with fresh daily altimetry patterns from ``train_obs.nc`` within ``seconds``.
    The resume state is removed afterwards: it is not needed to use the model.
    """
    import shutil
    from pathlib import Path

    from oceanda import io

    sample_dir = Path(sample_dir)
    states = io.open_states(sample_dir / "library.nc").load()
    obs = io.open_obs(sample_dir / "train_obs.nc", like=states).load()
    model, result = train_field_model(states, obs, out_dir, embedding_dim=64, epochs=60, seconds=seconds, seed=seed,
                                      quiet=quiet, overwrite=overwrite, cnn={"input_pool": 2, "width": 16, "depth": 3},
                                      source={"states": str(sample_dir / "library.nc"), "obs": str(sample_dir / "train_obs.nc"),
                                              "recipe": "oceanda.pairs.train_bundled_field_model"})
    shutil.rmtree(Path(out_dir) / "resume", ignore_errors=True)
    return model, result
