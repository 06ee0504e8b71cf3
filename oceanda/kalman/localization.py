"""Distance-based localisation for the LETKF (R-localisation) and its tapers.

Radius convention. ``radius`` is the half-width ``c`` of the Gaspari-Cohn function (Gaspari &
Cohn 1999, eq. 4.10): the taper is 1 at distance 0, about 0.21 at ``c`` and exactly 0 beyond ``2c``.
DAPPER's ``loc_rad`` is the distance where the taper equals exp(-1/2); the two are related by
``c = 1.82 * loc_rad`` (1.82 ~ sqrt(10/3)), so ``radius_from_dapper(loc_rad)`` converts.
The Gaussian taper exp(-r^2 / (2 L^2)) uses the matching length ``L = c / 1.82`` and is cut at
``2c`` (where it is 1e-3); the boxcar is 1 up to ``c`` and 0 beyond. In R-localisation the taper
multiplies the inverse observation error variance of each observation in each local analysis.

Distances: great-circle kilometres on lat/lon (degrees), Euclidean on grid coordinates (km or
index units) and Euclidean on periodic domains (each axis wraps at its ``period``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from oceanda.grid import EARTH_RADIUS_KM, great_circle_km  # noqa: F401  (re-exported by oceanda.kalman)
#: c = DAPPER_GC_FACTOR * loc_rad (DAPPER's tapers equal exp(-1/2) at loc_rad).
DAPPER_GC_FACTOR = 1.82
TAPERS = ("gaspari_cohn", "gaussian", "boxcar")
#: The taper used unless one is named: Gaspari-Cohn (compact support, smooth).
DEFAULT_TAPER = TAPERS[0]
METRICS = ("euclidean", "periodic", "great_circle")


def radius_from_dapper(loc_rad: float) -> float:
    """Half-width ``c`` equivalent to DAPPER's ``loc_rad``.

    Parameters
    ----------
    loc_rad : DAPPER's localisation radius (where the taper is exp(-1/2))

    Returns
    -------
    float
    """
    return DAPPER_GC_FACTOR * float(loc_rad)


def radius_to_dapper(radius: float) -> float:
    """DAPPER's ``loc_rad`` equivalent to the half-width ``c``.

    Parameters
    ----------
    radius : Gaspari-Cohn half-width ``c``

    Returns
    -------
    float
    """
    return float(radius) / DAPPER_GC_FACTOR


def gaspari_cohn(r: np.ndarray, c: float) -> np.ndarray:
    """Gaspari-Cohn 5th-order piecewise rational taper, half-width ``c`` (0 beyond 2c).

    Parameters
    ----------
    r : distances
    c : half-width (same units as ``r``)

    Returns
    -------
    numpy.ndarray: taper values in [0, 1], shaped like ``r``
    """
    z = np.abs(np.asarray(r, dtype=np.float64)) / float(c)
    out = np.zeros_like(z)
    a = z <= 1.0
    za = z[a]
    out[a] = -0.25 * za**5 + 0.5 * za**4 + 0.625 * za**3 - (5.0 / 3.0) * za**2 + 1.0
    b = (z > 1.0) & (z < 2.0)
    zb = z[b]
    out[b] = (zb**5) / 12.0 - 0.5 * zb**4 + 0.625 * zb**3 + (5.0 / 3.0) * zb**2 - 5.0 * zb + 4.0 - (2.0 / 3.0) / zb
    return np.clip(out, 0.0, 1.0)


def gaussian_taper(r: np.ndarray, c: float) -> np.ndarray:
    """exp(-r^2 / (2 L^2)) with L = c / 1.82, cut to zero beyond 2c.

    Parameters
    ----------
    r : distances
    c : Gaspari-Cohn-equivalent half-width (same units as ``r``)

    Returns
    -------
    numpy.ndarray: taper values, shaped like ``r``
    """
    r = np.abs(np.asarray(r, dtype=np.float64))
    length = float(c) / DAPPER_GC_FACTOR
    return np.where(r < 2.0 * c, np.exp(-0.5 * (r / length) ** 2), 0.0)


def boxcar_taper(r: np.ndarray, c: float) -> np.ndarray:
    """1 up to distance c, 0 beyond.

    Parameters
    ----------
    r : distances
    c : cut-off distance

    Returns
    -------
    numpy.ndarray: 1.0 or 0.0, shaped like ``r``
    """
    return (np.abs(np.asarray(r, dtype=np.float64)) <= c).astype(np.float64)


def taper(r: np.ndarray, radius: float, kind: str = DEFAULT_TAPER) -> np.ndarray:
    """Evaluate the named taper (``gaspari_cohn``, ``gaussian`` or ``boxcar``) at distances ``r``.

    Parameters
    ----------
    r : distances
    radius : half-width ``c`` (> 0)
    kind : taper name (aliases ``gc``, ``gauss``, ``step``)

    Returns
    -------
    numpy.ndarray: taper values, shaped like ``r``
    """
    if not radius > 0:
        raise ValueError(f"localisation radius must be > 0, got {radius}")
    if kind in ("gaspari_cohn", "gc", "GC"):
        return gaspari_cohn(r, radius)
    if kind in ("gaussian", "gauss"):
        return gaussian_taper(r, radius)
    if kind in ("boxcar", "step"):
        return boxcar_taper(r, radius)
    raise ValueError(f"unknown taper '{kind}'; expected one of {TAPERS}")


def pairwise_distances(a: np.ndarray, b: np.ndarray, metric: str = "euclidean",
                       period: Sequence[float | None] | None = None) -> np.ndarray:
    """Distances ``[len(a), len(b)]`` between points ``a [na, d]`` and ``b [nb, d]``.

    ``great_circle`` expects columns (lat, lon) in degrees and returns km; ``periodic`` wraps
    axis ``i`` at ``period[i]`` (``None`` = not periodic along that axis).

    Parameters
    ----------
    a : points ``[na, d]``
    b : points ``[nb, d]``
    metric : ``euclidean``, ``periodic`` or ``great_circle``
    period : period of each axis for ``periodic`` (None = not periodic)

    Returns
    -------
    numpy.ndarray: distances ``[na, nb]``
    """
    a = np.atleast_2d(np.asarray(a, dtype=np.float64))
    b = np.atleast_2d(np.asarray(b, dtype=np.float64))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"points of dimension {a.shape[1]} and {b.shape[1]} cannot be compared")
    if metric == "great_circle":
        return great_circle_km(a[:, None, 0], a[:, None, 1], b[None, :, 0], b[None, :, 1])
    d = np.abs(a[:, None, :] - b[None, :, :])
    if metric == "periodic":
        if period is None:
            raise ValueError("metric 'periodic' needs the domain period along each axis")
        for i, per in enumerate(period):
            if per is not None:
                d[..., i] = np.minimum(d[..., i] % per, per - d[..., i] % per)
    elif metric != "euclidean":
        raise ValueError(f"unknown metric '{metric}'; expected one of {METRICS}")
    return np.sqrt((d**2).sum(-1))


@dataclass
class LocalWeights:
    """Padded local observation lists: analysis g uses obs ``index[g, :count[g]]`` with taper ``weight``."""

    index: np.ndarray  # [M, K] int, padded with 0
    weight: np.ndarray  # [M, K] float, 0 on padding
    count: np.ndarray  # [M]


class Localizer:
    """Where the state's grid points are and how far an observation reaches.

    ``coords [G, d]`` are the locations of the ``G`` horizontal points (for a state of ``C``
    channels the flat state index ``c * G + g`` sits at point ``g``, the layout of
    ``fields.to_array`` flattened). ``radius`` is the Gaspari-Cohn half-width ``c`` in the units
    of ``metric`` (km for ``great_circle``; coords then are (lat, lon) in degrees); see the module
    docstring. ``groups [G]`` (optional) batches points into analysis groups sharing one local
    analysis at the group's centre (DAPPER's ``batch_shape``); default: one analysis per point.
    """

    def __init__(self, coords: np.ndarray, radius: float, taper: str = DEFAULT_TAPER,
                 metric: str = "euclidean", period: Sequence[float | None] | None = None,
                 groups: np.ndarray | None = None):
        c = np.asarray(coords, dtype=np.float64)
        self.coords = c[:, None] if c.ndim == 1 else c
        if metric not in METRICS:
            raise ValueError(f"unknown metric '{metric}'; expected one of {METRICS}")
        if metric == "great_circle" and self.coords.shape[1] != 2:
            raise ValueError("metric 'great_circle' needs coords as (lat, lon) columns in degrees")
        if metric == "periodic" and (period is None or len(period) != self.coords.shape[1]):
            raise ValueError("metric 'periodic' needs one period (or None) per coordinate axis")
        self.radius = float(radius)
        self.taper = taper
        self.metric = metric
        self.period = None if period is None else list(period)
        globals()["taper"](np.zeros(1), self.radius, taper)  # validate the name and radius now
        G = self.coords.shape[0]
        self.groups = np.arange(G) if groups is None else np.asarray(groups, dtype=np.int64)
        if self.groups.shape != (G,):
            raise ValueError(f"groups of shape {self.groups.shape}; expected ({G},)")
        _, self.groups = np.unique(self.groups, return_inverse=True)
        M = int(self.groups.max()) + 1
        order = np.argsort(self.groups, kind="stable")
        sizes = np.bincount(self.groups, minlength=M)
        S = int(sizes.max())
        pos = np.arange(G) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        members = np.full((M, S), -1, dtype=np.int64)
        members[self.groups[order], pos] = order
        self.group_members = members  # [M, S], -1 = padding
        self.analysis_coords = self.coords if groups is None else self._group_centres(members)
        self._cache: tuple[np.ndarray, LocalWeights] | None = None

    def _group_centres(self, members: np.ndarray) -> np.ndarray:
        valid = members >= 0
        pts = self.coords[np.where(valid, members, 0)]  # [M, S, d]
        out = np.empty((members.shape[0], self.coords.shape[1]))
        for i in range(self.coords.shape[1]):
            v = np.where(valid, pts[..., i], np.nan)
            per = None
            if self.metric == "periodic":
                per = self.period[i]  # type: ignore[index]
            elif self.metric == "great_circle" and i == 1:
                per = 360.0
            if per is None:
                out[:, i] = np.nanmean(v, axis=1)
            else:
                ang = 2 * np.pi * v / per
                m = np.arctan2(np.nanmean(np.sin(ang), 1), np.nanmean(np.cos(ang), 1))
                out[:, i] = (m % (2 * np.pi)) * per / (2 * np.pi)
        return out

    @property
    def n_points(self) -> int:
        return self.coords.shape[0]

    @property
    def n_analyses(self) -> int:
        return self.analysis_coords.shape[0]

    def local_weights(self, obs_coords: np.ndarray, chunk: int = 2048) -> LocalWeights:
        """Taper weight of every observation for every analysis point, kept only where > 0 (padded).

        The last result is cached: a fixed observing network costs nothing after its first cycle.

        Parameters
        ----------
        obs_coords : observation locations ``[p, d]`` (or ``[p]``)
        chunk : analysis points per distance batch (memory bound)

        Returns
        -------
        LocalWeights
        """
        obs_coords = np.asarray(obs_coords, dtype=np.float64)
        if obs_coords.ndim == 1:
            obs_coords = obs_coords[:, None]
        cached = self._cache
        if cached is not None and cached[0].shape == obs_coords.shape and np.array_equal(cached[0], obs_coords):
            return cached[1]
        lw = self._local_weights(obs_coords, chunk)
        self._cache = (obs_coords.copy(), lw)
        return lw

    def _local_weights(self, obs_coords: np.ndarray, chunk: int) -> LocalWeights:
        M, p = self.n_analyses, obs_coords.shape[0]
        reach = self.radius if self.taper in ("boxcar", "step") else 2.0 * self.radius
        rows, cols, ws = [], [], []
        for s in range(0, M, chunk):
            D = pairwise_distances(self.analysis_coords[s:s + chunk], obs_coords, self.metric, self.period)
            r, c = np.nonzero(D <= reach)
            w = taper(D[r, c], self.radius, self.taper)
            keep = w > 0
            rows.append(r[keep] + s)
            cols.append(c[keep])
            ws.append(w[keep])
        r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        c = np.concatenate(cols) if cols else np.zeros(0, np.int64)
        w = np.concatenate(ws) if ws else np.zeros(0)
        count = np.bincount(r, minlength=M)
        K = max(int(count.max()) if p and r.size else 0, 1)
        pos = np.arange(r.size) - np.repeat(np.cumsum(count) - count, count)
        index = np.zeros((M, K), dtype=np.int64)
        weight = np.zeros((M, K))
        index[r, pos] = c
        weight[r, pos] = w
        return LocalWeights(index=index, weight=weight, count=count)

    def obs_coords_of_state(self, state_index: np.ndarray) -> np.ndarray:
        """Locations of observations that sample flat state indices directly.

        Parameters
        ----------
        state_index : flat state indices ``[p]``

        Returns
        -------
        numpy.ndarray: locations ``[p, d]``
        """
        idx = np.asarray(state_index, dtype=np.int64)
        return self.coords[idx % self.n_points]


def block_groups(shape: tuple[int, int], block: int | tuple[int, int]) -> np.ndarray:
    """Group ids of a ``(Y, X)`` grid cut into ``block x block`` tiles (edge tiles may be smaller).

    Parameters
    ----------
    shape : grid shape ``(Y, X)``
    block : tile side, or ``(by, bx)``

    Returns
    -------
    numpy.ndarray: group id of each flattened grid point ``[Y * X]``
    """
    by, bx = (block, block) if isinstance(block, int) else block
    Y, X = shape
    iy, ix = np.meshgrid(np.arange(Y) // by, np.arange(X) // bx, indexing="ij")
    return (iy * (-(-X // bx)) + ix).ravel()


def grid_localizer(y: np.ndarray, x: np.ndarray, radius: float, *, taper: str = DEFAULT_TAPER,
                   period: tuple[float | None, float | None] | None = None, block: int | tuple[int, int] = 1,
                   lat: np.ndarray | None = None, lon: np.ndarray | None = None) -> Localizer:
    """Localizer for a ``(Y, X)`` grid with 1-D coordinates ``y``, ``x`` (e.g. km).

    With ``lat``/``lon`` (2-D, degrees) distances are great-circle km; else Euclidean in the units
    of ``y``/``x``, periodic along axes whose ``period`` is given. ``block`` batches tiles of points.

    Parameters
    ----------
    y, x : 1-D grid coordinates
    radius : taper half-width ``c`` (units of y/x, km with lat/lon)
    taper : taper name
    period : period of the (y, x) axes (None = not periodic)
    block : tile side (or ``(by, bx)``) of points sharing one analysis
    lat, lon : 2-D cell latitudes/longitudes in degrees (great-circle distances)

    Returns
    -------
    Localizer
    """
    Y, X = len(y), len(x)
    groups = None if block in (1, (1, 1)) else block_groups((Y, X), block)
    if lat is not None and lon is not None:
        coords = np.c_[np.asarray(lat, float).ravel(), np.asarray(lon, float).ravel()]
        return Localizer(coords, radius, taper, "great_circle", groups=groups)
    yy, xx = np.meshgrid(np.asarray(y, float), np.asarray(x, float), indexing="ij")
    coords = np.c_[yy.ravel(), xx.ravel()]
    if period is not None and any(p is not None for p in period):
        return Localizer(coords, radius, taper, "periodic", period=list(period), groups=groups)
    return Localizer(coords, radius, taper, "euclidean", groups=groups)


def ring_localizer(n: int, radius: float, taper: str = DEFAULT_TAPER) -> Localizer:
    """Localizer on a periodic ring of ``n`` points one unit apart (Lorenz-96); radius in grid units.

    Parameters
    ----------
    n : number of points on the ring
    radius : taper half-width in grid units
    taper : taper name

    Returns
    -------
    Localizer
    """
    return Localizer(np.arange(n, dtype=np.float64)[:, None], radius, taper, metric="periodic", period=[float(n)])


#: ``estimate_radius`` returns this many e-folding distances of the ensemble's spatial correlation, times
#: sqrt(N) / 8 for ``N`` members, clipped to [1, 3] (see :func:`estimate_radius` for why).
RADIUS_PER_EFOLDING = (1.0, 3.0)
#: Reference points and target points sampled by :func:`correlation_e_folding` (bounded cost on large grids).
CORRELATION_SAMPLES = (256, 10000)


def correlation_e_folding(anomalies: np.ndarray, coords: np.ndarray, metric: str = "euclidean",
                          period: Sequence[float | None] | None = None, rng: int | np.random.Generator = 0
                          ) -> tuple[float, np.ndarray, np.ndarray]:
    """Distance where the mean correlation of the ensemble's anomalies falls to 1/e.

    Correlations between a random sample of reference points and (a sample of) all points, averaged
    in distance bins one grid spacing wide; the 1/e crossing is interpolated linearly between the
    bins that bracket it. Points with no variance or NaN (land) are left out.

    Parameters
    ----------
    anomalies : ``[N, G]`` one channel of the ensemble (any centring; it is re-centred)
    coords, metric, period : the ``G`` points and their distance (:func:`pairwise_distances`)
    rng : seed or generator of the point samples

    Returns
    -------
    ``(e_folding, bin_distance, bin_correlation)``: the distance (units of the metric; the largest
    binned distance if the correlation never drops to 1/e) and the binned curve
    """
    g = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    A = np.asarray(anomalies, dtype=np.float64)
    finite = np.isfinite(A).all(axis=0)
    ok = np.flatnonzero(finite & (np.std(np.where(finite, A, 0.0), axis=0) > 0))
    if A.shape[0] < 3 or ok.size < 2:
        raise ValueError(f"{A.shape[0]} member(s) on {ok.size} varying point(s); expected >= 3 members and >= 2 points")
    nref, ntarget = CORRELATION_SAMPLES
    ref = np.sort(g.choice(ok, size=min(nref, ok.size), replace=False))
    tgt = np.union1d(ref, g.choice(ok, size=min(ntarget, ok.size), replace=False))
    Z = A[:, tgt] - A[:, tgt].mean(axis=0)
    Z /= np.sqrt(np.mean(Z * Z, axis=0))
    corr = (Z[:, np.searchsorted(tgt, ref)].T @ Z) / A.shape[0]  # [nref, ntarget]
    pts = np.asarray(coords, dtype=np.float64)
    pts = pts[:, None] if pts.ndim == 1 else pts
    D = pairwise_distances(pts[ref], pts[tgt], metric, period)
    step = float(np.median(np.where(D > 0, D, np.inf).min(axis=1)))
    k = np.rint(D / step).astype(np.int64).ravel()
    count = np.bincount(k)
    keep = count > 0
    dist = (np.bincount(k, D.ravel()) / np.maximum(count, 1))[keep]
    mean = (np.bincount(k, corr.ravel()) / np.maximum(count, 1))[keep]
    below = np.flatnonzero(mean < np.exp(-1.0))
    if below.size == 0:
        return float(dist[-1]), dist, mean
    j = int(below[0])
    if j == 0:
        return float(dist[0]), dist, mean
    c0, c1 = mean[j - 1], mean[j]
    return float(dist[j - 1] + (c0 - np.exp(-1.0)) / (c0 - c1) * (dist[j] - dist[j - 1])), dist, mean


def estimate_radius(anomalies: Sequence[np.ndarray], coords: np.ndarray, metric: str = "euclidean",
                    period: Sequence[float | None] | None = None, rng: int | np.random.Generator = 0,
                    members: int | None = None) -> tuple[float, float]:
    """A Gaspari-Cohn half-width from the ensemble itself: ``(radius, e_folding)``.

    Why: a localisation radius is a property of the prior's correlations and of the ensemble's size,
    both of which the ensemble shows, so a user on a new grid need not know one. ``e_folding`` is
    the median over the channels given (``anomalies``: ``[N, G]`` each, e.g. the observed ones) of
    :func:`correlation_e_folding`; the radius is ``f * e_folding`` with ``f = sqrt(N) / 8`` clipped
    to :data:`RADIUS_PER_EFOLDING` ([1, 3]): spurious correlations of ``N`` members are ~1/sqrt(N), so
    a larger ensemble can be trusted further out. The factor's two ends come from the radii tuned
    on the QG sample's tuning truth (``tuned.json``): there the SSH e-folding is 43 km, so 20 members
    (the cycled LETKF, tuned 40 km) get 43 km and the 408-state library (EnOI, tuned 100 km) gets
    109 km; on the evaluation truth ``eval_1`` that EnOI scores RMSE/climatology 0.803 against 0.805
    with the tuned 100 km (``oceanda enkf --method enoi --periodic`` without ``--loc-radius``).

    Parameters
    ----------
    anomalies : one ``[N, G]`` array per channel
    coords, metric, period : the grid points and their distance
    rng : seed of the point samples
    members : ``N``, the size of the ensemble the radius is for (default: the rows of ``anomalies``)

    Returns
    -------
    ``(radius, e_folding)`` in the units of the metric (km for great-circle)
    """
    g = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    lengths = [correlation_e_folding(a, coords, metric, period, g)[0] for a in anomalies]
    if not lengths:
        raise ValueError("no channel to estimate a correlation length from")
    e_folding = float(np.median(lengths))
    n = np.asarray(anomalies[0]).shape[0] if members is None else int(members)
    lo, hi = RADIUS_PER_EFOLDING
    return float(np.clip(np.sqrt(n) / 8.0, lo, hi) * e_folding), e_folding
