"""A cycled filter whose update uses the learned likelihood alone: localised particle weights + a transform.

Why: inside a cycle the prior is the forecast ensemble, and the contrastive conditional
nu(x | y) ∝ exp(s(x, y) / tau) mu(dx) applied to forecast members is a Bayes update with the learned
likelihood ratio -- if the critic resolves forecast-size errors (:mod:`oceanda.analysis.resolution`).
Per analysis window (the model's windows, encoded as local mode encodes them) the members get softmax
weights of their logits, tempered until the window's ESS reaches ``min_ess`` (a particle filter in
64 windows of 20 members degenerates otherwise); the window weights are blended into per-cell weights
with the sampler's partition-of-unity taper, and every cell is moved by a moment-matching transform
(the weighted mean, the deviations scaled to the weighted spread, relaxed towards the prior spread by
``rtps``) -- no resampling, so the members stay smooth fields. ``forecast(E, t0, t1)`` and the update
are all a cycle needs (:func:`learned_cycle`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from oceanda.analysis import windows as W
from oceanda.analysis.posterior import effective_sample_size, softmax_weights, temper
from oceanda.analysis.resolution import _critic
from oceanda.errors import DataValidationError


def _tempered(logits: np.ndarray, min_ess: float) -> tuple[np.ndarray, np.ndarray]:
    """Softmax weights ``[N, P]`` per window, each tempered (:func:`~oceanda.analysis.posterior.temper`: the
    smallest temperature >= 1 on the logits) until its ESS reaches ``min_ess``; and the windows' ESS."""
    w = np.empty_like(logits)
    for p in range(logits.shape[1]):
        w[:, p] = softmax_weights(logits[:, p], temper(logits[:, p], 1.0, min_ess))
    return w, effective_sample_size(w, axis=0)


@dataclass
class LearnedLikelihoodUpdate:
    """``assimilate(E, obs, rng, localizer)`` for flat ensembles ``[N, C * ny * nx]`` (channels ``channels``).

    ``model``: a window critic (directory, loaded pair or critic object); ``channels``: the state's
    ``(variable, level)`` channels in order (the critic's channels must be among them); ``shape``:
    ``(ny, nx)``; ``tau``: the logits' temperature (None: the model's sampler tau); ``min_ess``: the
    tempering target per window; ``rtps``: relaxation of the analysis spread to the prior spread.
    """

    model: Any
    channels: Sequence[tuple[str, int | None]]
    shape: tuple[int, int]
    tau: float | None = None
    min_ess: float = 5.0
    rtps: float = 0.5
    name: str = "learned_pf"

    def __post_init__(self) -> None:
        self.critic = _critic(self.model, self.tau)
        self.channels = [tuple(c) for c in self.channels]
        missing = [c for c in self.critic.state_channels if tuple(c) not in self.channels]
        if missing:
            raise DataValidationError(f"state channels {self.channels}; the critic encodes {missing}, which they lack")
        self.sel = [self.channels.index(tuple(c)) for c in self.critic.state_channels]
        self.last: dict = {}

    def weights(self, E: np.ndarray, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-cell weights ``[N, ny, nx]`` (summing to one) of members ``[N, C, ny, nx]`` and the windows' ESS."""
        spec = self.critic.window
        ny, nx = self.shape
        iy, ix = W.positions(ny, nx, spec)
        logits = self.critic.logits(W.extract(E[:, self.sel], iy, ix, spec.size, 0, spec.periodic),
                                    W.extract(obs, iy, ix, spec.size, spec.halo, spec.periodic))
        w, ess = _tempered(np.asarray(logits, np.float64), self.min_ess)
        win = np.broadcast_to(w.T[:, :, None, None], (len(iy), len(E), spec.size, spec.size))
        return W.blend(np.ascontiguousarray(win), iy, ix, (ny, nx), spec), ess

    def assimilate(self, E: np.ndarray, obs: np.ndarray, rng: Any = None, localizer: Any = None) -> np.ndarray:
        """The analysis ensemble (flat, as ``E``) given gridded observations ``obs`` ``[C_obs, ny, nx]`` (NaN gaps)."""
        ny, nx = self.shape
        X = np.asarray(E, np.float64).reshape(len(E), len(self.channels), ny, nx)
        wc, ess = self.weights(X, np.asarray(obs, np.float64))
        w = wc[:, None]  # [N, 1, ny, nx]: every channel of a cell moves with the same weights
        mf = X.mean(axis=0)
        ma = (w * X).sum(axis=0)
        sf = X.std(axis=0)
        sa = np.sqrt(np.maximum((w * (X - ma) ** 2).sum(axis=0), 0.0))
        s = (1.0 - self.rtps) * sa + self.rtps * sf
        with np.errstate(invalid="ignore", divide="ignore"):
            scale = np.where(sf > 0, s / np.where(sf > 0, sf, 1.0), 0.0)
        self.last = {"ess_median": float(np.median(ess)), "ess_min": float(ess.min())}
        return (ma[None] + scale[None] * (X - mf[None])).reshape(E.shape)


def learned_cycle(forecast: Callable[[np.ndarray, float, float], np.ndarray], initial: np.ndarray,
                  observations: Sequence[np.ndarray], times: Sequence[float], update: Any, *, t0: float,
                  rng: Any = 0) -> np.ndarray:
    """Forecast-analysis cycles with ``update.assimilate``; the analysis ensembles ``[K, N, n]``.

    Parameters
    ----------
    forecast : ``forecast(E, t0, t1) -> E`` (e.g. :class:`oceanda.experiments.qg_twin.QGForecast`)
    initial : ``[N, n]`` at ``t0``
    observations : one gridded observation array ``[C_obs, ny, nx]`` per cycle
    times : the cycles' times (increasing, after ``t0``)
    update : an object with ``assimilate(E, obs, rng, localizer)`` (:class:`LearnedLikelihoodUpdate`)
    rng : seed or generator passed to the update

    Returns
    -------
    numpy.ndarray
    """
    g = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    E, t, out = np.asarray(initial, np.float64), float(t0), []
    if len(observations) != len(times):
        raise DataValidationError(f"{len(observations)} observation fields for {len(times)} times; expected one per time")
    for obs, t1 in zip(observations, times):
        E = update.assimilate(forecast(E, t, float(t1)), obs, g, None)
        t = float(t1)
        out.append(E.copy())
    return np.stack(out)
