"""Does a window critic resolve errors of forecast size? The gate a learned likelihood passes before it cycles.

A critic trained against climatological negatives learns exp(s / tau) ~ p(y | x) / p(y) relative to
climatology: it ranks the truth far above random library windows, but inside a cycle it weights members
that are all close to the truth, and there it may be flat. Per analysis window (the sampler's windows,
encoded exactly as local mode encodes them: :func:`oceanda.analysis.windows.extract` of the states
without halo and of the observations with halo, the model's standardisation and mask channels) this
module scores every member's logit ``s / tau`` and its window RMSE against the truth, and reports the
Spearman rank correlation between the logit and minus the error (1: the critic orders members by
error) and the logit range over members in nats (how far apart the weights can be).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from oceanda import fields
from oceanda.analysis import windows as W
from oceanda.errors import ConfigurationError, DataValidationError, GridMismatchError


class EncoderCritic:
    """The logits of a trained window model for member windows against one observation window each.

    Why a class: :func:`likelihood_resolution` takes any object with ``window``, ``state_channels``,
    ``obs_channels`` and ``logits(states [N, P, C, s, s], obs [P, Co, o, o]) -> [N, P]`` (a test's
    exact critic, a model), so the statistics are checked apart from any network.
    """

    def __init__(self, pair: Any, tau: float | None = None):
        from oceanda.analysis.assimilate import resolve_settings

        self.pair = pair[1] if isinstance(pair, tuple) else pair
        model = pair[0] if isinstance(pair, tuple) else pair.model
        if self.pair.window is None:
            raise ConfigurationError(f"{self.pair.where}: a whole-field model; expected a window (local) model")
        self.window = self.pair.window
        self.state_channels, self.obs_channels = self.pair.state_channels, self.pair.obs_channels
        self.kind = self.pair.kind
        # a pattern-trained model (error channel) reads any subset of its observed variables, and their errors
        self.reads_any_subset = self.reads_errors = bool(getattr(self.pair, "error_channel", False))
        # the sampler's temperature (the stored calibration), as local mode uses it
        self.tau = float(tau) if tau is not None else resolve_settings(model, self.pair.where).temperature(self.pair.tau)

    def logits(self, states: np.ndarray, obs: np.ndarray, errors: np.ndarray | None = None) -> np.ndarray:
        """``[N, P]`` logits ``s(g_state(member window), g_obs(obs window)) / tau`` (``errors``: the obs windows'
        error std, read by models with an error channel; None: the model's ``obs_sigma``)."""
        from oceanda.contrastive.similarity import numpy_scores

        n, p = states.shape[:2]
        zs = self.pair.embed_state(states.reshape(n * p, *states.shape[2:])).reshape(n, p, -1)
        zo = self.pair.embed_obs(obs, errors)
        return np.stack([numpy_scores(zs[:, k], zo[k], kind=self.kind, tau=self.tau) for k in range(p)], axis=1)


class GaussianCritic:
    """The exact likelihood as a critic: ``-sum (y - x)^2 / (2 sigma^2)`` over the observations in each state window.

    Why: the reference a learned critic is measured against, and the upper bound of a learned-likelihood
    update (:mod:`oceanda.analysis.learned_update`). It is separable -- an inner product of per-cell state
    features ``[x, x^2]`` with observation features ``[m y, -m / 2] / sigma^2`` (``m`` the observed mask) --
    so a contrastive critic with per-cell embeddings can represent it exactly.
    """

    def __init__(self, sigma: float, window: W.WindowSpec, channel: tuple = ("ssh", None)):
        self.sigma, self.window, self.tau = float(sigma), window, 1.0
        self.state_channels = self.obs_channels = [tuple(channel)]

    def logits(self, states: np.ndarray, obs: np.ndarray) -> np.ndarray:
        """``[N, P]`` log-likelihoods of the observation windows' inner cells given the member windows."""
        h, s = self.window.halo, self.window.size
        r = (states - obs[None, :, :, h:h + s, h:h + s]) / self.sigma
        return -0.5 * np.nansum(r * r, axis=(2, 3, 4))


@dataclass
class Resolution:
    """Per analysis window: rank correlation of logit and minus error, logit range (nats); the inputs kept."""

    iy: np.ndarray
    ix: np.ndarray
    rank_corr: np.ndarray  # [P]; NaN where the logits or the errors are all equal (no ranking)
    logit_range: np.ndarray  # [P] max - min over members
    logits: np.ndarray  # [N, P]
    errors: np.ndarray  # [N, P] window RMSE vs the truth
    tau: float | None = None
    #: the exact Gaussian log-likelihood of the observations inside each state window, ``[N, P]`` (None: no
    #: observation error known): what a perfect critic of these observations would score
    oracle_logits: np.ndarray | None = None
    extra: dict = field(default_factory=dict)

    @property
    def oracle_rank_corr(self) -> np.ndarray | None:
        """``[P]`` rank correlation of the exact likelihood with minus the error: the ceiling of :attr:`rank_corr`."""
        return None if self.oracle_logits is None else rank_correlation(self.oracle_logits, -self.errors)

    @property
    def agreement(self) -> np.ndarray | None:
        """``[P]`` rank correlation of the critic's logit with the exact likelihood (1: it orders members as Bayes does)."""
        return None if self.oracle_logits is None else rank_correlation(self.logits, self.oracle_logits)

    @property
    def summary(self) -> dict[str, float]:
        """Median and mean over windows (rank correlation: of the windows where it is defined)."""
        rc = self.rank_corr[np.isfinite(self.rank_corr)]
        return {"rank_corr_median": float(np.median(rc)) if len(rc) else float("nan"),
                "rank_corr_mean": float(np.mean(rc)) if len(rc) else float("nan"),
                "logit_range_median": float(np.median(self.logit_range)),
                "logit_range_mean": float(np.mean(self.logit_range)),
                "windows": int(len(self.iy)), "members": int(self.logits.shape[0]),
                "error_median": float(np.nanmedian(self.errors)), **self._oracle_summary()}

    def _oracle_summary(self) -> dict[str, float]:
        if self.oracle_logits is None:
            return {}
        med = lambda a: float(np.nanmedian(a)) if np.isfinite(a).any() else float("nan")  # noqa: E731
        return {"oracle_rank_corr_median": med(self.oracle_rank_corr), "agreement_median": med(self.agreement),
                "oracle_range_median": float(np.median(self.oracle_logits.max(axis=0) - self.oracle_logits.min(axis=0)))}


def rank_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman correlation per column of ``a``, ``b`` ``[N, P]`` (average ranks of ties; NaN if constant)."""
    from scipy.stats import rankdata

    ra, rb = rankdata(a, axis=0), rankdata(b, axis=0)
    ra, rb = ra - ra.mean(axis=0), rb - rb.mean(axis=0)
    den = np.sqrt((ra * ra).sum(axis=0) * (rb * rb).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (ra * rb).sum(axis=0) / np.where(den > 0, den, 1.0), np.nan)


def _critic(model: Any, tau: float | None) -> Any:
    """A critic from a model directory, a ``(model, EncoderPair)`` pair, an EncoderPair or a critic object."""
    if hasattr(model, "logits") and hasattr(model, "window") and hasattr(model, "state_channels"):
        return model
    if isinstance(model, (str, os.PathLike)):
        from oceanda.analysis.encoding import load_model

        model = load_model(model)
    elif not isinstance(model, tuple) and hasattr(model, "state_encoder"):  # a ContrastiveModel
        from oceanda.analysis.encoding import EncoderPair

        model = (model, EncoderPair.from_model(model))
    return EncoderCritic(model, tau)


def _channels_array(x: Any, channels: list, what: str, sample_dim: str | None, any_subset: bool = False) -> np.ndarray:
    """``[S, C, Y, X]`` (``sample_dim`` given) or ``[C, Y, X]`` of a Dataset or an array, in ``channels``' order
    (``any_subset``: variables the Dataset lacks are unobserved, NaN, as a pattern-trained model reads them)."""
    if isinstance(x, xr.Dataset):
        names = list(dict.fromkeys(v for v, _ in channels))
        missing = [v for v in names if v not in x.data_vars]
        if missing and any_subset and len(missing) < len(names):
            return _subset_array(x, channels, what, sample_dim, missing)
        if missing:
            raise DataValidationError(f"{what}: lacks {missing}; expected the variables {names} the critic encodes")
        ds = x[names]
        if "time" in ds.dims and sample_dim != "time":
            if ds.sizes["time"] != 1:
                raise DataValidationError(f"{what}: {ds.sizes['time']} times; expected one time (select it with .isel(time=k))")
            ds = ds.isel(time=0)
        sd = sample_dim or "sample"
        if sample_dim is not None and sample_dim not in ds.dims:
            raise DataValidationError(f"{what}: no '{sample_dim}' dim; expected an ensemble with a '{sample_dim}' dim")
        lay = fields.layout_of(ds, names, sample_dim=sd)
        arr, lay = fields.to_array(ds, lay, dtype=np.float64)
        from oceanda.analysis.encoding import channel_index

        arr = arr[:, channel_index(lay, channels, what)]
        return arr if sample_dim is not None else arr[0]
    a = np.asarray(x, dtype=np.float64)
    want = 4 if sample_dim is not None else 3
    if a.ndim == want - 1 and len(channels) == 1:  # [N, Y, X] / [Y, X] of a one-channel critic
        a = a[:, None] if sample_dim is not None else a[None]
    if a.ndim != want or a.shape[-3] != len(channels):
        shape = "[N, C, Y, X] (or [N, Y, X])" if sample_dim is not None else "[C, Y, X] (or [Y, X])"
        raise DataValidationError(f"{what}: array of shape {a.shape}; expected {shape} with C = {len(channels)}")
    return a


def _subset_array(x: xr.Dataset, channels: list, what: str, sample_dim: str | None, missing: list) -> np.ndarray:
    """:func:`_channels_array` of the channels ``x`` has, NaN in those of the ``missing`` variables."""
    have = [c for c in channels if c[0] not in missing]
    arr = _channels_array(x, have, what, sample_dim)
    out = np.full((*arr.shape[:-3], len(channels), *arr.shape[-2:]), np.nan)
    out[..., [channels.index(c) for c in have], :, :] = arr
    return out


def _encoder_obs_errors(obs: Any, critic: Any, ob: np.ndarray) -> np.ndarray | None:
    """``[C_obs, Y, X]`` error std of ``ob`` for a critic that reads errors: the obs Dataset's ``<var>_error``,
    else the model's ``obs_sigma``; None for other critics or array observations (the model's default)."""
    if not getattr(critic, "reads_errors", False) or not isinstance(obs, xr.Dataset):
        return None
    from oceanda.analysis.encoding import obs_error_arrays

    return obs_error_arrays(obs, critic.pair, ob[None].astype(np.float32))[0]


def _window_errors(ens: np.ndarray, truth: np.ndarray, iy: np.ndarray, ix: np.ndarray, spec: W.WindowSpec) -> np.ndarray:
    """``[N, P]`` RMSE of each member window against the truth window (finite cells only)."""
    ew = W.extract(ens, iy, ix, spec.size, 0, spec.periodic)  # [N, P, C, s, s]
    tw = W.extract(truth, iy, ix, spec.size, 0, spec.periodic)  # [P, C, s, s]
    d2 = (ew - tw[None]) ** 2
    with np.errstate(invalid="ignore"):
        return np.sqrt(np.nanmean(d2.reshape(*d2.shape[:2], -1), axis=-1))


def _obs_error(obs: Any, channels: list, given: Any) -> np.ndarray | None:
    """Observation error std per observed channel: ``given``, else the obs Dataset's ``<var>_error`` (None: unknown)."""
    if given is not None:
        return np.broadcast_to(np.asarray(given, np.float64), (len(channels),)).copy()
    if isinstance(obs, xr.Dataset) and all(f"{v}_error" in obs and obs[f"{v}_error"].size == 1 for v, _ in channels):
        return np.array([float(obs[f"{v}_error"].values) for v, _ in channels])
    return None


def _oracle(ens: np.ndarray, ob: np.ndarray, sigma: np.ndarray, critic: Any, iy: np.ndarray, ix: np.ndarray,
            spec: W.WindowSpec) -> np.ndarray | None:
    """``[N, P]`` Gaussian log-likelihood of the observations in each state window given each member."""
    if list(critic.obs_channels) != [c for c in critic.state_channels if c in critic.obs_channels]:
        return None  # observed channels not among the state channels: no direct likelihood
    idx = [list(critic.state_channels).index(c) for c in critic.obs_channels]
    ew = W.extract(ens[:, idx], iy, ix, spec.size, 0, spec.periodic)  # [N, P, Co, s, s]
    ow = W.extract(ob, iy, ix, spec.size, 0, spec.periodic)  # [P, Co, s, s]
    r = (ew - ow[None]) / sigma[None, None, :, None, None]
    return -0.5 * np.nansum(r * r, axis=(2, 3, 4))


def likelihood_resolution(model: Any, ensemble: Any, truth: Any, obs: Any, *, tau: float | None = None,
                          obs_time: int | None = None, obs_error: Any = None) -> Resolution:
    """Whether a critic orders an ensemble's members by their error, window by window.

    Parameters
    ----------
    model : a window model directory, a ``(ContrastiveModel, EncoderPair)`` pair (:func:`oceanda.api.load_model`),
        a ContrastiveModel, or a critic object (``window``, ``state_channels``, ``obs_channels``, ``logits``)
    ensemble : an xarray Dataset with a ``member`` dim (one time) in the library layout, or ``[N, ny, nx]`` /
        ``[N, C, ny, nx]`` in the critic's state channels
    truth : one state (Dataset, one time) or ``[ny, nx]`` / ``[C, ny, nx]``
    obs : one time's gridded observations (Dataset, NaN unobserved) or ``[C_obs, ny, nx]``
    tau : the temperature of the logits (default: the model's sampler temperature)
    obs_time : the time index of ``obs`` when it holds several times
    obs_error : observation error std (per observed channel; default: the obs Dataset's ``<var>_error``): enables
        the exact-likelihood reference (``oracle_logits``; ``summary``'s ``oracle_rank_corr_median``, the ceiling
        any critic of these observations reaches, and ``agreement_median``, critic vs exact likelihood)

    Returns
    -------
    Resolution
        per window ``rank_corr`` (Spearman of logit and minus window RMSE) and ``logit_range`` (nats), ``summary``.
    """
    critic = _critic(model, tau)
    spec = critic.window
    ens = _channels_array(ensemble, critic.state_channels, "ensemble", "member")
    tr = _channels_array(truth, critic.state_channels, "truth", None)
    if isinstance(obs, xr.Dataset) and obs_time is not None:
        obs = obs.isel(time=int(obs_time))
    ob = _channels_array(obs, list(critic.obs_channels), "observations", None,
                         any_subset=getattr(critic, "reads_any_subset", False))
    if ens.shape[0] < 2:
        raise DataValidationError(f"ensemble: {ens.shape[0]} member; expected at least 2 members to rank")
    ny, nx = ens.shape[-2:]
    for what, a in (("truth", tr), ("observations", ob)):
        if a.shape[-2:] != (ny, nx):
            raise GridMismatchError(f"{what}: grid {a.shape[-2]} x {a.shape[-1]}; expected the ensemble's grid {ny} x {nx}")
    spec.check(ny, nx, "ensemble")
    iy, ix = W.positions(ny, nx, spec)
    cut = (iy, ix, spec.size, spec.halo, spec.periodic)
    errs = _encoder_obs_errors(obs, critic, ob)
    kw = {} if errs is None else {"errors": W.extract(errs, *cut)}
    logits = np.asarray(critic.logits(W.extract(ens, iy, ix, spec.size, 0, spec.periodic), W.extract(ob, *cut), **kw),
                        dtype=np.float64)
    errors = _window_errors(ens, tr, iy, ix, spec)
    sigma = _obs_error(obs, list(critic.obs_channels), obs_error)
    oracle = None if sigma is None else _oracle(ens, ob, sigma, critic, iy, ix, spec)
    return Resolution(iy=iy, ix=ix, rank_corr=rank_correlation(logits, -errors),
                      logit_range=logits.max(axis=0) - logits.min(axis=0), logits=logits, errors=errors,
                      tau=getattr(critic, "tau", None), oracle_logits=oracle)
