"""A distribution of observation patterns for training window models that read any observation set.

Why: a window model trained on one pattern (four altimetry tracks a day) learns that pattern, not how
to read observations -- with half the field observed it did no better than from four tracks. Drawn
afresh for every pair, from a mixture of families, with the mask and the observation error always
inputs of the encoder, the model has to read whatever it is given:

- ``tracks``: parallel along-track lines of random orientation, spacing and phase, with a second,
  crossing set half of the time (ascending and descending passes);
- ``clouds``: a thresholded smooth random field -- cloud gaps of random observed fraction and size;
- ``points``: scattered cells (profiles, drifter fixes, superobbed L3 points) of random density;
- ``swaths``: wide-swath altimetry (two swaths either side of a nadir gap) -- not drawn by default:
  the held-back family of ``benchmarks/bench_obs_patterns.py``.

Each family observes the channels named in ``observes`` (default: all observed variables), and each
pair's noise is a log-uniform fraction of the channel's standard deviation, given to the encoder as
the error channel (:func:`oceanda.fields.encoder_obs_input`). Patterns are cut directly at the size
of an observation window (their statistics are translation invariant), scales are in km.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from oceanda.errors import ConfigurationError
from oceanda.settings import Settings, check_choice, check_number

FAMILIES = ("tracks", "clouds", "points", "swaths")
#: what a window model trained for any observation set is trained on (``swaths`` is held back)
DEFAULT_FAMILIES = ("tracks", "clouds", "points")

_RANGES = ("sigma_fraction", "track_spacing_km", "cloud_fraction", "cloud_scale_km", "point_spacing_km",
           "swath_width_km")


@dataclass(frozen=True)
class PatternMix(Settings):
    """Which observation patterns a window model is trained on, and their ranges (checked on construction).

    ``families``: drawn with equal probability (or ``weights``); ``observes``: family -> observed
    variables it sees (a family not named sees every observed variable); ``sigma_fraction``: noise
    std as a fraction of each channel's std, log-uniform in the range; ``track_spacing_km``: distance
    between parallel tracks (log-uniform); ``cloud_fraction``: observed fraction; ``cloud_scale_km``:
    correlation length of the cloud field; ``point_spacing_km``: mean distance between points
    (density 1 / spacing^2, log-uniform); ``swath_width_km``: width of each of the two swaths.
    """

    SCHEMA: ClassVar[str] = "oceanda.PatternMix"
    VERSION: ClassVar[int] = 1

    families: tuple = DEFAULT_FAMILIES
    weights: tuple | None = None
    observes: dict = field(default_factory=dict)
    sigma_fraction: tuple = (0.03, 0.3)
    track_spacing_km: tuple = (100.0, 800.0)
    cloud_fraction: tuple = (0.2, 0.95)
    cloud_scale_km: tuple = (30.0, 200.0)
    point_spacing_km: tuple = (60.0, 400.0)
    swath_width_km: tuple = (50.0, 70.0)

    def validate(self) -> None:
        """Raise :class:`~oceanda.errors.ConfigurationError` naming the first setting out of range."""
        fam = tuple(self.families)
        if not fam or len(set(fam)) != len(fam):
            raise ConfigurationError(f"patterns families={list(fam)}; expected distinct names of {list(FAMILIES)}")
        for f in fam:
            check_choice("patterns family", f, FAMILIES)
        if self.weights is not None:
            if len(self.weights) != len(fam):
                raise ConfigurationError(f"patterns weights={list(self.weights)}; expected {len(fam)} weights")
            for w in self.weights:
                check_number("patterns weight", w, lo=0, lo_open=True)
        for f, vs in dict(self.observes).items():
            check_choice("patterns observes family", f, FAMILIES)
            if not vs or not all(isinstance(v, str) for v in vs):
                raise ConfigurationError(f"patterns observes[{f!r}]={vs!r}; expected a list of variable names")
        for name in _RANGES:
            lo, hi = _pair(name, getattr(self, name))
            check_number(f"patterns {name}", lo, lo=0, lo_open=True)
            check_number(f"patterns {name}", hi, lo=lo, hi=1.0 if name == "cloud_fraction" else None)

    def probabilities(self) -> np.ndarray:
        w = np.ones(len(self.families)) if self.weights is None else np.asarray(self.weights, np.float64)
        return w / w.sum()

    def channel_table(self, obs_channels) -> np.ndarray:
        """``bool [families, C_obs]``: which observed channels ``(variable, level)`` each family sees."""
        names = [v for v, _ in obs_channels]
        table = np.zeros((len(self.families), len(names)), bool)
        for k, f in enumerate(self.families):
            sees = dict(self.observes).get(f)
            table[k] = [sees is None or v in sees for v in names]
            if not table[k].any():
                raise ConfigurationError(f"patterns observes[{f!r}]={list(sees)}: none of the observed variables "
                                         f"{sorted(set(names))}; expected at least one of them")
        return table


def pattern_mix(patterns: Any) -> PatternMix | None:
    """``patterns`` as a validated :class:`PatternMix`, None when not given: the one reading of what users pass.

    Accepts a PatternMix, ``"all"`` (:data:`DEFAULT_FAMILIES`), a list of family names (or a comma string), or a
    dict of PatternMix fields (``families`` may be ``"all"``), as the CLI passes it.
    """
    if patterns is None or isinstance(patterns, PatternMix):
        return patterns
    fields = dict(patterns) if isinstance(patterns, dict) else {"families": patterns}
    fam = fields.get("families", DEFAULT_FAMILIES)
    if isinstance(fam, str):
        fam = DEFAULT_FAMILIES if fam == "all" else fam.split(",")
    known = {f.name for f in dataclasses.fields(PatternMix)}
    if not isinstance(fam, (list, tuple)) or set(fields) - known:
        raise ConfigurationError(f"patterns={patterns!r}; expected 'all', a list of families, a PatternMix or a dict "
                                 f"of its fields {sorted(known)}")
    fields["families"] = tuple(fam)
    return PatternMix(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})


def _pair(name: str, value) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"patterns {name}={value!r}; expected a (low, high) pair of numbers") from None
    return lo, hi


def _log_uniform(rng: np.random.Generator, bounds, n: int) -> np.ndarray:
    lo, hi = (float(b) for b in bounds)
    return np.exp(rng.uniform(np.log(lo), np.log(hi), n))


@dataclass
class PatternDraw:
    """Draws :class:`PatternMix` patterns on ``o x o`` observation windows of spacing ``dy, dx`` km."""

    mix: PatternMix
    size: int
    dy: float
    dx: float

    def families(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """The family index of each of ``n`` pairs."""
        return rng.choice(len(self.mix.families), size=n, p=self.mix.probabilities())

    def sigma_fractions(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Each pair's noise std as a fraction of the channel std (log-uniform)."""
        return _log_uniform(rng, self.mix.sigma_fraction, n)

    def channels(self, family: np.ndarray, rng: np.random.Generator, table: np.ndarray,
                 groups: np.ndarray) -> np.ndarray:
        """``bool [n, C]``: the channels each pair observes -- of the variables its family sees (``table``),
        a random non-empty subset (``groups``: the variable index of each channel; a variable's levels go
        together, as a profile observes them all)."""
        n, ng = len(family), int(groups.max()) + 1
        seen_var = np.zeros((len(table), ng), bool)
        for g in range(ng):
            seen_var[:, g] = table[:, groups == g].any(axis=1)
        allowed = seen_var[family]  # [n, ng]
        pick = allowed & (rng.uniform(0, 1, (n, ng)) < 0.5)
        empty = ~pick.any(axis=1)
        if empty.any():  # none drawn: one of the allowed variables
            score = np.where(allowed[empty], rng.uniform(0, 1, (int(empty.sum()), ng)), -1.0)
            pick[np.flatnonzero(empty), score.argmax(axis=1)] = True
        return pick[:, groups]

    def masks(self, family: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``bool [n, o, o]``: one fresh pattern of each pair's family."""
        out = np.zeros((len(family), self.size, self.size), bool)
        for k, name in enumerate(self.mix.families):
            sel = np.flatnonzero(family == k)
            if len(sel):
                out[sel] = getattr(self, f"_{name}")(len(sel), rng)
        return out

    def _coords(self) -> tuple[np.ndarray, np.ndarray]:
        j, i = np.meshgrid(np.arange(self.size), np.arange(self.size), indexing="ij")
        return j * self.dy, i * self.dx

    def _lines(self, n: int, rng: np.random.Generator, spacing: np.ndarray) -> np.ndarray:
        """Parallel rasterised lines (one cell per row or column), ``spacing`` km apart, random angle and phase."""
        y, x = self._coords()
        theta = rng.uniform(0.0, np.pi, n)
        c, s = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
        width = np.maximum(np.abs(c) * self.dx, np.abs(s) * self.dy)[:, 0, 0]
        d = x[None] * c + y[None] * s - (rng.uniform(0, 1, n) * spacing)[:, None, None]
        r = np.mod(d, spacing[:, None, None])
        dist = np.minimum(r, spacing[:, None, None] - r)
        return dist < 0.5 * width[:, None, None]

    def _tracks(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """1-cell-wide tracks, a crossing set half the time (ascending and descending passes)."""
        spacing = _log_uniform(rng, self.mix.track_spacing_km, n)
        m = self._lines(n, rng, spacing)
        cross = rng.uniform(0, 1, n) < 0.5
        if cross.any():
            m[cross] |= self._lines(int(cross.sum()), rng, spacing[cross])
        return m

    def _clouds(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """A Gaussian-spectrum random field of random scale, observed above its (1 - fraction) quantile."""
        o = self.size
        scale = _log_uniform(rng, self.mix.cloud_scale_km, n)
        frac = rng.uniform(*self.mix.cloud_fraction, n)
        ky = np.fft.fftfreq(o, d=self.dy)[:, None]
        kx = np.fft.fftfreq(o, d=self.dx)[None, :]
        k2 = (ky ** 2 + kx ** 2)[None]
        amp = np.exp(-2.0 * (np.pi * scale[:, None, None]) ** 2 * k2)
        noise = np.fft.fft2(rng.standard_normal((n, o, o)))
        f = np.fft.ifft2(noise * amp).real.reshape(n, -1)
        rank = np.clip(((1.0 - frac) * f.shape[1]).astype(np.int64), 0, f.shape[1] - 1)
        thr = np.sort(f, axis=1)[np.arange(n), rank]
        return (f >= thr[:, None]).reshape(n, o, o)

    def _points(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Each cell observed with probability cell area / spacing^2 (a Poisson-like scatter)."""
        p = np.minimum(1.0, self.dx * self.dy / _log_uniform(rng, self.mix.point_spacing_km, n) ** 2)
        return rng.uniform(0, 1, (n, self.size, self.size)) < p[:, None, None]

    def _swaths(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Two swaths of ``swath_width_km`` either side of a 20 km nadir gap, one pass per window."""
        from oceanda.observe import swath_masks

        width = _log_uniform(rng, self.mix.swath_width_km, n)
        return swath_masks(n, rng, self.size, self.size, self.dy, self.dx, width_km=width)


def qg_family_obs(truth, library, family: str, rng: np.random.Generator):
    """A whole observation set of one family of a QG truth, as the bundled sample makes them (noise 0.1 std).

    ``tracks``: 4 altimetry tracks a day; ``clouds``: cloud-masked SSH, 30-70 % observed, 100 km gaps;
    ``points``: 20 Argo-like psi profiles a day (both layers; points, superobbed by ``open_obs``);
    ``swaths``: one wide-swath pass a day. For tuning (truth_tune) and benchmarks, never for training.
    """
    from oceanda.observe import AlongTrackAltimetry, GappyField, InSituPoints, WideSwath

    check_choice("family", family, FAMILIES)
    ssh_std = float(library["ssh"].std())
    if family == "tracks":
        return AlongTrackAltimetry(sigma=0.1 * ssh_std).observe(truth, rng, days=np.arange(truth.sizes["time"]))
    if family == "clouds":
        return GappyField(var="ssh", sigma=0.1 * ssh_std).observe(truth, rng)
    if family == "points":
        return InSituPoints(n_profiles=20, var="psi", sigma=0.1 * float(library["psi"].std())).observe(truth, rng)
    return WideSwath(var="ssh", sigma=0.1 * ssh_std).observe(truth, rng)
