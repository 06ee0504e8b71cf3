"""Covariance inflation: multiplicative, relaxation to prior spread (RTPS) and perturbations (RTPP), adaptive.

Finite ensembles underestimate their error; inflation compensates. Multiplicative inflation scales
the forecast anomalies by ``factor`` (a variance factor of ``factor**2``) before the analysis.
RTPS (Whitaker & Hamill 2012) rescales the analysis anomalies of each state variable so the spread
becomes ``alpha * sigma_f + (1 - alpha) * sigma_a``; RTPP (Zhang et al. 2004) blends the anomalies
themselves, ``(1 - alpha) A_a + alpha A_f``. The adaptive multiplicative factor is estimated from
innovation statistics (Desroziers et al. 2005; Li et al. 2009) and smoothed in time.
"""

from __future__ import annotations

import numpy as np


def inflate(E: np.ndarray, factor: float) -> np.ndarray:
    """Scale the anomalies of ``E [N, n]`` about the ensemble mean by ``factor``.

    Parameters
    ----------
    E : ensemble ``[N, n]``
    factor : multiplicative factor on the anomalies

    Returns
    -------
    numpy.ndarray: the inflated ensemble (``E`` itself when factor is 1)
    """
    if factor == 1.0:
        return E
    mean = E.mean(axis=0, keepdims=True)
    return mean + factor * (E - mean)


def rtps(Ea: np.ndarray, Ef: np.ndarray, alpha: float) -> np.ndarray:
    """Relaxation to prior spread: per-variable spread -> alpha * sigma_f + (1 - alpha) * sigma_a.

    Parameters
    ----------
    Ea : analysis ensemble ``[N, n]``
    Ef : forecast ensemble ``[N, n]``
    alpha : relaxation in [0, 1]

    Returns
    -------
    numpy.ndarray: the relaxed analysis ensemble
    """
    if alpha == 0.0:
        return Ea
    ma = Ea.mean(0, keepdims=True)
    Aa = Ea - ma
    sa = Aa.std(0, ddof=1)
    sf = Ef.std(0, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(sa > 0, (alpha * sf + (1.0 - alpha) * sa) / sa, 1.0)
    return ma + Aa * scale


def rtpp(Ea: np.ndarray, Ef: np.ndarray, alpha: float) -> np.ndarray:
    """Relaxation to prior perturbations: A_a -> (1 - alpha) A_a + alpha A_f.

    Parameters
    ----------
    Ea : analysis ensemble ``[N, n]``
    Ef : forecast ensemble ``[N, n]``
    alpha : relaxation in [0, 1]

    Returns
    -------
    numpy.ndarray: the relaxed analysis ensemble
    """
    if alpha == 0.0:
        return Ea
    ma = Ea.mean(0, keepdims=True)
    return ma + (1.0 - alpha) * (Ea - ma) + alpha * (Ef - Ef.mean(0, keepdims=True))


def innovation_inflation_estimate(d: np.ndarray, Ys: np.ndarray) -> float:
    """Variance-inflation estimate from normalised innovations.

    ``d [p]`` = (y - mean H(x_f)) / sigma_o and ``Ys [N, p]`` the normalised forecast obs
    anomalies. Since E[d.d] = p + lambda tr(H P_f H^T R^-1), lambda = (d.d - p) / tr(...).
    Returns the variance factor lambda (may be < 1 or negative from noise; callers clip).

    Parameters
    ----------
    d : normalised innovations ``[p]``
    Ys : normalised forecast observation anomalies ``[N, p]``

    Returns
    -------
    float: the variance factor (1.0 without observations)
    """
    p = d.size
    N = Ys.shape[0]
    tr = float((Ys**2).sum()) / (N - 1)
    if p == 0 or tr <= 0:
        return 1.0
    return (float(d @ d) - p) / tr


class AdaptiveInflation:
    """Adaptive multiplicative inflation, smoothed in time; ``factor`` multiplies anomalies.

    Each cycle's raw variance estimate (:func:`innovation_inflation_estimate`) is clipped to
    ``[min_factor**2, max_factor**2]`` and blended with the previous value with weight
    ``smoothing`` (a small weight trusts the history: the raw estimate is noisy).
    """

    def __init__(self, initial: float = 1.0, smoothing: float = 0.05, min_factor: float = 1.0, max_factor: float = 2.0):
        self.variance = float(initial) ** 2
        self.smoothing = float(smoothing)
        self.min_factor = float(min_factor)
        self.max_factor = float(max_factor)

    @property
    def factor(self) -> float:
        return float(np.sqrt(self.variance))

    def update(self, d: np.ndarray, Ys: np.ndarray) -> float:
        """Feed one cycle's innovations (forecast, before inflation); return the new factor.

        Parameters
        ----------
        d : normalised innovations ``[p]``
        Ys : normalised forecast observation anomalies ``[N, p]``

        Returns
        -------
        float: the new multiplicative factor
        """
        raw = innovation_inflation_estimate(d, Ys)
        raw = float(np.clip(raw, self.min_factor**2, self.max_factor**2))
        self.variance = (1.0 - self.smoothing) * self.variance + self.smoothing * raw
        return self.factor

    def state(self) -> dict[str, float]:
        return {"variance": self.variance, "smoothing": self.smoothing, "min_factor": self.min_factor, "max_factor": self.max_factor}

    @classmethod
    def from_state(cls, s: dict[str, float]) -> AdaptiveInflation:
        """Rebuild from a :meth:`state` dict (for restarts).

        Parameters
        ----------
        s : the dict written by :meth:`state`

        Returns
        -------
        AdaptiveInflation
        """
        obj = cls()
        obj.load_state(s)
        return obj

    def load_state(self, s: dict[str, float]) -> None:
        """Take over a :meth:`state` dict in place (a resumed run keeps updating the caller's object).

        Parameters
        ----------
        s : the dict written by :meth:`state`
        """
        self.smoothing, self.min_factor, self.max_factor = (float(s[k]) for k in ("smoothing", "min_factor", "max_factor"))
        self.variance = float(s["variance"])
