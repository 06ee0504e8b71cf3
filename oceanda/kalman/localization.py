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

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.spatial import cKDTree

from oceanda.errors import ConfigurationError
from oceanda.grid import EARTH_RADIUS_KM, great_circle_km  # noqa: F401  (re-exported by oceanda.kalman)
from oceanda.settings import check_number
#: c = DAPPER_GC_FACTOR * loc_rad (DAPPER's tapers equal exp(-1/2) at loc_rad).
DAPPER_GC_FACTOR = 1.82
TAPERS = ("gaspari_cohn", "gaussian", "boxcar")
#: The taper used unless one is named: Gaspari-Cohn (compact support, smooth).
DEFAULT_TAPER = TAPERS[0]
METRICS = ("euclidean", "periodic", "great_circle")
#: Observing patterns whose local weights a Localizer keeps (least recently used dropped), and the bytes they
#: may hold (the latest is always kept): altimetry repeats its tracks every few days, a mooring array never moves.
CACHE_ENTRIES = 16
CACHE_BYTES = 512 * 2**20
#: The tree's ball is widened by this relative margin: its own rounding can then never drop a pair that the
#: exact distance (computed afterwards with the brute-force arithmetic) keeps.
BALL_MARGIN = 1e-9


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


def taper_reach(radius: float, kind: str) -> float:
    """Distance beyond which a taper of half-width ``radius`` is 0: ``c`` for the boxcar, else ``2c``."""
    return radius if kind in ("boxcar", "step") else 2.0 * radius


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


def _pack(r: np.ndarray, c: np.ndarray, w: np.ndarray, M: int, p: int) -> LocalWeights:
    """Padded lists from pairs ``(r, c, w)`` sorted by analysis ``r`` then observation ``c``."""
    count = np.bincount(r, minlength=M)
    K = max(int(count.max()) if p and r.size else 0, 1)
    pos = np.arange(r.size) - np.repeat(np.cumsum(count) - count, count)
    index = np.zeros((M, K), dtype=np.int64)
    weight = np.zeros((M, K))
    index[r, pos] = c
    weight[r, pos] = w
    return LocalWeights(index=index, weight=weight, count=count)


def _tree_space(pts: np.ndarray, metric: str, period: Sequence[float | None] | None
                ) -> tuple[np.ndarray, np.ndarray | None]:
    """Coordinates in which the taper's reach is a Euclidean ball, and the tree's ``boxsize``.

    Great-circle: 3-D unit-sphere points (the chord ``2 sin(s / 2R)`` grows with the arc ``s``, so
    the chord ball is exactly the arc ball). Periodic: coordinates wrapped into ``[0, period)``,
    ``boxsize`` 0 on the axes that do not wrap.
    """
    if metric == "great_circle":
        lat, lon = np.radians(pts[:, 0]), np.radians(pts[:, 1])
        return np.c_[np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], None
    if metric != "periodic":
        return pts, None
    out = pts.copy()
    box = np.zeros(pts.shape[1])
    for i, per in enumerate(period):  # type: ignore[arg-type]
        if per is not None:
            v = np.mod(out[:, i], per)
            out[:, i] = np.where((v >= per) | (v < 0), 0.0, v)  # -1e-300 % per rounds to per
            box[i] = per
    return out, box


def _ball_tree(pts: np.ndarray, metric: str, period: Sequence[float | None] | None) -> cKDTree:
    """A KD-tree of ``pts`` in the space of :func:`_tree_space`."""
    space, box = _tree_space(pts, metric, period)
    return cKDTree(space, boxsize=box)


def _pair_distances(a: np.ndarray, b: np.ndarray, r: np.ndarray, c: np.ndarray, metric: str,
                    period: Sequence[float | None] | None) -> np.ndarray:
    """Distances of the pairs ``(a[r[k]], b[c[k]])``, bit for bit those of :func:`pairwise_distances`."""
    if metric == "great_circle":
        return great_circle_km(a[r, 0], a[r, 1], b[c, 0], b[c, 1])
    total = None
    for i in range(a.shape[1]):
        d = np.abs(np.ascontiguousarray(a[:, i])[r] - np.ascontiguousarray(b[:, i])[c])
        per = period[i] if metric == "periodic" else None  # type: ignore[index]
        if per is not None:
            m = d % per
            d = np.minimum(m, per - m)
        total = d * d if total is None else total + d * d
    return np.sqrt(total)


def taper_pairs(a: np.ndarray, b: np.ndarray, radius: float, kind: str = DEFAULT_TAPER, metric: str = "euclidean",
                period: Sequence[float | None] | None = None, a_tree: cKDTree | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pairs of points ``a [na, d]`` and ``b [nb, d]`` whose taper weight is > 0: ``(r, c, w)``, row-major.

    Why: ``taper(pairwise_distances(a, b))`` costs ``na x nb`` distances (and memory) to find the few pairs
    within reach; a KD-tree finds them in ``O((na + nb) log nb + pairs)``. The tree's ball is a little
    wider than the reach (:data:`BALL_MARGIN`) and the pairs' distances are then computed with the
    arithmetic of :func:`pairwise_distances`, so ``w`` equals the non-zero entries of the dense taper
    bit for bit, in the same (row-major) order. ``a_tree``: a tree of ``a`` already built (:func:`_ball_tree`).

    Parameters
    ----------
    a, b : points (``great_circle``: (lat, lon) degrees)
    radius, kind : the taper's half-width and name
    metric, period : as :func:`pairwise_distances`

    Returns
    -------
    ``(r, c, w)``: int64 indices into ``a`` and ``b`` and the taper weights
    """
    reach = taper_reach(radius, kind)
    if len(a) == 0 or len(b) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    ta = _ball_tree(a, metric, period) if a_tree is None else a_tree
    tb = _ball_tree(b, metric, period)
    if metric == "great_circle":
        ball = 2.0 * np.sin(min(reach / (2.0 * EARTH_RADIUS_KM), np.pi / 2)) + BALL_MARGIN
    else:
        scale = float(np.abs(ta.data).max(initial=0.0)) + float(np.abs(tb.data).max(initial=0.0))
        ball = reach + BALL_MARGIN * (reach + scale)
    if not np.isfinite(ball):  # every pair
        r, c = np.divmod(np.arange(len(a) * len(b), dtype=np.int64), len(b))
        w = taper(_pair_distances(a, b, r, c, metric, period), radius, kind)
        return r[w > 0], c[w > 0], w[w > 0]
    res = ta.sparse_distance_matrix(tb, ball, output_type="ndarray")
    # Row-major order (as the brute force finds them) by a counting sort: scipy's CSR conversion.
    m = sp.coo_matrix((np.ones(res.size, np.int8), (res["i"], res["j"])), shape=(len(a), len(b))).tocsr()
    m.sort_indices()
    r, c = np.repeat(np.arange(len(a)), np.diff(m.indptr)), m.indices.astype(np.int64)
    w = taper(_pair_distances(a, b, r, c, metric, period), radius, kind)  # every taper is 0 beyond the reach
    keep = w > 0
    return r[keep], c[keep], w[keep]


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
                 groups: np.ndarray | None = None, grid_shape: tuple[int, int] | None = None):
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
        self._cache: OrderedDict[tuple, tuple[np.ndarray, LocalWeights]] = OrderedDict()
        self._trees: dict[str, Any] = {}
        if grid_shape is not None and (len(grid_shape) != 2 or int(grid_shape[0]) * int(grid_shape[1]) != G):
            raise ValueError(f"grid_shape {tuple(grid_shape)} does not hold the {G} points")
        #: ``(Y, X)`` when the points are a logical grid in C order (coords columns along y then x):
        #: what weight interpolation (:meth:`weight_interpolation`) needs; None for scattered points.
        self.grid_shape = None if grid_shape is None else (int(grid_shape[0]), int(grid_shape[1]))
        self._interpolations: dict[tuple[int, int], WeightInterpolation | None] = {}
        self._steps: tuple[float, float] | None = None

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

    def local_weights(self, obs_coords: np.ndarray, chunk: int = 2048, method: str = "auto") -> LocalWeights:
        """Taper weight of every observation for every analysis point, kept only where > 0 (padded).

        Why a KD-tree: computing every point-to-observation distance was 74-82 % of an LETKF analysis
        and grows as points x observations; the tree (:func:`taper_pairs`) finds the pairs within reach
        in ``O((M + p) log p + pairs)`` and the exact distances of those pairs are then computed with the
        brute-force arithmetic, so both methods give the same obs lists and weights, bit for bit.
        Results are cached per observing pattern (:data:`CACHE_ENTRIES` patterns, :data:`CACHE_BYTES`):
        a fixed or repeating network costs nothing after its first cycle.

        Parameters
        ----------
        obs_coords : observation locations ``[p, d]`` (or ``[p]``)
        chunk : analysis points per distance batch of the brute-force method (memory bound)
        method : ``tree`` or ``auto`` (the tree unless the reach is infinite), ``brute`` (every distance)

        Returns
        -------
        LocalWeights
        """
        if method not in ("auto", "tree", "brute"):
            raise ValueError(f"unknown method '{method}'; expected 'auto', 'tree' or 'brute'")
        obs_coords = np.asarray(obs_coords, dtype=np.float64)
        if obs_coords.ndim == 1:
            obs_coords = obs_coords[:, None]
        key = (method, obs_coords.shape, hashlib.blake2b(np.ascontiguousarray(obs_coords).tobytes(), digest_size=16).digest())
        hit = self._cache.get(key)
        if hit is not None and np.array_equal(hit[0], obs_coords):
            self._cache.move_to_end(key)
            return hit[1]
        reach = self.reach
        if method == "brute" or not np.isfinite(reach):  # an infinite ball: every pair, the tree adds nothing
            lw = self._local_weights(obs_coords, chunk)
        else:
            lw = self._tree_weights(obs_coords)
        self._remember(key, obs_coords.copy(), lw)
        return lw

    def clear_cache(self) -> None:
        """Forget the cached local weights (e.g. to time a cold analysis)."""
        self._cache.clear()

    @property
    def reach(self) -> float:
        """Distance beyond which every taper weight is 0 (``c`` for the boxcar, else ``2c``)."""
        return taper_reach(self.radius, self.taper)

    def _remember(self, key: tuple, coords: np.ndarray, lw: LocalWeights) -> None:
        """Keep ``lw`` for this pattern; forget the least recently used beyond the entry and byte bounds."""
        self._cache[key] = (coords, lw)
        size = lambda e: e[0].nbytes + e[1].index.nbytes + e[1].weight.nbytes + e[1].count.nbytes  # noqa: E731
        while len(self._cache) > 1 and (len(self._cache) > CACHE_ENTRIES
                                        or sum(size(e) for e in self._cache.values()) > CACHE_BYTES):
            self._cache.popitem(last=False)

    def _tree_weights(self, obs_coords: np.ndarray) -> LocalWeights:
        """The pairs the tree finds (:func:`taper_pairs`; the tree of the analysis points is kept)."""
        if "analysis" not in self._trees:
            self._trees["analysis"] = _ball_tree(self.analysis_coords, self.metric, self.period)
        r, c, w = taper_pairs(self.analysis_coords, obs_coords, self.radius, self.taper, self.metric, self.period,
                              a_tree=self._trees["analysis"])
        return _pack(r, c, w, self.n_analyses, obs_coords.shape[0])

    def _local_weights(self, obs_coords: np.ndarray, chunk: int) -> LocalWeights:
        """The brute-force reference: every point-to-observation distance, ``chunk`` points at a time."""
        M, p = self.n_analyses, obs_coords.shape[0]
        reach = self.reach
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
        return _pack(r, c, w, M, p)

    def grid_steps(self) -> tuple[float, float]:
        """Mean distance (units of the metric: km on lat/lon) between neighbours along y and along x.

        Returns
        -------
        ``(dy, dx)``; ``inf`` along an axis of one point
        """
        Y, X = self._require_grid()
        if self._steps is not None:
            return self._steps
        g = np.arange(self.n_points).reshape(Y, X)
        out = []
        for a, b in ((g[:-1].ravel(), g[1:].ravel()), (g[:, :-1].ravel(), g[:, 1:].ravel())):
            d = _pair_distances(self.coords, self.coords, a, b, self.metric, self.period)
            out.append(float(d.mean()) if d.size else np.inf)
        self._steps = (out[0], out[1])
        return self._steps

    def grid_wraps(self) -> tuple[bool, bool]:
        """Whether the grid closes on itself along y and x: a periodic axis, or a global longitude circle.

        On great-circle grids x wraps when the gap from the last column back to the first is at most
        1.5 mean column steps (a global lat/lon grid); y never does (the poles are not neighbours).

        Returns
        -------
        ``(wraps_y, wraps_x)``
        """
        Y, X = self._require_grid()
        if self.metric == "periodic":
            return tuple(p is not None for p in self.period)  # type: ignore[return-value, union-attr]
        if self.metric != "great_circle" or X < 3:
            return False, False
        g = np.arange(self.n_points).reshape(Y, X)
        gap = _pair_distances(self.coords, self.coords, g[:, -1], g[:, 0], self.metric, self.period)
        return False, bool(gap.mean() <= 1.5 * self.grid_steps()[1])

    def weight_spacing(self, spacing: Any = "auto") -> tuple[int, int]:
        """The grid steps ``(ky, kx)`` between the points whose LETKF transform is computed.

        ``auto``: ``k = max(1, floor(radius / 4 / step))`` along each axis (:meth:`grid_steps`; Yang et al.
        2009: the transform varies over the localisation radius, so a quarter of it loses little), and 1
        without a grid, with analysis groups (``block`` already coarsens) or on a ring. An integer or a
        pair is taken as given, capped so that each axis keeps two coarse points.

        Parameters
        ----------
        spacing : ``auto``, an integer >= 1 or ``(ky, kx)``

        Returns
        -------
        ``(ky, kx)``
        """
        if isinstance(spacing, str):
            if spacing != "auto":
                raise ConfigurationError(f"weight_spacing={spacing!r}; expected 'auto' or an integer >= 1")
            if self.grid_shape is None or self.n_analyses != self.n_points:
                return 1, 1
            ks = [max(1, int(np.floor(self.radius / 4.0 / s + 1e-9))) if np.isfinite(s) else 1 for s in self.grid_steps()]
        else:
            ks = list(spacing) if isinstance(spacing, (tuple, list)) else [spacing, spacing]
            for k in ks:
                check_number("weight_spacing", k, lo=1, integer=True)
            ks = [int(k) for k in ks]
            if len(ks) != 2:
                raise ConfigurationError(f"weight_spacing={spacing!r}; expected 'auto', an integer or a pair (ky, kx)")
            if ks != [1, 1] and (self.grid_shape is None or self.n_analyses != self.n_points):
                raise ConfigurationError(f"weight_spacing={spacing!r} needs a grid of single points (grid_localizer, "
                                         "block 1); expected weight_spacing=1 here")
        if ks == [1, 1]:
            return 1, 1
        wraps = self.grid_wraps()
        return tuple(min(k, max(1, n // 2 if w else n - 1)) for k, n, w in zip(ks, self.grid_shape, wraps))  # type: ignore

    def weight_interpolation(self, spacing: Any = "auto") -> WeightInterpolation | None:
        """The coarse analysis points and bilinear stencil of :func:`weight_grid`, cached; None at spacing 1.

        Parameters
        ----------
        spacing : as :meth:`weight_spacing`

        Returns
        -------
        WeightInterpolation or None
        """
        ks = self.weight_spacing(spacing)
        if ks == (1, 1):
            return None
        if ks not in self._interpolations:
            self._interpolations[ks] = weight_grid(self, ks)
        return self._interpolations[ks]

    def _require_grid(self) -> tuple[int, int]:
        if self.grid_shape is None:
            raise ValueError("this localizer's points are not a grid (no grid_shape)")
        return self.grid_shape

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


@dataclass
class WeightInterpolation:
    """Where LETKF transforms are computed (``localizer``: every ``spacing``-th grid point) and how they spread.

    The grid is cut into cells whose corners are coarse points; cell ``i`` holds the grid points
    ``points[i]`` (-1 = padding), its corners are the coarse points ``corners[i]`` (order
    ``(lo, lo), (lo, hi), (hi, lo), (hi, hi)`` in (y, x)) and ``weights[i, j, p]`` is the bilinear weight
    of corner ``j`` at point ``p`` (0 on padding). A point that is itself a coarse point has weight 1 there.
    """

    spacing: tuple[int, int]
    localizer: Localizer
    corners: np.ndarray  # [cells, 4] int
    points: np.ndarray  # [cells, P] int, -1 = padding
    weights: np.ndarray  # [cells, 4, P]


def _axis_stencil(n: int, k: int, wraps: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One axis of :func:`weight_grid`: coarse positions, each point's cell and weight of its upper corner,
    and each cell's lower and upper coarse index. Coarse points every ``k`` (the last point too unless the
    axis wraps, where the last cell closes back onto position 0)."""
    pos = np.arange(0, n, k)
    if not wraps and pos[-1] != n - 1:
        pos = np.r_[pos, n - 1]
    m, i = pos.size, np.arange(n)
    if wraps or m == 1:
        cell = np.minimum(i // k, m - 1)
        ends = np.r_[pos[1:], n]
        lo, hi = np.arange(m), (np.arange(m) + 1) % m
    else:
        cell = np.minimum(np.searchsorted(pos, i, side="right") - 1, m - 2)
        ends = pos[1:]
        lo, hi = np.arange(m - 1), np.arange(1, m)
    t = (i - pos[cell]) / (ends[cell] - pos[cell])
    return pos, cell, t, lo, hi


def weight_grid(localizer: Localizer, spacing: tuple[int, int]) -> WeightInterpolation:
    """The coarse points (every ``spacing`` grid steps, periodic where the grid wraps) and the bilinear stencil.

    Why (Yang, Kalnay, Hunt & Bowler 2009, QJRMS 135): the LETKF transform varies slowly over a
    localisation radius, so solving one local problem per coarse point and interpolating the N x N
    transforms costs ``1 / (ky kx)`` of the eigen-solves for an analysis within a few per cent.

    Parameters
    ----------
    localizer : a localizer with a ``grid_shape`` and one analysis per point
    spacing : ``(ky, kx)`` grid steps

    Returns
    -------
    WeightInterpolation
    """
    Y, X = localizer._require_grid()
    wy, wx = localizer.grid_wraps()
    py, cy, ty, ly, hy = _axis_stencil(Y, spacing[0], wy)
    px, cx, tx, lx, hx = _axis_stencil(X, spacing[1], wx)
    mx = px.size
    coarse = (py[:, None] * X + px[None, :]).ravel()
    sub = Localizer(localizer.coords[coarse], localizer.radius, localizer.taper, localizer.metric, localizer.period)
    nx_cells = lx.size
    a, b = np.divmod(np.arange(ly.size * nx_cells), nx_cells)
    corners = np.c_[ly[a] * mx + lx[b], ly[a] * mx + hx[b], hy[a] * mx + lx[b], hy[a] * mx + hx[b]]
    iy, ix = np.divmod(np.arange(Y * X), X)
    cid = cy[iy] * nx_cells + cx[ix]
    order = np.argsort(cid, kind="stable")
    sizes = np.bincount(cid, minlength=corners.shape[0])
    pos = np.arange(order.size) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    points = np.full((corners.shape[0], int(sizes.max())), -1, dtype=np.int64)
    points[cid[order], pos] = order
    u, v = ty[iy[order]], tx[ix[order]]
    weights = np.zeros((corners.shape[0], 4, points.shape[1]))
    for j, wj in enumerate(((1 - u) * (1 - v), (1 - u) * v, u * (1 - v), u * v)):
        weights[cid[order], j, pos] = wj
    return WeightInterpolation(spacing=tuple(spacing), localizer=sub, corners=corners, points=points,  # type: ignore
                               weights=weights)


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
    The localizer knows its ``grid_shape``, so the LETKF can compute its transforms on a coarser grid
    and interpolate them (``letkf(..., weight_spacing=)``, :meth:`Localizer.weight_spacing`).

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
        return Localizer(coords, radius, taper, "great_circle", groups=groups, grid_shape=(Y, X))
    yy, xx = np.meshgrid(np.asarray(y, float), np.asarray(x, float), indexing="ij")
    coords = np.c_[yy.ravel(), xx.ravel()]
    if period is not None and any(p is not None for p in period):
        return Localizer(coords, radius, taper, "periodic", period=list(period), groups=groups, grid_shape=(Y, X))
    return Localizer(coords, radius, taper, "euclidean", groups=groups, grid_shape=(Y, X))


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
