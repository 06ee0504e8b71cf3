"""Local mode: window posteriors blended into a field (the default on ocean grids).

Each analysis window (``size`` pixels, every ``stride``) is weighted against a library of windows
drawn from all library states and positions, using the observations in the window and its halo.
Window means are blended with a partition-of-unity taper, as LETKF blends local analyses.
Members are drawn with shared resampling noise: each window's candidates are ranked by their mean
anomaly and member j takes them at quantiles that vary smoothly across windows (a Gaussian copula),
so neighbouring windows pick alike-signed deviations and the blended members stay coherent while
every window keeps its own posterior law. The ensemble is recentred on
the weighted mean and its deviations scaled by ``spread_factor`` (1 = the model's spread;
:func:`calibrate_spread` estimates the factor from a tuning run).

A window library assumes the statistics are the same at every position (true in the doubly
periodic QG box); near coasts or across fronts they are not -- restrict the library's positions
with ``allowed`` there.

Own grids: on a non-periodic grid (lat/lon, curvilinear) windows stop at the edges (the last one ends
at the edge; a grid smaller than a window gets one window running past it) and the cells beyond are
NaN. Land (NaN in the library states) enters the encoders as zero (the channel mean) and, in the
observations, as unobserved (mask 0): never NaN into a network. Library windows all on land are left
out; weighted means and member draws use each candidate's ocean cells only, and the analysis is NaN on
land and only there (an ocean cell no candidate covers takes the library mean).

Engines: the dense engine (default when the library's window table fits in memory) does an analysis as
a few matrix products -- the search (:class:`~oceanda.analysis.search.WindowIndex`) gives every analysis
window the library windows holding ``keep_mass`` of its weight, one product ``weights [P, N] @ table
[N, C*size*size]`` gives every window mean (with land: two, of the zero-filled values and of the ocean
mask), per-window taper projections ``[N, C]`` precomputed once rank the candidates for the copula, and only
the M picked members' rows are read. The loop engine (``engine='loop'``) is the per-window gather of every
candidate window it replaced: kept as the reference and for libraries whose table does not fit.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

import oceanda.analysis.windows as W
from oceanda.analysis.library import Library
from oceanda.analysis.posterior import posterior_from_scores, quantile_indices
from oceanda.analysis.search import WindowIndex, query_tau
from oceanda.analysis.settings import LOCAL_KEEP_MASS, LOCAL_MAX_KEEP, PRECISIONS
from oceanda.contrastive.similarity import numpy_scores

#: Largest window table built (bytes; with land two tables of this size): larger libraries use the loop engine.
TABLE_MAX_BYTES = 2 << 30
#: Most candidate weights (analysis windows x library windows) the dense engine holds as ``[P, N]`` rows.
ROWS_MAX = 1 << 23
#: ``precision='fast'``: the window means' basis keeps all but this share of the window table's variance,
#: each variable standardised (bundled library: rank 275 of 768; analysis means within 4.6e-4-1.1e-3 rms and
#: 3.4e-3-9.7e-3 max of each variable's spread of the exact engine's means, RMSE the same to 3 digits; at
#: 1e-4, 3-4x those errors, which the reconstruction of an observed library state notices)
FAST_VARIANCE_TOL = 1e-5
#: ``precision='fast'``: where the CPU multiplies bfloat16 natively (AVX512_BF16 or AMX), the window means'
#: basis coefficients are averaged by a bfloat16 product with float32 sums (0.38 of the float32 product's
#: time on the bundled sample, AVX-512 BF16): each weight and coefficient rounded to 8 bits (2^-9 relative),
#: normalised by the rounded weights' own total, so every mean stays a convex combination. The copula's
#: projections, the weights of the picks and every member stay float32. ``OCEANDA_BF16=0`` turns it off,
#: ``=1`` on (on any CPU; slow without the instructions).
BF16_ENV = "OCEANDA_BF16"
#: Histogram bins of the fast engine's copula picks (its positions come from bounds: a wider range than the scores')
RANK_BINS = 2048


class WindowLibrary:
    """Every window of every library state at starts every ``stride`` pixels (optionally restricted).

    Entry ``k`` is window ``k % P`` of library sample ``k // P`` (``P`` positions per state).
    """

    def __init__(self, library: Library, spec: W.WindowSpec, stride: int | None = None,
                 allowed: np.ndarray | None = None):
        ny, nx = library.shape
        spec.check(ny, nx, library.source)
        self.library = library
        self.spec = spec
        self.stride = int(stride or spec.stride)
        self.iy, self.ix = W.positions(ny, nx, spec, self.stride, allowed)
        self.land = library.land  # [C, Y, X] or None
        #: library windows may hold NaN (land, or cells beyond a grid smaller than the window)
        self.has_nan = self.land is not None or (not spec.periodic and spec.size > min(ny, nx))
        if self.land is not None:  # windows all on land say nothing about the ocean
            ocean = (~self.land.all(axis=0))[None].astype(np.float32)
            sea = np.nan_to_num(W.extract(ocean, self.iy, self.ix, spec.size, 0, spec.periodic)).any(axis=(1, 2, 3))
            self.iy, self.ix = self.iy[sea], self.ix[sea]
        self.P = len(self.iy)
        self._views = None
        self._table: WindowTable | None | bool = False  # False: not built yet; None: does not fit
        self._climatology: np.ndarray | None = None
        if self.P == 0:
            raise ValueError("no allowed window position in the library")

    def __len__(self) -> int:
        return self.library.n * self.P

    def key(self, model_key: str) -> str:
        """Cache key of the window embeddings: the model's key plus the window geometry and positions.

        The positions enter as a hash: another ``allowed`` map (or land) with as many windows is
        another set of embeddings.

        Parameters
        ----------
        model_key : key identifying the model (its embeddings)

        Returns
        -------
        str
        """
        s = self.spec
        where = hashlib.blake2b(np.ascontiguousarray(np.stack([self.iy, self.ix]), dtype=np.int64).tobytes(),
                                digest_size=6).hexdigest()
        return f"{model_key}-win{s.size}-lib{self.stride}-{'p' if s.periodic else 'np'}-{self.P}-{where}"

    def state_windows(self, states: np.ndarray) -> np.ndarray:
        """``[T, C, Y, X]`` -> all library windows ``[T * P, C, size, size]`` (entry order).

        Parameters
        ----------
        states : ``[T, C, Y, X]`` library states

        Returns
        -------
        ``[T * P, C, size, size]`` windows
        """
        w = W.extract(states, self.iy, self.ix, self.spec.size, 0, self.spec.periodic)
        return w.reshape(-1, *w.shape[2:])

    def embeddings(self, embed_state: Callable[[np.ndarray], np.ndarray], model_key: str, cache_dir=None,
                   chunk: int = 64, quiet: bool = True) -> np.ndarray:
        """Window embeddings ``[len(self), ne]``, computed in chunks of library states and cached.

        Parameters
        ----------
        embed_state : maps windows ``[k, C, size, size]`` to embeddings ``[k, ne]``
        model_key : key of the model, for the cache
        cache_dir : cache directory (None: no cache)
        chunk : library states per chunk
        quiet : no progress bar

        Returns
        -------
        ``[len(self), ne]`` embeddings
        """
        return self.library.embeddings(lambda states: embed_state(self.state_windows(states)),
                                       key=self.key(model_key), cache_dir=cache_dir, chunk=chunk, quiet=quiet,
                                       desc="embedding library windows", rows_per_state=self.P)

    def windows(self, k: np.ndarray) -> np.ndarray:
        """Window states ``[len(k), C, size, size]`` of entries ``k``; reads only their library samples.

        Parameters
        ----------
        k : entry indices

        Returns
        -------
        ``[len(k), C, size, size]`` window states
        """
        k = np.asarray(k, dtype=np.int64)
        t, p = k // self.P, k % self.P
        cache = getattr(self.library, "_cache", None)
        if cache is not None and self.spec.periodic:  # windows are views of the padded in-memory states
            if self._views is None:
                from numpy.lib.stride_tricks import sliding_window_view

                padded = W.pad(cache, 0, self.spec.size, True)
                self._views = sliding_window_view(padded, (self.spec.size, self.spec.size), axis=(2, 3))
            return self._views[t, :, self.iy[p], self.ix[p]]
        uniq, inv = np.unique(t, return_inverse=True)
        states = self.library.read(uniq)
        if self.spec.periodic:
            return W.gather_wrapped(states, inv, self.iy[p], self.ix[p], self.spec.size)
        if self.spec.size > min(states.shape[-2:]):  # a grid smaller than the window: NaN beyond it
            states = W.pad(states, 0, self.spec.size, False)
        return W.gather(states, inv, self.iy[p], self.ix[p], self.spec.size)  # starts fit inside the grid

    def table(self) -> WindowTable | None:
        """The window table of the dense engine (built once), or None when it would not fit in memory.

        Fits: at most :data:`TABLE_MAX_BYTES` and half the memory still available (``io.available_memory``).
        """
        if self._table is False:
            from oceanda import io

            C = self.library.layout.n_channels
            nbytes = len(self) * C * self.spec.size ** 2 * 4 * (2 if self.has_nan else 1)
            fits = nbytes <= TABLE_MAX_BYTES and nbytes <= io.available_memory() // 2
            self._table = WindowTable.build(self) if fits else None
        return self._table

    @property
    def climatology(self) -> np.ndarray:
        """The library's mean state ``[C, Y, X]``: the analysis where no candidate window has ocean."""
        if self._climatology is None:
            self._climatology = self.library.mean_state()
        return self._climatology


@dataclass
class WindowTable:
    """Every library window as a float32 row ``[N, C*size*size]`` (entry order), with taper projections ``[N, C]``.

    With land (``ok`` not None) ``x`` holds the values with NaN set to 0 and ``ok`` their finite mask (0/1):
    finite-aware means are then ``(w @ x) / (w @ ok)``.
    """

    x: np.ndarray
    proj: np.ndarray
    ok: np.ndarray | None
    shape: tuple[int, int, int]  # (C, size, size)
    _lowrank: dict = field(default_factory=dict, repr=False)  # tol -> (mean, coeffs, basis): built once
    _rank: tuple | None = field(default=None, repr=False)  # rank_positions' rows and bounds: built once
    _bf16: dict = field(default_factory=dict, repr=False)  # tol -> lowrank's coefficients and ones, bfloat16

    @classmethod
    def build(cls, wlib: WindowLibrary, chunk: int = 64) -> WindowTable:
        """The table of ``wlib``, read in chunks of ``chunk`` library states."""
        s, C = wlib.spec.size, wlib.library.layout.n_channels
        D = C * s * s
        x = np.empty((len(wlib), D), np.float32)
        ok = np.empty((len(wlib), D), np.float32) if wlib.has_nan else None
        for a in range(0, wlib.library.n, chunk):
            idx = np.arange(a, min(a + chunk, wlib.library.n))
            rows = wlib.state_windows(wlib.library.read(idx)).reshape(-1, D).astype(np.float32)
            sl = slice(a * wlib.P, a * wlib.P + len(rows))
            if ok is not None:
                fin = np.isfinite(rows)
                ok[sl] = fin
                rows = np.where(fin, rows, np.float32(0))
            x[sl] = rows
        t1 = W.taper_1d(s, wlib.spec.stride)
        taper = (t1[:, None] * t1[None, :]).astype(np.float32)
        proj = np.einsum("kcyx,yx->kc", x.reshape(-1, C, s, s), taper)
        return cls(x, proj, ok, (C, s, s))

    def lowrank(self, tol: float = FAST_VARIANCE_TOL) -> tuple:
        """The rows in a basis keeping all but ``tol`` of their variance: ``x ~ mean + coeffs @ basis``.

        Why: every window mean is ``w @ x`` (``w`` summing to one) = ``mean + (w @ coeffs) @ basis``, a product
        ``r / D`` as costly. Built once per table (float64 Gram matrix of the centred rows, its eigenvectors).

        Returns
        -------
        tuple: ``mean`` ``[D]`` float32, ``coeffs`` ``[N, r + 2C]`` (a transposed view; then the centred taper projections and their
        squares, for the copula's ranking in the same product) and ``basis`` ``[r, D]`` as float32 torch tensors
        """
        if tol not in self._lowrank:
            from threadpoolctl import threadpool_limits

            with threadpool_limits(limits=1, user_api="blas"):  # the same basis whatever the BLAS threads (dask
                self._lowrank[tol] = self._basis(tol)  # workers run one, a notebook several: results identical)
        return self._lowrank[tol]

    def lowrank_bf16(self, tol: float = FAST_VARIANCE_TOL):
        """:meth:`lowrank`'s basis coefficients ``[r, N]`` and a row of ones (the weights' total), bfloat16, built once."""
        if tol not in self._bf16:
            import torch

            _, coeffs, basis = self.lowrank(tol)
            r = basis.shape[0]
            ones = torch.ones((1, coeffs.shape[0]), dtype=torch.float32)
            self._bf16[tol] = torch.cat([coeffs.T[:r], ones]).bfloat16().contiguous()
        return self._bf16[tol]

    def rank_positions(self, a, bins: int) -> tuple[np.ndarray, np.ndarray]:
        """The copula ranking score ``sum_c a[p, c] * proj[k, c]`` of every window ``p`` and entry ``k`` as a
        position in ``[0, bins - 1)``, as the factors of the product ``coef [P, C + 1] @ rows [C + 1, N]``.

        Why from bounds: mapping each window's score range onto the histogram bins of
        :func:`ranked_quantiles_rows32` needs its minimum and maximum; with ``a > 0`` the sums of the
        projections' extremes bound them, so the mapping rides in the product instead of three sweeps.
        The product itself is made row by row in the picking kernel.
        """
        if self._rank is None:
            pc = self.proj - self.proj.mean(axis=0)  # centred, as lowrank's projection coefficients
            rows = np.concatenate([pc.T, np.ones((1, len(pc)), np.float32)]).astype(np.float32)
            self._rank = (np.ascontiguousarray(rows), pc.min(axis=0).astype(np.float64), pc.max(axis=0).astype(np.float64))
        rows, lo_c, hi_c = self._rank
        a64 = a.double().numpy()
        lo, hi = a64 @ lo_c, a64 @ hi_c
        scale = np.where(hi > lo, (bins - 1.5) / np.where(hi > lo, hi - lo, 1.0), 0.0)
        coef = np.ascontiguousarray(np.concatenate([a64 * scale[:, None], (-lo * scale)[:, None]], axis=1), np.float32)
        return coef, rows  # C order: the kernel's one compiled layout (kernels.warm)

    def _channel_scale(self, var: np.ndarray) -> np.ndarray:
        """Each column's channel spread ``[D]`` (float32; 1 where a channel is constant), from the columns'
        summed squared deviations ``var`` ``[D]`` (the Gram matrix's diagonal).

        Why: the basis keeps all but ``tol`` of the *standardised* variance, so every variable counts alike
        whatever its units (psi's m2 s-1 would otherwise leave SSH's metres to the discarded tail).
        """
        C = self.shape[0]
        per = var.reshape(C, -1)
        sd = np.sqrt(per.sum(axis=1) / max(1, len(self.x) * per.shape[1]))
        return np.repeat(np.where(sd > 0, sd, 1.0).astype(np.float32), per.shape[1])

    def _basis(self, tol: float) -> tuple:
        """:meth:`lowrank`'s computation (float64 Gram matrix of the centred rows, its leading eigenvectors)."""
        import torch

        mu = self.x.mean(axis=0, dtype=np.float64).astype(np.float32)
        G = np.zeros((self.x.shape[1],) * 2)
        for a in range(0, len(self.x), 8192):
            c = (self.x[a:a + 8192] - mu).astype(np.float64)
            G += c.T @ c
        sd = self._channel_scale(np.diag(G))
        G /= np.outer(sd, sd)  # the Gram matrix of the standardised rows
        ev, V = np.linalg.eigh(G)
        ev, V = np.maximum(ev[::-1], 0), V[:, ::-1]
        frac = np.cumsum(ev) / max(ev.sum(), 1e-300)
        r = max(1, min(len(ev), int(np.searchsorted(frac, 1.0 - tol)) + 1))
        Vr = np.ascontiguousarray(V[:, :r], dtype=np.float32)  # orthonormal in standardised units
        C = self.proj.shape[1]
        coeffs = np.empty((r + 2 * C, len(self.x)), np.float32).T  # stored transposed: see _fast_windows
        for a in range(0, len(self.x), 8192):
            coeffs[a:a + 8192, :r] = ((self.x[a:a + 8192] - mu) / sd) @ Vr
        basis = np.ascontiguousarray(Vr.T * sd, dtype=np.float32)  # back to physical units
        pc = self.proj - self.proj.mean(axis=0)  # centred: the variance is then a difference of small terms
        coeffs[:, r:r + C], coeffs[:, r + C:] = pc, pc * pc
        return mu, torch.from_numpy(coeffs.T).T, torch.from_numpy(basis)


@dataclass
class LocalAnalysis:
    """One time's local analysis: blended mean/spread and members in the library's channel layout."""

    mean: np.ndarray  # [C, Y, X]
    members: np.ndarray  # [M, C, Y, X]
    ess: np.ndarray  # [P] effective sample size per analysis window
    dropped_mass: np.ndarray  # [P]
    iy: np.ndarray
    ix: np.ndarray
    retrieved: list = field(default_factory=list)  # per window: top library entries (k)
    search: str = "exact"  # how the candidates were found (loop: 'exact')
    recall: np.ndarray | None = None  # [P] share of the weight in the scored windows (estimated for 'ivf')
    engine: str = "loop"
    logit_error: np.ndarray | None = None  # [P] bound on the search's logit error (nats; low-rank search), else None

    @property
    def spread(self) -> np.ndarray:
        return self.members.std(axis=0, ddof=1) if len(self.members) > 1 else np.zeros_like(self.mean)


def coupled_quantiles(members: int, shape: tuple[int, int], rng: np.random.Generator, length: float = 1.5,
                      periodic: bool = True) -> np.ndarray:
    """Uniform quantiles ``[members, ny_w, nx_w]`` smoothly correlated across the window grid.

    A Gaussian random field with correlation length ``length`` (in windows) pushed through the
    normal CDF: each window's quantiles are uniform (so its members follow its own posterior), while
    neighbouring windows get similar quantiles (a Gaussian copula; ``length = 0`` = independent).

    Parameters
    ----------
    members : ensemble size
    shape : ``(ny_w, nx_w)`` of the window grid
    rng : random generator
    length : correlation length in windows (0: independent)
    periodic : wrap the smoothing around

    Returns
    -------
    ``[members, ny_w, nx_w]`` quantiles in (0, 1)
    """
    from scipy.ndimage import gaussian_filter
    from scipy.special import ndtr

    g = rng.standard_normal((members, *shape))
    if length > 0:
        g = gaussian_filter(g, sigma=(0, length, length), mode="wrap" if periodic else "reflect")
        g /= np.maximum(g.std(axis=(0,), keepdims=True), 1e-12) if members > 1 else 1.0
        g = g / np.sqrt(np.mean(g * g))
    return ndtr(g)


def member_quantiles(coupling: str, members: int, iy: np.ndarray, ix: np.ndarray, rng: np.random.Generator,
                     coherence: float = 1.5, periodic: bool = True) -> np.ndarray:
    """The quantile at which each member picks each window's posterior.

    Parameters
    ----------
    coupling : ``'copula'`` (:func:`coupled_quantiles`), ``'systematic'`` (one offset shared by all
        windows) or ``'independent'`` (uniform draws)
    members : ensemble members
    iy, ix : window starts ``[P]``
    rng : random generator
    coherence : correlation length of the copula, in windows
    periodic : doubly periodic grid

    Returns
    -------
    ``[members, P]`` quantiles in [0, 1)
    """
    if coupling == "copula":
        ys, xs = np.unique(iy), np.unique(ix)
        q = coupled_quantiles(members, (len(ys), len(xs)), rng, coherence, periodic)
        return q[:, np.searchsorted(ys, iy), np.searchsorted(xs, ix)]
    if coupling == "systematic":
        return np.repeat(((rng.random() + np.arange(members)) / members)[:, None], len(iy), axis=1)
    if coupling == "independent":
        return rng.random((members, len(iy)))
    raise ValueError(f"unknown coupling '{coupling}'; expected 'copula', 'systematic' or 'independent'")


def _window_members_finite(post, wins: np.ndarray, taper: np.ndarray, q: np.ndarray,
                           coupling: str) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_window_members` for candidate windows with NaN (land): means over the finite values only.

    A cell's mean is the weighted mean of the candidates that are ocean there (NaN if none is); a
    member's NaN cells take that mean (no deviation there).
    """
    w = post.weights.astype(wins.dtype)
    ok = np.isfinite(wins)
    num = np.tensordot(w, np.where(ok, wins, 0), axes=1)
    den = np.tensordot(w, ok.astype(wins.dtype), axes=1)
    m = np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)
    if coupling == "copula":  # rank by the tapered mean anomaly over the cells where both are finite
        a = np.where(ok & np.isfinite(m)[None], wins - m[None], 0)
        proj = np.einsum("kcyx,yx->kc", a, taper.astype(wins.dtype))
        sd = np.sqrt(np.maximum(w @ proj ** 2, 1e-30))
        order = np.argsort((proj / sd[None]).sum(axis=1), kind="stable")
    else:
        order = np.argsort(post.indices, kind="stable")
    mem = wins[order][quantile_indices(post.weights[order], q)]
    return m, np.where(np.isfinite(mem), mem, m[None])


def _window_members(post, wins: np.ndarray, taper: np.ndarray, q: np.ndarray, coupling: str,
                    nan_aware: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean ``[C, s, s]`` and members ``[M, C, s, s]`` (at quantiles ``q``) of one window's posterior."""
    if nan_aware:
        return _window_members_finite(post, wins, taper, q, coupling)
    w = post.weights
    # in the windows' precision (float32): a float64 weight vector would upcast a copy of
    # every candidate window first (14x slower; relative difference of the mean ~1e-6)
    m = np.tensordot(w.astype(wins.dtype), wins, axes=1)
    if coupling == "copula":  # rank candidates by their tapered mean anomaly (standardised per channel)
        tw = taper.astype(wins.dtype)
        proj = np.einsum("kcyx,yx->kc", wins, tw) - np.einsum("cyx,yx->c", m, tw)[None]
        sd = np.sqrt(np.maximum(w @ proj ** 2, 1e-30))
        order = np.argsort((proj / sd[None]).sum(axis=1), kind="stable")
    else:
        order = np.argsort(post.indices, kind="stable")
    return m, wins[order][quantile_indices(w[order], q)]


def analyse_local(obs: np.ndarray, wlib: WindowLibrary, z_lib: np.ndarray,
                  embed_obs: Callable[[np.ndarray], np.ndarray], *, kind: str = "neg_sq_distance", tau: float = 1.0,
                  members: int = 20, rng: np.random.Generator | None = None, coupling: str = "copula",
                  coherence: float = 1.5, spread_factor: float = 1.0, keep_mass: float = LOCAL_KEEP_MASS,
                  max_keep: int | None = None, min_ess: float | None = None, tempering: bool = False,
                  top: int = 0, window_chunk: int = 16, engine: str = "auto",
                  index: WindowIndex | None = None, precision: str = "exact",
                  window_tau: np.ndarray | None = None) -> LocalAnalysis:
    """Local analysis of one observation field.

    Members: ``coupling='copula'`` (default) ranks each window's candidates by their mean anomaly
    and draws them at quantiles correlated across neighbouring windows (length ``coherence``
    windows), so blended members stay coherent while every window keeps its own posterior;
    ``'systematic'`` shares one systematic-resampling offset by all windows; ``'independent'``
    resamples every window on its own (multinomial).

    Parameters
    ----------
    obs : ``[C_obs, Y, X]`` observed values, NaN unobserved
    wlib : the window library; ``z_lib`` its embeddings ``[len(wlib), ne]``
    embed_obs : maps observation windows ``[P, C_obs, size + 2 halo, size + 2 halo]`` to embeddings
    kind, tau : the similarity and the temperature (logits ``s / tau``)
    members : ensemble members; ``rng`` their random stream; ``coupling``, ``coherence`` as above
    spread_factor : deviations from the blended mean x this
    keep_mass, max_keep, min_ess, tempering, top : per-window posterior (:func:`posterior_from_scores`);
        the loop engine caps ``max_keep=None`` at :data:`~oceanda.analysis.settings.LOCAL_MAX_KEEP` (memory)
    window_chunk : analysis windows scored at once (loop engine)
    engine : ``'dense'`` (matrix products on the window table), ``'loop'`` (per-window gathers) or
        ``'auto'`` (dense when the table fits)
    index : the search of ``z_lib`` (dense engine; default: an exact :class:`WindowIndex`)
    precision : ``'exact'`` (float64 search and picks: the loop engine's numbers) or ``'fast'`` (dense engine on a
        table without land, search not ``'ivf'``: float32 search and picks, means in the table's low-rank basis
        :meth:`WindowTable.lowrank`; otherwise the exact engine)
    window_tau : ``[P]`` a temperature per analysis window (:func:`window_tau`), instead of ``tau`` (or the index's)

    Returns
    -------
    LocalAnalysis
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision '{precision}'; expected 'exact' or 'fast'")
    rng = rng if rng is not None else np.random.default_rng()
    spec = wlib.spec
    ny, nx = obs.shape[-2:]
    iy, ix = W.positions(ny, nx, spec)
    zo = np.asarray(embed_obs(W.extract(obs, iy, ix, spec.size, spec.halo, spec.periodic)))
    q = member_quantiles(coupling, members, iy, ix, rng, coherence, spec.periodic)  # [M, P]
    t1 = W.taper_1d(spec.size, spec.stride)
    taper = t1[:, None] * t1[None, :]
    if window_tau is not None:
        window_tau = query_tau(window_tau, len(iy), "window_tau")
    post = dict(keep_mass=keep_mass, max_keep=max_keep, min_ess=min_ess, tempering=tempering, top=top,
                tau=window_tau)
    table = wlib.table() if engine in ("auto", "dense") else None
    if engine == "dense" and table is None:
        raise ValueError("engine='dense': the window table does not fit in memory; expected engine='loop' or 'auto'")
    if table is not None:
        index = index if index is not None else WindowIndex(z_lib, kind, tau, "exact")
        if precision == "fast" and fast_applies(wlib, table, index):
            from oceanda.threads import one_torch_thread

            with one_torch_thread():  # its products' sums must not depend on the thread count (dask workers)
                win_mean, win_members, diag = _in_groups(_fast_windows, zo, q, wlib, table, index, taper, coupling,
                                                         (iy, ix), **post)
        else:
            win_mean, win_members, diag = _dense_windows(zo, q, wlib, table, index, taper, coupling, (iy, ix), **post)
    else:
        post["tau"] = tau if window_tau is None else window_tau
        win_mean, win_members, diag = _loop_windows(zo, q, wlib, z_lib, kind, taper, coupling, (iy, ix),
                                                    window_chunk, **post)
    mean = W.blend(win_mean, iy, ix, (ny, nx), spec, nan_aware=wlib.has_nan)
    mem = W.blend(win_members, iy, ix, (ny, nx), spec, nan_aware=wlib.has_nan)
    if wlib.has_nan:
        mean, mem = _ocean_only(mean, mem, wlib)
    mem = mean[None] + spread_factor * (mem - mem.mean(axis=0, keepdims=True))
    return LocalAnalysis(mean=mean.astype(np.float32), members=mem.astype(np.float32), iy=iy, ix=ix, **diag)


def window_tau(observed: np.ndarray, spec, tau: float, cells: int, power: float) -> np.ndarray:
    """The temperature of every analysis window ``[P]``: ``tau (cells / n) ** power`` where its observation window
    (its size plus the halo each side) has ``n < cells`` observed cells, else ``tau``.

    Why: the contrastive logits ``s / tau`` of a cosine similarity are bounded by ``1 / tau`` whatever the number of
    observations, so without this a window with three profiles is as sharply weighted as one crossed by a track
    (:class:`~oceanda.analysis.settings.SamplerSettings` ``sparse_cells``).

    Parameters
    ----------
    observed : ``[Y, X]`` bool, cells with an observation (any variable or day)
    spec : the window geometry (:class:`~oceanda.analysis.windows.WindowSpec`)
    tau, cells, power : the rule above

    Returns
    -------
    float64 ``[P]``, in the order of :func:`~oceanda.analysis.windows.positions`
    """
    iy, ix = W.positions(*observed.shape, spec)
    win = W.extract(np.asarray(observed, np.float32)[None], iy, ix, spec.size, spec.halo, spec.periodic)
    n = np.nansum(win, axis=tuple(range(1, win.ndim)), dtype=np.float64)  # NaN: beyond a non-periodic grid
    return float(tau) * (cells / np.clip(n, 1.0, cells)) ** float(power)


def fast_applies(wlib: WindowLibrary, table: WindowTable | None, index: WindowIndex) -> bool:
    """Whether ``precision='fast'`` runs the fast engine here: a table without land, a search that scores every row."""
    return table is not None and table.ok is None and index.method != "ivf" and len(wlib) <= ROWS_MAX


def prepare_fast(wlib: WindowLibrary, index: WindowIndex) -> None:
    """Build once, before any analysis, what the fast engine uses (the table's low-rank basis, the float32 rows).

    Why here: built lazily, the first analyses (run on several threads) would each build them at once.
    """
    table = wlib.table()
    if fast_applies(wlib, table, index):
        table.lowrank()
        if bf16_products():
            table.lowrank_bf16()
        index.prepare_rows32()


def _degenerate(index, zo, where, ess, dropped, keep_mass, max_keep, min_ess, tempering, tau=None):
    """Windows whose ESS is below ``min_ess``: warned or tempered by the per-window posterior of all scores.

    Yields ``(p, posterior)`` after updating ``ess[p]`` and ``dropped[p]``; the engine replaces window p's weights.
    ``tau``: ``[P]`` the windows' temperatures (None: the index's).
    """
    iy, ix = where
    for p in np.flatnonzero(ess < min_ess):
        t = index.tau if tau is None else float(tau[p])
        post = posterior_from_scores(numpy_scores(index.z, zo[p], kind=index.kind, tau=t), 1.0,
                                     keep_mass=keep_mass, max_keep=max_keep, min_ess=min_ess, tempering=tempering,
                                     where=f"window ({iy[p]}, {ix[p]})")
        ess[p], dropped[p] = post.ess, post.dropped_mass
        yield p, post


def _in_groups(fn, zo, q, wlib, table, index, taper, coupling, where, **post):
    """``fn`` over groups of analysis windows whose ``[P, N]`` weight rows fit :data:`ROWS_MAX`, joined.

    Why: on a large grid (1024 windows at 256^2) all rows at once would not fit, and each window's
    posterior is its own (its search, threshold and quantiles), so groups give the same result.
    """
    iy, ix = where
    step = max(1, ROWS_MAX // max(len(wlib), 1))
    if len(iy) <= step:
        return fn(zo, q, wlib, table, index, taper, coupling, where, **post)
    tau = post.pop("tau", None)
    parts = [fn(zo[a:a + step], q[:, a:a + step], wlib, table, index, taper, coupling,
                (iy[a:a + step], ix[a:a + step]), tau=None if tau is None else tau[a:a + step], **post)
             for a in range(0, len(iy), step)]
    diag = {}
    for k, v in parts[0][2].items():
        if isinstance(v, np.ndarray):
            diag[k] = np.concatenate([p[2][k] for p in parts])
        elif isinstance(v, list):
            diag[k] = [x for p in parts for x in p[2][k]]
        else:
            diag[k] = v
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), diag


def _loop_windows(zo, q, wlib, z_lib, kind, taper, coupling, where, window_chunk, *, keep_mass, max_keep,
                  min_ess, tempering, top, tau):
    """The loop engine: score, truncate, gather every candidate window and average, one window at a time.

    ``tau``: the temperature, a number or ``[P]`` one per window.
    """
    iy, ix = where
    P, members = len(iy), q.shape[0]
    C, size = wlib.library.layout.n_channels, wlib.spec.size
    win_mean = np.empty((P, C, size, size))
    win_members = np.empty((P, members, C, size, size))
    ess, dropped, retrieved = np.empty(P), np.empty(P), []
    for a in range(0, P, window_chunk):
        t = tau if np.ndim(tau) == 0 else np.asarray(tau)[a:a + window_chunk]
        logits = numpy_scores(z_lib, zo[a:a + window_chunk], kind=kind, tau=t)
        for j in range(logits.shape[1]):
            p = a + j
            post = posterior_from_scores(logits[:, j], 1.0, top=top, keep_mass=keep_mass,
                                         max_keep=LOCAL_MAX_KEEP if max_keep is None else max_keep,
                                         min_ess=min_ess, tempering=tempering, where=f"window ({iy[p]}, {ix[p]})")
            win_mean[p], win_members[p] = _window_members(post, wlib.windows(post.indices), taper, q[:, p], coupling,
                                                          wlib.has_nan)
            ess[p], dropped[p] = post.ess, post.dropped_mass
            retrieved.append(post.top_indices)
    return win_mean, win_members, dict(ess=ess, dropped_mass=dropped, retrieved=retrieved, search="exact",
                                       recall=np.ones(P), engine="loop")


def _dense_windows(zo, q, wlib, table, index, taper, coupling, where, *, keep_mass, max_keep, min_ess, tempering,
                   top, tau=None):
    """The dense engine: one search, one product for every window mean, the members' rows only.

    Below :data:`ROWS_MAX` weights the candidates stay ``[P, N]`` rows (weights, mask) and the copula's
    ranking and quantile picks run on all windows at once; above, one window at a time (the same numbers).
    """
    P, members = len(where[0]), q.shape[0]
    C, s, _ = table.shape
    res = index.search(zo, keep_mass, max_keep, tau=tau)
    rows_mode = P * len(wlib) <= ROWS_MAX
    if rows_mode:
        Wd, cand = res.dense_weights(len(wlib))
        cands = None
    else:
        cands = [res.candidates(p) for p in range(P)]
    dropped, ess = 1.0 - res.kept_mass, res.ess.copy()
    if min_ess is not None:
        for p, post in _degenerate(index, zo, where, ess, dropped, keep_mass, max_keep, min_ess, tempering, tau):
            if rows_mode:
                Wd[p], cand[p] = 0.0, False
                Wd[p, post.indices], cand[p, post.indices] = post.weights, True
            else:
                cands[p] = (post.indices, post.weights)
    Wm = Wd.astype(np.float32) if rows_mode else _weight_matrix(cands, len(wlib))
    num = np.asarray(Wm @ table.x)
    if table.ok is not None:
        den = np.asarray(Wm @ table.ok)
        mean = np.where(den > 0, num / np.where(den > 0, den, 1), np.nan).astype(np.float32)
    else:
        mean = num.astype(np.float32)
    if rows_mode and table.ok is None:
        picks = _row_picks(Wm, Wd, cand, table, taper, coupling, q)
    else:
        if cands is None:
            cands = [(np.flatnonzero(cand[p]), Wd[p][cand[p]]) for p in range(P)]
        picks = _window_picks(Wm, mean, table, taper, coupling, q, cands)
    rows = table.x[picks.ravel()].reshape(P, members, -1)
    if table.ok is not None:
        rows = np.where(table.ok[picks.ravel()].reshape(rows.shape) > 0, rows, mean[:, None])
    return (mean.reshape(P, C, s, s), rows.reshape(P, members, C, s, s),
            dict(ess=ess, dropped_mass=dropped, retrieved=_retrieved(top, cands, Wd if rows_mode else None, P),
                 search=res.kind, recall=res.recall, engine="dense",
                 logit_error=np.zeros(P) if res.logit_error is None else res.logit_error))


def _fast_windows(zo, q, wlib, table, index, taper, coupling, where, *, keep_mass, max_keep, min_ess, tempering,
                  top, tau=None):
    """The dense engine at ``precision='fast'``: float32 search and picks, window means in a low-rank basis.

    Why: the exact engine's float64 threshold, ranking and full ``[P, N] @ [N, D]`` product were 85 % of an
    analysis. Members are still exact table rows, drawn by the same rule from (float32) candidate sets.
    """
    import torch

    P = len(where[0])
    C, s, _ = table.shape
    res = index.search_rows32(zo, keep_mass, max_keep, tau=tau)
    Wu, zk = res.weights, res.total.copy()
    dropped, ess = 1.0 - res.kept_mass, res.ess.copy()
    if min_ess is not None:
        for p, post in _degenerate(index, zo, where, ess, dropped, keep_mass, max_keep, min_ess, tempering, tau):
            zk[p] = 1.0
            Wu[p] = 0.0
            Wu[p, torch.from_numpy(post.indices)] = torch.from_numpy(post.weights.astype(np.float32))
    inv = torch.from_numpy((1.0 / zk).astype(np.float32))[:, None]
    mu, coeffs, basis = table.lowrank()  # coeffs [N, r + 2C]: the basis' coefficients, then proj and proj^2
    r = basis.shape[0]
    # every window's weighted mean coefficients, projection and its square; as (coeffs^T @ Wu^T)^T, whose
    # operands are both row-major in memory: 0.81-0.83 of the time of Wu @ coeffs (MKL and OpenBLAS, AVX2)
    bf16 = bf16_products()
    if bf16:  # the coefficients in bfloat16 (BF16_ENV), the projections in float32
        Ab = torch.mm(table.lowrank_bf16(), Wu.bfloat16().T).T.float()  # [P, r + 1]: the last, the total
        coef = Ab[:, :r].div_(Ab[:, r:])
        A = torch.mm(coeffs.T[r:], Wu.T).T.mul_(inv)  # [P, 2C]
    else:
        A = torch.mm(coeffs.T, Wu.T).T.mul_(inv)
        coef, A = A[:, :r], A[:, r:]
    mean = (torch.mm(coef, basis).numpy() + mu).astype(np.float32)
    if coupling == "copula":  # the ranking score up to a per-window constant: sum_c proj[k, c] / sd[p, c]
        var = A[:, C:] - A[:, :C] ** 2  # weighted spread of the projections
        pos = table.rank_positions(var.clamp_(min=1e-30).rsqrt_(), RANK_BINS)
        picks = ranked_quantiles_rows32(pos, Wu, q.T, RANK_BINS, positions=True)
    else:  # candidates in entry order
        picks = ranked_quantiles_rows32(torch.arange(Wu.shape[1], dtype=torch.float32)[None].expand(P, -1), Wu, q.T)
    rows = table.x[picks.ravel()].reshape(P, q.shape[0], -1)
    Wn = Wu.numpy() if top else None
    return (mean.reshape(P, C, s, s), rows.reshape(P, q.shape[0], C, s, s),
            dict(ess=ess, dropped_mass=dropped, retrieved=_retrieved(top, None, Wn, P), search=res.kind,
                 recall=np.ones(P), engine="dense-fast-bf16" if bf16 else "dense-fast"))


def bf16_products() -> bool:
    """Whether the fast engine averages window-mean coefficients in bfloat16 (:data:`BF16_ENV`, else the CPU).

    Why: it is the largest product of a fast analysis; its error stays below the basis' own truncation
    (:data:`FAST_VARIANCE_TOL`), its cost and accuracy are at :data:`BF16_ENV`.
    """
    import os

    text = os.environ.get(BF16_ENV, "").strip()
    if text in ("0", "1"):
        return text == "1"
    if text:
        from oceanda.errors import ConfigurationError

        raise ConfigurationError(f"{BF16_ENV}={text!r}: expected 0 (float32 window means) or 1 (bfloat16)")
    return _native_bf16()


@functools.cache
def _native_bf16() -> bool:
    """The CPU multiplies bfloat16 natively (torch's own AVX512_BF16 / AMX checks)."""
    import torch

    cpu = torch.cpu
    return any(bool(getattr(cpu, f, lambda: False)()) for f in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def ranked_quantiles_rows32(score, w, q: np.ndarray, bins: int = 4096, positions: bool = False) -> np.ndarray:
    """:func:`ranked_quantiles_rows` in float32: each row's entries ranked by ``score``, picked at ``q``.

    Zero weights are never picked (they add nothing to the cumulative weight), so no candidate mask is
    needed. A weighted histogram finds each quantile's bin; only the weighted entries of those bins are
    sorted (:func:`~oceanda.analysis.kernels.ranked_picks`, float64 cumulative sums from the bin's start).

    Parameters
    ----------
    score, w : ``[P, n]`` float32 torch tensors (weights need not be normalised)
    q : ``[P, M]`` quantiles in [0, 1)
    bins : histogram bins per row
    positions : ``score`` is already a position in ``[0, bins)``, or the pair of factors of the positions'
        product from :meth:`WindowTable.rank_positions`

    Returns
    -------
    int64 column indices ``[P, M]``
    """
    import torch

    from oceanda.analysis.kernels import ranked_picks

    if positions and isinstance(score, tuple):  # (coef, rows) of :meth:`WindowTable.rank_positions`
        from oceanda.analysis.kernels import ranked_picks_affine

        return ranked_picks_affine(score[0], score[1], w.contiguous().numpy(), np.ascontiguousarray(q, dtype=np.float64),
                                   bins)
    if positions:
        x = score
    else:
        lo, hi = score.amin(dim=1, keepdim=True), score.amax(dim=1, keepdim=True)
        scale = torch.where(hi > lo, bins / (hi - lo), torch.zeros_like(hi))
        x = torch.sub(score, lo).mul_(scale).clamp_(0, bins - 0.5)  # position in bins, [0, bins)
    return ranked_picks(x.contiguous().numpy(), w.contiguous().numpy(), np.ascontiguousarray(q, dtype=np.float64),
                        bins)


def _retrieved(top: int, cands, Wd, P: int) -> list:
    """Per window, the ``top`` library entries of largest weight (ties: lower entry first)."""
    if not top:
        return [np.zeros(0, np.int64)] * P
    if cands is not None:
        return [k[np.argsort(-w, kind="stable")[:top]] for k, w in cands]
    return [np.argsort(-Wd[p], kind="stable")[:min(top, int(np.count_nonzero(Wd[p])))] for p in range(P)]


def _window_picks(Wm, mean, table, taper, coupling, q, cands) -> np.ndarray:
    """The members' library entries ``[P, M]``, one window at a time (land, or libraries too large for rows)."""
    P, members = len(cands), q.shape[0]
    rank = _rank_scores(Wm, mean, table, taper, cands) if coupling == "copula" else None
    picks = np.empty((P, members), np.int64)
    for p, (k, w) in enumerate(cands):
        if rank is None:
            order = np.argsort(k, kind="stable")
            picks[p] = k[order][quantile_indices(w[order], q[:, p])]
        else:
            picks[p] = k[ranked_quantiles(rank[p], w, q[:, p])]
    return picks


def _row_picks(Wm, Wd, cand, table, taper, coupling, q) -> np.ndarray:
    """:func:`_window_picks` on candidate rows ``[P, N]`` (no land): every window's ranking at once.

    The copula score of candidate k in window p is ``sum_c (proj[k, c] - pm[p, c]) / sd[p, c]`` as in
    :func:`_rank_scores` (float32 anomalies, float64 spread, channels summed in order), for all (p, k).
    """
    P, n = Wd.shape
    if coupling != "copula":  # candidates in entry order: a cumulative sum along the row
        cum = np.cumsum(Wd, axis=1)
        cum /= cum[:, -1:]
        last = n - 1 - np.argmax(cand[:, ::-1], axis=1)
        return np.stack([np.minimum(np.searchsorted(cum[p], q[:, p], side="right"), last[p]) for p in range(P)])
    pm = np.asarray(Wm @ table.proj)  # [P, C]
    score = None
    for c in range(table.proj.shape[1]):
        d = table.proj[:, c][None] - pm[:, c][:, None]  # [P, N] float32
        sd = np.sqrt(np.maximum(np.einsum("pk,pk->p", Wd, d * d), 1e-30))
        t = d / sd[:, None]
        score = t if score is None else np.add(score, t, out=score)
    return ranked_quantiles_rows(score, Wd, cand, q.T)


def _weight_matrix(cands, n: int):
    """Candidate weights as a ``[P, n]`` float32 matrix: dense when they fill a good part of it, else CSR."""
    nnz = sum(len(k) for k, _ in cands)
    if nnz * 16 >= len(cands) * n:
        Wm = np.zeros((len(cands), n), np.float32)
        for p, (k, w) in enumerate(cands):
            Wm[p, k] = w
        return Wm
    from scipy.sparse import csr_matrix

    indptr = np.concatenate([[0], np.cumsum([len(k) for k, _ in cands])])
    data = np.concatenate([w for _, w in cands]).astype(np.float32)
    return csr_matrix((data, np.concatenate([k for k, _ in cands]), indptr), shape=(len(cands), n))


def _rank_scores(Wm, mean: np.ndarray, table: WindowTable, taper: np.ndarray, cands) -> list[np.ndarray]:
    """Every window's copula ranking scores of its candidates, from the precomputed taper projections.

    The tapered anomaly of candidate k is ``proj[k] - proj(mean)``; with land, over the cells where the
    candidate is ocean: ``proj0[k] - ok[k] . (taper m)`` -- the second term for every (k, window) by one
    product ``ok [N, D] @ V [D, P*C]``. Standardised per channel by the weighted spread, as the loop engine.
    """
    P = len(cands)
    C, s, _ = table.shape
    tw = taper.astype(np.float32)
    if table.ok is None:
        pm = np.asarray(Wm @ table.proj)  # [P, C]: projection of the mean = weighted mean of projections
        sub = None
    else:
        m0 = np.nan_to_num(mean.reshape(P, C, s, s)) * tw
        V = np.zeros((P, C, C, s, s), np.float32)
        for c in range(C):
            V[:, c, c] = m0[:, c]
        sub = table.ok @ V.reshape(P * C, -1).T  # [N, P*C]
    out = []
    for p, (k, w) in enumerate(cands):
        if sub is None:
            proj = table.proj[k] - pm[p][None]
            wd = w
        else:
            proj = table.proj[k] - sub[k, p * C:(p + 1) * C]
            wd = w.astype(np.float32)
        sd = np.sqrt(np.maximum(wd @ proj ** 2, 1e-30))
        out.append((proj / sd[None]).sum(axis=1))
    return out


def ranked_quantiles(score: np.ndarray, w: np.ndarray, q: np.ndarray, bins: int = 1024) -> np.ndarray:
    """``order[quantile_indices(w[order], q)]`` with ``order = argsort(score, kind='stable')``, without the full sort.

    A weighted histogram of the scores finds the bin holding each quantile; only those bins are sorted.

    Parameters
    ----------
    score : ``[n]`` ranking scores; ``w`` ``[n]`` their weights
    q : quantiles in [0, 1)
    bins : histogram bins

    Returns
    -------
    int64 positions into ``score``, the shape of ``q``
    """
    n = score.size
    lo, hi = float(score.min()), float(score.max())
    if n <= 4 * bins or not hi > lo:
        order = np.argsort(score, kind="stable")
        return order[quantile_indices(w[order], q)]
    b = np.minimum(((score - lo) * (bins / (hi - lo))).astype(np.int64), bins - 1)
    cum = np.cumsum(np.bincount(b, weights=w, minlength=bins))
    total = cum[-1]
    qs = np.asarray(q, dtype=np.float64)
    qb = np.minimum(np.searchsorted(cum / total, qs, side="right"), bins - 1)
    out = np.empty(qs.shape, np.int64)
    for j, bj in np.ndenumerate(qb):
        pos = np.flatnonzero(b == bj)
        o = pos[np.argsort(score[pos], kind="stable")]
        before = cum[bj - 1] if bj > 0 else 0.0
        c = (before + np.cumsum(w[o])) / total
        out[j] = o[min(int(np.searchsorted(c, qs[j], side="right")), o.size - 1)]
    return out


def ranked_quantiles_rows(score: np.ndarray, w: np.ndarray, mask: np.ndarray, q: np.ndarray,
                          bins: int = 1024) -> np.ndarray:
    """:func:`ranked_quantiles` of every row at once: the row's entries ``k`` (``mask``) picked at quantiles ``q``.

    The same histogram, boundary bins and in-bin cumulative sums (sequential, from the bin's start) as
    :func:`ranked_quantiles`, so the picks are its picks; rows it fully sorts (few entries, equal scores)
    are handed to it.

    Parameters
    ----------
    score : ``[P, n]`` ranking scores; ``w`` ``[P, n]`` weights (zero outside ``mask``); ``mask`` the entries
    q : ``[P, M]`` quantiles in [0, 1)
    bins : histogram bins

    Returns
    -------
    int64 column indices ``[P, M]``
    """
    P, n = score.shape
    cnt = mask.sum(axis=1)
    lo = np.where(mask, score, np.inf).min(axis=1)
    hi = np.where(mask, score, -np.inf).max(axis=1)
    out = np.empty(q.shape, np.int64)
    small = (cnt <= 4 * bins) | ~(hi > lo)
    big = np.flatnonzero(~small)
    if big.size:
        sub = slice(None) if big.size == P else big
        got = _histogram_picks(score[sub], w[sub], mask[sub], lo[big], hi[big], q[big], bins)
        if got is None:
            small[:] = True
        else:
            out[big] = got
    for p in np.flatnonzero(small):
        k = np.flatnonzero(mask[p])
        out[p] = k[ranked_quantiles(score[p, k], w[p, k], q[p], bins)]
    return out


def _histogram_picks(score, w, mask, lo, hi, q, bins, max_pad: int = 1 << 22) -> np.ndarray | None:
    """The histogram path of :func:`ranked_quantiles_rows` (None: boundary bins too crowded to pad)."""
    P, n = score.shape
    b = np.where(mask, (score - lo[:, None]) * (bins / (hi - lo))[:, None], 0.0).astype(np.int64)
    np.minimum(b, bins - 1, out=b)
    b += (np.arange(P) * bins)[:, None]  # a bin number per row
    cum = np.cumsum(np.bincount(b.ravel(), weights=w.ravel(), minlength=P * bins).reshape(P, bins), axis=1)
    total = cum[:, -1]
    qs = np.asarray(q, dtype=np.float64)
    qb = np.minimum(((cum / total[:, None])[:, None, :] <= qs[:, :, None]).sum(axis=2), bins - 1)
    qb += (np.arange(P) * bins)[:, None]
    need = np.zeros(P * bins, bool)
    need[qb.ravel()] = True
    fi = np.flatnonzero(mask.ravel() & need[b.ravel()])  # the entries of the boundary bins
    be, se = b.ravel()[fi], score.ravel()[fi]
    o = np.lexsort((se, be))  # by bin (row-major), then score; ties keep entry order
    fi, be = fi[o], be[o]
    starts = np.flatnonzero(np.r_[True, be[1:] != be[:-1]])
    sizes = np.diff(np.r_[starts, len(be)])
    G, width = len(starts), int(sizes.max())
    if max(G, P * qs.shape[1]) * width > max_pad:
        return None
    gid = np.repeat(np.arange(G), sizes)
    pad = np.zeros((G, width))
    pad[gid, np.arange(len(be)) - starts[gid]] = w.ravel()[fi]
    gb = be[starts]
    gp, local = gb // bins, gb % bins
    before = np.where(local > 0, cum.ravel()[gb - 1], 0.0)
    c = (before[:, None] + np.cumsum(pad, axis=1)) / total[gp][:, None]
    g = np.searchsorted(gb, qb.ravel())
    inside = np.arange(width)[None] < sizes[g][:, None]
    idx = np.minimum(((c[g] <= qs.ravel()[:, None]) & inside).sum(axis=1), sizes[g] - 1)
    return (fi[starts[g] + idx] % n).reshape(qs.shape)


def _ocean_only(mean: np.ndarray, members: np.ndarray, wlib: WindowLibrary) -> tuple[np.ndarray, np.ndarray]:
    """NaN on land and only there: an ocean cell no candidate covered takes the library mean (members: no deviation)."""
    gap = ~np.isfinite(mean)
    if wlib.land is not None:
        gap &= ~wlib.land
    if gap.any():
        mean = np.where(gap, wlib.climatology, mean)
    members = np.where(np.isfinite(members), members, mean[None])
    if wlib.land is not None:
        mean = np.where(wlib.land, np.nan, mean)
        members = np.where(wlib.land[None], np.nan, members)
    return mean, members


def calibrate_spread(errors_sq: np.ndarray, spread_sq: np.ndarray) -> float:
    """Spread factor making the mean ensemble variance match the mean squared error of the mean.

    Use on a tuning run only: ``errors_sq`` = (analysis mean - truth)^2, ``spread_sq`` = ensemble
    variance, over the same times and points. Returns sqrt(mean error^2 / mean spread^2).

    Parameters
    ----------
    errors_sq : squared errors of the analysis mean
    spread_sq : ensemble variances at the same times and points

    Returns
    -------
    float: the spread factor (1 when the spread is zero)
    """
    e, s = float(np.nanmean(errors_sq)), float(np.nanmean(spread_sq))
    return float(np.sqrt(e / s)) if s > 0 else 1.0
