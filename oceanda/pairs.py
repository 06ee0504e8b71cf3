"""Ocean Datasets -> training pairs for the contrastive core (which knows nothing about oceans).

A pair is (state, observations of that state). The observation side may be a *window* of recent
days: with ``window`` W the encoder input holds W days of observations stacked as channels --
channel ``k*C + c`` is observed channel c on day t-k (k = 0 the latest), so each channel's age is
its position -- then their 0/1 masks: ``[N, 2*W*C, Y, X]`` (:func:`oceanda.fields.encoder_obs_input`).
:func:`stack_days` is the one place that layout is written. Day t-k is k *days* back in time
(:func:`time_axis`, :func:`lagged`): states saved every 2 days are interpolated in time for the days
between, and a ``run`` coordinate keeps a window inside one free run. (It used to be k *snapshots*
back: 5 "days" on the every-2-days sample library spanned 10 days, while assimilation stacks 5 daily
observation days.)
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

:func:`train_field_model` (what ``oceanda train --kind field`` runs, via :mod:`oceanda.training`) trains
with the shared :class:`~oceanda.contrastive.training.Trainer`; its training defaults are
:data:`FIELD_TRAINING`, its batch size and epochs fit small data (:func:`fit_batch`) and its CNN the
grid (:func:`fit_cnn`).

"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import xarray as xr

from oceanda import fields, grid
from oceanda.contrastive.training import TrainConfig, Trainer, TrainResult, time_split
from oceanda.errors import DataValidationError
from oceanda.fields import encoder_obs_input, encoder_state_input  # noqa: F401  (their former home)

MaskFn = Callable[[int, np.random.Generator], np.ndarray]


def segments_from_times(times: Sequence, runs: Sequence | None = None) -> np.ndarray:
    """Label contiguous runs of a time axis: a step larger than 1.5x the most common step starts a new run.

    Why ``runs``: independent free runs concatenated in time (the sample library: run r+1 starts one
    snapshot step after run r ends) show no gap in time, yet a day of run r+1 has no yesterday in
    run r; a change of the ``run`` label starts a new run too.

    Parameters
    ----------
    times : numbers (days), datetime64 values or cftime datetimes, in order
    runs : run label of each time (e.g. the ``run`` coordinate), or None

    Returns
    -------
    numpy.ndarray
        int64 run label of each time (0, 1, ...).
    """
    t = np.asarray(times)
    if t.size < 2:
        return np.zeros(t.size, np.int64)
    numeric = np.issubdtype(t.dtype, np.number)
    t = grid.time_days(t)
    d = np.diff(t) if numeric else np.round(np.diff(t) * 86400.0, 3)  # seconds, rounded: float days are inexact
    vals, counts = np.unique(d, return_counts=True)
    step = vals[np.argmax(counts)]
    new = (d > 1.5 * step) | (d <= 0)
    if runs is not None:
        new |= np.diff(np.asarray(runs)) != 0
    return np.concatenate([[0], np.cumsum(new)]).astype(np.int64)


def time_axis(ds: xr.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """``(days, segments)`` of a Dataset's times: float days (:func:`oceanda.grid.time_days`) and run labels.

    Why days: a multi-day observation window looks back in days, whatever the snapshot step of the
    states (the sample library is saved every 2 days, observations are daily).

    Parameters
    ----------
    ds : states with a ``time`` dimension (and optionally a ``run`` coordinate along it)

    Returns
    -------
    tuple of numpy.ndarray
        float64 days of each time (``0, 1, 2, ...`` without a time coordinate) and int64 run labels.
    """
    n = int(ds.sizes.get("time", 0))
    if "time" not in ds.coords:
        return np.arange(n, dtype=np.float64), np.zeros(n, np.int64)
    days = grid.time_days(ds["time"].values).astype(np.float64)
    runs = ds["run"].values if "run" in ds.coords and ds["run"].dims == ("time",) else None
    return days, segments_from_times(days, runs)


def lag_weights(days: np.ndarray, segments: np.ndarray, t: np.ndarray, lag: float,
                tol: float = 1e-3) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Where the state ``lag`` days before each time ``t`` lies: linear interpolation in time within its run.

    Parameters
    ----------
    days : float days of every time
    segments : run label of every time (times increase within a run)
    t : the time indices
    lag : days back
    tol : days within which a time counts as an exact match

    Returns
    -------
    tuple of numpy.ndarray
        ``(i0, i1, w, ok)``: the state is ``(1 - w) * states[i0] + w * states[i1]``; ``ok`` is False where
        the run started less than ``lag`` days before ``t`` (then ``i0 = i1 = t``).
    """
    days, seg, t = np.asarray(days, np.float64), np.asarray(segments), np.asarray(t, np.int64)
    i0, i1, w, ok = t.copy(), t.copy(), np.zeros(len(t)), np.zeros(len(t), bool)
    for s in np.unique(seg[t]):
        run = np.flatnonzero(seg == s)
        sel = np.flatnonzero(seg[t] == s)
        target = days[t[sel]] - float(lag)
        pos = np.searchsorted(days[run], target + tol, side="right") - 1
        good = pos >= 0
        p0 = np.clip(pos, 0, len(run) - 1)
        p1 = np.minimum(p0 + 1, len(run) - 1)
        d0, d1 = days[run[p0]], days[run[p1]]
        frac = np.where((d1 > d0) & (target - d0 > tol), (target - d0) / np.where(d1 > d0, d1 - d0, 1.0), 0.0)
        i0[sel], i1[sel], w[sel], ok[sel] = np.where(good, run[p0], t[sel]), np.where(good, run[p1], t[sel]), \
            np.where(good, np.clip(frac, 0.0, 1.0), 0.0), good
    return i0, i1, w.astype(np.float32), ok


def valid_lag_times(days: np.ndarray, segments: np.ndarray, window: int, indices: np.ndarray | None = None) -> np.ndarray:
    """Times t (among ``indices``) whose run started at least ``window - 1`` days before t.

    Parameters
    ----------
    days : float days of every time
    segments : run label of every time
    window : days per observation window
    indices : the candidate times (default: all)

    Returns
    -------
    numpy.ndarray
        The candidate times that have a full window of days.
    """
    idx = np.arange(len(days)) if indices is None else np.asarray(indices, np.int64)
    if int(window) <= 1 or len(idx) == 0:
        return idx
    return idx[lag_weights(days, segments, idx, int(window) - 1)[3]]


def lagged(states: np.ndarray, days: np.ndarray, segments: np.ndarray, t: np.ndarray, lag: float) -> np.ndarray:
    """The states ``lag`` days before the times ``t``, interpolated linearly in time between snapshots.

    Parameters
    ----------
    states : ``[T, ...]`` states
    days, segments : float days and run labels of the times
    t : the time indices (each with a run that reaches ``lag`` days back)
    lag : days back

    Returns
    -------
    numpy.ndarray
        float32 ``[len(t), ...]``.
    """
    i0, i1, w, _ = lag_weights(days, segments, t, lag)
    a = np.asarray(states[i0], dtype=np.float32)
    if not np.any(w > 0):
        return a
    wb = w.reshape((-1,) + (1,) * (a.ndim - 1))
    return (1.0 - wb) * a + wb * np.asarray(states[i1], dtype=np.float32)



def valid_window_times(segments: np.ndarray, window: int, indices: np.ndarray | None = None) -> np.ndarray:
    """Times t (among ``indices``) whose previous ``window - 1`` days lie in the same run.

    Parameters
    ----------
    segments : run label of each time (:func:`segments_from_times`)
    window : days per observation window
    indices : the candidate times (default: all)

    Returns
    -------
    numpy.ndarray
        The candidate times that have a full window.
    """
    seg = np.asarray(segments)
    idx = np.arange(len(seg)) if indices is None else np.asarray(indices)
    ok = np.ones(len(idx), bool)
    for k in range(1, int(window)):
        prev = idx - k
        ok &= (prev >= 0) & (seg[np.maximum(prev, 0)] == seg[idx])
    return idx[ok]


def periodic_shift(a: np.ndarray, sy: np.ndarray, sx: np.ndarray) -> np.ndarray:
    """Roll each sample ``a[i] [..., Y, X]`` by (sy[i], sx[i]) cells (np.roll convention).

    Parameters
    ----------
    a : ``[n, ..., Y, X]`` samples
    sy, sx : ``[n]`` shifts in cells along y and x

    Returns
    -------
    numpy.ndarray
        The shifted samples, the shape of ``a``.
    """
    n, Y, X = a.shape[0], a.shape[-2], a.shape[-1]
    iy = (np.arange(Y)[None, :] - np.asarray(sy)[:, None]) % Y  # [n, Y]
    ix = (np.arange(X)[None, :] - np.asarray(sx)[:, None]) % X
    rows = np.arange(n)[:, None, None]
    moved = np.moveaxis(a, (-2, -1), (1, 2))  # [n, Y, X, ...]
    out = moved[rows, iy[:, :, None], ix[:, None, :]]
    return np.moveaxis(out, (1, 2), (-2, -1))


def stack_days(days: Sequence[np.ndarray]) -> np.ndarray:
    """Stack daily observations as channels, the observation window's layout.

    Parameters
    ----------
    days : ``[n, C, Y, X]`` arrays, ``days[k]`` the observations of day t-k (k = 0 the latest)

    Returns
    -------
    numpy.ndarray
        float32 ``[n, W*C, Y, X]``: channel ``k*C + c`` is channel c on day t-k.
    """
    return np.concatenate([np.asarray(d, dtype=np.float32) for d in days], axis=1)


def stack_obs_window(obs: np.ndarray, t: np.ndarray, window: int, segments: np.ndarray | None = None,
                     days: np.ndarray | None = None) -> np.ndarray:
    """Observation windows of times ``t`` from a daily observation array.

    Parameters
    ----------
    obs : ``[T, C, Y, X]`` daily observations, NaN unobserved
    t : the times (indices into ``obs``) whose windows are wanted
    window : days per window
    segments : run label of each time (default: one run); days before a run started are NaN
    days : float days of each time (default: one time a day); day k of a window holds the
        observations of the time exactly k days before, NaN where there is none (observations saved
        every 2 days leave every other day empty)

    Returns
    -------
    numpy.ndarray
        float32 ``[n, W*C, Y, X]`` in the layout of :func:`stack_days`.
    """
    obs = np.asarray(obs)
    t = np.asarray(t, np.int64)
    seg = np.zeros(len(obs), np.int64) if segments is None else np.asarray(segments)
    d = np.arange(len(obs), dtype=np.float64) if days is None else np.asarray(days, np.float64)
    out = []
    for k in range(int(window)):
        i0, _, w, ok = lag_weights(d, seg, t, k)
        ok &= (w == 0) & (np.abs(d[i0] - (d[t] - k)) < 1e-3)  # an observation day, not an interpolation
        day = np.full((len(t),) + obs.shape[1:], np.nan, dtype=np.float32)
        day[ok] = obs[i0[ok]]
        out.append(day)
    return stack_days(out)



@dataclass
class FieldPairSampler:
    """Fresh whole-field pairs from daily states ``[T, C, Y, X]`` (physical units).

    ``state_channels``: channels the state encoder sees; ``obs_channels``: observed channels;
    ``sigma``: noise standard deviation per observed channel; ``window``: days of observations;
    ``indices``: the times this sampler may use (e.g. the training part of :func:`time_split`);
    ``shift``: random periodic shifts (only for doubly periodic grids); ``shift_block`` k: rows
    i with equal i // k share a shift, so blocks of consecutive days stay near-duplicates (hard
    negatives when training with ``train(..., block_size=k)``); ``days``: float days of each time
    (default ``0, 1, 2, ...``): day k of a window observes the state k *days* before, interpolated
    in time where the states are saved less often than daily (:func:`lagged`).
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
    days: np.ndarray | None = None

    def __post_init__(self):
        self.states = np.asarray(self.states)
        if self.states.ndim != 4:
            raise DataValidationError(f"states of shape {self.states.shape}; expected [time, channel, y, x]")
        T = len(self.states)
        self.segments = np.zeros(T, np.int64) if self.segments is None else np.asarray(self.segments)
        self.state_channels, self.obs_channels = list(self.state_channels), list(self.obs_channels)
        self.sigma = np.broadcast_to(np.asarray(self.sigma, dtype=np.float32), (len(self.obs_channels),)).copy()
        self.days = np.arange(T, dtype=np.float64) if self.days is None else np.asarray(self.days, np.float64)
        self.valid = valid_lag_times(self.days, self.segments, self.window, self.indices)
        self._observed = self.states[:, self.obs_channels]  # what the observations see
        if len(self.valid) == 0:
            raise DataValidationError(f"no time has {self.window} days of observations in the same run; expected contiguous daily states")

    def __len__(self) -> int:
        return len(self.valid)

    def observe(self, t: np.ndarray, rng: np.random.Generator, shifts: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """Physical observation windows of the states at times ``t`` (fresh patterns and noise).

        Parameters
        ----------
        t : the times
        rng : draws the patterns and the noise
        shifts : ``(sy, sx)`` periodic shifts of each sample (as :func:`periodic_shift`), or None

        Returns
        -------
        numpy.ndarray
            float32 ``[n, W*C, Y, X]``, NaN unobserved (:func:`stack_days` layout).
        """
        t = np.asarray(t)
        n, C = len(t), len(self.obs_channels)
        Y, X = self.states.shape[-2:]
        days = []
        for k in range(self.window):
            vals = lagged(self._observed, self.days, self.segments, t, k)


            if shifts is not None:
                vals = periodic_shift(vals, *shifts)
            mask = np.asarray(self.mask_fn(n, rng), bool)
            if mask.ndim == 3:
                mask = mask[:, None]
            if mask.shape not in ((n, 1, Y, X), (n, C, Y, X)):
                raise DataValidationError(f"observation pattern of shape {mask.shape}; expected [{n}, ({C},) {Y}, {X}]")
            noisy = vals + self.sigma[None, :, None, None] * rng.standard_normal(vals.shape).astype(np.float32)
            days.append(np.where(mask, noisy, np.nan))
        return stack_days(days)

    def __call__(self, rng: np.random.Generator, n: int | None = None, t: np.ndarray | None = None):
        """Fresh encoder inputs of ``n`` random valid times, of the times ``t``, or of every valid time once.

        Parameters
        ----------
        rng : draws times, shifts, patterns and noise
        n : number of random times (default: every valid time once)
        t : the times themselves (overrides ``n``)

        Returns
        -------
        tuple of numpy.ndarray
            ``(state input [n, Cs, Y, X], obs input [n, 2*W*C, Y, X])``.
        """
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
        """The ``train_data`` callable of the Trainer: every valid time once, fresh observations.

        Parameters
        ----------
        epoch : the epoch (unused: the freshness comes from ``rng``)
        rng : the epoch's generator

        Returns
        -------
        tuple of numpy.ndarray
            As :meth:`__call__`.
        """
        return self(rng)


# --- observation patterns from an observation Dataset --------------------------------------------

def mask_sampler(obs: xr.Dataset, var: str, ny: int, nx: int, prefer_operator: bool = True) -> MaskFn:
    """Fresh observation patterns like those of ``obs[var]``.

    Along-track altimetry (attribute ``operator``) is rebuilt from the recorded orbit attributes
    and draws random orbit phases and days; any other gridded operator is bootstrapped: a random
    time's pattern from the file.

    Parameters
    ----------
    obs : the observation Dataset
    var : the observed variable
    ny, nx : the states' grid shape
    prefer_operator : rebuild along-track altimetry from its attributes (else bootstrap the file's masks)

    Returns
    -------
    callable
        ``mask_fn(n, rng) -> bool [n, ny, nx]``.
    """
    from oceanda import observe

    da = obs[var]
    op = obs.attrs.get("operator", da.attrs.get("operator"))
    attrs = {**obs.attrs, **da.attrs}
    if prefer_operator and op == observe.AlongTrackAltimetry.name and "track_spacing_km" in attrs:
        # written by oceanda observe on any grid: rebuilt on the observations' own grid (km frame, land-aware)
        return observe.AlongTrackAltimetry.from_attrs(attrs, var).pattern_sampler(obs)
    if prefer_operator and op == observe.AlongTrackAltimetry.name:
        kw = {k: type(getattr(observe.AlongTrackAltimetry, k))(attrs[a]) for k, a in
              (("n_satellites", "n_satellites"), ("passes_per_day", "passes_per_day"),
               ("repeat_days", "repeat_days"), ("angle_deg", "track_angle_deg")) if a in attrs}
        alt = observe.AlongTrackAltimetry(var=var, **kw)
        dy, dx = grid.yx_spacing(obs)
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
    """Observation error standard deviation of ``var`` from ``<var>_error`` (its mean if a field).

    Parameters
    ----------
    obs : the observation Dataset
    var : the observed variable

    Returns
    -------
    float
        The standard deviation, in the variable's units.
    """
    name = f"{var}_error"
    if name not in obs:
        raise DataValidationError(f"observation dataset lacks '{name}'; expected the error standard deviation of '{var}'")
    return float(np.nanmean(np.asarray(obs[name].values, dtype=np.float64)))


# --- from files to a trained model (what `oceanda train` calls) ------------------------------------

ENCODER_CHOICES = ("cnn", "mlp", "linear")

#: Training settings of a whole-field model where the caller gives none (``oceanda train``'s defaults).
FIELD_TRAINING = TrainConfig(epochs=20, batch_size=128, lr=2e-3, weight_decay=1e-4, warmup_steps=20, monitor="retrieval")


def _field_encoder(kind: str, in_shape: tuple[int, ...], ne: int, periodic: bool, cnn: dict | None = None):
    from oceanda.contrastive import encoders as E

    if kind == "cnn":
        return E.MaskedCNNEncoder(in_shape, ne, periodic=periodic, **(cnn or {}))
    if kind == "mlp":
        return E.MLPEncoder(in_shape, ne, hidden=(256, 256))
    if kind == "linear":
        return E.LinearEncoder(in_shape, ne, bias=True)
    raise DataValidationError(f"encoder '{kind}' unknown; expected one of {list(ENCODER_CHOICES)}")


def _data_variables(ds: xr.Dataset, given: Sequence[str] | None) -> list[str]:
    return list(given or [str(v) for v in ds.data_vars if not str(v).endswith("_error") and "time" in ds[v].dims])


@dataclass
class _FieldData:
    """Training states as arrays, their channels, time split and statistics (see ``_field_data``)."""

    array: np.ndarray  # [T, C, Y, X] physical units
    layout: fields.FieldLayout
    state_channels: list[int]
    obs_channels: list[int]
    segments: np.ndarray
    train_idx: np.ndarray
    val_idx: np.ndarray
    norm_state: fields.Standardizer
    norm_obs: fields.Standardizer
    sigma: list[float]
    days: np.ndarray  # float days of each time

    def obs_names(self) -> list[str]:
        """The variable of each observed channel."""
        return [self.layout.channels[i][0] for i in self.obs_channels]


def _field_data(states: xr.Dataset, obs: xr.Dataset, state_vars: Sequence[str], obs_vars: Sequence[str], window: int,
                val_fraction: float) -> _FieldData:
    """Stack the states, split them in time and fit the statistics that whole-field training uses.

    Parameters
    ----------
    states : the training states
    obs : observations of some state variables (their ``<var>_error`` gives the noise)
    state_vars, obs_vars : the encoded and the observed variables (each observed one a state variable)
    window : days of observations per sample (also the gap between training and validation times)
    val_fraction : last fraction of the times that validates

    Returns
    -------
    _FieldData
        Arrays, channels, split and statistics (the obs statistics repeat the state ones per window day).
    """
    for v in obs_vars:
        if v not in states:
            raise DataValidationError(f"observed variable '{v}' is not in the states ({sorted(map(str, states.data_vars))}); expected observations of a state variable")
        if v not in obs:
            raise DataValidationError(f"observation dataset lacks '{v}'; expected one of {sorted(map(str, obs.data_vars))}")
    all_vars = list(dict.fromkeys(list(state_vars) + list(obs_vars)))
    arr, layout = fields.to_array(states, fields.layout_of(states, all_vars))
    sc, oc = layout.channels_of(state_vars), layout.channels_of(obs_vars)
    days, seg = time_axis(states)
    if len(days) != len(arr):
        days, seg = np.arange(len(arr), dtype=np.float64), np.zeros(len(arr), np.int64)
    tr_idx, va_idx = time_split(len(arr), val_fraction, gap=int(window))
    norm_all = fields.Standardizer.fit(arr[tr_idx])
    norm_s = fields.Standardizer(norm_all.mean[sc], norm_all.std[sc])
    norm_o = fields.Standardizer(np.tile(norm_all.mean[oc], window), np.tile(norm_all.std[oc], window))
    sig_by_var = {v: obs_sigma(obs, v) for v in obs_vars}
    sigma = [sig_by_var[layout.channels[i][0]] for i in oc]
    return _FieldData(arr, layout, sc, oc, seg, tr_idx, va_idx, norm_s, norm_o, sigma, days)


def _fresh_pairs(d: _FieldData, obs: xr.Dataset, obs_vars: Sequence[str], window: int, shift: bool, block: int):
    """Training and validation callables that redraw observation patterns and noise."""
    Y, X = d.array.shape[-2:]
    names = d.obs_names()
    fns = {v: mask_sampler(obs, v, Y, X) for v in obs_vars}  # drawn in this order each call

    def mask_fn(n, rng):
        drawn = {v: np.asarray(f(n, rng), bool) for v, f in fns.items()}
        return np.stack([drawn[v] for v in names], axis=1)

    def sampler(idx, sh):
        return FieldPairSampler(d.array, d.state_channels, d.obs_channels, mask_fn, d.sigma, window, d.segments, idx,
                                d.norm_state, d.norm_obs, sh, block, d.days)

    return sampler(d.train_idx, shift).epoch, sampler(d.val_idx, False)  # val: called once with the rng


def _fixed_pairs(d: _FieldData, obs: xr.Dataset, obs_vars: Sequence[str], window: int):
    """Training and validation pairs from the file's own observations (times must match the states)."""
    lay = d.layout
    o_arr, _ = fields.to_array(obs, fields.FieldLayout(list(obs_vars), [lay.channels[i] for i in d.obs_channels],
                                                         lay.level_dim, lay.spatial, lay.sample_dim))
    if o_arr.shape[0] != d.array.shape[0]:
        raise DataValidationError(f"observations hold {o_arr.shape[0]} times, states {d.array.shape[0]}; expected the same times for fixed pairs")

    def fixed(idx):
        t = valid_lag_times(d.days, d.segments, window, idx)
        return (encoder_state_input(d.array[t][:, d.state_channels], d.norm_state),
                encoder_obs_input(stack_obs_window(o_arr, t, window, d.segments, d.days), d.norm_obs))


    return fixed(d.train_idx), fixed(d.val_idx)


def _field_model(d: _FieldData, states: xr.Dataset, state_vars: Sequence[str], *, window: int, encoder: str,
                 embedding_dim: int, similarity: str, tau: float, learn_tau: bool, periodic: bool, cnn: dict | None,
                 fresh: bool, source: dict | None):
    """The untrained encoder pair with the config that ``oceanda.analysis`` reads."""
    from oceanda.contrastive.model import ContrastiveModel
    from oceanda.contrastive.similarity import Similarity

    Y, X = d.array.shape[-2:]
    ch = d.layout.channels
    se = _field_encoder(encoder, (len(d.state_channels), Y, X), embedding_dim, bool(periodic), cnn)
    oe = _field_encoder(encoder, (2 * window * len(d.obs_channels), Y, X), embedding_dim, bool(periodic), cnn)
    cfg = {
        "grid_fingerprint": fields.grid_fingerprint(states[list(state_vars)], list(state_vars)),
        "normalization": {"state": d.norm_state.to_dict(), "obs": d.norm_obs.to_dict()},
        "units": {v: str(states[v].attrs["units"]) for v in dict.fromkeys(ch[i][0] for i in (*d.state_channels, *d.obs_channels))
                  if "units" in states[v].attrs},  # the library and obs are converted to them at use
        "extra": {"state_channels": [list(ch[i]) for i in d.state_channels],
                  "obs_channels": [list(ch[i]) for i in d.obs_channels],
                  "obs_window_days": int(window),
                  "obs_window_layout": "channel k*C + c = obs channel c on day t-k (k=0 latest), then 0/1 masks",
                  "obs_sigma": d.sigma, "fresh_patterns": bool(fresh), "periodic": bool(periodic),
                  "layout": d.layout.to_dict(), "source": source or {}},
    }
    return ContrastiveModel(se, oe, Similarity(similarity, tau=tau, learn_tau=learn_tau), cfg)


def train_field_model(
    states: xr.Dataset,
    obs: xr.Dataset,
    out_dir,
    *,
    state_vars: Sequence[str] | None = None,
    obs_vars: Sequence[str] | None = None,
    window: int = 1,
    similarity: str = "cosine",
    loss: str = FIELD_TRAINING.loss,
    encoder: str = "cnn",
    embedding_dim: int = 128,
    tau: float = 0.07,
    learn_tau: bool = True,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float = FIELD_TRAINING.lr,
    weight_decay: float = FIELD_TRAINING.weight_decay,
    val_fraction: float = 0.2,
    fresh: bool = True,
    shift: bool | None = None,
    periodic: bool = True,
    seed: int = FIELD_TRAINING.seed,
    seconds: float | None = None,
    patience: int | None = None,
    resume: bool = False, resume_dir=None,
    overwrite: bool = False,
    quiet: bool | None = None,
    cnn: dict | None = None,
    block: int = FIELD_TRAINING.block_size,
    source: dict | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[Any, TrainResult]:
    """Train a whole-field encoder pair on gridded states and observations; save it in ``out_dir``.

    Parameters
    ----------
    states, obs : the training states; observations supplying the patterns (their operator, or their
        own masks bootstrapped) and the noise (``<var>_error``)
    out_dir : the checkpoint directory
    state_vars, obs_vars : encoded and observed variables (default: every gridded variable)
    window : days of observations per sample, stacked as channels
    similarity, tau, learn_tau, encoder, embedding_dim, cnn : the model (``cnn``: options of the masked CNN)
    loss, epochs, batch_size, lr, weight_decay, seed, patience : training settings
        (:class:`~oceanda.contrastive.training.TrainConfig`); ``batch_size`` and ``epochs`` None, or a
        batch larger than the data: fitted to the data (:func:`fit_batch`)
    seconds : wall-clock budget (``TrainConfig.max_seconds``)
    block : batches hold blocks of this many consecutive days sharing one shift (hard negatives)
    val_fraction : the last fraction of the times validates, after a gap of ``window`` days
    fresh : redraw patterns and noise on the training states each epoch; otherwise the file's
        observations are the fixed pairs (times must match the states)
    shift : random periodic shifts (default: ``periodic``); periodic : the grid is doubly periodic
    resume, overwrite, quiet, resume_dir : as :meth:`~oceanda.contrastive.training.Trainer.fit` / ``Trainer``
    source, log : provenance stored in ``extra.source``; where adaptations (batch, epochs, depth) are said

    Returns
    -------
    tuple
        ``(model, TrainResult)``; the model's config holds what ``oceanda.analysis`` reads (channels,
        statistics, grid fingerprint, observation window) and the training settings (``train``).
    """
    state_vars, obs_vars = _data_variables(states, state_vars), _data_variables(obs, obs_vars)
    d = _field_data(states, obs, state_vars, obs_vars, window, val_fraction)
    n_train = len(valid_lag_times(d.days, d.segments, window, d.train_idx))
    batch_size, epochs = fit_batch(n_train, batch_size, epochs, log)
    tc = FIELD_TRAINING.replace(loss=loss, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                                seed=seed, max_seconds=seconds, patience=patience, block_size=block)
    tc = tc.replace(block_start=min(3, max(0, tc.epochs // 4)))
    if encoder == "cnn":
        cnn = fit_cnn(d.array.shape[-2:], cnn, log)
    if fresh:
        train_data, val_data = _fresh_pairs(d, obs, obs_vars, window, periodic if shift is None else shift, tc.block_size)
    else:
        train_data, val_data = _fixed_pairs(d, obs, obs_vars, window)
    model = _field_model(d, states, state_vars, window=window, encoder=encoder, embedding_dim=embedding_dim,
                         similarity=similarity, tau=tau, learn_tau=learn_tau, periodic=periodic, cnn=cnn, fresh=fresh,
                         source=source)
    res = Trainer(tc, quiet=quiet).fit(model, train_data, val_data, checkpoint_dir=out_dir, resume=resume,
                                       overwrite=overwrite, resume_dir=resume_dir)
    return model, res


#: Optimiser steps that default field training makes at least (20 epochs of 2 batches -- the sample
#: library's 321 pairs at batch 128 -- were 40 steps: far too few to leave the initial plateau).
MIN_STEPS = 200


def fit_batch(n_train: int, batch_size: int | None, epochs: int | None,
              log: Callable[[str], None] | None = None) -> tuple[int, int]:
    """Batch size and epochs for ``n_train`` training pairs.

    Why: a contrastive batch must hold at least 2 pairs and an epoch drops its incomplete batch, so a
    batch larger than the data trains nothing; and a small data set at batch 128 makes 2 optimiser
    steps an epoch. Unless given, the batch is the largest power of two up to 128 that leaves 8
    batches an epoch (at least 8 pairs), and the epochs at least 20 and enough for :data:`MIN_STEPS`
    steps. A given batch larger than half the pairs shrinks to fit.

    Parameters
    ----------
    n_train : training pairs per epoch
    batch_size, epochs : the requested values (None: automatic)
    log : where the adaptations are reported

    Returns
    -------
    tuple of int
        ``(batch_size, epochs)``.
    """
    if n_train < 4:
        raise DataValidationError(f"{n_train} training pairs; expected at least 4 (more states, or a smaller --val-fraction)")
    say = log or (lambda msg: None)
    pow2 = lambda v: 2 ** int(np.floor(np.log2(max(2, v))))  # noqa: E731
    if batch_size is None:
        b = int(min(FIELD_TRAINING.batch_size, max(2, pow2(min(max(8, n_train // 8), n_train // 2)))))
        if b != FIELD_TRAINING.batch_size:
            say(f"batch size {b} (not {FIELD_TRAINING.batch_size}): {n_train} training pairs")
    else:
        b = int(batch_size)
        if b > n_train // 2:
            b = max(2, pow2(n_train // 2))
            say(f"batch size {b} instead of {batch_size}: only {n_train} training pairs")
    steps = max(1, n_train // b)
    if epochs is None:
        e = max(FIELD_TRAINING.epochs, -(-MIN_STEPS // steps))
        if e != FIELD_TRAINING.epochs:
            say(f"{e} epochs of {steps} batches ({e * steps} optimiser steps; --epochs to change)")
    else:
        e = int(epochs)
    return b, e


def fit_cnn(shape: tuple[int, int], cnn: dict | None, log: Callable[[str], None] | None = None) -> dict:
    """Masked-CNN options that fit a grid: depth reduced until the final map keeps 2 cells a side.

    The network pads a grid that its stride does not divide (:class:`~oceanda.contrastive.encoders.MaskedCNNEncoder`).

    Parameters
    ----------
    shape : ``(ny, nx)`` of the grid
    cnn : requested options (``depth``, ``input_pool``, ``first_stride``, ...), or None
    log : where the adaptations are reported

    Returns
    -------
    dict
        The options (``depth`` set).
    """
    opts = dict(cnn or {})
    pool = int(opts.get("input_pool", 1)) * int(opts.get("first_stride", 1))
    depth = int(opts.get("depth", 3))
    m = min(shape) / pool
    fit = max(0, min(depth, int(np.floor(np.log2(max(1.0, m / 2))))))
    if fit != depth:
        if log is not None:
            log(f"cnn depth {fit} instead of {depth}: the {shape[0]} x {shape[1]} grid is too small")
        opts["depth"] = fit
    f = 2 ** opts.get("depth", depth) * pool
    if (shape[0] % f or shape[1] % f) and log is not None:
        log(f"grid {shape[0]} x {shape[1]} padded to {-(-shape[0] // f) * f} x {-(-shape[1] // f) * f} (the network's stride {f})")
    return opts


def train_bundled_field_model(
sample_dir, out_dir, *, quiet: bool = True, seed: int = 0, seconds: float = 120.0,
                              overwrite: bool = False):
    """The whole-field model shipped in ``sample_data/models/qg_field`` (global mode; ``oceanda demo --train``).

    A small masked CNN pair (64-d embedding, 2x2 input pooling, cosine similarity, CLIP loss) trained on
    ``sample_dir/library.nc`` with fresh daily altimetry patterns from ``train_obs.nc`` within ``seconds``.
    The resume state is removed afterwards: it is not needed to use the model.

    Parameters
    ----------
    sample_dir : the sample folder (``library.nc``, ``train_obs.nc``)
    out_dir : the checkpoint directory
    quiet, seed, seconds, overwrite : as :func:`train_field_model`

    Returns
    -------
    tuple
        ``(model, TrainResult)``.
    """
    from pathlib import Path

    from oceanda import io

    sample_dir = Path(sample_dir)
    states = io.open_states(sample_dir / "library.nc").load()
    obs = io.open_obs(sample_dir / "train_obs.nc", like=states).load()
    model, result = train_field_model(states, obs, out_dir, embedding_dim=64, epochs=60, seconds=seconds, seed=seed,
                                      quiet=quiet, overwrite=overwrite, cnn={"input_pool": 2, "width": 16, "depth": 3},
                                      source={"states": str(sample_dir / "library.nc"), "obs": str(sample_dir / "train_obs.nc"),
                                              "recipe": "oceanda.pairs.train_bundled_field_model"})
    io.remove_tree(Path(out_dir) / "resume")
    return model, result
